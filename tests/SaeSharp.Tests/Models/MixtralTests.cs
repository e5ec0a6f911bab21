using SaeSharp.Analysis;
using SaeSharp.Hooks;
using SaeSharp.IO;
using SaeSharp.Models;
using SaeSharp.Saes;
using SaeSharp.Tests.Tokenizers;
using static TorchSharp.torch;

namespace SaeSharp.Tests.Models;

/// <summary>
/// The mixture-of-experts hooks (TransformerLens <c>MoE</c> names) on the transformers-written tiny checkpoints
/// tests/data/hf_models/mixtral (4 experts, top 2), qwen3_moe / qwen3_moe-unnormalized and qwen2_moe (with a shared
/// expert), checked against their own
/// weights read from the checkpoint files: the router's softmax, the experts chosen, and each expert's activations
/// recompose hook_mlp_out as transformers computes it.
/// </summary>
public class MixtralTests : ModelTestBase
{
    private static string Folder => TestPaths.Data("hf_models", "mixtral");

    private static Tensor RefTokens => Npy.LoadNpz(Path.Combine(Folder, "reference.npz"))["tokens"];

    private static Dictionary<string, Tensor> Weights() => SafeTensors.Load(Path.Combine(Folder, "model.safetensors"));

    /// <summary>silu(x·w1ᵀ)·(x·w3ᵀ) of expert <paramref name="e"/> of layer <paramref name="layer"/>: its hook_post rows.</summary>
    private static Tensor ExpertPost(Dictionary<string, Tensor> w, int layer, int e, Tensor x)
    {
        string p = $"model.layers.{layer}.block_sparse_moe.experts.{e}.";
        return nn.functional.silu(x.matmul(w[p + "w1.weight"].t())) * x.matmul(w[p + "w3.weight"].t());
    }

    /// <summary>The checkpoint's tensors of <paramref name="family"/> (model.safetensors or pytorch_model.bin) as float64.</summary>
    private static Dictionary<string, Tensor> Weights64(string family)
    {
        string dir = TestPaths.Data("hf_models", family), st = Path.Combine(dir, "model.safetensors");
        var w = File.Exists(st) ? SafeTensors.Load(st) : TorchPickle.LoadStateDict(Path.Combine(dir, "pytorch_model.bin"));
        return w.ToDictionary(kv => kv.Key, kv => kv.Value.to(ScalarType.Float64));
    }

