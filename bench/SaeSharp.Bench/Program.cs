using SaeSharp.Bench;

SaeSharp.NativeThreads.UsePassiveOpenMpWaits();

switch (args.Length > 0 ? args[0] : "")
{
    case "train": return TrainBench.Run(args[1..]);
    case "harvest": HarvestBench.Run(); return 0;
    default:
        Console.WriteLine("usage: bench train [--steps N] [--arch a,b] | bench harvest   (results: BENCHMARKS.md)");
        return 2;
}
