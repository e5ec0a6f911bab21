using System.Buffers;
using System.Numerics;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics.X86;
using TorchSharp;
using static SaeSharp.Kernels.TensorPointers;
using static SaeSharp.Kernels.TopKSelection;
using static TorchSharp.torch;

namespace SaeSharp.Kernels;

/// <summary>When the TopK family selects through <see cref="CandidateEncoder"/> (<see cref="Saes.SaeTrainingOptions.CandidatePass"/>).</summary>
public enum CandidatePass
{
    /// <summary>Where a path exists, whichever of the candidate pass and the plain encoder ran the faster training steps on
    /// this machine, timed during the first steps of the run (<see cref="Saes.CandidatePassSwitch"/>).</summary>
    Auto,
    /// <summary>Wherever a candidate path exists (<see cref="CandidateEncoder.Applies"/>).</summary>
    On,
    /// <summary>Never: plain float32 (or, with autocast, bfloat16) pre-activations.</summary>
    Off,
}

/// <summary>
/// Exact per-row top-k of encoder pre-activations x̃·W_enc + b_enc (float32) from a cheap candidate pass: the products are
/// computed at low precision (bfloat16 through oneDNN on <see cref="KernelPath.Avx512Bf16"/>, int8 with per-row and
/// per-column scales on the int8 paths, <see cref="Int8Gemm"/>), every entry gets a proven error bound E (docs/exact-topk.md),
/// each row keeps the latents whose upper bound A + E reaches the k-th largest lower bound A − E, and those candidates
/// are recomputed in float32 (dot products with W_encᵀ) and ranked. The selected set is then the float32 one: a latent
/// of the float32 top-k has a value at least the k-th largest lower bound, so its upper bound reaches it too. Ties, and
/// values within float32 rounding of each other, may be broken differently than by a dense float32 top-k.
/// </summary>
internal sealed unsafe class CandidateEncoder : IDisposable
{
    private const float Safety = 1f + 1f / 1024;
    private readonly KernelPath _path;
    private readonly Tensor _encT;
    private readonly Tensor _bias;
    private readonly Tensor? _wbT;
    private readonly Int8Gemm.Weights? _packed;
    private readonly float[] _colC;
    private readonly float[] _colD;
    private readonly int _dIn;
    private readonly int _dSae;
    private readonly double _gamma;

    /// <summary>Whether a candidate pass exists on <paramref name="path"/> for <paramref name="dSae"/> latents (int8
    /// panels need a multiple of 16).</summary>
    public static bool Applies(KernelPath path, long dSae) =>
        path == KernelPath.Avx512Bf16
        || (path is KernelPath.Avx2 or KernelPath.AvxVnni or KernelPath.Avx512 or KernelPath.Neon) && dSae % Int8Gemm.Panel == 0;

    /// <param name="encT">W_encᵀ, contiguous float32 [d_sae, d_in] (kept, not copied: keep it alive and unchanged).</param>
    /// <param name="bEnc">b_enc [d_sae].</param>
    /// <param name="path">The kernel path; <see cref="KernelPath.Scalar"/> runs the int8 products in plain loops (tests).</param>
    /// <param name="rowLevels">The int8 row levels (<see cref="Int8Gemm.RowLevels"/> when null; 63 runs
    /// <see cref="Int8GemmAvx2"/>'s shift-widened kernel on <see cref="KernelPath.Avx2"/>).</param>
    public CandidateEncoder(Tensor encT, Tensor bEnc, KernelPath path, int? rowLevels = null)
    {
        if (encT.dtype != ScalarType.Float32 || !encT.is_contiguous() || encT.dim() != 2 || encT.device_type != DeviceType.CPU)
            throw new ArgumentException("the candidate pass needs W_encᵀ as a contiguous float32 CPU matrix");
        _path = path;
        _encT = encT;
        _dSae = checked((int)encT.shape[0]);
        _dIn = checked((int)encT.shape[1]);
        _bias = bEnc.detach().to(ScalarType.Float32).contiguous().clone();
        // Any summation order of d_in float32 products: |error| ≤ γ·Σ|x_i·w_i| ≤ γ·‖x‖·‖w‖.
        double u = Math.Pow(2, -24);
        _gamma = _dIn * u / (1 - _dIn * u);
        using var scope = NewDisposeScope();
        double[] quantNorm, errorNorm, wNorm = new double[_dSae];
        if (path == KernelPath.Avx512Bf16)
        {
            var wb = encT.to(ScalarType.BFloat16);
            _wbT = wb.t().DetachFromDisposeScope();
            (quantNorm, errorNorm) = (new double[_dSae], new double[_dSae]);
            Bf16Norms(FloatPtr(encT), UShortPtr(wb), _dSae, _dIn, quantNorm, errorNorm, wNorm);
            GC.KeepAlive(wb);
        }
        else
        {
            _packed = Int8Gemm.Pack(FloatPtr(encT), _dSae, _dIn, path, RowRanges.Threads, vectors: true, rowLevels);
            (quantNorm, errorNorm) = (_packed.QuantNorm, _packed.ErrorNorm);
            Bf16Norms(FloatPtr(encT), null, _dSae, _dIn, null, null, wNorm);
        }
        GC.KeepAlive(encT);
        _colC = new float[_dSae];
        _colD = new float[_dSae];
        for (int j = 0; j < _dSae; j++) { _colC[j] = RoundUp((float)quantNorm[j]); _colD[j] = RoundUp((float)(errorNorm[j] + _gamma * wNorm[j])); }
    }

