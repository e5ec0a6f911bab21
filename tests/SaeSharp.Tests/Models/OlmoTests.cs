using SaeSharp.Hooks;
using SaeSharp.IO;
using SaeSharp.Models;
using SaeSharp.Tests.Tokenizers;
using static TorchSharp.torch;

namespace SaeSharp.Tests.Models;

/// <summary>
/// OLMo-2 and OLMoE beyond the parity with the reference forward (HfTransformersParityTests): where OLMo-2's hooks sit
/// (TransformerLens's wiring of a post-norm-only block), its Hugging Face module aliases, and that its q/k norms span
/// all heads of a position. Expected values are computed here from the checkpoint's own tensors.
/// </summary>
public class OlmoTests : ModelTestBase
{
    private static string Folder(string family) => TestPaths.Data("hf_models", family);

    /// <summary>RMS-normalises the last dimension in float64 and multiplies by <paramref name="w"/>.</summary>
    private static Tensor Rms(Tensor x, Tensor w, double eps)
    {
        var x64 = x.to(ScalarType.Float64);
        return x64 * (x64.pow(2).mean([-1L], keepdim: true) + eps).rsqrt() * w.to(ScalarType.Float64);
    }

    [Fact]
    public void Olmo2_hooks_sit_where_TransformerLens_puts_them()
    {
        // TransformerLens (TransformerBlock, Olmo2ForCausalLM): hook_attn_out / hook_mlp_out are the sublayer outputs
        // before their post-norms; ln1 / ln2 are post_attention_layernorm / post_feedforward_layernorm, and their
        // hook_normalized is what is added to the residual stream. Attention reads resid_pre itself (no pre-norm).
        using var scope = NewDisposeScope();
        using var m = ModelLoader.FromPretrained(Folder("olmo2"));
        var w = SafeTensors.Load(Path.Combine(Folder("olmo2"), "model.safetensors"));
        var tokens = Npy.LoadNpz(Path.Combine(Folder("olmo2"), "reference.npz"))["tokens"];
        string[] hooks = ["hook_resid_pre", "hook_attn_out", "ln1.hook_normalized", "hook_resid_mid", "hook_mlp_out", "ln2.hook_normalized", "hook_resid_post", "attn.hook_q"];
        var (_, cache) = m.RunWithCache(tokens, hooks.Select(h => "blocks.1." + h).ToList());
        using var _ = cache;
        Tensor C(string h) => cache["blocks.1." + h].to(ScalarType.Float64);
        AssertAllClose(Rms(C("hook_attn_out"), w["model.layers.1.post_attention_layernorm.weight"], 1e-6), C("ln1.hook_normalized"), 1e-5, "ln1");
        AssertAllClose(C("hook_resid_pre") + C("ln1.hook_normalized"), C("hook_resid_mid"), 1e-5, "resid_mid");
        AssertAllClose(Rms(C("hook_mlp_out"), w["model.layers.1.post_feedforward_layernorm.weight"], 1e-6), C("ln2.hook_normalized"), 1e-5, "ln2");
        AssertAllClose(C("hook_resid_mid") + C("ln2.hook_normalized"), C("hook_resid_post"), 1e-5, "resid_post");
        // hook_q is q_proj of resid_pre itself.
        var q = C("hook_resid_pre").matmul(w["model.layers.1.self_attn.q_proj.weight"].to(ScalarType.Float64).t());
        AssertAllClose(q.view(C("attn.hook_q").shape), C("attn.hook_q"), 1e-5, "hook_q");
        foreach (var t in w.Values) t.Dispose();
    }

