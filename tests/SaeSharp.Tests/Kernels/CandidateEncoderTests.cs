using SaeSharp.Kernels;
using static TorchSharp.torch;

namespace SaeSharp.Tests.Kernels;

/// <summary><see cref="CandidateEncoder"/>: the error bound holds for every entry, and the selected sets are the float32
/// ones, on every kernel path this CPU can run (the scalar one included), against a float64 reference written here.</summary>
public class CandidateEncoderTests
{
    private const int DIn = 256, DSae = 1024, Rows = 24, K = 32;

    public static TheoryData<KernelPath, string> PathsAndCases()
    {
        var data = new TheoryData<KernelPath, string>();
        foreach (var p in CpuKernels.Supported)
            foreach (var c in new[] { "random", "near-ties", "large-norms", "all-negative", "outlier", "exact-ties" })
                data.Add(p, c);
        return data;
    }

    /// <summary>x [Rows, DIn], W_enc [DIn, DSae], b_enc [DSae] of one adversarial kind.</summary>
    internal static (Tensor X, Tensor W, Tensor B) Case(string kind, int seed = 3)
    {
        var g = new Generator((ulong)seed);
        var x = randn(Rows, DIn, generator: g);
        var w = randn(DIn, DSae, generator: g) / Math.Sqrt(DIn);
        var b = randn(DSae, generator: g) * 0.1;
        switch (kind)
        {
            case "near-ties":
            {
                // 64 latents w0 + 0.02·g_j with x ≈ 10·w0: their values, about 10, lie within 0.015 of each other, under
                // bfloat16's resolution there (0.04) but far apart in float32.
                var u = randn(DIn, generator: g);
                u /= u.norm();
                x = randn(Rows, DIn, generator: g) * 0.1 + u * 10;
                var cluster = u.unsqueeze(1) + randn(DIn, 64, generator: g) * (0.02 / Math.Sqrt(DIn));
                w[.., ..64] = cluster;
                b = zeros(DSae);
                break;
            }
            case "large-norms":
                x *= 1e4; w *= 1e3; b *= 1e6;
                break;
            case "all-negative":
                b = -50 - randn(DSae, generator: g).abs();
                break;
            case "exact-ties":
                // 16 copies of 64 latents, the copies of one latent 64 apart (so they share the selection's blocks of
                // strided latents and tie exactly in every product): only the tie-breaking may differ.
                w = w[.., ..64].repeat(1, DSae / 64);
                b = b[..64].repeat(DSae / 64);
                break;
            case "outlier":
                x[.., 7] = 1000; // one input dominates every row's int8 scale
                break;
        }
        return (x.contiguous(), w.contiguous(), b.contiguous());
    }

    private static float[] F(Tensor t) => t.to(ScalarType.Float32).contiguous().data<float>().ToArray();

    [Theory]
    [MemberData(nameof(PathsAndCases))]
    public void Every_entry_lies_within_its_bound(KernelPath path, string kind)
    {
        using var scope = NewDisposeScope();
        var (x, w, b) = Case(kind);
        var exact = F(x.to(ScalarType.Float64).mm(w.to(ScalarType.Float64)) + b.to(ScalarType.Float64));
        using var enc = new CandidateEncoder(w.t().contiguous(), b, path);
        using var approx = enc.Approximate(x);
        for (int r = 0; r < Rows; r += 5)
            for (int j = r % 5; j < DSae; j += 9)
            {
                var (v, e) = enc.Entry(approx, r, j);
                Assert.True(Math.Abs(v - exact[r * DSae + j]) <= e, $"{path} {kind} ({r}, {j}): |{v} − {exact[r * DSae + j]}| > {e}");
            }
    }

    [Theory]
    [MemberData(nameof(PathsAndCases))]
    public void Selected_sets_equal_the_float32_ones(KernelPath path, string kind)
    {
        using var scope = NewDisposeScope();
        var (x, w, b) = Case(kind);
        using var enc = new CandidateEncoder(w.t().contiguous(), b, path);
        using var approx = enc.Approximate(x);
        var (v, i) = enc.TopK(approx, K);
        AssertExactTopK(x, w, b, null, v, i, K);
        // The bound is not vacuous: far fewer candidates than latents are recomputed on generic inputs.
        if (kind == "random") Assert.True(enc.Candidates < Rows * (long)DSae / 4, $"{enc.Candidates / (double)Rows:F0} candidates per row");
    }