    /// <summary>Per row of float32 [rows, d] <paramref name="f"/>: ‖f‖, and with its bfloat16 rounding <paramref name="b"/>,
    /// ‖b‖ and ‖b − f‖, each rounded up: the squares are summed in float32 (b − f is exact: the low 16 bits of f), and a
    /// sum of d non-negative terms is off by at most d·2⁻²⁴ relative, so it is scaled by 1 + (d + 2)·2⁻²³.</summary>
    private static void Bf16Norms(float* f, ushort* b, int rows, int d, double[]? quantNorm, double[]? errorNorm, double[] norm)
    {
        double up = 1 + (d + 2) * Math.Pow(2, -23);
        RowRanges.For(rows, (start, end) =>
        {
            int w = Vector<float>.Count, wu = Vector<ushort>.Count;
            for (long r = start; r < end; r++)
            {
                float* fr = f + r * d;
                ushort* br = b == null ? null : b + r * d;
                var n = Vector<float>.Zero;
                var q = Vector<float>.Zero;
                var e = Vector<float>.Zero;
                int i = 0;
                for (; i + wu <= d; i += wu)
                {
                    var v0 = Unsafe.ReadUnaligned<Vector<float>>(fr + i);
                    var v1 = Unsafe.ReadUnaligned<Vector<float>>(fr + i + w);
                    n += v0 * v0 + v1 * v1;
                    if (br == null) continue;
                    Vector.Widen(Unsafe.ReadUnaligned<Vector<ushort>>(br + i), out var lo, out var hi);
                    var h0 = Vector.AsVectorSingle(Vector.ShiftLeft(lo, 16));
                    var h1 = Vector.AsVectorSingle(Vector.ShiftLeft(hi, 16));
                    q += h0 * h0 + h1 * h1;
                    e += (h0 - v0) * (h0 - v0) + (h1 - v1) * (h1 - v1);
                }
                float sn = Vector.Sum(n), sq = Vector.Sum(q), se = Vector.Sum(e);
                for (; i < d; i++)
                {
                    float v = fr[i];
                    sn += v * v;
                    if (br == null) continue;
                    float h = BitConverter.Int32BitsToSingle(br[i] << 16);
                    sq += h * h;
                    se += (h - v) * (h - v);
                }
                norm[r] = Math.Sqrt(sn * up);
                if (br == null) continue;
                quantNorm![r] = Math.Sqrt(sq * up);
                errorNorm![r] = Math.Sqrt(se * up);
            }
        });
    }

    /// <summary>Candidates recomputed in float32 over all calls (per row: compare with k).</summary>
    public long Candidates => Interlocked.Read(ref _candidates);

    /// <summary>Rows ranked over all calls.</summary>
    public long Rows => Interlocked.Read(ref _rows);

    private long _candidates;
    private long _rows;

    /// <summary>The low-precision pre-activations of a chunk and the per-row bound factors, for <see cref="TopK"/>.</summary>
    public sealed class Approximation : IDisposable
    {
        internal required Tensor X { get; init; }
        internal required Tensor Values { get; init; }
        internal required bool IncludesBias { get; init; }
        internal required float[] RowA { get; init; }
        internal required float[] RowB { get; init; }
        internal required float Rho { get; init; }

        /// <summary>[rows, d_sae]: bfloat16 products without b_enc, or float32 with it.</summary>
        public Tensor Pre => Values;

        public void Dispose() { X.Dispose(); Values.Dispose(); }
    }

