using TorchSharp;
using static TorchSharp.torch;

namespace SaeSharp.Kernels;

/// <summary>The dense ReLU activations of one batch, f = ReLU(x̃·W_enc + b_enc) [N, d_sae] (no gradient), with the
/// encoder input x̃ they came from, their per-latent sums Σ_n f_nj [d_sae] (float64) and positive counts [d_sae] (int64).</summary>
internal sealed record DenseReluCode(Tensor F, Tensor Input, Tensor ColumnSums, Tensor Counts, long Positive);

/// <summary>
/// The dense training pass of a ReLU SAE with two passes over the [N, d_sae] matrix instead of torch's seven or so
/// (bias add, ReLU, L1 sum, active counts; L1 gradient broadcast, gradient sum, ReLU mask, bias-gradient sum):
/// <list type="number">
/// <item><see cref="Encode"/>: p = x̃·W_enc (a plain GEMM, no bias copy), then f = ReLU(p + b_enc) in place with the
/// per-latent sums and counts (<see cref="DenseReluKernels.ReluBias"/>).</item>
/// <item><see cref="DecodeWithL1"/>: ŷ = f·W_dec + b_dec and L1 = Σ_j s_j·w_j / N (s the per-latent sums, w the L1
/// weights or 1), an autograd function whose backward computes ∂L/∂f = ∂L/∂ŷ·W_decᵀ with one GEMM and then
/// ∂L/∂p = [f &gt; 0]·(∂L/∂f + g_L1·w/N) with its per-latent sums (= ∂L/∂b_enc) in one pass
/// (<see cref="DenseReluKernels.MaskedGradient"/>); ∂L/∂W_enc = x̃ᵀ·∂L/∂p, ∂L/∂W_dec = fᵀ·∂L/∂ŷ,
/// ∂L/∂b_dec = Σ_n ∂L/∂ŷ_n − W_enc·∂L/∂b_enc (the centring), ∂L/∂w = g_L1·s/N.</item>
/// </list>
/// Used for float32 CPU tensors when the custom kernels are on (<see cref="Applies"/>); elsewhere the SAE runs the same
/// loss through torch's operations. The five GEMMs go through <see cref="Blas"/> (torch's MKL or OpenBLAS, whichever is
/// faster here).
/// </summary>
internal static class DenseRelu
{
    /// <summary>Whether the fused pass runs for these tensors: float32 on the CPU, with the custom kernels on
    /// (<see cref="CpuKernels.On"/>).</summary>
    public static bool Applies(Tensor x, Tensor wEnc) =>
        x.dtype == ScalarType.Float32 && wEnc.dtype == ScalarType.Float32 && CpuKernels.On(x) && CpuKernels.On(wEnc);

    /// <summary>f = ReLU(<paramref name="input"/>·W_enc + b_enc) without autograd, and its per-latent sums and counts.</summary>
    public static DenseReluCode Encode(Tensor input, Tensor wEnc, Tensor bEnc)
    {
        using var _ = no_grad();
        var xc = input.contiguous();
        return FromProducts(xc, Blas.Mm(xc, wEnc.detach()), bEnc);
    }

    /// <summary><see cref="Encode"/> from the products <paramref name="p"/> = <paramref name="xc"/>·W_enc (contiguous
    /// float32 [N, d_sae], overwritten with f); the code holds both tensors.</summary>
    public static DenseReluCode FromProducts(Tensor xc, Tensor p, Tensor bEnc)
    {
        using var _ = no_grad();
        var (sums, counts) = DenseReluKernels.ReluBias(p, bEnc.detach());
        return new DenseReluCode(p, xc, tensor(sums), tensor(counts), counts.Sum());
    }

    /// <summary>(ŷ, L1) of the code with gradients to <paramref name="bDec"/> (output bias and, when
    /// <paramref name="centred"/>, the input centring x̃ = x − b_dec), W_enc, b_enc, W_dec and the L1 weights.</summary>
    public static (Tensor Y, Tensor L1) DecodeWithL1(DenseReluCode code, Tensor bDec, Tensor wEnc, Tensor bEnc, Tensor wDec, Tensor? l1Weights, bool centred)
    {
        var outs = Function.apply(code.F, code.Input, code.ColumnSums, bDec, wEnc, bEnc, wDec, l1Weights!, centred);
        return (outs[0], outs[1]);
    }

    private sealed class Function : autograd.MultiTensorFunction<Function>
    {
        public override string Name => "DenseReluDecode";

        public override List<Tensor> forward(autograd.AutogradContext ctx, params object[] vars)
        {
            var f = (Tensor)vars[0];
            var xc = (Tensor)vars[1];
            var sums = (Tensor)vars[2];
            var bDec = (Tensor)vars[3];
            var wEnc = (Tensor)vars[4];
            var wDec = (Tensor)vars[6];
            var w = vars[7] as Tensor;
            bool centred = (bool)vars[8];
            ctx.set_materialize_grads(false);
            ctx.save_for_backward([f, xc, sums, wEnc, wDec, w!]);
            ctx.save_data("centred", centred);
            using var scope = NewDisposeScope();
            long n = f.shape[0];
            var y = Blas.AddMm(bDec.detach(), f, wDec.detach());
            using var nScalar = n.ToScalar();
            var l1 = (w is null ? sums.sum() : sums.dot(w.detach().to(ScalarType.Float64))) / nScalar;
            return [y.MoveToOuterDisposeScope(), l1.to(ScalarType.Float32).MoveToOuterDisposeScope()];
        }

        public override List<Tensor> backward(autograd.AutogradContext ctx, List<Tensor> grads)
        {
            var saved = ctx.get_saved_variables();
            var (f, xc, sums, wEnc, wDec, w) = (saved[0], saved[1], saved[2], saved[3], saved[4], saved[5]);
            bool centred = (bool)ctx.get_data("centred");
            bool weighted = w is not null && !w.IsInvalid;
            using var scope = NewDisposeScope();
            long n = f.shape[0], dSae = f.shape[1];
            var gy = grads[0] is { IsInvalid: false } g0 ? g0.contiguous() : zeros(n, wDec.shape[1], dtype: f.dtype);
            double gl1 = grads[1] is { IsInvalid: false } g1 ? g1.to(ScalarType.Float64).item<double>() : 0;
            var gf = Blas.Mm(gy, wDec.t());
            var c = new float[dSae];
            if (weighted)
            {
                using var wd = w!.detach().to(ScalarType.Float64).contiguous();
                var wv = wd.data<double>();
                for (int j = 0; j < dSae; j++) c[j] = (float)(gl1 * wv[j] / n);
            }
            else Array.Fill(c, (float)(gl1 / n));
            var gBEnc = tensor(DenseReluKernels.MaskedGradient(gf, f, c)).to(ScalarType.Float32);
            var gWEnc = Blas.Mm(xc.t(), gf);
            var gWDec = Blas.Mm(f.t(), gy);
            var gBDec = gy.sum(0L);
            if (centred) gBDec = gBDec - wEnc.detach().mv(gBEnc);
            using var gl1PerRow = (gl1 / n).ToScalar();
            var gW = weighted ? (sums * gl1PerRow).to(ScalarType.Float32) : null;
            return [null!, null!, null!, gBDec.MoveToOuterDisposeScope(), gWEnc.MoveToOuterDisposeScope(), gBEnc.MoveToOuterDisposeScope(),
                gWDec.MoveToOuterDisposeScope(), gW?.MoveToOuterDisposeScope()!, null!];
        }
    }
}
