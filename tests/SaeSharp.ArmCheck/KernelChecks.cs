using System.Numerics;
using System.Reflection;
using SaeSharp.Kernels;

namespace SaeSharp.ArmCheck;

// Kernel checks shared by the arm64 check program (NEON, under qemu) and SaeSharp.Tests (the x86 paths, KernelChecksTests):
// exact int8 products of a path against the scalar path and a plain loop, and the Vector<T> kernels against plain loops.

/// <summary>Counts and prints check results ("PASS name", "FAIL name: why").</summary>
internal sealed class Checks(Action<string>? write = null)
{
    public int Passed, Failed;
    public List<string> Failures { get; } = [];

    private void Write(string line) => (write ?? Console.WriteLine)(line);

    public void Run(string name, Func<bool> check)
    {
        try
        {
            if (check()) Pass(name);
            else Fail(name, "false");
        }
        catch (Exception e) { Fail(name, $"{e.GetType().Name}: {e.Message}"); }
    }

    /// <summary>Passes when <paramref name="check"/> returns null, else fails with the message it returns.</summary>
    public void Expect(string name, Func<string?> check)
    {
        try
        {
            if (check() is { } why) Fail(name, why);
            else Pass(name);
        }
        catch (Exception e) { Fail(name, $"{e.GetType().Name}: {e.Message}"); }
    }

    public void Pass(string name) { Passed++; Write($"PASS {name}"); }
    public void Fail(string name, string why) { Failed++; Failures.Add($"{name}: {why}"); Write($"FAIL {name}: {why}"); }
}

internal static unsafe class Int8Checks
{
    /// <summary>The int8 products of <paramref name="path"/> (on this CPU) against the scalar path and a plain loop.</summary>
    public static void Run(Checks checks, KernelPath path)
    {
        string name = CpuKernels.Name(path);
        int[] rowsList = [1, 2, 3, 4, 5, 7, 9];
        int[] kList = [1, 2, 3, 4, 5, 7, 15, 16, 17, 31, 64, 100, 257];
        var rng = new Random(14);
        foreach (int cols in new[] { 16, 48 })
            foreach (int k in kList)
                foreach (int rows in rowsList)
                    checks.Expect($"int8 products {name} == scalar == plain loop, rows {rows} k {k} cols {cols}",
                        () => Compare(path, rows, k, cols, rng, threads: 1 + (rows + k) % 2));
        // Long rows at the extreme levels: |Σ q·p| = 127·P·k.
        checks.Expect($"int8 products {name} at extreme levels, k 4099", () => Compare(path, 5, 4099, 32, rng, threads: 2));
        checks.Expect($"int8 {name} extreme sums are ±P·127·k", () =>
        {
            const int k = 4099, cols = 16;
            var x = new float[2 * k];
            var w = new float[cols * k];
            for (int i = 0; i < k; i++) { x[i] = 1; x[k + i] = -3; }
            for (int j = 0; j < cols; j++)
                for (int i = 0; i < k; i++) w[j * k + i] = j % 2 == 0 ? -0.5f : 0.25f;
            var prod = Products(x, 2, w, cols, k, path, 2, out _);
            long levels = Int8Gemm.WeightLevels(path);
            for (int j = 0; j < cols; j++)
            {
                long expect = (j % 2 == 0 ? -1L : 1L) * 127 * levels * k;
                if (prod[j] != expect || prod[cols + j] != -expect) return $"column {j}: {prod[j]}, {prod[cols + j]}; expected {expect}, {-expect}";
            }
            return null;
        });
    }

    /// <summary>Row kinds of x and w: random, all negative, alternating ±1 (the extreme levels), one-hot, zero, huge.</summary>
    private static void Fill(Span<float> row, int kind, Random rng)
    {
        for (int i = 0; i < row.Length; i++)
            row[i] = kind switch
            {
                0 => (float)(rng.NextDouble() * 2 - 1),
                1 => -(float)(rng.NextDouble() + 0.01),
                2 => i % 3 == 0 ? -1 : 1,
                3 => i == row.Length / 2 ? -2.5f : 0,
                4 => 0,
                _ => (float)(rng.NextDouble() - 0.5) * 1e30f,
            };
    }

    private static string? Compare(KernelPath path, int rows, int k, int cols, Random rng, int threads)
    {
        var x = new float[rows * k];
        var w = new float[cols * k];
        for (int r = 0; r < rows; r++) Fill(x.AsSpan(r * k, k), r % 6, rng);
        for (int j = 0; j < cols; j++) Fill(w.AsSpan(j * k, k), (j * 5 + 1) % 6, rng);
        var got = Products(x, rows, w, cols, k, path, threads, out var gotOut);
        var scalar = Products(x, rows, w, cols, k, path, threads, out var scalarOut, kernel: KernelPath.Scalar);
        var plain = PlainProducts(x, rows, w, cols, k, path);
        for (int n = 0; n < got.Length; n++)
        {
            if (got[n] != plain[n] || scalar[n] != plain[n])
                return $"entry {n / cols},{n % cols}: {path} {got[n]} scalar {scalar[n]} plain loop {plain[n]}";
            if (BitConverter.SingleToInt32Bits(gotOut[n]) != BitConverter.SingleToInt32Bits(scalarOut[n]))
                return $"dequantised entry {n / cols},{n % cols}: {path} {gotOut[n]} scalar {scalarOut[n]}";
        }
        return null;
    }