    /// <summary>The candidate pass over <paramref name="x"/> (the encoder input x̃, float32 [rows, d_in]).</summary>
    public Approximation Approximate(Tensor x)
    {
        if (x.dtype != ScalarType.Float32 || x.dim() != 2 || x.shape[1] != _dIn)
            throw new ArgumentException($"the candidate pass needs float32 [rows, {_dIn}] inputs");
        using var scope = NewDisposeScope();
        var xc = x.contiguous();
        int rows = checked((int)xc.shape[0]);
        var rowA = new float[rows];
        var rowB = new float[rows];
        Tensor values;
        float rho;
        if (_wbT is not null)
        {
            var xb = xc.to(ScalarType.BFloat16);
            using (RowRanges.ParallelTorch()) values = xb.mm(_wbT);
            var (q, e, n) = (new double[rows], new double[rows], new double[rows]);
            Bf16Norms(FloatPtr(xc), UShortPtr(xb), rows, _dIn, q, e, n);
            GC.KeepAlive(xb);
            for (int r = 0; r < rows; r++) { rowA[r] = RoundUp((float)(e[r] + _gamma * q[r])); rowB[r] = RoundUp((float)n[r]); }
            // The product rounded to bfloat16 (8 significant bits): |r − t| ≤ 2⁻⁸/(1 − 2⁻⁸)·|r|; b_enc added in float32.
            rho = (float)(Math.Pow(2, -8) / (1 - Math.Pow(2, -8)) + Math.Pow(2, -22));
        }
        else
        {
            int kp = (_dIn + 3) & ~3;
            var q = new byte[(long)rows * kp];
            var scale = new float[rows];
            var norm = new double[rows];
            var err = new double[rows];
            values = empty(rows, _dSae, dtype: ScalarType.Float32);
            fixed (byte* pq = q)
            {
                Int8Gemm.QuantizeRows(FloatPtr(xc), rows, _dIn, pq, scale, norm, err, RowRanges.Threads, _packed!.XLevels);
                Int8Gemm.Multiply(pq, scale, rows, _packed!, FloatPtr(_bias), FloatPtr(values), get_num_threads());
            }
            GC.KeepAlive(_bias);
            for (int r = 0; r < rows; r++) { rowA[r] = RoundUp((float)err[r]); rowB[r] = RoundUp((float)norm[r]); }
            // int32 sums are exact; the dequantisation and the bias add are a few float32 roundings.
            rho = (float)Math.Pow(2, -20);
        }
        return new Approximation
        {
            X = xc.DetachFromDisposeScope(), Values = values.DetachFromDisposeScope(), IncludesBias = _wbT is null,
            RowA = rowA, RowB = rowB, Rho = rho,
        };
    }

    /// <summary>The candidate value A (b_enc included) of entry (<paramref name="row"/>, <paramref name="latent"/>) and
    /// its error bound E: the float32 pre-activation lies in [A − E, A + E] (docs/exact-topk.md).</summary>
    internal (float Value, float Bound) Entry(Approximation approx, int row, int latent)
    {
        float b = TorchScalars.SingleOf(_bias[latent]);
        float v = approx.IncludesBias ? TorchScalars.SingleOf(approx.Values[row, latent]) : TorchScalars.SingleOf(approx.Values[row, latent]) + b;
        float e = (approx.RowA[row] * _colC[latent] + approx.RowB[row] * _colD[latent] + approx.Rho * (MathF.Abs(v) + MathF.Abs(b))) * Safety + 1e-30f;
        return (v, e);
    }

    /// <summary>The exact float32 top-<paramref name="k"/> of every row, among all latents or, with
    /// <paramref name="columns"/> (int64 latent indices), among those: values (pre-activations with b_enc) and positions
    /// (latent indices, or positions in <paramref name="columns"/>), [rows, k], unsorted.</summary>
    public (Tensor Values, Tensor Indices) TopK(Approximation approx, int k, Tensor? columns = null)
    {
        using var scope = NewDisposeScope();
        int c = columns is null ? _dSae : checked((int)columns.shape[0]);
        if (k <= 0 || k > c) throw new ArgumentException($"top-k needs 0 < k <= {c}, got {k}");
        var pre = approx.Values;
        long[]? map = null;
        float[] colC = _colC, colD = _colD;
        Tensor bias = _bias;
        if (columns is not null) (map, pre, bias, colC, colD) = Subset(approx, columns);
        int rows = checked((int)pre.shape[0]);
        var values = empty(rows, k, dtype: ScalarType.Float32);
        var indices = empty(rows, k, dtype: ScalarType.Int64);
        if (rows == 0) return (values.MoveToOuterDisposeScope(), indices.MoveToOuterDisposeScope());
        bool bf16 = pre.dtype == ScalarType.BFloat16;
        fixed (float* pc = colC, pd = colD)
        fixed (long* pMap = map)
        {
            var sel = new Selection
            {
                F = bf16 ? null : FloatPtr(pre), B = bf16 ? UShortPtr(pre) : null, Bias = FloatPtr(bias), ColC = pc, ColD = pd,
                RowA = approx.RowA, RowB = approx.RowB, Rho = approx.Rho, C = c, K = k, DIn = _dIn,
                // Block maxima of the upper bounds (blocks of 16 strided latents) need c a multiple of 16 vectors and at
                // least 2k blocks; otherwise the threshold comes from the keys of the whole row.
                Blockwise = c % (TopKBlock * Vector<float>.Count) == 0 && c / TopKBlock >= 2 * k,
                X = FloatPtr(approx.X), W = FloatPtr(_encT), Map = pMap, Values = FloatPtr(values), Indices = LongPtr(indices),
            };
            int group = GroupRows(rows, _dIn), groups = (rows + group - 1) / group;
            var counts = new long[groups];
            KernelThreads.Run(groups, g => counts[g] = sel.RankGroup(g * group, Math.Min(rows, (g + 1) * group)));
            Interlocked.Add(ref _candidates, counts.Sum());
        }
        GC.KeepAlive(pre);
        GC.KeepAlive(bias);
        GC.KeepAlive(approx.X);
        GC.KeepAlive(_encT);
        Interlocked.Add(ref _rows, rows);
        return (values.MoveToOuterDisposeScope(), indices.MoveToOuterDisposeScope());
    }

