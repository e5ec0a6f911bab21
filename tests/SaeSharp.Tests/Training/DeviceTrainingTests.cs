using System.Text.Json.Nodes;
using SaeSharp.Activations;
using SaeSharp.Evaluation;
using SaeSharp.IO;
using SaeSharp.Kernels;
using SaeSharp.Saes;
using SaeSharp.Tests.Cli;
using SaeSharp.Tests.Kernels;
using SaeSharp.Training;
using TorchSharp;
using static TorchSharp.torch;
using static SaeSharp.Tests.Training.TrainerTestKit;

namespace SaeSharp.Tests.Training;

/// <summary>
/// The device-generic training path (issue #14 §5), tested on the CPU, the only device here:
/// <list type="bullet">
/// <item>With <see cref="KernelPath.Torch"/> no custom CPU kernel runs (what a CUDA device runs); every architecture,
/// with initialisation, normalisation, AuxK, resampling, gradient clipping and the target-L0 controller, trains to the same
/// weights as on the kernels.</item>
/// <item>Placement: libtorch refuses to mix meta tensors with CPU tensors, so the training runs with TorchSharp's default
/// device set to <c>meta</c> while the SAEs and batches are on the CPU. A tensor the trainer, a loss or an initialisation
/// creates without naming the SAE's device is then a meta tensor, and the first operation mixing it with the SAE's raises
/// (or the first read of it: a meta tensor has no data); the run must instead end with exactly the weights of the same
/// run without the meta default, and the held-out evaluation of the trained SAEs must give the same metrics. The
/// activation source runs with the CPU default (sources are CPU code by design); so does the folding of the results into
/// new SAEs (their constructors create parameters on the default device, which is the CPU in any real run).</item>
/// </list>
/// </summary>
[Collection(KernelPathCollection.Name)]
public class DeviceTrainingTests
{
    private const int DIn = 24, DSae = 96, Steps = 8, Batch = 64;

    private static SaeSlot[] Slots(TrainerConfig run)
    {
        static Sae Make(string arch, int? k = null, int[]? widths = null) =>
            SaeFactory.Create(new SaeConfig { Architecture = arch, DIn = DIn, DSae = DSae, K = k, MatryoshkaWidths = widths });
        StandardSae Relu(double density, SparsityPenalty penalty = SparsityPenalty.L1) => new(new SaeConfig { DIn = DIn, DSae = DSae })
        {
            SparseTrainingDensity = density,
            Training = { SparsityCoefficient = 0.05, Penalty = penalty },
        };
        var resampled = Relu(0);
        var april = Relu(1.0, SparsityPenalty.L1DecoderNorm);
        april.Training.AdaptToTargetL0 = true;
        april.Training.TargetL0 = 10;
        var jump = Make(SaeArchitectures.JumpReLU);
        jump.Training.SparsityCoefficient = 0.01;
        var jumpTarget = Make(SaeArchitectures.JumpReLU);
        jumpTarget.Training.JumpReluPenalty = JumpReluPenalty.TargetL0;
        jumpTarget.Training.AdaptToTargetL0 = true;   // thresholds initialised from the data
        var gated = Make(SaeArchitectures.Gated);
        gated.Training.SparsityCoefficient = 0.05;
        var batchTopK = Make(SaeArchitectures.BatchTopK, k: 5);
        batchTopK.Training.ThresholdStartStep = 2;
        var resampleConfig = run.Clone();
        resampleConfig.ResampleSteps = [4];
        return
        [
            new("relu-dense", Relu(0)),
            new("relu-sparse", Relu(1.0)),
            new("relu-entropy", Relu(0, SparsityPenalty.Entropy)),
            new("relu-resampled", resampled, resampleConfig),
            new("relu-april-target", april),
            new("jumprelu", jump),
            new("jumprelu-target", jumpTarget),
            new("gated", gated),
            new("topk", Make(SaeArchitectures.TopK, k: 5)),
            new("batchtopk", batchTopK),
            new("matryoshka", Make(SaeArchitectures.MatryoshkaBatchTopK, k: 5, widths: [16, 48, DSae])),
        ];
    }

