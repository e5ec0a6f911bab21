using SaeSharp.Kernels;

namespace SaeSharp.Tests.Kernels;

/// <summary><see cref="Int8Gemm.Multiply"/> on every int8 path this CPU runs (the blocked AVX2 kernel included, and on
/// AVX2 its shift-widened kernel with rows at 63 levels) against integer dot products computed here: inputs are integers
/// whose largest magnitude per row is the level count, so the quantisation reproduces them exactly (scales 1) and the
/// output must equal Σ q·p + bias exactly.</summary>
public unsafe class Int8GemmTests
{
    /// <summary>Each int8 path with its row levels (127), and AVX2 with 63 as well.</summary>
    public static IEnumerable<(KernelPath Path, int RowLevels)> Variants() =>
        CpuKernels.Supported.Where(p => p >= KernelPath.Scalar && p != KernelPath.Avx512Bf16)
            .SelectMany(p => p == KernelPath.Avx2 ? new[] { (p, 127), (p, 63) } : new[] { (p, 127) });

    public static TheoryData<KernelPath, int, int, int, int> PathsAndShapes()
    {
        var data = new TheoryData<KernelPath, int, int, int, int>();
        foreach (var (p, xl) in Variants())
            foreach (var (rows, k, cols) in new[] { (1, 1, 16), (4, 3, 16), (5, 5, 32), (7, 17, 48), (31, 130, 16), (33, 64, 64), (61, 259, 32), (8, 96, 16) })
                data.Add(p, xl, rows, k, cols);
        return data;
    }

    /// <summary>Random integers in [−L, L] (x, L the row levels) and [−P, P] (w), each row's first entry ±L, and two
    /// adversarial rows: x all +L against w all +P and all −P (every <c>vpmaddubsw</c> pair at its extreme, 2·(2L + 1)·P;
    /// with L = 63 every int16 sum of two pairs at 4·127·63 = 32,004).</summary>
    private static (float[] X, float[] W) Integers(int rows, int k, int cols, int levels, int seed, int xLevels = 127)
    {
        var rng = new Random(seed);
        var x = new float[rows * k];
        var w = new float[cols * k];
        for (int r = 0; r < rows; r++)
            for (int i = 0; i < k; i++)
                x[r * k + i] = i == 0 ? (rng.Next(2) == 0 ? xLevels : -xLevels) : rng.Next(-xLevels, xLevels + 1);
        for (int j = 0; j < cols; j++)
            for (int i = 0; i < k; i++)
                w[j * k + i] = i == 0 ? (rng.Next(2) == 0 ? levels : -levels) : rng.Next(-levels, levels + 1);
        for (int i = 0; i < k; i++)
        {
            x[i] = xLevels;
            w[i] = levels;
            w[k + i] = -levels;
        }
        return (x, w);
    }

    [Theory]
    [MemberData(nameof(PathsAndShapes))]
    public void Products_equal_integer_dot_products(KernelPath path, int xLevels, int rows, int k, int cols)
    {
        int levels = Int8Gemm.WeightLevels(path);
        var (x, w) = Integers(rows, k, cols, levels, seed: rows * 1000 + k, xLevels);
        var bias = Enumerable.Range(0, cols).Select(j => 0.25f * (j % 7) - 0.5f).ToArray();
        var output = new float[rows * cols];
        var tiles = new float[rows * cols];
        int kp = (k + 3) & ~3;
        var q = new byte[rows * kp];
        var scale = new float[rows];
        fixed (float* px = x, pw = w, pb = bias, po = output, pt = tiles)
        fixed (byte* pq = q)
        {
            using var packed = Int8Gemm.Pack(pw, cols, k, path, threads: 2, vectors: true, xLevels);
            Int8Gemm.QuantizeRows(px, rows, k, pq, scale, new double[rows], new double[rows], threads: 2, xLevels);
            Assert.All(scale, s => Assert.Equal(1f, s));
            Assert.All(packed.Scale, s => Assert.Equal(1f, s));
            Int8Gemm.Multiply(pq, scale, rows, packed, pb, po, 2);
            Int8Gemm.MultiplyTiles(pq, scale, rows, packed, pb, pt, 2);
        }
        for (int r = 0; r < rows; r++)
            for (int j = 0; j < cols; j++)
            {
                long dot = 0;
                for (int i = 0; i < k; i++) dot += (long)x[r * k + i] * (long)w[j * k + i];
                Assert.True(output[r * cols + j] == dot + bias[j], $"{path} ({r}, {j}): {output[r * cols + j]} != {dot} + {bias[j]}");
                Assert.True(tiles[r * cols + j] == output[r * cols + j], $"{path} ({r}, {j}): tile kernel {tiles[r * cols + j]}");
            }
    }

