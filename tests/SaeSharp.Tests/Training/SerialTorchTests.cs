using SaeSharp.Kernels;
using SaeSharp.Saes;
using SaeSharp.Training;
using static TorchSharp.torch;
using static SaeSharp.Tests.Training.TrainerTestKit;

namespace SaeSharp.Tests.Training;

/// <summary><see cref="RowRanges.SerialTorch"/>: torch's own operations on one thread inside a TopK training step, the
/// kernels keeping their threads. It changes torch's process-wide thread count, so these tests run alone, after the
/// parallel ones (<see cref="SerialTorchCollection"/>).</summary>
[Collection(SerialTorchCollection.Name)]
public class SerialTorchTests
{
    [Fact]
    public void SerialTorch_lowers_torch_threads_keeps_the_kernels_and_restores_them()
    {
        int threads = get_num_threads();
        bool enabled = RowRanges.SerialTorchEnabled;
        set_num_threads(2);
        try
        {
            RowRanges.SerialTorchEnabled = false;
            Assert.Null(RowRanges.SerialTorch());
            Assert.Equal(2, get_num_threads());

            RowRanges.SerialTorchEnabled = true;
            using (var scope = RowRanges.SerialTorch())
            {
                Assert.NotNull(scope);
                Assert.Equal(1, get_num_threads());
                Assert.Equal(2, RowRanges.Threads);
                Assert.Null(RowRanges.SerialTorch()); // nested: nothing to undo
                using (RowRanges.ParallelTorch())
                {
                    Assert.Equal(2, get_num_threads());
                    Assert.Equal(2, RowRanges.Threads);
                }
                Assert.Equal(1, get_num_threads());
            }
            Assert.Equal(2, get_num_threads());
            Assert.Null(RowRanges.ParallelTorch()); // outside a serial scope
        }
        finally
        {
            RowRanges.SerialTorchEnabled = enabled;
            set_num_threads(threads);
        }
    }

    /// <summary>The same TopK run (AuxK on: a short dead window, so its dense and sparse forms both occur) with and
    /// without the serial scope ends with bit-equal weights, and the thread count is as it was; with the plain encoder and
    /// with the candidate pass (its bfloat16 products, where the CPU has them, run with torch's threads restored). Not
    /// `auto`: its choice comes from timings.</summary>
    [Theory]
    [InlineData(CandidatePass.Off)]
    [InlineData(CandidatePass.On)]
    public void A_topk_run_under_serial_torch_equals_one_without(CandidatePass pass) =>
        RunsEqualWithAndWithoutSerialTorch(() =>
        {
            var sae = SaeFactory.Create(new SaeConfig { Architecture = SaeArchitectures.TopK, DIn = 32, DSae = 256, K = 4 });
            sae.Training.CandidatePass = pass;
            return sae;
        });

    /// <summary>A ReLU SAE's steps run under the serial scope once its last pass was sparse (the sparse pass forced here
    /// from the first step, which itself runs without it); the run's weights are bit-equal to one without the scope.</summary>
    [Fact]
    public void A_relu_run_in_its_sparse_phase_under_serial_torch_equals_one_without()
    {
        using var fresh = (StandardSae)SaeFactory.Create(new SaeConfig { Architecture = SaeArchitectures.Standard, DIn = 32, DSae = 256 });
        Assert.False(fresh.SmallTorchSteps);
        RunsEqualWithAndWithoutSerialTorch(() =>
        {
            var s = SaeFactory.Create(new SaeConfig { Architecture = SaeArchitectures.Standard, DIn = 32, DSae = 256 });
            ((StandardSae)s).SparseTrainingDensity = 1;
            return s;
        }, trained => Assert.True(((StandardSae)trained).SmallTorchSteps));
        RunsEqualWithAndWithoutSerialTorch(() =>
        {
            var s = SaeFactory.Create(new SaeConfig { Architecture = SaeArchitectures.Standard, DIn = 32, DSae = 256 });
            ((StandardSae)s).SparseTrainingDensity = 0;
            return s;
        }, trained => Assert.False(((StandardSae)trained).SmallTorchSteps));
    }

    private static void RunsEqualWithAndWithoutSerialTorch(Func<Sae> create, Action<Sae>? afterRun = null)
    {
        int threads = get_num_threads();
        bool enabled = RowRanges.SerialTorchEnabled;
        set_num_threads(2);
        try
        {
            Dictionary<string, Tensor> Train(bool serial)
            {
                RowRanges.SerialTorchEnabled = serial;
                using var data = SparseData(4096, 32, 40, 0.1, seed: 5, scale: 2);
                var cfg = Config(24, batch: 256);
                cfg.Seed = 2;
                cfg.DeadFeatureWindow = 512;
                using var source = new InMemorySource(data.clone(), seed: 3);
                using var trainer = new SaeTrainer(cfg, source, [new("sae", create())]);
                using var result = trainer.Run();
                Assert.Equal(2, get_num_threads());
                afterRun?.Invoke(trainer.Saes[0]);
                return trainer.Saes[0].state_dict().ToDictionary(p => p.Key, p => p.Value.detach().clone());
            }
            var plain = Train(serial: false);
            var serial = Train(serial: true);
            foreach (var (name, t) in plain)
                Assert.True(BitEqual(t, serial[name]), $"{name} differs with torch's operations on one thread");
        }
        finally
        {
            RowRanges.SerialTorchEnabled = enabled;
            set_num_threads(threads);
        }
    }
}

/// <summary>Tests that change torch's thread count for the whole process: run with no other test.</summary>
[CollectionDefinition(Name, DisableParallelization = true)]
public sealed class SerialTorchCollection
{
    public const string Name = "serial torch";
}