    /// <summary>
    /// The entries of the columns <paramref name="columns"/> (int64 latent indices) whose exact float32 pre-activation is
    /// positive, in row-major order: rows, positions in <paramref name="columns"/> and values (the same dot products as
    /// <see cref="TopK"/>). Only entries whose upper bound A + E is positive are recomputed. Null when a row has more than
    /// <paramref name="maxPerRow"/> of them or a bound that is not finite (the caller then ranks with <see cref="TopK"/>).
    /// </summary>
    public (Tensor Rows, Tensor Local, Tensor Values)? PositiveAmong(Approximation approx, Tensor columns, int maxPerRow)
    {
        using var scope = NewDisposeScope();
        int c = checked((int)columns.shape[0]);
        var (map, pre, bias, colC, colD) = Subset(approx, columns);
        int rows = checked((int)pre.shape[0]);
        bool bf16 = pre.dtype == ScalarType.BFloat16;
        float* pf = bf16 ? null : FloatPtr(pre);
        ushort* pb = bf16 ? UShortPtr(pre) : null;
        float* pBias = FloatPtr(bias), pX = FloatPtr(approx.X), pW = FloatPtr(_encT);
        var found = new List<(int Row, int Local, float Value)>[RowRanges.Count(rows)];
        int failed = 0, dIn = _dIn;
        float rho = approx.Rho;
        var rowA = approx.RowA;
        var rowB = approx.RowB;
        RowRanges.For(rows, (t, start, end) =>
        {
            var list = found[t] = [];
            var upper = new float[c];
            var cand = new int[c];
            fixed (float* pu = upper, pc = colC, pd = colD)
            fixed (int* pCand = cand)
            fixed (long* pMap = map)
            {
                for (int r = (int)start; r < end && Volatile.Read(ref failed) == 0; r++)
                {
                    if (!Bounds(pf is null ? null : pf + (long)r * c, pb is null ? null : pb + (long)r * c, pBias, pc, pd,
                            rowA[r], rowB[r], rho, c, pu))
                    {
                        Volatile.Write(ref failed, 1);
                        break;
                    }
                    float* xr = pX + (long)r * dIn;
                    int inRow = 0, n = Above(pu, c, float.Epsilon, pCand);
                    for (int e = 0; e < n; e++)
                    {
                        int j = pCand[e];
                        float v = SparseKernels.Dot(xr, pW + pMap[j] * dIn, dIn) + pBias[j];
                        if (!(v > 0)) continue;
                        if (++inRow > maxPerRow) { Volatile.Write(ref failed, 1); break; }
                        list.Add((r, j, v));
                    }
                }
            }
        });
        GC.KeepAlive(pre);
        GC.KeepAlive(bias);
        GC.KeepAlive(approx.X);
        GC.KeepAlive(_encT);
        if (failed != 0) return null;
        var all = found.SelectMany(l => l).ToArray();
        var outRows = tensor(all.Select(e => (long)e.Row).ToArray(), dtype: ScalarType.Int64);
        var outLocal = tensor(all.Select(e => (long)e.Local).ToArray(), dtype: ScalarType.Int64);
        var outValues = tensor(all.Select(e => e.Value).ToArray(), dtype: ScalarType.Float32);
        return (outRows.MoveToOuterDisposeScope(), outLocal.MoveToOuterDisposeScope(), outValues.MoveToOuterDisposeScope());
    }

    /// <summary>The candidate products, b_enc and the per-column bound factors restricted to <paramref name="columns"/>
    /// (int64 latent indices), with the latent index of each position (tensors in the caller's dispose scope).</summary>
    private (long[] Map, Tensor Pre, Tensor Bias, float[] ColC, float[] ColD) Subset(Approximation approx, Tensor columns)
    {
        var map = columns.to(ScalarType.Int64).data<long>().ToArray();
        var colC = new float[map.Length];
        var colD = new float[map.Length];
        for (int j = 0; j < map.Length; j++) { colC[j] = _colC[map[j]]; colD[j] = _colD[map[j]]; }
        return (map, approx.Values.index_select(1, columns).contiguous(), _bias.index_select(0, columns).contiguous(), colC, colD);
    }

