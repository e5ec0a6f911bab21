using SaeSharp.Models;
using static TorchSharp.torch;

namespace SaeSharp.Tests.Models;

/// <summary>Generation.Sample's distribution against softmax(logits / T) computed by hand.</summary>
public class SamplingTests
{
    [Fact]
    public void Temperature_divides_the_logits_before_the_softmax()
    {
        // Logits (0, 1, 2) at T = 2: p = softmax(0, 0.5, 1) = (0.186, 0.307, 0.506). Multiplying by T instead would give
        // softmax(0, 2, 4) = (0.016, 0.117, 0.867). 20 000 draws: the standard error of each frequency is below 0.004.
        const int draws = 20000;
        double[] l = [0, 1, 2];
        var e = l.Select(v => Math.Exp(v / 2)).ToArray();
        var p = e.Select(v => v / e.Sum()).ToArray();
        using var logits = tensor(l.Select(v => (float)v).ToArray()).unsqueeze(0).expand(draws, 3).contiguous();
        using var ids = Generation.Sample(logits, new GenerationOptions { Temperature = 2 }, new Generator(5));
        var counts = new int[3];
        foreach (var id in ids.data<long>().ToArray()) counts[id]++;
        for (int i = 0; i < 3; i++)
            Assert.True(Math.Abs(counts[i] / (double)draws - p[i]) < 0.02, $"token {i}: frequency {counts[i] / (double)draws}, expected {p[i]:F3}");
    }
}
