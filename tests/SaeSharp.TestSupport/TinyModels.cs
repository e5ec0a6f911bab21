using System.Text.Json.Nodes;
using SaeSharp.IO;
using TorchSharp;
using static TorchSharp.torch;

namespace SaeSharp.Models;

/// <summary>Layout choices for <see cref="TinyModels"/> checkpoints.</summary>
public sealed record TinyModelOptions
{
    /// <summary>Keys with the <c>transformer.</c> / <c>gpt_neox.</c> prefix (as saved by GPT2LMHeadModel) or without (as in the gpt2 hub file).</summary>
    public bool Prefixed { get; init; } = true;
    /// <summary>Stored dtype of the weights (float32, float16, bfloat16).</summary>
    public ScalarType Dtype { get; init; } = ScalarType.Float32;
    /// <summary>1: <c>model.safetensors</c>; more: shards and <c>model.safetensors.index.json</c>.</summary>
    public int Shards { get; init; } = 1;
    /// <summary>Also write the non-weight buffers HF checkpoints carry (attn.bias, masked_bias, rotary inv_freq).</summary>
    public bool ExtraBuffers { get; init; } = true;
    /// <summary>Activation function written to config.json (null: the architecture's default).</summary>
    public string? Activation { get; init; }
}

/// <summary>
/// Writes tiny random models in the exact Hugging Face layout (config.json + safetensors), for tests and demos
/// without network access. The same seed gives the same weights.
/// </summary>
public static class TinyModels
{
    /// <summary>A GPT-2 (GPT2LMHeadModel) folder; returns <paramref name="dir"/>.</summary>
    public static string WriteGpt2(string dir, int seed = 0, int nLayer = 2, int nEmbd = 16, int nHead = 4, int vocab = 64,
        int nPositions = 32, TinyModelOptions? options = null)
    {
        var o = options ?? new TinyModelOptions();
        var config = new JsonObject
        {
            ["_name_or_path"] = "tiny-gpt2",
            ["architectures"] = new JsonArray("GPT2LMHeadModel"),
            ["model_type"] = "gpt2",
            ["activation_function"] = o.Activation ?? "gelu_new",
            ["n_embd"] = nEmbd, ["n_layer"] = nLayer, ["n_head"] = nHead, ["n_inner"] = null,
            ["n_positions"] = nPositions, ["n_ctx"] = nPositions, ["vocab_size"] = vocab,
            ["layer_norm_epsilon"] = 1e-5, ["bos_token_id"] = vocab - 1, ["eos_token_id"] = vocab - 1,
            ["torch_dtype"] = TorchDtypeName(o.Dtype),
        };
        using var scope = NewDisposeScope();
        using var r = new Rng(seed);
        var w = new List<KeyValuePair<string, Tensor>>();
        string p = o.Prefixed ? "transformer." : "";
        int d = nEmbd, inner = 4 * nEmbd;
        w.Add(new(p + "wte.weight", r.Normal(0.5, vocab, d)));
        w.Add(new(p + "wpe.weight", r.Normal(0.3, nPositions, d)));
        for (int i = 0; i < nLayer; i++)
        {
            string b = $"{p}h.{i}.";
            w.Add(new(b + "ln_1.weight", r.Normal(0.1, d) + 1));
            w.Add(new(b + "ln_1.bias", r.Normal(0.1, d)));
            if (o.ExtraBuffers)
            {
                w.Add(new(b + "attn.bias", ones(nPositions, nPositions, dtype: ScalarType.Bool).tril().view(1, 1, nPositions, nPositions)));
                w.Add(new(b + "attn.masked_bias", tensor(-1e4f)));
            }
            w.Add(new(b + "attn.c_attn.weight", r.Normal(0.3, d, 3 * d)));
            w.Add(new(b + "attn.c_attn.bias", r.Normal(0.1, 3 * d)));
            w.Add(new(b + "attn.c_proj.weight", r.Normal(0.2, d, d)));
            w.Add(new(b + "attn.c_proj.bias", r.Normal(0.1, d)));
            w.Add(new(b + "ln_2.weight", r.Normal(0.1, d) + 1));
            w.Add(new(b + "ln_2.bias", r.Normal(0.1, d)));
            w.Add(new(b + "mlp.c_fc.weight", r.Normal(0.3, d, inner)));
            w.Add(new(b + "mlp.c_fc.bias", r.Normal(0.1, inner)));
            w.Add(new(b + "mlp.c_proj.weight", r.Normal(0.15, inner, d)));
            w.Add(new(b + "mlp.c_proj.bias", r.Normal(0.1, d)));
        }
        w.Add(new(p + "ln_f.weight", r.Normal(0.1, d) + 1));
        w.Add(new(p + "ln_f.bias", r.Normal(0.1, d)));
        Write(dir, config, w, o);
        return dir;
    }