    public static TheoryData<string> Cases() => new() { "random", "near-ties", "large-norms", "all-negative", "outlier", "exact-ties" };

    /// <summary>The AVX2 path's shift-widened kernel (rows at 63 levels, <c>Int8GemmAvx2.TileShift</c>), forced whatever
    /// the CPU: every sampled entry within its bound, and the selected sets float32's, among all latents and among given
    /// columns.</summary>
    [Theory]
    [MemberData(nameof(Cases))]
    public void Shift_widened_avx2_products_keep_the_bound_and_the_sets(string kind)
    {
        if (!CpuKernels.Supported.Contains(KernelPath.Avx2)) return;
        using var scope = NewDisposeScope();
        var (x, w, b) = Case(kind);
        var exact = F(x.to(ScalarType.Float64).mm(w.to(ScalarType.Float64)) + b.to(ScalarType.Float64));
        using var enc = new CandidateEncoder(w.t().contiguous(), b, KernelPath.Avx2, rowLevels: 63);
        using var approx = enc.Approximate(x);
        for (int r = 0; r < Rows; r += 5)
            for (int j = r % 5; j < DSae; j += 9)
            {
                var (v, e) = enc.Entry(approx, r, j);
                Assert.True(Math.Abs(v - exact[r * DSae + j]) <= e, $"shift {kind} ({r}, {j}): |{v} − {exact[r * DSae + j]}| > {e}");
            }
        var (values, indices) = enc.TopK(approx, K);
        AssertExactTopK(x, w, b, null, values, indices, K);
        if (kind == "random") Assert.True(enc.Candidates < Rows * (long)DSae / 4, $"{enc.Candidates / (double)Rows:F0} candidates per row");
        var columns = arange(0, DSae, 7, dtype: ScalarType.Int64);
        var (cv, ci) = enc.TopK(approx, 20, columns);
        AssertExactTopK(x, w, b, columns, cv, ci, 20);
    }

    /// <summary>The int8 paths (the scalar one included).</summary>
    public static TheoryData<KernelPath> Int8Paths()
    {
        var data = new TheoryData<KernelPath>();
        foreach (var p in CpuKernels.Supported.Where(p => p == KernelPath.Scalar || CandidateEncoder.Applies(p, 16) && p != KernelPath.Avx512Bf16))
            data.Add(p);
        return data;
    }

    /// <summary>The bound covers the float32 rounding of the values the selection ranks by (docs/exact-topk.md, term 4,
    /// γ_d·‖x‖·‖w‖), where quantisation costs nothing: x all 127·2⁻¹⁰ and w all L·2⁻⁶ (L the path's weight levels) are
    /// their own int8 rounding, so the candidate value is the exact product d·127·L·2⁻¹⁶, but the float32 dot product
    /// of 2¹⁷ or 2¹⁸ such terms (lane sums past 2²⁴ units, each addition of an odd product rounded to even) falls short
    /// of it by far more than the output-rounding term ρ·|A| alone allows.</summary>
    [Theory]
    [MemberData(nameof(Int8Paths))]
    public unsafe void The_bound_covers_the_float32_accumulation_error(KernelPath path)
    {
        using var scope = NewDisposeScope();
        int levels = Int8Gemm.WeightLevels(path), d = levels == 127 ? 1 << 17 : 1 << 18;
        var x = full(2, d, 127f / 1024);
        var encT = full(16, d, levels / 64f);
        var b = zeros(16);
        using var enc = new CandidateEncoder(encT, b, path);
        using var approx = enc.Approximate(x);
        double exact = (double)d * 127 * levels / 65536;
        float f;
        fixed (float* px = x.data<float>().ToArray(), pw = encT[0].data<float>().ToArray()) f = SparseKernels.Dot(px, pw, d);
        Assert.True(Math.Abs(f - exact) > 1e-5 * exact, $"the test needs a float32 dot product that is off: {f} vs {exact}");
        for (int r = 0; r < 2; r++)
            for (int j = 0; j < 16; j++)
            {
                var (v, e) = enc.Entry(approx, r, j);
                Assert.True(Math.Abs(v - exact) <= e, $"{path} ({r}, {j}): candidate {v} off the exact {exact} by more than {e}");
                Assert.True(Math.Abs(v - f) <= e, $"{path} ({r}, {j}): |{v} − float32 {f}| > {e}");
            }
    }