    /// <summary>Σ q·p through <see cref="Int8Gemm.Products"/> with weights packed for <paramref name="path"/> (its weight
    /// levels) and the micro-kernel of <paramref name="kernel"/> (default: the path's own), and the float32 output of
    /// <see cref="Int8Gemm.Multiply"/> (bias 0.5).</summary>
    private static long[] Products(float[] x, int rows, float[] w, int cols, int k, KernelPath path, int threads, out float[] output,
        KernelPath? kernel = null)
    {
        int kp = (k + 3) & ~3;
        var xq = new byte[rows * kp];
        var scale = new float[rows];
        var prod = new int[rows * cols];
        output = new float[rows * cols];
        var bias = Enumerable.Repeat(0.5f, cols).ToArray();
        fixed (float* px = x, pw = w, pb = bias, po = output)
        fixed (byte* pq = xq)
        fixed (int* pp = prod)
        {
            Int8Gemm.QuantizeRows(px, rows, k, pq, scale, new double[rows], new double[rows], threads);
            // Rows at 127 levels on every path, so all paths multiply the same bytes (the AVX2 shift widening's 63-level
            // rows are checked in Int8GemmTests).
            using var packed = Int8Gemm.Pack(pw, cols, k, path, threads, vectors: true, xLevels: 127);
            // The same packed bytes under another kernel (an alias of packed.Data: not disposed).
            var run = kernel is not { } other || other == path ? packed : new Int8Gemm.Weights
            {
                K = packed.K, Cols = packed.Cols, Path = other, Data = packed.Data, Scale = packed.Scale, Sum = packed.Sum,
                QuantNorm = packed.QuantNorm, ErrorNorm = packed.ErrorNorm,
            };
            Int8Gemm.Products(pq, rows, run, pp, threads);
            Int8Gemm.Multiply(pq, scale, rows, run, pb, po, threads);
        }
        return prod.Select(v => (long)v).ToArray();
    }

    /// <summary>Σ_i q_ni·p_ij from the bytes QuantizeRows and Pack produce, read back element by element.</summary>
    private static long[] PlainProducts(float[] x, int rows, float[] w, int cols, int k, KernelPath path)
    {
        int kp = (k + 3) & ~3;
        var xq = new byte[rows * kp];
        var result = new long[rows * cols];
        fixed (float* px = x, pw = w)
        fixed (byte* pq = xq)
        {
            Int8Gemm.QuantizeRows(px, rows, k, pq, new float[rows], new double[rows], new double[rows], threads: 1);
            using var packed = Int8Gemm.Pack(pw, cols, k, path, threads: 1, vectors: true, xLevels: 127);
            for (int r = 0; r < rows; r++)
                for (int j = 0; j < cols; j++)
                {
                    long s = 0;
                    sbyte* panel = packed.Data + (long)(j / Int8Gemm.Panel) * packed.PanelBytes;
                    for (int i = 0; i < k; i++)
                        s += (pq[r * kp + i] - 128L) * panel[(i / 4) * Int8Gemm.Panel * 4 + (j % Int8Gemm.Panel) * 4 + i % 4];
                    result[r * cols + j] = s;
                }
        }
        return result;
    }
}

internal static unsafe class VectorChecks
{
    private const BindingFlags Private = BindingFlags.NonPublic | BindingFlags.Static;

