using SaeSharp.Kernels;
using SaeSharp.Saes;
using static TorchSharp.torch;
using SaeSharp.Tests.Saes;
using static SaeSharp.Tests.Saes.DenseAutocastTests;

namespace SaeSharp.Tests.Kernels;

/// <summary>The bfloat16 autograd functions (<see cref="Bf16Autograd"/>) and SIMD passes (<see cref="Bf16Kernels"/>)
/// against float32 autograd on rounded operands, at a toy width (the scalar tails) and at d ≥ 256 (the unrolled
/// vector loops, then a tail).</summary>
public class Bf16AutogradTests
{
    private const ScalarType Bf16 = ScalarType.BFloat16;
    private const ScalarType F32 = ScalarType.Float32;

    [Theory]
    [InlineData(37, 24, 40)]
    [InlineData(37, 264, 520)]
    public void EncoderMatchesFloat32AutogradOnRoundedOperands(int n, int dIn, int dSae)
    {
        var g = new Generator(11);
        var x = randn(n, dIn, generator: g);
        var bDec = Leaf(randn(dIn, generator: g) * 0.1);
        var w = Leaf(randn(dIn, dSae, generator: g) * (1 / Math.Sqrt(dIn)));
        var bias = Leaf(randn(dSae, generator: g) * 0.1);
        var up = randn(n, dSae, generator: g);

        var pre = Bf16Autograd.Encoder(x, bDec, w, bias);
        Assert.Equal(Bf16, pre.dtype);
        (pre.to(F32) * up).sum().backward();

        // Reference: float32 autograd of (x − b_dec)·w + bias on bfloat16-rounded operands, with the upstream gradient
        // rounded as it enters the bfloat16 output; b_dec's gradient through x − b_dec is −w·Σ_n ∂L/∂pre_n.
        var xr = R(x - bDec);
        var (wr, br) = (Leaf(R(w)), Leaf(R(bias)));
        var refPre = xr.matmul(wr) + br;
        (refPre * R(up)).sum().backward();
        AssertRel(pre.to(F32), refPre, 6e-3, "pre vs rounded operands");
        AssertRel(w.grad!, wr.grad!, 6e-3, "grad w");
        AssertRel(bias.grad!, br.grad!, 6e-3, "grad bias");
        AssertRel(bDec.grad!, -w.detach().matmul(br.grad!), 6e-3, "grad b_dec");

        // And float32 on the raw operands, within bfloat16 accuracy.
        var (w32, b32, d32) = (Leaf(w), Leaf(bias), Leaf(bDec));
        var pre32 = (x - d32).matmul(w32) + b32;
        (pre32 * up).sum().backward();
        AssertRel(pre.to(F32), pre32, 2e-2, "pre vs float32");
        AssertRel(w.grad!, w32.grad!, 2e-2, "grad w vs float32");
        AssertRel(bias.grad!, b32.grad!, 2e-2, "grad bias vs float32");
        AssertRel(bDec.grad!, d32.grad!, 2e-2, "grad b_dec vs float32");
    }

    [Theory]
    [InlineData(33, 16, 40)]
    [InlineData(33, 264, 520)]
    public void ReluEncoderMatchesReluOfRoundedProductAndCountsPositives(int n, int dIn, int dSae)
    {
        var g = new Generator(12);
        var x = randn(n, dIn, generator: g);
        var w = Leaf(randn(dIn, dSae, generator: g) * (1.2 / Math.Sqrt(dIn)));
        var bias = Leaf(randn(dSae, generator: g) * 0.1);
        var up = randn(n, dSae, generator: g);

        var (f, counts) = Bf16Autograd.ReluEncoder(x, null, w, bias);
        // Bf16Autograd.Decoder hands the ReLU's backward a fresh gradient; here the upstream product does.
        (f.to(F32) * up).sum().backward();

        // bf16(bf16(x·w) + bias): the product rounded, then the float32 bias added in the ReLU's pass and rounded again.
        var refF = nn.functional.relu(R(x).matmul(R(w)) + bias.detach());
        AssertRel(f.to(F32), refF, 6e-3, "f vs ReLU of the rounded operands' product");
        var active = f.to(F32).gt(0);
        var refActive = refF.gt(0);
        Assert.True(active.ne(refActive).sum().item<long>() <= 3 + n * dSae / 2000, "the same entries are active but for a few within rounding of 0");
        Assert.True(counts.Same(active.sum(0L)), "counts of positive entries per latent");
        var gPre = R(up) * active;
        AssertRel(w.grad!, R(x).t().matmul(gPre), 6e-3, "grad w");
        AssertRel(bias.grad!, gPre.sum(0L), 1e-5, "grad bias (float32 column sums of the masked gradient)");
    }