    /// <summary>A GPT-NeoX / Pythia (GPTNeoXForCausalLM) folder; returns <paramref name="dir"/>.</summary>
    public static string WriteNeoX(string dir, int seed = 0, int nLayer = 2, int hiddenSize = 16, int nHead = 2, int vocab = 64,
        int maxPositions = 64, double rotaryPct = 0.25, bool parallelResidual = true, int? intermediateSize = null,
        TinyModelOptions? options = null)
    {
        var o = options ?? new TinyModelOptions();
        int d = hiddenSize, inner = intermediateSize ?? 4 * hiddenSize, hd = hiddenSize / nHead;
        int rot = (int)(hd * rotaryPct);
        var config = new JsonObject
        {
            ["_name_or_path"] = "tiny-neox",
            ["architectures"] = new JsonArray("GPTNeoXForCausalLM"),
            ["model_type"] = "gpt_neox",
            ["hidden_act"] = o.Activation ?? "gelu",
            ["hidden_size"] = d, ["num_hidden_layers"] = nLayer, ["num_attention_heads"] = nHead,
            ["intermediate_size"] = inner, ["rotary_pct"] = rotaryPct, ["rotary_emb_base"] = 10000,
            ["use_parallel_residual"] = parallelResidual, ["layer_norm_eps"] = 1e-5, ["vocab_size"] = vocab,
            ["max_position_embeddings"] = maxPositions, ["tie_word_embeddings"] = false,
            ["bos_token_id"] = 0, ["eos_token_id"] = 0, ["torch_dtype"] = TorchDtypeName(o.Dtype),
        };
        using var scope = NewDisposeScope();
        using var r = new Rng(seed);
        var w = new List<KeyValuePair<string, Tensor>>();
        string p = o.Prefixed ? "gpt_neox." : "";
        w.Add(new(p + "embed_in.weight", r.Normal(0.5, vocab, d)));
        for (int i = 0; i < nLayer; i++)
        {
            string b = $"{p}layers.{i}.";
            w.Add(new(b + "input_layernorm.weight", r.Normal(0.1, d) + 1));
            w.Add(new(b + "input_layernorm.bias", r.Normal(0.1, d)));
            w.Add(new(b + "post_attention_layernorm.weight", r.Normal(0.1, d) + 1));
            w.Add(new(b + "post_attention_layernorm.bias", r.Normal(0.1, d)));
            if (o.ExtraBuffers)
            {
                w.Add(new(b + "attention.bias", ones(maxPositions, maxPositions, dtype: ScalarType.Bool).tril().view(1, 1, maxPositions, maxPositions)));
                w.Add(new(b + "attention.masked_bias", tensor(-1e9f)));
                if (rot > 0)
                    w.Add(new(b + "attention.rotary_emb.inv_freq", 1.0 / pow(10000.0, arange(0, rot, 2, dtype: ScalarType.Float32) / rot)));
            }
            w.Add(new(b + "attention.query_key_value.weight", r.Normal(0.3, 3 * d, d)));
            w.Add(new(b + "attention.query_key_value.bias", r.Normal(0.1, 3 * d)));
            w.Add(new(b + "attention.dense.weight", r.Normal(0.2, d, d)));
            w.Add(new(b + "attention.dense.bias", r.Normal(0.1, d)));
            w.Add(new(b + "mlp.dense_h_to_4h.weight", r.Normal(0.3, inner, d)));
            w.Add(new(b + "mlp.dense_h_to_4h.bias", r.Normal(0.1, inner)));
            w.Add(new(b + "mlp.dense_4h_to_h.weight", r.Normal(0.15, d, inner)));
            w.Add(new(b + "mlp.dense_4h_to_h.bias", r.Normal(0.1, d)));
        }
        w.Add(new(p + "final_layer_norm.weight", r.Normal(0.1, d) + 1));
        w.Add(new(p + "final_layer_norm.bias", r.Normal(0.1, d)));
        w.Add(new("embed_out.weight", r.Normal(0.3, vocab, d)));
        Write(dir, config, w, o);
        return dir;
    }

    private sealed class Rng(int seed) : IDisposable
    {
        private readonly Generator _g = new((ulong)seed);
        public Tensor Normal(double std, params long[] shape) => randn(shape, generator: _g) * std;
        public void Dispose() => _g.Dispose();
    }

    private static string TorchDtypeName(ScalarType t) => t switch
    {
        ScalarType.Float16 => "float16",
        ScalarType.BFloat16 => "bfloat16",
        _ => "float32",
    };

    private static void Write(string dir, JsonObject config, List<KeyValuePair<string, Tensor>> weights, TinyModelOptions o)
    {
        Directory.CreateDirectory(dir);
        File.WriteAllText(Path.Combine(dir, "config.json"), config.ToJsonString(new System.Text.Json.JsonSerializerOptions { WriteIndented = true }));
        var cast = weights.Select(kv => new KeyValuePair<string, Tensor>(kv.Key,
            kv.Value.is_floating_point() && kv.Value.dim() > 0 ? kv.Value.to(o.Dtype) : kv.Value)).ToList();
        if (o.Shards <= 1)
        {
            SafeTensors.Save(Path.Combine(dir, "model.safetensors"), cast, new Dictionary<string, string> { ["format"] = "pt" });
            return;
        }
        var map = new JsonObject();
        long total = 0;
        int per = (cast.Count + o.Shards - 1) / o.Shards;
        for (int s = 0; s < o.Shards; s++)
        {
            string file = $"model-{s + 1:D5}-of-{o.Shards:D5}.safetensors";
            var part = cast.Skip(s * per).Take(per).ToList();
            SafeTensors.Save(Path.Combine(dir, file), part, new Dictionary<string, string> { ["format"] = "pt" });
            foreach (var (k, t) in part)
            {
                map[k] = file;
                total += t.numel() * t.element_size();
            }
        }
        var index = new JsonObject { ["metadata"] = new JsonObject { ["total_size"] = total }, ["weight_map"] = map };
        File.WriteAllText(Path.Combine(dir, "model.safetensors.index.json"), index.ToJsonString(new System.Text.Json.JsonSerializerOptions { WriteIndented = true }));
    }
}
