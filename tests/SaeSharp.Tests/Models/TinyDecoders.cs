using System.Text.Json.Nodes;
using SaeSharp.IO;
using TorchSharp;
using static TorchSharp.torch;

namespace SaeSharp.Tests.Models;

/// <summary>Shape and options of a tiny Llama-layout checkpoint (llama, qwen2, qwen3, gemma2, gemma3_text; gemma and mistral
/// with only the shared keys).</summary>
internal sealed record DecoderSpec
{
    public required string ModelType { get; init; }
    public int Layers { get; init; } = 2;
    public int Hidden { get; init; } = 16;
    public int Heads { get; init; } = 4;
    public int KvHeads { get; init; } = 2;
    /// <summary>Written as head_dim when set, and always for qwen3 and Gemma (as save_pretrained does); else hidden / heads.</summary>
    public int? HeadDim { get; init; }
    public int Intermediate { get; init; } = 24;
    public int Vocab { get; init; } = 19;
    public bool Tied { get; init; }
    /// <summary>Llama / Qwen3 attention_bias.</summary>
    public bool AttentionBias { get; init; }
    public double RopeTheta { get; init; } = 10000;
    /// <summary>rope_scaling object written as is (e.g. llama3).</summary>
    public JsonObject? RopeScaling { get; init; }
    public double? AttnSoftCap { get; init; }
    public double? FinalSoftCap { get; init; }
    public int? SlidingWindow { get; init; }
    public double? QueryPreAttnScalar { get; init; }
    /// <summary>Gemma 3 sliding_window_pattern (every n-th layer global) and rope_local_base_freq.</summary>
    public int SlidingWindowPattern { get; init; } = 6;
    public double RopeLocalBaseFreq { get; init; } = 10000;
    public ScalarType Dtype { get; init; } = ScalarType.Float32;
    public int Shards { get; init; } = 1;
    public int Seed { get; init; } = 3;

    public int Hd => HeadDim ?? Hidden / Heads;
    public bool Gemma => ModelType is "gemma2" or "gemma3_text";
    public bool QkvBias => ModelType == "qwen2" || AttentionBias;
    public bool OBias => ModelType != "qwen2" && AttentionBias;
}

