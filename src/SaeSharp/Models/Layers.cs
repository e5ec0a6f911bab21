using SaeSharp.Hooks;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace SaeSharp.Models;

// Building blocks whose parameters are created empty (the loader fills them) and named as in
// Hugging Face checkpoints ("weight", "bias").

/// <summary>HF GPT-2 <c>Conv1D</c>: y = x·W + b with W stored [in, out].</summary>
internal sealed class Conv1D : nn.Module<Tensor, Tensor>
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

    /// <summary>W [in, out] and b [out].</summary>
    public (Tensor WeightInOut, Tensor? Bias) InOut => (weight, bias);

    public override Tensor forward(Tensor x)
    {
        var shape = x.shape.ToArray();
        shape[^1] = _nOut;
        return addmm(bias, x.reshape(-1, x.shape[^1]), weight, 1, 1).view(shape);
    }
}

/// <summary>torch <c>nn.Linear</c>: y = x·Wᵀ + b with W stored [out, in].</summary>
internal sealed class Linear : nn.Module<Tensor, Tensor>
{
    private readonly Parameter weight;
    private Parameter? bias;

    public Linear(long nIn, long nOut, bool hasBias, ScalarType dtype) : base(nameof(Linear))
    {
        weight = new Parameter(empty(nOut, nIn, dtype: dtype), requires_grad: false);
        if (hasBias) bias = new Parameter(zeros(nOut, dtype: dtype), requires_grad: false);
        RegisterComponents();
    }

    public Tensor Weight => weight;

    /// <summary>A layer without bias whose weight is a copy of <paramref name="weight"/> [out, in] (a tied unembedding made
    /// its own), owned by whatever module registers it, not by the caller's dispose scope.</summary>
    public static Linear CopyOf(Tensor weight)
    {
        var layer = new Linear(weight.shape[1], weight.shape[0], false, weight.dtype);
        foreach (var (_, t) in layer.named_parameters()) t.DetachFromDisposeScope();
        using (no_grad()) layer.weight.copy_(weight);
        return layer;
    }

    /// <summary>The bias, first registered as zeros when the layer has none (TransformerLens's b_O, which every
    /// HookedTransformer has and <c>fold_value_biases</c> writes into).</summary>
    internal Parameter EnsureBias()
    {
        if (bias is null)
        {
            bias = new Parameter(zeros(weight.shape[0], dtype: weight.dtype, device: weight.device), requires_grad: false);
            bias.DetachFromDisposeScope();   // owned by the layer, whatever scope the caller runs in
            register_parameter("bias", bias);
        }
        return bias;
    }

    /// <summary>Wᵀ [in, out] (a view) and b [out].</summary>
    public (Tensor WeightInOut, Tensor? Bias) InOut => (weight.t(), bias);

    public override Tensor forward(Tensor x) => nn.functional.linear(x, weight, bias);
}

/// <summary>
/// A norm with TransformerLens's <c>hook_scale</c> [batch, pos, 1]: the divisor √(var + eps) (LayerNorm, of the centred input)
/// or √(mean x² + eps) (RMSNorm), in float32 (float64 models: float64) as TransformerLens computes it. The scale is
/// built only when something reads that hook; when a hook function (or an SAE) may replace it, the norm is computed from
/// it explicitly (an edited scale changes the output and its gradient flows through; the values then differ from the
/// fused kernel's by rounding), otherwise, caching included, by the fused kernel.
/// </summary>
internal abstract class HookedNorm : nn.Module<Tensor, Tensor>
{
    protected HookedNorm(string name) : base(name) { }

    public sealed override Tensor forward(Tensor x) => Forward(x, HookRunner.None, null);

    /// <summary>The norm of <paramref name="x"/>, firing <paramref name="scaleHook"/> (<c>blocks.{i}.ln1.hook_scale</c>, …) on
    /// its scale when <paramref name="hooks"/> wants it.</summary>
    public abstract Tensor Forward(Tensor x, HookRunner hooks, string? scaleHook);

    /// <summary>The scale of <paramref name="x"/> (float32 or float64, already centred for a LayerNorm), frozen as
    /// circuit-tracer freezes <c>hook_scale</c> under <see cref="NormScales.Frozen"/> when <paramref name="used"/> (the norm
    /// divides by it), then through the hook.</summary>
    protected static Tensor HookedScale(Tensor x, double eps, HookRunner hooks, string scaleHook, bool used = true)
    {
        using var e = eps.ToScalar();
        var scale = x.pow(TorchScalars.Of(2)).mean([-1L], keepdim: true).add(e, TorchScalars.One).sqrt();
        if (used && NormScales.Frozen) scale = NormScales.Values?.Take(scale.detach(), "a norm's scale") ?? scale.detach();
        return hooks.Fire(scaleHook, scale);
    }

