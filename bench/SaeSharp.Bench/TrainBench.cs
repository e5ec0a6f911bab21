using System.Diagnostics;
using SaeSharp.Kernels;
using SaeSharp.Saes;
using TorchSharp;
using static TorchSharp.torch;

namespace SaeSharp.Bench;

/// <summary>
/// <c>train</c>: SAE training throughput per architecture (forward + backward + decoder hooks + Adam step) at
/// d_in 512, d_sae 8192, batch 4096, k 32, next to the fp32 matmul ceiling measured in the same run. "topk+auxk" has a
/// tenth of the latents dead; "standard@1%" is a ReLU SAE whose b_enc is shifted so 1% of pre-activations are positive
/// (a trained SAE's sparsity, where the sparse training pass applies). Adam is the trainer's <see cref="SaeSharp.Kernels.AdamOptimizer"/>.
/// Usage: <c>train [--steps N] [--arch topk,batchtopk,...] [--d-in 512] [--d-sae 8192] [--batch 4096] [--k 32] [--profile] [--autocast] [--peer topk=ROWS,...]</c>; <c>--autocast</c> trains with
/// <see cref="SaeTrainingOptions.Autocast"/> and also measures the bfloat16 matmul ceiling.
/// </summary>
internal static class TrainBench
{
    public static int Run(string[] args)
    {
        var a = BenchArgs.For("train", args);
        int steps = a.Int("--steps", 3), dIn = a.Int("--d-in", 512), dSae = a.Int("--d-sae", 8192), batch = a.Int("--batch", 4096), k = a.Int("--k", 32);
        bool profile = a.Flag("--profile"), autocast = a.Flag("--autocast");
        var archs = a.List("--arch", ["topk", "topk+auxk", "batchtopk", "matryoshka_batchtopk", "jumprelu", "gated", "standard", "standard@1%"]);
        BenchSae.CandidatePass = a.Value("--candidate-pass", "auto") switch
        {
            "auto" => SaeSharp.Kernels.CandidatePass.Auto,
            "on" => SaeSharp.Kernels.CandidatePass.On,
            "off" => SaeSharp.Kernels.CandidatePass.Off,
            var v => throw new BenchUsageException($"--candidate-pass {v}: auto, on or off"),
        };
        Machine.Print(batch, dIn, dSae);
        Console.WriteLine($"train bench: d_in {dIn}, d_sae {dSae}, batch {batch}, k {k}, {steps} timed steps after 1 warm-up, torch threads {get_num_threads()}, autocast {autocast}, candidate pass {BenchSae.CandidatePass}");
        // --peer topk=6900,standard=2760: a peer's rows/s per architecture (bench/reference/peer_step_speed.py), for the ratio column.
        var peers = a.List("--peer", []).Select(p => p.Split('=')).ToDictionary(p => p[0], p => double.Parse(p[1]));
        Console.WriteLine($"{"architecture",-22} {"ms/step",9} {"rows/s",9} {"GFLOP/step",11} {"GFLOP/s",8}  share of step: forward/backward/hooks+Adam{(peers.Count > 0 ? "   peer rows/s, ratio" : "")}");
        foreach (var arch in archs)
        {
            if (profile && arch.Contains("topk", StringComparison.Ordinal))
            {
                Console.WriteLine($"{arch} profile (best of {steps}):");
                TopKProfile.Run(arch, dIn, dSae, batch, k, steps, autocast);
                continue;
            }
            if (profile) { Console.WriteLine($"{arch} profile (best of {steps}):"); DenseProfile.Run(arch, dIn, dSae, batch, steps, autocast); continue; }
            var (msPerStep, flops, phases) = TimeArchitecture(arch, dIn, dSae, batch, k, steps, autocast);
            double rows = batch / (msPerStep / 1000);
            string share = $"{phases[0] / msPerStep:P0}/{(phases[1] - phases[0]) / msPerStep:P0}/{(msPerStep - phases[1]) / msPerStep:P0}";
            string peer = peers.TryGetValue(arch, out var pr) ? $"   {pr,8:F0}, {rows / pr:F2}×" : "";
            Console.WriteLine($"{arch,-22} {msPerStep,9:F0} {rows,9:F0} {flops / 1e9,11:F1} {flops / 1e9 / (msPerStep / 1000),8:F1}  {share,-30}{peer}");
        }
        return 0;
    }

    /// <summary>Milliseconds per training step and the FLOPs a step needs: dense matmuls count 2·N·d_in·d_sae each,
    /// sparse (TopK-family) decode and backward products 2·nnz·d each.</summary>
    private static (double MsPerStep, double Flops, double[] Phases) TimeArchitecture(string name, int dIn, int dSae, int batch, int k, int steps, bool autocast)
    {
        using var b = BenchSae.Create(name, dIn, dSae, batch, k, autocast);
        string arch = b.Arch;
        bool auxk = b.DeadMask is not null, sparseRelu = name.EndsWith("@1%", StringComparison.Ordinal);
        double dense = 2.0 * batch * dIn * dSae;
        double nnz = (double)batch * k;
        double flops = arch switch
        {
            "topk" or "batchtopk" => dense + 4 * 2 * nnz * dIn,
            "matryoshka_batchtopk" => dense + (4 + 2) * 2 * nnz * dIn,
            "gated" => 7 * dense,      // gate + magnitude encoders, decoder, aux decoder; backward of each
            "matching_pursuit" => k * dense, // one [batch, d_sae] correlation per pursuit step, at most k (max_iterations) steps
            _ => 5 * dense,            // encoder, decoder; grads of f, W_dec, W_enc
        };
        if (sparseRelu) flops = dense + 4 * 2.0 * batch * (dSae / 100) * dIn; // dense encoder, sparse rest
        if (auxk) flops += 4 * 2.0 * batch * (dIn / 2) * dIn;
        double ms = 0;
        var phases = new double[2];
        long stepNo = 0;
        // --candidate-pass auto: the trial steps of the measured choice are the warm-up (and it prints its decision).
        if (b.Sae is TopKFamilySae tk && b.Sae.Training.CandidatePass == CandidatePass.Auto && CandidateEncoder.Applies(CpuKernels.Path, dSae))
        {
            while (!tk.CandidateSwitch.Decided) b.Step(stepNo++);
            Console.WriteLine($"  {name}: {stepNo} trial steps, candidate pass ({CpuKernels.Name(CpuKernels.Path)}) {tk.CandidateSwitch.CandidateMs:F0} ms/step, "
                + $"plain encoder {tk.CandidateSwitch.PlainMs:F0} ms/step: the timed steps take the {(tk.CandidateSwitch.PredictCandidate() ? "candidate pass" : "plain encoder")}");
        }
        else b.Step(stepNo++);
        for (int i = 0; i < steps; i++)
        {
            var t = b.Step(stepNo++);
            ms += t[^1];
            phases[0] += t[0] / steps;
            phases[1] += t[1] / steps;
        }
        return (ms / steps, flops, phases);
    }
}
