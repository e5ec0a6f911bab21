using SaeSharp.Hooks;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace SaeSharp.Models;

/// <summary>HF <c>LlamaAttention</c> (and Mistral, Qwen2/3, Gemma 1/2/3) of one layer: q_proj, k_proj, v_proj (grouped-query), optional
/// q_norm/k_norm, rotary (Gemma 3's sliding layers: their own frequencies), o_proj.</summary>
internal sealed class DecoderAttention : nn.Module<Tensor, ForwardContext, Tensor>
{
    private readonly Linear q_proj, k_proj, v_proj, o_proj;
    private readonly RmsNorm? q_norm, k_norm;
    private readonly DecoderSettings _s;
    private readonly int _layer;
    private readonly BlockHookNames _names;

    public DecoderAttention(DecoderSettings s, int layer, BlockHookNames names, ScalarType dtype) : base("self_attn")
    {
        (_s, _layer, _names) = (s, layer, names);
        q_proj = new Linear(s.Hidden, s.NHead * s.HeadDim, s.QkvBias, dtype);
        k_proj = new Linear(s.Hidden, s.NKvHead * s.HeadDim, s.QkvBias, dtype);
        v_proj = new Linear(s.Hidden, s.NKvHead * s.HeadDim, s.QkvBias, dtype);
        o_proj = new Linear(s.NHead * s.HeadDim, s.Hidden, s.OBias, dtype);
        if (s.QkNorm)
        {
            q_norm = new RmsNorm(s.HeadDim, s.Eps, s.Gemma, dtype);
            k_norm = new RmsNorm(s.HeadDim, s.Eps, s.Gemma, dtype);
        }
        RegisterComponents();
    }

    public override Tensor forward(Tensor x, ForwardContext ctx)
    {
        long b = x.shape[0], s = x.shape[1];
        var st = _s;
        bool sliding = st.SlidingLayers[_layer];
        var z = AttentionCore.AttendHeads(q_proj.forward(x).view(b, s, st.NHead, st.HeadDim), k_proj.forward(x).view(b, s, st.NKvHead, st.HeadDim),
            v_proj.forward(x).view(b, s, st.NKvHead, st.HeadDim), _layer, st.AttnScale, ctx, _names, st.RotaryDim, q_norm, k_norm,
            st.AttnSoftCap, sliding ? st.SlidingWindow : null, localRotary: sliding);
        return o_proj.forward(z);
    }
}

/// <summary>Gated MLP: down(act(gate(x)) · up(x)) (SwiGLU with silu, GeGLU with tanh-GELU).</summary>
internal sealed class GatedMlp : nn.Module<Tensor, ForwardContext, Tensor>
{
    private readonly Linear gate_proj, up_proj, down_proj;
    private readonly Func<Tensor, Tensor> _act;
    private readonly BlockHookNames _names;

    public GatedMlp(DecoderSettings s, Func<Tensor, Tensor> act, BlockHookNames names, ScalarType dtype) : base("mlp")
    {
        (_act, _names) = (act, names);
        gate_proj = new Linear(s.Hidden, s.Intermediate, s.MlpBias, dtype);
        up_proj = new Linear(s.Hidden, s.Intermediate, s.MlpBias, dtype);
        down_proj = new Linear(s.Intermediate, s.Hidden, s.MlpBias, dtype);
        RegisterComponents();
    }

    public override Tensor forward(Tensor x, ForwardContext ctx)
    {
        var h = ctx.Hooks;
        var gate = h.Fire(_names.MlpPre, gate_proj.forward(x));
        var up = h.Fire(_names.MlpPreLinear, up_proj.forward(x));
        var post = h.Fire(_names.MlpPost, _act(gate) * up);
        return down_proj.forward(post);
    }
}

/// <summary>HF decoder layer <c>layers.{layer}</c>: input_layernorm, self_attn, post_attention_layernorm, mlp in sequence
/// (Gemma 2/3: post_attention_layernorm on the attention output, pre/post_feedforward_layernorm around the MLP).</summary>
internal sealed class DecoderLayer : nn.Module<Tensor, ForwardContext, Tensor>
{
    private readonly RmsNorm input_layernorm;
    private readonly RmsNorm post_attention_layernorm;
    private readonly RmsNorm? pre_feedforward_layernorm;
    private readonly RmsNorm? post_feedforward_layernorm;
    private readonly DecoderAttention self_attn;
    private readonly GatedMlp mlp;
    private readonly BlockHookNames _names;

