using System.Diagnostics;
using SaeSharp.Kernels;
using static TorchSharp.torch;

namespace SaeSharp.Bench;

/// <summary>
/// <c>int8-products</c>: the int8 candidate products of <see cref="CandidateEncoder"/> alone (4096 rows in 1024-row chunks,
/// d_in 512, d_sae 8192), the path's own kernel (<see cref="Int8Gemm.Multiply"/>) alternated with the 4 × 16 tile kernel
/// (<see cref="Int8Gemm.MultiplyTiles"/>) and the float32 addmm, round by round (the machine is shared), then the packing
/// of W_enc (vector columns and the scalar loop; GOP/s there is meaningless). On the AVX2 path both widenings of
/// <see cref="Int8GemmAvx2"/> run (the one <see cref="Int8GemmAvx2.ShiftWidening"/> chooses first, rows quantised at
/// its levels). Usage:
/// <c>int8-products [--rounds 5] [--rows 4096] [--d-in 512] [--d-sae 8192]</c>.
/// </summary>
internal static unsafe class Int8Bench
{
    public static int Run(string[] args)
    {
        var a = BenchArgs.For("int8-products", args);
        int rounds = a.Int("--rounds", 5), rows = a.Int("--rows", 4096), dIn = a.Int("--d-in", 512), dSae = a.Int("--d-sae", 8192);
        if (rounds < 1 || rows < 1 || dIn < 1 || dSae < 1)
        {
            Console.Error.WriteLine("int8-products: --rounds, --rows, --d-in and --d-sae must be at least 1");
            return 2;
        }
        Machine.Print(rows, dIn, dSae);
        var path = CpuKernels.Path;
        if (!CandidateEncoder.Applies(path, dSae) || path == KernelPath.Avx512Bf16)
        {
            Console.WriteLine($"no int8 products on path {CpuKernels.Name(path)}");
            return 0;
        }
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        var (x, w, b, encT) = Machine.RandomEncoder(rows, dIn, dSae);
        using var packed = Int8Gemm.Pack(TensorPointers.FloatPtr(encT), dSae, dIn, path, get_num_threads());
        int kp = packed.Kp;
        var q = new byte[(long)rows * kp];
        var scale = new float[rows];
        const int chunk = 1024;
        var outA = empty(chunk, dSae);
        var outB = empty(chunk, dSae);
        // The other AVX2 widening: weights tagged with the other row levels, rows quantised at them.
        using var other = path == KernelPath.Avx2
            ? Int8Gemm.Pack(TensorPointers.FloatPtr(encT), dSae, dIn, path, get_num_threads(), vectors: true, xLevels: packed.XLevels == 63 ? 127 : 63)
            : null;
        var q2 = new byte[(long)rows * kp];
        var scale2 = new float[rows];
        fixed (byte* pq = q, pq2 = q2)
        {
            Int8Gemm.QuantizeRows(TensorPointers.FloatPtr(x), rows, dIn, pq, scale, new double[rows], new double[rows], get_num_threads(), packed.XLevels);
            if (other is not null)
                Int8Gemm.QuantizeRows(TensorPointers.FloatPtr(x), rows, dIn, pq2, scale2, new double[rows], new double[rows], get_num_threads(), other.XLevels);
            byte* pqc2 = pq2;
            byte* pqc = pq;
            float* bias = TensorPointers.FloatPtr(b);
            var times = new Dictionary<string, List<double>>();
            void Time(string name, Action<int, int> body)
            {
                var sw = Stopwatch.StartNew();
                for (int r = 0; r < rows; r += chunk) body(r, Math.Min(chunk, rows - r));
                (times.TryGetValue(name, out var l) ? l : times[name] = []).Add(sw.Elapsed.TotalMilliseconds);
            }
            var chunkScale = new float[chunk];
            for (int round = 0; round <= rounds; round++)
            {
                Time($"{CpuKernels.Name(path)} Multiply{(path == KernelPath.Avx2 ? packed.XLevels == 63 ? " (shift)" : " (madd)" : "")}", (r, n) =>
                {
                    Array.Copy(scale, r, chunkScale, 0, n);
                    Int8Gemm.Multiply(pqc + (long)r * kp, chunkScale, n, packed, bias, TensorPointers.FloatPtr(outA), get_num_threads());
                });
                if (other is not null)
                    Time($"avx2 Multiply ({(other.XLevels == 63 ? "shift" : "madd")})", (r, n) =>
                    {
                        Array.Copy(scale2, r, chunkScale, 0, n);
                        Int8Gemm.Multiply(pqc2 + (long)r * kp, chunkScale, n, other, bias, TensorPointers.FloatPtr(outB), get_num_threads());
                    });
                Time("4x16 tile kernel", (r, n) =>
                {
                    Array.Copy(scale, r, chunkScale, 0, n);
                    Int8Gemm.MultiplyTiles(pqc + (long)r * kp, chunkScale, n, packed, bias, TensorPointers.FloatPtr(outB), get_num_threads());
                });
                Time("float32 addmm", (r, n) =>
                {
                    using var s = NewDisposeScope();
                    addmm(b, x.narrow(0, r, n), w, 1, 1);
                });
                // Packing W_enc, which the candidate pass does every training step: vector columns and the scalar loop.
                foreach (var vectors in new[] { true, false })
                {
                    var sw = Stopwatch.StartNew();
                    Int8Gemm.Pack(TensorPointers.FloatPtr(encT), dSae, dIn, path, get_num_threads(), vectors).Dispose();
                    string name = vectors ? "pack W_enc (vectors)" : "pack W_enc (scalar)";
                    (times.TryGetValue(name, out var l) ? l : times[name] = []).Add(sw.Elapsed.TotalMilliseconds);
                }
                if (round == 0) foreach (var l in times.Values) l.Clear(); // warm-up
            }
            bool same = outA.eq(outB).all().item<bool>();
            double gop = 2.0 * rows * dIn * dSae / 1e9;
            foreach (var (name, l) in times)
            {
                l.Sort();
                Console.WriteLine($"{name,-22} best {l[0],7:F0} ms  median {l[l.Count / 2],7:F0} ms  ({gop / l[0] * 1000:F0} GOP/s best)");
            }
            Console.WriteLine($"last chunk bit-identical between the two int8 kernels: {same}");
        }
        return 0;
    }
}
