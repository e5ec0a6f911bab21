using System.Text.RegularExpressions;
using SaeSharp.IO;
using SaeSharp.Pipelines;
using SaeSharp.Tests.Cli;
using SaeSharp.Training;
using static TorchSharp.torch;

namespace SaeSharp.Tests.Training;

/// <summary>Faults during <c>sae train</c>, black-box through the command line: kill -9 at random points (then
/// --resume), a loss that turns infinite mid-run, and a full disk while the outputs are written.</summary>
public class TrainingFaultTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("train-faults-").FullName;
    public void Dispose() => Directory.Delete(_dir, true);

    private string P(params string[] parts) => Path.Combine([_dir, .. parts]);

    private string WriteActivations(int rows, int d, int seed, Action<Tensor>? edit = null)
    {
        using var gen = new TorchSharp.torch.Generator((ulong)seed);
        var x = randn(rows, d, generator: gen);
        edit?.Invoke(x);
        var path = P($"acts_{seed}.safetensors");
        SafeTensors.Save(path, new Dictionary<string, Tensor> { ["activations"] = x });
        return path;
    }

    // --deterministic: without it, TopK's candidate pass (`auto`) and ReLU's dense/sparse switch choose by timing, and the
    // two choices' float32 values differ in the last bits, so only fixed choices resume bit for bit. relu at λ 10 reaches
    // L0 < 5 % of d_sae within the run, where the fixed switch takes the sparse pass.
    private static string[] TrainArgs(string arch, string acts, string outDir, long steps, long every, params string[] more) =>
    [
        "train", "--activations", acts, "--arch", arch, .. arch == "relu" ? ["--l1", "10"] : new[] { "--k", "4" }, "--dict-size", "64",
        "--steps", steps.ToString(), "--deterministic", "--batch-size", "32", "--checkpoint-every", every.ToString(), "--eval-rows", "256",
        "--out", outDir, .. more,
    ];

    private static long StepOf(string folder) => long.Parse(Path.GetFileName(folder)["step_".Length..]);

    private static List<string> CompleteCheckpoints(string root) =>
        !Directory.Exists(root) ? [] : Directory.GetDirectories(root, "step_*").Where(d => File.Exists(Path.Combine(d, TrainerCheckpoint.StateFileName))).ToList();

    private static long LastPrintedStep(IEnumerable<string> lines) =>
        lines.Select(l => Regex.Match(l, @"^step (\d+)/")).Where(m => m.Success).Select(m => long.Parse(m.Groups[1].Value)).DefaultIfEmpty(0).Max();

    [Theory]
    [InlineData("topk")]
    [InlineData("relu")]
    public void KillNineAtRandomPointsThenResumeEndsWithTheUninterruptedWeights(string arch)
    {
        const long steps = 90, every = 3;
        var acts = WriteActivations(3000, 16, seed: 1);
        // The uninterrupted run, alongside the interrupted ones.
        using var reference = new CliProcess(TrainArgs(arch, acts, P("reference"), steps, every));

        var run = P("killed");
        var checkpoints = Path.Combine(run, TrainingRun.CheckpointFolder);
        var random = new Random(7);
        int kills = 0;
        var killedAt = new List<long>();
        for (int attempt = 0; attempt < 8 && kills < 2; attempt++)
        {
            bool resume = CompleteCheckpoints(checkpoints).Count > 0;
            using var p = new CliProcess(TrainArgs(arch, acts, run, steps, every, resume ? ["--resume"] : []));
            // Kill at a random moment after a random step (checkpoints every 3 steps, so a good share of the kills
            // land inside a checkpoint write).
            long at = random.Next(4, (int)steps - 20);
            bool reached = p.WaitForLine(l => LastPrintedStep([l]) >= at, TimeSpan.FromMinutes(2));
            if (p.HasExited)
            {
                // Finished before the kill (a resumed run that started past the chosen step, or a test thread starved on a
                // loaded machine while the run went on): start the interrupted run again from nothing, so that the last
                // attempt is a killed one and the final resume below has steps (and a checkpoint write) left to do.
                Assert.True(p.WaitForExit(TimeSpan.FromMinutes(1)) == 0, string.Join("\n", p.Lines));
                Directory.Delete(run, recursive: true);
                kills = 0;
                continue;
            }
            Assert.True(reached, "no progress: " + string.Join("\n", p.Lines));
            Thread.Sleep(random.Next(0, 30));
            p.Kill();
            kills++;
            killedAt.Add(LastPrintedStep(p.Lines));
            long printed = LastPrintedStep(p.Lines);
            var complete = CompleteCheckpoints(checkpoints);
            // Every checkpoint that looks complete loads; the latest is at most one interval behind the last step seen.
            foreach (var c in complete) using (TrainerCheckpoint.Load(c)) { }
            if (complete.Count > 0)
            {
                Assert.Equal(complete.Max(StepOf), StepOf(TrainerCheckpoint.Resolve(checkpoints)));
                Assert.True(printed - complete.Max(StepOf) <= every, $"last step printed {printed}, latest checkpoint {complete.Max(StepOf)}");
            }
        }
        Assert.True(kills >= 1, "no run was killed");

        // What an interrupted write could leave (and worse) is never picked: a half-written temporary folder and a step
        // folder without its state file.
        var latest = TrainerCheckpoint.Resolve(checkpoints);
        var tmp = Path.Combine(checkpoints, ".tmp_step_999999999_0");
        Directory.CreateDirectory(tmp);
        File.WriteAllBytes(Path.Combine(tmp, "sae_0.safetensors"), [1, 2, 3]);
        Directory.CreateDirectory(Path.Combine(checkpoints, "step_999999998"));
        File.WriteAllBytes(Path.Combine(checkpoints, "step_999999998", "sae_0.safetensors"), [1, 2, 3]);
        Assert.Equal(latest, TrainerCheckpoint.Resolve(checkpoints));

        using (var final = new CliProcess(TrainArgs(arch, acts, run, steps, every, "--resume")))
            Assert.True(final.WaitForExit(TimeSpan.FromMinutes(2)) == 0, string.Join("\n", final.Lines));
        Assert.False(Directory.Exists(tmp), "the interrupted write's temporary folder is cleaned up");
        Assert.True(reference.WaitForExit(TimeSpan.FromMinutes(2)) == 0, string.Join("\n", reference.Lines));
        var expected = SafeTensors.Load(P("reference", "sae_weights.safetensors"));
        var actual = SafeTensors.Load(Path.Combine(run, "sae_weights.safetensors"));
        Assert.Equal(expected.Keys.Order(), actual.Keys.Order());
        string Losses(string l) => System.Text.Json.Nodes.JsonNode.Parse(l)!["losses"]?.ToJsonString() ?? "";
        var refLog = File.ReadAllLines(P("reference", "train_log.jsonl")).Select(l => (System.Text.Json.Nodes.JsonNode.Parse(l)!["step"]?.ToString(), Losses(l))).ToList();
        var runLog = File.ReadAllLines(Path.Combine(run, "train_log.jsonl")).Select(l => (System.Text.Json.Nodes.JsonNode.Parse(l)!["step"]?.ToString(), Losses(l))).ToList();
        var firstDiff = refLog.Zip(runLog).FirstOrDefault(p => p.First != p.Second);
        foreach (var (k, t) in expected) Assert.True(t.bytes.SequenceEqual(actual[k].bytes), $"{k} differs from the uninterrupted run's; first differing log line: {firstDiff}; kills {string.Join(",", killedAt)}");
        if (arch == "relu")
        {
            // The comparison covers the sparse pass: some logged steps ran below the fixed switch's density.
            var l0 = File.ReadLines(P("reference", "train_log.jsonl")).Select(l => System.Text.Json.Nodes.JsonNode.Parse(l)!)
                .Where(n => n["l0"] is not null).Select(n => n["l0"]!.GetValue<double>()).ToList();
            Assert.Contains(l0, v => v < SaeSharp.Saes.SparsePassSwitch.PriorDensity * 64);
        }
    }

    /// <summary><c>--verbose</c> names the CPU's kernel path and the GEMM library in force, with the vendor the kernel reports.</summary>
    [Fact]
    public void VerboseNamesTheKernelsAndTheGemmLibrary()
    {
        var acts = WriteActivations(600, 16, seed: 4);
        using var p = new CliProcess("train", "--activations", acts, "--arch", "relu", "--dict-size", "64", "--steps", "2",
            "--batch-size", "32", "--eval-rows", "100", "--out", P("verbose"), "--verbose");
        Assert.True(p.WaitForExit(TimeSpan.FromMinutes(2)) == 0, string.Join("\n", p.Lines));
        Assert.Contains(p.Lines, l => Regex.IsMatch(l, @"^CPU .*; kernels \w+"));
        var gemm = Assert.Single(p.Lines, l => l.StartsWith("GEMM ", StringComparison.Ordinal));
        if (Environment.GetEnvironmentVariable(SaeSharp.Kernels.Blas.EnvironmentVariable) is { Length: > 0 }) return;
        var m = Regex.Match(gemm, @"^GEMM auto \((torch|OpenBLAS) on (\S+)\); OpenBLAS (core \S+|not found)$");
        Assert.True(m.Success, gemm);
        if (OperatingSystem.IsLinux() && System.Runtime.Intrinsics.X86.X86Base.IsSupported)
        {
            var vendor = File.ReadLines("/proc/cpuinfo").First(l => l.StartsWith("vendor_id", StringComparison.Ordinal));
            Assert.Equal(vendor[(vendor.IndexOf(':') + 1)..].Trim(), m.Groups[2].Value);
        }
    }

    [Fact]
    public void InfiniteLossMidTrainingStopsNamingTheStepAndKeepsTheLastGoodCheckpoint()
    {
        // Finite rows whose squares overflow float32: the file reader accepts them, the loss of the step that draws one
        // is infinite. Normalisation off, so no estimate reads them first.
        var acts = WriteActivations(3000, 16, seed: 2, x => x[1400] = full(16, 1e20f));
        var config = P("config.json");
        File.WriteAllText(config, """{ "normalize_activations": "none" }""");
        // A checkpoint every step: whenever the bad row is drawn (after the first step), a good checkpoint precedes it.
        var r = CliRunner.Run(TrainArgs("topk", acts, P("run"), 200, 1, "--config", config));
        Assert.Equal(1, r.Exit);
        var m = Regex.Match(r.Err, @"training step (\d+) of 200: the loss of SAE 'topk' is NaN or infinite; the last good checkpoint is (\S+)");
        Assert.True(m.Success, r.Err + r.Out);
        Assert.Single(r.Err.Trim().Split('\n'));
        long bad = long.Parse(m.Groups[1].Value);
        var good = m.Groups[2].Value;
        Assert.True(bad >= 2 && StepOf(good) == bad - 1, $"the checkpoint {good} holds the steps before step {bad}");
        Assert.Equal(good, TrainerCheckpoint.Resolve(P("run", TrainingRun.CheckpointFolder)));
        using (var checkpoint = TrainerCheckpoint.Load(good))
            foreach (var t in checkpoint.Saes[0].Tensors.Values)
                Assert.True(t.isfinite().all().item<bool>(), "the kept checkpoint is finite");
        Assert.False(File.Exists(P("run", "sae_weights.safetensors")), "no SAE is written from a diverged run");
    }

    [Fact]
    public void FullDiskWhileWritingTheOutputsIsAClearErrorAndLeavesThePreviousOutputs()
    {
        var acts = WriteActivations(2000, 16, seed: 3);
        var run = P("run");
        Assert.Equal(0, CliRunner.Run(TrainArgs("topk", acts, run, 20, 10)).Exit);
        var files = new[] { "cfg.json", "sae_weights.safetensors", "sparsity.safetensors", "metrics.json" };
        var before = files.ToDictionary(f => f, f => File.ReadAllBytes(Path.Combine(run, f)));

        // A forced second run; the disk fills while sparsity.safetensors is written: after sae_weights.safetensors, before cfg.json.
        AtomicFile.StreamWrapper.Value = (path, s) => path.EndsWith("sparsity.safetensors", StringComparison.Ordinal) ? new FullDisk() : s;
        (int Exit, string Out, string Err) r;
        try { r = CliRunner.Run(TrainArgs("topk", acts, run, 20, 10, "--seed", "5", "--force")); }
        finally { AtomicFile.StreamWrapper.Value = null; }

        Assert.Equal(1, r.Exit);
        Assert.Contains("sparsity.safetensors", r.Err);
        Assert.Contains("No space left on device", r.Err);
        Assert.Single(r.Err.Trim().Split('\n'));
        foreach (var f in files) Assert.True(before[f].SequenceEqual(File.ReadAllBytes(Path.Combine(run, f))), $"{f} was changed");
        Assert.Empty(Directory.GetFiles(run, ".*.tmp"));
    }

    /// <summary>A stream on a full disk: every write fails as ENOSPC does.</summary>
    private sealed class FullDisk : MemoryStream
    {
        public override void Write(byte[] buffer, int offset, int count) => throw new IOException("No space left on device");
        public override void Write(ReadOnlySpan<byte> buffer) => throw new IOException("No space left on device");
    }
}
