using SaeSharp.Analysis;
using SaeSharp.IO;
using SaeSharp.Models;
using SaeSharp.Tests.Tokenizers;
using static SaeSharp.Tests.Models.TranscriptionReference;
using static TorchSharp.torch;

namespace SaeSharp.Tests.Analysis;

/// <summary>
/// <see cref="AttentionCircuits"/> and <see cref="FactoredMatrix"/> against TransformerLens's own HookedTransformer
/// properties (v2.12.0; bench/reference/tl_reference_fixture.py wrote tests/data/tl_reference/circuits_*): W_Q, W_K, W_V,
/// W_O, <c>model.QK.AB</c>, <c>model.OV.AB</c>, <c>model.OV.eigenvalues</c> and the Main Demo's OV copying score, on
/// from_pretrained's processed weights (fold_ln, center_writing_weights, center_unembed, fold_value_biases) of GPT-2,
/// parallel GPT-NeoX, Llama 3 (grouped-query: W_K and W_V repeated per query head) and Phi; and GPT-2 after
/// <c>refactor_factored_attn_matrices=True</c>.
/// </summary>
public class TransformerLensCircuitsReferenceTests
{
    private const double Tolerance = 1e-4;

    [Theory]
    [InlineData("gpt2")]
    [InlineData("gpt_neox-parallel")]
    [InlineData("llama3")]
    [InlineData("phi")]
    public void Weights_circuits_and_copying_scores_equal_TransformerLens(string family)
    {
        using var scope = NewDisposeScope();
        var r = Npy.LoadNpz(TestPaths.Data("tl_reference", $"circuits_{family}.npz"));
        using var processed = WeightProcessing.Apply(ModelLoader.FromPretrained(TestPaths.Data("hf_models", family)), WeightProcessingOptions.TransformerLensDefaults);
        var w = AttentionCircuits.Weights(processed.Model);
        Close(r["W_Q"], w.WQ, "W_Q");
        Close(r["W_K"], w.WK, "W_K");
        Close(r["W_V"], w.WV, "W_V");
        Close(r["W_O"], w.WO, "W_O");
        var ov = AttentionCircuits.OV(processed.Model);
        Close(r["QK_AB"], AttentionCircuits.QK(processed.Model).AB, "QK.AB");
        Close(r["OV_AB"], ov.AB, "OV.AB");
        AssertSpectra(r, "", ov);
    }

    /// <summary>The refactoring rotates each head's factors by SVDs whose singular vectors are fixed only up to sign (and
    /// LAPACK versions differ), so what is compared is what the signs leave alone: QK.AB and OV.AB, the OV spectrum, the
    /// column norms of W_Q, W_K, W_V (√S, √S, S) and the row norms of W_O (1), |b_Q| and |b_K|, b_V (zero), b_O and the logits.</summary>
    [Fact]
    public void Refactored_gpt2_equals_TransformerLens()
    {
        using var scope = NewDisposeScope();
        var r = Npy.LoadNpz(TestPaths.Data("tl_reference", "circuits_gpt2.npz"));
        var tokens = Npy.LoadNpz(TestPaths.Data("tl_reference", "gpt2.npz"))["tokens"];
        using var processed = WeightProcessing.Apply(ModelLoader.FromPretrained(TestPaths.Data("hf_models", "gpt2")), WeightProcessingOptions.TransformerLensDefaults);
        var model = processed.Model;
        AttentionCircuits.RefactorFactoredAttnMatrices(model);
        var w = AttentionCircuits.Weights(model);
        const string p = "refactored/";
        Close(Norms(r[p + "W_Q"], -2), Norms(w.WQ, -2), "|W_Q columns|");
        Close(Norms(r[p + "W_K"], -2), Norms(w.WK, -2), "|W_K columns|");
        Close(Norms(r[p + "W_V"], -2), Norms(w.WV, -2), "|W_V columns|");
        Close(Norms(r[p + "W_O"], -1), Norms(w.WO, -1), "|W_O rows|");
        var ov = AttentionCircuits.OV(model);
        Close(r[p + "QK_AB"], AttentionCircuits.QK(model).AB, "QK.AB");
        Close(r[p + "OV_AB"], ov.AB, "OV.AB");
        AssertSpectra(r, p, ov);

        var c = model.Config;
        var prm = model.named_parameters().ToDictionary(kv => kv.name, kv => kv.parameter, StringComparer.Ordinal);
        var bQ = stack(Enumerable.Range(0, c.NLayers).Select(l => prm[$"transformer.h.{l}.attn.c_attn.bias"].detach().view(3, c.NHeads, c.DHead)).ToArray());
        Close(r[p + "b_Q"].abs(), bQ.select(1, 0).abs(), "|b_Q|");
        Close(r[p + "b_K"].abs(), bQ.select(1, 1).abs(), "|b_K|");
        Close(r[p + "b_V"], bQ.select(1, 2), "b_V");
        Close(r[p + "b_O"], stack(Enumerable.Range(0, c.NLayers).Select(l => prm[$"transformer.h.{l}.attn.c_proj.bias"].detach()).ToArray()), "b_O");
        Close(r[p + "logits"], processed.Forward(tokens), "logits");
    }

