using System.Text.Json;
using System.Text.Json.Nodes;
using SaeSharp.Hooks;
using TorchSharp;
using static TorchSharp.torch;

namespace SaeSharp.Models;

/// <summary>GPT-Neo settings read from a Hugging Face config.json (<c>GPTNeoConfig</c> defaults for missing keys);
/// <see cref="Local"/>[i] is true where layer i's attention is local (sees the last <see cref="WindowSize"/> positions).</summary>
internal sealed record GptNeoSettings(int Hidden, int NLayer, int NHead, int Intermediate, int MaxPositions, int VocabSize,
    string Activation, double Eps, int WindowSize, bool[] Local)
{
    /// <summary>Reads the settings; with <paramref name="weights"/>, checks every declared size against the tensors
    /// present before anything is allocated.</summary>
    public static GptNeoSettings From(JsonConfig c, Checkpoint? weights = null)
    {
        int hidden = c.Int("hidden_size", 2048), nLayer = c.Int("num_layers", 24);
        var s = new GptNeoSettings(hidden, nLayer, c.Int("num_heads", 16),
            c.Root["intermediate_size"] is null ? 4 * hidden : c.Int("intermediate_size"),
            c.Int("max_position_embeddings", 2048), c.Int("vocab_size", 50257),
            c.String("activation_function") ?? "gelu_new", c.Double("layer_norm_epsilon", 1e-5),
            c.Int("window_size", 256), AttentionLayers(c, nLayer));
        if (s.Hidden <= 0 || s.NLayer < 0 || s.NHead <= 0 || s.Hidden % s.NHead != 0)
            throw new SaeSharpException($"{c.Path}: hidden_size={s.Hidden} must be a positive multiple of num_heads={s.NHead}");
        if (s.WindowSize <= 0 && s.Local.Any(l => l))
            throw new SaeSharpException($"{c.Path}: window_size={s.WindowSize} must be positive for local attention layers");
        if (c.Bool("tie_word_embeddings", true) == false)
            throw new SaeSharpException($"{c.Path}: tie_word_embeddings=false is not supported for gpt_neo (its lm_head is the token embedding)");
        weights?.ExpectGpt2Layout(c.Path, ("num_layers", s.NLayer), ("hidden_size", s.Hidden), ("max_position_embeddings", s.MaxPositions),
            ("intermediate_size", s.Intermediate), s.VocabSize, conv1d: false);
        return s;
    }

    /// <summary>Each layer's attention type: config.json <c>attention_layers</c> where written (transformers keeps it over
    /// the expansion), else <c>attention_types</c> [[["global", "local"], n], ...] expanded as <c>GPTNeoConfig</c> does
    /// (each pattern repeated n times, in order); true = local. The count must be num_layers.</summary>
    private static bool[] AttentionLayers(JsonConfig c, int nLayer)
    {
        var types = new List<string>();
        string What(JsonNode? n) => n?.ToJsonString() ?? "null";
        if (c.Root["attention_layers"] is JsonArray layers)
            types.AddRange(layers.Select(l => l is JsonValue v && v.GetValueKind() == JsonValueKind.String ? v.GetValue<string>()
                : throw new SaeSharpException($"{c.Path}: attention_layers must be a list of \"global\"/\"local\", got {What(l)}")));
        else
        {
            var spec = c.Root["attention_types"] ?? JsonNode.Parse("""[[["global", "local"], 12]]""");
            foreach (var item in spec as JsonArray ?? throw new SaeSharpException($"{c.Path}: attention_types must be a list, got {What(spec)}"))
            {
                if (item is not JsonArray { Count: 2 } pair || pair[0] is not JsonArray pattern || pair[1] is not JsonValue times
                    || times.GetValueKind() != JsonValueKind.Number || !times.TryGetValue(out int n) || n < 0)
                    throw new SaeSharpException($"{c.Path}: attention_types entry {What(item)} must be [[\"global\"|\"local\", ...], count]");
                for (int i = 0; i < n; i++)
                    types.AddRange(pattern.Select(t => t is JsonValue v && v.GetValueKind() == JsonValueKind.String ? v.GetValue<string>()
                        : throw new SaeSharpException($"{c.Path}: attention_types entry {What(item)} must name \"global\" or \"local\"")));
            }
        }
        if (types.FirstOrDefault(t => t is not ("global" or "local")) is { } bad)
            throw new SaeSharpException($"{c.Path}: attention type '{bad}' is not supported (GPT-Neo has \"global\" and \"local\")");
        if (types.Count != nLayer)
            throw new SaeSharpException($"{c.Path}: attention_types give {types.Count} layer(s) but num_layers={nLayer}");
        return [.. types.Select(t => t == "local")];
    }
}

