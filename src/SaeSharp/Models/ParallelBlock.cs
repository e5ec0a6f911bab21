using SaeSharp.Hooks;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace SaeSharp.Models;

/// <summary>The Hugging Face module names of a parallel-block family (<see cref="ParallelBlockLayout"/>): the model's
/// core (<c>transformer</c> / <c>model</c>), its embedding, layer list and final norm, a layer's one norm and attention,
/// the attention's output projection, and the MLP's two layers. The state-dict keys are these names.</summary>
internal sealed record ParallelBlockNames(string Core, string Embed, string Layers, string FinalNorm, string Ln, string Attn,
    string Out, string FcIn, string FcOut)
{
    /// <summary>HF <c>GPTJForCausalLM</c>: transformer.wte, transformer.h.N.{ln_1, attn.{q,k,v,out}_proj, mlp.fc_in/fc_out}, transformer.ln_f.</summary>
    public static readonly ParallelBlockNames GptJ = new("transformer", "wte", "h", "ln_f", "ln_1", "attn", "out_proj", "fc_in", "fc_out");

    /// <summary>HF <c>PhiForCausalLM</c>: model.embed_tokens, model.layers.N.{input_layernorm, self_attn.{q,k,v}_proj and dense,
    /// mlp.fc1/fc2}, model.final_layernorm.</summary>
    public static readonly ParallelBlockNames Phi = new("model", "embed_tokens", "layers", "final_layernorm", "input_layernorm", "self_attn",
        "dense", "fc1", "fc2");
}

/// <summary>What the parallel-block families (GPT-J, Phi) share, read from each family's own settings: widths, the
/// attention's biases (GPT-J none, Phi q/k/v and dense), Phi's grouped-query heads and qk_layernorm, the rotary dims and
/// GPT-J's adjacent-pair rotary. The MLP's two layers always have biases.</summary>
internal sealed record ParallelBlockLayout(ParallelBlockNames Names, int Hidden, int NHead, int NKvHead, int Mlp, int VocabSize,
    double Eps, int RotaryDim, bool AttnBias, bool QkLayerNorm = false, bool InterleavedRotary = false)
{
    public int HeadDim => Hidden / NHead;
}

/// <summary>The attention of a parallel block: <c>q_proj</c>, <c>k_proj</c>, <c>v_proj</c> (k/v with n_kv_heads heads),
/// the output projection under the family's name (GPT-J <c>out_proj</c>, Phi <c>dense</c>), biases as the layout says
/// (weight processing's fold_ln gives GPT-J's q/k/v one, fold_value_biases its out_proj); with qk_layernorm (Phi)
/// <c>q_layernorm</c> / <c>k_layernorm</c> (LayerNorm over head_dim, per head, after hook_q / hook_k); rotary on the
/// first rotary_dim dims of each head (GPT-J: adjacent pairs, rotate_every_two; Phi: rotate_half); scores / √head_dim.</summary>
internal sealed class ParallelAttention : nn.Module<Tensor, ForwardContext, Tensor>
{
    private readonly Linear _q, _k, _v, _out;
    private readonly LayerNorm? _qNorm, _kNorm;
    private readonly ParallelBlockLayout _l;
    private readonly int _layer;
    private readonly BlockHookNames _names;

    public ParallelAttention(ParallelBlockLayout l, int layer, BlockHookNames names, ScalarType dtype) : base(l.Names.Attn)
    {
        (_l, _layer, _names) = (l, layer, names);
        _q = new Linear(l.Hidden, l.NHead * l.HeadDim, l.AttnBias, dtype);
        _k = new Linear(l.Hidden, l.NKvHead * l.HeadDim, l.AttnBias, dtype);
        _v = new Linear(l.Hidden, l.NKvHead * l.HeadDim, l.AttnBias, dtype);
        _out = new Linear(l.NHead * l.HeadDim, l.Hidden, l.AttnBias, dtype);
        // Registered by name, not by field (RegisterComponents), so that each family's checkpoint keys are its own.
        register_module("q_proj", _q);
        register_module("k_proj", _k);
        register_module("v_proj", _v);
        register_module(l.Names.Out, _out);
        if (l.QkLayerNorm)
        {
            _qNorm = new LayerNorm(l.HeadDim, l.Eps, dtype);
            _kNorm = new LayerNorm(l.HeadDim, l.Eps, dtype);
            register_module("q_layernorm", _qNorm);
            register_module("k_layernorm", _kNorm);
        }
    }

