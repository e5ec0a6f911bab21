using System.Runtime.CompilerServices;
using TorchSharp;
using static TorchSharp.torch;

namespace SaeSharp.Kernels;

/// <summary>
/// The bfloat16 training passes (<see cref="Saes.SaeTrainingOptions.Autocast"/>): autograd functions whose matmuls take
/// bfloat16 operands (float32 accumulation, bfloat16 result) while the parameters and their gradients stay float32; the
/// elementwise passes run in <see cref="Bf16Kernels"/>.
/// </summary>
internal static class Bf16Autograd
{
    private const ScalarType Bf16 = ScalarType.BFloat16;

    /// <summary><paramref name="t"/> rounded to bfloat16 (an alias when it already is).</summary>
    public static Tensor ToBf16(Tensor t) => t.dtype == Bf16 ? t.alias() : t.to(Bf16);

    /// <summary>
    /// Encoder pre-activations (x − b_dec)·w + bias in bfloat16, [N, d_sae]: the operands rounded to bfloat16, the
    /// product accumulated in float32 and rounded to bfloat16. Gradients (float32) go to <paramref name="w"/>
    /// (x̃ᵀ·g), <paramref name="bias"/> (Σ_n g) and <paramref name="bDec"/> (−w·Σ_n g); none to x, which must not
    /// require one.
    /// </summary>
    /// <param name="x">[N, d_in] input (float32).</param>
    /// <param name="bDec">[d_in] subtracted from x, or null.</param>
    /// <param name="w">[d_in, d_sae] float32.</param>
    /// <param name="bias">[d_sae] float32.</param>
    public static Tensor Encoder(Tensor x, Tensor? bDec, Tensor w, Tensor bias) =>
        EncoderFunction.apply(x, bDec!, w, bias, false, new StrongBox<Tensor?>());

    /// <summary>ReLU(<see cref="Encoder"/>) in bfloat16, the ReLU applied in place on the product and its backward
    /// pass fused into the encoder's; also <see cref="Bf16Kernels.PositiveCounts"/> of the result (no gradient). The
    /// backward pass masks its incoming gradient in place: feed the result only to <see cref="Decoder"/>.</summary>
    public static (Tensor F, Tensor ActiveCounts) ReluEncoder(Tensor x, Tensor? bDec, Tensor w, Tensor bias)
    {
        var counts = new StrongBox<Tensor?>();
        var f = EncoderFunction.apply(x, bDec!, w, bias, true, counts);
        return (f, counts.Value!);
    }

    /// <summary>
    /// f·w + bias, [N, d_out] float32, with f in bfloat16 (w rounded to bfloat16, the product accumulated in float32
    /// and rounded to bfloat16). Gradients: to f (g·wᵀ, bfloat16), w (fᵀ·g) and bias (Σ_n g), float32 but for f.
    /// </summary>
    /// <param name="f">[N, d_sae] bfloat16.</param>
    /// <param name="w">[d_sae, d_out] float32.</param>
    /// <param name="bias">[d_out] float32.</param>
    public static Tensor Decoder(Tensor f, Tensor w, Tensor bias) => DecoderFunction.apply(f, w, bias);

    /// <summary>
    /// JumpReLU pre·[pre &gt; θ] of bfloat16 pre-activations [N, d_sae], bfloat16, with ∂f/∂pre = [pre &gt; θ] and the
    /// straight-through threshold gradient ∂f/∂θ = −(θ/ε)·[|pre − θ| &lt; ε/2] (<see cref="Saes.JumpReluSae"/>); also, per
    /// latent, the number of rows with pre &gt; θ and with |pre − θ| &lt; ε/2 (int64, no gradient). The backward pass
    /// masks its incoming gradient in place: feed the result only to <see cref="Decoder"/>.
    /// </summary>
    public static (Tensor F, Tensor ActiveCounts, Tensor KernelCounts) JumpRelu(Tensor pre, Tensor theta, double bandwidth)
    {
        var counts = new StrongBox<(Tensor, Tensor)>();
        var f = JumpReluFunction.apply(pre, theta, bandwidth, counts);
        return (f, counts.Value.Item1, counts.Value.Item2);
    }

    /// <summary><paramref name="values"/> where <paramref name="gate"/> &gt; 0, else 0 (bfloat16 [N, d_sae]): the Gated SAE's
    /// [π_gate &gt; 0]·ReLU(π_mag). The gradient goes to <paramref name="values"/> only, masked in place in the incoming
    /// gradient: feed the result only to <see cref="Decoder"/>.</summary>
    public static Tensor Gate(Tensor values, Tensor gate) => GateFunction.apply(values, gate);

