using SaeSharp.Saes;
using SaeSharp.Hooks;
using SaeSharp.IO;
using SaeSharp.Models;
using SaeSharp.Tests.Models;
using TorchSharp;
using static TorchSharp.torch;

namespace SaeSharp.Tests.Hooks;

public class HookTests : ModelTestBase
{
    private static readonly Tensor Toks = tensor(new long[] { 3, 14, 15, 9, 26, 5, 35 }).unsqueeze(0);

    private static Tensor LayerNorm(Tensor x, Tensor w, Tensor b)
    {
        var mean = x.mean([-1L], keepdim: true);
        var var = (x - mean).pow(2).mean([-1L], keepdim: true);
        return (x - mean) / (var + 1e-5).sqrt() * w + b;
    }

    [Fact]
    public void ResidualIdentitiesHold()
    {
        foreach (var m in AllKinds())
            using (m)
            {
                var (_, c) = m.RunWithCache(Toks);
                using (c)
                {
                    string a = m.Config.Architecture;
                    Assert.Equal(m.HookPoints.DefaultNames.Count, c.Count);
                    for (int i = 0; i < m.Config.NLayers; i++)
                    {
                        string b = $"blocks.{i}.";
                        AssertAllClose(c[b + "hook_resid_pre"] + c[b + "hook_attn_out"] + c[b + "hook_mlp_out"], c[b + "hook_resid_post"], 1e-5, a + " resid_post");
                        if (m.Config.ParallelAttnMlp)
                        {
                            Assert.False(c.ContainsKey(b + "hook_resid_mid"));
                            Assert.DoesNotContain(b + "hook_resid_mid", m.HookNames);
                        }
                        else
                            AssertAllClose(c[b + "hook_resid_pre"] + c[b + "hook_attn_out"], c[b + "hook_resid_mid"], 1e-6, a + " resid_mid");
                        if (i > 0) Assert.True(c[$"blocks.{i - 1}.hook_resid_post"].equal(c[b + "hook_resid_pre"]).all().item<bool>());
                        var pattern = c[b + "attn.hook_pattern"];
                        Assert.Equal(new long[] { 1, m.Config.NHeads, 7, 7 }, pattern.shape);
                        AssertAllClose(ones(1, m.Config.NHeads, 7), pattern.sum(-1), 1e-5, a + " pattern rows");
                        Assert.Equal(0f, pattern.triu(1).abs().sum().item<float>());
                        foreach (var h in new[] { "q", "k", "v", "z" })
                            Assert.Equal(new long[] { 1, 7, m.Config.NHeads, m.Config.DHead }, c[b + "attn.hook_" + h].shape);
                        Assert.Equal(new long[] { 1, 7, m.Config.DMlp }, c[b + "mlp.hook_post"].shape);
                    }
                }
            }
    }