    public override Tensor forward(Tensor x, ForwardContext ctx)
    {
        var l = _l;
        var (q, k, v) = AttentionCore.SeparateQkv(_q, _k, _v, l.NHead, l.NKvHead, l.HeadDim, x, ctx);
        var z = AttentionCore.AttendHeads(q, k, v, _layer, 1.0 / Math.Sqrt(l.HeadDim), ctx, _names, l.RotaryDim, _qNorm, _kNorm,
            interleavedRotary: l.InterleavedRotary);
        return AttentionCore.Project(z, l.NHead, _out.InOut, _out.forward, ctx, _names);
    }
}

/// <summary>The MLP of a parallel block (HF <c>GPTJMLP</c>: <c>fc_in</c>, <c>fc_out</c>; <c>PhiMLP</c>: <c>fc1</c>,
/// <c>fc2</c>): the first layer, the activation (gelu_new), the second, both with bias.</summary>
internal sealed class ParallelMlp : nn.Module<Tensor, ForwardContext, Tensor>
{
    private readonly Linear _in, _out;
    private readonly Func<Tensor, Tensor> _act;
    private readonly BlockHookNames _names;

    public ParallelMlp(ParallelBlockLayout l, Func<Tensor, Tensor> act, BlockHookNames names, ScalarType dtype) : base("mlp")
    {
        (_act, _names) = (act, names);
        _in = new Linear(l.Hidden, l.Mlp, true, dtype);
        _out = new Linear(l.Mlp, l.Hidden, true, dtype);
        register_module(l.Names.FcIn, _in);
        register_module(l.Names.FcOut, _out);
    }

    public override Tensor forward(Tensor x, ForwardContext ctx) => ResidualBlock.Mlp(x, ctx, _names, _in, _act, _out);
}

/// <summary>A parallel block (HF <c>GPTJBlock</c> <c>h.{layer}</c>, <c>PhiDecoderLayer</c> <c>layers.{layer}</c>): one
/// LayerNorm (<c>ln_1</c> / <c>input_layernorm</c>) whose output both the attention and the MLP read, their outputs added
/// to the residual together (<see cref="ResidualBlock.Parallel"/>).</summary>
internal sealed class ParallelBlock : nn.Module<Tensor, ForwardContext, Tensor>
{
    private readonly LayerNorm _ln;
    private readonly ParallelAttention _attn;
    private readonly ParallelMlp _mlp;
    private readonly BlockHookNames _names;
    private readonly SplitAttentionInputs.Heads _heads;

    public ParallelBlock(ParallelBlockLayout l, int layer, Func<Tensor, Tensor> act, BlockHookNames names, ScalarType dtype) : base("block")
    {
        (_names, _heads) = (names, new(l.NHead, l.NKvHead));
        _ln = new LayerNorm(l.Hidden, l.Eps, dtype);
        _attn = new ParallelAttention(l, layer, names, dtype);
        _mlp = new ParallelMlp(l, act, names, dtype);
        register_module(l.Names.Ln, _ln);
        register_module(l.Names.Attn, _attn);
        register_module("mlp", _mlp);
    }

    /// <summary>resid + attn(ln(resid)) + mlp(ln(resid)).</summary>
    public override Tensor forward(Tensor resid, ForwardContext ctx) =>
        ResidualBlock.Parallel(resid, ctx, _names, _heads, _ln, x => _attn.forward(x, ctx), x => _mlp.forward(x, ctx));
}

/// <summary>The core of a parallel-block model (HF GPT-J's <c>transformer</c>: wte, h.{i}, ln_f; Phi's <c>model</c>:
/// embed_tokens, layers.{i}, final_layernorm).</summary>
internal sealed class ParallelCore : nn.Module
{
    public readonly Embedding Embed;
    public readonly ModuleList<ParallelBlock> Layers;
    public readonly LayerNorm FinalNorm;

    public ParallelCore(ParallelBlockLayout l, int nLayers, Func<Tensor, Tensor> act, HookPoints hooks, ScalarType dtype) : base(l.Names.Core)
    {
        Embed = new Embedding(l.VocabSize, l.Hidden, dtype);
        Layers = new ModuleList<ParallelBlock>(Enumerable.Range(0, nLayers).Select(i => new ParallelBlock(l, i, act, hooks.Blocks[i], dtype)).ToArray());
        FinalNorm = new LayerNorm(l.Hidden, l.Eps, dtype);
        register_module(l.Names.Embed, Embed);
        register_module(l.Names.Layers, Layers);
        register_module(l.Names.FinalNorm, FinalNorm);
    }
}
