using System.Text.Json.Nodes;
using SaeSharp.IO;
using SaeSharp.Models;
using SaeSharp.Tests.Tokenizers;
using static TorchSharp.torch;

namespace SaeSharp.Tests.Models;

/// <summary>
/// DeepSeek-V2 (<c>deepseek_v2</c>) beyond the logits parity of <see cref="HfTransformersParityTests"/>: layer 1's hooks
/// against the "hook:" arrays bench/reference/deepseek_fixture.py wrote from its transcription of transformers'
/// modeling_deepseek_v2.py (latents, q/k/v before and after the rotary of adjacent pairs, pattern, z, the softmax router
/// scores, the experts chosen, one routed expert's hook_post, the shared experts, the MLP output); greedy and
/// group-limited-greedy routing worked by hand on one token; DeepseekV2Config's defaults; configs refused by name.
/// </summary>
public class DeepseekV2Tests
{
    private static string Folder(string name) => TestPaths.Data("hf_models", name);

    [Theory]
    [InlineData("deepseek_v2", 13)]         // q_lora_rank null: no hook_q_latent
    [InlineData("deepseek_v2-group", 14)]
    [InlineData("deepseek_v2-bias", 13)]    // mlp_bias, norm_topk_prob true, moe_layer_freq 2: the shared experts' hook_post with biases
    public void Layer_hooks_match_the_reference_transcription(string family, int hooks)
    {
        var names = DeepseekV3Tests.AssertHooksMatchReference(Folder(family), family);
        Assert.Equal(hooks, names.Count);
        Assert.Contains(names, k => k.Contains(".mlp.experts.", StringComparison.Ordinal));
    }

    [Fact]
    public void Mlp_bias_is_on_the_dense_MLPs_and_shared_experts_and_norm_topk_prob_and_moe_layer_freq_are_not_read()
    {
        // transformers' DeepseekV2MLP (dense layers, shared experts) takes bias=config.mlp_bias; DeepseekV2Experts and the
        // router have none. deepseek_v2-bias: first_k_dense_replace 1, moe_layer_freq 2, norm_topk_prob true.
        using var model = ModelLoader.FromPretrained(Folder("deepseek_v2-bias"));
        var names = model.named_parameters().Select(p => p.name).ToHashSet();
        foreach (var proj in new[] { "gate_proj", "up_proj", "down_proj" })
        {
            Assert.Contains(names, n => n.EndsWith($"0.mlp.{proj}.bias", StringComparison.Ordinal));
            foreach (int layer in new[] { 1, 2 })
            {
                Assert.Contains(names, n => n.EndsWith($"{layer}.mlp.shared_experts.{proj}.bias", StringComparison.Ordinal));
                Assert.DoesNotContain(names, n => n.EndsWith($"{layer}.mlp.experts.0.{proj}.bias", StringComparison.Ordinal));
            }
        }
        Assert.DoesNotContain(names, n => n.Contains("mlp.gate.bias", StringComparison.Ordinal));
        // moe_layer_freq 2 is not read: layer 2 is a mixture of experts too (DeepseekV2DecoderLayer: layer ≥ first_k_dense_replace).
        Assert.Contains("blocks.2.mlp.hook_expert_weights", model.HookPoints.Names);
        // norm_topk_prob is not read: the 3 chosen experts' weights are their softmax scores times routed_scaling_factor 1.5,
        // not renormalised (the logits parity in HfTransformersParityTests pins the same against the transcription).
        var settings = DecoderSettings.From(new JsonConfig("config.json", JsonNode.Parse(File.ReadAllText(Path.Combine(Folder("deepseek_v2-bias"), "config.json")))!.AsObject()), "deepseek_v2");
        Assert.False(settings.NormTopKProb);
        Assert.True(settings.MlpBias);
    }

