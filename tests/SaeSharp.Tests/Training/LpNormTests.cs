using SaeSharp.IO;
using SaeSharp.Pipelines;
using SaeSharp.Saes;
using SaeSharp.Training;
using static TorchSharp.torch;

namespace SaeSharp.Tests.Training;

/// <summary>
/// SAELens's <c>lp_norm</c> (standard_sae.py, <c>calculate_aux_loss</c>): the relu SAE's sparsity term is
/// mean_n ‖f_n ⊙ ‖W_dec rows‖‖_p. Checked against a double-precision hand computation for p = 1, 2 and 0.5 (with and
/// without the decoder-norm weights), the gradients of the p ≠ 1 torch path against central differences of that hand
/// loss, the p = 1 path unchanged, and the field's way in (--config, errors, cfg.json).
/// </summary>
public class LpNormTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("lp-norm-").FullName;
    public void Dispose() => Directory.Delete(_dir, true);

    private const int DIn = 3, DSae = 4, Rows = 6;
    private const double Lambda = 0.7;

    // Row 4 is far negative so that every latent is off there (a zero row of f: its norm's gradient is 0).
    private static readonly double[,] X =
    {
        { 0.9, -0.4, 1.3 }, { -0.2, 0.8, 0.5 }, { 1.1, 1.4, -0.6 }, { 0.3, -1.2, 0.7 }, { -6, -6, -6 }, { 0.5, 0.2, 0.9 },
    };

    private static double[] Params(int count, int seed)
    {
        var r = new Random(seed);
        return Enumerable.Range(0, count).Select(_ => r.NextDouble() * 1.6 - 0.8).ToArray();
    }

    // W_enc [d_in, d_sae], b_enc [d_sae], W_dec [d_sae, d_in], b_dec [d_in], flattened in that order.
    private static readonly double[] Theta = [.. Params(DIn * DSae, 1).Select(v => Math.Abs(v) + 0.1), .. Params(DSae, 2), .. Params(DSae * DIn, 3), .. Params(DIn, 4).Select(v => v * 0.2)];

    /// <summary>The loss mean_n ‖y − ŷ‖² + λ·mean_n (Σ_j (f_nj w_j)^p)^(1/p) and the sparsity term, in double.</summary>
    private static (double Loss, double Sparsity) HandLoss(double[] t, double p, bool decoderNormWeights)
    {
        int o = 0;
        double W(int i, int j) => t[i * DSae + j];
        double BEnc(int j) => t[DIn * DSae + j];
        double WDec(int j, int i) => t[DIn * DSae + DSae + j * DIn + i];
        double BDec(int i) => t[DIn * DSae + DSae + DSae * DIn + i];
        _ = o;
        double mse = 0, sparsity = 0;
        for (int n = 0; n < Rows; n++)
        {
            var f = new double[DSae];
            for (int j = 0; j < DSae; j++)
            {
                double pre = BEnc(j);
                for (int i = 0; i < DIn; i++) pre += (X[n, i] - BDec(i)) * W(i, j);
                f[j] = Math.Max(0, pre);
            }
            double sum = 0;
            for (int j = 0; j < DSae; j++)
            {
                double w = 1;
                if (decoderNormWeights) w = Math.Sqrt(Enumerable.Range(0, DIn).Sum(i => WDec(j, i) * WDec(j, i)));
                sum += Math.Pow(f[j] * w, p);
            }
            sparsity += sum == 0 ? 0 : Math.Pow(sum, 1 / p);
            for (int i = 0; i < DIn; i++)
            {
                double y = BDec(i);
                for (int j = 0; j < DSae; j++) y += f[j] * WDec(j, i);
                mse += (y - X[n, i]) * (y - X[n, i]);
            }
        }
        return (mse / Rows + Lambda * sparsity / Rows, sparsity / Rows);
    }

    private static StandardSae Sae(double p, SparsityPenalty penalty)
    {
        var sae = new StandardSae(new SaeConfig { Architecture = "standard", DIn = DIn, DSae = DSae });
        sae.Training.SparsityCoefficient = Lambda;
        sae.Training.Penalty = penalty;
        sae.Training.LpNorm = p;
        sae.SparseTrainingDensity = 0; // the dense pass: the sparse pass is the p = 1 path's business
        using var _ = no_grad();
        var sd = sae.state_dict();
        sd["W_enc"].copy_(tensor(Theta[..(DIn * DSae)].Select(v => (float)v).ToArray()).view(DIn, DSae));
        sd["b_enc"].copy_(tensor(Theta[(DIn * DSae)..(DIn * DSae + DSae)].Select(v => (float)v).ToArray()));
        sd["W_dec"].copy_(tensor(Theta[(DIn * DSae + DSae)..(DIn * DSae + DSae + DSae * DIn)].Select(v => (float)v).ToArray()).view(DSae, DIn));
        sd["b_dec"].copy_(tensor(Theta[(DIn * DSae + DSae + DSae * DIn)..].Select(v => (float)v).ToArray()));
        return sae;
    }

    private static Tensor Input()
    {
        var flat = new float[Rows * DIn];
        for (int n = 0; n < Rows; n++) for (int i = 0; i < DIn; i++) flat[n * DIn + i] = (float)X[n, i];
        return tensor(flat).view(Rows, DIn);
    }

    private static double[] Rounded(double[] t) => t.Select(v => (double)(float)v).ToArray();

    [Theory]
    [InlineData(1.0, SparsityPenalty.L1)]
    [InlineData(2.0, SparsityPenalty.L1)]
    [InlineData(0.5, SparsityPenalty.L1)]
    [InlineData(1.0, SparsityPenalty.L1DecoderNorm)]
    [InlineData(2.0, SparsityPenalty.L1DecoderNorm)]
    [InlineData(0.5, SparsityPenalty.L1DecoderNorm)]
    public void TheSparsityTermIsTheMeanOfTheRowsPNormOfTheWeightedActivations(double p, SparsityPenalty penalty)
    {
        using var scope = NewDisposeScope();
        using var sae = Sae(p, penalty);
        var x = Input();
        var o = sae.TrainingForward(x, x, new SaeTrainContext());
        var (loss, sparsity) = HandLoss(Rounded(Theta), p, penalty == SparsityPenalty.L1DecoderNorm);
        Assert.True(sparsity > 0.1);
        Assert.Equal(sparsity, o.Losses["l1_loss"].item<float>(), 1e-5 * Math.Max(1, sparsity));
        Assert.Equal(loss, o.Loss.item<float>(), 1e-4 * Math.Max(1, loss));
    }

    [Theory]
    [InlineData(2.0, SparsityPenalty.L1DecoderNorm)]
    [InlineData(0.5, SparsityPenalty.L1DecoderNorm)]
    [InlineData(3.0, SparsityPenalty.L1)]
    public void ThePNormPathsGradientsAreThoseOfTheHandLoss(double p, SparsityPenalty penalty)
    {
        using var scope = NewDisposeScope();
        using var sae = Sae(p, penalty);
        var x = Input();
        sae.TrainingForward(x, x, new SaeTrainContext()).Loss.backward();
        var sd = sae.named_parameters().ToDictionary(kv => kv.name, kv => kv.parameter.grad!.to(ScalarType.Float64).reshape(-1).data<double>().ToArray());
        double[] autograd = [.. sd["W_enc"], .. sd["b_enc"], .. sd["W_dec"], .. sd["b_dec"]];
        var t = Rounded(Theta);
        const double h = 1e-6;
        for (int k = 0; k < t.Length; k++)
        {
            var plus = (double[])t.Clone();
            var minus = (double[])t.Clone();
            plus[k] += h;
            minus[k] -= h;
            double fd = (HandLoss(plus, p, penalty == SparsityPenalty.L1DecoderNorm).Loss - HandLoss(minus, p, penalty == SparsityPenalty.L1DecoderNorm).Loss) / (2 * h);
            Assert.True(Math.Abs(fd - autograd[k]) <= 1e-3 * Math.Max(1, Math.Abs(fd)), $"parameter {k}: autograd {autograd[k]}, hand {fd}");
        }
    }

    [Fact]
    public void ARunWithLpNormOneTrainsTheSameWeightsBitForBitAsARunWithoutIt()
    {
        float[] Weights(string fields, string name)
        {
            var s = Settings("relu-april", fields + "\"deterministic\": true");
            s.Out = Path.Combine(_dir, name);
            using var plan = TrainingPlan.ForActivations(s);
            var result = plan.Run();
            using var sae = SaeSharp.Interop.SaeLoader.Load(result.Saes[0].Directory);
            return sae.WDec.data<float>().ToArray();
        }
        Assert.Equal(Weights("", "without"), Weights("\"lp_norm\": 1, ", "with"));
        Assert.NotEqual(Weights("", "without2"), Weights("\"lp_norm\": 2, ", "p2"));
    }

    private TrainingSettings Settings(string arch, string fields)
    {
        var path = Path.Combine(_dir, "a.safetensors");
        if (!File.Exists(path))
            SafeTensors.Save(path, new Dictionary<string, Tensor> { ["activations"] = randn(600, 8, generator: new Generator(3)) });
        return TrainingSettings.FromJson($$"""
            {"activations": "{{path.Replace("\\", "/")}}", "architecture": "{{arch}}", "expansion_factor": 2, "steps": 4,
             "batch_size": 32, "eval_rows": 64, "out": "{{Path.Combine(_dir, "run").Replace("\\", "/")}}" {{(fields.Length > 0 ? ", " + fields : "")}} }
            """, "lp.json");
    }

    [Fact]
    public void LpNormInAConfigReachesTheReluRecipesAndCfgJson()
    {
        using (var plan = TrainingPlan.ForActivations(Settings("relu,relu-april", "\"lp_norm\": 0.5")))
        {
            Assert.All(plan.Options.Saes, s => Assert.Equal(0.5, s.Sae.Training.LpNorm));
            var result = plan.Run();
            Assert.All(result.Saes, s => Assert.Equal(0.5, s.Config.Extra!["lp_norm"].GetDouble()));
        }
        // SAELens's default 1 (every standard to_dict holds it) is the L1 term and is not written.
        Directory.Delete(Path.Combine(_dir, "run"), true);
        using (var plan = TrainingPlan.ForActivations(Settings("relu", "\"lp_norm\": 1")))
        {
            Assert.Equal(1, plan.Options.Saes[0].Sae.Training.LpNorm);
            var result = plan.Run();
            Assert.False(result.Saes[0].Config.Extra!.ContainsKey("lp_norm"));
        }
    }

    [Theory]
    [InlineData("topk", "\"k\": 2, \"lp_norm\": 2", "'lp_norm' (--lp-norm) applies to relu, relu-april, skip_transcoder")]
    [InlineData("relu", "\"lp_norm\": 0", "lp_norm 0: expected a positive, finite p")]
    [InlineData("relu", "\"lp_norm\": -1", "lp_norm -1: expected a positive, finite p")]
    [InlineData("relu", "\"lp_norm\": \"l2\"", "lp_norm \"l2\": expected a number")]
    public void BadOrUnusedLpNormIsAnErrorNamingIt(string arch, string fields, string expected)
    {
        var e = Assert.Throws<SaeSharpException>(() => TrainingPlan.ForActivations(Settings(arch, fields)));
        Assert.StartsWith("lp.json: ", e.Message);
        Assert.Contains(expected, e.Message);
    }

    [Fact]
    public void LpNormFlagOnARunWithoutAReluRecipeIsRefusedNamingTheFlag()
    {
        var path = Path.Combine(_dir, "rows.safetensors");
        using (var rows = randn(300, 8, generator: new Generator(1)))
            SafeTensors.Save(path, new Dictionary<string, Tensor> { ["activations"] = rows });
        var r = Cli.CliRunner.Run("train", "--activations", path, "--arch", "topk", "--k", "2", "--lp-norm", "2", "--steps", "2",
            "--batch-size", "32", "--out", Path.Combine(_dir, "flag"));
        Assert.Equal(1, r.Exit);
        // Other tests may register recipes that train as relu; they would follow skip_transcoder in the list.
        Assert.StartsWith("error: training settings: 'lp_norm' (--lp-norm) applies to relu, relu-april, skip_transcoder", r.Err);
        Assert.EndsWith("; this run trains topk: drop it or add the architecture", r.Err.Trim());
        Assert.DoesNotContain('\n', r.Err.Trim());
        Assert.False(Directory.Exists(Path.Combine(_dir, "flag")));
    }
}
