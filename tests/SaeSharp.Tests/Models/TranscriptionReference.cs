using static TorchSharp.torch;

namespace SaeSharp.Tests.Models;

/// <summary>Comparisons with the reference.npz of a bench/reference/*_fixture.py transcription (its tokens, logits and
/// hook values under its own keys).</summary>
internal static class TranscriptionReference
{
    /// <summary>Largest |a − b| over the largest |a| (at least 1).</summary>
    public static double RelativeDifference(Tensor expected, Tensor actual)
    {
        Assert.Equal(expected.shape, actual.shape);
        double scale = Math.Max(1.0, expected.abs().max().item<float>());
        return (expected - actual.to(expected.dtype)).abs().max().item<float>() / scale;
    }

    /// <summary>Every cached hook equals the reference value under its key (hook → key), and the logits the reference's
    /// logits, within 1e-5 of their scale.</summary>
    public static void AssertMatches(IReadOnlyDictionary<string, Tensor> reference, IReadOnlyDictionary<string, string> expected,
        IReadOnlyDictionary<string, Tensor> cache, Tensor logits)
    {
        foreach (var (hook, key) in expected)
            Assert.True(RelativeDifference(reference[key], cache[hook]) < 1e-5, $"{hook}: {RelativeDifference(reference[key], cache[hook])}");
        Assert.True(RelativeDifference(reference["logits"], logits) < 1e-5);
    }
}