    [Fact]
    public void Softmax_scores_are_a_distribution_and_pairs_rotate_in_place()
    {
        // The router's scores sum to 1 over the experts (softmax, not V3's sigmoid); the rotary leaves each (even, odd)
        // pair's norm unchanged, pair by pair in place (V3 de-interleaves them: there the pair norms land elsewhere).
        using var scope = NewDisposeScope();
        var r = Npy.LoadNpz(Path.Combine(Folder("deepseek_v2"), "reference.npz"));
        using var model = ModelLoader.FromPretrained(Folder("deepseek_v2"));
        var (_, cache) = model.RunWithCache(r["tokens"], ["blocks.1.mlp.hook_expert_weights", "blocks.1.attn.hook_q", "blocks.1.attn.hook_rot_q"]);
        using (cache)
        {
            var sums = cache["blocks.1.mlp.hook_expert_weights"].sum(-1);
            Assert.True(sums.sub(TorchScalars.Of(1.0)).abs().max().item<float>() < 1e-5);
            // qk_nope_head_dim 8, then 8 rotary dims = 4 pairs.
            var q = cache["blocks.1.attn.hook_q"].narrow(-1, 8, 8).reshape(-1, 4, 2);
            var rot = cache["blocks.1.attn.hook_rot_q"].narrow(-1, 8, 8).reshape(-1, 4, 2);
            var diff = q.norm(-1).sub(rot.norm(-1)).abs().max().item<float>();
            Assert.True(diff < 1e-4, $"pair norms changed by {diff}");
            Assert.Equal(cache["blocks.1.attn.hook_q"].narrow(-1, 0, 8).data<float>().ToArray(), cache["blocks.1.attn.hook_rot_q"].narrow(-1, 0, 8).data<float>().ToArray());
        }
    }

    [Fact]
    public void Greedy_and_group_limited_greedy_routing_by_hand_on_one_token()
    {
        // Softmax scores of 8 experts (4 groups of 2): 0.05 0.3 | 0.1 0.2 | 0.15 0.05 | 0.1 0.05.
        using var scope = NewDisposeScope();
        var scores = tensor(new float[] { 0.05f, 0.3f, 0.1f, 0.2f, 0.15f, 0.05f, 0.1f, 0.05f }).unsqueeze(0);
        // greedy, 3 per token, routed_scaling_factor 16 (DeepSeek-V2's): experts 1, 3, 4 with 0.3, 0.2, 0.15 times 16.
        var (chosen, weights) = GroupLimitedRouter.Route(scores, null, new GroupRouting(1, 1, 16, "greedy"), 3, normTopK: false);
        Assert.Equal(new long[] { 1, 3, 4 }, chosen.data<long>().ToArray());
        Assert.Equal(new[] { 4.8, 3.2, 2.4 }, weights.data<float>().Select(x => Math.Round((double)x, 5)).ToArray());
        // group_limited_greedy, topk_group 2: group maxima 0.3, 0.2, 0.15, 0.1 -> groups 0 and 1, so expert 4 (0.15, group 2)
        // is out and expert 2 (0.1) comes in; the weights are the scores times 2, not renormalised.
        var (grouped, gw) = GroupLimitedRouter.Route(scores, null, new GroupRouting(4, 2, 2, "group_limited_greedy"), 3, normTopK: false);
        Assert.Equal(new long[] { 1, 3, 2 }, grouped.data<long>().ToArray());
        Assert.Equal(new[] { 0.6, 0.4, 0.2 }, gw.data<float>().Select(x => Math.Round((double)x, 5)).ToArray());
        // topk_group 1: group 0 only: experts 1 and 0.
        var (one, _) = GroupLimitedRouter.Route(scores, null, new GroupRouting(4, 1, 1, "group_limited_greedy"), 2, normTopK: false);
        Assert.Equal(new long[] { 1, 0 }, one.data<long>().ToArray());
    }

    [Fact]
    public void Hooks_dense_first_layer_and_no_correction_bias()
    {
        using var model = ModelLoader.FromPretrained(Folder("deepseek_v2"));
        var h = model.HookPoints;
        Assert.Contains("blocks.0.mlp.hook_pre", h.Names);   // first_k_dense_replace 1
        Assert.Contains("blocks.1.mlp.experts.7.hook_post", h.Names);
        Assert.Contains("blocks.2.mlp.shared_expert.hook_post", h.Names);
        Assert.DoesNotContain("blocks.1.mlp.hook_shared_expert_gate", h.Names);
        Assert.DoesNotContain("blocks.1.attn.hook_q_latent", h.Names);   // q_lora_rank null
        Assert.Equal(32, model.HookWidth("blocks.1.mlp.shared_expert.hook_post"));   // 2 shared experts × 16
        Assert.Equal(48, model.HookWidth("blocks.0.mlp.hook_post"));
        Assert.DoesNotContain(model.named_parameters(), p => p.name.Contains("e_score_correction_bias", StringComparison.Ordinal));
        var e = Assert.Throws<SaeSharpException>(() => h.Resolve("blocks.1.mlp.hook_post"));
        Assert.Contains("mixture of 8 experts", e.Message);
        using var grouped = ModelLoader.FromPretrained(Folder("deepseek_v2-group"));
        Assert.Contains("blocks.0.mlp.hook_expert_weights", grouped.HookPoints.Names);   // first_k_dense_replace 0: every layer MoE
    }