    [Fact]
    public void HooksAgreeWithCheckpointWeights()
    {
        // GPT-2: Conv1D weights [in, out]; NeoX: Linear [out, in]. Weights read from the file, not the model.
        var g = TinyModels.WriteGpt2(Sub("g"), seed: 11);
        var n = TinyModels.WriteNeoX(Sub("n"), seed: 12, parallelResidual: false, rotaryPct: 1.0, intermediateSize: 24);
        var gw = SafeTensors.Load(Path.Combine(g, "model.safetensors"));
        var nw = SafeTensors.Load(Path.Combine(n, "model.safetensors"));
        using (var m = ModelLoader.FromPretrained(g))
        {
            var (_, c) = m.RunWithCache(Toks);
            using (c)
            {
                AssertAllClose(gw["transformer.wte.weight"].index_select(0, Toks[0]).unsqueeze(0), c["hook_embed"], 0, "embed");
                AssertAllClose(gw["transformer.wpe.weight"].narrow(0, 0, 7).unsqueeze(0), c["hook_pos_embed"], 0, "pos_embed");
                AssertAllClose(c["hook_embed"] + c["hook_pos_embed"], c["blocks.0.hook_resid_pre"], 0, "resid_pre 0");
                string p = "transformer.h.1.";
                AssertAllClose(matmul(c["blocks.1.mlp.hook_post"], gw[p + "mlp.c_proj.weight"]) + gw[p + "mlp.c_proj.bias"], c["blocks.1.hook_mlp_out"], 1e-5, "mlp_out");
                AssertAllClose(matmul(c["blocks.1.attn.hook_z"].flatten(2), gw[p + "attn.c_proj.weight"]) + gw[p + "attn.c_proj.bias"], c["blocks.1.hook_attn_out"], 1e-5, "attn_out");
                AssertAllClose(LayerNorm(c["blocks.1.hook_resid_mid"], gw[p + "ln_2.weight"], gw[p + "ln_2.bias"]), c["blocks.1.ln2.hook_normalized"], 1e-5, "ln2");
                AssertAllClose(matmul(c["blocks.1.ln2.hook_normalized"], gw[p + "mlp.c_fc.weight"]) + gw[p + "mlp.c_fc.bias"], c["blocks.1.mlp.hook_pre"], 1e-5, "mlp pre");
            }
        }
        using (var m = ModelLoader.FromPretrained(n))
        {
            var (logits, c) = m.RunWithCache(Toks);
            using (c)
            {
                string p = "gpt_neox.layers.0.";
                AssertAllClose(matmul(c["blocks.0.mlp.hook_post"], nw[p + "mlp.dense_4h_to_h.weight"].t()) + nw[p + "mlp.dense_4h_to_h.bias"], c["blocks.0.hook_mlp_out"], 1e-5, "mlp_out");
                AssertAllClose(LayerNorm(c["blocks.0.hook_resid_pre"], nw[p + "input_layernorm.weight"], nw[p + "input_layernorm.bias"]), c["blocks.0.ln1.hook_normalized"], 1e-5, "ln1");
                // Position 0 is not rotated; later positions are, but rotation keeps each head vector's norm.
                AssertAllClose(c["blocks.0.attn.hook_q"].narrow(1, 0, 1), c["blocks.0.attn.hook_rot_q"].narrow(1, 0, 1), 1e-6, "rot_q at 0");
                AssertAllClose(c["blocks.0.attn.hook_k"].norm(-1), c["blocks.0.attn.hook_rot_k"].norm(-1), 1e-5, "rot_k norm");
                AssertAllClose(matmul(c["ln_final.hook_normalized"], nw["embed_out.weight"].t()), logits!, 1e-5, "unembed");
            }
        }
    }

    [Fact]
    public void ReplacingWithItselfKeepsLogitsAndZerosChangeThem()
    {
        foreach (var m in AllKinds())
            using (m)
            {
                var clean = m.Forward(Toks);
                foreach (var name in m.HookNames)
                {
                    var same = m.RunWithHooks(Toks, (name, x => x), (name, x => x.clone()), (name, _ => null));
                    // A hook function on a norm's scale makes the norm divide by it explicitly (TransformerLens's way),
                    // not the fused kernel; one on attn.hook_result makes the output the heads' results summed plus b_O, not
                    // the projection; one on hook_attn_in or hook_q/k/v_input makes each head project its own copy of the
                    // input: equal up to rounding.
                    if (name.EndsWith(".hook_scale", StringComparison.Ordinal) || name.EndsWith("attn.hook_result", StringComparison.Ordinal)
                        || name.EndsWith(".hook_attn_in", StringComparison.Ordinal) || name.EndsWith("_input", StringComparison.Ordinal))
                        AssertAllClose(clean, same, 1e-5, name);
                    else Assert.True(clean.equal(same).all().item<bool>(), name);
                }
                var ablated = m.RunWithHooks(Toks, ("blocks.0.hook_mlp_out", x => zeros_like(x)));
                Assert.False(ablated.allclose(clean));
            }
    }