    /// <summary>upper = A + E for one row, A the float32 value (<paramref name="f"/>, b_enc included) or the bfloat16
    /// product plus b_enc (<paramref name="b"/>, widened into <paramref name="upper"/> first); false when a value or a
    /// bound is not finite (the row is then recomputed whole). With <paramref name="maxima"/> (c a multiple of 16 vectors),
    /// also the row's block maxima of upper (<see cref="TopKSelection.BlockMaxima"/>), in the same pass.</summary>
    private static bool Bounds(float* f, ushort* b, float* bias, float* colC, float* colD, float a, float bRow, float rho, int c, float* upper,
        float* maxima = null)
    {
        int w = Vector<float>.Count, j = 0;
        var k = new BoundConstants(a, bRow, rho);
        var bad = Vector<int>.Zero;
        int width = c / TopKBlock, slot = 0;
        if (f != null)
            for (; j + w <= c; j += w)
                Put(Unsafe.ReadUnaligned<Vector<float>>(f + j), j, colC, colD, bias, upper, maxima, width, ref slot, k, ref bad);
        else
            // bfloat16 products widened to float32 (the low 16 bits zero) plus b_enc, two vectors at a time.
            for (; j + 2 * w <= c; j += 2 * w)
            {
                Vector.Widen(Unsafe.ReadUnaligned<Vector<ushort>>(b + j), out var lo, out var hi);
                Put(Vector.AsVectorSingle(Vector.ShiftLeft(lo, 16)) + Unsafe.ReadUnaligned<Vector<float>>(bias + j), j,
                    colC, colD, bias, upper, maxima, width, ref slot, k, ref bad);
                Put(Vector.AsVectorSingle(Vector.ShiftLeft(hi, 16)) + Unsafe.ReadUnaligned<Vector<float>>(bias + j + w), j + w,
                    colC, colD, bias, upper, maxima, width, ref slot, k, ref bad);
            }
        bool ok = Vector.EqualsAll(bad, Vector<int>.Zero);
        for (; j < c; j++)
        {
            float v = f != null ? f[j] : Bf16Bits.ToFloat(b[j]) + bias[j];
            float e = (a * colC[j] + bRow * colD[j] + rho * (MathF.Abs(v) + MathF.Abs(bias[j]))) * Safety + 1e-30f;
            upper[j] = v + e;
            ok &= float.IsFinite(v - e) && float.IsFinite(upper[j]);
        }
        return ok;
    }

    /// <summary>The row's factors of <see cref="Bounds"/> as vectors.</summary>
    private readonly struct BoundConstants(float a, float bRow, float rho)
    {
        public readonly Vector<float> A = new(a), B = new(bRow), Rho = new(rho), Safety = new(CandidateEncoder.Safety),
            Tiny = new(1e-30f), Inf = new(float.PositiveInfinity);
    }

