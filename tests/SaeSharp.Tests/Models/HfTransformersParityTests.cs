using System.Text.Json.Nodes;
using SaeSharp.IO;
using SaeSharp.Models;
using SaeSharp.Tests.Tokenizers;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace SaeSharp.Tests.Models;

/// <summary>
/// Every model family against the real Hugging Face <c>transformers</c> modeling code (independent of our own
/// <see cref="DecoderReference"/>): tests/data/hf_models holds tiny random checkpoints written by transformers'
/// <c>save_pretrained</c> (its config.json; model.safetensors or pytorch_model.bin) and that code's float32 forward on
/// fixed tokens (logits and <c>output_hidden_states</c>, unpadded and padded) and its greedy <c>generate()</c>, made by
/// bench/reference/hf_models_fixture.py with transformers 4.47 (main 66ab300a; Gemma 1, Mistral, Mixtral and Qwen2-MoE too) and, for
/// Qwen3, Qwen3-MoE and Gemma 3, 4.51 (main d1b92369).
/// The OLMo, gpt-oss and DeepSeek-V3 folders (olmo, olmo-clip, olmo2, olmo3, olmoe, olmoe-clip, gpt_oss, gpt_oss-mxfp4,
/// deepseek_v3, deepseek_v3-fp8, deepseek_v3-yarn, gpt_neo, phi3, phi, phi-qk_layernorm, gptj, opt, opt-350m, bloom) are the exception: their reference comes from bench/reference/olmo_fixture.py,
/// gpt_oss_fixture.py, deepseek_fixture.py, gpt_neo_fixture.py, phi3_fixture.py, phi_fixture.py, gptj_fixture.py, opt_fixture.py and bloom_fixture.py, plain-PyTorch transcriptions of transformers' modeling_olmo.py,
/// modeling_olmo2.py, modeling_olmo3.py, modeling_olmoe.py, modeling_gpt_oss.py (with YaRN rope and, for gpt_oss-mxfp4,
/// mxfp4.py's dequantisation), modeling_deepseek_v3.py, modeling_gpt_neo.py, modeling_phi3.py, modeling_phi.py, modeling_gptj.py, modeling_opt.py and modeling_bloom.py
/// (transformers' tree could not be brought onto the machine), so they pin that reading of the HF code, not transformers
/// itself; their generation reference is greedy over uncached forwards, and they have no config_transformers5.json.
/// Each folder is loaded by <see cref="ModelLoader.FromPretrained"/>, as a user's download is.
/// </summary>
public class HfTransformersParityTests(ITestOutputHelper output)
{
    public static TheoryData<string> Families =>
        ["gpt2", "gpt_neox-parallel", "gpt_neox-sequential", "llama3", "llama-bias-tied", "qwen2", "qwen3", "gemma2", "gemma3",
         "gemma3-conditional", "gemma3-softcap", "gemma", "mistral", "mistral-window", "mixtral", "mixtral-window", "qwen3_moe",
         "qwen3_moe-unnormalized", "qwen2_moe", .. OlmoFamilies];

    /// <summary>The folders written by the PyTorch transcriptions bench/reference/olmo_fixture.py and gpt_oss_fixture.py
    /// (see the class summary).</summary>
    private static readonly string[] OlmoFamilies = ["olmo2", "olmoe", "olmoe-clip", "olmo", "olmo-clip", "olmo3", "gpt_oss", "gpt_oss-mxfp4", "deepseek_v3", "deepseek_v3-fp8", "deepseek_v3-yarn", "deepseek_v2", "deepseek_v2-group", "deepseek_v2-bias", "gpt_neo", "phi3", "phi", "phi-qk_layernorm", "gptj", "opt", "opt-350m", "bloom"];

    /// <summary>The folders with a config_transformers5.json (all but <see cref="OlmoFamilies"/>).</summary>
    public static TheoryData<string> Transformers5Families => [.. ((IEnumerable<string>)Families).Where(f => !OlmoFamilies.Contains(f))];

    // Tolerance, relative to the tensor's largest |value|: both sides compute in float32, with different kernels
    // (TorchSharp's libtorch vs Debian's torch 1.13.1) and operation orders (fused vs separate q/k/v, repeat_interleave
    // vs HF repeat_kv, masked_fill vs additive mask), so each value may differ by a few float32 ulps of the magnitudes
    // involved. Measured on this machine (2026-12): at most 7.6e-7 over every family, layer and the logits (qwen2's
    // ln_final), 5.8e-7 for the padded batch, 8.8e-7 for generation (mistral against generate()'s own step logits;
    // Gemma 1 and Mistral added 2026-12-05, their forwards within 5.3e-7; Mixtral and Qwen3-MoE the same day, within 6.8e-7
    // and generation 5.8e-7; the OLMo-2/OLMoE folders, against their PyTorch transcription, within 9.2e-7 and generation
    // 4.4e-7; OLMo and OLMo 3 the same way, forward within 6.8e-7). 1e-5 leaves room for other CPUs' kernels and
    // stays far below any modelling difference: Fixtures_see_each_config_detail shows single config.json changes
    // moving the logits by 2.4e-3 (an eps) to 1.8 (a soft cap) of their scale.
    private const double RelativeTolerance = 1e-5;

    private static string Folder(string family) => TestPaths.Data("hf_models", family);

    private static IReadOnlyDictionary<string, Tensor> Reference(string family) =>
        Npy.LoadNpz(Path.Combine(Folder(family), "reference.npz"));

    /// <summary>max |expected − actual| / max |expected|, after checking the shapes agree.</summary>
    internal static double RelativeMaxDifference(Tensor expected, Tensor actual, string what)
    {
        Assert.True(expected.shape.SequenceEqual(actual.shape),
            $"{what}: shape [{string.Join(", ", actual.shape)}], transformers gave [{string.Join(", ", expected.shape)}]");
        using var scope = NewDisposeScope();
        var e = expected.to(ScalarType.Float64);
        double scale = e.abs().max().item<double>();
        Assert.True(scale > 0.5, $"{what}: the reference is near zero (max |value| {scale}), the comparison would say nothing");
        return (e - actual.to(ScalarType.Float64)).abs().max().item<double>() / scale;
    }

    [Theory]
    [MemberData(nameof(Families))]
    public void Logits_and_residual_stream_match_transformers(string family)
    {
        using var scope = NewDisposeScope();
        var r = Reference(family);
        using var model = ModelLoader.FromPretrained(Folder(family));
        int n = model.Config.NLayers;
        // HF hidden_states[i] for i < n_layers is the residual entering layer i; the last is after the final norm.
        Assert.Equal(n + 1, r.Keys.Count(k => k.StartsWith("hidden_", StringComparison.Ordinal)));
        var names = Enumerable.Range(0, n).Select(l => $"blocks.{l}.hook_resid_pre").Append("ln_final.hook_normalized").ToList();
        var (logits, cache) = model.RunWithCache(r["tokens"], names);
        using (cache)
        {
            var worst = new List<(string What, double Diff)>();
            for (int i = 0; i <= n; i++)
                worst.Add((names[i], RelativeMaxDifference(r[$"hidden_{i}"], cache[names[i]], $"{family} {names[i]}")));
            worst.Add(("logits", RelativeMaxDifference(r["logits"], logits!, $"{family} logits")));
            foreach (var (w, d) in worst) output.WriteLine($"{family} {w}: {d:G3}");
            var (what, diff) = worst.MaxBy(w => w.Diff);
            Assert.True(diff <= RelativeTolerance, $"{family}: {what} differs from transformers by {diff:G3} of its scale (> {RelativeTolerance})");
        }
    }