    [Theory]
    [InlineData("mixtral", 4, 2, 48, true)]
    [InlineData("qwen3_moe-unnormalized", 4, 3, 24, false)]   // Qwen3-MoE: the kept softmax weights are not renormalised
    [InlineData("qwen2_moe", 4, 2, 24, false)]                 // Qwen2-MoE: plus the shared expert × sigmoid(its gate)
    public void Router_and_expert_hooks_recompose_the_MLP_output(string family, int experts, int k, int dMlp, bool renormalised)
    {
        using var scope = NewDisposeScope();
        using var model = ModelLoader.FromPretrained(TestPaths.Data("hf_models", family));
        var w = Weights64(family);
        const int layer = 1;
        string moe = family == "mixtral" ? "block_sparse_moe" : "mlp";
        var (gateW, upW, downW) = family == "mixtral" ? ("w1", "w3", "w2") : ("gate_proj", "up_proj", "down_proj");
        var b = model.HookPoints.Blocks[layer];
        var names = new List<string> { b.Ln2, b.ExpertWeights, b.ExpertIndices, b.MlpOut };
        foreach (var (g, pre, post) in b.Experts) names.AddRange([g, pre, post]);
        bool shared = family == "qwen2_moe";
        if (shared) names.AddRange([b.SharedExpert.Gate, b.SharedExpert.Pre, b.SharedExpert.Post, b.SharedExpertGate]);
        var tokens = Npy.LoadNpz(TestPaths.Data("hf_models", family, "reference.npz"))["tokens"];
        var (_, cache) = model.RunWithCache(tokens, names);
        using var _ = cache;
        var x = cache[b.Ln2].view(24, 32).to(ScalarType.Float64);
        var probs = cache[b.ExpertWeights];
        var chosen = cache[b.ExpertIndices];
        Assert.Equal(ScalarType.Float32, probs.dtype);
        Assert.Equal([2L, 12, experts], probs.shape);
        Assert.Equal(ScalarType.Int64, chosen.dtype);
        Assert.Equal([2L, 12, k], chosen.shape);

        // The router: softmax of ln2 · gateᵀ over the experts, and the k largest chosen.
        var expectedProbs = x.matmul(w[$"model.layers.{layer}.{moe}.gate.weight"].t()).softmax(-1);
        AssertAllClose(expectedProbs.view(2, 12, experts), probs.to(ScalarType.Float64), 1e-6, "hook_expert_weights");
        var p = expectedProbs.data<double>().ToArray();
        var c = chosen.view(24, k).data<long>().ToArray();
        Tensor Expert(int e, string proj) => w[$"model.layers.{layer}.{moe}.experts.{e}.{proj}.weight"];
        var expectedOut = zeros(24, 32, dtype: ScalarType.Float64);
        for (int t = 0; t < 24; t++)
        {
            var order = Enumerable.Range(0, experts).OrderByDescending(e => p[t * experts + e]).Take(k).ToArray();
            Assert.Equal(order.Select(e => (long)e), c.Skip(t * k).Take(k));
            double sum = renormalised ? order.Sum(e => p[t * experts + e]) : 1.0;
            foreach (int e in order)
            {
                var xt = x[t].unsqueeze(0);
                var post = nn.functional.silu(xt.matmul(Expert(e, gateW).t())) * xt.matmul(Expert(e, upW).t());
                expectedOut[t] += (post.matmul(Expert(e, downW).t()) * (p[t * experts + e] / sum)).squeeze(0);
            }
        }
        if (shared)
        {
            // Every token: sigmoid(x·shared_expert_gateᵀ) · down(silu(gate·x) · up·x), hooked as [batch, pos, 40] and [batch, pos, 1].
            string se = $"model.layers.{layer}.mlp.shared_expert.";
            var sg = x.matmul(w[se + "gate_proj.weight"].t());
            var sp = x.matmul(w[se + "up_proj.weight"].t());
            var scale = x.matmul(w[$"model.layers.{layer}.mlp.shared_expert_gate.weight"].t()).sigmoid();
            AssertAllClose(sg.view(2, 12, 40), cache[b.SharedExpert.Gate].to(ScalarType.Float64), 1e-5, "shared_expert.hook_gate");
            AssertAllClose(sp.view(2, 12, 40), cache[b.SharedExpert.Pre].to(ScalarType.Float64), 1e-5, "shared_expert.hook_pre");
            AssertAllClose((nn.functional.silu(sg) * sp).view(2, 12, 40), cache[b.SharedExpert.Post].to(ScalarType.Float64), 1e-5, "shared_expert.hook_post");
            AssertAllClose(scale.view(2, 12, 1), cache[b.SharedExpertGate].to(ScalarType.Float64), 1e-6, "hook_shared_expert_gate");
            expectedOut += scale * (nn.functional.silu(sg) * sp).matmul(w[se + "down_proj.weight"].t());
        }
        AssertAllClose(expectedOut.view(2, 12, 32), cache[b.MlpOut].to(ScalarType.Float64), 1e-5, "hook_mlp_out");

        // Each expert's hooks: [batch, pos, d_mlp], gate·x, up·x and silu(gate)·up at the tokens routed to it, 0 elsewhere.
        var routedTo = chosen.view(24, k);
        for (int e = 0; e < experts; e++)
        {
            var (gate, pre, post) = b.Experts[e];
            var routed = routedTo.eq(e).any(1);                                   // [24]
            Assert.Equal([2L, 12, dMlp], cache[post].shape);
            var mask = routed.unsqueeze(1).to(ScalarType.Float64);
            AssertAllClose(x.matmul(Expert(e, gateW).t()) * mask, cache[gate].view(24, dMlp).to(ScalarType.Float64), 1e-5, $"expert {e} hook_gate");
            AssertAllClose(x.matmul(Expert(e, upW).t()) * mask, cache[pre].view(24, dMlp).to(ScalarType.Float64), 1e-5, $"expert {e} hook_pre");
            var postRows = cache[post].view(24, dMlp);
            Assert.True(postRows[routed.logical_not()].eq(0).all().item<bool>(), $"expert {e}: hook_post is not 0 at tokens routed elsewhere");
            Assert.True(postRows[routed].ne(0).any(1).all().item<bool>(), $"expert {e}: hook_post is 0 at a routed token");
        }
        // Every token reaches exactly k experts' hooks.
        var reached = stack(b.Experts.Select(ex => cache[ex.Post].view(24, dMlp).ne(0).any(1)).ToArray()).to(ScalarType.Int64).sum(0L);
        Assert.Equal(Enumerable.Repeat((long)k, 24), reached.data<long>().ToArray());
    }