    /// <summary>upper[j..j+w) = v + E for the candidate values <paramref name="v"/>, non-finite ones flagged in
    /// <paramref name="bad"/>; with <paramref name="maxima"/>, their block maxima (slot j mod c/16, c a multiple of 16
    /// vectors: <see cref="TopKSelection.BlockMaxima"/>'s blocks).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Put(Vector<float> v, int j, float* colC, float* colD, float* bias, float* upper, float* maxima, int width,
        ref int slot, in BoundConstants k, ref Vector<int> bad)
    {
        var e = (k.A * Unsafe.ReadUnaligned<Vector<float>>(colC + j) + k.B * Unsafe.ReadUnaligned<Vector<float>>(colD + j)
                 + k.Rho * (Vector.Abs(v) + Vector.Abs(Unsafe.ReadUnaligned<Vector<float>>(bias + j)))) * k.Safety + k.Tiny;
        var hi = v + e;
        bad |= ~Vector.LessThan(Vector.Abs(v - e), k.Inf) | ~Vector.LessThan(Vector.Abs(hi), k.Inf);
        Unsafe.WriteUnaligned(upper + j, hi);
        if (maxima == null) return;
        Unsafe.WriteUnaligned(maxima + slot, j < width ? hi : Vector.Max(Unsafe.ReadUnaligned<Vector<float>>(maxima + slot), hi));
        if ((slot += Vector<float>.Count) == width) slot = 0;
    }

    /// <summary>Rows ranked together by <see cref="Selection.RankGroup"/>: their x rows fill at most half of L2 (they are
    /// read once per candidate), and each thread has at least two groups (a thread descheduled by the host leaves its
    /// second to the others).</summary>
    private static int GroupRows(int rows, int dIn)
    {
        long fit = Math.Max(16, CpuKernels.L2Bytes / 2 / (sizeof(float) * (long)dIn));
        long share = (rows + 2L * RowRanges.Threads - 1) / (2L * RowRanges.Threads);
        return (int)Math.Max(1, Math.Min(fit, share));
    }

    /// <summary>One <see cref="TopK"/> call's operands: the candidate products (float32 <see cref="F"/> with b_enc, or
    /// bfloat16 <see cref="B"/> without), the bound factors, x, W_encᵀ and the outputs.</summary>
    private struct Selection
    {
        public float* F;
        public ushort* B;
        public float* Bias;
        public float* ColC;
        public float* ColD;
        public float[] RowA;
        public float[] RowB;
        public float Rho;
        public int C;
        public int K;
        public int DIn;
        public bool Blockwise;
        public float* X;
        public float* W;
        public long* Map;
        public float* Values;
        public long* Indices;

        /// <summary>
        /// The exact top-k of rows [<paramref name="start"/>, <paramref name="end"/>); returns the dot products taken.
        /// Per row, as docs/exact-topk.md describes: the latents with upper bound ≥ t₁ are ranked first (a min-heap of
        /// the k best float32 values), then those with τ ≤ upper bound &lt; t₁, τ the heap's minimum, skipping any whose
        /// upper bound is below the heap's minimum at its turn. Here the group's rows take each pass together, latent by
        /// latent in increasing order, so a row of W_encᵀ is read once per pass for all the rows that need it, and
        /// W_encᵀ is read in address order; each row still sees its latents in increasing order, so its heap, its
        /// skips and its dot products are those of ranking it alone. The second pass's list is taken before τ is
        /// known, from L ≤ τ, the k-th largest lower bound A − E of the first pass's latents (each of their float32
        /// values is at least its lower bound); the latents below τ are then skipped by the heap test. A row whose
        /// bounds are not finite, or whose first pass met a NaN, is ranked alone.
        /// </summary>
        public readonly long RankGroup(int start, int end)
        {
            int g = end - start, c = C, k = K;
            var upper = new float[c];
            var cand = new int[c];
            var scratch = new float[c];
            // Pooled: at 512 rows and k 32 the heaps' indices are 128 KB, a large-object allocation per group otherwise.
            var heapV = ArrayPool<float>.Shared.Rent(g * k);
            var heapI = ArrayPool<long>.Shared.Rent(g * k);
            var filled = new int[g];
            var t1 = new float[g];
            var alone = new bool[g];
            var nan = new bool[g];
            using var first = new PairList(g);
            using var second = new PairList(g);
            var lowV = new float[k];
            var lowI = new long[k];
            long taken = 0;
            fixed (float* pu = upper, hv = heapV, pScratch = scratch, pLow = lowV)
            fixed (int* pCand = cand, pFilled = filled)
            fixed (long* hi = heapI, pLowI = lowI)
            fixed (bool* pAlone = alone, pNaN = nan)
            {
                var rank = new ExactRanking { W = W, Map = Map, Bias = Bias, DIn = DIn, K = k, Upper = pu };
                for (int i = 0; i < g; i++)
                {
                    int r = start + i;
                    if (!RowBounds(r, pu, Blockwise ? pScratch : null))
                    {
                        // Nothing to learn from non-finite bounds: every latent is ranked, without skips.
                        alone[i] = true;
                        for (int j = 0; j < c; j++) pCand[j] = j;
                        taken += RankAlone(ref rank, r, hv + i * k, hi + i * k, ref filled[i], pCand, c, float.NaN, prune: false);
                        first.EndRow(i);
                        second.EndRow(i);
                        continue;
                    }
                    // At least k latents have an upper bound ≥ t1.
                    float th = Blockwise
                        ? KthLowerBound(pScratch, c / TopKBlock, k, (uint*)pScratch)
                        : KthLowerBound(pu, c, k, (uint*)pScratch);
                    t1[i] = th;
                    int n1 = Above(pu, c, th, pCand), lows = 0;
                    for (int e = 0; e < n1; e++)
                    {
                        int j = pCand[e];
                        first.Add(j, pu[j]);
                        float lower = Lower(r, j);
                        if (lows < k) Push(lower, j, pLow, pLowI, lows++);
                        else Offer(lower, j, pLow, pLowI, k);
                    }
                    first.EndRow(i);
                    int n2 = Above(pu, c, pLow[0], pCand);
                    for (int e = 0; e < n2; e++)
                        if (pu[pCand[e]] < th) second.Add(pCand[e], pu[pCand[e]]);
                    second.EndRow(i);
                }
                taken += Pass(first, start, pAlone, hv, hi, pFilled, pNaN);
                for (int i = 0; i < g; i++)
                {
                    if (alone[i] || filled[i] == k && !nan[i]) continue;
                    // A NaN value in the first pass: τ is not bounded by L; rank the rest of the row alone.
                    alone[i] = true;
                    int r = start + i;
                    RowBounds(r, pu);
                    float tau = filled[i] == k ? hv[i * k] : float.NegativeInfinity;
                    taken += RankAlone(ref rank, r, hv + i * k, hi + i * k, ref filled[i], pCand, Above(pu, c, tau, pCand), t1[i], prune: true);
                }
                // τ is known now: the second pass needs only the pairs at or above it (the others would be skipped).
                second.KeepFrom(i => alone[i] ? float.PositiveInfinity : heapV[i * k]);
                taken += Pass(second, start, pAlone, hv, hi, pFilled, pNaN);
                for (int i = 0; i < g; i++)
                {
                    float* rv = hv + i * k;
                    long* ri = hi + i * k;
                    int n = filled[i];
                    for (int j = 0; n < k && j < c; j++)
                    {
                        // Fewer than k non-NaN values (a NaN row): pad with positions not yet taken.
                        bool used = false;
                        for (int l = 0; l < n; l++) used |= ri[l] == j;
                        if (!used) { rv[n] = float.NaN; ri[n++] = j; }
                    }
                    new Span<float>(rv, k).CopyTo(new Span<float>(Values + (long)(start + i) * k, k));
                    new Span<long>(ri, k).CopyTo(new Span<long>(Indices + (long)(start + i) * k, k));
                }
            }
            ArrayPool<float>.Shared.Return(heapV);
            ArrayPool<long>.Shared.Return(heapI);
            return taken;
        }

        /// <summary>One pass over <paramref name="list"/>: its pairs sorted by latent (a counting sort that keeps each
        /// row's pairs in increasing latent order), then per latent the float32 values of the rows that need it, into
        /// their heaps; a pair whose upper bound is below its row's full heap's minimum is skipped. Rows ranked alone are
        /// left out; a NaN value marks its row in <paramref name="nan"/>. Returns the dot products taken.</summary>
        private readonly long Pass(PairList list, int start, bool* alone, float* hv, long* hi, int* filled, bool* nan)
        {
            int c = C, k = K, n = list.Count, rows = list.Rows;
            if (n == 0) return 0;
            var ints = ArrayPool<int>.Shared;
            int[] at = ints.Rent(c + 1), latents = ints.Rent(c), rowOf = ints.Rent(n);
            float[] uOf = ArrayPool<float>.Shared.Rent(n);
            long taken = 0;
            try
            {
                Array.Clear(at, 0, c + 1);
                var pj = list.J;
                for (int e = 0; e < n; e++) at[pj[e] + 1]++;
                int m = 0;
                for (int j = 0; j < c; j++)
                {
                    if (at[j + 1] != 0) latents[m++] = j;
                    at[j + 1] += at[j];
                }
                for (int i = 0; i < rows; i++)
                    for (int e = list.Start[i]; e < list.Start[i + 1]; e++)
                    {
                        int pos = at[pj[e]]++;
                        rowOf[pos] = i;
                        uOf[pos] = list.U[e];
                    }
                // at[j] is now the end of latent j's pairs.
                for (int q = 0; q < Math.Min(m, Ahead); q++) Prefetch(Row(latents[q]), DIn);
                for (int q = 0; q < m; q++)
                {
                    int j = latents[q];
                    if (q + Ahead < m) Prefetch(Row(latents[q + Ahead]), DIn);
                    float* w = Row(j);
                    float bias = Bias[j];
                    for (int e = j == 0 ? 0 : at[j - 1]; e < at[j]; e++)
                    {
                        int i = rowOf[e];
                        if (alone[i]) continue;
                        float* rv = hv + i * k;
                        if (filled[i] == k && uOf[e] < rv[0]) continue;
                        float v = SparseKernels.Dot(X + (long)(start + i) * DIn, w, DIn) + bias;
                        taken++;
                        if (float.IsNaN(v)) { nan[i] = true; continue; }
                        if (filled[i] < k) Push(v, j, rv, hi + i * k, filled[i]++);
                        else Offer(v, j, rv, hi + i * k, k);
                    }
                }
            }
            finally
            {
                ints.Return(at);
                ints.Return(latents);
                ints.Return(rowOf);
                ArrayPool<float>.Shared.Return(uOf);
            }
            return taken;
        }

        /// <summary>upper = A + E of row <paramref name="r"/> (<see cref="Bounds"/>).</summary>
        private readonly bool RowBounds(int r, float* upper, float* maxima = null) =>
            Bounds(F == null ? null : F + (long)r * C, B == null ? null : B + (long)r * C, Bias, ColC, ColD, RowA[r], RowB[r], Rho, C, upper, maxima);

        /// <summary>A − E of entry (<paramref name="r"/>, <paramref name="j"/>), rounded down: at most its float32 value.</summary>
        private readonly float Lower(int r, int j)
        {
            long o = (long)r * C + j;
            float v = F != null ? F[o] : Bf16Bits.ToFloat(B[o]) + Bias[j];
            float e = (RowA[r] * ColC[j] + RowB[r] * ColD[j] + Rho * (MathF.Abs(v) + MathF.Abs(Bias[j]))) * Safety + 1e-30f;
            return MathF.BitDecrement(v - e);
        }

        /// <summary>Ranks row <paramref name="r"/> alone (<see cref="ExactRanking.Rank"/>) into its heap.</summary>
        private readonly long RankAlone(ref ExactRanking rank, int r, float* rv, long* ri, ref int filled, int* cand, int n, float skipFrom, bool prune)
        {
            rank.X = X + (long)r * DIn;
            rank.HeapV = rv;
            rank.HeapI = ri;
            rank.Filled = filled;
            long t = rank.Rank(cand, n, skipFrom, prune);
            filled = rank.Filled;
            return t;
        }

        private readonly float* Row(int j) => W + (Map == null ? j : Map[j]) * DIn;
    }

    /// <summary>A group's (latent, upper bound) pairs, row by row, each row's in increasing latent order (pooled arrays).</summary>
    private sealed class PairList(int rows) : IDisposable
    {
        public int[] J = ArrayPool<int>.Shared.Rent(4096);
        public float[] U = ArrayPool<float>.Shared.Rent(4096);
        public readonly int[] Start = new int[rows + 1];
        public readonly int Rows = rows;
        public int Count;

        public void Add(int j, float u)
        {
            if (Count == J.Length)
            {
                var (nj, nu) = (ArrayPool<int>.Shared.Rent(2 * Count), ArrayPool<float>.Shared.Rent(2 * Count));
                Array.Copy(J, nj, Count);
                Array.Copy(U, nu, Count);
                ArrayPool<int>.Shared.Return(J);
                ArrayPool<float>.Shared.Return(U);
                (J, U) = (nj, nu);
            }
            J[Count] = j;
            U[Count++] = u;
        }

        /// <summary>Keeps, in place, the pairs of each row i whose upper bound reaches <paramref name="threshold"/>(i).</summary>
        public void KeepFrom(Func<int, float> threshold)
        {
            int kept = 0;
            for (int i = 0; i < Rows; i++)
            {
                float t = threshold(i);
                int from = Start[i];
                Start[i] = kept;
                for (int e = from; e < Start[i + 1]; e++)
                    if (U[e] >= t) { J[kept] = J[e]; U[kept++] = U[e]; }
            }
            Start[Rows] = Count = kept;
        }

        /// <summary>Closes row <paramref name="i"/>'s pairs.</summary>
        public void EndRow(int i) => Start[i + 1] = Count;

        public void Dispose()
        {
            ArrayPool<int>.Shared.Return(J);
            ArrayPool<float>.Shared.Return(U);
        }
    }

    /// <summary>One row's exact ranking: float32 dot products of x with rows of W_encᵀ (plus b_enc) entering a size-k
    /// min-heap, the rows fetched <see cref="Ahead"/> candidates in advance.</summary>
    private struct ExactRanking
    {
        public float* X;
        public float* W;
        public long* Map;
        public float* Bias;
        public float* Upper;
        public float* HeapV;
        public long* HeapI;
        public int DIn;
        public int K;
        public int Filled;

        /// <summary>Ranks the positions <paramref name="cand"/>[0..n) except those whose upper bound reaches
        /// <paramref name="skipFrom"/> (ranked before; NaN skips none); with <paramref name="prune"/>, skips those whose
        /// upper bound is below the full heap's minimum, which only rises and bounds the row's k-th largest value from
        /// below. A row whose bounds are not finite ranks every position with NaN and no pruning: its upper bounds say
        /// nothing. Returns the number of dot products taken.</summary>
        public int Rank(int* cand, int n, float skipFrom, bool prune)
        {
            int taken = 0;
            for (int e = 0; e < Math.Min(n, Ahead); e++) Prefetch(Row(cand[e]), DIn);
            for (int e = 0; e < n; e++)
            {
                int j = cand[e];
                if (e + Ahead < n) Prefetch(Row(cand[e + Ahead]), DIn);
                float u = Upper[j];
                if (u >= skipFrom || (prune && Filled == K && u < HeapV[0])) continue;
                float v = SparseKernels.Dot(X, Row(j), DIn) + Bias[j];
                taken++;
                if (float.IsNaN(v)) continue;
                if (Filled < K) Push(v, j, HeapV, HeapI, Filled++);
                else Offer(v, j, HeapV, HeapI, K);
            }
            return taken;
        }

        private readonly float* Row(int j) => W + (Map == null ? j : Map[j]) * DIn;
    }

    /// <summary>Rows of W_encᵀ fetched ahead of the dot products (they are scattered over a matrix larger than L2).</summary>
    private const int Ahead = 2;

    /// <summary>Asks for the cache lines of a float32 row of length <paramref name="d"/> (a hint; no effect on values).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Prefetch(float* row, int d)
    {
        if (!Sse.IsSupported) return;
        for (int o = 0; o < d; o += 16) Sse.Prefetch0(row + o);
    }

    /// <summary><paramref name="v"/> rounded up to the next float above (a bound computed in float64 stays a bound).</summary>
    private static float RoundUp(float v) => float.IsFinite(v) ? MathF.BitIncrement(MathF.Abs(v)) : float.PositiveInfinity;

    public void Dispose()
    {
        _bias.Dispose();
        _wbT?.Dispose();
        _packed?.Dispose();
    }
}
