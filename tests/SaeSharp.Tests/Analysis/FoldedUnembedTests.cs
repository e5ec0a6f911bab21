using SaeSharp.Analysis;
using SaeSharp.IO;
using SaeSharp.Models;
using SaeSharp.Tests.Tokenizers;
using static TorchSharp.torch;

namespace SaeSharp.Tests.Analysis;

/// <summary>The unembedding the logit effects use, against the checkpoint's own weights (the HF fixtures).</summary>
public class FoldedUnembedTests
{
    [Theory]
    [InlineData("gemma2", true)]
    [InlineData("llama3", false)]
    public void Folded_unembedding_scales_each_row_by_the_final_norm_weight_and_by_one_plus_it_for_gemma(string family, bool gemma)
    {
        // HF Gemma2RMSNorm multiplies by (1 + weight), LlamaRMSNorm by weight; both models here tie W_U to embed_tokens
        // unless the checkpoint has lm_head.weight. Expected[k, v] = scale_k · W_U[v, k], from the safetensors file.
        string dir = TestPaths.Data("hf_models", family);
        using var model = ModelLoader.FromPretrained(dir);
        var w = SafeTensors.Load(Path.Combine(dir, "model.safetensors"), ScalarType.Float32);
        var wu = (w.TryGetValue("lm_head.weight", out var head) ? head : w["model.embed_tokens.weight"]).data<float>().ToArray();
        var norm = w["model.norm.weight"].data<float>().ToArray();
        int d = norm.Length, vocab = wu.Length / d;
        Assert.True(norm.Any(x => Math.Abs(x) > 1e-3), "the fixture's final norm weight is not all zero");
        using var folded = FeatureWeights.FoldedUnembed(model);
        Assert.Equal(new long[] { d, vocab }, folded.shape);
        var actual = folded.data<float>().ToArray();
        for (int k = 0; k < d; k++)
            for (int v = 0; v < vocab; v++)
            {
                double scale = gemma ? 1 + norm[k] : norm[k];
                double expected = scale * wu[v * d + k];
                Assert.True(Math.Abs(expected - actual[k * vocab + v]) <= 1e-5 * Math.Max(1, Math.Abs(expected)),
                    $"[{k}, {v}]: {actual[k * vocab + v]}, expected {expected}");
            }
        foreach (var t in w.Values) t.Dispose();
    }
}
