using SaeSharp.Hooks;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace SaeSharp.Models;

/// <summary>BLOOM (HF <c>BloomConfig</c>: bigscience/bloom-560m … bloom-7b1, bloom, bloomz) settings read from a Hugging
/// Face config.json, with <c>BloomConfig</c>'s defaults for missing keys (and its aliases: <c>n_embed</c> for hidden_size,
/// <c>num_hidden_layers</c> / <c>num_attention_heads</c> for n_layer / n_head).</summary>
internal sealed record BloomSettings(int Hidden, int NLayer, int NHead, int VocabSize, double Eps, int NCtx, bool TieEmbeddings)
{
    public int HeadDim => Hidden / NHead;

    /// <summary>BLOOM's MLP is 4 × hidden_size wide (no config key).</summary>
    public int Ffn => 4 * Hidden;

    /// <summary>HF <c>bloom_gelu_forward</c>, the tanh GELU (TransformerLens <c>gelu_fast</c>).</summary>
    public const string Activation = "gelu_fast";

    /// <summary>Reads the settings; with <paramref name="weights"/>, checks every declared size against the tensors
    /// present before anything is allocated. Refuses <c>apply_residual_connection_post_layernorm</c> (no released BLOOM
    /// has it) and an untied lm_head (BloomForCausalLM always ties it).</summary>
    public static BloomSettings From(JsonConfig c, Checkpoint? weights = null)
    {
        int hidden = c.Has("n_embed") ? c.Int("n_embed") : c.Int("hidden_size", 64);
        int nLayer = c.Has("n_layer") ? c.Int("n_layer") : c.Int("num_hidden_layers", 2);
        int nHead = c.Has("n_head") ? c.Int("n_head") : c.Int("num_attention_heads", 8);
        // BLOOM has no position embeddings (ALiBi); its training length (seq_length, 2048) is TransformerLens's n_ctx.
        var s = new BloomSettings(hidden, nLayer, nHead, c.Int("vocab_size", 250880), c.Double("layer_norm_epsilon", 1e-5),
            c.Int("seq_length", 2048), c.Bool("tie_word_embeddings", true));
        if (s.Hidden <= 0 || s.NLayer <= 0 || s.NHead <= 0 || s.Hidden % s.NHead != 0)
            throw new SaeSharpException($"{c.Path}: hidden_size={s.Hidden} must be a positive multiple of n_head={s.NHead} (and n_layer positive)");
        if (c.Bool("apply_residual_connection_post_layernorm", false))
            throw new SaeSharpException($"{c.Path}: apply_residual_connection_post_layernorm=true (the residual taken after the LayerNorms) is not supported for bloom");
        if (!s.TieEmbeddings)
            throw new SaeSharpException($"{c.Path}: tie_word_embeddings=false is not supported for bloom (BloomForCausalLM ties lm_head to word_embeddings)");
        if (weights is not null)
        {
            weights.ExpectLayers(c.Path, "n_layer", s.NLayer);
            weights.ExpectShape(c.Path, "transformer", "word_embeddings.weight", [s.VocabSize, s.Hidden], $"vocab_size={s.VocabSize}, hidden_size={s.Hidden}");
            weights.ExpectShape(c.Path, "transformer", "h.0.self_attention.query_key_value.weight", [3 * s.Hidden, s.Hidden], $"hidden_size={s.Hidden}");
            weights.ExpectShape(c.Path, "transformer", "h.0.mlp.dense_h_to_4h.weight", [s.Ffn, s.Hidden], $"4 × hidden_size={s.Hidden}");
        }
        return s;
    }
}

/// <summary>HF <c>BloomAttention</c> <c>self_attention</c>: fused <c>query_key_value</c> whose output is laid out
/// [head, (q, k, v), head_dim] per token (as GPT-NeoX's), ALiBi biases on the scores (<see cref="AttentionCore.AlibiSlopes"/>),
/// <c>dense</c> with bias.</summary>
internal sealed class BloomAttention : nn.Module<Tensor, ForwardContext, Tensor>
{
    private readonly Linear query_key_value;
    private readonly Linear dense;
    private readonly BloomSettings _s;
    private readonly int _layer;
    private readonly BlockHookNames _names;
    private readonly double[] _slopes;

