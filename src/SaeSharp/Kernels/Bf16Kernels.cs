using System.Numerics;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using TorchSharp;
using static TorchSharp.torch;

namespace SaeSharp.Saes;

/// <summary>
/// bfloat16 training passes (<see cref="SaeTrainingOptions.Autocast"/>): autograd functions whose matmuls take bfloat16
/// operands (float32 accumulation, bfloat16 result) while the parameters and their gradients stay float32, and
/// vectorised kernels for the elementwise passes over bfloat16 [N, d_sae] matrices (ReLU with bias and firing counts,
/// ReLU backward with column sums, JumpReLU, gate), which libtorch runs slowly or in several passes.
/// </summary>
public static unsafe class Autocast
{
    private static readonly Lazy<bool> Supported = new(DetectBf16);

    /// <summary>Whether this CPU has bfloat16 dot-product instructions (AVX512-BF16 or AMX-BF16), where libtorch's oneDNN
    /// bfloat16 matmul runs at two to three times the float32 rate. Without them bfloat16 matmuls are emulated and
    /// slower than float32.</summary>
    public static bool HardwareSupported => Supported.Value;

    private static bool DetectBf16()
    {
        try
        {
            if (!OperatingSystem.IsLinux() || !File.Exists("/proc/cpuinfo")) return false;
            foreach (var line in File.ReadLines("/proc/cpuinfo"))
            {
                if (!line.StartsWith("flags", StringComparison.Ordinal)) continue;
                var flags = line[(line.IndexOf(':') + 1)..].Split(' ', StringSplitOptions.RemoveEmptyEntries);
                return flags.Contains("avx512_bf16") || flags.Contains("amx_bf16");
            }
        }
        catch (IOException) { }
        catch (UnauthorizedAccessException) { }
        return false;
    }

    private const ScalarType Bf16 = ScalarType.BFloat16;

    /// <summary><paramref name="t"/> rounded to bfloat16 (an alias when it already is).</summary>
    internal static Tensor ToBf16(Tensor t) => t.dtype == Bf16 ? t.alias() : t.to(Bf16);

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
    internal static Tensor Encoder(Tensor x, Tensor? bDec, Tensor w, Tensor bias) =>
        EncoderFunction.apply(x, bDec!, w, bias, false, new StrongBox<Tensor?>());

    /// <summary>ReLU(<see cref="Encoder"/>) in bfloat16, the ReLU applied in place on the product and its backward
    /// pass fused into the encoder's; also <see cref="PositiveCounts"/> of the result (no gradient). The backward pass
    /// masks its incoming gradient in place: feed the result only to <see cref="Decoder"/>.</summary>
    internal static (Tensor F, Tensor ActiveCounts) ReluEncoder(Tensor x, Tensor? bDec, Tensor w, Tensor bias)
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
    internal static Tensor Decoder(Tensor f, Tensor w, Tensor bias) => DecoderFunction.apply(f, w, bias);

    /// <summary>
    /// JumpReLU pre·[pre &gt; θ] of bfloat16 pre-activations [N, d_sae], bfloat16, with ∂f/∂pre = [pre &gt; θ] and the
    /// straight-through threshold gradient ∂f/∂θ = −(θ/ε)·[|pre − θ| &lt; ε/2] (<see cref="JumpReluSae"/>); also, per
    /// latent, the number of rows with pre &gt; θ and with |pre − θ| &lt; ε/2 (int64, no gradient). The backward pass
    /// masks its incoming gradient in place: feed the result only to <see cref="Decoder"/>.
    /// </summary>
    internal static (Tensor F, Tensor ActiveCounts, Tensor KernelCounts) JumpRelu(Tensor pre, Tensor theta, double bandwidth)
    {
        var counts = new StrongBox<(Tensor, Tensor)>();
        var f = JumpReluFunction.apply(pre, theta, bandwidth, counts);
        return (f, counts.Value.Item1, counts.Value.Item2);
    }

    /// <summary><paramref name="values"/> where <paramref name="gate"/> &gt; 0, else 0 (bfloat16 [N, d_sae]): the Gated SAE's
    /// [π_gate &gt; 0]·ReLU(π_mag). The gradient goes to <paramref name="values"/> only, masked in place in the incoming
    /// gradient: feed the result only to <see cref="Decoder"/>.</summary>
    internal static Tensor Gate(Tensor values, Tensor gate) => GateFunction.apply(values, gate);

