using SaeSharp.Saes;
using SaeSharp.Training;
using static TorchSharp.torch;

namespace SaeSharp.Tests.Training;

internal static class TrainerTestKit
{
    /// <summary>A float32 tensor from a JSON list (1-d) or list of lists (2-d), as the peers' fixture scripts write them.</summary>
    public static Tensor JsonTensor(System.Text.Json.Nodes.JsonNode node)
    {
        var arr = node.AsArray();
        if (arr[0] is System.Text.Json.Nodes.JsonArray)
        {
            var rows = arr.Select(r => r!.AsArray().Select(v => v!.GetValue<float>()).ToArray()).ToArray();
            return tensor(rows.SelectMany(r => r).ToArray(), [rows.Length, rows[0].Length]);
        }
        return tensor(arr.Select(v => v!.GetValue<float>()).ToArray());
    }

    /// <summary>Rows that are sparse non-negative combinations of <paramref name="nFeatures"/> random unit directions, plus an offset.</summary>
    public static Tensor SparseData(int rows, int d, int nFeatures, double p, long seed, double scale = 1, double offset = 0.5)
    {
        using var scope = NewDisposeScope();
        using var g = new Generator((ulong)seed);
        var dirs = randn(nFeatures, d, generator: g);
        dirs = dirs / dirs.norm(1, keepdim: true);
        var mask = rand(rows, nFeatures, generator: g).lt(p).to(ScalarType.Float32);
        var mags = rand(rows, nFeatures, generator: g) + 0.5;
        return ((mask * mags).matmul(dirs) * scale + offset).MoveToOuterDisposeScope();
    }

    public static StandardSae Standard(int dIn, int dSae, double l1 = 0.01, SparsityPenalty penalty = SparsityPenalty.L1) =>
        new(new SaeConfig { DIn = dIn, DSae = dSae }) { Training = { SparsityCoefficient = l1, Penalty = penalty } };

    public static TrainerConfig Config(long steps, int batch = 32) => new()
    {
        TotalTrainingSteps = steps,
        TrainBatchSizeTokens = batch,
        Lr = 1e-2,
        LogEverySteps = 1000,
        FeatureSamplingWindow = 1000,
        DeadFeatureWindow = 1_000_000,
    };

    public static string TempDir()
    {
        var d = Path.Combine(Path.GetTempPath(), "saesharp-train-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(d);
        return d;
    }

    /// <summary>Same shape and dtype and every element identical.</summary>
    public static bool BitEqual(Tensor a, Tensor b)
    {
        using var scope = NewDisposeScope();
        return a.dtype == b.dtype && a.shape.SequenceEqual(b.shape) && a.eq(b).all().item<bool>();
    }

    public static double MaxAbsDiff(Tensor a, Tensor b)
    {
        using var scope = NewDisposeScope();
        return (a.to(ScalarType.Float64) - b.to(ScalarType.Float64)).abs().max().item<double>();
    }
}

/// <summary>Synchronous progress sink (Progress&lt;T&gt; would post to the thread pool).</summary>
internal sealed class ListProgress(Action<TrainingProgress>? onReport = null) : IProgress<TrainingProgress>
{
    public List<TrainingProgress> Reports { get; } = new();

    public void Report(TrainingProgress value)
    {
        Reports.Add(value);
        onReport?.Invoke(value);
    }
}
