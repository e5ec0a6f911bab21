using SaeSharp;
using SaeSharp.Bench;

// SAESHARP_NO_TUNE=1 measures with libgomp's and glibc's defaults (see NativeRuntime).
NativeRuntime.Tune();

switch (args.Length > 0 ? args[0] : "")
{
    case "train": return TrainBench.Run(args[1..]);
    case "harvest": HarvestBench.Run(); return 0;
    case "features": return FeaturesBench.Run(args[1..]);
    case "accuracy": return AccuracyBench.Run(args[1..]);
    case "topk-paths": return CandidateBench.Run(args[1..]);
    case "machine": Machine.Print(); return 0;
    default:
        Console.WriteLine("usage: bench train [--steps N] [--arch a,b] [--autocast] [--profile] | bench accuracy [--steps N] [--arch a,b] | bench topk-paths [--repeats N] | bench machine | bench harvest | bench features [--batches N]   (results: BENCHMARKS.md)");
        return 2;
}