    public DecoderLayer(DecoderSettings s, int layer, Func<Tensor, Tensor> act, BlockHookNames names, ScalarType dtype) : base("layer")
    {
        _names = names;
        input_layernorm = new RmsNorm(s.Hidden, s.Eps, s.Gemma, dtype);
        post_attention_layernorm = new RmsNorm(s.Hidden, s.Eps, s.Gemma, dtype);
        if (s.PostNorms)
        {
            pre_feedforward_layernorm = new RmsNorm(s.Hidden, s.Eps, true, dtype);
            post_feedforward_layernorm = new RmsNorm(s.Hidden, s.Eps, true, dtype);
        }
        self_attn = new DecoderAttention(s, layer, names, dtype);
        mlp = new GatedMlp(s, act, names, dtype);
        RegisterComponents();
    }

    public override Tensor forward(Tensor resid, ForwardContext ctx)
    {
        // Gemma 2/3: post_attention_layernorm normalises the attention output; pre_feedforward_layernorm is ln2.
        if (pre_feedforward_layernorm is { } preFf && post_feedforward_layernorm is { } postFf)
            return ResidualBlock.Sequential(resid, ctx, _names, input_layernorm.forward,
                x => post_attention_layernorm.forward(self_attn.forward(x, ctx)), preFf.forward, x => postFf.forward(mlp.forward(x, ctx)));
        return ResidualBlock.Sequential(resid, ctx, _names, input_layernorm.forward, x => self_attn.forward(x, ctx),
            post_attention_layernorm.forward, x => mlp.forward(x, ctx));
    }
}

/// <summary>The <c>model</c> submodule of HF <c>*ForCausalLM</c>: embed_tokens, layers.{i}, norm.</summary>
internal sealed class DecoderCore : nn.Module
{
    public readonly Embedding embed_tokens;
    public readonly ModuleList<DecoderLayer> layers;
    public readonly RmsNorm norm;

    public DecoderCore(DecoderSettings s, Func<Tensor, Tensor> act, HookPoints hooks, ScalarType dtype) : base("model")
    {
        embed_tokens = new Embedding(s.VocabSize, s.Hidden, dtype);
        layers = new ModuleList<DecoderLayer>(Enumerable.Range(0, s.NLayer).Select(i => new DecoderLayer(s, i, act, hooks.Blocks[i], dtype)).ToArray());
        norm = new RmsNorm(s.Hidden, s.Eps, s.Gemma, dtype);
        RegisterComponents();
    }
}

/// <summary>
/// Llama-layout decoders with TransformerLens hooks: Llama 2/3.x (TinyLlama, SmolLM2; rope_scaling llama3), Mistral
/// (sliding_window on every layer when set), Qwen2/2.5 (q/k/v biases), Qwen3 (per-head q/k RMSNorm), Gemma 1 (√d_model
/// embedding scale, (1+w) RMSNorm, GeGLU, multi-query attention, no post-norms, caps or window), Gemma 2 (√d_model embedding scale, (1+w) RMSNorm, post-norms,
/// GeGLU, query_pre_attn_scalar, attention and final soft caps, sliding window on alternating layers) and Gemma 3
/// (as Gemma 2 without default soft caps and never an attention cap, as transformers, plus (1+w) q/k RMSNorm, sliding_window_pattern or layer_types, and a separate
/// RoPE base for the sliding layers; <c>Gemma3ForConditionalGeneration</c> checkpoints load their language model only).
/// State-dict keys are the HF ones (<c>model.layers.0.self_attn.q_proj.weight</c>, <c>lm_head.weight</c> when untied).
/// <para><c>hook_embed</c> is what enters the residual stream (for Gemma, already × √d_model, as TransformerLens folds
/// the scale into W_E). With grouped-query attention <c>attn.hook_k/v/rot_k</c> have n_key_value_heads heads; hook_q/k
/// precede Qwen3's and Gemma 3's q/k norms. For Gemma 2/3, <c>hook_attn_out</c> / <c>hook_mlp_out</c> are after the
/// post-norms: exactly what is added to the residual stream.</para>
/// </summary>
public sealed class LlamaFamilyModel : HookedTransformer
{
    private readonly DecoderCore model;
    private readonly Linear? lm_head;
    private readonly DecoderSettings _s;
    private readonly float[] _invFreq;
    private readonly float[]? _localInvFreq;