    [Theory]
    [MemberData(nameof(Families))]
    public void Padded_batch_matches_transformers_at_the_real_tokens(string family)
    {
        // Row 0 left-padded by 3, row 1 right-padded by 2; transformers was given the position ids its generate()
        // passes for padded batches (real tokens so far − 1), which is what SaeSharp computes from the mask. Only real
        // tokens are compared: values at padding positions mean nothing. (They match too, except GPT-2's left-pad
        // rows, 5e-2 apart: HF's eager GPT-2 fills causally masked scores with finfo.min and then adds the padding
        // mask's finfo.min, so a fully masked row gets -inf at the later pad keys and spreads over the rest, while the
        // other HF families and SaeSharp spread it over every key.)
        using var scope = NewDisposeScope();
        var r = Reference(family);
        using var model = ModelLoader.FromPretrained(Folder(family));
        int n = model.Config.NLayers;
        var mask = r["padded_mask"];
        var names = Enumerable.Range(0, n).Select(l => $"blocks.{l}.hook_resid_pre").Append("ln_final.hook_normalized").ToList();
        var (logits, cache) = model.RunWithCache(r["tokens"], names, attentionMask: mask);
        using (cache)
        {
            var real = mask.to(ScalarType.Bool);
            Tensor Real(Tensor t) => t[real];   // [real tokens, width]
            var worst = new List<(string What, double Diff, double PadDiff)>();
            for (int i = 0; i <= n; i++)
                worst.Add((names[i], RelativeMaxDifference(Real(r[$"padded_hidden_{i}"]), Real(cache[names[i]]), $"{family} padded {names[i]}"),
                    RelativeMaxDifference(r[$"padded_hidden_{i}"], cache[names[i]], $"{family} padded {names[i]}")));
            worst.Add(("logits", RelativeMaxDifference(Real(r["padded_logits"]), Real(logits!), $"{family} padded logits"),
                RelativeMaxDifference(r["padded_logits"], logits!, $"{family} padded logits")));
            foreach (var (w, d, pd) in worst) output.WriteLine($"{family} padded {w}: {d:G3} (with pad positions {pd:G3})");
            var (what, diff, _) = worst.MaxBy(w => w.Diff);
            Assert.True(diff <= RelativeTolerance, $"{family}: padded {what} differs from transformers by {diff:G3} of its scale (> {RelativeTolerance})");
        }
    }

    [Theory]
    [MemberData(nameof(Families))]
    public void Greedy_generation_with_kv_cache_matches_transformers(string family)
    {
        // transformers' generate(): prompt = the first 8 tokens, row 0 left-padded by 3, 6 greedy steps with its KV
        // cache, no EOS. The smallest top-2 logit gap over the steps is 3e-4 (qwen3_moe-unnormalized; 1.2e-2 for the dense
        // families), over 100 times what float32 noise moves these logits (under 3e-6), so the argmax is not decided by it. SaeSharp's step logits are compared with transformers' uncached forward over the generated
        // sequence (gen_forward_logits) and with generate()'s own step logits (gen_logits) wherever the two agree.
        using var scope = NewDisposeScope();
        var r = Reference(family);
        using var model = ModelLoader.FromPretrained(Folder(family));
        var expectedTokens = r["gen_tokens"];
        long prompt = r["gen_mask"].shape[1], steps = expectedTokens.shape[1] - prompt;
        using var gen = model.Generate(r["tokens"].narrow(1, 0, prompt), (int)steps,
            new GenerationOptions { AttentionMask = r["gen_mask"], ReturnLogits = true });
        Assert.Equal(expectedTokens.data<long>().ToArray(), gen.Tokens.data<long>().ToArray());
        var ours = gen.Logits!;
        double vsForward = RelativeMaxDifference(r["gen_forward_logits"], ours, $"{family} generate vs forward");
        var hfGenerate = r["gen_logits"];
        if (family == "gemma2")
        {
            // transformers 4.47's Gemma 2 HybridCache mis-sliced the sliding layers' mask once a left-padded sequence
            // outgrew the window (fixed by transformers PR #35681; 4.51's generate agrees with the uncached forward
            // to 4.5e-7 of scale): its padded row 0 is off from the second step on. Pinned here, then left out.
            double hfOff = RelativeMaxDifference(r["gen_forward_logits"][0].narrow(0, 1, steps - 1), hfGenerate[0].narrow(0, 1, steps - 1), "HF 4.47 gemma2 row 0");
            Assert.True(hfOff > 1e-2, $"gemma2 fixture: HF 4.47 generate's padded row now agrees with its forward ({hfOff:G3})");
            (hfGenerate, ours) = (hfGenerate.narrow(0, 1, 1), ours.narrow(0, 1, 1));
        }
        double vsGenerate = RelativeMaxDifference(hfGenerate, ours, $"{family} generate");
        output.WriteLine($"{family} generate logits: vs uncached forward {vsForward:G3}, vs generate {vsGenerate:G3}");
        Assert.True(vsForward <= RelativeTolerance, $"{family}: step logits differ from transformers' forward by {vsForward:G3} of their scale");
        Assert.True(vsGenerate <= RelativeTolerance, $"{family}: step logits differ from transformers' generate by {vsGenerate:G3} of their scale");
    }

    [Theory]
    [MemberData(nameof(Transformers5Families))]
    public void Transformers5_config_json_reads_as_the_same_model(string family)
    {
        // config_transformers5.json: the same config written by transformers 5 (main 70179949, 2025-12-19) from the same
        // constructor arguments: rope_theta, rope_scaling, rotary_pct and partial_rotary_factor move into
        // rope_parameters, Qwen3 and Gemma 2/3 get layer_types, Gemma 3's rope_parameters has one set per layer type
        // (full_attention: rope_theta and the linear scaling; sliding_attention: rope_local_base_freq). Loaded in place of
        // config.json, it must give the same model. (Gemma 1's file has hidden_act "gelu" and no hidden_activation, which
        // SaeSharp reads as transformers 4.47 does, tanh GELU; transformers 5 itself applies exact GELU to that file: see
        // Gemma1_activation_is_transformers_4_47s.)
        using var scope = NewDisposeScope();
        string dir = Path.Combine(TestPaths.TempDir(), family);
        Directory.CreateDirectory(dir);
        try
        {
            foreach (var f in Directory.GetFiles(Folder(family)))
                File.Copy(f, Path.Combine(dir, Path.GetFileName(f)));
            File.Copy(Path.Combine(dir, "config_transformers5.json"), Path.Combine(dir, "config.json"), overwrite: true);
            var r = Reference(family);
            using var v4 = ModelLoader.FromPretrained(Folder(family));
            using var v5 = ModelLoader.FromPretrained(dir);
            Assert.Equal(v4.Config.ToString(), v5.Config.ToString());
            Assert.Equal(v4.Config.RotaryBase, v5.Config.RotaryBase);
            double diff = RelativeMaxDifference(r["logits"], v5.Forward(r["tokens"]), $"{family} with transformers 5's config.json");
            Assert.True(diff <= RelativeTolerance, $"{family}: with transformers 5's config.json the logits differ by {diff:G3} of their scale");
        }
        finally
        {
            Directory.Delete(Path.GetDirectoryName(dir)!, true);
        }
    }

