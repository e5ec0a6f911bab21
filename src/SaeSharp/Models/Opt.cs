using SaeSharp.Hooks;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace SaeSharp.Models;

/// <summary>OPT (HF <c>OPTConfig</c>: facebook/opt-125m … opt-66b) settings read from a Hugging Face config.json, with
/// <c>OPTConfig</c>'s defaults for missing keys.</summary>
internal sealed record OptSettings(int Hidden, int NLayer, int NHead, int Ffn, int VocabSize, int MaxPositions,
    string Activation, bool Bias, bool TieEmbeddings, bool PreNorm = true, int? WordEmbedProjDim = null)
{
    /// <summary>The width of <c>embed_tokens</c> and of the unembedding: <c>word_embed_proj_dim</c> (facebook/opt-350m: 512,
    /// with <c>project_in</c> / <c>project_out</c> to and from hidden_size), else hidden_size.</summary>
    public int EmbedDim => WordEmbedProjDim ?? Hidden;

    /// <summary>True when <c>word_embed_proj_dim</c> ≠ hidden_size: OPTDecoder's <c>project_in</c> / <c>project_out</c>.</summary>
    public bool Projected => EmbedDim != Hidden;

    public int HeadDim => Hidden / NHead;

    /// <summary>HF <c>OPTLearnedPositionalEmbedding.offset</c>: position p reads row p + 2 of <c>embed_positions</c>.</summary>
    public const int PositionOffset = 2;

    /// <summary>OPT's LayerNorms are nn.LayerNorm with torch's default eps (no config key).</summary>
    public const double Eps = 1e-5;

    /// <summary>Reads the settings; with <paramref name="weights"/>, checks every declared size against the tensors
    /// present before anything is allocated. Reads what facebook/opt-350m alone has (<c>do_layer_norm_before</c> false,
    /// <c>word_embed_proj_dim</c> ≠ hidden_size with project_in / project_out); refuses <c>_remove_final_layer_norm</c>
    /// and LayerNorms without weights.</summary>
    public static OptSettings From(JsonConfig c, Checkpoint? weights = null)
    {
        int hidden = c.Int("hidden_size", 768);
        var s = new OptSettings(hidden, c.Int("num_hidden_layers", 12), c.Int("num_attention_heads", 12), c.Int("ffn_dim", 3072),
            c.Int("vocab_size", 50272), c.Int("max_position_embeddings", 2048), c.String("activation_function") ?? "relu",
            c.Bool("enable_bias", true), c.Bool("tie_word_embeddings", true), c.Bool("do_layer_norm_before", true),
            c.Has("word_embed_proj_dim") ? c.Int("word_embed_proj_dim") : null);
        if (s.Hidden <= 0 || s.NLayer <= 0 || s.NHead <= 0 || s.Hidden % s.NHead != 0)
            throw new SaeSharpException($"{c.Path}: hidden_size={s.Hidden} must be a positive multiple of num_attention_heads={s.NHead} (and num_hidden_layers positive)");
        if (s.EmbedDim <= 0)
            throw new SaeSharpException($"{c.Path}: word_embed_proj_dim={s.EmbedDim} must be positive");
        if (c.Bool("_remove_final_layer_norm", false))
            throw new SaeSharpException($"{c.Path}: _remove_final_layer_norm=true is not supported for opt");
        if (!c.Bool("layer_norm_elementwise_affine", true))
            throw new SaeSharpException($"{c.Path}: layer_norm_elementwise_affine=false is not supported for opt");
        if (weights is not null)
        {
            weights.ExpectLayers(c.Path, "num_hidden_layers", s.NLayer);
            weights.ExpectShape(c.Path, "model", "decoder.embed_tokens.weight", [s.VocabSize, s.EmbedDim],
                s.Projected ? $"vocab_size={s.VocabSize}, word_embed_proj_dim={s.EmbedDim}" : $"vocab_size={s.VocabSize}, hidden_size={s.Hidden}");
            if (s.Projected)
            {
                string dims = $"word_embed_proj_dim={s.EmbedDim} ≠ hidden_size={s.Hidden}";
                weights.ExpectShape(c.Path, "model", "decoder.project_in.weight", [s.Hidden, s.EmbedDim], dims);
                weights.ExpectShape(c.Path, "model", "decoder.project_out.weight", [s.EmbedDim, s.Hidden], dims);
            }
            weights.ExpectShape(c.Path, "model", "decoder.embed_positions.weight", [s.MaxPositions + PositionOffset, s.Hidden],
                $"max_position_embeddings={s.MaxPositions} (+ OPT's offset of 2 rows), hidden_size={s.Hidden}");
            weights.ExpectShape(c.Path, "model", "decoder.layers.0.fc1.weight", [s.Ffn, s.Hidden], $"ffn_dim={s.Ffn}, hidden_size={s.Hidden}");
            if (!s.TieEmbeddings)
                weights.ExpectShape(c.Path, "", "lm_head.weight", [s.VocabSize, s.EmbedDim], $"vocab_size={s.VocabSize}, word_embed_proj_dim={s.EmbedDim}");
        }
        return s;
    }
}