    [Fact]
    public void Editing_the_router_weights_reroutes_tokens()
    {
        // TransformerLens's MoE picks the top experts from hook_expert_weights after the hook: a hook giving expert 3 all
        // the weight sends every token to it alone (the second choice gets weight 0 after renormalisation), so hook_mlp_out
        // is expert 3's output, w2·(silu(w1·x)·w3·x), at every token.
        using var scope = NewDisposeScope();
        using var model = ModelLoader.FromPretrained(Folder);
        var w = Weights();
        var (_, cache) = model.Run(RefTokens, new RunOptions
        {
            Hooks = [("blocks.0.mlp.hook_expert_weights", t => zeros_like(t).index_fill_(2, tensor(new long[] { 3 }), 1.0))],
            CacheNames = ["blocks.0.ln2.hook_normalized", "blocks.0.hook_mlp_out", "blocks.0.mlp.hook_expert_indices"],
        });
        using var _ = cache!;
        var x = cache!["blocks.0.ln2.hook_normalized"];
        var expected = ExpertPost(w, 0, 3, x).matmul(w["model.layers.0.block_sparse_moe.experts.3.w2.weight"].t());
        AssertAllClose(expected, cache!["blocks.0.hook_mlp_out"], 1e-5, "hook_mlp_out routed to expert 3");
        Assert.True(cache!["blocks.0.mlp.hook_expert_indices"].select(2, 0).eq(3).all().item<bool>());
    }

    [Fact]
    public void Editing_the_expert_indices_sends_tokens_to_other_experts()
    {
        // Both slots pointed at expert 1: the token gets expert 1's output with the two renormalised weights, which sum to 1.
        using var scope = NewDisposeScope();
        using var model = ModelLoader.FromPretrained(Folder);
        var w = Weights();
        var (_, cache) = model.Run(RefTokens, new RunOptions
        {
            Hooks = [("blocks.1.mlp.hook_expert_indices", t => ones_like(t))],
            CacheNames = ["blocks.1.ln2.hook_normalized", "blocks.1.hook_mlp_out", "blocks.1.mlp.experts.0.hook_post"],
        });
        using var _ = cache!;
        var expected = ExpertPost(w, 1, 1, cache!["blocks.1.ln2.hook_normalized"]).matmul(w["model.layers.1.block_sparse_moe.experts.1.w2.weight"].t());
        AssertAllClose(expected, cache!["blocks.1.hook_mlp_out"], 1e-5, "hook_mlp_out with every token sent to expert 1");
        Assert.True(cache!["blocks.1.mlp.experts.0.hook_post"].eq(0).all().item<bool>(), "expert 0 still got tokens");

        var e = Assert.Throws<SaeSharpException>(() => model.Run(RefTokens, new RunOptions
        {
            Hooks = [("blocks.0.mlp.hook_expert_indices", t => full_like(t, 4))],
        }));
        Assert.Contains("hook 'blocks.0.mlp.hook_expert_indices' gave expert index 4; the experts are 0..3", e.Message);
    }

    [Fact]
    public void In_bfloat16_the_router_still_computes_in_float32()
    {
        // As transformers: softmax in float32 (hook_expert_weights stays float32), the kept weights cast back to bf16.
        using var scope = NewDisposeScope();
        using var model = ModelLoader.FromPretrained(Folder, ScalarType.BFloat16);
        var (logits, cache) = model.RunWithCache(RefTokens, ["blocks.0.mlp.hook_expert_weights", "blocks.0.hook_mlp_out"]);
        using var _ = cache;
        Assert.Equal(ScalarType.Float32, cache["blocks.0.mlp.hook_expert_weights"].dtype);
        Assert.Equal(ScalarType.BFloat16, cache["blocks.0.hook_mlp_out"].dtype);
        AssertAllClose(ones(2, 12), cache["blocks.0.mlp.hook_expert_weights"].sum(-1), 1e-6, "router softmax sums");
        Assert.True(logits!.isfinite().all().item<bool>());
    }

