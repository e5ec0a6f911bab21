using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace SaeSharp.Kernels;

/// <summary>
/// <see cref="Int8Gemm.Multiply"/> on the AVX-512 path, blocked as <see cref="Int8GemmAvx2"/>: each thread takes a
/// contiguous range of rows in blocks of <see cref="BlockRows"/> against every panel, eight rows × 16 columns per tile
/// (one zmm accumulator per row, the panel's weight vector loaded once for the eight rows), and dequantises in vectors
/// straight into the output. Same exact int32 sums (<c>vpmaddubsw</c> pairs below 2¹⁵ with |p| ≤ 63, <c>vpmaddwd</c> by
/// ones) and the same float32 operations as the tile kernel, so the output is bit for bit the tile kernel's.
/// </summary>
internal static unsafe class Int8GemmAvx512
{
    /// <summary>Rows per register tile.</summary>
    public const int TileRows = 8;

    /// <summary>Rows per cache block: 32 rows of 512 bytes (d_in 512) and one 8 KB panel fill about 24 KB of L1.</summary>
    private const int BlockRows = 4 * TileRows;

    /// <summary>Whether this kernel runs the products of weights packed for <paramref name="path"/>.</summary>
    public static bool Applies(KernelPath path) => path == KernelPath.Avx512 && Avx512BW.IsSupported;

    /// <inheritdoc cref="Int8Gemm.Multiply"/>
    public static void Multiply(byte* xq, float[] xScale, int rows, Int8Gemm.Weights w, float* bias, float* output) =>
        Int8Gemm.MultiplyBlocked(xq, xScale, rows, w, bias, output, TileRows, BlockRows, &Tile);

    /// <summary>out[l, c] = (Σ_i x[l, i]·panel[i, c] − corr[c])·(xScale[l]·colScale[c]) + bias[c] for the
    /// <paramref name="tile"/> (≤ 8) rows at <paramref name="x"/> (stride <paramref name="kp"/>) and one packed panel.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Tile(byte* x, int kp, int tile, sbyte* panel, int* corr, float* colScale, float* bias, float* xScale, float* o, int ldo)
    {
        var ones = Vector512.Create((short)1);
        Vector512<int> a0 = default, a1 = default, a2 = default, a3 = default, a4 = default, a5 = default, a6 = default, a7 = default;
        // Rows past the tile repeat row 0 (computed, never stored).
        byte* x1 = x + (tile > 1 ? kp : 0), x2 = x + (tile > 2 ? 2 * kp : 0), x3 = x + (tile > 3 ? 3 * kp : 0);
        byte* x4 = x + (tile > 4 ? 4 * kp : 0), x5 = x + (tile > 5 ? 5 * kp : 0), x6 = x + (tile > 6 ? 6 * kp : 0), x7 = x + (tile > 7 ? 7 * kp : 0);
        for (int i = 0; i < kp; i += 4)
        {
            var wv = Avx512F.LoadVector512(panel).AsSByte();
            panel += 64;
            a0 += Avx512BW.MultiplyAddAdjacent(Avx512BW.MultiplyAddAdjacent(Vector512.Create(*(int*)(x + i)).AsByte(), wv), ones);
            a1 += Avx512BW.MultiplyAddAdjacent(Avx512BW.MultiplyAddAdjacent(Vector512.Create(*(int*)(x1 + i)).AsByte(), wv), ones);
            a2 += Avx512BW.MultiplyAddAdjacent(Avx512BW.MultiplyAddAdjacent(Vector512.Create(*(int*)(x2 + i)).AsByte(), wv), ones);
            a3 += Avx512BW.MultiplyAddAdjacent(Avx512BW.MultiplyAddAdjacent(Vector512.Create(*(int*)(x3 + i)).AsByte(), wv), ones);
            a4 += Avx512BW.MultiplyAddAdjacent(Avx512BW.MultiplyAddAdjacent(Vector512.Create(*(int*)(x4 + i)).AsByte(), wv), ones);
            a5 += Avx512BW.MultiplyAddAdjacent(Avx512BW.MultiplyAddAdjacent(Vector512.Create(*(int*)(x5 + i)).AsByte(), wv), ones);
            a6 += Avx512BW.MultiplyAddAdjacent(Avx512BW.MultiplyAddAdjacent(Vector512.Create(*(int*)(x6 + i)).AsByte(), wv), ones);
            a7 += Avx512BW.MultiplyAddAdjacent(Avx512BW.MultiplyAddAdjacent(Vector512.Create(*(int*)(x7 + i)).AsByte(), wv), ones);
        }
        var c = Avx512F.LoadVector512(corr);
        var cs = Avx512F.LoadVector512(colScale);
        var b = Avx512F.LoadVector512(bias);
        Store(o, a0, xScale[0], c, cs, b);
        if (tile > 1) Store(o + ldo, a1, xScale[1], c, cs, b);
        if (tile > 2) Store(o + 2 * ldo, a2, xScale[2], c, cs, b);
        if (tile > 3) Store(o + 3 * ldo, a3, xScale[3], c, cs, b);
        if (tile > 4) Store(o + 4 * ldo, a4, xScale[4], c, cs, b);
        if (tile > 5) Store(o + 5 * ldo, a5, xScale[5], c, cs, b);
        if (tile > 6) Store(o + 6 * ldo, a6, xScale[6], c, cs, b);
        if (tile > 7) Store(o + 7 * ldo, a7, xScale[7], c, cs, b);
    }

    /// <summary>16 outputs of one row: (float)(acc − corr)·(s·colScale) + bias, in <see cref="Int8Gemm"/>'s order.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Store(float* o, Vector512<int> acc, float s, Vector512<int> corr, Vector512<float> colScale, Vector512<float> bias) =>
        Avx512F.Store(o, Avx512F.ConvertToVector512Single(acc - corr) * (Vector512.Create(s) * colScale) + bias);
}