/// <summary>HF <c>OPTAttention</c> <c>self_attn</c>: <c>q_proj</c>, <c>k_proj</c>, <c>v_proj</c>, <c>out_proj</c> (with bias
/// unless enable_bias is false), scores × head_dim^-½.</summary>
internal sealed class OptAttention : nn.Module<Tensor, ForwardContext, Tensor>
{
    private readonly Linear k_proj, v_proj, q_proj, out_proj;
    private readonly OptSettings _s;
    private readonly int _layer;
    private readonly BlockHookNames _names;

    public OptAttention(OptSettings s, int layer, BlockHookNames names, ScalarType dtype) : base("self_attn")
    {
        (_s, _layer, _names) = (s, layer, names);
        k_proj = new Linear(s.Hidden, s.Hidden, s.Bias, dtype);
        v_proj = new Linear(s.Hidden, s.Hidden, s.Bias, dtype);
        q_proj = new Linear(s.Hidden, s.Hidden, s.Bias, dtype);
        out_proj = new Linear(s.Hidden, s.Hidden, s.Bias, dtype);
        RegisterComponents();
    }

    public override Tensor forward(Tensor x, ForwardContext ctx)
    {
        var st = _s;
        var (q, k, v) = AttentionCore.SeparateQkv(q_proj, k_proj, v_proj, st.NHead, st.NHead, st.HeadDim, x, ctx);
        var z = AttentionCore.AttendHeads(q, k, v, _layer, 1.0 / Math.Sqrt(st.HeadDim), ctx, _names);
        return AttentionCore.Project(z, st.NHead, out_proj.InOut, out_proj.forward, ctx, _names);
    }
}

/// <summary>HF <c>OPTDecoderLayer</c> <c>layers.{layer}</c>. do_layer_norm_before: <c>self_attn_layer_norm</c>,
/// <c>self_attn</c>, then <c>final_layer_norm</c>, <c>fc1</c>, the activation (relu), <c>fc2</c>, each added to the residual
/// (<see cref="ResidualBlock.Sequential"/>; the MLP has no module of its own in HF). Otherwise (facebook/opt-350m) post-norm:
/// <c>self_attn_layer_norm</c> of resid + attention, <c>final_layer_norm</c> of that + the MLP.</summary>
internal sealed class OptDecoderLayer : nn.Module<Tensor, ForwardContext, Tensor>
{
    private readonly OptAttention self_attn;
    private readonly LayerNorm self_attn_layer_norm;
    private readonly Linear fc1, fc2;
    private readonly LayerNorm final_layer_norm;
    private readonly Func<Tensor, Tensor> _act;
    private readonly BlockHookNames _names;
    private readonly SplitAttentionInputs.Heads _heads;
    private readonly bool _preNorm;

    public OptDecoderLayer(OptSettings s, int layer, Func<Tensor, Tensor> act, BlockHookNames names, ScalarType dtype) : base("layer")
    {
        (_act, _names, _heads, _preNorm) = (act, names, new(s.NHead, s.NHead), s.PreNorm);
        self_attn = new OptAttention(s, layer, names, dtype);
        self_attn_layer_norm = new LayerNorm(s.Hidden, OptSettings.Eps, dtype);
        fc1 = new Linear(s.Hidden, s.Ffn, s.Bias, dtype);
        fc2 = new Linear(s.Ffn, s.Hidden, s.Bias, dtype);
        final_layer_norm = new LayerNorm(s.Hidden, OptSettings.Eps, dtype);
        RegisterComponents();
    }