    /// <summary>On real-valued inputs (non-trivial scales) each path's kernel writes bit for bit what the 4 × 16 tile
    /// kernel writes: same exact int32 sums, same float32 dequantisation.</summary>
    [Theory]
    [InlineData(37, 45, 48)]
    [InlineData(64, 512, 128)]
    public void Path_kernel_matches_the_tile_kernel_bit_for_bit(int rows, int k, int cols)
    {
        var rng = new Random(7);
        var x = Enumerable.Range(0, rows * k).Select(_ => (float)(rng.NextDouble() * 2 - 1) * 3).ToArray();
        var w = Enumerable.Range(0, cols * k).Select(_ => (float)(rng.NextDouble() * 2 - 1) * 0.1f).ToArray();
        var bias = Enumerable.Range(0, cols).Select(_ => (float)rng.NextDouble()).ToArray();
        foreach (var (path, xLevels) in Variants().Where(v => v.Path > KernelPath.Scalar))
        {
            int kp = (k + 3) & ~3;
            var q = new byte[rows * kp];
            var scale = new float[rows];
            var a = new float[rows * cols];
            var b = new float[rows * cols];
            fixed (float* px = x, pw = w, pb = bias, pa = a, pbb = b)
            fixed (byte* pq = q)
            {
                using var packed = Int8Gemm.Pack(pw, cols, k, path, threads: 2, vectors: true, xLevels);
                Int8Gemm.QuantizeRows(px, rows, k, pq, scale, new double[rows], new double[rows], threads: 2, xLevels);
                Int8Gemm.Multiply(pq, scale, rows, packed, pb, pa, 2);
                Int8Gemm.MultiplyTiles(pq, scale, rows, packed, pb, pbb, 2);
            }
            for (int e = 0; e < a.Length; e++)
                Assert.True(BitConverter.SingleToInt32Bits(a[e]) == BitConverter.SingleToInt32Bits(b[e]), $"{path}/{xLevels} entry {e}: {a[e]} vs {b[e]}");
        }
    }
}

/// <summary><see cref="Int8Gemm.Pack(float*, int, int, KernelPath, int)"/>'s vector columns against its scalar loop: the
/// same packed bytes, scales and Σq, and the norms to 1e-12 relative, on widths with and without a vector tail, for both
/// level counts, with an all-zero, a non-finite and a half-way (w/t on .5) column; the vector columns packed on three
/// threads (panels split unevenly), the scalar ones on one.</summary>
public unsafe class Int8PackTests
{
    [Theory]
    [InlineData(KernelPath.Avx2, 45)]
    [InlineData(KernelPath.Avx2, 512)]
    [InlineData(KernelPath.AvxVnni, 515)]
    [InlineData(KernelPath.Scalar, 64)]
    public void Vector_columns_pack_as_the_scalar_loop(KernelPath path, int k)
    {
        const int cols = 48;
        int levels = Int8Gemm.WeightLevels(path);
        var rng = new Random(k);
        var w = Enumerable.Range(0, cols * k).Select(_ => (float)(rng.NextDouble() * 2 - 1) * 0.2f).ToArray();
        for (int i = 0; i < k; i++) w[3 * k + i] = 0;                 // all zero
        w[5 * k + k / 2] = float.PositiveInfinity;                     // non-finite: the scalar loop either way
        w[7 * k] = levels;                                             // scale 1 ...
        for (int i = 1; i < k; i++) w[7 * k + i] = (i % 5) - 2 + 0.5f; // ... and values on .5
        int kp = (k + 3) & ~3;
        fixed (float* pw = w)
        {
            using var vec = Int8Gemm.Pack(pw, cols, k, path, threads: 3, vectors: true);
            using var sca = Int8Gemm.Pack(pw, cols, k, path, threads: 1, vectors: false);
            Assert.Equal(sca.Scale, vec.Scale);
            Assert.Equal(sca.Sum, vec.Sum);
            Assert.True(new ReadOnlySpan<sbyte>(sca.Data, cols * kp).SequenceEqual(new ReadOnlySpan<sbyte>(vec.Data, cols * kp)), "packed bytes differ");
            for (int j = 0; j < cols; j++)
            {
                Assert.True(Close(vec.QuantNorm[j], sca.QuantNorm[j]), $"column {j}: ‖t·q‖ {vec.QuantNorm[j]} vs {sca.QuantNorm[j]}");
                Assert.True(Close(vec.ErrorNorm[j], sca.ErrorNorm[j]), $"column {j}: ‖t·q − w‖ {vec.ErrorNorm[j]} vs {sca.ErrorNorm[j]}");
            }
        }
    }