    /// <summary>The bfloat16 path's bound covers the rounding of the product to bfloat16 (8 significant bits: up to
    /// 2⁻⁸·|r|): x = (1, 1) and w = (1, 2⁻⁸ − 2⁻¹⁶), all bfloat16 values, give 1 + 2⁻⁸ − 2⁻¹⁶, which rounds to 1, off by
    /// 0.99·2⁻⁸ (half of that would break a bound that allowed only 2⁻⁹).</summary>
    [Fact]
    public void The_bfloat16_bound_covers_the_rounding_of_the_product()
    {
        if (!CpuKernels.Supported.Contains(KernelPath.Avx512Bf16)) return;
        using var scope = NewDisposeScope();
        double small = Math.Pow(2, -8) - Math.Pow(2, -16), t = 1 + small;
        var x = ones(3, 2);
        var encT = tensor(new float[] { 1, (float)small, 1, 0, 0.5f, (float)small }).reshape(3, 2);
        using var enc = new CandidateEncoder(encT, zeros(3), KernelPath.Avx512Bf16);
        using var approx = enc.Approximate(x);
        for (int r = 0; r < 3; r++)
        {
            var (v, e) = enc.Entry(approx, r, 0);
            Assert.Equal(1f, v); // the bfloat16 product, rounded down
            Assert.True(Math.Abs(v - t) <= e, $"row {r}: |{v} − {t}| > {e}");
            var (v2, e2) = enc.Entry(approx, r, 2);
            Assert.True(Math.Abs(v2 - (0.5 + small)) <= e2, $"row {r}: |{v2} − {0.5 + small}| > {e2}");
        }
    }

    /// <summary>The bfloat16 path's bound covers the rounding of x to bfloat16 wherever it falls, in the vector body of the
    /// norms or their tail: 1 + 3·2⁻¹⁰ rounds to 1, and against w = (1, −1) with a second input of 1 the bfloat16 product
    /// is exactly 0 while the float32 one is 3·2⁻¹⁰ (so ρ·|A| adds nothing and ‖x̂ − x‖·‖ŵ‖ must cover it).</summary>
    [Fact]
    public void The_bfloat16_bound_covers_the_rounding_of_the_inputs()
    {
        if (!CpuKernels.Supported.Contains(KernelPath.Avx512Bf16)) return;
        using var scope = NewDisposeScope();
        const int d = 66; // two 32-wide vectors, then a tail of two
        float off = 1 + 3f / 1024;
        var x = zeros(2, d);
        var encT = zeros(2, d);
        x[0, 64] = off; x[0, 65] = 1; encT[0, 64] = 1; encT[0, 65] = -1; // in the tail
        x[1, 0] = off; x[1, 1] = 1; encT[1, 0] = 1; encT[1, 1] = -1;     // in the vector body
        using var enc = new CandidateEncoder(encT.contiguous(), zeros(2), KernelPath.Avx512Bf16);
        using var approx = enc.Approximate(x.contiguous());
        for (int r = 0; r < 2; r++)
        {
            var (v, e) = enc.Entry(approx, r, r);
            Assert.Equal(0f, v);
            Assert.True(3.0 / 1024 <= e, $"row {r}: |{v} − {3.0 / 1024}| > {e}");
        }
    }

    /// <summary>The bfloat16 selection's bounds cover the product's rounding when b_enc cancels it (ρ·|b_enc|): latent a
    /// has the product 1 + 2⁻⁸ − 2⁻¹⁶, rounded to 1, and b_enc −1, so its candidate value is 0 but its float32 value
    /// 2⁻⁸ − 2⁻¹⁶; latent b is 0.002 exactly in both; the rest far below. The top 1 is a, found only if a's upper bound
    /// reaches 0.002 — with a and b in the vector part of the bounds and in their tail.</summary>
    [Theory]
    [InlineData(32, 0, 1)]
    [InlineData(35, 33, 34)]
    public void The_bfloat16_selection_covers_a_rounding_that_the_bias_cancels(int dSae, int a, int bLatent)
    {
        if (!CpuKernels.Supported.Contains(KernelPath.Avx512Bf16)) return;
        using var scope = NewDisposeScope();
        float small = (float)(Math.Pow(2, -8) - Math.Pow(2, -16));
        var x = ones(1, 2);
        var encT = zeros(dSae, 2);
        var b = full(dSae, -100f);
        encT[a, 0] = 1; encT[a, 1] = small; b[a] = -1;
        encT[bLatent, 0] = 0.25f; encT[bLatent, 1] = -0.25f; b[bLatent] = 0.002f;
        using var enc = new CandidateEncoder(encT.contiguous(), b, KernelPath.Avx512Bf16);
        using var approx = enc.Approximate(x);
        Assert.Equal(0f, enc.Entry(approx, 0, a).Value);
        var (v, i) = enc.TopK(approx, 1);
        Assert.Equal(a, i.item<long>());
        Assert.Equal(small, v.item<float>());
    }