    public override Tensor forward(Tensor resid, ForwardContext ctx) => _preNorm
        ? ResidualBlock.Sequential(resid, ctx, _names, _heads, self_attn_layer_norm, x => self_attn.forward(x, ctx),
            final_layer_norm, x => ResidualBlock.Mlp(x, ctx, _names, fc1, _act, fc2))
        : PostNorm(resid, ctx);

    /// <summary>The post-norm layer (do_layer_norm_before false), hooked with TransformerLens's names though TransformerLens
    /// has no such block: hook_resid_pre (attention's input; hook_q/k/v_input with use_split_qkv_input) → hook_attn_out →
    /// ln1 = self_attn_layer_norm of resid_pre + attn_out (ln1.hook_normalized = hook_resid_mid) → hook_mlp_in → MLP
    /// (hook_mlp_out) → ln2 = final_layer_norm of resid_mid + mlp_out (ln2.hook_normalized = hook_resid_post).</summary>
    private Tensor PostNorm(Tensor resid, ForwardContext ctx)
    {
        var h = ctx.Hooks;
        var n = _names;
        resid = h.Fire(n.ResidPre, resid);
        var split = SplitAttentionInputs.Fire(resid, h, n, _heads, null);
        var attnOut = h.Fire(n.AttnOut, SplitAttentionInputs.Run(ctx, split, x => self_attn.forward(x, ctx), resid));
        var mid = h.Fire(n.ResidMid, h.Fire(n.Ln1, self_attn_layer_norm.Forward(resid.add(attnOut, TorchScalars.One), h, n.Ln1Scale)));
        var mlpOut = h.Fire(n.MlpOut, ResidualBlock.Mlp(h.Fire(n.MlpIn, mid), ctx, n, fc1, _act, fc2));
        return h.Fire(n.ResidPost, h.Fire(n.Ln2, final_layer_norm.Forward(mid.add(mlpOut, TorchScalars.One), h, n.Ln2Scale)));
    }
}

/// <summary>HF <c>OPTDecoder</c> <c>decoder</c>: embed_tokens, project_in (word_embed_proj_dim ≠ hidden_size), embed_positions
/// (max_position_embeddings + 2 rows), layers.{i}, final_layer_norm (do_layer_norm_before only), project_out.</summary>
internal sealed class OptDecoder : nn.Module
{
    public readonly Embedding embed_tokens;
    public readonly Embedding embed_positions;
    public readonly ModuleList<OptDecoderLayer> layers;
    public readonly LayerNorm? final_layer_norm;
    public readonly Linear? project_in, project_out;

    public OptDecoder(OptSettings s, Func<Tensor, Tensor> act, HookPoints hooks, ScalarType dtype) : base("decoder")
    {
        embed_tokens = new Embedding(s.VocabSize, s.EmbedDim, dtype);
        if (s.Projected)
        {
            project_in = new Linear(s.EmbedDim, s.Hidden, false, dtype);
            project_out = new Linear(s.Hidden, s.EmbedDim, false, dtype);
        }
        embed_positions = new Embedding(s.MaxPositions + OptSettings.PositionOffset, s.Hidden, dtype);
        layers = new ModuleList<OptDecoderLayer>(Enumerable.Range(0, s.NLayer).Select(i => new OptDecoderLayer(s, i, act, hooks.Blocks[i], dtype)).ToArray());
        if (s.PreNorm) final_layer_norm = new LayerNorm(s.Hidden, OptSettings.Eps, dtype);
        RegisterComponents();
    }
}

/// <summary>HF <c>OPTModel</c> <c>model</c>: the decoder.</summary>
internal sealed class OptCore : nn.Module
{
    public readonly OptDecoder decoder;

    public OptCore(OptSettings s, Func<Tensor, Tensor> act, HookPoints hooks, ScalarType dtype) : base("model")
    {
        decoder = new OptDecoder(s, act, hooks, dtype);
        RegisterComponents();
    }
}

