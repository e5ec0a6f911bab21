using System.Text.Json;
using SaeSharp.Models;
using SaeSharp.Tests.Models;
using static TorchSharp.torch;

namespace SaeSharp.Tests.Models;

public class WeightProcessingTests : ModelTestBase
{
    private static readonly string[] Hooks =
    [
        "blocks.0.hook_resid_pre", "blocks.0.ln1.hook_normalized", "blocks.0.hook_attn_out", "blocks.1.ln2.hook_normalized",
        "blocks.1.mlp.hook_pre", "blocks.1.hook_mlp_out", "blocks.1.hook_resid_post", "blocks.1.attn.hook_pattern",
        "ln_final.hook_normalized",
    ];

    /// <summary>Two identical copies of each kind of tiny model (same seed, separate folders).</summary>
    private IEnumerable<(HookedTransformer Raw, HookedTransformer Copy)> Pairs()
    {
        yield return (Gpt2(), Gpt2());
        yield return (NeoX(parallel: true, rotaryPct: 0.5), NeoX(parallel: true, rotaryPct: 0.5));
        yield return (NeoX(parallel: false, rotaryPct: 1.0), NeoX(parallel: false, rotaryPct: 1.0));
    }

    private static Tensor Tok() => Tokens([49, 3, 17, 8, 22, 5, 40, 11], [1, 2, 3, 4, 5, 6, 7, 8]);

    private static (Tensor Logits, Dictionary<string, Tensor> Acts) Run(HookedTransformer m, IReadOnlyList<(string, Func<Tensor, Tensor?>)>? hooks = null)
    {
        var (logits, cache) = m.Run(Tok(), new RunOptions { CacheNames = Hooks, Hooks = hooks });
        using var c = cache!;
        var acts = c.ToDictionary(kv => kv.Key, kv => kv.Value.clone());
        return (logits!, acts);
    }

    private static Tensor Centered(Tensor x) => x - x.mean([-1], keepdim: true);

    [Fact]
    public void Fold_ln_keeps_logits_and_leaves_a_pure_normalisation()
    {
        foreach (var (raw, copy) in Pairs())
        {
            using var _ = raw;
            using var pm = WeightProcessing.Apply(copy, new WeightProcessingOptions { FoldLn = true });
            var (l0, a) = Run(raw);
            var (l1, b) = Run(pm.Model, pm.Hooks);
            string kind = raw.Config.Architecture;
            AssertAllClose(l0, l1, 1e-4, $"{kind} logits");
            foreach (var h in new[] { "blocks.0.hook_attn_out", "blocks.1.mlp.hook_pre", "blocks.1.hook_mlp_out", "blocks.1.hook_resid_post", "blocks.1.attn.hook_pattern" })
                AssertAllClose(a[h], b[h], 1e-4, $"{kind} {h}");
            var resid = b["blocks.0.hook_resid_pre"];
            var pure = nn.functional.layer_norm(resid, [resid.shape[^1]], eps: raw.Config.LayerNormEps);
            AssertAllClose(pure, b["blocks.0.ln1.hook_normalized"], 1e-5, $"{kind} ln1 is LNPre");
            // ln_final is folded into W_U and b_U as well (GPT-2's tied W_U untied first), as TransformerLens does.
            var last = b["blocks.1.hook_resid_post"];
            var pureFinal = nn.functional.layer_norm(last, [last.shape[^1]], eps: raw.Config.LayerNormEps);
            AssertAllClose(pureFinal, b["ln_final.hook_normalized"], 1e-5, $"{kind} ln_final is LNPre");
            Assert.True((pureFinal - a["ln_final.hook_normalized"]).abs().max().item<float>() > 1e-3, $"{kind}'s ln_final was the identity already: the test proves nothing");
        }
    }