    /// <summary>The bfloat16 selection's lower bound A − E of a first-pass latent covers its product rounded up (ρ·|A|):
    /// latent b's product 1 + 2⁻⁸ + 2⁻¹⁵ rounds up to A_b = 1 + 2⁻⁷, so that b alone reaches t₁ = 1 + 2⁻⁷; latent a
    /// (product 1 + 3·2⁻¹⁰, rounded down to 1, plus b_enc 0.0025) is the float32 top 1 with an upper bound below t₁. Only
    /// a lower bound of b at or below f_b keeps a in the second pass.</summary>
    [Fact]
    public void The_bfloat16_lower_bound_covers_a_product_rounded_up()
    {
        if (!CpuKernels.Supported.Contains(KernelPath.Avx512Bf16)) return;
        using var scope = NewDisposeScope();
        const int a = 7, bLatent = 3;
        float wb = (float)(Math.Pow(2, -8) + Math.Pow(2, -15)), wa = (float)(3 * Math.Pow(2, -10)), biasA = 0.0025f;
        var x = ones(1, 2);
        var encT = zeros(32, 2);
        var b = full(32, -100f);
        encT[bLatent, 0] = 1; encT[bLatent, 1] = wb; b[bLatent] = 0;
        encT[a, 0] = 1; encT[a, 1] = wa; b[a] = biasA;
        using var enc = new CandidateEncoder(encT.contiguous(), b, KernelPath.Avx512Bf16);
        using var approx = enc.Approximate(x);
        float fa = 1 + wa + biasA, fb = 1 + wb;
        var (aA, aE) = enc.Entry(approx, 0, a);
        var (bA, _) = enc.Entry(approx, 0, bLatent);
        Assert.Equal(1 + 1f / 128, bA); // rounded up, above f_b
        Assert.True(fa > fb && aA + aE < bA - 1e-4f, $"f_a {fa}, f_b {fb}, u_a {aA + aE}, A_b {bA}");
        var (v, i) = enc.TopK(approx, 1);
        Assert.Equal(a, i.item<long>());
        Assert.Equal(fa, v.item<float>());
    }

    /// <summary>The bfloat16 bounds add b_enc in the tail past the vector body too: latent 34 (of 35) has product 0 and
    /// b_enc 5, the top 1 over latent 0's product 2; an upper bound without its b_enc would leave it out.</summary>
    [Fact]
    public void The_bfloat16_bounds_add_b_enc_in_the_tail()
    {
        if (!CpuKernels.Supported.Contains(KernelPath.Avx512Bf16)) return;
        using var scope = NewDisposeScope();
        var x = ones(1, 2);
        var encT = zeros(35, 2);
        var b = full(35, -100f);
        encT[0, 0] = 1; encT[0, 1] = 1; b[0] = 0;
        b[34] = 5;
        using var enc = new CandidateEncoder(encT.contiguous(), b, KernelPath.Avx512Bf16);
        using var approx = enc.Approximate(x);
        var (v, i) = enc.TopK(approx, 1);
        Assert.Equal(34L, i.item<long>());
        Assert.Equal(5f, v.item<float>());
    }