    public BloomAttention(BloomSettings s, int layer, BlockHookNames names, ScalarType dtype) : base("self_attention")
    {
        (_s, _layer, _names, _slopes) = (s, layer, names, AttentionCore.AlibiSlopes(s.NHead));
        query_key_value = new Linear(s.Hidden, 3 * s.Hidden, true, dtype);
        dense = new Linear(s.Hidden, s.Hidden, true, dtype);
        RegisterComponents();
    }

    public override Tensor forward(Tensor x, ForwardContext ctx)
    {
        int hd = _s.HeadDim;
        var (q, k, v) = AttentionCore.PerHeadQkv(query_key_value, _s.NHead, hd, x, ctx);
        var z = AttentionCore.AttendHeads(q, k, v, _layer, 1.0 / Math.Sqrt(hd), ctx, _names, alibiSlopes: _slopes);
        return AttentionCore.Project(z, _s.NHead, dense.InOut, dense.forward, ctx, _names);
    }
}

/// <summary>HF <c>BloomMLP</c>: <c>dense_h_to_4h</c>, the tanh GELU, <c>dense_4h_to_h</c>.</summary>
internal sealed class BloomMlp : nn.Module<Tensor, ForwardContext, Tensor>
{
    private readonly Linear dense_h_to_4h;
    private readonly Linear dense_4h_to_h;
    private readonly BlockHookNames _names;

    public BloomMlp(BloomSettings s, BlockHookNames names, ScalarType dtype) : base("mlp")
    {
        _names = names;
        dense_h_to_4h = new Linear(s.Hidden, s.Ffn, true, dtype);
        dense_4h_to_h = new Linear(s.Ffn, s.Hidden, true, dtype);
        RegisterComponents();
    }

    public override Tensor forward(Tensor x, ForwardContext ctx) =>
        ResidualBlock.Mlp(x, ctx, _names, dense_h_to_4h, ActivationFunctions.GeluTanh, dense_4h_to_h);
}

/// <summary>HF <c>BloomBlock</c> <c>h.{layer}</c>: <c>input_layernorm</c>, <c>self_attention</c>, then
/// <c>post_attention_layernorm</c>, <c>mlp</c>, each added to the residual (<see cref="ResidualBlock.Sequential"/>).</summary>
internal sealed class BloomBlock : nn.Module<Tensor, ForwardContext, Tensor>
{
    private readonly LayerNorm input_layernorm;
    private readonly BloomAttention self_attention;
    private readonly LayerNorm post_attention_layernorm;
    private readonly BloomMlp mlp;
    private readonly BlockHookNames _names;
    private readonly SplitAttentionInputs.Heads _heads;

    public BloomBlock(BloomSettings s, int layer, BlockHookNames names, ScalarType dtype) : base("block")
    {
        (_names, _heads) = (names, new(s.NHead, s.NHead));
        input_layernorm = new LayerNorm(s.Hidden, s.Eps, dtype);
        self_attention = new BloomAttention(s, layer, names, dtype);
        post_attention_layernorm = new LayerNorm(s.Hidden, s.Eps, dtype);
        mlp = new BloomMlp(s, names, dtype);
        RegisterComponents();
    }

    public override Tensor forward(Tensor resid, ForwardContext ctx) =>
        ResidualBlock.Sequential(resid, ctx, _names, _heads, input_layernorm, x => self_attention.forward(x, ctx),
            post_attention_layernorm, x => mlp.forward(x, ctx));
}

/// <summary>HF <c>BloomModel</c> <c>transformer</c>: word_embeddings, word_embeddings_layernorm, h.{i}, ln_f.</summary>
internal sealed class BloomCore : nn.Module
{
    public readonly Embedding word_embeddings;
    public readonly LayerNorm word_embeddings_layernorm;
    public readonly ModuleList<BloomBlock> h;
    public readonly LayerNorm ln_f;

