using System.Text.Json.Nodes;
using SaeSharp.Activations;
using SaeSharp.Evaluation;
using SaeSharp.Interop;
using SaeSharp.IO;
using SaeSharp.Saes;
using SaeSharp.Tests.Cli;
using static TorchSharp.torch;

namespace SaeSharp.Tests.Evaluation;

/// <summary>
/// Latent Scaling (<see cref="CrossCoderLatentScaling"/>) against a double-precision hand loop of the closed form
/// β = Σ f⟨d, y⟩ / (‖d‖² Σ f²), against planted latents whose β and ν are known by construction, and through the
/// normaliser buffers.
/// </summary>
public sealed class CrossCoderLatentScalingTests : TempDirTestBase
{
    private static TensorActivationSource Rows(Tensor x) => new(x.reshape(x.shape[0], -1), shuffle: false);

    /// <summary>The closed form written out row by row in double: targets activation, reconstruction, and error with the
    /// latent's own term (through the target slot's decoder row) added back, all on the chat decoder row.
    /// <paramref name="xn"/> is the (already normalised) input, <paramref name="f"/> the codes.</summary>
    private static double[,,] HandBetas(double[,,] xn, double[,] f, double[,,] w, double[,] b, int[] latents)
    {
        int n = xn.GetLength(0), d = xn.GetLength(2), dict = f.GetLength(1);
        var beta = new double[3, 2, latents.Length];
        for (int k = 0; k < latents.Length; k++)
        {
            int j = latents[k];
            double dd = 0;
            for (int e = 0; e < d; e++) dd += w[1, j, e] * w[1, j, e];
            var num = new double[3, 2];
            double ff = 0;
            for (int r = 0; r < n; r++)
            {
                ff += f[r, j] * f[r, j];
                for (int s = 0; s < 2; s++)
                {
                    double act = 0, rec = 0, err = 0;
                    for (int e = 0; e < d; e++)
                    {
                        double xhat = b[s, e];
                        for (int i = 0; i < dict; i++) xhat += f[r, i] * w[s, i, e];
                        double y = xn[r, s, e];
                        act += w[1, j, e] * y;
                        rec += w[1, j, e] * xhat;
                        err += w[1, j, e] * (y - xhat + f[r, j] * w[s, j, e]);
                    }
                    num[0, s] += f[r, j] * act;
                    num[1, s] += f[r, j] * rec;
                    num[2, s] += f[r, j] * err;
                }
            }
            for (int t = 0; t < 3; t++)
                for (int s = 0; s < 2; s++) beta[t, s, k] = num[t, s] / (dd * ff);
        }
        return beta;
    }

    private static double[,,] Array3(Tensor t)
    {
        var a = t.to(ScalarType.Float64).contiguous().data<double>().ToArray();
        int x = (int)t.shape[0], y = (int)t.shape[1], z = (int)t.shape[2];
        var r = new double[x, y, z];
        for (int i = 0; i < x; i++) for (int j = 0; j < y; j++) for (int k = 0; k < z; k++) r[i, j, k] = a[(i * y + j) * z + k];
        return r;
    }

    private static double[,] Array2(Tensor t)
    {
        var a = t.to(ScalarType.Float64).contiguous().data<double>().ToArray();
        int x = (int)t.shape[0], y = (int)t.shape[1];
        var r = new double[x, y];
        for (int i = 0; i < x; i++) for (int j = 0; j < y; j++) r[i, j] = a[i * y + j];
        return r;
    }

    private static void AssertBetas(double[,,] expected, CrossCoderLatentScalingResult got, double tolerance)
    {
        for (int k = 0; k < got.Latents.Count; k++)
        {
            var l = got.Latents[k];
            (double, double)[] pairs = [l.BetaActivation, l.BetaReconstruction, l.BetaError];
            for (int t = 0; t < 3; t++)
            {
                Assert.Equal(expected[t, 0, k], pairs[t].Item1, tolerance);
                Assert.Equal(expected[t, 1, k], pairs[t].Item2, tolerance);
            }
        }
    }

    /// <summary>A random crosscoder (random biases too) whose latents fire on most rows of positive-mean data.</summary>
    private static CrossCoder RandomCrossCoder(bool normalizer, int d = 3, int dict = 6)
    {
        var cc = new CrossCoder(new CrossCoderConfig { ActivationDim = d, DictSize = dict, NumLayers = 2, NormalizerBuffers = normalizer });
        using var g = new Generator(7);
        cc.InitializeWeights(g, 1.0);
        using (no_grad())
        {
            cc.Encoder.Weight.copy_(rand(new long[] { 2, d, dict }, generator: g));
            cc.Encoder.Bias.copy_(rand(new long[] { dict }, generator: g).sub(0.3));
            cc.Decoder.Weight.copy_(randn(new long[] { 2, dict, d }, generator: g));
            cc.Decoder.Bias.copy_(randn(new long[] { 2, d }, generator: g).mul(0.1));
        }
        return cc;
    }