    [Theory]
    [InlineData("gemma2", "sliding_window", "64")]              // layers 0 and 2 become global
    [InlineData("gemma2", "attn_logit_softcapping", "null")]
    [InlineData("gemma2", "final_logit_softcapping", "null")]
    [InlineData("gemma2", "query_pre_attn_scalar", "16")]       // = head_dim: the usual 1/√d_head
    [InlineData("gemma2", "rms_norm_eps", "0.01")]
    [InlineData("gemma3", "sliding_window_pattern", "4")]      // layer 2 local, layer 3 global
    [InlineData("gemma3", "sliding_window", "64")]             // layers 0, 1, 3 become global
    [InlineData("gemma3", "rope_local_base_freq", "10000.0")]
    [InlineData("gemma3", "rope_theta", "10000.0")]
    [InlineData("gemma3", "rope_scaling", "null")]
    [InlineData("gemma3", "query_pre_attn_scalar", "16")]
    [InlineData("gemma3", "final_logit_softcapping", "10.0")]
    [InlineData("gemma3", "rms_norm_eps", "0.01")]
    [InlineData("llama3", "rope_scaling", "null")]
    [InlineData("llama-bias-tied", "rope_scaling", "null")]
    [InlineData("gpt_neox-parallel", "use_parallel_residual", "false")]
    [InlineData("gpt_neox-parallel", "rotary_pct", "0.5")]
    [InlineData("gpt_neox-sequential", "rotary_emb_base", "10000")]
    [InlineData("qwen2", "rope_theta", "10000.0")]
    [InlineData("qwen3", "rms_norm_eps", "0.01")]
    [InlineData("gpt2", "layer_norm_epsilon", "0.01")]
    [InlineData("gemma", "rms_norm_eps", "1.0")]              // its residual stream is large (embeddings × √32): 0.01 moves little
    [InlineData("gemma", "rope_theta", "100.0")]
    [InlineData("mistral", "rope_theta", "10000.0")]
    [InlineData("mistral", "sliding_window", "4")]             // a window switched on
    [InlineData("mistral-window", "sliding_window", "null")]   // the window switched off
    [InlineData("mistral-window", "sliding_window", "6")]
    [InlineData("mistral-window", "rms_norm_eps", "0.01")]
    [InlineData("mixtral", "num_experts_per_tok", "1")]
    [InlineData("mixtral", "num_experts_per_tok", "4")]           // every expert, weighted by the full softmax
    [InlineData("mixtral", "rope_theta", "10000.0")]
    [InlineData("mixtral-window", "sliding_window", "null")]
    [InlineData("mixtral-window", "num_experts_per_tok", "2")]
    [InlineData("qwen3_moe", "norm_topk_prob", "false")]
    [InlineData("qwen3_moe-unnormalized", "norm_topk_prob", "true")]
    [InlineData("qwen3_moe", "num_experts_per_tok", "1")]
    [InlineData("qwen3_moe", "rms_norm_eps", "0.01")]           // also the q/k norms'
    [InlineData("qwen2_moe", "norm_topk_prob", "true")]
    [InlineData("qwen2_moe", "num_experts_per_tok", "1")]
    [InlineData("olmo2", "rms_norm_eps", "0.01")]                // also the q/k norms' and the post-norms'
    [InlineData("olmo2", "rope_theta", "10000.0")]
    [InlineData("olmoe", "norm_topk_prob", "true")]
    [InlineData("olmoe", "num_experts_per_tok", "1")]
    [InlineData("olmoe", "clip_qkv", "0.5")]
    [InlineData("olmoe-clip", "clip_qkv", "null")]               // the clip switched off
    [InlineData("olmoe-clip", "norm_topk_prob", "false")]
    [InlineData("olmo", "rope_theta", "100.0")]
    [InlineData("olmo", "clip_qkv", "0.3")]
    [InlineData("olmo-clip", "clip_qkv", "null")]                // the clip switched off
    [InlineData("olmo3", "sliding_window", "12")]                // the window switched off for the 12-token forward
    [InlineData("olmo3", "sliding_window", "3")]
    [InlineData("olmo3", "layer_types", "[\"full_attention\", \"full_attention\"]")]
    [InlineData("olmo3", "rms_norm_eps", "0.01")]
    [InlineData("deepseek_v3", "rope_interleave", "false")]
    [InlineData("deepseek_v3-yarn", "rope_interleave", "true")]
    [InlineData("deepseek_v3", "routed_scaling_factor", "1.0")]
    [InlineData("deepseek_v3", "topk_group", "2")]                 // every group eligible
    [InlineData("deepseek_v3", "norm_topk_prob", "false")]
    [InlineData("deepseek_v3-yarn", "norm_topk_prob", "true")]
    [InlineData("deepseek_v3-yarn", "n_group", "2")]
    [InlineData("deepseek_v3", "rms_norm_eps", "0.01")]            // not the latents' norms (fixed 1e-6)
    [InlineData("deepseek_v3-yarn", "rope_scaling", "{\"type\": \"yarn\", \"factor\": 4.0, \"mscale\": 1.0, \"mscale_all_dim\": 0, \"original_max_position_embeddings\": 64}")]
    [InlineData("deepseek_v3-yarn", "rope_scaling", "null")]
    [InlineData("gpt_neo", "window_size", "12")]                 // the local layers become global for the 12-token forward
    [InlineData("gpt_neo", "window_size", "2")]
    [InlineData("gpt_neo", "attention_layers", "[\"global\", \"global\", \"local\"]")]
    [InlineData("gpt_neo", "layer_norm_epsilon", "0.01")]
    [InlineData("phi3", "sliding_window", "null")]              // every layer global for the 12-token forward
    [InlineData("phi3", "partial_rotary_factor", "1.0")]
    [InlineData("phi3", "rope_theta", "100.0")]
    [InlineData("phi3", "rms_norm_eps", "0.01")]
    [InlineData("phi", "partial_rotary_factor", "1.0")]
    [InlineData("phi", "rope_theta", "100.0")]
    [InlineData("phi", "layer_norm_eps", "0.01")]
    [InlineData("gptj", "rotary_dim", "8")]
    [InlineData("gptj", "layer_norm_epsilon", "0.01")]
    [InlineData("opt", "activation_function", "\"gelu\"")]
    [InlineData("bloom", "layer_norm_epsilon", "0.01")]
    [InlineData("bloom", "n_head", "4")]                          // other ALiBi slopes and another split of query_key_value
    public void Fixtures_see_each_config_detail(string family, string key, string value)
    {
        // Guards against fixtures too small or too tame to tell: the same weights with one config.json value changed
        // move the logits by far more than the tolerance.
        using var scope = NewDisposeScope();
        string dir = TestPaths.TempDir();
        try
        {
            foreach (var f in Directory.GetFiles(Folder(family)))
                File.Copy(f, Path.Combine(dir, Path.GetFileName(f)));
            var config = JsonNode.Parse(File.ReadAllText(Path.Combine(dir, "config.json")))!.AsObject();
            Assert.True(config.ContainsKey(key), $"{family}/config.json has no '{key}'");
            config[key] = JsonNode.Parse(value);
            File.WriteAllText(Path.Combine(dir, "config.json"), config.ToJsonString());
            var r = Reference(family);
            using var model = ModelLoader.FromPretrained(dir);
            double diff = RelativeMaxDifference(r["logits"], model.Forward(r["tokens"]), $"{family} with {key}={value}");
            output.WriteLine($"{family} {key}={value}: logits move by {diff:G3} of their scale");
            Assert.True(diff > 100 * RelativeTolerance, $"{family}: {key}={value} moves the logits by only {diff:G3}");
        }
        finally
        {
            Directory.Delete(dir, true);
        }
    }