    [Fact]
    public void Dense_mlp_hooks_are_refused_naming_the_MoE_hooks()
    {
        using var model = ModelLoader.FromPretrained(Folder);
        foreach (var name in new[] { "blocks.1.mlp.hook_post", "blocks.1.mlp.hook_pre", "blocks.1.mlp.hook_pre_linear", HookPoints.ActName("post", 1) })
        {
            var e = Assert.Throws<SaeSharpException>(() => model.HookPoints.Resolve(name));
            Assert.Contains("mixture of 4 experts", e.Message);
            Assert.Contains("blocks.1.mlp.hook_expert_weights", e.Message);
            Assert.Contains("mlp.experts.{0..3}.hook_gate/hook_pre/hook_post", e.Message);
            Assert.DoesNotContain("\n", e.Message);
        }
        Assert.DoesNotContain(model.HookNames, n => n.EndsWith("mlp.hook_post", StringComparison.Ordinal));
        Assert.Contains("blocks.{0..1}.mlp.experts.{0..3}.hook_post", model.HookPoints.ValidNamesSummary());
        // Per block: the usual hooks, then the router's two and three per expert in place of hook_pre/hook_pre_linear/hook_post.
        Assert.Equal(["blocks.0.ln2.hook_normalized", "blocks.0.mlp.hook_expert_weights", "blocks.0.mlp.hook_expert_indices",
                      "blocks.0.mlp.experts.0.hook_gate", "blocks.0.mlp.experts.0.hook_pre", "blocks.0.mlp.experts.0.hook_post"],
            model.HookNames.SkipWhile(n => n != "blocks.0.ln2.hook_normalized").Take(6));
        // 23 usual hooks a block (with ln1/ln2.hook_scale, attn.hook_attn_scores, attn.hook_result, hook_mlp_in, hook_attn_in
        // and hook_q/k/v_input); hook_embed, ln_final's two.
        Assert.Equal(2 * (23 + 2 + 3 * 4) + 3, model.HookNames.Count);
    }

    [Theory]
    [InlineData("model.layers.1.block_sparse_moe", "blocks.1.hook_mlp_out")]
    [InlineData("model.layers.1.block_sparse_moe:in", "blocks.1.ln2.hook_normalized")]
    [InlineData("layers.1.mlp", "blocks.1.hook_mlp_out")]                                  // transformers 5's name
    [InlineData("blocks.1.mlp", "blocks.1.hook_mlp_out")]
    [InlineData("model.layers.0.block_sparse_moe.experts.2.w1", "blocks.0.mlp.experts.2.hook_gate")]
    [InlineData("model.layers.0.block_sparse_moe.experts.2.w3", "blocks.0.mlp.experts.2.hook_pre")]
    [InlineData("model.layers.0.block_sparse_moe.experts.2.w2:in", "blocks.0.mlp.experts.2.hook_post")]
    [InlineData("model.layers.0.block_sparse_moe.experts.3.act_fn:in", "blocks.0.mlp.experts.3.hook_gate")]
    [InlineData("model.layers.0.block_sparse_moe.gate:in", "blocks.0.ln2.hook_normalized")]
    [InlineData("model.layers.1.mlp", "blocks.1.hook_mlp_out", "qwen3_moe")]
    [InlineData("model.layers.0.mlp.experts.5.gate_proj", "blocks.0.mlp.experts.5.hook_gate", "qwen3_moe")]
    [InlineData("model.layers.0.mlp.experts.5.up_proj", "blocks.0.mlp.experts.5.hook_pre", "qwen3_moe")]
    [InlineData("model.layers.0.mlp.experts.5.down_proj:in", "blocks.0.mlp.experts.5.hook_post", "qwen3_moe")]
    [InlineData("model.layers.0.mlp.gate:in", "blocks.0.ln2.hook_normalized", "qwen3_moe")]
    [InlineData("model.layers.1.mlp.shared_expert.gate_proj", "blocks.1.mlp.shared_expert.hook_gate", "qwen2_moe")]
    [InlineData("model.layers.1.mlp.shared_expert.up_proj", "blocks.1.mlp.shared_expert.hook_pre", "qwen2_moe")]
    [InlineData("model.layers.1.mlp.shared_expert.down_proj:in", "blocks.1.mlp.shared_expert.hook_post", "qwen2_moe")]
    [InlineData("model.layers.1.mlp.shared_expert_gate:in", "blocks.1.ln2.hook_normalized", "qwen2_moe")]
    [InlineData("model.layers.1.mlp.experts.3.down_proj:in", "blocks.1.mlp.experts.3.hook_post", "qwen2_moe")]
    public void Hugging_Face_module_paths_name_the_MoE_hooks(string alias, string hook, string family = "mixtral")
    {
        using var model = ModelLoader.FromPretrained(TestPaths.Data("hf_models", family));
        Assert.Equal(hook, model.HookPoints.Resolve(alias));
    }

