using SaeSharp.Interventions;
using static TorchSharp.torch;

namespace SaeSharp.Tests.Interventions;

/// <summary>InterventionEffect.Compare against next-token losses, KL and top tokens written out in doubles.</summary>
public class InterventionEffectTests
{
    private static double[] Softmax(double[] l)
    {
        double m = l.Max();
        var e = l.Select(v => Math.Exp(v - m)).ToArray();
        double z = e.Sum();
        return e.Select(v => v / z).ToArray();
    }

    [Fact]
    public void Compare_gives_kl_of_clean_to_edited_losses_top_tokens_and_the_most_changed_positions()
    {
        // Two rows of three positions over a vocabulary of 3. The edit changes row 1 position 2 most, row 0 position 1 next.
        double[][][] clean = [[[1, 0, -1], [0.5, 0.5, 0], [2, 1, 0]], [[0, 0, 0], [1, 2, 3], [3, 0, 0]]];
        double[][][] edited = [[[1, 0, -1.2], [-1, 2, 0], [2, 1, 0.3]], [[0, 0.1, 0], [1, 2, 2.5], [-2, 0, 3]]];
        long[][] toks = [[0, 2, 1], [1, 0, 2]];
        using var lc = tensor(clean.SelectMany(b => b.SelectMany(p => p)).ToArray(), 2, 3, 3);
        using var le = tensor(edited.SelectMany(b => b.SelectMany(p => p)).ToArray(), 2, 3, 3);
        using var tokens = tensor(toks.SelectMany(t => t).ToArray(), 2, 3);
        using var effect = InterventionEffect.Compare(lc, le, tokens);

        var kl = new double[2, 3];
        for (int b = 0; b < 2; b++)
            for (int p = 0; p < 3; p++)
            {
                var pc = Softmax(clean[b][p]);
                var pe = Softmax(edited[b][p]);
                // KL(clean ‖ edited) = Σ p_c·log(p_c / p_e): how far the edit moves the model from its clean prediction.
                kl[b, p] = Enumerable.Range(0, 3).Sum(v => pc[v] * Math.Log(pc[v] / pe[v]));
                Assert.Equal(kl[b, p], effect.Kl[b, p].item<double>(), 10);
                int top = Array.IndexOf(pc, pc.Max());
                Assert.Equal(top, effect.CleanTop[b, p].item<long>());
                Assert.Equal(pc.Max(), effect.CleanTopProb[b, p].item<double>(), 10);
                Assert.Equal(pe.Max(), effect.EditedTopProb[b, p].item<double>(), 10);
                if (p < 2)
                {
                    // Position p predicts token p + 1.
                    Assert.Equal(-Math.Log(pc[toks[b][p + 1]]), effect.CleanLoss[b, p].item<double>(), 10);
                    Assert.Equal(-Math.Log(pe[toks[b][p + 1]]), effect.EditedLoss[b, p].item<double>(), 10);
                }
            }
        Assert.Equal(new long[] { 2, 2 }, effect.CleanLoss.shape);
        var expectedOrder = (from b in Enumerable.Range(0, 2) from p in Enumerable.Range(0, 3) select (b, p))
            .OrderByDescending(x => kl[x.b, x.p]).Take(3).ToList();
        Assert.Equal((1, 2), expectedOrder[0]);
        var most = effect.MostChanged(3);
        Assert.Equal(expectedOrder, most.Select(m => (m.Batch, m.Position)).ToList());
        for (int i = 0; i < 3; i++) Assert.Equal(kl[most[i].Batch, most[i].Position], most[i].Kl, 10);
    }
}