    /// <summary>A row with fewer than k numbers among its float32 values is ranked whole and its k positions are still
    /// distinct: with x₀ = +∞, latents 0 and 2 (w₀ &gt; 0) are +∞, latent 1 (w₀ &lt; 0) is −∞, and the rest (w₀ = 0) are
    /// ∞·0 = NaN, so k = 5 takes those three and two NaN positions not among them. The finite row beside it is exact.</summary>
    [Theory]
    [MemberData(nameof(Paths))]
    public void A_row_with_fewer_than_k_numbers_gets_k_distinct_positions(KernelPath path)
    {
        using var scope = NewDisposeScope();
        const int d = 8, c = 32, k = 5;
        var encT = randn(c, d, generator: new Generator(4)) * 0.3;
        encT[.., 0] = 0;
        encT[0, 0] = 1; encT[1, 0] = -1; encT[2, 0] = 2;
        var bias = randn(c, generator: new Generator(5)) * 0.1;
        var x = randn(2, d, generator: new Generator(6));
        x[0, 0] = float.PositiveInfinity;
        encT = encT.contiguous();
        using var enc = new CandidateEncoder(encT, bias, path);
        using var approx = enc.Approximate(x.contiguous());
        var (v, i) = enc.TopK(approx, k);
        var idx = i[0].data<long>().ToArray();
        var val = F(v[0]);
        Assert.Equal(k, idx.Distinct().Count());
        Assert.All(idx, j => Assert.InRange(j, 0, c - 1));
        var value = idx.Zip(val).ToDictionary(p => p.First, p => p.Second);
        Assert.Equal(float.PositiveInfinity, value[0]);
        Assert.Equal(float.NegativeInfinity, value[1]);
        Assert.Equal(float.PositiveInfinity, value[2]);
        Assert.Equal(2, value.Count(p => p.Key > 2 && float.IsNaN(p.Value)));
        AssertExactTopK(x[1..].contiguous(), encT.t(), bias, null, v[1..], i[1..], k);
    }

    public static TheoryData<KernelPath> Paths()
    {
        var data = new TheoryData<KernelPath>();
        foreach (var p in CpuKernels.Supported) data.Add(p);
        return data;
    }

    /// <summary>A row whose bound is not finite (‖x‖ overflows float32, its products do not) is ranked whole, every latent
    /// recomputed: its upper bounds (+∞) must neither skip nor prune a latent.</summary>
    [Theory]
    [MemberData(nameof(Paths))]
    public void A_row_whose_bound_overflows_is_ranked_whole(KernelPath path)
    {
        using var scope = NewDisposeScope();
        var (x, w, b) = Case("random");
        x[0] = x[0] * (1e38 / x[0].abs().max().item<float>());
        using var enc = new CandidateEncoder(w.t().contiguous(), b, path);
        using var approx = enc.Approximate(x);
        Assert.False(float.IsFinite(enc.Entry(approx, 0, 0).Bound), "the test needs a row whose bound overflows");
        var (v, i) = enc.TopK(approx, K);
        AssertExactTopK(x, w, b, null, v, i, K);
    }

    /// <summary>Many rows (several row groups, the last one short): each row's chosen set is the top k of the float32
    /// dot products x·w_j + b_j taken for every latent, and the values are those products bit for bit.</summary>
    [Theory]
    [MemberData(nameof(PathsAndCases))]
    public unsafe void Rows_ranked_in_groups_get_the_float32_top_k_of_every_latent(KernelPath path, string kind)
    {
        using var scope = NewDisposeScope();
        var (x0, w, b) = Case(kind);
        const int rows = 517;
        var x = (x0.repeat(rows / Rows + 1, 1)[..rows] + randn(rows, DIn, generator: new Generator(11)) * 0.01).contiguous();
        var encT = w.t().contiguous();
        using var enc = new CandidateEncoder(encT, b, path);
        using var approx = enc.Approximate(x);
        var (v, i) = enc.TopK(approx, K);
        var xs = F(x);
        var ws = F(encT);
        var bs = F(b);
        var vs = F(v);
        var iv = i.data<long>().ToArray();
        var f = new float[DSae];
        fixed (float* px = xs, pw = ws)
            for (int r = 0; r < rows; r++)
            {
                for (int j = 0; j < DSae; j++) f[j] = SparseKernels.Dot(px + r * DIn, pw + j * DIn, DIn) + bs[j];
                var order = Enumerable.Range(0, DSae).OrderByDescending(j => f[j]).ToArray();
                // Ties at the k-th value may be broken either way ("exact-ties" has them); the set above it is fixed.
                float kth = f[order[K - 1]];
                var chosen = iv.Skip(r * K).Take(K).ToArray();
                Assert.Equal(K, chosen.Distinct().Count());
                for (int e = 0; e < K; e++)
                {
                    Assert.True(f[chosen[e]] >= kth, $"row {r}: chose {chosen[e]} = {f[chosen[e]]} below the k-th {kth}");
                    Assert.Equal(f[chosen[e]], vs[r * K + e]);
                }
                foreach (int j in order.TakeWhile(j => f[j] > kth)) Assert.Contains((long)j, chosen);
            }
    }

