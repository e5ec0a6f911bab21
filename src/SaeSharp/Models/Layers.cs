using SaeSharp.Hooks;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace SaeSharp.Models;

// Building blocks whose parameters are created empty (the loader fills them) and named as in
// Hugging Face checkpoints ("weight", "bias").

/// <summary>HF GPT-2 <c>Conv1D</c>: y = x·W + b with W stored [in, out].</summary>
internal sealed class Conv1D : nn.Module
{
    private readonly Parameter weight;
    private readonly Parameter bias;
    private readonly long _nOut;

    public Conv1D(long nIn, long nOut, ScalarType dtype) : base(nameof(Conv1D))
    {
        _nOut = nOut;
        weight = new Parameter(empty(nIn, nOut, dtype: dtype), requires_grad: false);
        bias = new Parameter(zeros(nOut, dtype: dtype), requires_grad: false);
        RegisterComponents();
    }

    public Tensor Forward(Tensor x)
    {
        var shape = x.shape.ToArray();
        shape[^1] = _nOut;
        return addmm(bias, x.reshape(-1, x.shape[^1]), weight, 1, 1).view(shape);
    }
}

/// <summary>torch <c>nn.Linear</c>: y = x·Wᵀ + b with W stored [out, in].</summary>
internal sealed class Linear : nn.Module
{
    private readonly Parameter weight;
    private readonly Parameter? bias;

    public Linear(long nIn, long nOut, bool hasBias, ScalarType dtype) : base(nameof(Linear))
    {
        weight = new Parameter(empty(nOut, nIn, dtype: dtype), requires_grad: false);
        if (hasBias) bias = new Parameter(zeros(nOut, dtype: dtype), requires_grad: false);
        RegisterComponents();
    }

    public Tensor Weight => weight;

    public Tensor Forward(Tensor x) => nn.functional.linear(x, weight, bias);
}

/// <summary>torch <c>nn.LayerNorm</c> over the last dimension.</summary>
internal sealed class LayerNorm : nn.Module
{
    private readonly Parameter weight;
    private readonly Parameter bias;
    private readonly double _eps;
    private readonly long[] _shape;

    public LayerNorm(long d, double eps, ScalarType dtype) : base(nameof(LayerNorm))
    {
        _eps = eps;
        _shape = [d];
        weight = new Parameter(ones(d, dtype: dtype), requires_grad: false);
        bias = new Parameter(zeros(d, dtype: dtype), requires_grad: false);
        RegisterComponents();
    }

    public Tensor Forward(Tensor x) => nn.functional.layer_norm(x, _shape, weight, bias, _eps);
}

/// <summary>
/// RMSNorm over the last dimension, computed in float32: Llama / Qwen x̂·w with x̂ cast back to the input dtype first
/// (HF <c>LlamaRMSNorm</c>); Gemma x̂·(1 + w) in float32, then cast (HF <c>Gemma2RMSNorm</c>).
/// </summary>
internal sealed class RmsNorm : nn.Module
{
    private readonly Parameter weight;
    private readonly double _eps;
    private readonly bool _plusOne;

    public RmsNorm(long d, double eps, bool plusOne, ScalarType dtype) : base(nameof(RmsNorm))
    {
        _eps = eps;
        _plusOne = plusOne;
        weight = new Parameter(plusOne ? zeros(d, dtype: dtype) : ones(d, dtype: dtype), requires_grad: false);
        RegisterComponents();
    }

    public Tensor Forward(Tensor x)
    {
        using var scope = NewDisposeScope();
        var dtype = x.dtype;
        var x32 = x.to(ScalarType.Float32);
        var normed = x32 * (x32.pow(2).mean([-1L], keepdim: true) + _eps).rsqrt();
        var y = _plusOne
            ? (normed * (weight.to(ScalarType.Float32) + 1.0)).to(dtype)
            : weight * normed.to(dtype);
        return y.MoveToOuterDisposeScope();
    }
}

/// <summary>torch <c>nn.Embedding</c>: rows of <c>weight</c> [num, d] looked up by index.</summary>
internal sealed class Embedding : nn.Module
{
    private readonly Parameter weight;

    public Embedding(long num, long d, ScalarType dtype) : base(nameof(Embedding))
    {
        weight = new Parameter(empty(num, d, dtype: dtype), requires_grad: false);
        RegisterComponents();
    }

    public Tensor Weight => weight;

    public Tensor Forward(Tensor ids)
    {
        var shape = ids.shape.Append(weight.shape[1]).ToArray();
        return weight.index_select(0, ids.reshape(-1)).view(shape);
    }
}

/// <summary>Activation functions named as in Hugging Face <c>ACT2FN</c>.</summary>
internal static class ActivationFunctions
{
    public static readonly string[] Supported = ["gelu_new", "gelu_pytorch_tanh", "gelu_fast", "gelu", "relu", "silu", "swish"];

    public static Func<Tensor, Tensor> Get(string name, string configPath) => name switch
    {
        // 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³))), as HF NewGELUActivation and TransformerLens gelu_new.
        "gelu_new" or "gelu_pytorch_tanh" or "gelu_fast" => GeluTanh,
        "gelu" => x => nn.functional.gelu(x),
        "relu" => x => nn.functional.relu(x),
        "silu" or "swish" => x => nn.functional.silu(x),
        _ => throw new SaeSharpException($"{configPath}: activation '{name}' is not supported (supported: {string.Join(", ", Supported)})"),
    };