    /// <summary>True when the norm must divide by the hooked scale (a hook may replace it); when the hook is only read
    /// (cached), fires it and returns false.</summary>
    protected static bool ScaleReplaceable(Tensor x, bool centre, double eps, HookRunner hooks, string? scaleHook)
    {
        if (scaleHook is null || !hooks.Wants(scaleHook)) return false;
        if (hooks.MayReplace(scaleHook)) return true;
        using var scope = NewDisposeScope();
        var wide = x.dtype == ScalarType.Float64 ? x : x.to(ScalarType.Float32);
        HookedScale(centre ? wide - wide.mean([-1L], keepdim: true) : wide, eps, hooks, scaleHook, used: false);
        return false;
    }
}

/// <summary>torch <c>nn.LayerNorm</c> over the last dimension.</summary>
internal sealed class LayerNorm : HookedNorm
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

    public override Tensor Forward(Tensor x, HookRunner hooks, string? scaleHook)
    {
        if (!ScaleReplaceable(x, true, _eps, hooks, scaleHook)) return NormScales.Freeze(x, nn.functional.layer_norm(x, _shape, weight, bias, _eps), _eps, weight);
        using var scope = NewDisposeScope();
        var wide = x.dtype == ScalarType.Float64 ? x : x.to(ScalarType.Float32);
        var centred = wide - wide.mean([-1L], keepdim: true);
        var normed = centred / HookedScale(centred, _eps, hooks, scaleHook!);
        return (normed * weight.to(normed.dtype)).add(bias.to(normed.dtype), TorchScalars.One).to(x.dtype).MoveToOuterDisposeScope();
    }
}

/// <summary>
/// circuit-tracer's frozen norm scales (its <c>stop_gradient</c> on every <c>hook_scale</c>), for a run with
/// <see cref="RunOptions.FreezeAttentionAndNorms"/>: the norm's value is unchanged, but its backward treats the scale
/// √(var + eps) (LayerNorm) or √(mean x² + eps) (RMSNorm) as a constant, so the norm is linear in its input.
/// </summary>
internal static class NormScales
{
    /// <summary>Set on the thread running a forward pass with <see cref="RunOptions.FreezeAttentionAndNorms"/>.</summary>
    [ThreadStatic] internal static bool Frozen;

    /// <summary>Set with <see cref="Frozen"/> when the run records its patterns and scales, or replays those of an earlier
    /// run (<see cref="RunOptions.FrozenValues"/>).</summary>
    [ThreadStatic] internal static FrozenValues? Values;

    /// <summary>A LayerNorm's output <paramref name="y"/> of <paramref name="x"/> with the backward of a constant scale:
    /// y + (ℓ − ℓ.detach()), ℓ = (x − mean x)/σ.detach()·w (σ² the biased variance plus <paramref name="eps"/>). Without
    /// <see cref="Frozen"/>, or without gradient and <see cref="Values"/> (CLT interventions record and replay without one), y itself. Replaying <see cref="Values"/>, σ is the recorded run's, in the value
    /// too: y − ℓ + ℓ_recorded.</summary>
    public static Tensor Freeze(Tensor x, Tensor y, double eps, Tensor? weight)
    {
        if (!Frozen || (!x.requires_grad && Values is null)) return y;   // recording or replaying: also without gradient
        using var scope = NewDisposeScope();
        using var e = eps.ToScalar();
        var xc = x.to(y.dtype);
        var centred = xc - xc.mean([-1L], keepdim: true);
        var sigma = centred.pow(TorchScalars.Of(2)).mean([-1L], keepdim: true).add(e, TorchScalars.One).sqrt().detach();
        var kept = Values?.Take(sigma, "a norm's scale") ?? sigma;
        var lin = centred / kept;
        if (weight is not null) lin = lin * weight.to(lin.dtype);
        if (ReferenceEquals(kept, sigma)) return y.detach().add(lin - lin.detach(), TorchScalars.One).MoveToOuterDisposeScope();
        var current = centred.detach() / sigma;
        if (weight is not null) current = current * weight.to(current.dtype);
        return (y.detach() - current).add(lin, TorchScalars.One).MoveToOuterDisposeScope();
    }
}

/// <summary>
/// The attention patterns and norm scales of a frozen run (<see cref="RunOptions.FreezeAttentionAndNorms"/>), in the order
/// the run computes them: the first run given it records them, and after <see cref="Replay"/> each later run uses them in
/// place of its own, value and backward, so the frozen replacement model stays the clean run's (a linear path from the
/// features to the last norm's output for integrated gradients). A run that computes a different shape is an error.
/// </summary>
internal sealed class FrozenValues : IDisposable
{
    private readonly List<Tensor> _values = [];
    private int _next;
    private bool _replaying;

    /// <summary>From now on, every run replays the recorded values from the first.</summary>
    public void Replay()
    {
        _replaying = true;
        _next = 0;
    }