/// <summary>HF <c>GPTNeoSelfAttention</c>: separate <c>q_proj</c>, <c>k_proj</c>, <c>v_proj</c> (no bias until weight processing's fold_ln gives them one), <c>out_proj</c>
/// (bias); the scores are not scaled by 1/√d_head; a local layer sees only the last window_size positions.</summary>
internal sealed class GptNeoSelfAttention : nn.Module<Tensor, ForwardContext, Tensor>
{
    private readonly Linear k_proj, v_proj, q_proj, out_proj;
    private readonly int _layer, _nHead;
    private readonly int? _window;
    private readonly BlockHookNames _names;

    public GptNeoSelfAttention(GptNeoSettings s, int layer, BlockHookNames names, ScalarType dtype) : base("attention")
    {
        (_layer, _nHead, _names, _window) = (layer, s.NHead, names, s.Local[layer] ? s.WindowSize : null);
        k_proj = new Linear(s.Hidden, s.Hidden, false, dtype);
        v_proj = new Linear(s.Hidden, s.Hidden, false, dtype);
        q_proj = new Linear(s.Hidden, s.Hidden, false, dtype);
        out_proj = new Linear(s.Hidden, s.Hidden, true, dtype);
        RegisterComponents();
    }

    public override Tensor forward(Tensor x, ForwardContext ctx)
    {
        long b = x.shape[0], s = x.shape[1];
        var (q, k, v) = ctx.SplitInputs is { } split
            ? (SplitAttentionInputs.Project(split.Q, q_proj.InOut.WeightInOut, q_proj.InOut.Bias),
                SplitAttentionInputs.Project(split.K, k_proj.InOut.WeightInOut, k_proj.InOut.Bias),
                SplitAttentionInputs.Project(split.V, v_proj.InOut.WeightInOut, v_proj.InOut.Bias))
            : (q_proj.forward(x).view(b, s, _nHead, -1), k_proj.forward(x).view(b, s, _nHead, -1), v_proj.forward(x).view(b, s, _nHead, -1));
        var z = AttentionCore.AttendHeads(q, k, v, _layer, 1.0, ctx, _names, slidingWindow: _window);
        return AttentionCore.Project(z, _nHead, out_proj.InOut, out_proj.forward, ctx, _names);
    }
}

/// <summary>HF <c>GPTNeoAttention</c> <c>attn</c>: the wrapper holding the layer's <c>attention</c>.</summary>
internal sealed class GptNeoAttention : nn.Module<Tensor, ForwardContext, Tensor>
{
    private readonly GptNeoSelfAttention attention;

    public GptNeoAttention(GptNeoSettings s, int layer, BlockHookNames names, ScalarType dtype) : base("attn")
    {
        attention = new GptNeoSelfAttention(s, layer, names, dtype);
        RegisterComponents();
    }

    public override Tensor forward(Tensor x, ForwardContext ctx) => attention.forward(x, ctx);
}

/// <summary>
/// GPT-Neo (HF <c>GPTNeoForCausalLM</c>: EleutherAI/gpt-neo-125M, roneneldan/TinyStories-1M … 33M) with TransformerLens
/// hooks: a <see cref="Gpt2Model"/> (learned positions, LayerNorm, tied unembedding) with separate q/k/v projections
/// without bias, no 1/√d_head scaling of the attention scores, local layers (<c>attention_types</c>) that see only the
/// last <c>window_size</c> positions, and an nn.Linear MLP. State-dict keys are the HF ones
/// (<c>transformer.h.0.attn.attention.q_proj.weight</c>).
/// </summary>
internal static class GptNeo
{
    public static Gpt2Model Create(GptNeoSettings s, string modelName, string configPath, ScalarType dtype) =>
        new("GPTNeoForCausalLM", new TransformerConfig
        {
            ModelName = modelName, Architecture = "gpt_neo", NLayers = s.NLayer, DModel = s.Hidden, NHeads = s.NHead,
            DMlp = s.Intermediate, DVocab = s.VocabSize, NCtx = s.MaxPositions, Activation = s.Activation, LayerNormEps = s.Eps, Dtype = dtype,
            UseAttnScale = false,
            SlidingWindow = s.Local.Any(l => l) ? s.WindowSize : null,
            SlidingWindowLayers = [.. Enumerable.Range(0, s.NLayer).Where(i => s.Local[i])],
        }, HfModuleNames.GptNeo, configPath, (i, names, act) => (new GptNeoAttention(s, i, names, dtype),
            new Gpt2Mlp(new Linear(s.Hidden, s.Intermediate, true, dtype), new Linear(s.Intermediate, s.Hidden, true, dtype), act, names)));
}