    [Fact]
    public void Gemma3_conditional_checkpoint_loads_its_language_model_in_both_layouts()
    {
        // gemma3-conditional holds gemma3's text weights in the Gemma3ForConditionalGeneration layout of transformers 4.51
        // (language_model.model.*, a SigLIP vision tower, the projector), and transformers gave both models the same logits.
        // The layout of transformers >= 4.52 (model.language_model.*, model.vision_tower.*, model.multi_modal_projector.*,
        // lm_head.*) is written here from the same tensors, untied, with lm_head = 2 x the embeddings: logits x 2.
        using var scope = NewDisposeScope();
        var causal = Reference("gemma3");
        var conditional = Reference("gemma3-conditional");
        Assert.True(causal["tokens"].equal(conditional["tokens"]).all().item<bool>(), "the fixture's two models were given different tokens");
        Assert.True(causal["logits"].equal(conditional["logits"]).all().item<bool>(), "the fixture's two transformers models disagree");
        string dir = TestPaths.TempDir();
        try
        {
            var config = JsonNode.Parse(File.ReadAllText(Path.Combine(Folder("gemma3-conditional"), "config.json")))!.AsObject();
            config["text_config"]!["tie_word_embeddings"] = false;
            File.WriteAllText(Path.Combine(dir, "config.json"), config.ToJsonString());
            const string old = "language_model.model.";
            var w = SafeTensors.Load(Path.Combine(Folder("gemma3-conditional"), "model.safetensors"));
            var renamed = w.ToDictionary(kv => kv.Key.StartsWith(old, StringComparison.Ordinal) ? "model.language_model." + kv.Key[old.Length..] : "model." + kv.Key,
                kv => kv.Value);
            Assert.Contains("model.vision_tower.vision_model.encoder.layers.0.mlp.fc1.weight", renamed.Keys);
            renamed["lm_head.weight"] = w[old + "embed_tokens.weight"] * 2;
            SafeTensors.Save(Path.Combine(dir, "model.safetensors"), renamed);
            foreach (var (layout, folder, factor) in new[] { ("4.51", Folder("gemma3-conditional"), 1.0), (">= 4.52", dir, 2.0) })
            {
                using var model = ModelLoader.FromPretrained(folder);
                double diff = RelativeMaxDifference(causal["logits"] * factor, model.Forward(causal["tokens"]), $"gemma3 in the {layout} layout");
                output.WriteLine($"Gemma3ForConditionalGeneration, transformers {layout} layout: {diff:G3}");
                Assert.True(diff <= RelativeTolerance, $"Gemma3ForConditionalGeneration in the {layout} layout: logits differ by {diff:G3} of their scale");
            }
        }
        finally
        {
            Directory.Delete(dir, true);
        }
    }

    [Theory]
    [InlineData("gemma2", ScalarType.Float64)]
    [InlineData("gemma3", ScalarType.Float64)]
    [InlineData("gemma2", ScalarType.BFloat16)]
    [InlineData("gemma3", ScalarType.BFloat16)]
    [InlineData("gemma", ScalarType.Float64)]
    [InlineData("gemma", ScalarType.BFloat16)]
    public void Gemma_embedding_scale_is_rounded_as_transformers_rounds_it(string family, ScalarType dtype)
    {
        // transformers' Gemma 1 and 2 multiply the embeddings by torch.tensor(hidden_size ** 0.5, dtype=<hidden dtype>); Gemma 3's
        // Gemma3TextScaledWordEmbedding by a float32 tensor of it cast to the weights' dtype. In float64 the two differ
        // (√32 against √32 rounded to float32); in bf16 both round to 5.65625.
        using var scope = NewDisposeScope();
        using var model = ModelLoader.FromPretrained(Folder(family), dtype);
        var tokens = Reference(family)["tokens"];
        var w = SafeTensors.Load(Path.Combine(Folder(family), "model.safetensors"))["model.embed_tokens.weight"].to(dtype);
        double scale = family is "gemma2" or "gemma" ? Math.Sqrt(32) : (float)Math.Sqrt(32);
        var expected = w.index_select(0, tokens.flatten()).view(2, 12, 32) * tensor(scale, dtype: dtype);
        var (_, cache) = model.RunWithCache(tokens, ["hook_embed"]);
        using (cache)
        {
            Assert.Equal(dtype, cache["hook_embed"].dtype);
            Assert.True(expected.equal(cache["hook_embed"]).all().item<bool>(), $"{family} {dtype}: hook_embed is not the embeddings × transformers' scale");
        }
    }

    [Theory]
    [InlineData("gemma3-conditional", "config.json", "text_config", "null", "needs a 'text_config' object")]
    [InlineData("gemma3", "config.json", "rope_scaling", """{"rope_type": "longrope", "factor": 8.0}""", "rope_scaling type 'longrope' is not supported")]
    [InlineData("gemma3", "config_transformers5.json", "rope_parameters", """{"full_attention": {"rope_type": "default", "rope_theta": 1e6}, "sliding_attention": {"rope_type": "dynamic", "rope_theta": 100.0, "factor": 2.0}}""",
        "rope_scaling type 'dynamic' is not supported")]
    [InlineData("gemma3", "config.json", "sliding_window_pattern", "0", "sliding_window_pattern=0 must be positive")]
    [InlineData("gemma3", "config.json", "use_bidirectional_attention", "true", "use_bidirectional_attention=true")]
    public void Gemma3_config_errors_name_the_problem(string family, string configFile, string key, string value, string message)
    {
        string dir = TestPaths.TempDir();
        try
        {
            foreach (var f in Directory.GetFiles(Folder(family)))
                File.Copy(f, Path.Combine(dir, Path.GetFileName(f)));
            var config = JsonNode.Parse(File.ReadAllText(Path.Combine(dir, configFile)))!.AsObject();
            config[key] = JsonNode.Parse(value);
            File.WriteAllText(Path.Combine(dir, "config.json"), config.ToJsonString());
            var e = Assert.Throws<SaeSharpException>(() => ModelLoader.FromPretrained(dir));
            Assert.Contains(message, e.Message);
            Assert.Contains("config.json", e.Message);
        }
        finally
        {
            Directory.Delete(dir, true);
        }
    }