    /// <summary>ln_final folded by hand: W_U[v, j] = W_E[v, j]·γ[j] centred over j, b_U[v] = Σ_j W_E[v, j]·β[j] (GPT-2, whose
    /// W_U is W_E: W_E itself unchanged, also by center_unembed), and NeoX's embed_out likewise.</summary>
    [Fact]
    public void Ln_final_is_folded_into_an_own_unembedding_by_hand()
    {
        foreach (var (raw, copy, wuName, lnName) in new[] { (Gpt2(), Gpt2(), "transformer.wte.weight", "transformer.ln_f"),
                     (NeoX(parallel: true, rotaryPct: 0.5), NeoX(parallel: true, rotaryPct: 0.5), "embed_out.weight", "gpt_neox.final_layer_norm") })
        {
            using var _ = raw;
            using var pm = WeightProcessing.Apply(copy, new WeightProcessingOptions { FoldLn = true, CenterUnembed = true });
            var p0 = raw.named_parameters().ToDictionary(kv => kv.name, kv => kv.parameter);
            var p1 = pm.Model.named_parameters().ToDictionary(kv => kv.name, kv => kv.parameter);
            string head = wuName == "embed_out.weight" ? "embed_out" : "lm_head";
            double[] Values(Tensor t) { using var f = t.to(ScalarType.Float64).contiguous(); return f.data<double>().ToArray(); }
            double[] we = Values(p0[wuName]), g = Values(p0[lnName + ".weight"]), beta = Values(p0[lnName + ".bias"]);
            double[] w1 = Values(p1[head + ".weight"]), b1 = Values(p1[head + ".bias"]);
            int vocab = (int)p0[wuName].shape[0], d = (int)p0[wuName].shape[1];
            var wu = new double[vocab, d];
            var bu = new double[vocab];
            for (int v = 0; v < vocab; v++)
            {
                double mean = 0;
                for (int j = 0; j < d; j++) mean += we[v * d + j] * g[j] / d;
                for (int j = 0; j < d; j++) wu[v, j] = we[v * d + j] * g[j] - mean;
                for (int j = 0; j < d; j++) bu[v] += we[v * d + j] * beta[j];
            }
            // center_unembed then subtracts the mean over the vocabulary from W_U's columns and from b_U.
            double buMean = bu.Average();
            for (int j = 0; j < d; j++)
            {
                double colMean = 0;
                for (int v = 0; v < vocab; v++) colMean += wu[v, j] / vocab;
                for (int v = 0; v < vocab; v++) Assert.Equal(wu[v, j] - colMean, w1[v * d + j], 4);
            }
            for (int v = 0; v < vocab; v++) Assert.Equal(bu[v] - buMean, b1[v], 4);
            Assert.True(bu.Max() - bu.Min() > 1e-3, "ln_final's bias was zero: the test proves nothing");
            if (head == "lm_head") AssertAllClose(p0[wuName], p1[wuName], 0, "GPT-2's W_E (wte) unchanged");
            Assert.Equal(1f, p1[lnName + ".weight"].min().item<float>());
            Assert.Equal(0f, p1[lnName + ".bias"].abs().max().item<float>());
        }
    }

    [Fact]
    public void Center_writing_weights_keeps_logits_and_centres_the_residual_stream()
    {
        foreach (var (raw, copy) in Pairs())
        {
            using var _ = raw;
            using var pm = WeightProcessing.Apply(copy, new WeightProcessingOptions { CenterWritingWeights = true });
            var (l0, a) = Run(raw);
            var (l1, b) = Run(pm.Model, pm.Hooks);
            string kind = raw.Config.Architecture;
            AssertAllClose(l0, l1, 1e-4, $"{kind} logits");
            AssertAllClose(l0, pm.Forward(Tok()), 1e-4, $"{kind} ProcessedModel.Forward");
            foreach (var h in new[] { "blocks.0.hook_resid_pre", "blocks.0.hook_attn_out", "blocks.1.hook_mlp_out", "blocks.1.hook_resid_post" })
            {
                AssertAllClose(Centered(a[h]), b[h], 1e-4, $"{kind} {h} is the centred original");
                Assert.True(a[h].mean([-1]).abs().max().item<float>() > 1e-3, $"{kind} {h} was already centred: the test proves nothing");
            }
            foreach (var h in new[] { "blocks.0.ln1.hook_normalized", "blocks.1.ln2.hook_normalized" })
                AssertAllClose(a[h], b[h], 1e-4, $"{kind} {h} (LayerNorm output, unchanged)");
        }
    }