    [Fact]
    public void ZeroFinalResidualGivesBiasOnlyLogits()
    {
        var dir = TinyModels.WriteGpt2(Sub("g"), seed: 13);
        var w = SafeTensors.Load(Path.Combine(dir, "model.safetensors"));
        using var m = ModelLoader.FromPretrained(dir);
        var logits = m.RunWithHooks(Toks, ("blocks.1.hook_resid_post", x => zeros_like(x)));
        // layer_norm(0) = bias, so every position's logits are ln_f.bias · W_Eᵀ.
        var expected = matmul(w["transformer.ln_f.bias"], w["transformer.wte.weight"].t());
        for (int t = 0; t < 7; t++) AssertAllClose(expected, logits[0, t], 1e-5, $"pos {t}");
    }

    [Fact]
    public void HooksSeeCachedValuesAfterEarlierReplacement()
    {
        using var m = NeoX(parallel: false);
        var added = ones(16) * 0.5f;
        var (_, clean) = m.RunWithCache(Toks, ["blocks.0.hook_resid_mid"]);
        var (_, c) = m.Run(Toks, new RunOptions
        {
            Hooks = [("blocks.0.hook_attn_out", x => x + added)],
            CacheNames = ["blocks.0.hook_resid_mid", "blocks.0.hook_attn_out"],
        });
        using (clean)
        using (c)
        {
            AssertAllClose(clean["blocks.0.hook_resid_mid"] + added, c!["blocks.0.hook_resid_mid"], 1e-5, "resid_mid after steering");
            Assert.Equal(2, c.Count);
        }
    }

    [Fact]
    public void SteeringHooksStayActiveDuringGeneration()
    {
        foreach (var m in AllKinds())
            using (m)
            {
                int calls = 0;
                var v = randn(16, generator: new Generator(5));
                var hooks = new List<(string, Func<Tensor, Tensor?>)> { ("blocks.0.hook_resid_post", x => { calls++; return x + v * 3; }) };
                using var steered = m.Generate(Tokens([4, 5, 6]), 5, new GenerationOptions { Hooks = hooks, ReturnLogits = true });
                Assert.Equal(5, calls);
                using var recomputed = m.Generate(Tokens([4, 5, 6]), 5, new GenerationOptions { Hooks = hooks, ReturnLogits = true, UseKvCache = false });
                AssertAllClose(recomputed.Logits!, steered.Logits!, 1e-5, "steered with cache");
                var fwd = m.RunWithHooks(steered.Tokens, ("blocks.0.hook_resid_post", x => x + v * 3)).narrow(1, 2, 5);
                AssertAllClose(fwd, steered.Logits!, 1e-5, "steered forward");
                using var plain = m.Generate(Tokens([4, 5, 6]), 5, new GenerationOptions { ReturnLogits = true });
                Assert.False(plain.Logits!.allclose(steered.Logits!));
            }
    }

    [Fact]
    public void UnknownHookErrorListsValidNames()
    {
        using var m = NeoX(parallel: true);
        var e = Assert.Throws<SaeSharpException>(() => m.RunWithHooks(Toks, ("blocks.0.hook_resid_middle", x => x)));
        Assert.Contains("blocks.0.hook_resid_middle", e.Message);
        Assert.Contains("blocks.{0..1}.hook_resid_pre", e.Message);
        Assert.Contains("blocks.{0..1}.mlp.hook_post", e.Message);
        Assert.Contains("ln_final.hook_normalized", e.Message);
        // Parallel blocks have no resid_mid.
        Assert.Throws<SaeSharpException>(() => m.RunWithCache(Toks, ["blocks.0.hook_resid_mid"]));
        Assert.Contains("layer 5", Assert.Throws<SaeSharpException>(() => m.HookPoints.Resolve("gpt_neox.layers.5.mlp")).Message);
        Assert.Contains("returned shape", Assert.Throws<SaeSharpException>(() => m.RunWithHooks(Toks, ("hook_embed", x => x[0]))).Message);
    }