    /// <summary>OV.eigenvalues as a multiset per head (each of TransformerLens's matched to the nearest unused one of ours,
    /// within <see cref="Tolerance"/> of the head's largest |λ|: the order LAPACK returns them in is not fixed), and the
    /// copying score sum(λ).real / sum(|λ|).</summary>
    private static void AssertSpectra(IReadOnlyDictionary<string, Tensor> r, string prefix, FactoredMatrix ov)
    {
        var ours = ov.Eigenvalues();
        var re = r[prefix + "OV_eigenvalues_real"];
        var im = r[prefix + "OV_eigenvalues_imag"];
        Assert.Equal(re.shape, ours.shape);
        long layers = re.shape[0], heads = re.shape[1], n = re.shape[2];
        var eRe = re.to(ScalarType.Float64).data<double>().ToArray();
        var eIm = im.to(ScalarType.Float64).data<double>().ToArray();
        var oRe = ours.real.to(ScalarType.Float64).data<double>().ToArray();
        var oIm = ours.imag.to(ScalarType.Float64).data<double>().ToArray();
        for (long h = 0; h < layers * heads; h++)
        {
            var expected = Enumerable.Range(0, (int)n).Select(i => (Re: eRe[h * n + i], Im: eIm[h * n + i])).ToList();
            var actual = Enumerable.Range(0, (int)n).Select(i => (Re: oRe[h * n + i], Im: oIm[h * n + i])).ToList();
            double scale = Math.Max(1e-6, expected.Max(z => Math.Sqrt(z.Re * z.Re + z.Im * z.Im)));
            foreach (var z in expected)
            {
                var nearest = actual.MinBy(a => Dist(a, z));
                Assert.True(Dist(nearest, z) / scale < Tolerance,
                    $"{prefix}OV eigenvalues L{h / heads}H{h % heads}: {z.Re}+{z.Im}i has no match (nearest {nearest.Re}+{nearest.Im}i)");
                actual.Remove(nearest);
            }
        }
        Close(r[prefix + "OV_copying_score"], AttentionCircuits.CopyingScore(ours), prefix + "OV copying score");

        static double Dist((double Re, double Im) a, (double Re, double Im) b) => Math.Sqrt((a.Re - b.Re) * (a.Re - b.Re) + (a.Im - b.Im) * (a.Im - b.Im));
    }

    private static Tensor Norms(Tensor x, long dim) => (x * x).sum([dim]).sqrt();

    private static void Close(Tensor expected, Tensor actual, string what)
    {
        Assert.True(expected.shape.SequenceEqual(actual.shape), $"{what}: shape [{string.Join(", ", actual.shape)}], TransformerLens [{string.Join(", ", expected.shape)}]");
        double d = RelativeDifference(expected, actual);
        Assert.True(d < Tolerance, $"{what}: relative difference {d:g3}");
    }
}
