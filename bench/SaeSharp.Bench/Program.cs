using SaeSharp.Bench;

if (args.Length > 0 && args[0] == "train") return TrainBench.Run(args[1..]);
Console.WriteLine("bench: see BENCHMARKS.md (subcommands: train)");
return 0;