    /// <summary>TransformerLens's optional hook points (hook_result, hook_mlp_in, hook_attn_in, hook_q/k/v_input) are hook
    /// points here; out-of-range layers and layer-less block names keep their own errors.</summary>
    [Fact]
    public void TransformerLensOptionalHooksAreHookPointsAndBadNamesKeepTheirErrors()
    {
        using var parallel = NeoX(parallel: true);
        using var sequential = Gpt2();
        string Why(HookedTransformer m, string name) => Assert.Throws<SaeSharpException>(() => m.HookPoints.Resolve(name)).Message;
        Assert.Equal("blocks.0.attn.hook_result", sequential.HookPoints.Resolve("blocks.0.attn.hook_result"));
        Assert.Equal("blocks.1.hook_mlp_in", parallel.HookPoints.Resolve("blocks.1.hook_mlp_in"));
        Assert.Equal("blocks.1.hook_mlp_in", HookPoints.ActName("mlp_in", 1));
        Assert.Equal("blocks.1.hook_q_input", sequential.HookPoints.Resolve("blocks.1.hook_q_input"));
        Assert.Equal("blocks.0.hook_attn_in", parallel.HookPoints.Resolve("blocks.0.hook_attn_in"));
        Assert.Contains("hook 'blocks.5.attn.hook_attn_scores': layer 5 does not exist", Why(sequential, "blocks.5.attn.hook_attn_scores"));
        Assert.Contains("unknown hook 'attn.hook_attn_scores'", Why(sequential, "attn.hook_attn_scores"));
        Assert.Contains("unknown hook 'blocks.0.ln_final.hook_scale'", Why(sequential, "blocks.0.ln_final.hook_scale"));
    }

    /// <summary>TransformerLens 3's bridge name <c>blocks.{i}.mlp.hook_in</c> (the MLP's input, after ln2) is
    /// <c>ln2.hook_normalized</c>: in a parallel GPT-NeoX block, in Qwen3 and in Gemma 2/3 (whose MLP output goes through a
    /// post-norm; gemma3-conditional: weights read from a Gemma3ForConditionalGeneration checkpoint) the MLP's first projection of that tensor, with the checkpoint's own weights, is <c>mlp.hook_pre</c>.</summary>
    [Theory]
    [InlineData("gpt_neox-parallel", "gpt_neox.layers.1.mlp.dense_h_to_4h")]
    [InlineData("qwen3", "model.layers.1.mlp.gate_proj")]
    [InlineData("gemma2", "model.layers.1.mlp.gate_proj")]
    [InlineData("gemma3", "model.layers.1.mlp.gate_proj")]
    [InlineData("gemma3-conditional", "language_model.model.layers.1.mlp.gate_proj")]
    [InlineData("gemma", "model.layers.1.mlp.gate_proj")]
    [InlineData("mistral-window", "model.layers.1.mlp.gate_proj")]
    public void Mlp_hook_in_is_ln2_hook_normalized_the_input_of_the_MLP(string family, string firstProjection)
    {
        string dir = SaeSharp.Tests.Tokenizers.TestPaths.Data("hf_models", family);
        using var m = ModelLoader.FromPretrained(dir);
        Assert.Equal("blocks.1.ln2.hook_normalized", m.HookPoints.Resolve("blocks.1.mlp.hook_in"));
        Assert.Equal("blocks.0.ln2.hook_normalized", m.HookPoints.Resolve("blocks.0.mlp.hook_in", HookKind.In));
        using var scope = NewDisposeScope();
        var tokens = tensor(new long[] { 3, 14, 15, 9, 26, 5, 35 }).unsqueeze(0);
        var (_, cache) = m.RunWithCache(tokens, ["blocks.1.mlp.hook_in", "blocks.1.mlp.hook_pre"]);
        using var _ = cache;
        string file = File.Exists(Path.Combine(dir, "model.safetensors")) ? Path.Combine(dir, "model.safetensors") : Path.Combine(dir, "pytorch_model.bin");
        var w = file.EndsWith(".bin", StringComparison.Ordinal) ? TorchPickle.LoadStateDict(file) : SafeTensors.Load(file);
        try
        {
            var expected = cache["blocks.1.mlp.hook_in"].matmul(w[firstProjection + ".weight"].t());
            if (w.TryGetValue(firstProjection + ".bias", out var bias)) expected = expected + bias;
            AssertAllClose(expected, cache["blocks.1.mlp.hook_pre"], 1e-4, family);
        }
        finally
        {
            foreach (var t in w.Values) t.Dispose();
        }
    }