    [Fact]
    public void BetasEqualADoublePrecisionHandLoopOverBatches()
    {
        using var cc = RandomCrossCoder(normalizer: false);
        using var g = new Generator(11);
        using var x = randn(new long[] { 53, 2, 3 }, generator: g).add(TorchScalars.Of(0.5), TorchScalars.One);
        int[] latents = [0, 2, 3, 5];
        using var source = Rows(x);
        // Batches of 8 over 53 rows: the last batch is partial.
        var got = CrossCoderLatentScaling.Compute(cc, source, latents, batchSize: 8);
        Assert.Equal(53, got.Rows);
        Assert.Equal(latents, got.Latents.Select(l => l.Latent));
        using var f = cc.Encode(x);
        var expected = HandBetas(Array3(x), Array2(f), Array3(cc.Decoder.Weight.detach()), Array2(cc.Decoder.Bias.detach()), latents);
        AssertBetas(expected, got, 9);
        var fa = Array2(f);
        for (int k = 0; k < latents.Length; k++)
            Assert.Equal(Enumerable.Range(0, 53).Count(r => fa[r, latents[k]] != 0), got.Latents[k].ActiveRows);
        // --max-rows: the first 20 rows only.
        using var source20 = Rows(x);
        var first = CrossCoderLatentScaling.Compute(cc, source20, latents, maxRows: 20, batchSize: 8);
        Assert.Equal(20, first.Rows);
        using var x20 = x.narrow(0, 0, 20);
        using var f20 = cc.Encode(x20);
        AssertBetas(HandBetas(Array3(x20), Array2(f20), Array3(cc.Decoder.Weight.detach()), Array2(cc.Decoder.Bias.detach()), latents), first, 9);
    }

    [Fact]
    public void WithNormaliserBuffersTheSumsAreTakenInTheNormalisedSpace()
    {
        using var cc = RandomCrossCoder(normalizer: true);
        using var g = new Generator(3);
        using var mean = randn(new long[] { 2, 3 }, generator: g);
        using var std = rand(new long[] { 2, 3 }, generator: g).add(TorchScalars.Of(0.5), TorchScalars.One);
        cc.SetActivationNormalizer(mean, std);
        using var x = randn(new long[] { 40, 2, 3 }, generator: g).mul(2).add(mean.unsqueeze(0), TorchScalars.One);
        int[] latents = [1, 4];
        using var source = Rows(x);
        var got = CrossCoderLatentScaling.Compute(cc, source, latents, batchSize: 16);
        // Normalised by hand: (x − mean)·target_rms / √(Σ_d std² + 1e-8), target_rms 1.
        var xa = Array3(x);
        var ma = Array2(mean);
        var sa = Array2(std);
        var xn = new double[40, 2, 3];
        for (int s = 0; s < 2; s++)
        {
            double sum = 0;
            for (int e = 0; e < 3; e++) sum += sa[s, e] * sa[s, e];
            double scale = 1 / Math.Sqrt(sum + 1e-8);
            for (int r = 0; r < 40; r++) for (int e = 0; e < 3; e++) xn[r, s, e] = (xa[r, s, e] - ma[s, e]) * scale;
        }
        using var f = cc.Encode(x);
        // float32 normalisation inside the crosscoder against double here: 5 digits.
        AssertBetas(HandBetas(xn, Array2(f), Array3(cc.Decoder.Weight.detach()), Array2(cc.Decoder.Bias.detach()), latents), got, 5);
    }

    /// <summary>d = 2, two latents. Latent 0 is chat-only: it reads chat coordinate 0 (f₀ = ½a), its chat decoder row is
    /// (2, 0), its base row zero. Latent 1 is shared: it reads base coordinate 1 (f₁ = b) and writes (0, 1) in both slots.
    /// Rows: chat (a, b), base (0.3a, b) with a, b &gt; 0. So the chat reconstruction is exact, the base one is (0, b), and
    /// the base activation along latent 0's direction is exactly 0.3·f₀·d₀.</summary>
    private static CrossCoder Planted(bool normalizer)
    {
        var cc = new CrossCoder(new CrossCoderConfig { ActivationDim = 2, DictSize = 2, NumLayers = 2, NormalizerBuffers = normalizer });
        using (no_grad())
        {
            cc.Encoder.Weight.zero_();
            cc.Encoder.Weight[1, 0, 0] = tensor(0.5f);
            cc.Encoder.Weight[0, 1, 1] = tensor(1f);
            cc.Encoder.Bias.zero_();
            cc.Decoder.Weight.zero_();
            cc.Decoder.Weight[1, 0, 0] = tensor(2f);
            cc.Decoder.Weight[0, 1, 1] = tensor(1f);
            cc.Decoder.Weight[1, 1, 1] = tensor(1f);
            cc.Decoder.Bias.zero_();
        }
        return cc;
    }