    [Theory]
    [InlineData(29, 40, 24)]
    [InlineData(29, 520, 264)]
    public void DecoderMatchesFloat32AutogradOnRoundedOperands(int n, int dSae, int dOut)
    {
        var g = new Generator(13);
        var f = nn.functional.relu(randn(n, dSae, generator: g)).to(Bf16).requires_grad_(true);
        var w = Leaf(randn(dSae, dOut, generator: g) * (1.3 / Math.Sqrt(dSae)));
        var bias = Leaf(randn(dOut, generator: g) * 0.1);
        var up = randn(n, dOut, generator: g);

        var y = Bf16Autograd.Decoder(f, w, bias);
        Assert.Equal(F32, y.dtype);
        (y * up).sum().backward();

        var (fr, wr, br) = (Leaf(f.to(F32)), Leaf(R(w)), Leaf(bias));
        var refY = fr.matmul(wr) + br;
        (refY * R(up)).sum().backward();
        AssertRel(y, refY, 6e-3, "y");
        Assert.Equal(Bf16, f.grad!.dtype);
        AssertRel(f.grad!.to(F32), fr.grad!, 6e-3, "grad f");
        AssertRel(w.grad!, wr.grad!, 6e-3, "grad w");
        AssertRel(bias.grad!, up.sum(0L), 1e-6, "grad bias (float32)");
    }

    [Theory]
    [InlineData(50, 40)]
    [InlineData(50, 520)]
    public void JumpReluMatchesStraightThroughReference(int n, int dSae)
    {
        var g = new Generator(14);
        double eps = 0.2;
        var pre = (randn(n, dSae, generator: g) * 0.5).to(Bf16).requires_grad_(true);
        var theta = Leaf(rand(dSae, generator: g) * 0.3 + 0.05);
        var up = randn(n, dSae, generator: g);

        var (f, active, kernel) = Bf16Autograd.JumpRelu(pre, theta, eps);
        (f.to(F32) * up).sum().backward();

        // Reference: the float32 straight-through JumpReLU of the same (bf16-exact) pre-activations.
        var pr = Leaf(pre.to(F32));
        var th = Leaf(theta);
        var refF = JumpReluSae.JumpReluSte(pr, th, eps);
        (refF * R(up)).sum().backward();
        Assert.True(f.to(F32).Same(refF.detach()), "f = pre·[pre > θ]");
        Assert.True(pre.grad!.to(F32).Same(pr.grad!), "∂L/∂pre = bf16(up)·[pre > θ]");
        AssertRel(theta.grad!, th.grad!, 1e-5, "∂L/∂θ");
        var u = (pr.detach() - th.detach()).abs();
        Assert.True(active.Same(pr.detach().gt(th.detach()).sum(0L)), "active counts");
        Assert.True(kernel.Same(u.lt(eps / 2).sum(0L)), "kernel counts");
        Assert.True(kernel.sum().item<long>() > 20, "the test exercises the kernel");
    }

    [Theory]
    [InlineData(45, 40)]
    [InlineData(45, 520)]
    public void AffineReluMatchesFloat32AutogradOnTheRoundedInput(int n, int dSae)
    {
        var g = new Generator(16);
        var p = randn(n, dSae, generator: g).to(Bf16).requires_grad_(true);
        var scale = Leaf(rand(dSae, generator: g) + 0.5);
        var shift = Leaf(randn(dSae, generator: g) * 0.3);
        var up = randn(n, dSae, generator: g);

        var f = Bf16Autograd.AffineRelu(p, scale, shift);
        (f.to(F32) * up).sum().backward();

        var pr = Leaf(p.to(F32));
        var (sr, hr) = (Leaf(scale), Leaf(shift));
        var refF = nn.functional.relu(pr * sr + hr);
        (refF * R(up)).sum().backward();
        AssertRel(f.to(F32), refF, 4e-3, "f");
        Assert.True(f.to(F32).gt(0).ne(refF.gt(0)).sum().item<long>() <= 2 + n * dSae / 2000, "same active entries but within rounding of 0");
        AssertRel(p.grad!.to(F32), pr.grad!, 4e-3, "∂/∂p");
        AssertRel(scale.grad!, sr.grad!, 2e-2, "∂/∂scale");
        AssertRel(shift.grad!, hr.grad!, 2e-2, "∂/∂shift");
    }

    /// <summary>JumpReLU is strictly above θ: pre-activations equal to θ (bfloat16-exact, θ_j = (j+1)/8) give 0 and are
    /// not counted active, those 1 above give themselves, those 1/16 below 0, by hand; 19 columns (a scalar tail after
    /// a vector of 16, or all tail with 32 lanes) and 266 (vectors, then a tail of 10).</summary>
    [Theory]
    [InlineData(19)]
    [InlineData(266)]
    public void JumpReluAtTheThresholdIsInactive(int d)
    {
        var th = (TorchScalars.Arange(d, dtype: F32) % 19 + 1) / 8;
        var pre = stack([th, th + 1, th - 1f / 16]).to(Bf16);
        Assert.True(pre.to(F32)[0].Same(th), "θ is bfloat16-exact");
        var (f, active, _) = Bf16Autograd.JumpRelu(pre.requires_grad_(true), Leaf(th), 0.2);
        var expected = stack([zeros(d), th + 1, zeros(d)]);
        Assert.True(f.to(F32).Same(expected), "f = pre·[pre > θ], 0 at θ");
        Assert.True(active.Same(ones(d, dtype: ScalarType.Int64)), "one active row per column");
    }