    [Fact]
    public void All_processing_together_keeps_the_next_token_distribution()
    {
        foreach (var (raw, copy) in Pairs())
        {
            using var _ = raw;
            var all = new WeightProcessingOptions { FoldLn = true, CenterWritingWeights = true, CenterUnembed = true, FoldValueBiases = true };
            using var pm = WeightProcessing.Apply(copy, all);
            var (l0, a) = Run(raw);
            var (l1, b) = Run(pm.Model, pm.Hooks);
            AssertAllClose(l0.log_softmax(-1), l1.log_softmax(-1), 1e-4, $"{raw.Config.Architecture} log-probs");
            AssertAllClose(a["blocks.1.attn.hook_pattern"], b["blocks.1.attn.hook_pattern"], 1e-5, "patterns");
            AssertAllClose(Centered(a["blocks.1.hook_mlp_out"]), b["blocks.1.hook_mlp_out"], 1e-4, "mlp_out");
        }
    }

    [Fact]
    public void Fold_value_biases_moves_b_v_into_b_o()
    {
        using var raw = Gpt2();
        using var pm = WeightProcessing.Apply(Gpt2(), new WeightProcessingOptions { FoldValueBiases = true });
        var tokens = Tok();
        var (l0, c0) = raw.RunWithCache(tokens, ["blocks.0.attn.hook_v", "blocks.0.hook_attn_out"]);
        var (l1, c1) = pm.Model.RunWithCache(tokens, ["blocks.0.attn.hook_v", "blocks.0.hook_attn_out"]);
        AssertAllClose(l0!, l1!, 1e-4, "logits");
        AssertAllClose(c0["blocks.0.hook_attn_out"], c1["blocks.0.hook_attn_out"], 1e-4, "attn_out");
        // hook_v lost exactly its bias: the difference is the same at every position.
        var diff = c0["blocks.0.attn.hook_v"] - c1["blocks.0.attn.hook_v"];
        AssertAllClose(diff[0, 0].expand_as(diff), diff, 1e-5, "v difference is a constant bias");
        Assert.True(diff.abs().max().item<float>() > 1e-3);
        c0.Dispose();
        c1.Dispose();
    }

    [Fact]
    public void Kwargs_choose_the_processing()
    {
        var kw = JsonSerializer.Deserialize<Dictionary<string, JsonElement>>("""{"center_writing_weights": true, "dtype": "float32"}""")!;
        var o = WeightProcessingOptions.FromKwargs(kw, out var ignored);
        Assert.True(o.CenterWritingWeights);
        Assert.False(o.FoldLn);
        Assert.Equal(["dtype"], ignored);
        Assert.Equal(new Dictionary<string, bool> { ["center_writing_weights"] = true }, o.ToKwargs());
        var bad = JsonSerializer.Deserialize<Dictionary<string, JsonElement>>("""{"refactor_factored_attn_matrices": true}""")!;
        Assert.Throws<SaeSharpException>(() => WeightProcessingOptions.FromKwargs(bad, out _));
        var notBool = JsonSerializer.Deserialize<Dictionary<string, JsonElement>>("""{"fold_ln": "yes"}""")!;
        Assert.Contains("fold_ln", Assert.Throws<SaeSharpException>(() => WeightProcessingOptions.FromKwargs(notBool, out _)).Message);
    }
}