    /// <summary>Recording: keeps a copy of <paramref name="current"/> and returns it. Replaying: the recorded value at this point.</summary>
    public Tensor Take(Tensor current, string what)
    {
        if (!_replaying)
        {
            _values.Add(current.detach().clone().DetachFromDisposeScope());
            return current;
        }
        if (_next >= _values.Count)
            throw new SaeSharpException($"frozen replay: {what} number {_next} was not recorded (the run differs from the recorded one)");
        var t = _values[_next++];
        if (!t.shape.SequenceEqual(current.shape))
            throw new SaeSharpException($"frozen replay: {what} has shape [{string.Join(", ", current.shape)}], recorded [{string.Join(", ", t.shape)}]");
        return t.alias();
    }

    public void Dispose()
    {
        foreach (var t in _values) t.Dispose();
        _values.Clear();
    }
}

/// <summary>HF <c>OlmoLayerNorm</c> (OLMo 1): LayerNorm over the last dimension without weight or bias, eps 1e-5, computed in
/// float32 and cast back: (x − mean) / √(var + 1e-5), var the biased variance. It has no parameters (nothing in the checkpoint).</summary>
internal sealed class OlmoLayerNorm : HookedNorm
{
    private const double Eps = 1e-5;
    private readonly long[] _shape;

    public OlmoLayerNorm(long d) : base(nameof(OlmoLayerNorm)) => _shape = [d];

    public override Tensor Forward(Tensor x, HookRunner hooks, string? scaleHook)
    {
        if (!ScaleReplaceable(x, true, Eps, hooks, scaleHook))
            return NormScales.Freeze(x,
                x.dtype == ScalarType.Float32 ? nn.functional.layer_norm(x, _shape, null, null, Eps)
                    : nn.functional.layer_norm(x.to(ScalarType.Float32), _shape, null, null, Eps).to(x.dtype), Eps, null);
        using var scope = NewDisposeScope();
        var x32 = x.to(ScalarType.Float32);
        var centred = x32 - x32.mean([-1L], keepdim: true);
        return (centred / HookedScale(centred, Eps, hooks, scaleHook!)).to(x.dtype).MoveToOuterDisposeScope();
    }
}

/// <summary>
/// RMSNorm over the last dimension, computed in float32: Llama / Qwen x̂·w with x̂ cast back to the input dtype first
/// (HF <c>LlamaRMSNorm</c>); Gemma x̂·(1 + w) in float32, then cast (HF <c>Gemma2RMSNorm</c>); with
/// <c>weightInFloat32</c>, x̂·w in float32, then cast (HF <c>Olmo2RMSNorm</c>).
/// </summary>
internal sealed class RmsNorm : HookedNorm
{
    private readonly Parameter weight;
    private readonly double _eps;
    private readonly bool _plusOne, _weightInFloat32;

    public RmsNorm(long d, double eps, bool plusOne, ScalarType dtype, bool weightInFloat32 = false) : base(nameof(RmsNorm))
    {
        _eps = eps;
        _plusOne = plusOne;
        _weightInFloat32 = weightInFloat32;
        weight = new Parameter(plusOne ? zeros(d, dtype: dtype) : ones(d, dtype: dtype), requires_grad: false);
        RegisterComponents();
    }

    public override Tensor Forward(Tensor x, HookRunner hooks, string? scaleHook)
    {
        using var scope = NewDisposeScope();
        var dtype = x.dtype;
        var x32 = x.to(ScalarType.Float32);
        Tensor normed;
        if (ScaleReplaceable(x32, false, _eps, hooks, scaleHook)) normed = x32 / HookedScale(x32, _eps, hooks, scaleHook!);
        else
        {
            using var eps = _eps.ToScalar();
            var inverse = x32.pow(TorchScalars.Of(2)).mean([-1L], keepdim: true).add(eps, TorchScalars.One).rsqrt();
            if (NormScales.Frozen) inverse = NormScales.Values?.Take(inverse.detach(), "a norm's scale") ?? inverse.detach();   // circuit-tracer's frozen scale
            normed = x32 * inverse;
        }
        var y = _plusOne
            ? (normed * weight.to(ScalarType.Float32).add(TorchScalars.Of(1.0), TorchScalars.One)).to(dtype)
            : _weightInFloat32 ? (weight.to(ScalarType.Float32) * normed).to(dtype)
            : weight * normed.to(dtype);
        return y.MoveToOuterDisposeScope();
    }
}

/// <summary>torch <c>nn.Embedding</c>: rows of <c>weight</c> [num, d] looked up by index.</summary>
internal sealed class Embedding : nn.Module<Tensor, Tensor>
{
    private readonly Parameter weight;

    public Embedding(long num, long d, ScalarType dtype) : base(nameof(Embedding))
    {
        weight = new Parameter(empty(num, d, dtype: dtype), requires_grad: false);
        RegisterComponents();
    }

    public Tensor Weight => weight;

    public override Tensor forward(Tensor ids)
    {
        var shape = ids.shape.Append(weight.shape[1]).ToArray();
        return weight.index_select(0, ids.reshape(-1)).view(shape);
    }
}