    [Theory]
    [InlineData("deepseek_v2", "topk_method", "\"noaux_tc\"", "topk_method 'noaux_tc' is not supported (deepseek_v2 routes with greedy or group_limited_greedy)")]
    [InlineData("deepseek_v2", "topk_method", "\"gready\"", "topk_method 'gready' is not supported")]
    [InlineData("deepseek_v2", "scoring_func", "\"sigmoid\"", "scoring_func 'sigmoid' is not supported (deepseek_v2 routes with softmax scores)")]
    [InlineData("deepseek_v2", "num_experts_per_tok", null, "missing key 'num_experts_per_tok'")]
    [InlineData("deepseek_v2", "num_key_value_heads", "2", "num_key_value_heads=2 differs from num_attention_heads=4")]
    [InlineData("deepseek_v2-group", "n_group", "3", "n_routed_experts=8 must split into n_group=3 groups of equal size")]
    [InlineData("deepseek_v2-group", "n_group", null, "missing key 'n_group'")]
    [InlineData("deepseek_v2-group", "topk_group", "5", "topk_group=5 must not exceed n_group=4")]
    [InlineData("deepseek_v2-group", "topk_group", "0", "topk_group=0 must be positive")]
    [InlineData("deepseek_v2-group", "num_experts_per_tok", "5", "num_experts_per_tok=5 must not exceed the topk_group=2 groups' 4 experts")]
    public void Unsupported_configs_are_refused_by_name(string family, string key, string? json, string message)
    {
        var root = JsonNode.Parse(File.ReadAllText(Path.Combine(Folder(family), "config.json")))!.AsObject();
        if (json is null) root.Remove(key);
        else root[key] = JsonNode.Parse(json);
        var e = Assert.Throws<SaeSharpException>(() => DecoderSettings.From(new JsonConfig("config.json", root), "deepseek_v2"));
        Assert.Contains(message, e.Message);
    }

    [Fact]
    public void Config_defaults_are_DeepseekV2Config_s()
    {
        // DeepseekV2Config has no default for num_experts_per_tok; the rest are its defaults.
        var s = DecoderSettings.From(new JsonConfig("config.json", new JsonObject { ["model_type"] = "deepseek_v2", ["num_experts_per_tok"] = 6 }), "deepseek_v2");
        Assert.Equal((4096, 32, 32, 32_000, 11_008, 1407), (s.Hidden, s.NLayer, s.NHead, s.VocabSize, s.Intermediate, s.MoeIntermediate));
        Assert.Equal(new MlaSettings(1536, 512, 128, 64, 128, true, RopePairsInPlace: true), s.Mla);
        Assert.Equal(new GroupRouting(1, 1, 1.0, "greedy"), s.GroupRouting);
        Assert.Equal((64, 6, 0, 2 * 1407, false), (s.NumExperts, s.ExpertsPerToken, s.FirstDenseLayers, s.SharedExpertIntermediate, s.NormTopKProb));
        Assert.False(s.IsDenseMlp(0));
        // DeepSeek-V2's rope_scaling (yarn factor 40, mscale = mscale_all_dim = 0.707): cos/sin unscaled (the ratio is 1),
        // the softmax scale times (0.1·0.707·ln 40 + 1)² as DeepSeek's modeling_deepseek.py and transformers since PR #47435.
        var yarn = DecoderSettings.From(new JsonConfig("config.json", new JsonObject
        {
            ["model_type"] = "deepseek_v2", ["num_experts_per_tok"] = 6, ["n_shared_experts"] = null, ["max_position_embeddings"] = 163840,
            ["rope_scaling"] = new JsonObject { ["type"] = "yarn", ["factor"] = 40.0, ["mscale"] = 0.707, ["mscale_all_dim"] = 0.707, ["beta_fast"] = 32.0,
                ["beta_slow"] = 1.0, ["original_max_position_embeddings"] = 4096.0 },
        }), "deepseek_v2");
        double m = 0.1 * 0.707 * Math.Log(40) + 1;
        Assert.Equal(m * m / Math.Sqrt(192), yarn.AttnScale, 12);
        Assert.Equal(1.0, yarn.RopeAttentionScaling, 12);
        Assert.Equal(0, yarn.SharedExpertIntermediate);   // n_shared_experts null: none
    }
}