    public static void Run(Checks checks)
    {
        var rng = new Random(7);
        foreach (int d in new[] { 1, 3, 4, 15, 16, 17, 63, 64, 65, 257 })
        {
            var a = Random(rng, d);
            var b = Random(rng, d);
            checks.Expect($"SparseKernels.Dot d {d} within γ·Σ|a·b| of the float64 sum", () =>
            {
                double exact = 0, abs = 0;
                for (int i = 0; i < d; i++) { exact += (double)a[i] * b[i]; abs += Math.Abs((double)a[i] * b[i]); }
                float got;
                fixed (float* pa = a, pb = b) got = SparseKernels.Dot(pa, pb, d);
                double tol = d * Math.Pow(2, -23) * abs + 1e-30;
                return Math.Abs(got - exact) <= tol ? null : $"{got} vs {exact} (tolerance {tol})";
            });
        }

        var axpy = typeof(SparseKernels).GetMethod("Axpy", Private, [typeof(float), typeof(float*), typeof(float*), typeof(long), typeof(long)]);
        if (axpy == null) checks.Fail("SparseKernels.Axpy", "private method not found (renamed? update this check)");
        else
        {
            var f = (delegate*<float, float*, float*, long, long, void>)axpy.MethodHandle.GetFunctionPointer();
            foreach (int d in new[] { 3, 16, 37, 64, 133 })
                checks.Expect($"SparseKernels.Axpy d {d} (range 1..d-1) == plain loop", () =>
                {
                    var x = Random(rng, d);
                    var y = Random(rng, d);
                    var y0 = (float[])y.Clone();
                    const float alpha = -0.37f;
                    fixed (float* px = x, py = y) f(alpha, px, py, 1, d - 1);
                    for (int i = 0; i < d; i++)
                    {
                        bool inRange = i >= 1 && i < d - 1;
                        float mulAdd = y0[i] + alpha * x[i], fused = MathF.FusedMultiplyAdd(alpha, x[i], y0[i]);
                        if (inRange ? y[i] != mulAdd && y[i] != fused : y[i] != y0[i]) return $"entry {i}: {y[i]} vs {mulAdd}";
                    }
                    return null;
                });
        }

        var count = typeof(SparseKernels).GetMethod("CountPositive", Private, [typeof(float*), typeof(float*), typeof(long)]);
        if (count == null) checks.Fail("SparseKernels.CountPositive", "private method not found (renamed? update this check)");
        else
        {
            var f = (delegate*<float*, float*, long, long>)count.MethodHandle.GetFunctionPointer();
            foreach (int d in new[] { 1, 5, 16, 41, 128 })
                foreach (bool withBias in new[] { false, true })
                    checks.Expect($"SparseKernels.CountPositive d {d}{(withBias ? " with a bias" : "")} == plain count", () =>
                    {
                        var x = Random(rng, d);
                        var b = Random(rng, d);
                        if (d > 4) { x[1] = 0; x[2] = -0f; x[3] = float.NaN; b[4] = -x[4]; }
                        long got;
                        fixed (float* px = x, pb = b) got = f(px, withBias ? pb : null, d);
                        long expect = Enumerable.Range(0, d).Count(i => (withBias ? x[i] + b[i] : x[i]) > 0);
                        return got == expect ? null : $"{got} vs {expect}";
                    });
        }

        var mask = typeof(SparseKernels).GetMethod("PositiveMask", Private, [typeof(float*), typeof(float*)]);
        var maskWidth = typeof(SparseKernels).GetField("PositiveMaskWidth", Private);
        if (mask == null || maskWidth == null) checks.Fail("SparseKernels.PositiveMask", "private method or width not found (renamed? update this check)");
        else
        {
            var f = (delegate*<float*, float*, uint>)mask.MethodHandle.GetFunctionPointer();
            int w = (int)maskWidth.GetValue(null)!;
            foreach (bool withBias in new[] { false, true })
                checks.Expect($"SparseKernels.PositiveMask ({w} lanes{(withBias ? ", with a bias" : "")}) == plain mask", () =>
                {
                    var x = Random(rng, w);
                    var b = Random(rng, w);
                    x[0] = float.NaN; x[1] = -0f; x[2] = float.Epsilon; b[3] = -x[3];
                    if (!withBias) b[2] = 0;
                    uint got;
                    fixed (float* px = x, pb = b) got = f(px, withBias ? pb : null);
                    uint expect = 0;
                    for (int l = 0; l < w; l++) if ((withBias ? x[l] + b[l] : x[l]) > 0) expect |= 1u << l;
                    return got == expect ? null : $"{got:x} vs {expect:x}";
                });
        }

        var blockMaxima = typeof(TopKSelection).GetMethod("BlockMaxima", Private, [typeof(float*), typeof(long), typeof(float*)]);
        if (blockMaxima == null) checks.Fail("TopKSelection.BlockMaxima", "private method not found (renamed? update this check)");
        else
        {
            var f = (delegate*<float*, long, float*, bool>)blockMaxima.MethodHandle.GetFunctionPointer();
            foreach (bool nan in new[] { false, true })
                checks.Expect($"TopKSelection.BlockMaxima == plain block maxima{(nan ? " (row with NaN)" : "")}", () =>
                {
                    long d = 16L * Vector<float>.Count * 3, width = d / 16;
                    var x = Random(rng, (int)d);
                    if (nan) x[d / 3] = float.NaN;
                    var maxima = new float[width];
                    bool ok;
                    fixed (float* px = x, pm = maxima) ok = f(px, d, pm);
                    if (ok == nan) return $"NaN-free answer {ok} for a row {(nan ? "with" : "without")} NaN";
                    if (nan) return null;
                    for (long c = 0; c < width; c++)
                    {
                        float m = float.NegativeInfinity;
                        for (long o = c; o < d; o += width) m = Math.Max(m, x[o]);
                        if (maxima[c] != m) return $"block {c}: {maxima[c]} vs {m}";
                    }
                    return null;
                });
        }

        var above = typeof(TopKSelection).GetMethod("Above", Private, [typeof(float*), typeof(long), typeof(float), typeof(int*)]);
        if (above == null) checks.Fail("TopKSelection.Above", "internal method not found (renamed? update this check)");
        else
        {
            var f = (delegate*<float*, long, float, int*, int>)above.MethodHandle.GetFunctionPointer();
            foreach (int d in new[] { 3, 16, 33, 100 })
                checks.Expect($"TopKSelection.Above d {d} == plain filter", () =>
                {
                    var x = Random(rng, d);
                    x[1] = 0; x[2] = -0f; x[d - 1] = float.Epsilon;
                    foreach (float t in new[] { 0.25f, 0f, float.Epsilon, float.NegativeInfinity })
                    {
                        var dst = new int[d];
                        int n;
                        fixed (float* px = x)
                        fixed (int* pd = dst) n = f(px, d, t, pd);
                        var expect = Enumerable.Range(0, d).Where(j => x[j] >= t);
                        if (!dst.Take(n).SequenceEqual(expect)) return $"threshold {t}: positions differ";
                    }
                    return null;
                });
        }

        var heap = typeof(TopKSelection).GetMethod("HeapTopK", Private, [typeof(float*), typeof(long), typeof(int), typeof(float*), typeof(long*)]);
        if (heap == null) checks.Fail("TopKSelection.HeapTopK", "private method not found (renamed? update this check)");
        else
        {
            var f = (delegate*<float*, long, int, float*, long*, void>)heap.MethodHandle.GetFunctionPointer();
            foreach ((int d, int k) in new[] { (7, 3), (64, 5), (100, 17), (257, 32) })
                checks.Expect($"TopKSelection.HeapTopK d {d} k {k} == sorted top k", () =>
                {
                    var x = Random(rng, d);
                    var hv = new float[k];
                    var hi = new long[k];
                    fixed (float* px = x, pv = hv)
                    fixed (long* pi = hi) f(px, d, k, pv, pi);
                    var expect = x.Select((v, i) => (v, i)).OrderByDescending(p => p.v).Take(k).Select(p => p.i).Order();
                    if (!hi.Order().SequenceEqual(expect.Select(i => (long)i))) return "indices differ";
                    return hi.Select((j, n) => x[j] == hv[n]).All(b => b) ? null : "values do not match their indices";
                });
        }

        var widen = typeof(TopKSelection).GetMethod("WidenBf16", Private, [typeof(ushort*), typeof(float*), typeof(float*), typeof(long)]);
        if (widen == null) checks.Fail("TopKSelection.WidenBf16", "private method not found (renamed? update this check)");
        else
        {
            var f = (delegate*<ushort*, float*, float*, long, void>)widen.MethodHandle.GetFunctionPointer();
            foreach (int d in new[] { 5, 16, 40, 96 })
                checks.Expect($"TopKSelection.WidenBf16 d {d} == bits << 16 plus bias", () =>
                {
                    var src = Enumerable.Range(0, d).Select(_ => (ushort)rng.Next(0, 0x7F00)).ToArray();
                    var bias = Random(rng, d);
                    var dst = new float[d];
                    fixed (ushort* ps = src)
                    fixed (float* pb = bias, pd = dst) f(ps, pb, pd, d);
                    for (int i = 0; i < d; i++)
                    {
                        float expect = BitConverter.Int32BitsToSingle(src[i] << 16) + bias[i];
                        if (BitConverter.SingleToInt32Bits(dst[i]) != BitConverter.SingleToInt32Bits(expect)) return $"entry {i}: {dst[i]} vs {expect}";
                    }
                    return null;
                });
        }

        checks.Expect("TopKSelection.Push/Offer keep the k largest", () =>
        {
            const int k = 9;
            var x = Random(rng, 200);
            var hv = new float[k];
            var hi = new long[k];
            fixed (float* pv = hv)
            fixed (long* pi = hi)
            {
                for (int j = 0; j < k; j++) TopKSelection.Push(x[j], j, pv, pi, j);
                for (int j = k; j < x.Length; j++) TopKSelection.Offer(x[j], j, pv, pi, k);
            }
            var expect = x.OrderDescending().Take(k).Order();
            return hv.Order().SequenceEqual(expect) && hv.Min() == hv[0] ? null : "heap differs from the sorted top k";
        });
    }

    private static float[] Random(Random rng, int d) => Enumerable.Range(0, d).Select(_ => (float)(rng.NextDouble() * 4 - 2)).ToArray();
}
