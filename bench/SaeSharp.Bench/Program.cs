System.Console.WriteLine("bench: see BENCHMARKS.md");