    private static TrainerConfig RunConfig(string? checkpoints = null)
    {
        var cfg = Config(Steps, Batch);
        cfg.Seed = 9;
        cfg.NormalizeActivations = "expected_average_only_in";
        cfg.NBatchesForNormEstimate = 2;
        cfg.BDecInitMethod = "geometric_median";
        cfg.BDecInitRows = 128;
        cfg.MaxGradNorm = 1.0;
        cfg.DeadFeatureWindow = 2 * Batch;       // latents silent for two steps are dead: AuxK and resampling run
        cfg.LogEverySteps = 1;
        cfg.CheckpointPath = checkpoints;
        cfg.CheckpointEverySteps = checkpoints is null ? 0 : 3;
        return cfg;
    }

    private sealed record Run(List<Dictionary<string, Tensor>> States, List<double> SparsityCoefficients, List<string> Metrics);

    /// <summary>Trains <see cref="Slots"/> for <see cref="Steps"/> steps; returns each SAE's weights and Adam moments (CPU copies),
    /// and the held-out metrics of each trained (folded) SAE, evaluated with the same default device as the training.</summary>
    private static Run Train(bool torchOps, bool metaDefault, string? checkpoints = null)
    {
        try
        {
            if (torchOps) CpuKernels.Path = KernelPath.Torch;
            using var data = SparseData(640, DIn, 60, 0.08, seed: 5, scale: 2);
            using var inner = new InMemorySource(data.clone(), seed: 2);
            using var src = new CpuDefaultSource(inner);
            var cfg = RunConfig(checkpoints);
            var slots = Slots(cfg);
            using var trainer = new SaeTrainer(cfg, src, slots);
            // Training runs with the meta default up to the end of the last step; the result is then folded into new SAEs,
            // built by their constructors on the default device, so the default returns to the CPU before that.
            trainer.Progress = new ListProgress(p => { if (p.Step == Steps) set_default_device(CPU); });
            if (metaDefault) set_default_device(new Device(DeviceType.META));
            using var result = trainer.Run();
            Assert.Equal(Steps, result.Steps);
            if (metaDefault) set_default_device(new Device(DeviceType.META));
            var metrics = result.Saes.Select(t => SaeEvaluator.Evaluate(t.Sae, src, maxRows: 2 * Batch, batchSize: Batch).ToJson()).ToList();
            set_default_device(CPU);
            var states = trainer.Saes.Select((s, i) =>
            {
                var all = s.state_dict().ToDictionary(kv => kv.Key, kv => kv.Value.detach().cpu().clone());
                foreach (var (k, t) in trainer.Optimizer(slots[i].Name).StateTensors()) all[k] = t.cpu().clone();
                foreach (var t in all.Values) Assert.Equal(DeviceType.CPU, t.device_type);
                return all;
            }).ToList();
            var coefficients = trainer.Saes.Select(s => s.Training.SparsityCoefficient).ToList();
            foreach (var slot in slots) slot.Sae.Dispose();
            return new Run(states, coefficients, metrics);
        }
        finally
        {
            set_default_device(CPU);
            CpuKernels.ResetPath();
        }
    }

    private static readonly string[] Names = Slots(RunConfig()).Select(s => { s.Sae.Dispose(); return s.Name; }).ToArray();

    [Fact]
    public void Every_architecture_trains_on_torch_operations_to_the_weights_of_the_cpu_kernels()
    {
        var kernels = Train(torchOps: false, metaDefault: false);
        var torchOps = Train(torchOps: true, metaDefault: false);
        for (int s = 0; s < Names.Length; s++)
        {
            foreach (var (key, t) in kernels.States[s])
            {
                // float32 sums in another order: ~1e-6 relative per step, grown by Adam over 8 steps.
                double diff = MaxAbsDiff(t, torchOps.States[s][key]);
                Assert.True(diff < 1e-4 * (1 + t.abs().max().item<float>()), $"{Names[s]}.{key}: max |diff| {diff}");
            }
            Assert.Equal(kernels.SparsityCoefficients[s], torchOps.SparsityCoefficients[s], 1e-6 * kernels.SparsityCoefficients[s]);
        }
    }

