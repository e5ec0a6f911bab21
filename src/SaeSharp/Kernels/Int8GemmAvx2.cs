using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace SaeSharp.Kernels;

/// <summary>
/// <see cref="Int8Gemm.Multiply"/> on the AVX2 path, blocked for its 16 ymm registers: each thread takes a contiguous
/// range of rows and walks it in blocks of <see cref="BlockRows"/> rows (their bytes stay in L1) against every weight
/// panel, five rows × 16 columns per tile (10 accumulators, both weight vectors loaded once for the five rows), and
/// dequantises each tile in vectors straight into the output. The int32 sums are exact and the same as the tile kernel's
/// (<c>vpmaddubsw</c> pairs below 2¹⁵ with |p| ≤ 63, <c>vpmaddwd</c> by ones, <c>vpaddd</c>); the dequantisation is the
/// same float32 operations in the same order, so the output is bit for bit the tile kernel's. On the AVX-VNNI path
/// <see cref="TileVnni"/> takes six rows per tile: one <c>vpdpbusd</c> per row and weight vector leaves the registers for
/// twelve accumulators, and its sums (|p| ≤ 127, no 16-bit intermediate) are exact too. Where vector integer multiplies
/// issue on one pipe (AMD Zen, Zen+, Zen 2: <see cref="ShiftWidening"/>) <see cref="TileShift"/> runs instead, on rows
/// quantised to 63 levels: two <c>vpmaddubsw</c> added in int16 and widened without a multiply, two multiplies per 64
/// products instead of four (docs/exact-topk.md, BENCHMARKS.md "llvm-mca: the int8 candidate pass on a modelled Zen 2").
/// </summary>
internal static unsafe class Int8GemmAvx2
{
    /// <summary>Rows per register tile.</summary>
    public const int TileRows = 5;

    /// <summary>Rows per register tile on the AVX-VNNI path.</summary>
    public const int VnniTileRows = 6;

    /// <summary>Rows per call of <see cref="TileShift"/> (which runs them one after the other).</summary>
    public const int ShiftTileRows = 6;

    /// <summary>Environment variable that chooses the AVX2 products' widening: <c>shift</c> (<see cref="TileShift"/>, rows
    /// at 63 levels) or <c>madd</c> (<see cref="Tile"/>, 127 levels); unset, <see cref="ShiftWidening"/> follows the CPU.</summary>
    public const string WideningVariable = "SAESHARP_INT8_WIDEN";

    /// <summary>Whether the AVX2 path runs <see cref="TileShift"/>: <c>SAESHARP_INT8_WIDEN</c>, else on AMD family 23 (Zen,
    /// Zen+, Zen 2) and Hygon family 24, whose vector integer multiplies issue on one pipe (llvm-mca's znver2 model: 26.9
    /// int8 products a cycle against 16 for <see cref="Tile"/> and for float32 FMAs). Elsewhere multiplies issue two a
    /// cycle and <see cref="Tile"/>, with fewer other instructions, is the faster one.</summary>
    public static bool ShiftWidening => Widening.Value;

    private static readonly Lazy<bool> Widening = new(() =>
    {
        var v = Environment.GetEnvironmentVariable(WideningVariable)?.Trim().ToLowerInvariant();
        if (v == "shift") return true;
        if (v == "madd") return false;
        if (!string.IsNullOrEmpty(v)) throw new SaeSharpException($"{WideningVariable}={v}: expected shift or madd");
        var (family, _) = CpuKernels.FamilyModel;
        return (CpuKernels.Vendor == "AuthenticAMD" && family == 23) || (CpuKernels.Vendor == "HygonGenuine" && family == 24);
    });

    /// <summary>Rows per cache block: 30 rows of 512 bytes (d_in 512) and one 8 KB panel fill about 23 KB of L1 (a
    /// multiple of both tiles).</summary>
    private const int BlockRows = 6 * TileRows;

    /// <summary>Whether this kernel runs the products of weights packed for <paramref name="path"/>.</summary>
    public static bool Applies(KernelPath path) =>
        (path == KernelPath.Avx2 && Avx2.IsSupported) || (path == KernelPath.AvxVnni && AvxVnni.IsSupported);

