using SaeSharp.Analysis;
using SaeSharp.Models;
using SaeSharp.Tests.Models;
using static TorchSharp.torch;

namespace SaeSharp.Tests.Analysis;

/// <summary>TransformerLens's <c>evals.induction_loss</c> (<see cref="InductionLoss"/>) on a tiny GPT-2 with GPT-2's tokenizer.</summary>
public class InductionLossTests : ModelTestBase
{
    [Fact]
    public void Induction_loss_is_the_mean_next_token_loss_on_the_second_copy_with_bos_in_place_of_the_first_id()
    {
        string dir = TinyModels.WriteGpt2(Sub("g"), seed: 5, nLayer: 1, nEmbd: 16, nHead: 4, vocab: 50257, nPositions: 64);
        AddGpt2Tokenizer(dir);
        using var model = ModelLoader.FromPretrained(dir);
        const int batch = 3, n = 7;
        using var tokens = InductionLoss.Tokens(batch, n, 50257, 50256, seed: 4);
        Assert.Equal([3L, 14], tokens.shape);
        var ids = tokens.data<long>().ToArray();
        for (int b = 0; b < batch; b++)
        {
            Assert.Equal(50256, ids[b * 2 * n]);                                      // repeated_tokens[:, 0] = bos_token_id
            Assert.InRange(ids[b * 2 * n + n], 100, 19999);                            // the copy keeps the first random id
            for (int p = 1; p < n; p++)
            {
                Assert.InRange(ids[b * 2 * n + p], 100, 19999);
                Assert.Equal(ids[b * 2 * n + p], ids[b * 2 * n + n + p]);
            }
        }
        // By hand: −log softmax(logits[b, t])[tokens[b, t + 1]] for t = n + 1 .. 2n − 2 (correct_log_probs[:, n + 1:]), averaged.
        using var logits = model.Forward(tokens);
        double sum = 0;
        int count = 0;
        for (int b = 0; b < batch; b++)
            for (int t = n + 1; t <= 2 * n - 2; t++)
            {
                var row = logits[b, t].data<float>().Select(v => (double)v).ToArray();
                double max = row.Max(), logZ = max + Math.Log(row.Sum(v => Math.Exp(v - max)));
                sum += logZ - row[ids[b * 2 * n + t + 1]];
                count++;
            }
        Assert.Equal(batch * (n - 2), count);
        Assert.Equal(sum / count, InductionLoss.FromLogits(logits, tokens), 1e-6);
        Assert.Equal(sum / count, InductionLoss.Run(model, batch, n, prependBos: true, seed: 4), 1e-5);
        // Without BOS the first id stays a random one.
        using var plain = InductionLoss.Tokens(batch, n, 50257, null, seed: 4);
        Assert.InRange(plain[0, 0].item<long>(), 100, 19999);
        Assert.Contains("exceed n_ctx=64", Assert.Throws<SaeSharpException>(() => InductionLoss.Run(model, 1, 40)).Message);
    }
}