    private static readonly double Sqrt2OverPi = Math.Sqrt(2.0 / Math.PI);

    public static Tensor GeluTanh(Tensor x)
    {
        using var scope = NewDisposeScope();
        var inner = (x + x.pow(3) * 0.044715) * Sqrt2OverPi;
        return (x * 0.5 * (inner.tanh() + 1.0)).MoveToOuterDisposeScope();
    }
}

/// <summary>What every block needs for one forward pass: hooks, attention mask, positions, KV cache.</summary>
internal sealed class ForwardContext
{
    public required HookRunner Hooks { get; init; }
    /// <summary>[batch, 1, query, key] bool: true where the query may attend to the key (causal and not padding).</summary>
    public required Tensor Allowed { get; init; }
    /// <summary>[batch, query] int64 position of each new token (padding-aware, as HF computes from the attention mask).</summary>
    public required Tensor Positions { get; init; }
    public KvCache? Kv { get; init; }
    /// <summary>Rotary cos / sin [batch, pos, 1, rotary_dim] of this pass (rotary models), set by the embedding step.</summary>
    public Tensor? RotaryCos { get; set; }
    public Tensor? RotarySin { get; set; }
}

/// <summary>
/// Keys and values of the tokens processed so far (per layer, [batch, head, pos, d_head]) and their
/// attention mask, for incremental decoding. Owns its tensors.
/// </summary>
internal sealed class KvCache : IDisposable
{
    private readonly Tensor?[] _k;
    private readonly Tensor?[] _v;

    internal KvCache(int nLayers)
    {
        _k = new Tensor?[nLayers];
        _v = new Tensor?[nLayers];
    }

    /// <summary>Tokens already in the cache.</summary>
    public long Length { get; private set; }

    /// <summary>[batch, Length] attention mask of the cached tokens (1 = real token), or null before the first step.</summary>
    internal Tensor? Mask { get; private set; }

    internal void SetMask(Tensor mask)
    {
        Mask?.Dispose();
        Mask = mask.alias().DetachFromDisposeScope();
    }

    /// <summary>Appends this step's keys and values for one layer; returns all keys and values so far.</summary>
    internal (Tensor K, Tensor V) Append(int layer, Tensor k, Tensor v)
    {
        Tensor kAll = _k[layer] is { } pk ? cat([pk, k], 2) : k.alias();
        Tensor vAll = _v[layer] is { } pv ? cat([pv, v], 2) : v.alias();
        _k[layer]?.Dispose();
        _v[layer]?.Dispose();
        _k[layer] = kAll.alias().DetachFromDisposeScope();
        _v[layer] = vAll.alias().DetachFromDisposeScope();
        return (kAll, vAll);
    }

    internal void Advance(long n) => Length += n;

    public void Dispose()
    {
        for (int i = 0; i < _k.Length; i++)
        {
            _k[i]?.Dispose();
            _v[i]?.Dispose();
            _k[i] = _v[i] = null;
        }
        Mask?.Dispose();
        Mask = null;
    }
}

/// <summary>Scaled dot-product attention shared by the architectures, with the pattern and z hooks.</summary>
internal static class AttentionCore
{
    /// <summary>
    /// q, k, v: [batch, head, pos, d_head] (k, v for the new tokens only). Returns z flattened to [batch, pos, head·d_head].
    /// <para>Grouped-query attention: k and v may have fewer heads than q (a divisor); each kv head serves
    /// n_heads / n_kv_heads consecutive query heads (HF <c>repeat_kv</c>). The cache keeps the unrepeated heads.
    /// <paramref name="softCap"/>: scores become cap·tanh(scores/cap) before masking (Gemma 2).
    /// <paramref name="slidingWindow"/>: a query sees only the keys less than that many positions back (Gemma 2 local layers).</para>
    /// </summary>
    public static Tensor Attend(Tensor q, Tensor k, Tensor v, int layer, double scale, ForwardContext ctx, BlockHookNames names,
        double? softCap = null, int? slidingWindow = null)
    {
        if (ctx.Kv is { } kv) (k, v) = kv.Append(layer, k, v);
        long groups = q.shape[1] / k.shape[1];
        if (groups > 1)
        {
            k = k.repeat_interleave(groups, 1);
            v = v.repeat_interleave(groups, 1);
        }
        var scores = matmul(q, k.transpose(-1, -2)) * scale;
        var dtype = q.dtype;
        // Softmax in float32 (float64 models keep float64); masked scores get float32's minimum (as HF), so a fully
        // masked row stays finite.
        var s32 = dtype == ScalarType.Float64 ? scores : scores.to(ScalarType.Float32);
        if (softCap is double cap) s32 = (s32 / cap).tanh() * cap;
        var allowed = ctx.Allowed;
        if (slidingWindow is int w)
        {
            long nq = allowed.shape[^2], nk = allowed.shape[^1];
            var qi = (arange(nq, device: allowed.device) + (nk - nq)).unsqueeze(1);
            allowed = allowed.logical_and((qi - arange(nk, device: allowed.device).unsqueeze(0)).lt(w));
        }
        s32 = s32.masked_fill(allowed.logical_not(), float.MinValue);
        var pattern = s32.softmax(-1).to(dtype);
        pattern = ctx.Hooks.Fire(names.Pattern, pattern);
        var z = matmul(pattern, v).transpose(1, 2); // [batch, pos, head, d_head]
        z = ctx.Hooks.Fire(names.Z, z);
        return z.reshape(z.shape[0], z.shape[1], -1);
    }
}