    /// <inheritdoc cref="Int8Gemm.Multiply"/>
    public static void Multiply(byte* xq, float[] xScale, int rows, Int8Gemm.Weights w, float* bias, float* output)
    {
        if (w.Path == KernelPath.AvxVnni) Int8Gemm.MultiplyBlocked(xq, xScale, rows, w, bias, output, VnniTileRows, BlockRows, &TileVnni);
        else if (w.XLevels == 63) Int8Gemm.MultiplyBlocked(xq, xScale, rows, w, bias, output, ShiftTileRows, BlockRows, &TileShift);
        else Int8Gemm.MultiplyBlocked(xq, xScale, rows, w, bias, output, TileRows, BlockRows, &Tile);
    }

    /// <summary>out[l, c] = (Σ_i x[l, i]·panel[i, c] − corr[c])·(xScale[l]·colScale[c]) + bias[c] for the
    /// <paramref name="tile"/> (≤ 5) rows at <paramref name="x"/> (stride <paramref name="kp"/>) and one packed panel;
    /// output rows <paramref name="ldo"/> floats apart.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Tile(byte* x, int kp, int tile, sbyte* panel, int* corr, float* colScale, float* bias, float* xScale, float* o, int ldo)
    {
        var ones = Vector256.Create((short)1);
        Vector256<int> a0 = default, a1 = default, b0 = default, b1 = default, c0 = default, c1 = default;
        Vector256<int> d0 = default, d1 = default, e0 = default, e1 = default;
        // Rows past the tile repeat row 0 (computed, never stored).
        byte* x1 = x + (tile > 1 ? kp : 0), x2 = x + (tile > 2 ? 2 * kp : 0), x3 = x + (tile > 3 ? 3 * kp : 0), x4 = x + (tile > 4 ? 4 * kp : 0);
        for (int i = 0; i < kp; i += 4)
        {
            var w0 = Avx.LoadVector256(panel).AsSByte();
            var w1 = Avx.LoadVector256(panel + 32).AsSByte();
            panel += 64;
            var v = Vector256.Create(*(int*)(x + i)).AsByte();
            a0 += Avx2.MultiplyAddAdjacent(Avx2.MultiplyAddAdjacent(v, w0), ones);
            a1 += Avx2.MultiplyAddAdjacent(Avx2.MultiplyAddAdjacent(v, w1), ones);
            v = Vector256.Create(*(int*)(x1 + i)).AsByte();
            b0 += Avx2.MultiplyAddAdjacent(Avx2.MultiplyAddAdjacent(v, w0), ones);
            b1 += Avx2.MultiplyAddAdjacent(Avx2.MultiplyAddAdjacent(v, w1), ones);
            v = Vector256.Create(*(int*)(x2 + i)).AsByte();
            c0 += Avx2.MultiplyAddAdjacent(Avx2.MultiplyAddAdjacent(v, w0), ones);
            c1 += Avx2.MultiplyAddAdjacent(Avx2.MultiplyAddAdjacent(v, w1), ones);
            v = Vector256.Create(*(int*)(x3 + i)).AsByte();
            d0 += Avx2.MultiplyAddAdjacent(Avx2.MultiplyAddAdjacent(v, w0), ones);
            d1 += Avx2.MultiplyAddAdjacent(Avx2.MultiplyAddAdjacent(v, w1), ones);
            v = Vector256.Create(*(int*)(x4 + i)).AsByte();
            e0 += Avx2.MultiplyAddAdjacent(Avx2.MultiplyAddAdjacent(v, w0), ones);
            e1 += Avx2.MultiplyAddAdjacent(Avx2.MultiplyAddAdjacent(v, w1), ones);
        }
        Store(o, a0, a1, xScale[0], corr, colScale, bias);
        if (tile > 1) Store(o + ldo, b0, b1, xScale[1], corr, colScale, bias);
        if (tile > 2) Store(o + 2 * ldo, c0, c1, xScale[2], corr, colScale, bias);
        if (tile > 3) Store(o + 3 * ldo, d0, d1, xScale[3], corr, colScale, bias);
        if (tile > 4) Store(o + 4 * ldo, e0, e1, xScale[4], corr, colScale, bias);
    }