    /// <summary>19 columns: one vector of 16 and a scalar tail of 3 (8 and 11 with 512-bit vectors); 14 × 19 = 266
    /// columns: the unrolled loops over several vectors, then a tail of 10.</summary>
    [Theory]
    [InlineData(1)]
    [InlineData(14)]
    public void KernelsHandleSignsZerosAndTails(int repeats)
    {
        var v = tensor(new float[] { 1, -1, 0, -0f, float.PositiveInfinity, float.NegativeInfinity, float.NaN, 2.5f, -3, 1e-30f,
            -1e-30f, 7, -7, 0.5f, -0.5f, 3, 4, -2, 1 }).reshape(1, 19).repeat(1, repeats).to(Bf16);
        var m = cat([v, v.neg(), v.flip(1)], 0);
        var expectedCounts = m.to(F32).gt(0).sum(0L);
        Assert.True(Bf16Kernels.PositiveCounts(m).Same(expectedCounts));
        var copy = m.clone();
        var counts = Bf16Kernels.ReluInPlace(copy);
        Assert.True(counts.Same(expectedCounts));
        var relu = nn.functional.relu(m.to(F32)).nan_to_num(0);
        Assert.True(copy.to(F32).nan_to_num(0).Same(relu), "in-place ReLU");
        var src = randn(3, 19 * repeats, generator: new Generator(2)).to(Bf16);
        Assert.True(Bf16Kernels.WherePositive(m, src).to(F32).Same(src.to(F32) * m.to(F32).gt(0)), "masking by positive entries");
        // The column sums of the masked result (a ReLU's bias gradient): the gated entries only, in the tail too.
        Bf16Kernels.WherePositive(m, src, null, columnSums: true, out var sums);
        var expectedSums = (src.to(ScalarType.Float64) * m.to(F32).gt(0)).sum(0L);
        Assert.True((sums!.to(ScalarType.Float64) - expectedSums).abs().max().item<double>() <= 1e-5, "column sums of the masked entries");
        var (rows, cols, _) = SparseKernels.PositiveEntries(m, values: false)!.Value;
        var idx = m.to(F32).gt(0).nonzero();
        Assert.True(rows.Same(idx[.., 0]) && cols.Same(idx[.., 1]), "positive entries in row-major order");
    }

    /// <summary>float32 → bfloat16 is rounded to nearest, ties to even, as torch converts: exact ties between two
    /// bfloat16 values (low half-word 0x8000) go to the even one, by hand, and random floats match torch's conversion, in
    /// the scalar rounding and in the vector narrowing (the kernels' tails and bodies).</summary>
    [Fact]
    public void RoundingIsToNearestEvenAsTorchConverts()
    {
        // (float32 bits, bfloat16 bits): ties go to the even neighbour, either side of them to the nearer one.
        (uint F, ushort B)[] hand =
        [
            (0x3F808000, 0x3F80), (0x3F818000, 0x3F82), (0xBF808000, 0xBF80), (0xBF818000, 0xBF82),
            (0x3F808001, 0x3F81), (0x3F817FFF, 0x3F81), (0x42288000, 0x4228), (0x42298000, 0x422A),
        ];
        foreach (var (f, bits) in hand)
            Assert.True((ushort)Bf16Bits.Round(BitConverter.UInt32BitsToSingle(f)) == bits, $"{f:X8} -> {(ushort)Bf16Bits.Round(BitConverter.UInt32BitsToSingle(f)):X4}, expected {bits:X4}");

        var rng = new Random(5);
        var values = new float[4 * System.Numerics.Vector<float>.Count * 64];
        for (int i = 0; i < values.Length; i++)
            values[i] = i < hand.Length ? BitConverter.UInt32BitsToSingle(hand[i].F)
                : i % 3 == 0 ? BitConverter.UInt32BitsToSingle((uint)rng.Next(0x3000, 0x4F00) << 16 | 0x8000u) // exact ties
                : (float)(rng.NextDouble() * 200 - 100);
        using var t = tensor(values);
        using var b = t.to(Bf16);
        using var back = b.to(F32);
        var expected = back.data<float>().ToArray().Select(v => (ushort)(BitConverter.SingleToUInt32Bits(v) >> 16)).ToArray();
        for (int i = 0; i < values.Length; i++)
            Assert.True((ushort)Bf16Bits.Round(values[i]) == expected[i], $"scalar {values[i]:R}: {(ushort)Bf16Bits.Round(values[i]):X4} vs torch {expected[i]:X4}");
        int w = System.Numerics.Vector<float>.Count;
        for (int i = 0; i + 2 * w <= values.Length; i += 2 * w)
        {
            var n = Bf16Bits.Narrow(new System.Numerics.Vector<float>(values, i), new System.Numerics.Vector<float>(values, i + w));
            for (int l = 0; l < 2 * w; l++)
                Assert.True((ushort)n[l] == expected[i + l], $"vector {values[i + l]:R}: {(ushort)n[l]:X4} vs torch {expected[i + l]:X4}");
        }
    }
}