    /// <summary>A copy of <paramref name="family"/>'s fixture folder with config.json edited by <paramref name="edit"/>.</summary>
    private static string EditedCopy(string family, Action<JsonObject> edit)
    {
        string dir = TestPaths.TempDir();
        foreach (var f in Directory.GetFiles(Folder(family)))
            File.Copy(f, Path.Combine(dir, Path.GetFileName(f)));
        var config = JsonNode.Parse(File.ReadAllText(Path.Combine(dir, "config.json")))!.AsObject();
        edit(config);
        File.WriteAllText(Path.Combine(dir, "config.json"), config.ToJsonString());
        return dir;
    }

    [Theory]
    [InlineData("absent", "gelu")]
    [InlineData("null", "gelu")]
    [InlineData("absent", "silu")]
    public void Gemma1_activation_is_transformers_4_47s(string hiddenActivation, string hiddenAct)
    {
        // The fixture's GemmaConfig was built with hidden_act "gelu" and no hidden_activation, as google/gemma-2b's config.json
        // has them; transformers 4.47's GemmaMLP then ignores hidden_act, sets hidden_activation = "gelu_pytorch_tanh" on the
        // config (which is why save_pretrained wrote that value) and computed reference.npz with it. The hub's form of the file
        // (hidden_activation absent or null, whatever hidden_act says) must give transformers' logits.
        using var scope = NewDisposeScope();
        string dir = EditedCopy("gemma", c =>
        {
            c.Remove("hidden_activation");
            if (hiddenActivation == "null") c["hidden_activation"] = null;
            c["hidden_act"] = hiddenAct;
        });
        try
        {
            var r = Reference("gemma");
            using var model = ModelLoader.FromPretrained(dir);
            Assert.Equal("gelu_pytorch_tanh", model.Config.Activation);
            double diff = RelativeMaxDifference(r["logits"], model.Forward(r["tokens"]), $"gemma with hidden_activation {hiddenActivation}, hidden_act {hiddenAct}");
            Assert.True(diff <= RelativeTolerance, $"gemma with hidden_activation {hiddenActivation}: logits differ from transformers 4.47 by {diff:G3} of their scale");
        }
        finally
        {
            Directory.Delete(dir, true);
        }
    }

    [Fact]
    public void Gemma1_fixture_tells_exact_from_tanh_gelu()
    {
        // The two GELUs differ by at most 4.7e-4 (near |x| = 2), so on this fixture exact GELU moves the logits by only
        // 5.4e-5 of their scale (the same in transformers 4.47 with hidden_activation "gelu": 5.36e-5), not the 100 ×
        // tolerance of Fixtures_see_each_config_detail; still 5 × the tolerance, so the parity tests would catch the wrong GELU.
        using var scope = NewDisposeScope();
        string dir = EditedCopy("gemma", c => c["hidden_activation"] = "gelu");
        try
        {
            var r = Reference("gemma");
            using var model = ModelLoader.FromPretrained(dir);
            double diff = RelativeMaxDifference(r["logits"], model.Forward(r["tokens"]), "gemma with exact GELU");
            output.WriteLine($"gemma with exact GELU: logits move by {diff:G3} of their scale");
            Assert.True(diff > 4 * RelativeTolerance, $"gemma: exact GELU moves the logits by only {diff:G3}");
        }
        finally
        {
            Directory.Delete(dir, true);
        }
    }

    [Theory]
    [InlineData("gemma", "GemmaForCausalLM", "gemma")]
    [InlineData("mistral-window", "MistralForCausalLM", "mistral")]
    [InlineData("mixtral-window", "MixtralForCausalLM", "mixtral")]
    [InlineData("qwen3_moe-unnormalized", "Qwen3MoeForCausalLM", "qwen3_moe")]
    [InlineData("qwen2_moe", "Qwen2MoeForCausalLM", "qwen2_moe")]
    [InlineData("olmo", "OlmoForCausalLM", "olmo")]
    [InlineData("olmo3", "Olmo3ForCausalLM", "olmo3")]
    public void Without_model_type_the_architectures_name_the_family(string family, string architecture, string modelType)
    {
        using var scope = NewDisposeScope();
        string dir = EditedCopy(family, c => c.Remove("model_type"));
        try
        {
            var config = JsonNode.Parse(File.ReadAllText(Path.Combine(dir, "config.json")))!.AsObject();
            Assert.Equal(architecture, config["architectures"]![0]!.GetValue<string>());
            var r = Reference(family);
            using var model = ModelLoader.FromPretrained(dir);
            Assert.Equal(modelType, model.Config.Architecture);
            double diff = RelativeMaxDifference(r["logits"], model.Forward(r["tokens"]), $"{family} without model_type");
            Assert.True(diff <= RelativeTolerance, $"{family} without model_type: logits differ by {diff:G3} of their scale");
        }
        finally
        {
            Directory.Delete(dir, true);
        }
    }

    [Fact]
    public void Mistral_config_defaults_are_MistralConfigs()
    {
        // MistralConfig (4.47 and 5.0): head_dim None -> hidden_size / num_attention_heads (Mistral-7B-v0.1's config.json has no
        // head_dim), sliding_window 4096 when absent, num_key_value_heads None -> num_attention_heads.
        using var scope = NewDisposeScope();
        var r = Reference("mistral-window");
        foreach (var (what, edit) in new (string, Action<JsonObject>)[] { ("no head_dim", c => c.Remove("head_dim")), ("head_dim null", c => c["head_dim"] = null) })
        {
            string dir = EditedCopy("mistral-window", edit);
            try
            {
                using var model = ModelLoader.FromPretrained(dir);
                double diff = RelativeMaxDifference(r["logits"], model.Forward(r["tokens"]), $"mistral-window with {what}");
                Assert.True(diff <= RelativeTolerance, $"mistral-window with {what}: logits differ by {diff:G3} of their scale");
            }
            finally
            {
                Directory.Delete(dir, true);
            }
        }
        string noWindow = EditedCopy("mistral-window", c => c.Remove("sliding_window"));
        try
        {
            using var model = ModelLoader.FromPretrained(noWindow);
            Assert.Equal(4096, model.Config.SlidingWindow);
        }
        finally
        {
            Directory.Delete(noWindow, true);
        }
        string kvNull = EditedCopy("mistral-window", c => c["num_key_value_heads"] = null);
        try
        {
            // 4 kv heads of 8 where the weights hold 2: refused before anything is allocated.
            var e = Assert.Throws<SaeSharpException>(() => ModelLoader.FromPretrained(kvNull));
            Assert.Contains("num_key_value_heads=4", e.Message);
        }
        finally
        {
            Directory.Delete(kvNull, true);
        }
    }