    /// <summary>k = 1 between two latents whose int8 products err by nearly their whole bounds, in opposite directions.
    /// x's rounding error δ (0.45 of a step on 63 inputs, each under half a step, so the int8 x is the grid point below)
    /// is aligned with w_a = sign pattern v and against w_b = −v plus input 0 (x₀ = 1 sets the scale): A_a = f_a − 0.223
    /// with E_a ≈ 0.225, A_b = f_b + 0.223. f_a = f_b + 0.09 is the top-1, yet u_a = A_a + E_a lies below t₁ (b's
    /// upper bound) and below A_b: only the lower bound A_b − E_b of the first latent keeps a among the candidates.</summary>
    [Theory]
    [MemberData(nameof(Int8Paths))]
    public void A_latent_whose_product_errs_by_its_whole_bound_is_still_chosen(KernelPath path)
    {
        using var scope = NewDisposeScope();
        const int d = 64, c = 16, levels = 127;
        var rng = new Random(5);
        var x = new float[d];
        var w = new float[d, c];
        x[0] = 1; // max |x|: the int8 step is 1/127
        w[0, 1] = 1;
        for (int i = 1; i < d; i++)
        {
            float v = rng.Next(2) == 0 ? -1 : 1;
            int steps = i <= 41 ? 1 : 0; // Σ steps = 41: Σ x̂_i·v_i = 41/127
            x[i] = v * (steps + 0.45f) / levels;
            w[i, 0] = v;
            w[i, 1] = -v;
        }
        var b = new float[c];
        for (int j = 2; j < c; j++) b[j] = -10;
        var xt = tensor(x).reshape(1, d);
        var wt = tensor(w.Cast<float>().ToArray()).reshape(d, c);
        var bt = tensor(b);
        using var enc = new CandidateEncoder(wt.t().contiguous(), bt, path, rowLevels: levels);
        using var approx = enc.Approximate(xt);
        var (aA, aE) = enc.Entry(approx, 0, 0);
        var (bA, bE) = enc.Entry(approx, 0, 1);
        double fa = x.Zip(Enumerable.Range(0, d), (xi, i) => (double)xi * w[i, 0]).Sum();
        double fb = x.Zip(Enumerable.Range(0, d), (xi, i) => (double)xi * w[i, 1]).Sum();
        // The construction holds: a is the top-1, its bound is nearly tight, and its upper bound is below A_b.
        Assert.True(fa > fb + 0.05, $"f_a {fa}, f_b {fb}");
        Assert.True(fa - aA > 0.9 * aE, $"A_a {aA} vs f_a {fa}, E_a {aE}");
        Assert.True(aA + aE < bA, $"u_a {aA + aE}, A_b {bA}");
        var (values, indices) = enc.TopK(approx, 1);
        Assert.Equal(0L, indices.item<long>());
        Assert.Equal(fa, values.item<float>(), 5);
    }

    /// <summary>A latent whose upper bound is exactly t₁ is ranked once: latent 0 (product 0, b_enc 2²⁰ − 2) has the
    /// upper bound 2²⁰ − 2 + ρ·2²¹ rounded to 2²⁰, a 16-bit bucket floor, and so t₁ for k = 2 beside latent 2 (b_enc
    /// 2²⁰ − 10, product exactly 0 but ‖w‖ = 2²² widening its bound past 2²⁰). The first pass takes both; τ = 2²⁰ − 10
    /// is below latent 0's value, so a second ranking of latent 0 would displace latent 2.</summary>
    [Theory]
    [MemberData(nameof(Int8Paths))]
    public void A_latent_whose_upper_bound_equals_t1_is_ranked_once(KernelPath path)
    {
        using var scope = NewDisposeScope();
        const int d = 16, c = 16;
        var x = ones(1, d);
        var encT = zeros(c, d);
        for (int e = 0; e < d; e++) encT[2, e] = e % 2 == 0 ? 1 << 20 : -(1 << 20);
        var b = full(c, -1e6f);
        b[0] = (1 << 20) - 2;
        b[2] = (1 << 20) - 10;
        using var enc = new CandidateEncoder(encT.contiguous(), b, path);
        using var approx = enc.Approximate(x);
        var (a0, e0) = enc.Entry(approx, 0, 0);
        var (a2, e2) = enc.Entry(approx, 0, 2);
        Assert.Equal((float)(1 << 20), a0 + e0);
        Assert.InRange(a2 + e2, 1 << 20, (1 << 20) + 8192);
        var (v, i) = enc.TopK(approx, 2);
        var chosen = i.data<long>().Zip(F(v)).OrderBy(p => p.First).ToArray();
        Assert.Equal([(0L, (1 << 20) - 2f), (2L, (1 << 20) - 10f)], chosen);
    }