    /// <summary>circuit-tracer's <c>blocks.{i}.mlp.hook_out</c> (its ReplacementMLP's output hook; the feature_output_hook of
    /// the mwhanna Qwen 3 transcoder sets) is the MLP's output: down_proj of <c>mlp.hook_post</c> with the checkpoint's
    /// weights, i.e. <c>hook_mlp_out</c> in Qwen 3; in Gemma 2 a post-norm follows the MLP, so it has no hook and the error says so.</summary>
    [Fact]
    public void Mlp_hook_out_is_the_MLP_output_and_is_refused_behind_a_post_norm()
    {
        string dir = SaeSharp.Tests.Tokenizers.TestPaths.Data("hf_models", "qwen3");
        using var m = ModelLoader.FromPretrained(dir);
        Assert.Equal("blocks.1.hook_mlp_out", m.HookPoints.Resolve("blocks.1.mlp.hook_out"));
        Assert.Equal("blocks.0.hook_mlp_out", m.HookPoints.Resolve("blocks.0.mlp.hook_out", HookKind.Out));
        using var scope = NewDisposeScope();
        using var file = SafeTensorsFile.Open(Path.Combine(dir, "model.safetensors"));
        using var down = file.Read("model.layers.1.mlp.down_proj.weight");
        var (_, cache) = m.RunWithCache(tensor(new long[] { 3, 14, 15, 9, 26, 5, 35 }).unsqueeze(0), ["blocks.1.mlp.hook_out", "blocks.1.mlp.hook_post"]);
        using var _ = cache;
        AssertAllClose(cache["blocks.1.mlp.hook_post"].matmul(down.t()), cache["blocks.1.mlp.hook_out"], 1e-5, "qwen3");
        using var gemma2 = ModelLoader.FromPretrained(SaeSharp.Tests.Tokenizers.TestPaths.Data("hf_models", "gemma2"));
        var e = Assert.Throws<SaeSharpException>(() => gemma2.HookPoints.Resolve("blocks.1.mlp.hook_out"));
        Assert.Contains("post_feedforward_layernorm has no hook point", e.Message);
    }

    [Fact]
    public void Gemma1_post_attention_layernorm_is_ln2_as_in_Llama()
    {
        // GemmaDecoderLayer (transformers 4.47) has no post-norms: post_attention_layernorm normalises the residual before
        // the MLP, as Llama's does (Gemma 2/3's normalises the attention output: hook_attn_out there).
        using var m = ModelLoader.FromPretrained(SaeSharp.Tests.Tokenizers.TestPaths.Data("hf_models", "gemma"));
        var hp = m.HookPoints;
        Assert.Equal("blocks.0.ln2.hook_normalized", hp.Resolve("model.layers.0.post_attention_layernorm"));
        Assert.Equal("blocks.1.hook_attn_out", hp.Resolve("model.layers.1.self_attn"));
        Assert.Equal("blocks.1.hook_mlp_out", hp.Resolve("model.layers.1.mlp"));
        Assert.Throws<SaeSharpException>(() => hp.Resolve("model.layers.0.pre_feedforward_layernorm"));
    }