    /// <summary><see cref="Tile"/> with <c>vpdpbusd</c>, for ≤ 6 rows.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void TileVnni(byte* x, int kp, int tile, sbyte* panel, int* corr, float* colScale, float* bias, float* xScale, float* o, int ldo)
    {
        Vector256<int> a0 = default, a1 = default, b0 = default, b1 = default, c0 = default, c1 = default;
        Vector256<int> d0 = default, d1 = default, e0 = default, e1 = default, f0 = default, f1 = default;
        // Rows past the tile repeat row 0 (computed, never stored).
        byte* x1 = x + (tile > 1 ? kp : 0), x2 = x + (tile > 2 ? 2 * kp : 0), x3 = x + (tile > 3 ? 3 * kp : 0);
        byte* x4 = x + (tile > 4 ? 4 * kp : 0), x5 = x + (tile > 5 ? 5 * kp : 0);
        for (int i = 0; i < kp; i += 4)
        {
            var w0 = Avx.LoadVector256(panel).AsSByte();
            var w1 = Avx.LoadVector256(panel + 32).AsSByte();
            panel += 64;
            var v = Vector256.Create(*(int*)(x + i)).AsByte();
            a0 = AvxVnni.MultiplyWideningAndAdd(a0, v, w0);
            a1 = AvxVnni.MultiplyWideningAndAdd(a1, v, w1);
            v = Vector256.Create(*(int*)(x1 + i)).AsByte();
            b0 = AvxVnni.MultiplyWideningAndAdd(b0, v, w0);
            b1 = AvxVnni.MultiplyWideningAndAdd(b1, v, w1);
            v = Vector256.Create(*(int*)(x2 + i)).AsByte();
            c0 = AvxVnni.MultiplyWideningAndAdd(c0, v, w0);
            c1 = AvxVnni.MultiplyWideningAndAdd(c1, v, w1);
            v = Vector256.Create(*(int*)(x3 + i)).AsByte();
            d0 = AvxVnni.MultiplyWideningAndAdd(d0, v, w0);
            d1 = AvxVnni.MultiplyWideningAndAdd(d1, v, w1);
            v = Vector256.Create(*(int*)(x4 + i)).AsByte();
            e0 = AvxVnni.MultiplyWideningAndAdd(e0, v, w0);
            e1 = AvxVnni.MultiplyWideningAndAdd(e1, v, w1);
            v = Vector256.Create(*(int*)(x5 + i)).AsByte();
            f0 = AvxVnni.MultiplyWideningAndAdd(f0, v, w0);
            f1 = AvxVnni.MultiplyWideningAndAdd(f1, v, w1);
        }
        Store(o, a0, a1, xScale[0], corr, colScale, bias);
        if (tile > 1) Store(o + ldo, b0, b1, xScale[1], corr, colScale, bias);
        if (tile > 2) Store(o + 2 * ldo, c0, c1, xScale[2], corr, colScale, bias);
        if (tile > 3) Store(o + 3 * ldo, d0, d1, xScale[3], corr, colScale, bias);
        if (tile > 4) Store(o + 4 * ldo, e0, e1, xScale[4], corr, colScale, bias);
        if (tile > 5) Store(o + 5 * ldo, f0, f1, xScale[5], corr, colScale, bias);
    }

