using SaeSharp;
using SaeSharp.Bench;

// SAESHARP_NO_TUNE=1 measures with libgomp's and glibc's defaults (see NativeRuntime).
NativeRuntime.Tune();
NativeRuntime.SerialTorchInKernelSteps();

try
{
    return Dispatch(args);
}
catch (BenchUsageException e)
{
    Console.Error.WriteLine($"bench: {e.Message} (bench without arguments lists the commands)");
    return 2;
}

static int Dispatch(string[] args)
{
    switch (args.Length > 0 ? args[0] : "")
    {
        case "train": return TrainBench.Run(args[1..]);
        case "harvest": BenchArgs.For("harvest", args[1..]); HarvestBench.Run(); return 0;
        case "features": return FeaturesBench.Run(args[1..]);
        case "accuracy": return AccuracyBench.Run(args[1..]);
        case "recipes": return RecipesBench.Run(args[1..]);
        case "topk-paths": return CandidateBench.Run(args[1..]);
        case "int8-products": return Int8Bench.Run(args[1..]);
        case "relu-run": return ReluRunBench.Run(args[1..]);
        case "downstream": return DownstreamBench.Run(args[1..]);
        case "gemm": return GemmBench.Run(args[1..]);
        case "fork-join": return ForkJoinBench.Run(args[1..]);
        case "sparse": return SparseBench.Run(args[1..]);
        case "probe-fit": return ProbeFitBench.Run(args[1..]);
        case "probe": return ProbeFitBench.RunProbe(args[1..]);
        case "score-labels": return ProbeFitBench.RunScoreLabels(args[1..]);
        case "fit-l1": return ProbeFitBench.RunFitL1(args[1..]);
        case "lm-memory": return LmMemoryBench.Run(args[1..]);
        case "tensor-lifetime": return TensorLifetimeBench.Run(args[1..]);
        case "machine": BenchArgs.For("machine", args[1..]); Machine.Print(); return 0;
        default:
            Console.WriteLine("usage: bench train [--steps N] [--arch a,b] [--autocast] [--profile] [--peer topk=ROWS,standard=ROWS] | bench accuracy [--steps N] [--arch a,b] | bench topk-paths [--repeats N] [--threads N] [--select-only] | bench int8-products [--rounds N] | bench machine | bench harvest | bench relu-run [--steps 1000] [--crossover] [--autocast] | bench downstream [--windows 16] [--ctx 128] [--batch 8] [--repeats 2] | bench features [--batches N] | bench gemm [--rounds 9] [--d-in 512] [--d-sae 8192] [--batch 4096] | bench fork-join [--calls N] [--gaps 0,100,500] | bench sparse [--densities 0.004,0.1] | bench probe-fit [--n 4000] [--d 65536] [--density 0.01] | bench probe [--n 5000] [--d 65536] [--density 0.01] [--dense] | bench score-labels [--tokens 16000] [--d-sae 32768] [--k 32] [--dense] | bench fit-l1 [--n 20000] [--d 256] [--density 0.0625] | bench recipes [--activations FILE [--eval FILE]] [--tokens 250000,1000000] [--arch a,b] | bench lm-memory [--shapes ctx:batch:d_model:heads:layers:d_mlp,...] [--steps 3] | bench tensor-lifetime [--mode temp|using|scope|kernel] [--seconds 10] [--n 512]   (results: BENCHMARKS.md)");
            return 2;
    }
}