    /// <summary>ReLU(p·scale + shift), bfloat16 [N, d], of bfloat16 <paramref name="p"/> [N, d] with float32 per-column
    /// <paramref name="scale"/> and <paramref name="shift"/> [d] (computed in float32, rounded once), with gradients to
    /// all three: ∂/∂p = g·scale, ∂/∂scale = Σ_n g·p, ∂/∂shift = Σ_n g over the positive outputs. The backward pass
    /// writes ∂/∂p into its incoming gradient: feed the result only to <see cref="Decoder"/> or <see cref="Gate"/>.</summary>
    internal static Tensor AffineRelu(Tensor p, Tensor scale, Tensor shift) => AffineReluFunction.apply(p, scale, shift);

    /// <summary>[d] int64: per column, the number of rows of a bfloat16 [rows, d] matrix with a positive (non-NaN) entry.</summary>
    internal static Tensor PositiveCounts(Tensor m) => ColumnCounts(Bf16Kernel(m, "PositiveCounts"), RowsOp.Count);

    /// <summary>In place ReLU of a contiguous bfloat16 matrix (entries with the sign bit set, −NaN included, become 0); returns
    /// <see cref="PositiveCounts"/> of the result.</summary>
    internal static Tensor ReluInPlace(Tensor m)
    {
        if (!m.is_contiguous()) throw new ArgumentException("ReluInPlace needs a contiguous matrix");
        return ColumnCounts(Bf16Kernel(m, "ReluInPlace"), RowsOp.Relu);
    }

    /// <summary>bfloat16 <paramref name="src"/> where <paramref name="gate"/> is positive (and not NaN), else 0: the
    /// backward pass of a ReLU whose output is <paramref name="gate"/>, or a gating. Written into <paramref name="into"/>
    /// (contiguous, may be <paramref name="src"/>) or a new matrix; with <paramref name="columnSums"/>, also the result's
    /// column sums [d] in float32.</summary>
    internal static Tensor WherePositive(Tensor gate, Tensor src, Tensor? into = null, bool columnSums = false) =>
        WherePositive(gate, src, into, columnSums, out _);

    /// <inheritdoc cref="WherePositive(Tensor, Tensor, Tensor?, bool)"/>
    internal static Tensor WherePositive(Tensor gate, Tensor src, Tensor? into, bool columnSums, out Tensor? sums)
    {
        using var g = Bf16Kernel(gate, "WherePositive").contiguous();
        using var s = Bf16Kernel(src, "WherePositive").contiguous();
        if (!g.shape.SequenceEqual(s.shape)) throw new ArgumentException("WherePositive needs matrices of one shape");
        var result = into ?? empty(g.shape, dtype: Bf16);
        if (result.dtype != Bf16 || !result.is_contiguous() || !result.shape.SequenceEqual(g.shape))
            throw new ArgumentException("WherePositive writes into a contiguous bfloat16 matrix of the inputs' shape");
        short* pg = ShortPtr(g), ps = ShortPtr(s), po = ShortPtr(result);
        long rows = g.shape[0];
        int d = checked((int)g.shape[1]), w = Vector<short>.Count;
        var inf = new Vector<short>(0x7F80);
        var partial = new System.Collections.Concurrent.ConcurrentBag<float[]>();
        ForRowRanges(rows, (start, end) =>
        {
            var acc = columnSums ? new float[d] : null;
            fixed (float* pa = acc)
            {
                for (long r = start; r < end; r++)
                {
                    short* gr = pg + r * d, sr = ps + r * d, or = po + r * d;
                    int j = 0;
                    for (; j + w <= d; j += w)
                    {
                        var v = Unsafe.ReadUnaligned<Vector<short>>(gr + j);
                        var positive = Vector.GreaterThan(v, Vector<short>.Zero) & Vector.LessThanOrEqual(v, inf);
                        var o = Unsafe.ReadUnaligned<Vector<short>>(sr + j) & positive;
                        Unsafe.WriteUnaligned(or + j, o);
                        if (pa is null) continue;
                        Vector.Widen(Vector.AsVectorUInt16(o), out var lo, out var hi);
                        float* a = pa + j;
                        Unsafe.WriteUnaligned(a, Unsafe.ReadUnaligned<Vector<float>>(a) + Vector.AsVectorSingle(lo << 16));
                        a += Vector<float>.Count;
                        Unsafe.WriteUnaligned(a, Unsafe.ReadUnaligned<Vector<float>>(a) + Vector.AsVectorSingle(hi << 16));
                    }
                    for (; j < d; j++)
                    {
                        or[j] = gr[j] > 0 && gr[j] <= 0x7F80 ? sr[j] : (short)0;
                        if (pa is not null) pa[j] += BitConverter.Int32BitsToSingle((ushort)or[j] << 16);
                    }
                }
            }
            if (acc is not null) partial.Add(acc);
        });
        sums = null;
        if (columnSums)
        {
            var total = new float[d];
            foreach (var acc in partial)
                for (int j = 0; j < d; j++) total[j] += acc[j];
            sums = tensor(total);
        }
        return result;
    }