    [Theory]
    [InlineData("model.layers.0.block_sparse_moe.experts.4.w1")]    // 4 experts: 0..3
    [InlineData("model.layers.0.block_sparse_moe.experts.2.w2")]    // its output is weighted and summed: no hook holds it
    [InlineData("model.layers.0.mlp.gate_proj")]                    // a dense MLP's module
    [InlineData("model.layers.0.mlp.gate_proj", "qwen3_moe")]
    [InlineData("model.layers.0.mlp.experts.6.gate_proj", "qwen3_moe")]   // 6 experts: 0..5
    [InlineData("model.layers.0.mlp.shared_expert", "qwen2_moe")]          // its output is before the sigmoid scaling
    [InlineData("model.layers.0.mlp.shared_expert.gate_proj", "qwen3_moe")] // Qwen3-MoE has no shared expert
    public void Module_paths_without_a_hook_are_refused(string alias, string family = "mixtral")
    {
        using var model = ModelLoader.FromPretrained(TestPaths.Data("hf_models", family));
        Assert.Throws<SaeSharpException>(() => model.HookPoints.Resolve(alias));
    }

    [Fact]
    public void Hook_widths_and_SAE_fit()
    {
        using var model = ModelLoader.FromPretrained(Folder);
        Assert.Equal(4, model.HookWidth("blocks.0.mlp.hook_expert_weights"));
        Assert.Equal(2, model.HookWidth("blocks.0.mlp.hook_expert_indices"));
        Assert.Equal(48, model.HookWidth("blocks.0.mlp.experts.1.hook_post"));
        Assert.Equal(32, model.HookWidth("blocks.0.hook_mlp_out"));
        var cfg = new SaeConfig { Architecture = SaeArchitectures.Standard, DIn = 2, DSae = 4 };
        using var sae = SaeFactory.Create(cfg);
        var e = Assert.Throws<SaeSharpException>(() => model.CheckSaeFits(sae, "blocks.0.mlp.hook_expert_indices"));
        Assert.Contains("indices of the experts chosen", e.Message);
    }

    [Fact]
    public void An_SAE_on_an_expert_writes_through_that_experts_w2()
    {
        // Logit effects of an SAE on mlp.experts.E.hook_post: each decoder row goes through expert E's w2 into the residual stream.
        using var scope = NewDisposeScope();
        using var model = ModelLoader.FromPretrained(Folder);
        var w = Weights();
        var cfg = new SaeConfig { Architecture = SaeArchitectures.Standard, DIn = 48, DSae = 3 };
        using var sae = SaeFactory.Create(cfg);
        var dirs = FeatureWeights.ResidualDirections(model, sae, "blocks.1.mlp.experts.2.hook_post", [0, 2]);
        var expected = sae.WDec.detach().index_select(0, tensor(new long[] { 0, 2 })).matmul(w["model.layers.1.block_sparse_moe.experts.2.w2.weight"].t());
        AssertAllClose(expected, dirs, 1e-6, "W_dec · w2ᵀ");
        Assert.Throws<SaeSharpException>(() => FeatureWeights.MlpOut(model, 1));
    }
}