    [Fact]
    public void Training_creates_every_tensor_on_the_device_of_the_saes()
    {
        var folder = TempDir();
        try
        {
            var cpu = Train(torchOps: true, metaDefault: false);
            var meta = Train(torchOps: true, metaDefault: true, checkpoints: folder);
            for (int s = 0; s < Names.Length; s++)
                foreach (var (key, t) in cpu.States[s])
                    Assert.True(t.eq(meta.States[s][key]).all().item<bool>(), $"{Names[s]}.{key} differs with the meta default device");
            Assert.Equal(cpu.SparsityCoefficients, meta.SparsityCoefficients);
            Assert.Equal(cpu.Metrics, meta.Metrics);
        }
        finally { Directory.Delete(folder, recursive: true); }
    }

    /// <summary>The negative control of the placement test: a loss that creates a tensor without naming a device fails.</summary>
    [Fact]
    public void The_placement_check_catches_a_tensor_created_without_a_device()
    {
        try
        {
            CpuKernels.Path = KernelPath.Torch;
            using var data = SparseData(256, DIn, 60, 0.08, seed: 5);
            using var inner = new InMemorySource(data.clone(), seed: 2);
            using var src = new CpuDefaultSource(inner);
            var cfg = Config(2, Batch);
            using var sae = new CarelessSae(new SaeConfig { DIn = DIn, DSae = DSae });
            using var trainer = new SaeTrainer(cfg, src, [new SaeSlot("careless", sae)]);
            set_default_device(new Device(DeviceType.META));
            var e = Assert.ThrowsAny<Exception>(() => trainer.Run());
            Assert.Contains("meta", e.Message);
        }
        finally
        {
            set_default_device(CPU);
            CpuKernels.ResetPath();
        }
    }

    /// <summary>The torch-path comparison above would pass even if a kernel ran there unguarded (on the CPU it computes the
    /// same); the kernels' pointer access refuses such a tensor, so such a kernel fails instead, as it must on a GPU.</summary>
    [Fact]
    public void A_kernel_reached_without_the_device_check_refuses_the_tensor()
    {
        using var m = randn(4, 8).to(ScalarType.BFloat16);
        using var counts = Bf16Kernels.PositiveCounts(m);   // allowed: a CPU tensor on a kernel path
        Assert.Equal(m.to(ScalarType.Float32).gt(0).sum(0L).to(ScalarType.Int64).data<long>().ToArray(), counts.data<long>().ToArray());
        try
        {
            CpuKernels.Path = KernelPath.Torch;
            var e = Assert.Throws<InvalidOperationException>(() => Bf16Kernels.PositiveCounts(m));
            Assert.Contains("kernel path torch", e.Message);
            Assert.Contains("must check CpuKernels.On", e.Message);
        }
        finally { CpuKernels.ResetPath(); }
    }

    [Fact]
    public void The_device_is_recorded_and_resume_loads_onto_the_requested_one()
    {
        var folder = TempDir();
        try
        {
            using var data = SparseData(512, DIn, 60, 0.08, seed: 5);
            var cfg = Config(4, Batch);
            cfg.Device = "CPU";
            cfg.CheckpointPath = folder;
            using (var src = new InMemorySource(data.clone(), seed: 2))
            using (var trainer = new SaeTrainer(cfg, src, [new SaeSlot("relu", Standard(DIn, DSae))]))
            {
                Assert.Equal("cpu", trainer.Config.Device);
                using var result = trainer.Run(stopAtStep: 2);
                Assert.Equal("cpu", result.Saes[0].Sae.Cfg.Device);
            }
            var state = JsonNode.Parse(File.ReadAllText(Path.Combine(TrainerCheckpoint.FolderOf(folder, 2), TrainerCheckpoint.StateFileName)))!;
            Assert.Equal("cpu", state["config"]!["device"]!.GetValue<string>());
            using (var src = new InMemorySource(data.clone(), seed: 2))
            {
                Assert.Contains("device tpu: expected cpu, cuda or cuda:N",
                    Assert.Throws<SaeSharpException>(() => SaeTrainer.Resume(folder, src, "tpu")).Message);
                if (!cuda.is_available())
                    Assert.Contains("-p:TorchBackend=cuda", Assert.Throws<SaeSharpException>(() => SaeTrainer.Resume(folder, src, "cuda")).Message);
                using var resumed = SaeTrainer.Resume(folder, src, "cpu");
                Assert.Equal(2, resumed.Step);
                using var result = resumed.Run();
                Assert.Equal(4, result.Steps);
                Assert.All(resumed.Saes[0].parameters(), p => Assert.Equal(DeviceType.CPU, p.device_type));
            }
        }
        finally { Directory.Delete(folder, recursive: true); }
    }