    /// <summary>Row and column indices (int64, row-major order) of the positive (non-NaN) entries of a bfloat16 matrix.</summary>
    internal static (Tensor Rows, Tensor Cols) PositiveEntries(Tensor m)
    {
        using var c = Bf16Kernel(m, "PositiveEntries").contiguous();
        long rows = c.shape[0];
        int d = checked((int)c.shape[1]), w = Vector<short>.Count;
        short* p = ShortPtr(c);
        var counts = new long[rows];
        var inf = new Vector<short>(0x7F80);
        ForRowRanges(rows, (start, end) =>
        {
            for (long r = start; r < end; r++)
            {
                short* row = p + r * d;
                long n = 0;
                int j = 0;
                for (; j + w <= d; j += w)
                {
                    var v = Unsafe.ReadUnaligned<Vector<short>>(row + j);
                    n -= Vector.Sum(Vector.GreaterThan(v, Vector<short>.Zero) & Vector.LessThanOrEqual(v, inf));
                }
                for (; j < d; j++) if (row[j] > 0 && row[j] <= 0x7F80) n++;
                counts[r] = n;
            }
        });
        var offsets = new long[rows + 1];
        for (long r = 0; r < rows; r++) offsets[r + 1] = offsets[r] + counts[r];
        var rowIdx = empty(offsets[rows], dtype: ScalarType.Int64);
        var colIdx = empty(offsets[rows], dtype: ScalarType.Int64);
        if (offsets[rows] == 0) return (rowIdx, colIdx);
        long* pr = (long*)Unsafe.AsPointer(ref MemoryMarshal.GetReference(rowIdx.bytes));
        long* pc = (long*)Unsafe.AsPointer(ref MemoryMarshal.GetReference(colIdx.bytes));
        ForRowRanges(rows, (start, end) =>
        {
            for (long r = start; r < end; r++)
            {
                if (counts[r] == 0) continue;
                short* row = p + r * d;
                long o = offsets[r];
                for (int j = 0; j < d; j++)
                    if (row[j] > 0 && row[j] <= 0x7F80) { pr[o] = r; pc[o] = j; o++; }
            }
        });
        return (rowIdx, colIdx);
    }

    private enum RowsOp { Count, Relu }

    private static Tensor Bf16Kernel(Tensor m, string what)
    {
        if (m.dtype != Bf16 || m.dim() != 2 || m.device_type != DeviceType.CPU)
            throw new ArgumentException($"{what} needs a bfloat16 CPU matrix, got {m.dtype} [{string.Join(", ", m.shape)}]");
        return m;
    }

    private static short* ShortPtr(Tensor t) => (short*)Unsafe.AsPointer(ref MemoryMarshal.GetReference(t.bytes));

    /// <summary>Runs <paramref name="body"/>(start, end) on one contiguous range of rows per torch thread.</summary>
    private static void ForRowRanges(long rows, Action<long, long> body)
    {
        int threads = (int)Math.Max(1, Math.Min(get_num_threads(), rows));
        long per = (rows + threads - 1) / threads;
        Parallel.For(0, threads, t => body(t * per, Math.Min(rows, (t + 1) * per)));
    }