    [Fact]
    public void Mixtral_config_defaults_are_MixtralConfigs()
    {
        // MixtralConfig (4.47 and 5.0), where it differs from MistralConfig: rope_theta 1e6, rms_norm_eps 1e-5 and no
        // sliding window when the keys are absent (Mistral: 10000, 1e-6, 4096).
        using var scope = NewDisposeScope();
        var r = Reference("mixtral");
        string dir = EditedCopy("mixtral", c => { c.Remove("rope_theta"); c.Remove("rms_norm_eps"); c.Remove("sliding_window"); });
        try
        {
            using var model = ModelLoader.FromPretrained(dir);
            Assert.Null(model.Config.SlidingWindow);
            Assert.Equal(1e-5, model.Config.LayerNormEps);
            double diff = RelativeMaxDifference(r["logits"], model.Forward(r["tokens"]), "mixtral without rope_theta, rms_norm_eps, sliding_window");
            Assert.True(diff <= RelativeTolerance, $"mixtral with MixtralConfig's defaults: logits differ by {diff:G3} of their scale");
        }
        finally
        {
            Directory.Delete(dir, true);
        }
    }

    [Theory]
    [InlineData("gemma", "rope_scaling", """{"rope_type": "linear", "factor": 2.0}""", "rope_scaling of type linear on a gemma model is not supported")]
    [InlineData("mistral", "rope_scaling", """{"type": "linear", "factor": 2.0}""", "rope_scaling of type linear on a mistral model is not supported")]
    [InlineData("gemma", "use_bidirectional_attention", "true", "use_bidirectional_attention=true")]
    [InlineData("gemma", "num_key_value_heads", "3", "num_attention_heads=4 must be a multiple of num_key_value_heads=3")]
    [InlineData("mistral", "sliding_window", "0", "sliding_window=0 must be positive")]
    [InlineData("mistral", "sliding_window", "\"4096\"", "'sliding_window'")]
    [InlineData("gemma", "hidden_activation", "\"gelu_exact\"", "activation 'gelu_exact' is not supported")]
    [InlineData("mixtral", "num_experts_per_tok", "5", "num_experts_per_tok=5 must be between 1 and num_local_experts=4")]
    [InlineData("mixtral", "num_experts_per_tok", "0", "num_experts_per_tok=0 must be between 1 and num_local_experts=4")]
    [InlineData("mixtral", "num_local_experts", "8", "num_local_experts=8, hidden_size=32 imply 'model.layers.0.block_sparse_moe.gate.weight' of shape [8, 32] but")]
    [InlineData("mixtral", "num_local_experts", "3", "num_local_experts=3, hidden_size=32 imply 'model.layers.0.block_sparse_moe.gate.weight' of shape [3, 32]")]
    [InlineData("mixtral", "rope_scaling", """{"type": "linear", "factor": 2.0}""", "rope_scaling of type linear on a mixtral model is not supported")]
    [InlineData("qwen3_moe", "num_experts_per_tok", "7", "num_experts_per_tok=7 must be between 1 and num_experts=6")]
    [InlineData("qwen3_moe", "moe_intermediate_size", "64", "num_experts=6, moe_intermediate_size=64, hidden_size=32 imply 'model.layers.0.mlp.experts.5.gate_proj.weight' of shape [64, 32]")]
    // Dense layers (decoder_sparse_step, mlp_only_layers) need a dense MLP's weights, which these all-sparse checkpoints lack.
    [InlineData("qwen3_moe", "decoder_sparse_step", "2", "decoder_sparse_step=2, mlp_only_layers=[] make layer 0 a dense MLP, but the checkpoint has no 'model.layers.0.mlp.gate_proj.weight'")]
    [InlineData("qwen3_moe", "mlp_only_layers", "[1]", "mlp_only_layers=[1] make layer 1 a dense MLP, but the checkpoint has no 'model.layers.1.mlp.gate_proj.weight'")]
    [InlineData("qwen2_moe", "mlp_only_layers", "[0]", "mlp_only_layers=[0] make layer 0 a dense MLP, but the checkpoint has no 'model.layers.0.mlp.gate_proj.weight'")]
    [InlineData("qwen3_moe", "decoder_sparse_step", "0", "decoder_sparse_step=0 must be positive")]
    [InlineData("qwen3_moe", "mlp_only_layers", "[2]", "mlp_only_layers holds 2; the layers are 0..1")]
    [InlineData("qwen2_moe", "mlp_only_layers", "\"0\"", "mlp_only_layers must be a list of layer indices, got \"0\"")]
    [InlineData("qwen2_moe", "shared_expert_intermediate_size", "64", "shared_expert_intermediate_size=64, hidden_size=32 imply 'model.layers.0.mlp.shared_expert.gate_proj.weight' of shape [64, 32]")]
    [InlineData("qwen2_moe", "shared_expert_intermediate_size", "0", "shared_expert_intermediate_size=0 must be positive")]
    [InlineData("qwen2_moe", "use_sliding_window", "true", "use_sliding_window=true on a qwen2_moe model is not supported")]
    public void Gemma1_and_mistral_config_errors_name_the_file_and_key(string family, string key, string value, string message)
    {
        string dir = EditedCopy(family, c => c[key] = JsonNode.Parse(value));
        try
        {
            var e = Assert.Throws<SaeSharpException>(() => ModelLoader.FromPretrained(dir));
            Assert.Contains(message, e.Message);
            Assert.Contains("config.json", e.Message);
            Assert.DoesNotContain("\n", e.Message);
        }
        finally
        {
            Directory.Delete(dir, true);
        }
    }