    [Fact]
    public void Gemma3_conditional_module_paths_of_both_transformers_layouts_are_aliases()
    {
        using var m = ModelLoader.FromPretrained(SaeSharp.Tests.Tokenizers.TestPaths.Data("hf_models", "gemma3-conditional"));
        var hp = m.HookPoints;
        Assert.Equal("blocks.1.hook_resid_post", hp.Resolve("model.language_model.layers.1"));          // transformers >= 4.52
        Assert.Equal("blocks.1.hook_resid_pre", hp.Resolve("language_model.model.layers.1", HookKind.In)); // 4.50-4.51
        Assert.Equal("blocks.2.mlp.hook_pre_linear", hp.Resolve("model.language_model.layers.2.mlp.up_proj"));
        Assert.Equal("blocks.0.hook_attn_out", hp.Resolve("language_model.model.layers.0.post_attention_layernorm"));
        Assert.Equal("blocks.3.hook_resid_post", hp.Resolve("model.layers.3"));                          // Gemma3ForCausalLM's
        Assert.Equal("ln_final.hook_normalized", hp.Resolve("model.language_model.norm"));
        Assert.Throws<SaeSharpException>(() => hp.Resolve("model.vision_tower.vision_model.encoder.layers.0"));
    }

    [Fact]
    public void AliasesResolveToTransformerLensNames()
    {
        using var g = Gpt2();
        var gp = g.HookPoints;
        Assert.Equal("blocks.1.hook_mlp_out", gp.Resolve("transformer.h.1.mlp"));
        Assert.Equal("blocks.1.hook_mlp_out", gp.Resolve("h.1.mlp"));
        Assert.Equal("blocks.1.ln2.hook_normalized", gp.Resolve("transformer.h.1.mlp", HookKind.In));
        Assert.Equal("blocks.0.hook_attn_out", gp.Resolve("transformer.h.0.attn"));
        Assert.Equal("blocks.0.ln1.hook_normalized", gp.Resolve("transformer.h.0.attn", HookKind.In));
        Assert.Equal("blocks.1.hook_resid_post", gp.Resolve("transformer.h.1"));
        Assert.Equal("blocks.1.hook_resid_pre", gp.Resolve("transformer.h.1", HookKind.In));
        Assert.Equal("blocks.1.mlp.hook_pre", gp.Resolve("transformer.h.1.mlp.c_fc"));
        Assert.Equal("blocks.1.mlp.hook_post", gp.Resolve("transformer.h.1.mlp.c_proj", HookKind.In));
        Assert.Equal("blocks.1.hook_resid_mid", gp.Resolve("transformer.h.1.ln_2", HookKind.In));
        Assert.Equal("hook_embed", gp.Resolve("transformer.wte"));
        Assert.Equal("hook_pos_embed", gp.Resolve("transformer.wpe"));
        Assert.Equal("ln_final.hook_normalized", gp.Resolve("transformer.ln_f"));
        Assert.Equal("blocks.1.hook_resid_post", gp.Resolve("ln_final", HookKind.In));
        Assert.Equal("blocks.0.hook_mlp_out", gp.Resolve("blocks.0.mlp"));
        Assert.Equal("blocks.0.ln2.hook_normalized", gp.Resolve("blocks.0.mlp", HookKind.In));
        Assert.Equal("blocks.0.hook_resid_pre", gp.Resolve("blocks.0.hook_resid_pre", HookKind.In));
        Assert.Throws<SaeSharpException>(() => gp.Resolve("transformer.h.0.attn.c_attn"));
        Assert.Equal("blocks.0.ln1.hook_normalized", gp.Resolve("transformer.h.0.attn.c_attn", HookKind.In));

        using var n = NeoX(parallel: true);
        var np = n.HookPoints;
        Assert.Equal("blocks.1.hook_mlp_out", np.Resolve("gpt_neox.layers.1.mlp"));
        Assert.Equal("blocks.1.hook_mlp_out", np.Resolve("layers.1.mlp"));
        Assert.Equal("blocks.1.ln2.hook_normalized", np.Resolve("gpt_neox.layers.1.mlp", HookKind.In));
        Assert.Equal("blocks.1.hook_attn_out", np.Resolve("gpt_neox.layers.1.attention"));
        Assert.Equal("blocks.1.hook_resid_post", np.Resolve("gpt_neox.layers.1"));
        Assert.Equal("blocks.0.hook_resid_pre", np.Resolve("gpt_neox.layers.0.post_attention_layernorm", HookKind.In)); // parallel
        Assert.Equal("blocks.0.mlp.hook_pre", np.Resolve("gpt_neox.layers.0.mlp.dense_h_to_4h"));
        Assert.Equal("hook_embed", np.Resolve("gpt_neox.embed_in"));
        Assert.Throws<SaeSharpException>(() => np.Resolve("hook_pos_embed"));
        Assert.Throws<SaeSharpException>(() => np.Resolve("gpt_neox.embed_in", HookKind.In));

        Assert.Equal(new[] { "blocks.1.ln2.hook_normalized", "blocks.1.hook_mlp_out", "hook_embed" },
            np.Select("gpt_neox.layers.1.mlp:in, layers.1.mlp:out,hook_embed,blocks.1.hook_mlp_out"));
        // "all" is TransformerLens's default set: no opt-in hook (use_attn_result, use_attn_in, use_split_qkv_input,
        // use_hook_mlp_in: 6 per block); named, an opt-in hook still resolves.
        var all = np.Select("all");
        Assert.Equal(n.HookNames.Count - 6 * np.NLayers, all.Count);
        Assert.DoesNotContain(all, h => h.EndsWith("attn.hook_result", StringComparison.Ordinal) || h.EndsWith("hook_mlp_in", StringComparison.Ordinal)
            || h.EndsWith("_input", StringComparison.Ordinal) || h.EndsWith("hook_attn_in", StringComparison.Ordinal));
        Assert.Equal(n.HookNames.Where(all.Contains), all);   // firing order kept
        Assert.Equal(new[] { "blocks.1.attn.hook_result", "blocks.0.hook_mlp_in" }, np.Select("blocks.1.attn.hook_result,blocks.0.hook_mlp_in"));
        using (var defaultRun = n.RunWithCache(tensor(new long[] { 1, 2, 3 }).unsqueeze(0)))
            Assert.Equal(all.Order(), defaultRun.Cache.Keys.Order());
        Assert.Equal("blocks.1.ln2.hook_normalized", np.Resolve("gpt_neox.layers.1.mlp:in"));
        Assert.Equal("blocks.1.hook_mlp_out", np.Resolve("gpt_neox.layers.1.mlp:out", HookKind.In));
    }