    public BloomCore(BloomSettings s, HookPoints hooks, ScalarType dtype) : base("transformer")
    {
        word_embeddings = new Embedding(s.VocabSize, s.Hidden, dtype);
        word_embeddings_layernorm = new LayerNorm(s.Hidden, s.Eps, dtype);
        h = new ModuleList<BloomBlock>(Enumerable.Range(0, s.NLayer).Select(i => new BloomBlock(s, i, hooks.Blocks[i], dtype)).ToArray());
        ln_f = new LayerNorm(s.Hidden, s.Eps, dtype);
        RegisterComponents();
    }
}

/// <summary>
/// BLOOM (HF <c>BloomForCausalLM</c>: bigscience/bloom-560m, 1b1, 1b7, 3b, 7b1, bloom, the bloomz fine-tunes) with
/// TransformerLens hooks: token embeddings normalised by <c>word_embeddings_layernorm</c> (TransformerLens's
/// <c>post_embedding_ln</c>: hook_embed is its output), no position embeddings but ALiBi biases on the attention scores
/// (TransformerLens's <c>positional_embedding_type="alibi"</c>; positions count the real tokens of the attention mask, as
/// transformers'), pre-norm blocks (<c>input_layernorm</c>, attention with the fused <c>query_key_value</c> and
/// <c>dense</c>; <c>post_attention_layernorm</c>, tanh-GELU MLP <c>dense_h_to_4h</c>, <c>dense_4h_to_h</c>), <c>ln_f</c>,
/// and the unembedding tied to <c>word_embeddings</c> without bias. State-dict keys are the HF ones
/// (<c>transformer.h.0.self_attention.query_key_value.weight</c>; <c>h.*</c> without <c>transformer.</c>, as bigscience's
/// own files have them, loads too).
/// </summary>
public sealed class BloomModel : HookedTransformer
{
    private readonly BloomCore transformer;
    /// <summary>The unembedding once weight processing has given it a matrix of its own (<see cref="UntieEmbeddings"/>);
    /// null while it is tied to word_embeddings, as BloomForCausalLM ties it.</summary>
    private Linear? lm_head;

    internal BloomModel(BloomSettings s, string modelName, ScalarType dtype)
        : base("BloomForCausalLM", new TransformerConfig
        {
            ModelName = modelName, Architecture = "bloom", NLayers = s.NLayer, DModel = s.Hidden, NHeads = s.NHead,
            DHead = s.HeadDim, DMlp = s.Ffn, DVocab = s.VocabSize, NCtx = s.NCtx, Activation = BloomSettings.Activation,
            LayerNormEps = s.Eps, Alibi = true, PostEmbeddingLn = true, Dtype = dtype,
        }, new HookPoints(s.NLayer, hasPosEmbed: false, parallelAttnMlp: false, rotary: false, HfModuleNames.Bloom, postEmbeddingLn: true))
    {
        transformer = new BloomCore(s, HookPoints, dtype);
        RegisterComponents();
    }

    /// <summary>word_embeddings, then word_embeddings_layernorm firing TransformerLens's <c>embed.ln.hook_scale</c> and, on its
    /// output, <c>embed.ln.hook_normalized</c> (TransformerLens's LayerNorm fires it after the weight and bias); that output
    /// is hook_embed.</summary>
    private protected override Tensor Embed(Tensor tokens, ForwardContext ctx) =>
        ctx.Hooks.Fire(HookPoints.Embed, ctx.Hooks.Fire(HookPoints.EmbedLnNormalized,
            transformer.word_embeddings_layernorm.Forward(transformer.word_embeddings.forward(tokens), ctx.Hooks, HookPoints.EmbedLnScale)));

    private protected override Tensor RunBlock(int layer, Tensor resid, ForwardContext ctx) => transformer.h[layer].forward(resid, ctx);

    private protected override Tensor FinalNorm(Tensor resid, ForwardContext ctx) =>
        ctx.Hooks.Fire(HookPoints.LnFinal, transformer.ln_f.Forward(resid, ctx.Hooks, HookPoints.LnFinalScale));

    internal override void UntieEmbeddings()
    {
        if (lm_head is not null) return;
        lm_head = Linear.CopyOf(transformer.word_embeddings.Weight);
        register_module("lm_head", lm_head);
    }

    private protected override Tensor UnembedNormalized(Tensor x) =>
        lm_head is null ? matmul(x, transformer.word_embeddings.Weight.t()) : lm_head.forward(x);
}