    /// <summary>ReLU(p·scale + shift), bfloat16 [N, d], of bfloat16 <paramref name="p"/> [N, d] with float32 per-column
    /// <paramref name="scale"/> and <paramref name="shift"/> [d] (computed in float32, rounded once), with gradients to
    /// all three: ∂/∂p = g·scale, ∂/∂scale = Σ_n g·p, ∂/∂shift = Σ_n g over the positive outputs. The backward pass
    /// writes ∂/∂p into its incoming gradient: feed the result only to <see cref="Decoder"/> or <see cref="Gate"/>.</summary>
    public static Tensor AffineRelu(Tensor p, Tensor scale, Tensor shift) => AffineReluFunction.apply(p, scale, shift);

    private sealed class EncoderFunction : autograd.SingleTensorFunction<EncoderFunction>
    {
        public override string Name => "Bf16Encoder";

        public override Tensor forward(autograd.AutogradContext ctx, params object[] vars)
        {
            var x = (Tensor)vars[0];
            var bDec = vars[1] as Tensor;
            var w = (Tensor)vars[2];
            var bias = (Tensor)vars[3];
            using var scope = NewDisposeScope();
            var xc = ToBf16(bDec is null ? x : x - bDec);
            var wT = w.t().to(Bf16).contiguous();
            bool relu = (bool)vars[4];
            Tensor pre;
            if (relu)
            {
                // The bias is added in the ReLU's pass rather than by addmm (which first copies it into the output).
                pre = xc.mm(wT.t());
                ((StrongBox<Tensor?>)vars[5]).Value = Bf16Kernels.BiasReluInPlace(pre, bias).MoveToOuterDisposeScope();
            }
            else pre = addmm(bias.to(Bf16), xc, wT.t(), 1, 1);
            ctx.set_materialize_grads(false);
            ctx.save_for_backward([xc.MoveToOuterDisposeScope(), w, bDec!, relu ? pre.detach().MoveToOuterDisposeScope() : null!]);
            return pre.MoveToOuterDisposeScope();
        }

        public override List<Tensor> backward(autograd.AutogradContext ctx, Tensor grad)
        {
            if (grad is null || grad.IsInvalid) return [null!, null!, null!, null!, null!, null!];
            var saved = ctx.get_saved_variables();
            using var scope = NewDisposeScope();
            var (xc, w, bDec, reluOut) = (saved[0], saved[1], saved[2], saved[3]);
            var g = ToBf16(grad);
            Tensor gBias;
            if (reluOut is not null && !reluOut.IsInvalid)
            {
                // The incoming gradient is the decoder's, used nowhere else: masked in place (no [N, d_sae] allocation).
                bool inPlace = g.is_contiguous() && g.dtype == Bf16;
                g = Bf16Kernels.WherePositive(reluOut, g, inPlace ? g : null, true, out var sums);
                gBias = sums!.to(w.dtype);
            }
            else gBias = g.sum(0L).to(w.dtype);
            var gW = xc.t().mm(g).to(w.dtype);
            Tensor? gBDec = bDec is null || bDec.IsInvalid ? null : w.detach().mv(gBias).neg_();
            return [null!, gBDec?.MoveToOuterDisposeScope()!, gW.MoveToOuterDisposeScope(), gBias.MoveToOuterDisposeScope(), null!, null!];
        }
    }

    private sealed class DecoderFunction : autograd.SingleTensorFunction<DecoderFunction>
    {
        public override string Name => "Bf16Decoder";

        public override Tensor forward(autograd.AutogradContext ctx, params object[] vars)
        {
            var f = (Tensor)vars[0];
            var w = (Tensor)vars[1];
            var bias = (Tensor)vars[2];
            using var scope = NewDisposeScope();
            var f16 = ToBf16(f);
            var w16 = w.to(Bf16);
            var y = f16.mm(w16).to(w.dtype).add_(bias, TorchScalars.One);
            ctx.set_materialize_grads(false);
            ctx.save_for_backward([f16.MoveToOuterDisposeScope(), w16.MoveToOuterDisposeScope()]);
            return y.MoveToOuterDisposeScope();
        }

        public override List<Tensor> backward(autograd.AutogradContext ctx, Tensor grad)
        {
            if (grad is null || grad.IsInvalid) return [null!, null!, null!];
            var saved = ctx.get_saved_variables();
            using var scope = NewDisposeScope();
            var (f16, w16) = (saved[0], saved[1]);
            var g = ToBf16(grad);
            var gF = g.mm(w16.t());
            var gW = f16.t().mm(g).to(grad.dtype);
            var gBias = grad.sum(0L);
            return [gF.MoveToOuterDisposeScope(), gW.MoveToOuterDisposeScope(), gBias.MoveToOuterDisposeScope()];
        }
    }