    [Fact]
    public void Olmo2_module_paths_name_the_post_norms_ln1_and_ln2()
    {
        using var m = ModelLoader.FromPretrained(Folder("olmo2"));
        var hp = m.HookPoints;
        Assert.Equal("blocks.0.ln1.hook_normalized", hp.Resolve("model.layers.0.post_attention_layernorm"));
        Assert.Equal("blocks.0.hook_attn_out", hp.Resolve("model.layers.0.post_attention_layernorm", HookKind.In));
        Assert.Equal("blocks.1.ln2.hook_normalized", hp.Resolve("model.layers.1.post_feedforward_layernorm"));
        Assert.Equal("blocks.1.hook_mlp_out", hp.Resolve("model.layers.1.post_feedforward_layernorm", HookKind.In));
        Assert.Equal("blocks.1.hook_attn_out", hp.Resolve("model.layers.1.self_attn"));
        Assert.Equal("blocks.1.hook_resid_pre", hp.Resolve("model.layers.1.self_attn", HookKind.In));
        Assert.Equal("blocks.1.hook_resid_mid", hp.Resolve("model.layers.1.mlp", HookKind.In));
        Assert.Equal("blocks.1.hook_resid_mid", hp.Resolve("blocks.1.mlp", HookKind.In));
        Assert.Equal("blocks.1.hook_attn_out", hp.Resolve("blocks.1.ln1", HookKind.In));
        Assert.Throws<SaeSharpException>(() => hp.Resolve("model.layers.0.input_layernorm"));
    }

    [Theory]
    [InlineData("olmo2", 1e-6)]
    [InlineData("olmoe", 1e-5)]
    public void Q_and_k_norms_span_every_head_of_a_position(string family, double eps)
    {
        // Rotary turns pairs of dims, so each position's summed square over all heads of hook_rot_q equals that of the
        // normalised q before rotary: RMSNorm over the whole projection (q_norm is n_heads·d_head wide), not per head.
        using var scope = NewDisposeScope();
        using var m = ModelLoader.FromPretrained(Folder(family));
        var w = SafeTensors.Load(Path.Combine(Folder(family), "model.safetensors"));
        var tokens = Npy.LoadNpz(Path.Combine(Folder(family), "reference.npz"))["tokens"];
        var (_, cache) = m.RunWithCache(tokens, ["blocks.0.attn.hook_q", "blocks.0.attn.hook_rot_q", "blocks.0.attn.hook_k", "blocks.0.attn.hook_rot_k"]);
        using var _ = cache;
        foreach (var x in new[] { "q", "k" })
        {
            var raw = cache[$"blocks.0.attn.hook_{x}"];
            var normed = Rms(raw.flatten(2), w[$"model.layers.0.self_attn.{x}_norm.weight"], eps);
            var expected = normed.pow(2).sum(-1);
            var actual = cache[$"blocks.0.attn.hook_rot_{x}"].to(ScalarType.Float64).flatten(2).pow(2).sum(-1);
            AssertAllClose(expected, actual, 1e-4, $"{family} {x}");
        }
        foreach (var t in w.Values) t.Dispose();
    }

    [Fact]
    public void Olmoe_refuses_a_bad_clip_qkv_and_expert_count()
    {
        string dir = Path.Combine(TestPaths.TempDir(), "olmoe");
        Directory.CreateDirectory(dir);
        try
        {
            foreach (var f in Directory.GetFiles(Folder("olmoe")))
                File.Copy(f, Path.Combine(dir, Path.GetFileName(f)));
            var path = Path.Combine(dir, "config.json");
            string original = File.ReadAllText(path);
            File.WriteAllText(path, original.Replace("\"clip_qkv\": null", "\"clip_qkv\": -1.0"));
            Assert.Contains("clip_qkv=-1 must be positive", Assert.Throws<SaeSharpException>(() => ModelLoader.FromPretrained(dir)).Message);
            File.WriteAllText(path, original.Replace("\"num_experts_per_tok\": 3", "\"num_experts_per_tok\": 7"));
            Assert.Contains("num_experts_per_tok=7 must be between 1 and num_experts=6", Assert.Throws<SaeSharpException>(() => ModelLoader.FromPretrained(dir)).Message);
        }
        finally
        {
            Directory.Delete(Path.GetDirectoryName(dir)!, true);
        }
    }
}