    [Theory]
    [MemberData(nameof(Families))]
    public void Fixture_loads_through_the_real_files(string family)
    {
        // The config the loader read, as one line: every size and option came from the fixture's config.json (written
        // by transformers), and the weights from its model.safetensors or pytorch_model.bin.
        string expected = family switch
        {
            "gpt2" => "gpt2 (gpt2): n_layers=2 d_model=32 n_heads=4 d_head=8 d_mlp=128 d_vocab=96 n_ctx=32 act=gelu_new dtype=Float32",
            "gpt_neox-parallel" => "gpt_neox-parallel (gpt_neox): n_layers=2 d_model=32 n_heads=2 d_head=16 d_mlp=128 d_vocab=100 n_ctx=64 act=gelu parallel_attn_mlp rotary_dim=4 rotary_base=10000 rope_type=default dtype=Float32",
            "gpt_neox-sequential" => "gpt_neox-sequential (gpt_neox): n_layers=2 d_model=32 n_heads=2 d_head=16 d_mlp=128 d_vocab=100 n_ctx=64 act=gelu rotary_dim=8 rotary_base=500 rope_type=default dtype=Float32",
            "llama3" => "llama3 (llama): n_layers=2 d_model=32 n_heads=4 d_head=8 d_mlp=64 n_key_value_heads=2 d_vocab=128 n_ctx=128 act=silu gated_mlp norm=RMS rotary_dim=8 rotary_base=10000 rope_type=llama3(factor=8 low_freq_factor=1 high_freq_factor=4 original_max_position_embeddings=64) dtype=Float32",
            "llama-bias-tied" => "llama-bias-tied (llama): n_layers=2 d_model=32 n_heads=2 d_head=12 d_mlp=64 d_vocab=128 n_ctx=64 act=silu gated_mlp norm=RMS rotary_dim=12 rotary_base=10000 rope_type=linear(factor=2) dtype=Float32",
            "qwen2" => "qwen2 (qwen2): n_layers=2 d_model=32 n_heads=4 d_head=8 d_mlp=64 n_key_value_heads=2 d_vocab=128 n_ctx=64 act=silu gated_mlp norm=RMS rotary_dim=8 rotary_base=1000000 rope_type=default dtype=Float32",
            "qwen3" => "qwen3 (qwen3): n_layers=2 d_model=32 n_heads=4 d_head=16 d_mlp=64 n_key_value_heads=2 d_vocab=128 n_ctx=64 act=silu gated_mlp norm=RMS rotary_dim=16 rotary_base=10000 rope_type=default dtype=Float32",
            "gemma2" => "gemma2 (gemma2): n_layers=3 d_model=32 n_heads=4 d_head=16 d_mlp=64 n_key_value_heads=2 d_vocab=128 n_ctx=64 act=gelu_pytorch_tanh gated_mlp norm=RMS attn_softcap=2 logit_softcap=10 sliding_window=4 full_attention_layers=1 rotary_dim=16 rotary_base=10000 rope_type=default dtype=Float32",
            "gemma3" => "gemma3 (gemma3_text): n_layers=4 d_model=32 n_heads=4 d_head=16 d_mlp=64 n_key_value_heads=2 d_vocab=128 n_ctx=64 act=gelu_pytorch_tanh gated_mlp norm=RMS sliding_window=4 full_attention_layers=2 rotary_dim=16 rotary_base=1000000 rope_type=linear(factor=8) rotary_base_local=100 dtype=Float32",
            "gemma3-softcap" => "gemma3-softcap (gemma3_text): n_layers=4 d_model=32 n_heads=4 d_head=16 d_mlp=64 n_key_value_heads=2 d_vocab=128 n_ctx=64 act=gelu_pytorch_tanh gated_mlp norm=RMS logit_softcap=10 sliding_window=4 full_attention_layers=2 rotary_dim=16 rotary_base=1000000 rope_type=linear(factor=8) rotary_base_local=100 dtype=Float32",
            "gemma" => "gemma (gemma): n_layers=2 d_model=32 n_heads=4 d_head=16 d_mlp=64 n_key_value_heads=1 d_vocab=128 n_ctx=64 act=gelu_pytorch_tanh gated_mlp norm=RMS rotary_dim=16 rotary_base=10000 rope_type=default dtype=Float32",
            "mistral" => "mistral (mistral): n_layers=2 d_model=32 n_heads=4 d_head=16 d_mlp=64 n_key_value_heads=2 d_vocab=128 n_ctx=64 act=silu gated_mlp norm=RMS rotary_dim=16 rotary_base=1000000 rope_type=default dtype=Float32",
            "mistral-window" => "mistral-window (mistral): n_layers=2 d_model=32 n_heads=4 d_head=8 d_mlp=64 n_key_value_heads=2 d_vocab=128 n_ctx=64 act=silu gated_mlp norm=RMS sliding_window=5 sliding_layers=all rotary_dim=8 rotary_base=10000 rope_type=default dtype=Float32",
            "mixtral" => "mixtral (mixtral): n_layers=2 d_model=32 n_heads=4 d_head=16 d_mlp=48 n_key_value_heads=2 d_vocab=128 n_ctx=64 act=silu gated_mlp norm=RMS num_experts=4 experts_per_token=2 norm_topk_prob rotary_dim=16 rotary_base=1000000 rope_type=default dtype=Float32",
            "mixtral-window" => "mixtral-window (mixtral): n_layers=2 d_model=32 n_heads=4 d_head=8 d_mlp=48 n_key_value_heads=2 d_vocab=128 n_ctx=64 act=silu gated_mlp norm=RMS num_experts=3 experts_per_token=1 norm_topk_prob sliding_window=5 sliding_layers=all rotary_dim=8 rotary_base=1000000 rope_type=default dtype=Float32",
            "qwen3_moe" => "qwen3_moe (qwen3_moe): n_layers=2 d_model=32 n_heads=4 d_head=16 d_mlp=24 n_key_value_heads=2 d_vocab=128 n_ctx=64 act=silu gated_mlp norm=RMS num_experts=6 experts_per_token=2 norm_topk_prob rotary_dim=16 rotary_base=10000 rope_type=default dtype=Float32",
            "qwen3_moe-unnormalized" => "qwen3_moe-unnormalized (qwen3_moe): n_layers=2 d_model=32 n_heads=4 d_head=8 d_mlp=24 n_key_value_heads=2 d_vocab=128 n_ctx=64 act=silu gated_mlp norm=RMS num_experts=4 experts_per_token=3 rotary_dim=8 rotary_base=10000 rope_type=default dtype=Float32",
            "qwen2_moe" => "qwen2_moe (qwen2_moe): n_layers=2 d_model=32 n_heads=4 d_head=8 d_mlp=24 n_key_value_heads=2 d_vocab=128 n_ctx=64 act=silu gated_mlp norm=RMS num_experts=4 experts_per_token=2 shared_expert_d_mlp=40 rotary_dim=8 rotary_base=10000 rope_type=default dtype=Float32",
            "gemma3-conditional" => "gemma3-conditional (gemma3): n_layers=4 d_model=32 n_heads=4 d_head=16 d_mlp=64 n_key_value_heads=2 d_vocab=128 n_ctx=64 act=gelu_pytorch_tanh gated_mlp norm=RMS sliding_window=4 full_attention_layers=2 rotary_dim=16 rotary_base=1000000 rope_type=linear(factor=8) rotary_base_local=100 dtype=Float32",
            "olmo2" => "olmo2 (olmo2): n_layers=2 d_model=32 n_heads=4 d_head=8 d_mlp=64 n_key_value_heads=2 d_vocab=128 n_ctx=64 act=silu gated_mlp norm=RMS rotary_dim=8 rotary_base=500000 rope_type=default dtype=Float32",
            "olmoe" => "olmoe (olmoe): n_layers=2 d_model=32 n_heads=4 d_head=8 d_mlp=24 d_vocab=128 n_ctx=64 act=silu gated_mlp norm=RMS num_experts=6 experts_per_token=3 rotary_dim=8 rotary_base=10000 rope_type=default dtype=Float32",
            "olmoe-clip" => "olmoe-clip (olmoe): n_layers=2 d_model=32 n_heads=4 d_head=8 d_mlp=24 n_key_value_heads=2 d_vocab=128 n_ctx=64 act=silu gated_mlp norm=RMS num_experts=4 experts_per_token=2 norm_topk_prob clip_qkv=0.5 rotary_dim=8 rotary_base=10000 rope_type=default dtype=Float32",
            "olmo" => "olmo (olmo): n_layers=2 d_model=32 n_heads=4 d_head=8 d_mlp=64 d_vocab=128 n_ctx=64 act=silu gated_mlp rotary_dim=8 rotary_base=10000 rope_type=default dtype=Float32",
            "olmo-clip" => "olmo-clip (olmo): n_layers=2 d_model=32 n_heads=4 d_head=8 d_mlp=64 n_key_value_heads=2 d_vocab=128 n_ctx=64 act=silu gated_mlp clip_qkv=0.4 rotary_dim=8 rotary_base=10000 rope_type=default dtype=Float32",
            "olmo3" => "olmo3 (olmo3): n_layers=2 d_model=32 n_heads=4 d_head=8 d_mlp=64 n_key_value_heads=2 d_vocab=128 n_ctx=64 act=silu gated_mlp norm=RMS sliding_window=5 sliding_layers=0 rotary_dim=8 rotary_base=500000 rope_type=default dtype=Float32",
            "gpt_oss" or "gpt_oss-mxfp4" => $"{family} (gpt_oss): n_layers=4 d_model=32 n_heads=4 d_head=16 d_mlp=32 n_key_value_heads=2 d_vocab=128 n_ctx=131072 act=silu gated_mlp norm=RMS num_experts=4 experts_per_token=2 sliding_window=4 sliding_layers=0,2 attn_sinks rotary_dim=16 rotary_base=150000 rope_type=yarn(factor=32 original_max_position_embeddings=4096 beta_fast=32 beta_slow=1 truncate=false attention_factor=1.34657) dtype=Float32",
            "deepseek_v3" or "deepseek_v3-fp8" => $"{family} (deepseek_v3): n_layers=3 d_model=32 n_heads=4 d_head=12 d_mlp=48 d_vocab=128 n_ctx=256 act=silu gated_mlp norm=RMS num_experts=8 experts_per_token=2 norm_topk_prob shared_expert_d_mlp=16 moe_d_mlp=16 first_k_dense_replace=1 n_group=2 topk_group=1 routed_scaling_factor=2.5 sigmoid_routing mla(q_lora_rank=20 kv_lora_rank=12 qk_head_dim=16 qk_rope_head_dim=8 v_head_dim=12 rope_interleave) rotary_dim=8 rotary_base=10000 rope_type=default dtype=Float32",
            "deepseek_v3-yarn" => "deepseek_v3-yarn (deepseek_v3): n_layers=3 d_model=32 n_heads=4 d_head=12 d_mlp=48 d_vocab=128 n_ctx=256 act=silu gated_mlp norm=RMS num_experts=8 experts_per_token=3 shared_expert_d_mlp=32 moe_d_mlp=16 first_k_dense_replace=1 n_group=4 topk_group=2 routed_scaling_factor=2.5 sigmoid_routing mla(q_lora_rank=null kv_lora_rank=12 qk_head_dim=16 qk_rope_head_dim=8 v_head_dim=12) rotary_dim=8 rotary_base=1000 rope_type=yarn(factor=4 original_max_position_embeddings=64 beta_fast=32 beta_slow=1 truncate=true attention_factor=1.02496) dtype=Float32",
            "deepseek_v2" => "deepseek_v2 (deepseek_v2): n_layers=3 d_model=32 n_heads=4 d_head=12 d_mlp=48 d_vocab=128 n_ctx=256 act=silu gated_mlp norm=RMS num_experts=8 experts_per_token=2 shared_expert_d_mlp=32 moe_d_mlp=16 first_k_dense_replace=1 topk_method=greedy routed_scaling_factor=1 softmax_routing mla(q_lora_rank=null kv_lora_rank=12 qk_head_dim=16 qk_rope_head_dim=8 v_head_dim=12 rope_interleave) rotary_dim=8 rotary_base=10000 rope_type=default dtype=Float32",
            "deepseek_v2-group" => "deepseek_v2-group (deepseek_v2): n_layers=3 d_model=32 n_heads=4 d_head=12 d_mlp=48 d_vocab=128 n_ctx=256 act=silu gated_mlp norm=RMS num_experts=8 experts_per_token=3 shared_expert_d_mlp=16 moe_d_mlp=16 first_k_dense_replace=0 topk_method=group_limited_greedy n_group=4 topk_group=2 routed_scaling_factor=2 softmax_routing mla(q_lora_rank=20 kv_lora_rank=12 qk_head_dim=16 qk_rope_head_dim=8 v_head_dim=12 rope_interleave) rotary_dim=8 rotary_base=1000 rope_type=yarn(factor=40 original_max_position_embeddings=64 beta_fast=32 beta_slow=1 truncate=true attention_factor=1) dtype=Float32",
            "deepseek_v2-bias" => "deepseek_v2-bias (deepseek_v2): n_layers=3 d_model=32 n_heads=4 d_head=12 d_mlp=48 d_vocab=128 n_ctx=256 act=silu gated_mlp norm=RMS num_experts=8 experts_per_token=3 shared_expert_d_mlp=32 moe_d_mlp=16 first_k_dense_replace=1 topk_method=greedy routed_scaling_factor=1.5 softmax_routing mla(q_lora_rank=null kv_lora_rank=12 qk_head_dim=16 qk_rope_head_dim=8 v_head_dim=12 rope_interleave) rotary_dim=8 rotary_base=10000 rope_type=default dtype=Float32",
            "phi3" => "phi3 (phi3): n_layers=3 d_model=32 n_heads=4 d_head=8 d_mlp=48 n_key_value_heads=2 d_vocab=128 n_ctx=64 act=silu gated_mlp norm=RMS sliding_window=6 sliding_layers=all rotary_dim=6 rotary_base=10000 rope_type=default dtype=Float32",
            "phi" or "phi-qk_layernorm" => $"{family} (phi): n_layers=3 d_model=32 n_heads=4 d_head=8 d_mlp=64 d_vocab=128 n_ctx=64 act=gelu_new parallel_attn_mlp rotary_dim=4 rotary_base=10000 rope_type=default dtype=Float32",
            "gptj" => "gptj (gptj): n_layers=3 d_model=32 n_heads=4 d_head=8 d_mlp=128 d_vocab=128 n_ctx=64 act=gelu_new parallel_attn_mlp rotary_dim=4 rotary_base=10000 rope_type=default rotary_adjacent_pairs dtype=Float32",
            "opt" => "opt (opt): n_layers=3 d_model=32 n_heads=4 d_head=8 d_mlp=96 d_vocab=128 n_ctx=64 act=relu dtype=Float32",
            "opt-350m" => "opt-350m (opt): n_layers=3 d_model=32 n_heads=4 d_head=8 d_mlp=96 d_vocab=128 n_ctx=64 act=relu word_embed_proj_dim=16 dtype=Float32",
            "bloom" => "bloom (bloom): n_layers=3 d_model=48 n_heads=6 d_head=8 d_mlp=192 d_vocab=128 n_ctx=2048 act=gelu_fast positional_embedding_type=alibi post_embedding_ln dtype=Float32",
            "gpt_neo" => "gpt_neo (gpt_neo): n_layers=3 d_model=32 n_heads=4 d_head=8 d_mlp=128 d_vocab=128 n_ctx=64 act=gelu_new use_attn_scale=false sliding_window=5 full_attention_layers=0 dtype=Float32",
            _ => throw new ArgumentException(family),
        };
        using var model = ModelLoader.FromPretrained(Folder(family));
        Assert.Equal(expected, model.Config.ToString());
        string weights = File.Exists(Path.Combine(Folder(family), "model.safetensors")) ? "model.safetensors" : "pytorch_model.bin";
        Assert.Equal(family is "gpt_neox-parallel" or "llama-bias-tied" or "qwen2" or "gemma3-softcap" or "mistral-window" or "mixtral-window" or "qwen3_moe-unnormalized" ? "pytorch_model.bin" : "model.safetensors", weights);
    }
}