    private static Tensor PlantedRows(int n)
    {
        using var g = new Generator(5);
        var a = rand(new long[] { n }, generator: g).add(TorchScalars.Of(0.1), TorchScalars.One);
        var b = rand(new long[] { n }, generator: g).add(TorchScalars.Of(0.1), TorchScalars.One);
        return stack([stack([a.mul(0.3), b], 1), stack([a, b], 1)], 1); // [n, 2 (base, chat), 2]
    }

    private static void AssertPlanted(CrossCoderLatentScalingResult r, int digits)
    {
        var chatOnly = r.Latents.Single(l => l.Latent == 0);
        Assert.Equal(CrossCoderLatentBand.ChatOnly, chatOnly.Band);
        Assert.Equal(1.0, chatOnly.DeltaNorm, 12);
        Assert.Equal(0.3, chatOnly.BetaActivation.Base, digits);
        Assert.Equal(1.0, chatOnly.BetaActivation.Chat, digits);
        Assert.Equal(0.0, chatOnly.BetaReconstruction.Base, digits);
        Assert.Equal(1.0, chatOnly.BetaReconstruction.Chat, digits);
        // ε_base + f₀·0 = (0.3a, 0): β^ε_base = 0.3; ε_chat = 0, + f₀·(2, 0) = (a, 0): β^ε_chat = 1.
        Assert.Equal(0.3, chatOnly.BetaError.Base, digits);
        Assert.Equal(1.0, chatOnly.BetaError.Chat, digits);
        Assert.Equal(0.3, chatOnly.NuError, digits);
        Assert.Equal(0.0, chatOnly.NuReconstruction, digits);
        var shared = r.Latents.Single(l => l.Latent == 1);
        Assert.Equal(CrossCoderLatentBand.Shared, shared.Band);
        Assert.Equal(1.0, shared.NuError, digits);
        Assert.Equal(1.0, shared.NuReconstruction, digits);
        Assert.Equal(1.0, shared.NuActivation, digits);
        Assert.Equal(1.0, shared.BetaError.Chat, digits);
    }

    [Fact]
    public void PlantedLatentsGiveTheirBetaAndASharedLatentHasNuOne()
    {
        using var cc = Planted(normalizer: false);
        Assert.Equal([0, 1], CrossCoderLatentScaling.DefaultLatents(cc));
        using var x = PlantedRows(64);
        using var source = Rows(x);
        var r = CrossCoderLatentScaling.Compute(cc, source, batchSize: 10);
        AssertPlanted(r, 6);
        var summary = r.BandSummary();
        Assert.Equal([CrossCoderLatentBand.ChatOnly, CrossCoderLatentBand.Shared], summary.Select(s => s.Band));
        Assert.Equal(0.3, summary[0].MedianNuError, 6);
        Assert.Equal(1.0, summary[1].MedianNuReconstruction, 6);
        var png = r.RenderScatter("base", "chat");
        Assert.Equal([0x89, (byte)'P', (byte)'N', (byte)'G'], png.Take(4));
    }

    [Fact]
    public void PlantedLatentsThroughTheNormaliserGiveTheSameBetas()
    {
        using var cc = Planted(normalizer: true);
        // mean m and std with Σ_d std² = 1/s² per slot: raw rows x/s + m normalise to the planted rows x.
        using var mean = tensor(new float[] { 1, -2, 0.5f, 3 }).view(2, 2);
        using var std = tensor(new float[] { 3, 4, 0.6f, 0.8f }).view(2, 2); // s = 1/5 (base), 1 (chat)
        cc.SetActivationNormalizer(mean, std);
        using var planted = PlantedRows(64);
        using var scale = tensor(new float[] { 5, 1 }).view(1, 2, 1);
        using var raw = planted.mul(scale).add(mean.unsqueeze(0), TorchScalars.One);
        using var source = Rows(raw);
        AssertPlanted(CrossCoderLatentScaling.Compute(cc, source, batchSize: 10), 4);
    }

