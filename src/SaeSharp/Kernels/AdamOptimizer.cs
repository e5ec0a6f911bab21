using System.Numerics;
using System.Runtime.CompilerServices;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace SaeSharp.Kernels;

/// <summary>
/// Adam (Kingma &amp; Ba; the update of <c>torch.optim.Adam</c>, and AdamW's decoupled weight decay per parameter) with its
/// moments held as named tensors, so that they can be checkpointed exactly and reset per latent when dead latents are
/// resampled. Moment names are the parameter names: <c>exp_avg.W_enc</c>, <c>exp_avg_sq.W_enc</c>, …. Unlike TorchSharp's
/// <c>optim.Adam</c>/<c>AdamW</c>, whose <c>step</c> makes Scalars it drops while libtorch reads them (see
/// <see cref="TorchScalars"/>), every Scalar it passes is held.
/// </summary>
public sealed class AdamOptimizer : IDisposable
{
    private readonly List<(string Name, Parameter Param, Tensor ExpAvg, Tensor ExpAvgSq)> _state = new();
    // β1, 1 − β1, β2, 1 − β2 and ε as Scalars held for the optimizer's lifetime (TorchScalars: none made on the fly).
    private readonly Scalar _beta1, _oneMinusBeta1, _beta2, _oneMinusBeta2, _eps;
    private readonly List<double> _weightDecay = new();

    /// <summary>Adam over <paramref name="parameters"/> (name, parameter) with zero moments; defaults are <c>torch.optim.Adam</c>'s.</summary>
    public AdamOptimizer(IEnumerable<(string Name, Parameter Param)> parameters, double beta1 = 0.9, double beta2 = 0.999, double eps = 1e-8)
        : this(parameters.Select(p => (p.Name, p.Param, 0.0)), beta1, beta2, eps)
    {
    }

    /// <summary>AdamW over <paramref name="parameters"/> (name, parameter, weight decay): before each update a parameter is
    /// multiplied by 1 − lr·weight decay (<c>torch.optim.AdamW</c>'s decoupled decay; 0 = plain Adam).</summary>
    public AdamOptimizer(IEnumerable<(string Name, Parameter Param, double WeightDecay)> parameters, double beta1 = 0.9, double beta2 = 0.999, double eps = 1e-8)
    {
        Beta1 = beta1;
        Beta2 = beta2;
        Eps = eps;
        _beta1 = Beta1.ToScalar();
        _oneMinusBeta1 = (1 - Beta1).ToScalar();
        _beta2 = Beta2.ToScalar();
        _oneMinusBeta2 = (1 - Beta2).ToScalar();
        _eps = Eps.ToScalar();
        foreach (var (name, p, weightDecay) in parameters)
        {
            if (!double.IsFinite(weightDecay) || weightDecay < 0) throw new SaeSharpException($"weight decay of '{name}': expected a finite number ≥ 0, got {weightDecay}");
            var m = zeros_like(p).DetachFromDisposeScope();
            var v = zeros_like(p).DetachFromDisposeScope();
            _state.Add((name, p, m, v));
            _weightDecay.Add(weightDecay);
        }
    }

    /// <summary>Decay of the first-moment estimate (β1).</summary>
    public double Beta1 { get; }
    /// <summary>Decay of the second-moment estimate (β2).</summary>
    public double Beta2 { get; }
    /// <summary>Added to √v̂ in the update's denominator (ε).</summary>
    public double Eps { get; }
    /// <summary>Number of updates taken (the t of the bias corrections).</summary>
    public long StepCount { get; set; }
    /// <summary>Update float32 CPU parameters in one fused pass (default); false runs the torch operations of TorchSharp's
    /// <c>optim.Adam</c>/<c>AdamW</c> one by one, giving their results bit for bit.</summary>
    public bool Fused { get; init; } = true;

    /// <summary>One update with learning rate <paramref name="lr"/>; parameters without a gradient are skipped.</summary>
    public void Step(double lr)
    {
        StepCount++;
        double bc1 = 1 - Math.Pow(Beta1, StepCount);
        double bc2Sqrt = Math.Sqrt(1 - Math.Pow(Beta2, StepCount));
        double stepSize = lr / bc1;
        using var _ = no_grad();
        using var scope = NewDisposeScope();
        using Scalar bc2SqrtScalar = bc2Sqrt.ToScalar(), negStepSize = (-stepSize).ToScalar();
        for (int i = 0; i < _state.Count; i++)
        {
            var (_, p, m, v) = _state[i];
            var g = p.grad;
            if (g is null) continue;
            if (_weightDecay[i] != 0)
            {
                using var decay = (1 - lr * _weightDecay[i]).ToScalar();
                p.mul_(decay);
            }
            if (Fused && FusedStep(p, g, m, v, stepSize, bc2Sqrt)) continue;
            m.mul_(_beta1).add_(g, alpha: _oneMinusBeta1);
            v.mul_(_beta2).addcmul_(g, g, value: _oneMinusBeta2);
            var denom = (v.sqrt() / bc2SqrtScalar).add_(_eps, TorchScalars.One);
            p.addcdiv_(m, denom, value: negStepSize);
        }
    }