    [Fact]
    public void AliasHooksAndCacheLookupsMatchCanonicalNames()
    {
        using var m = NeoX(parallel: false);
        var (_, c) = m.RunWithCache(Toks, ["gpt_neox.layers.1.mlp", "layers.1.mlp", "gpt_neox.layers.1.mlp:in"]);
        using (c)
        {
            Assert.Equal(new[] { "blocks.1.ln2.hook_normalized", "blocks.1.hook_mlp_out" }, c.Keys);
            Assert.True(c["gpt_neox.layers.1.mlp"].equal(c["blocks.1.hook_mlp_out"]).all().item<bool>());
            Assert.True(c["gpt_neox.layers.1.mlp:in"].equal(c["blocks.1.ln2.hook_normalized"]).all().item<bool>());
        }
        var viaAlias = m.RunWithHooks(Toks, ("gpt_neox.layers.0.attention", x => x * 0));
        var viaName = m.RunWithHooks(Toks, ("blocks.0.hook_attn_out", x => x * 0));
        Assert.True(viaAlias.equal(viaName).all().item<bool>());
    }

    [Fact]
    public void FilteredCacheHoldsOnlyMatchingHooks()
    {
        using var m = Gpt2();
        var (logits, c) = m.RunWithCache(Toks, name => name.EndsWith("hook_resid_post", StringComparison.Ordinal));
        using (c)
        {
            Assert.NotNull(logits);
            Assert.Equal(new[] { "blocks.0.hook_resid_post", "blocks.1.hook_resid_post" }, c.Keys);
        }
    }