    [Fact]
    public void ALatentThatNeverFiresHasNoBetaAndBadInputIsRefused()
    {
        using var cc = Planted(normalizer: false);
        using var x = PlantedRows(8);
        using var noChat = x.clone();
        using (no_grad()) noChat.select(1, 1).select(1, 0).zero_(); // chat coordinate 0 = 0: latent 0 never fires
        using var source = Rows(noChat);
        var r = CrossCoderLatentScaling.Compute(cc, source, [0]);
        Assert.Equal(0, r.Latents[0].ActiveRows);
        Assert.True(double.IsNaN(r.Latents[0].BetaError.Chat));
        Assert.True(double.IsNaN(CrossCoderLatentScaling.Median([double.NaN])));
        using var s2 = Rows(x);
        Assert.Contains("latent 2 is outside 0..1", Assert.Throws<SaeSharpException>(() => CrossCoderLatentScaling.Compute(cc, s2, [2])).Message);
        using var narrow = new TensorActivationSource(zeros(4, 3), shuffle: false);
        Assert.Contains("2 slots × activation_dim 2 = 4", Assert.Throws<SaeSharpException>(() => CrossCoderLatentScaling.Compute(cc, narrow)).Message);
        using var three = new CrossCoder(new CrossCoderConfig { ActivationDim = 2, DictSize = 2, NumLayers = 3 });
        Assert.Contains("2 slots (base, chat); this one has 3", Assert.Throws<SaeSharpException>(() => CrossCoderLatentScaling.DefaultLatents(three)).Message);
    }

    [Fact]
    public void SaeEvalLatentScalingWritesBetasNuAndTheScatter()
    {
        using (var cc = Planted(normalizer: false))
            CrossCoderFormat.Save(cc, Path.Combine(_dir, "cc"), new CrossCoderSources
            {
                HookNames = ["blocks.1.hook_resid_post", "blocks.1.hook_resid_post"], ModelNames = ["base", "chat"],
            });
        using (var x = PlantedRows(64))
        {
            Npy.Save(Path.Combine(_dir, "base.npy"), x.select(1, 0).contiguous());
            Npy.Save(Path.Combine(_dir, "chat.npy"), x.select(1, 1).contiguous());
        }
        var json = Path.Combine(_dir, "m.json");
        string activations = Path.Combine(_dir, "base.npy") + "," + Path.Combine(_dir, "chat.npy");
        var (exit, stdout, err) = CliRunner.Run("eval", "--sae", Path.Combine(_dir, "cc"), "--activations", activations, "--json", json, "--latent-scaling");
        Assert.True(exit == 0, err);
        Assert.Matches(@"only chat: median ν\^ε\s+│?\s*0\.300", stdout);
        Assert.Matches(@"shared: median ν\^r\s+│?\s*1\.000", stdout);
        var ls = JsonNode.Parse(File.ReadAllText(json))!["latent_scaling"]!;
        Assert.Equal(64, (long)ls["rows"]!);
        Assert.Equal("chat", (string)ls["chat"]!);
        var l0 = ls["latents"]![0]!;
        Assert.Equal(0, (int)l0["latent"]!);
        Assert.Equal("chat_only", (string)l0["band"]!);
        Assert.Equal(0.3, (double)l0["beta_error_base"]!, 5);
        Assert.Equal(0.3, (double)l0["beta_ratio_error"]!, 5);
        Assert.Equal(0.0, (double)l0["beta_ratio_reconstruction"]!, 5);
        Assert.Equal("shared", (string)ls["bands"]![1]!["band"]!);
        var png = Path.Combine(_dir, "m_latent_scaling.png");
        Assert.Equal([0x89, (byte)'P', (byte)'N', (byte)'G'], File.ReadAllBytes(png).Take(4));
        // --latents picks latents; without --latent-scaling it is refused.
        (exit, _, _) = CliRunner.Run("eval", "--sae", Path.Combine(_dir, "cc"), "--activations", activations, "--json", json, "--latent-scaling", "--latents", "1");
        Assert.Equal(0, exit);
        Assert.Equal(1, (int)JsonNode.Parse(File.ReadAllText(json))!["latent_scaling"]!["latents"]!.AsArray().Single()!["latent"]!);
        (exit, _, err) = CliRunner.Run("eval", "--sae", Path.Combine(_dir, "cc"), "--activations", activations, "--latents", "1");
        Assert.NotEqual(0, exit);
        Assert.Contains("--latents: only with --latent-scaling", err);
    }
}