/// <summary>
/// Writes tiny random checkpoints in the exact Hugging Face layout of LlamaForCausalLM, Qwen2ForCausalLM,
/// Qwen3ForCausalLM, Gemma2ForCausalLM and Gemma3ForCausalLM (config.json keys and state-dict names as save_pretrained writes them).
/// </summary>
internal static class TinyDecoders
{
    public static string Write(string dir, DecoderSpec p)
    {
        Directory.CreateDirectory(dir);
        var arch = p.ModelType switch
        {
            "llama" => "LlamaForCausalLM", "qwen2" => "Qwen2ForCausalLM", "qwen3" => "Qwen3ForCausalLM", "gemma3_text" => "Gemma3ForCausalLM",
            "gemma" => "GemmaForCausalLM", "mistral" => "MistralForCausalLM",  // config.json without their own keys (class defaults)
            _ => "Gemma2ForCausalLM",
        };
        var config = new JsonObject
        {
            ["_name_or_path"] = "tiny-" + p.ModelType,
            ["architectures"] = new JsonArray(arch),
            ["model_type"] = p.ModelType,
            ["hidden_size"] = p.Hidden, ["intermediate_size"] = p.Intermediate, ["num_hidden_layers"] = p.Layers,
            ["num_attention_heads"] = p.Heads, ["num_key_value_heads"] = p.KvHeads, ["vocab_size"] = p.Vocab,
            ["max_position_embeddings"] = 128, ["rms_norm_eps"] = 1e-6, ["rope_theta"] = p.RopeTheta,
            ["tie_word_embeddings"] = p.Tied, ["bos_token_id"] = 1, ["eos_token_id"] = 2,
            ["torch_dtype"] = p.Dtype == ScalarType.BFloat16 ? "bfloat16" : p.Dtype == ScalarType.Float16 ? "float16" : "float32",
            ["rope_scaling"] = p.RopeScaling?.DeepClone(),
        };
        // save_pretrained writes head_dim for Qwen3 and Gemma always (their config classes have one, default 128 / 256).
        if (p.HeadDim is not null || p.ModelType is "qwen3" || p.Gemma) config["head_dim"] = p.Hd;
        switch (p.ModelType)
        {
            case "llama":
                config["hidden_act"] = "silu";
                config["attention_bias"] = p.AttentionBias;
                config["mlp_bias"] = false;
                break;
            case "qwen2":
                config["hidden_act"] = "silu";
                config["use_sliding_window"] = false;
                config["sliding_window"] = 4096;
                config["max_window_layers"] = 21;
                break;
            case "qwen3":
                config["hidden_act"] = "silu";
                config["attention_bias"] = p.AttentionBias;
                config["use_sliding_window"] = false;
                break;
            case "gemma2" or "gemma3_text":
                config["hidden_activation"] = "gelu_pytorch_tanh";
                if (p.ModelType == "gemma2") config["hidden_act"] = "gelu_pytorch_tanh";
                else
                {
                    config["sliding_window_pattern"] = p.SlidingWindowPattern;
                    config["rope_local_base_freq"] = p.RopeLocalBaseFreq;
                }
                config["query_pre_attn_scalar"] = p.QueryPreAttnScalar ?? p.Hd;
                config["attn_logit_softcapping"] = p.AttnSoftCap;
                config["final_logit_softcapping"] = p.FinalSoftCap;
                config["sliding_window"] = p.SlidingWindow ?? 4096;
                config["attention_bias"] = false;
                break;
        }
        File.WriteAllText(Path.Combine(dir, "config.json"), config.ToJsonString(new System.Text.Json.JsonSerializerOptions { WriteIndented = true }));

        using var scope = NewDisposeScope();
        var g = new Generator((ulong)p.Seed);
        Tensor N(double std, params long[] shape) => randn(shape, generator: g) * std;
        // Gemma stores RMSNorm weights as offsets from 1 (the model multiplies by 1 + w).
        Tensor NormW(long d) => p.Gemma ? N(0.1, d) : N(0.1, d) + 1;
        var w = new List<KeyValuePair<string, Tensor>>();
        int h = p.Hidden, q = p.Heads * p.Hd, kv = p.KvHeads * p.Hd, m = p.Intermediate;
        w.Add(new("model.embed_tokens.weight", N(p.Gemma ? 0.25 : 0.7, p.Vocab, h)));
        for (int i = 0; i < p.Layers; i++)
        {
            string b = $"model.layers.{i}.";
            w.Add(new(b + "input_layernorm.weight", NormW(h)));
            w.Add(new(b + "self_attn.q_proj.weight", N(0.35, q, h)));
            w.Add(new(b + "self_attn.k_proj.weight", N(0.35, kv, h)));
            w.Add(new(b + "self_attn.v_proj.weight", N(0.35, kv, h)));
            if (p.QkvBias)
            {
                w.Add(new(b + "self_attn.q_proj.bias", N(0.2, q)));
                w.Add(new(b + "self_attn.k_proj.bias", N(0.2, kv)));
                w.Add(new(b + "self_attn.v_proj.bias", N(0.2, kv)));
            }
            w.Add(new(b + "self_attn.o_proj.weight", N(0.3, h, q)));
            if (p.OBias) w.Add(new(b + "self_attn.o_proj.bias", N(0.2, h)));
            if (p.ModelType is "qwen3" or "gemma3_text")
            {
                w.Add(new(b + "self_attn.q_norm.weight", p.Gemma ? N(0.2, p.Hd) : N(0.2, p.Hd) + 1));
                w.Add(new(b + "self_attn.k_norm.weight", p.Gemma ? N(0.2, p.Hd) : N(0.2, p.Hd) + 1));
            }
            w.Add(new(b + "post_attention_layernorm.weight", NormW(h)));
            if (p.Gemma)
            {
                w.Add(new(b + "pre_feedforward_layernorm.weight", NormW(h)));
                w.Add(new(b + "post_feedforward_layernorm.weight", NormW(h)));
            }
            w.Add(new(b + "mlp.gate_proj.weight", N(0.35, m, h)));
            w.Add(new(b + "mlp.up_proj.weight", N(0.35, m, h)));
            w.Add(new(b + "mlp.down_proj.weight", N(0.25, h, m)));
        }
        w.Add(new("model.norm.weight", NormW(h)));
        if (!p.Tied) w.Add(new("lm_head.weight", N(0.4, p.Vocab, h)));

        var cast = w.Select(kv => new KeyValuePair<string, Tensor>(kv.Key, kv.Value.to(p.Dtype))).ToList();
        if (p.Shards <= 1)
        {
            SafeTensors.Save(Path.Combine(dir, "model.safetensors"), cast, new Dictionary<string, string> { ["format"] = "pt" });
            return dir;
        }
        var map = new JsonObject();
        int per = (cast.Count + p.Shards - 1) / p.Shards;
        for (int s = 0; s < p.Shards; s++)
        {
            string file = $"model-{s + 1:D5}-of-{p.Shards:D5}.safetensors";
            var part = cast.Skip(s * per).Take(per).ToList();
            SafeTensors.Save(Path.Combine(dir, file), part, new Dictionary<string, string> { ["format"] = "pt" });
            foreach (var (k, _) in part) map[k] = file;
        }
        File.WriteAllText(Path.Combine(dir, "model.safetensors.index.json"),
            new JsonObject { ["metadata"] = new JsonObject { ["total_size"] = 0 }, ["weight_map"] = map }.ToJsonString());
        return dir;
    }
}