    public static TheoryData<KernelPath, string> PathsAndTwoCases()
    {
        var data = new TheoryData<KernelPath, string>();
        foreach (var p in CpuKernels.Supported)
            foreach (var c in new[] { "near-ties", "all-negative", "exact-ties" })
                data.Add(p, c);
        return data;
    }

    [Theory]
    [MemberData(nameof(PathsAndTwoCases))]
    public void Selection_among_given_columns_is_exact(KernelPath path, string kind)
    {
        using var scope = NewDisposeScope();
        var (x, w, b) = Case(kind);
        var columns = arange(0, DSae, 7, dtype: ScalarType.Int64); // the "dead latents"
        using var enc = new CandidateEncoder(w.t().contiguous(), b, path);
        using var approx = enc.Approximate(x);
        var (v, i) = enc.TopK(approx, 20, columns);
        AssertExactTopK(x, w, b, columns, v, i, 20);
    }

    /// <summary>The test has teeth: on the near-tie input, ranking the bfloat16 products (the old autocast selection)
    /// picks a set that is not float32's.</summary>
    [Fact]
    public void Near_ties_defeat_a_plain_bfloat16_ranking()
    {
        using var scope = NewDisposeScope();
        var (x, w, b) = Case("near-ties");
        var pre = x.to(ScalarType.BFloat16).mm(w.to(ScalarType.BFloat16)).to(ScalarType.Float32) + b;
        var (_, bfIdx) = pre.topk(K, dim: 1);
        var (_, fpIdx) = addmm(b, x, w, 1, 1).topk(K, dim: 1);
        int differ = 0;
        for (int r = 0; r < Rows; r++)
            if (!bfIdx[r].data<long>().ToHashSet().SetEquals(fpIdx[r].data<long>().ToArray())) differ++;
        Assert.True(differ > Rows / 2, $"only {differ} rows differ");
    }

    /// <summary>Each row's k positions are distinct, their values are the float64 pre-activations to float32 accuracy, and
    /// the set is the float64 top-k up to swaps among values within float32 rounding of the k-th (ties aside).</summary>
    internal static void AssertExactTopK(Tensor x, Tensor w, Tensor b, Tensor? columns, Tensor values, Tensor indices, int k)
    {
        var x64 = x.to(ScalarType.Float64);
        var w64 = w.to(ScalarType.Float64);
        var b64 = b.to(ScalarType.Float64);
        if (columns is not null) { w64 = w64.index_select(1, columns); b64 = b64.index_select(0, columns); }
        var pre = (x64.mm(w64) + b64).contiguous();
        int c = (int)pre.shape[1];
        var all = pre.data<double>().ToArray();
        var xn = x64.norm(1).data<double>().ToArray();
        double wMax = w64.norm(0).max().item<double>(), bMax = b64.abs().max().item<double>();
        var vs = F(values);
        var iv = indices.data<long>().ToArray();
        for (int r = 0; r < x.shape[0]; r++)
        {
            double tol = 4e-6 * xn[r] * wMax + 1e-6 * bMax;
            var row = all.Skip(r * c).Take(c).ToArray();
            double kth = row.OrderByDescending(v => v).ElementAt(k - 1);
            var chosen = iv.Skip(r * k).Take(k).ToArray();
            Assert.Equal(k, chosen.Distinct().Count());
            for (int e = 0; e < k; e++)
            {
                double v = row[chosen[e]];
                Assert.True(v >= kth - tol, $"row {r}: chose {chosen[e]} = {v} below the k-th {kth}");
                Assert.True(Math.Abs(vs[r * k + e] - v) <= tol, $"row {r}: value {vs[r * k + e]} vs {v}");
            }
            var set = chosen.ToHashSet();
            for (int j = 0; j < c; j++)
                if (!set.Contains(j)) Assert.True(row[j] <= kth + tol, $"row {r}: missed {j} = {row[j]} above the k-th {kth}");
        }
    }
}