    /// <summary>Per-column counts of positive (non-NaN) entries of a bfloat16 matrix; for <see cref="RowsOp.Relu"/>, in
    /// place first: adds <paramref name="bias"/> [d] (float32, the sum rounded to nearest even), then zeroes entries with
    /// the sign bit set.</summary>
    private static Tensor ColumnCounts(Tensor m, RowsOp op, float* bias = null)
    {
        using var c = m.contiguous();
        long rows = c.shape[0];
        int d = checked((int)c.shape[1]);
        short* p = ShortPtr(c);
        var totals = new System.Collections.Concurrent.ConcurrentBag<long[]>();
        int w = Vector<short>.Count;
        var inf = new Vector<short>(0x7F80);
        ForRowRanges(rows, (start, end) =>
        {
            var total = new long[d];
            var acc = new short[d];
            fixed (short* pa = acc)
            {
                for (long r0 = start; r0 < end; r0 += short.MaxValue)
                {
                    long r1 = Math.Min(end, r0 + short.MaxValue);
                    for (long r = r0; r < r1; r++)
                    {
                        short* row = p + r * d;
                        int j = 0;
                        for (; j + w <= d; j += w)
                        {
                            var v = Unsafe.ReadUnaligned<Vector<short>>(row + j);
                            if (bias is not null)
                            {
                                Vector.Widen(Vector.AsVectorUInt16(v), out var lo, out var hi);
                                lo = RoundBits(Vector.AsVectorUInt32(Vector.AsVectorSingle(lo << 16) + Unsafe.ReadUnaligned<Vector<float>>(bias + j)));
                                hi = RoundBits(Vector.AsVectorUInt32(Vector.AsVectorSingle(hi << 16) + Unsafe.ReadUnaligned<Vector<float>>(bias + j + Vector<float>.Count)));
                                v = Vector.AsVectorInt16(Vector.Narrow(lo, hi));
                            }
                            if (op == RowsOp.Relu)
                            {
                                v = Vector.AndNot(v, Vector.LessThan(v, Vector<short>.Zero));
                                Unsafe.WriteUnaligned(row + j, v);
                            }
                            var positive = Vector.GreaterThan(v, Vector<short>.Zero) & Vector.LessThanOrEqual(v, inf);
                            Unsafe.WriteUnaligned(pa + j, Unsafe.ReadUnaligned<Vector<short>>(pa + j) - positive);
                        }
                        for (; j < d; j++)
                        {
                            if (bias is not null)
                            {
                                uint bits = BitConverter.SingleToUInt32Bits(BitConverter.Int32BitsToSingle((ushort)row[j] << 16) + bias[j]);
                                row[j] = (short)((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16);
                            }
                            if (op == RowsOp.Relu && row[j] < 0) row[j] = 0;
                            if (row[j] > 0 && row[j] <= 0x7F80) pa[j]++;
                        }
                    }
                    for (int j = 0; j < d; j++) { total[j] += (ushort)pa[j]; pa[j] = 0; }
                }
            }
            totals.Add(total);
        });
        var counts = new long[d];
        foreach (var total in totals)
            for (int j = 0; j < d; j++) counts[j] += total[j];
        return tensor(counts);
    }

    /// <summary>float32 bit patterns rounded to the nearest even bfloat16, as the high half-word (then shifted down).</summary>
    private static Vector<uint> RoundBits(Vector<uint> bits) =>
        (bits + new Vector<uint>(0x7FFF) + ((bits >> 16) & Vector<uint>.One)) >> 16;

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
                using var b = bias.detach().to(ScalarType.Float32).contiguous();
                ((StrongBox<Tensor?>)vars[5]).Value = ColumnCounts(pre, RowsOp.Relu, (float*)Unsafe.AsPointer(ref MemoryMarshal.GetReference(b.bytes))).MoveToOuterDisposeScope();
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
                g = WherePositive(reluOut, g, inPlace ? g : null, true, out var sums);
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
            var y = f16.mm(w16).to(w.dtype).add_(bias);
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
            var p = Bf16Kernel((Tensor)vars[0], "AffineRelu").contiguous();
            var scale = (Tensor)vars[1];
            var shift = (Tensor)vars[2];
            using var sc = scale.detach().to(ScalarType.Float32).contiguous();
            using var sh = shift.detach().to(ScalarType.Float32).contiguous();
            var result = empty(p.shape, dtype: Bf16);
            AffineReluKernel(p, sc, sh, result, null, out _, out _);
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
            AffineReluKernel(p, sc, sh, g, g, out var gScale, out var gShift);
            var gp = g;
            return [gp.MoveToOuterDisposeScope(), gScale!.to(scale.dtype).MoveToOuterDisposeScope(), gShift!.to(shift.dtype).MoveToOuterDisposeScope()];
        }
    }

    /// <summary>
    /// Forward (<paramref name="grad"/> null): <paramref name="into"/> = ReLU(p·scale + shift), the float32 value rounded to
    /// nearest even. Backward (<paramref name="into"/> may be <paramref name="grad"/>): with a = p·scale + shift (recomputed, rounded) and m = [a &gt; 0]: <paramref name="into"/> =
    /// grad·scale·m (rounded), <paramref name="gScale"/> = Σ_n grad·p·m and <paramref name="gShift"/> = Σ_n grad·m (float32 [d]).
    /// </summary>
    private static void AffineReluKernel(Tensor p, Tensor scale, Tensor shift, Tensor into, Tensor? grad, out Tensor? gScale, out Tensor? gShift)
    {
        long rows = p.shape[0];
        int d = checked((int)p.shape[1]), w = Vector<short>.Count, wf = Vector<float>.Count;
        if (scale.numel() != d || shift.numel() != d || !into.is_contiguous() || into.dtype != Bf16 || !into.shape.SequenceEqual(p.shape)
            || grad is not null && (!grad.is_contiguous() || grad.dtype != Bf16 || !grad.shape.SequenceEqual(p.shape)))
            throw new ArgumentException("AffineRelu kernel needs contiguous bfloat16 [N, d] matrices and float32 [d] vectors");
        short* pp = ShortPtr(p), po = ShortPtr(into), pg = grad is null ? null : ShortPtr(grad);
        float* psc = (float*)Unsafe.AsPointer(ref MemoryMarshal.GetReference(scale.bytes));
        float* psh = (float*)Unsafe.AsPointer(ref MemoryMarshal.GetReference(shift.bytes));
        bool backward = grad is not null;
        var partial = new System.Collections.Concurrent.ConcurrentBag<(float[] Scale, float[] Shift)>();
        ForRowRanges(rows, (start, end) =>
        {
            var accScale = backward ? new float[d] : null;
            var accShift = backward ? new float[d] : null;
            fixed (float* pas = accScale, pah = accShift)
            {
                for (long r = start; r < end; r++)
                {
                    short* prow = pp + r * d, orow = po + r * d, grow = backward ? pg + r * d : null;
                    int j = 0;
                    for (; j + w <= d; j += w)
                    {
                        Vector.Widen(Vector.AsVectorUInt16(Unsafe.ReadUnaligned<Vector<short>>(prow + j)), out var lo, out var hi);
                        var xLo = Vector.AsVectorSingle(lo << 16);
                        var xHi = Vector.AsVectorSingle(hi << 16);
                        var sLo = Unsafe.ReadUnaligned<Vector<float>>(psc + j);
                        var sHi = Unsafe.ReadUnaligned<Vector<float>>(psc + j + wf);
                        var aLo = RoundBits(Vector.AsVectorUInt32(xLo * sLo + Unsafe.ReadUnaligned<Vector<float>>(psh + j)));
                        var aHi = RoundBits(Vector.AsVectorUInt32(xHi * sHi + Unsafe.ReadUnaligned<Vector<float>>(psh + j + wf)));
                        var a = Vector.AsVectorInt16(Vector.Narrow(aLo, aHi));
                        var positive = Vector.GreaterThan(a, Vector<short>.Zero) & Vector.LessThanOrEqual(a, new Vector<short>(0x7F80));
                        if (!backward)
                        {
                            Unsafe.WriteUnaligned(orow + j, a & positive);
                            continue;
                        }
                        Vector.Widen(Vector.AsVectorUInt16(Unsafe.ReadUnaligned<Vector<short>>(grow + j) & positive), out var gl, out var gh);
                        var gLo = Vector.AsVectorSingle(gl << 16);
                        var gHi = Vector.AsVectorSingle(gh << 16);
                        Unsafe.WriteUnaligned(orow + j, Vector.AsVectorInt16(Vector.Narrow(
                            RoundBits(Vector.AsVectorUInt32(gLo * sLo)), RoundBits(Vector.AsVectorUInt32(gHi * sHi)))));
                        Unsafe.WriteUnaligned(pas + j, Unsafe.ReadUnaligned<Vector<float>>(pas + j) + gLo * xLo);
                        Unsafe.WriteUnaligned(pas + j + wf, Unsafe.ReadUnaligned<Vector<float>>(pas + j + wf) + gHi * xHi);
                        Unsafe.WriteUnaligned(pah + j, Unsafe.ReadUnaligned<Vector<float>>(pah + j) + gLo);
                        Unsafe.WriteUnaligned(pah + j + wf, Unsafe.ReadUnaligned<Vector<float>>(pah + j + wf) + gHi);
                    }
                    for (; j < d; j++)
                    {
                        float x = BitConverter.Int32BitsToSingle((ushort)prow[j] << 16);
                        uint bits = BitConverter.SingleToUInt32Bits(x * psc[j] + psh[j]);
                        short a = (short)((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16);
                        bool positive = a > 0 && a <= 0x7F80;
                        if (!backward)
                        {
                            orow[j] = positive ? a : (short)0;
                            continue;
                        }
                        float g = positive ? BitConverter.Int32BitsToSingle((ushort)grow[j] << 16) : 0f;
                        uint gb = BitConverter.SingleToUInt32Bits(g * psc[j]);
                        orow[j] = (short)((gb + 0x7FFF + ((gb >> 16) & 1)) >> 16);
                        pas[j] += g * x;
                        pah[j] += g;
                    }
                }
            }
            if (backward) partial.Add((accScale!, accShift!));
        });
        gScale = gShift = null;
        if (!backward) return;
        var ts = new float[d];
        var th = new float[d];
        foreach (var (a, b) in partial)
            for (int j = 0; j < d; j++) { ts[j] += a[j]; th[j] += b[j]; }
        gScale = tensor(ts);
        gShift = tensor(th);
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
            return WherePositive(gate, values);
        }

        public override List<Tensor> backward(autograd.AutogradContext ctx, Tensor grad)
        {
            if (grad is null || grad.IsInvalid) return [null!, null!];
            var gate = ctx.get_saved_variables()[0];
            using var scope = NewDisposeScope();
            var g = ToBf16(grad).contiguous();
            return [WherePositive(gate, g, g).MoveToOuterDisposeScope(), null!];
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
            var (active, kernel) = JumpReluKernel(p, th, bandwidth / 2, f, null, out _);
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
            JumpReluKernel(pre, th, bandwidth / 2, g, g, out var kernelSums);
            var gTheta = kernelSums!.to(theta.dtype).mul_(theta.detach()).mul_(-1.0 / bandwidth);
            return [g.MoveToOuterDisposeScope(), gTheta.MoveToOuterDisposeScope(), null!, null!];
        }
    }

    /// <summary>
    /// One pass over bfloat16 pre-activations [N, d] and float32 thresholds θ [d]. Forward (<paramref name="grad"/> null):
    /// <paramref name="into"/> = pre·[pre &gt; θ]; returns the per-column counts of pre &gt; θ and of |pre − θ| &lt; h.
    /// Backward: <paramref name="into"/> (may be <paramref name="grad"/>) = grad·[pre &gt; θ] and
    /// <paramref name="kernelSums"/> = Σ_n grad·[|pre − θ| &lt; h] [d] float32; returns nothing (nulls).
    /// </summary>
    private static (Tensor Active, Tensor Kernel) JumpReluKernel(Tensor pre, Tensor theta, double h, Tensor into, Tensor? grad, out Tensor? kernelSums)
    {
        Bf16Kernel(pre, "JumpRelu");
        long rows = pre.shape[0];
        int d = checked((int)pre.shape[1]), w = Vector<short>.Count, wf = Vector<float>.Count;
        if (!pre.is_contiguous() || theta.dtype != ScalarType.Float32 || theta.numel() != d || !into.is_contiguous() || into.dtype != Bf16
            || grad is not null && (!grad.is_contiguous() || grad.dtype != Bf16))
            throw new ArgumentException("JumpRelu kernel needs contiguous bfloat16 [N, d] matrices and float32 θ [d]");
        short* pp = ShortPtr(pre), po = ShortPtr(into), pg = grad is null ? null : ShortPtr(grad);
        float* pt = (float*)Unsafe.AsPointer(ref MemoryMarshal.GetReference(theta.bytes));
        bool backward = grad is not null;
        var half = new Vector<float>((float)h);
        var partial = new System.Collections.Concurrent.ConcurrentBag<(long[] Active, long[] Kernel, float[] Sums)>();
        ForRowRanges(rows, (start, end) =>
        {
            var active = backward ? null : new long[d];
            var kernel = backward ? null : new long[d];
            var sums = backward ? new float[d] : null;
            var accA = new short[d];
            var accK = new short[d];
            fixed (short* pa = accA, pk = accK)
            fixed (float* ps = sums)
            {
                for (long r0 = start; r0 < end; r0 += short.MaxValue)
                {
                    long r1 = Math.Min(end, r0 + short.MaxValue);
                    for (long r = r0; r < r1; r++)
                    {
                        short* prow = pp + r * d, orow = po + r * d, grow = backward ? pg + r * d : null;
                        int j = 0;
                        for (; j + w <= d; j += w)
                        {
                            var v = Unsafe.ReadUnaligned<Vector<short>>(prow + j);
                            Vector.Widen(v, out var lo, out var hi);
                            var fLo = Vector.AsVectorSingle(lo << 16);
                            var fHi = Vector.AsVectorSingle(hi << 16);
                            var tLo = Unsafe.ReadUnaligned<Vector<float>>(pt + j);
                            var tHi = Unsafe.ReadUnaligned<Vector<float>>(pt + j + wf);
                            var mask = Vector.Narrow(Vector.GreaterThan(fLo, tLo), Vector.GreaterThan(fHi, tHi));
                            var kLo = Vector.LessThan(Vector.Abs(fLo - tLo), half);
                            var kHi = Vector.LessThan(Vector.Abs(fHi - tHi), half);
                            if (!backward)
                            {
                                Unsafe.WriteUnaligned(orow + j, v & mask);
                                Unsafe.WriteUnaligned(pa + j, Unsafe.ReadUnaligned<Vector<short>>(pa + j) - mask);
                                Unsafe.WriteUnaligned(pk + j, Unsafe.ReadUnaligned<Vector<short>>(pk + j) - Vector.Narrow(kLo, kHi));
                                continue;
                            }
                            var gv = Unsafe.ReadUnaligned<Vector<short>>(grow + j);
                            Unsafe.WriteUnaligned(orow + j, gv & mask);
                            Vector.Widen(gv, out var gLo, out var gHi);
                            Unsafe.WriteUnaligned(ps + j, Unsafe.ReadUnaligned<Vector<float>>(ps + j) + (Vector.AsVectorSingle(gLo << 16) & Vector.AsVectorSingle(kLo)));
                            Unsafe.WriteUnaligned(ps + j + wf, Unsafe.ReadUnaligned<Vector<float>>(ps + j + wf) + (Vector.AsVectorSingle(gHi << 16) & Vector.AsVectorSingle(kHi)));
                        }
                        for (; j < d; j++)
                        {
                            float x = BitConverter.Int32BitsToSingle((ushort)prow[j] << 16), t = pt[j];
                            bool m = x > t, k = Math.Abs(x - t) < h;
                            if (!backward)
                            {
                                orow[j] = m ? prow[j] : (short)0;
                                if (m) pa[j]++;
                                if (k) pk[j]++;
                                continue;
                            }
                            short gj = grow[j];
                            orow[j] = m ? gj : (short)0;
                            if (k) ps[j] += BitConverter.Int32BitsToSingle((ushort)gj << 16);
                        }
                    }
                    if (backward) continue;
                    for (int j = 0; j < d; j++)
                    {
                        active![j] += (ushort)pa[j]; pa[j] = 0;
                        kernel![j] += (ushort)pk[j]; pk[j] = 0;
                    }
                }
            }
            partial.Add((active!, kernel!, sums!));
        });
        kernelSums = null;
        if (backward)
        {
            var total = new float[d];
            foreach (var p in partial)
                for (int j = 0; j < d; j++) total[j] += p.Sums[j];
            kernelSums = tensor(total);
            return (null!, null!);
        }
        var a = new long[d];
        var k = new long[d];
        foreach (var p in partial)
            for (int j = 0; j < d; j++) { a[j] += p.Active[j]; k[j] += p.Kernel[j]; }
        return (tensor(a), tensor(k));
    }
}