    [Fact]
    public void CachedTensorsOutliveTheForwardAndForwardDoesNotLeak() => LiveTensors.OnOwnThread(() =>
    {
        using var m = Gpt2();
        using var steer = ones(16);
        m.Forward(Toks).Dispose();
        long before = DisposeScopeManager.Statistics.ThreadTotalLiveCount;
        for (int i = 0; i < 3; i++) m.Forward(Toks).Dispose();
        Assert.Equal(before, DisposeScopeManager.Statistics.ThreadTotalLiveCount);
        var (logits, c) = m.RunWithCache(Toks);
        logits!.Dispose();
        GC.Collect();
        // Still readable after the forward's scope closed.
        Assert.Equal(7, c["blocks.1.hook_resid_post"].shape[1]);
        c.Dispose();
        Assert.Equal(before, DisposeScopeManager.Statistics.ThreadTotalLiveCount);
        m.RunWithHooks(Toks, ("blocks.0.hook_resid_post", x => x + steer), ("blocks.1.attn.hook_pattern", x => x.clone())).Dispose();
        m.Generate(Toks, 3, new GenerationOptions { Hooks = [("blocks.0.hook_resid_post", x => x + steer)], ReturnLogits = true, Temperature = 1, TopP = 0.9, Seed = 1 }).Dispose();
        Assert.Equal(before, DisposeScopeManager.Statistics.ThreadTotalLiveCount);
        Assert.Equal(1f, steer[0].item<float>()); // the caller's tensor is never disposed or modified
    });

    /// <summary>What RunOptions.Hooks documents: a hook's tensors are freed with its layer, a detached clone is kept, and a
    /// run whose hook returns a new tensor leaves nothing live.</summary>
    [Fact]
    public void A_hook_keeps_a_tensor_only_by_detaching_it_from_the_pass()
    {
        using var model = Gpt2();
        Tensor? seen = null, kept = null;
        using (model.RunWithHooks(Toks, ("blocks.0.hook_mlp_out", act => { seen = act; kept = act.clone().DetachFromDisposeScope(); return null; })))
        {
        }
        Assert.Throws<InvalidOperationException>(() => seen!.sum());
        using (kept)
        {
            var (logits, cache) = model.RunWithCache(Toks, ["blocks.0.hook_mlp_out"]);
            using (logits)
            using (cache)
                Assert.True(kept!.allclose(cache["blocks.0.hook_mlp_out"], rtol: 0, atol: 0));
        }
        Assert.Equal(0, LiveTensors.Leaked(() => model.RunWithHooks(Toks, ("blocks.0.hook_mlp_out", act => zeros_like(act))).Dispose()));
    }

    /// <summary>An SAE of one attention head attached without its head index: the error says what d_in matches.</summary>
    [Fact]
    public void A_per_head_sae_without_hook_head_index_is_told_what_its_width_matches()
    {
        using var model = Gpt2();
        var cfg = new SaeConfig { DIn = 4, DSae = 8 };
        cfg.Metadata.HookName = "blocks.0.attn.hook_z";
        using var sae = SaeFactory.Create(cfg);
        var e = Assert.Throws<SaeSharpException>(() => model.CheckSaeFits(sae));
        Assert.Equal("SAE at 'blocks.0.attn.hook_z' has d_in=4 but the hook gives 16 values per token; d_in is d_head=4: " +
                     "an SAE of one head gives it in metadata.hook_head_index", e.Message);
        cfg.Metadata.HookHeadIndex = 2;
        Assert.Equal("blocks.0.attn.hook_z", model.CheckSaeFits(sae));
        // Elsewhere the message stays as it was.
        Assert.DoesNotContain("hook_head_index", Assert.Throws<SaeSharpException>(() => model.CheckSaeFits(sae, "blocks.0.hook_resid_post")).Message);
    }
}