    /// <summary><see cref="Tile"/> for ≤ 6 rows stored as q + 64 (q ∈ [−63, 63], so bytes ≤ 127) against |p| ≤ 63. Per
    /// 8 inputs, two <c>vpmaddubsw</c> are added in int16: each int16 holds four products, |Σ| ≤ 4·127·63 = 32,004 &lt;
    /// 2¹⁵ (no saturation, no wrap). Each int32 lane then holds an int16 pair (hi, lo); flipping lo's sign bit makes the
    /// lane hi·2¹⁶ + (lo + 2¹⁵) exactly, so T accumulates the flipped lanes and H = Σ hi (<c>vpsrad</c> by 16), both in
    /// int32, and after m such steps Σ lo + Σ hi = T − 2¹⁶·H − 2¹⁵·m + H modulo 2³², which is the exact sum since
    /// |Σ| ≤ 127·63·Kp &lt; 2³¹.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void TileShift(byte* x, int kp, int tile, sbyte* panel, int* corr, float* colScale, float* bias, float* xScale, float* o, int ldo)
    {
        var flip = Vector256.Create(0x8000);
        var bias15 = Vector256.Create(unchecked((int)(32768L * ((kp + 7) / 8))));
        // One row at a time: four accumulators leave the weights to memory operands (sixteen ymm registers do not hold
        // two rows' eight accumulators, four weight vectors and the temporaries).
        for (int l = 0; l < tile; l++)
        {
            byte* xp = x + (long)l * kp, end = xp + kp;
            sbyte* p = panel;
            Vector256<int> t0 = default, h0 = default, t1 = default, h1 = default;
            // 32 inputs per iteration, pointers as counters: the loop's own instructions cost dispatch slots.
            for (; xp + 32 <= end; xp += 32, p += 512)
            {
                ShiftStep(xp, p, flip, ref t0, ref h0, ref t1, ref h1);
                ShiftStep(xp + 8, p + 128, flip, ref t0, ref h0, ref t1, ref h1);
                ShiftStep(xp + 16, p + 256, flip, ref t0, ref h0, ref t1, ref h1);
                ShiftStep(xp + 24, p + 384, flip, ref t0, ref h0, ref t1, ref h1);
            }
            for (; xp + 8 <= end; xp += 8, p += 128) ShiftStep(xp, p, flip, ref t0, ref h0, ref t1, ref h1);
            if (xp < end)
            {
                // The last group of four inputs alone: one vpmaddubsw, |Σ| ≤ 2·127·63.
                var v = Vector256.Create(*(int*)xp).AsByte();
                Widen(Avx2.MultiplyAddAdjacent(v, Avx.LoadVector256(p).AsSByte()), flip, ref t0, ref h0);
                Widen(Avx2.MultiplyAddAdjacent(v, Avx.LoadVector256(p + 32).AsSByte()), flip, ref t1, ref h1);
            }
            Store(o + (long)l * ldo, Join(t0, h0, bias15), Join(t1, h1, bias15), xScale[l], corr, colScale, bias);
        }
    }

    /// <summary>Eight inputs of one row in <see cref="TileShift"/>: the two groups of four at <paramref name="x"/> against
    /// the panel's 128 bytes at <paramref name="p"/>, each column vector's two <c>vpmaddubsw</c> added in int16.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void ShiftStep(byte* x, sbyte* p, Vector256<int> flip, ref Vector256<int> t0, ref Vector256<int> h0, ref Vector256<int> t1, ref Vector256<int> h1)
    {
        var v = Vector256.Create(*(int*)x).AsByte();
        var s0 = Avx2.MultiplyAddAdjacent(v, Avx.LoadVector256(p).AsSByte());
        var s1 = Avx2.MultiplyAddAdjacent(v, Avx.LoadVector256(p + 32).AsSByte());
        v = Vector256.Create(*(int*)(x + 4)).AsByte();
        Widen(s0 + Avx2.MultiplyAddAdjacent(v, Avx.LoadVector256(p + 64).AsSByte()), flip, ref t0, ref h0);
        Widen(s1 + Avx2.MultiplyAddAdjacent(v, Avx.LoadVector256(p + 96).AsSByte()), flip, ref t1, ref h1);
    }

    /// <summary>One step of <see cref="TileShift"/>: t += s with lo's sign bit flipped, h += its hi.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Widen(Vector256<short> s, Vector256<int> flip, ref Vector256<int> t, ref Vector256<int> h)
    {
        var f = s.AsInt32() ^ flip;
        t += f;
        h += Avx2.ShiftRightArithmetic(f, 16);
    }

    /// <summary><see cref="TileShift"/>'s exact sums from T, H and 2¹⁵·m (wrapping int32 arithmetic).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<int> Join(Vector256<int> t, Vector256<int> h, Vector256<int> bias15) =>
        t - Avx2.ShiftLeftLogical(h, 16) - bias15 + h;

    /// <summary>16 outputs of one row: (float)(acc − corr)·(s·colScale) + bias, in <see cref="Int8Gemm"/>'s order.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Store(float* o, Vector256<int> lo, Vector256<int> hi, float s, int* corr, float* colScale, float* bias)
    {
        var vs = Vector256.Create(s);
        var f0 = Avx.ConvertToVector256Single(lo - Avx.LoadVector256(corr)) * (vs * Avx.LoadVector256(colScale)) + Avx.LoadVector256(bias);
        var f1 = Avx.ConvertToVector256Single(hi - Avx.LoadVector256(corr + 8)) * (vs * Avx.LoadVector256(colScale + 8)) + Avx.LoadVector256(bias + 8);
        Avx.Store(o, f0);
        Avx.Store(o + 8, f1);
    }
}