/// <summary>
/// OPT (HF <c>OPTForCausalLM</c>: facebook/opt-125m, 1.3b, 2.7b, 6.7b, 13b, 30b, 66b) with TransformerLens hooks: token
/// embeddings plus learned positions (position p reads row p + 2 of <c>embed_positions</c>, OPT's offset; positions count
/// the real tokens as transformers does from the attention mask), pre-norm blocks (<c>self_attn_layer_norm</c>, attention
/// with biased q/k/v/out_proj; <c>final_layer_norm</c>, relu MLP <c>fc1</c>, <c>fc2</c>), the decoder's
/// <c>final_layer_norm</c>, and the unembedding tied to <c>embed_tokens</c> without bias. State-dict keys are the HF ones
/// (<c>model.decoder.layers.0.self_attn.q_proj.weight</c>; <c>decoder.*</c> as facebook's own files have them loads too).
/// </summary>
public sealed class OptModel : HookedTransformer
{
    private readonly OptCore model;
    private Linear? lm_head;
    private readonly OptSettings _s;

    internal OptModel(OptSettings s, string modelName, string configPath, ScalarType dtype)
        : base("OPTForCausalLM", new TransformerConfig
        {
            ModelName = modelName, Architecture = "opt", NLayers = s.NLayer, DModel = s.Hidden, NHeads = s.NHead,
            DHead = s.HeadDim, DMlp = s.Ffn, DVocab = s.VocabSize, NCtx = s.MaxPositions, Activation = s.Activation,
            LayerNormEps = OptSettings.Eps, Dtype = dtype,
            WordEmbedProjDim = s.Projected ? s.EmbedDim : null,
        }, new HookPoints(s.NLayer, hasPosEmbed: true, parallelAttnMlp: false, rotary: false, HfModuleNames.Opt, finalNorm: s.PreNorm))
    {
        _s = s;
        model = new OptCore(s, ActivationFunctions.Get(s.Activation, configPath), HookPoints, dtype);
        if (!s.TieEmbeddings) lm_head = new Linear(s.EmbedDim, s.VocabSize, false, dtype);
        RegisterComponents();
    }

    private protected override Tensor Embed(Tensor tokens, ForwardContext ctx)
    {
        var d = model.decoder;
        // hook_embed: embed_tokens' output, before project_in (word_embed_proj_dim wide), as TransformerLens's OPT bridge.
        var e = ctx.Hooks.Fire(HookPoints.Embed, d.embed_tokens.forward(tokens));
        if (d.project_in is not null) e = d.project_in.forward(e);
        var p = ctx.Hooks.Fire(HookPoints.PosEmbed, d.embed_positions.forward(ctx.Positions.add(TorchScalars.Of(OptSettings.PositionOffset), TorchScalars.One)));
        return e.add(p, TorchScalars.One);
    }

    private protected override Tensor RunBlock(int layer, Tensor resid, ForwardContext ctx) => model.decoder.layers[layer].forward(resid, ctx);

    /// <summary>final_layer_norm (do_layer_norm_before), then project_out (word_embed_proj_dim ≠ hidden_size), as
    /// ln_final.hook_normalized: the unembedding's input, word_embed_proj_dim wide with project_out.</summary>
    private protected override Tensor FinalNorm(Tensor resid, ForwardContext ctx)
    {
        var d = model.decoder;
        var x = d.final_layer_norm is null ? resid : d.final_layer_norm.Forward(resid, ctx.Hooks, HookPoints.LnFinalScale);
        if (d.project_out is not null) x = d.project_out.forward(x);
        return ctx.Hooks.Fire(HookPoints.LnFinal, x);
    }

    /// <summary>do_layer_norm_before=false (facebook/opt-350m): each layer's LayerNorms normalise the residual stream itself
    /// after the sublayer's output is added; there is no final_layer_norm.</summary>
    internal bool PostNorm => !_s.PreNorm;

    internal override void UntieEmbeddings()
    {
        if (lm_head is not null) return;
        lm_head = Linear.CopyOf(model.decoder.embed_tokens.Weight);
        register_module("lm_head", lm_head);
    }

    private protected override Tensor UnembedNormalized(Tensor x) =>
        lm_head is null ? matmul(x, model.decoder.embed_tokens.Weight.t()) : lm_head.forward(x);
}