    private static bool Close(double a, double b) => a.Equals(b) || Math.Abs(a - b) <= 1e-12 * Math.Abs(b);
}

/// <summary><see cref="Int8Gemm.QuantizeRows"/> against the scalar quantisation written here: the same bytes and scales,
/// the norms in float64 to 1e-12 relative, on widths with and without a vector tail, with NaN, infinite, all-zero and
/// half-way (x·inv on .5) rows, the rows split over one to four threads.</summary>
public unsafe class Int8QuantizeTests
{
    [Theory]
    [InlineData(7, 1)]
    [InlineData(32, 2)]
    [InlineData(45, 3)]
    [InlineData(512, 2)]
    [InlineData(515, 4)]
    [InlineData(45, 3, 63)]
    [InlineData(512, 2, 63)]
    public void Rows_match_the_scalar_quantisation(int k, int threads, int levels = 127)
    {
        const int rows = 9;
        var rng = new Random(k);
        var x = Enumerable.Range(0, rows * k).Select(_ => (float)(rng.NextDouble() * 2 - 1) * 5).ToArray();
        x[1 * k + k / 2] = float.NaN;
        x[2 * k] = float.PositiveInfinity;
        for (int i = 0; i < k; i++) x[3 * k + i] = 0;
        for (int i = 0; i < k; i++) x[4 * k + i] = (i % 5 - 2) * 0.5f; // max 1, inv 127: products on .5 boundaries
        x[4 * k] = 127f / 127f;
        for (int i = 0; i < k; i++) x[5 * k + i] = -3.5f + i % 8; // −3.5 … 3.5
        int kp = (k + 3) & ~3;
        var q = new byte[rows * kp];
        var scale = new float[rows];
        var norm = new double[rows];
        var err = new double[rows];
        fixed (float* px = x)
        fixed (byte* pq = q)
            Int8Gemm.QuantizeRows(px, rows, k, pq, scale, norm, err, threads, levels);
        for (int r = 0; r < rows; r++)
        {
            float max = 0;
            for (int i = 0; i < k; i++) max = MathF.Max(max, MathF.Abs(x[r * k + i]));
            float s = max > 0 && float.IsFinite(max) ? max / levels : 1f;
            float inv = 1f / s;
            double n = 0, e = 0;
            for (int i = 0; i < kp; i++)
            {
                int qi = i < k ? Math.Clamp((int)MathF.Round(x[r * k + i] * inv), -levels, levels) : 0;
                Assert.Equal((byte)(qi + levels + 1), q[r * kp + i]);
                if (i >= k) continue;
                n += (double)x[r * k + i] * x[r * k + i];
                e += ((double)s * qi - x[r * k + i]) * ((double)s * qi - x[r * k + i]);
            }
            Assert.Equal(s, scale[r]);
            AssertClose(Math.Sqrt(n), norm[r], $"row {r} norm");
            AssertClose(float.IsFinite(max) ? Math.Sqrt(e) : double.PositiveInfinity, err[r], $"row {r} error norm");
        }
    }

    private static void AssertClose(double expected, double actual, string what)
    {
        if (double.IsNaN(expected) || double.IsInfinity(expected)) { Assert.True(expected.Equals(actual), $"{what}: {actual} vs {expected}"); return; }
        Assert.True(Math.Abs(actual - expected) <= 1e-12 * Math.Abs(expected), $"{what}: {actual} vs {expected}");
    }
}