    [Fact]
    public void Saes_on_different_devices_need_a_device_setting()
    {
        using var data = SparseData(128, DIn, 60, 0.08, seed: 5);
        using var src = new InMemorySource(data.clone(), seed: 2);
        using var a = Standard(DIn, DSae);
        using var b = Standard(DIn, DSae);
        b.to(new Device(DeviceType.META));
        var e = Assert.Throws<SaeSharpException>(() => new SaeTrainer(Config(2, Batch), src, [new SaeSlot("a", a), new SaeSlot("b", b)]));
        Assert.Contains("different devices (cpu, meta)", e.Message);
    }

    [Fact]
    public void Sae_train_takes_device_and_refuses_cuda_on_a_cpu_build_in_one_line()
    {
        var dir = TempDir();
        try
        {
            var acts = Path.Combine(dir, "a.safetensors");
            SafeTensors.Save(acts, new Dictionary<string, Tensor> { ["activations"] = randn(300, 8, generator: new Generator(4)) });
            string[] Args(string device) => ["train", "--activations", acts, "--arch", "relu", "--dict-size", "16", "--steps", "3",
                "--batch-size", "32", "--eval-rows", "64", "--out", Path.Combine(dir, "run-" + device.Replace(':', '-')), "--device", device];
            var (exit, _, err) = CliRunner.Run(Args("tpu"));
            Assert.NotEqual(0, exit);
            Assert.Contains("--device tpu: expected cpu, cuda or cuda:N", err);
            Assert.Single(err.Trim().Split('\n'));
            if (!cuda.is_available())
            {
                (exit, _, err) = CliRunner.Run(Args("cuda:0"));
                Assert.NotEqual(0, exit);
                Assert.Contains("--device cuda:0: TorchSharp sees no CUDA device", err);
                Assert.Single(err.Trim().Split('\n'));
            }
            (exit, _, err) = CliRunner.Run(Args("cpu"));
            Assert.True(exit == 0, err);
            var cfg = SaeConfig.FromJson(File.ReadAllText(Path.Combine(dir, "run-cpu", "cfg.json")));
            Assert.Equal("cpu", cfg.Device);
            var (_, help, _) = CliRunner.Run("train", "--help");
            Assert.Contains("where the SAEs train", help);
        }
        finally { Directory.Delete(dir, recursive: true); }
    }

    /// <summary>A ReLU SAE whose loss adds a zero made without a device: wrong on any device but the default one.</summary>
    private sealed class CarelessSae : Sae
    {
        public CarelessSae(SaeConfig cfg) : base(cfg) => RegisterComponents();

        public override Tensor Encode(Tensor x) => nn.functional.relu(HiddenPre(x));

        public override SaeTrainOutput TrainingForward(Tensor x, Tensor target, SaeTrainContext ctx)
        {
            var f = Encode(x);
            var y = Decode(f);
            var loss = MseLoss(y, target) + zeros(1).sum();
            return new SaeTrainOutput { Loss = loss, SaeOut = y, FeatureActs = f, Losses = new() };
        }
    }

    /// <summary>Runs the activation source with the CPU as the default device: sources are CPU code, the trainer is not.</summary>
    private sealed class CpuDefaultSource(IActivationSource inner) : IActivationSource
    {
        private static T OnCpu<T>(Func<T> f)
        {
            var saved = get_default_device();
            set_default_device(CPU);
            try { return f(); }
            finally { set_default_device(saved); }
        }

        public int DIn => inner.DIn;
        public int DOut => inner.DOut;
        public long? Rows => inner.Rows;
        public ActivationBatch? Next(int batchSize) => OnCpu(() => inner.Next(batchSize));
        public JsonNode SaveState() => OnCpu(inner.SaveState);
        public void LoadState(JsonNode state) => OnCpu(() => { inner.LoadState(state); return 0; });
        public void Dispose() { }
    }
}