    private sealed class AffineReluFunction : autograd.SingleTensorFunction<AffineReluFunction>
    {
        public override string Name => "Bf16AffineRelu";

        public override Tensor forward(autograd.AutogradContext ctx, params object[] vars)
        {
            using var scope = NewDisposeScope();
            var p = Bf16Kernels.CheckMatrix((Tensor)vars[0], "AffineRelu").contiguous();
            var scale = (Tensor)vars[1];
            var shift = (Tensor)vars[2];
            using var sc = scale.detach().to(ScalarType.Float32).contiguous();
            using var sh = shift.detach().to(ScalarType.Float32).contiguous();
            var result = empty(p.shape, dtype: Bf16);
            Bf16Kernels.AffineRelu(p, sc, sh, result, null, out _, out _);
            ctx.set_materialize_grads(false);
            ctx.save_for_backward([p.detach().MoveToOuterDisposeScope(), scale, shift]);
            return result.MoveToOuterDisposeScope();
        }

        public override List<Tensor> backward(autograd.AutogradContext ctx, Tensor grad)
        {
            if (grad is null || grad.IsInvalid) return [null!, null!, null!];
            var saved = ctx.get_saved_variables();
            using var scope = NewDisposeScope();
            var (p, scale, shift) = (saved[0], saved[1], saved[2]);
            using var sc = scale.detach().to(ScalarType.Float32).contiguous();
            using var sh = shift.detach().to(ScalarType.Float32).contiguous();
            var g = ToBf16(grad).contiguous();
            Bf16Kernels.AffineRelu(p, sc, sh, g, g, out var gScale, out var gShift);
            return [g.MoveToOuterDisposeScope(), gScale!.to(scale.dtype).MoveToOuterDisposeScope(), gShift!.to(shift.dtype).MoveToOuterDisposeScope()];
        }
    }

    private sealed class GateFunction : autograd.SingleTensorFunction<GateFunction>
    {
        public override string Name => "Bf16Gate";

        public override Tensor forward(autograd.AutogradContext ctx, params object[] vars)
        {
            var values = (Tensor)vars[0];
            var gate = ((Tensor)vars[1]).detach();
            ctx.set_materialize_grads(false);
            ctx.save_for_backward([gate]);
            return Bf16Kernels.WherePositive(gate, values);
        }

        public override List<Tensor> backward(autograd.AutogradContext ctx, Tensor grad)
        {
            if (grad is null || grad.IsInvalid) return [null!, null!];
            var gate = ctx.get_saved_variables()[0];
            using var scope = NewDisposeScope();
            var g = ToBf16(grad).contiguous();
            return [Bf16Kernels.WherePositive(gate, g, g).MoveToOuterDisposeScope(), null!];
        }
    }

    private sealed class JumpReluFunction : autograd.SingleTensorFunction<JumpReluFunction>
    {
        public override string Name => "Bf16JumpRelu";

        public override Tensor forward(autograd.AutogradContext ctx, params object[] vars)
        {
            var pre = (Tensor)vars[0];
            var theta = (Tensor)vars[1];
            double bandwidth = (double)vars[2];
            using var scope = NewDisposeScope();
            var p = pre.contiguous();
            var th = theta.detach().to(ScalarType.Float32).contiguous();
            var f = empty(p.shape, dtype: Bf16);
            var (active, kernel) = Bf16Kernels.JumpRelu(p, th, bandwidth / 2, f, null, out _);
            ((StrongBox<(Tensor, Tensor)>)vars[3]).Value = (active.MoveToOuterDisposeScope(), kernel.MoveToOuterDisposeScope());
            ctx.set_materialize_grads(false);
            ctx.save_for_backward([p.detach().MoveToOuterDisposeScope(), theta]);
            ctx.save_data("bandwidth", bandwidth);
            return f.MoveToOuterDisposeScope();
        }

        public override List<Tensor> backward(autograd.AutogradContext ctx, Tensor grad)
        {
            if (grad is null || grad.IsInvalid) return [null!, null!, null!, null!];
            var saved = ctx.get_saved_variables();
            using var scope = NewDisposeScope();
            var (pre, theta) = (saved[0], saved[1]);
            double bandwidth = (double)ctx.get_data("bandwidth");
            var g = ToBf16(grad).contiguous();
            var th = theta.detach().to(ScalarType.Float32).contiguous();
            Bf16Kernels.JumpRelu(pre, th, bandwidth / 2, g, g, out var kernelSums);
            using var negInvBandwidth = (-1.0 / bandwidth).ToScalar();
            var gTheta = kernelSums!.to(theta.dtype).mul_(theta.detach()).mul_(negInvBandwidth);
            return [g.MoveToOuterDisposeScope(), gTheta.MoveToOuterDisposeScope(), null!, null!];
        }
    }
}