    /// <summary>
    /// The update of <see cref="Step"/> in one pass over contiguous float32 CPU tensors (instead of eight tensor ops and a
    /// temporary): m ← β1·m + (1−β1)·g, v ← β2·v + (1−β2)·g², p ← p − stepSize·m / (√v / √(1−β2ᵗ) + ε), in float32,
    /// split over torch's thread count. Returns false (doing nothing) for any other layout, on other devices and with
    /// <c>SAESHARP_KERNELS=torch</c> (<see cref="CpuKernels.On"/>): the torch operations then run.
    /// </summary>
    private unsafe bool FusedStep(Tensor p, Tensor g, Tensor m, Tensor v, double stepSize, double bc2Sqrt)
    {
        Tensor[] all = [p, g, m, v];
        foreach (var t in all)
            if (t.dtype != ScalarType.Float32 || !CpuKernels.On(t) || !t.is_contiguous() || t.numel() != p.numel())
                return false;
        long n = p.numel();
        if (n == 0) return true;
        if (n > int.MaxValue / sizeof(float)) return false;
        float* pp = TensorPointers.FloatPtr(p), pg = TensorPointers.FloatPtr(g),
               pm = TensorPointers.FloatPtr(m), pv = TensorPointers.FloatPtr(v);
        float b1 = (float)Beta1, c1 = (float)(1 - Beta1), b2 = (float)Beta2, c2 = (float)(1 - Beta2);
        float bc2 = (float)bc2Sqrt, eps = (float)Eps, step = (float)stepSize;
        int threads = (int)Math.Clamp(n / 65536, 1, RowRanges.Count(n));
        long per = (n + threads - 1) / threads;
        int w = Vector<float>.Count;
        KernelThreads.Run(threads, t =>
        {
            long i = t * per, end = Math.Min(n, i + per);
            var vb1 = new Vector<float>(b1); var vc1 = new Vector<float>(c1);
            var vb2 = new Vector<float>(b2); var vc2 = new Vector<float>(c2);
            var vBc2 = new Vector<float>(bc2); var vEps = new Vector<float>(eps); var vStep = new Vector<float>(step);
            for (; i + w <= end; i += w)
            {
                var gi = Unsafe.ReadUnaligned<Vector<float>>(pg + i);
                var mi = Unsafe.ReadUnaligned<Vector<float>>(pm + i) * vb1 + gi * vc1;
                var vi = Unsafe.ReadUnaligned<Vector<float>>(pv + i) * vb2 + gi * gi * vc2;
                var pi = Unsafe.ReadUnaligned<Vector<float>>(pp + i) - vStep * (mi / (Vector.SquareRoot(vi) / vBc2 + vEps));
                Unsafe.WriteUnaligned(pm + i, mi);
                Unsafe.WriteUnaligned(pv + i, vi);
                Unsafe.WriteUnaligned(pp + i, pi);
            }
            for (; i < end; i++)
            {
                float gi = pg[i];
                float mi = pm[i] * b1 + gi * c1;
                float vi = pv[i] * b2 + gi * gi * c2;
                pm[i] = mi;
                pv[i] = vi;
                pp[i] -= step * (mi / (MathF.Sqrt(vi) / bc2 + eps));
            }
        });
        GC.KeepAlive(p);
        GC.KeepAlive(g);
        GC.KeepAlive(m);
        GC.KeepAlive(v);
        return true;
    }

    /// <summary>Zeroes both moments of the slices <paramref name="index"/> along <paramref name="dim"/> of parameter <paramref name="name"/>.</summary>
    public void ResetMoments(string name, long dim, Tensor index)
    {
        var (_, _, m, v) = Find(name);
        using var _ = no_grad();
        m.index_fill_(dim, index, TorchScalars.Of(0));
        v.index_fill_(dim, index, TorchScalars.Of(0));
    }

    /// <summary>First moment (exp_avg) of a parameter.</summary>
    public Tensor ExpAvg(string name) => Find(name).ExpAvg;
    /// <summary>Second moment (exp_avg_sq) of a parameter.</summary>
    public Tensor ExpAvgSq(string name) => Find(name).ExpAvgSq;

    /// <summary>The moments under the keys <c>exp_avg.NAME</c> and <c>exp_avg_sq.NAME</c>.</summary>
    public IEnumerable<KeyValuePair<string, Tensor>> StateTensors()
    {
        foreach (var (name, _, m, v) in _state)
        {
            yield return new($"exp_avg.{name}", m);
            yield return new($"exp_avg_sq.{name}", v);
        }
    }

    /// <summary>Copies moments saved by <see cref="StateTensors"/> back; throws naming a missing key or wrong shape.</summary>
    public void LoadStateTensors(IReadOnlyDictionary<string, Tensor> tensors, string source)
    {
        using var _ = no_grad();
        foreach (var (key, dst) in StateTensors())
        {
            if (!tensors.TryGetValue(key, out var src))
                throw new SaeSharpException($"{source}: missing optimizer tensor '{key}'");
            if (!src.shape.SequenceEqual(dst.shape))
                throw new SaeSharpException($"{source}: optimizer tensor '{key}' has shape [{string.Join(", ", src.shape)}], expected [{string.Join(", ", dst.shape)}]");
            dst.copy_(src);
        }
    }

    private (string Name, Parameter Param, Tensor ExpAvg, Tensor ExpAvgSq) Find(string name)
    {
        foreach (var s in _state) if (s.Name == name) return s;
        throw new SaeSharpException($"optimizer has no parameter '{name}'");
    }

    /// <summary>Disposes the moment tensors (and the held Scalars).</summary>
    public void Dispose()
    {
        foreach (var (_, _, m, v) in _state) { m.Dispose(); v.Dispose(); }
        _state.Clear();
        _weightDecay.Clear();
        _beta1.Dispose(); _oneMinusBeta1.Dispose(); _beta2.Dispose(); _oneMinusBeta2.Dispose(); _eps.Dispose();
    }
}