    internal LlamaFamilyModel(DecoderSettings s, string modelName, string configPath, ScalarType dtype)
        : base(ArchitectureName(s.ModelType), new TransformerConfig
        {
            ModelName = modelName, Architecture = s.ModelType, NLayers = s.NLayer, DModel = s.Hidden, NHeads = s.NHead,
            NKvHeads = s.NKvHead, DHead = s.HeadDim, DMlp = s.Intermediate, DVocab = s.VocabSize, NCtx = s.MaxPositions,
            Activation = s.Activation, LayerNormEps = s.Eps, RotaryDim = s.RotaryDim, RotaryBase = s.RopeTheta, Dtype = dtype,
            GatedMlp = true, NormalizationType = "RMS", AttnScoresSoftCap = s.AttnSoftCap, OutputLogitsSoftCap = s.FinalSoftCap,
            SlidingWindow = s.SlidingWindow, RotaryBaseLocal = s.LocalRopeTheta,
        }, new HookPoints(s.NLayer, hasPosEmbed: false, parallelAttnMlp: false, rotary: true,
            s.ModelType == "gemma3" ? HfModuleNames.Gemma3Conditional : s.PostNorms ? HfModuleNames.Gemma2 : HfModuleNames.Llama, gatedMlp: true))
    {
        _s = s;
        model = new DecoderCore(s, ActivationFunctions.Get(s.Activation, configPath), HookPoints, dtype);
        if (!s.TieEmbeddings) lm_head = new Linear(s.Hidden, s.VocabSize, false, dtype);
        RegisterComponents();
        _invFreq = s.InvFreq.Select(x => (float)x).ToArray();
        _localInvFreq = s.LocalInvFreq?.Select(x => (float)x).ToArray();
    }

    internal static string ArchitectureName(string modelType) => modelType switch
    {
        "mistral" => "MistralForCausalLM",
        "qwen2" => "Qwen2ForCausalLM",
        "qwen3" => "Qwen3ForCausalLM",
        "gemma" => "GemmaForCausalLM",
        "gemma2" => "Gemma2ForCausalLM",
        "gemma3_text" => "Gemma3ForCausalLM",
        "gemma3" => "Gemma3ForConditionalGeneration",
        _ => "LlamaForCausalLM",
    };

    private protected override Tensor Embed(Tensor tokens, ForwardContext ctx)
    {
        (ctx.RotaryCos, ctx.RotarySin) = Rotary.CosSin(ctx.Positions, tensor(_invFreq, device: ctx.Positions.device), Config.Dtype);
        if (_localInvFreq is not null)
            ctx.LocalRotary = Rotary.CosSin(ctx.Positions, tensor(_localInvFreq, device: ctx.Positions.device), Config.Dtype);
        var e = model.embed_tokens.forward(tokens);
        // HF Gemma 1 and 2: the normaliser √hidden_size is a tensor of the hidden states' dtype; Gemma 3: a float32 tensor
        // cast to the weights' dtype.
        if (_s.Gemma)
            e = e * (_s.Gemma3 ? tensor((float)Math.Sqrt(_s.Hidden)).to(Config.Dtype) : tensor(Math.Sqrt(_s.Hidden), dtype: Config.Dtype));
        return ctx.Hooks.Fire(HookPoints.Embed, e);
    }

    private protected override Tensor RunBlock(int layer, Tensor resid, ForwardContext ctx) => model.layers[layer].forward(resid, ctx);

    private protected override Tensor FinalNorm(Tensor resid, ForwardContext ctx) =>
        ctx.Hooks.Fire(HookPoints.LnFinal, model.norm.forward(resid));

    private protected override Tensor UnembedNormalized(Tensor x)
    {
        var logits = lm_head is not null ? lm_head.forward(x) : nn.functional.linear(x, model.embed_tokens.Weight);
        if (_s.FinalSoftCap is double cap)
        {
            using var capScalar = cap.ToScalar();
            logits = (logits.to(ScalarType.Float32) / capScalar).tanh() * capScalar;
        }
        return logits;
    }
}
