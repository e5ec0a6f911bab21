using SaeSharp.Activations;
using SaeSharp.Evaluation;
using SaeSharp.Saes;
using SaeSharp.Synthetic;
using static TorchSharp.torch;

namespace SaeSharp.Tests.Evaluation;

public class SyntheticEvaluationTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("synth-eval-").FullName;
    public void Dispose() => Directory.Delete(_dir, true);

    [Fact]
    public void SaeWithTheTrueDictionaryRecoversAllFeatures()
    {
        var o = new SyntheticOptions { DIn = 8, NFeatures = 12, TrainRows = 64, EvalRows = 200, Seed = 9 };
        var files = SyntheticDataset.Write(_dir, o);
        var truth = SyntheticDataset.ReadFeatures(files.FeaturesPath);

        using var sae = new StandardSae(new SaeConfig { DIn = 8, DSae = 16 });
        sae.InitializeWeights(new Generator(1));
        using (no_grad())
        {
            // First 12 decoder rows: the true directions scaled by 2, in reverse order.
            sae.WDec.narrow(0, 0, 12).copy_(truth.flip(0) * 2);
        }
        using var eval = ActivationSplit.EvalFiles([files.EvalPath!], new() { ExpectedDIn = 8, ChunkRows = 50 });
        var r = SaeEvaluator.Evaluate(sae, eval, maxRows: 1000, batchSize: 64, groundTruthFeatures: truth);
        Assert.Equal(200, r.Rows);
        Assert.Equal(1.0, r.Mmcs!.Value, 5);
        Assert.Equal(1.0, r.RecoveredFraction!.Value);
        Assert.Equal(16, r.FeatureFrequency.Length);
    }
}
