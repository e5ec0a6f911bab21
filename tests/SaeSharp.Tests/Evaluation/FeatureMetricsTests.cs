using System.Text.Json;
using System.Text.Json.Nodes;
using SaeSharp.Activations;
using SaeSharp.Evaluation;
using SaeSharp.Saes;
using SaeSharp.Tests.Models;
using static TorchSharp.torch;

namespace SaeSharp.Tests.Evaluation;

/// <summary>
/// SAELens's per-feature metrics (<c>feature_metrics</c>) on hand-chosen weights and activations: feature density,
/// consistent-activation heuristic (firing tokens over prompts fired in, counted positions only), encoder norm,
/// encoder-decoder cosine, encoder bias; each expected value worked out by hand in the comments.
/// </summary>
public class FeatureMetricsTests : ModelTestBase
{
    private static Tensor T(float[,] v) => tensor(v);

    private static void AssertList(double[] expected, IReadOnlyList<double>? actual, double tol = 1e-12)
    {
        Assert.NotNull(actual);
        Assert.Equal(expected.Length, actual.Count);
        for (int i = 0; i < expected.Length; i++)
        {
            if (double.IsNaN(expected[i])) Assert.True(double.IsNaN(actual[i]), $"[{i}]: expected NaN, got {actual[i]}");
            else Assert.True(Math.Abs(expected[i] - actual[i]) <= tol, $"[{i}]: expected {expected[i]}, got {actual[i]}");
        }
    }

    /// <summary>Six rows of three prompts in two batches (prompt indices local to each batch): feature 0 fires on 3 rows of
    /// prompt 0 and 1 of prompt 2 (4 rows in 2 of 3 prompts: 4/2 = 2), feature 1 never (density 0, heuristic 0/0 = NaN),
    /// feature 2 on every row (6 rows in 3 prompts: 2), feature 3 once, with a negative value (fᵢ ≠ 0 counts as firing:
    /// SaeSharp's one firing test, the same as SAELens's fᵢ &gt; 0 for the non-negative activations of every architecture).</summary>
    [Fact]
    public void Accumulator_counts_density_and_prompts_fired_in_by_hand()
    {
        var acc = new SaeMetricsAccumulator(2, 4);
        var fa = T(new float[,] { { 1, 0, 2, 0 }, { 0.5f, 0, 1, 0 }, { 3, 0, 1, 0 }, { 0, 0, 1, -0.5f } });
        var fb = T(new float[,] { { 2, 0, 1, 0 }, { 0, 0, 1, 0 } });
        acc.Add(zeros(4, 2), zeros(4, 2), fa, prompt: tensor(new long[] { 0, 0, 0, 1 }));
        acc.Add(zeros(2, 2), zeros(2, 2), fb, prompt: tensor(new long[] { 0, 0 }));
        var r = acc.Result();
        var m = r.FeatureMetrics!;
        AssertList([4 / 6.0, 0, 1, 1 / 6.0], m.FeatureDensity);
        AssertList([2, double.NaN, 2, 1], m.ConsistentActivationHeuristic);
        Assert.Same(r.FeatureFrequency, m.FeatureDensity);   // one firing count
        Assert.Null(m.EncoderNorm);

        // Rows without prompts (activation files): no heuristic; mixing the two is refused.
        var rows = new SaeMetricsAccumulator(2, 4);
        rows.Add(zeros(4, 2), zeros(4, 2), fa);
        Assert.Null(rows.Result().FeatureMetrics!.ConsistentActivationHeuristic);
        AssertList([3 / 4.0, 0, 1, 1 / 4.0], rows.Result().FeatureMetrics!.FeatureDensity);
        Assert.Throws<SaeSharpException>(() => rows.Add(zeros(2, 2), zeros(2, 2), fb, prompt: tensor(new long[] { 0, 0 })));
    }

    /// <summary>d_in = 2, d_sae = 3: W_enc columns (3,4), (0,0), (1,−1); W_dec rows (4,3), (1,0), (−2,2); b_enc (0.5, −1, 0.25).</summary>
    private static void SetChosenWeights(Sae sae)
    {
        using var _ = no_grad();
        if (sae.HasEncoderWeights) sae.WEnc.copy_(T(new float[,] { { 3, 0, 1 }, { 4, 0, -1 } }));
        sae.WDec.narrow(1, 0, 2).copy_(T(new float[,] { { 4, 3 }, { 1, 0 }, { -2, 2 } }));
        if (sae.HasEncoderBias) sae.BEnc.copy_(tensor(new float[] { 0.5f, -1, 0.25f }));
    }

    private static readonly double[] ChosenNorms = [5, 0, Math.Sqrt(2)];
    // cos((3,4),(4,3)) = 24/25; a zero encoder column: NaN (SAELens divides by its zero norm); cos((1,−1),(−2,2)) = −1.
    private static readonly double[] ChosenCosines = [0.96, double.NaN, -1];

    [Fact]
    public void Weight_based_metrics_by_hand_for_each_kind_of_encoder()
    {
        var density = new double[3];
        using var standard = new StandardSae(new SaeConfig { DIn = 2, DSae = 3, ApplyBDecToInput = false });
        SetChosenWeights(standard);
        var m = new FeatureMetrics { FeatureDensity = density }.WithWeights(standard);
        AssertList(ChosenNorms, m.EncoderNorm);
        AssertList(ChosenCosines, m.EncoderDecoderCosineSim);
        AssertList([0.5, -1, 0.25], m.EncoderBias);

        // Gated: no b_enc (SAELens's hasattr(sae, "b_enc") is false): no encoder_bias list, the rest as above.
        using var gated = new GatedSae(new SaeConfig { Architecture = SaeArchitectures.Gated, DIn = 2, DSae = 3 });
        SetChosenWeights(gated);
        var g = new FeatureMetrics { FeatureDensity = density }.WithWeights(gated);
        AssertList(ChosenNorms, g.EncoderNorm);
        AssertList(ChosenCosines, g.EncoderDecoderCosineSim);
        Assert.Null(g.EncoderBias);
        Assert.Equal(["feature_density", "encoder_norm", "encoder_decoder_cosine_sim"], g.ToJson().Select(p => p.Key));

        // matching_pursuit: W_enc is W_decᵀ (SAELens's property): norms of the decoder rows (5, 1, √8), cosines 1.
        using var mp = new MatchingPursuitSae(new SaeConfig { Architecture = SaeArchitectures.MatchingPursuit, DIn = 2, DSae = 3 });
        SetChosenWeights(mp);
        var p = new FeatureMetrics { FeatureDensity = density }.WithWeights(mp);
        AssertList([5, 1, Math.Sqrt(8)], p.EncoderNorm);
        AssertList([1, 1, 1], p.EncoderDecoderCosineSim, 1e-15);
        Assert.Null(p.EncoderBias);

        // A tied temporal SAE encodes with W_decᵀ too (SAELens's temporal SAE has no W_enc attribute then, and raises).
        var tcfg = new SaeConfig { Architecture = SaeArchitectures.Temporal, DIn = 2, DSae = 3 };
        tcfg.Extra = new() { ["n_heads"] = JsonDocument.Parse("1").RootElement, ["bottleneck_factor"] = JsonDocument.Parse("1").RootElement };
        using var temporal = SaeFactory.Create(tcfg);
        Assert.False(temporal.HasEncoderWeights);
        SetChosenWeights(temporal);
        var tm = new FeatureMetrics { FeatureDensity = density }.WithWeights(temporal);
        AssertList([5, 1, Math.Sqrt(8)], tm.EncoderNorm);
        AssertList([1, 1, 1], tm.EncoderDecoderCosineSim, 1e-15);
        Assert.Null(tm.EncoderBias);

        // A transcoder with d_out = 3 ≠ d_in: no cosine (different spaces; SAELens's cosine_similarity cannot broadcast).
        using var transcoder = new StandardSae(new SaeConfig { DIn = 2, DSae = 3, DOut = 3, ApplyBDecToInput = false });
        SetChosenWeights(transcoder);
        var tc = new FeatureMetrics { FeatureDensity = density }.WithWeights(transcoder);
        AssertList(ChosenNorms, tc.EncoderNorm);
        Assert.Null(tc.EncoderDecoderCosineSim);
        AssertList([0.5, -1, 0.25], tc.EncoderBias);

        Assert.Throws<SaeSharpException>(() => new FeatureMetrics { FeatureDensity = new double[4] }.WithWeights(standard));

        // Taken a feature at a time, and two at a time (a chunk of 2 then of 1): the same lists.
        foreach (long chunkValues in new long[] { 2, 4 })
        {
            var c = new FeatureMetrics { FeatureDensity = density }.WithWeights(standard, chunkValues);
            AssertList(ChosenNorms, c.EncoderNorm);
            AssertList(ChosenCosines, c.EncoderDecoderCosineSim);
            var cm = new FeatureMetrics { FeatureDensity = density }.WithWeights(mp, chunkValues);
            AssertList([5, 1, Math.Sqrt(8)], cm.EncoderNorm);
        }
    }

    /// <summary>A transcoder (d_out = d_in, so the widths cannot tell) on rows without targets is refused, naming it and
    /// what it needs; the same rows given as targets are evaluated.</summary>
    [Fact]
    public void A_transcoder_on_rows_without_targets_is_refused()
    {
        using var transcoder = new StandardSae(new SaeConfig { DIn = 2, DSae = 3, DOut = 2, ApplyBDecToInput = false });
        transcoder.Cfg.Metadata.HookNameOut = "blocks.0.hook_mlp_out";
        using var rows = T(new float[,] { { 1, 0 }, { 0, 1 } });
        using (var src = new TensorActivationSource(rows, shuffle: false))
        {
            var e = Assert.Throws<SaeSharpException>(() => SaeEvaluator.Evaluate(transcoder, src, maxRows: 2));
            Assert.Equal("evaluation: the SAE is a transcoder (d_out = 2, hook_name_out blocks.0.hook_mlp_out) but the rows have no targets; " +
                         "evaluate it on activations with targets (a sae cache --mode in_to_out folder)", e.Message);
        }
        using var targets = rows.clone();
        using var withTargets = new TensorActivationSource(rows, targets, shuffle: false);
        Assert.Equal(2, SaeEvaluator.Evaluate(transcoder, withTargets, maxRows: 2).Rows);
    }

    /// <summary>The chosen SAE on four rows: f = relu(x·W_enc + b_enc) is (3.5, 0, 1.25), (4.5, 0, 0), (0, 0, 0), (0, 0, 1.25):
    /// densities 2/4, 0, 2/4. The JSON of <see cref="SaeEvalResult.WriteJson"/> writes them after the scalars under
    /// SAELens's keys, the undefined cosine as "NaN" (as the scalars), and no heuristic (rows have no prompts).</summary>
    [Fact]
    public void Evaluation_on_rows_gives_density_and_weights_and_writes_them_under_saelens_keys()
    {
        using var sae = new StandardSae(new SaeConfig { DIn = 2, DSae = 3, ApplyBDecToInput = false });
        SetChosenWeights(sae);
        using var src = new TensorActivationSource(T(new float[,] { { 1, 0 }, { 0, 1 }, { -1, 0 }, { 0, -1 } }), shuffle: false);
        var r = SaeEvaluator.Evaluate(sae, src, maxRows: 4, batchSize: 3);
        var m = r.FeatureMetrics!;
        AssertList([0.5, 0, 0.5], m.FeatureDensity);
        Assert.Null(m.ConsistentActivationHeuristic);
        AssertList(ChosenNorms, m.EncoderNorm);
        AssertList(ChosenCosines, m.EncoderDecoderCosineSim);
        AssertList([0.5, -1, 0.25], m.EncoderBias);

        using var stream = new MemoryStream();
        r.WriteJson(stream);
        var json = JsonNode.Parse(stream.ToArray())!.AsObject();
        Assert.Equal("feature_metrics", json.Last().Key);
        Assert.Equal(4, json["n_rows"]!.GetValue<long>());
        var fm = json["feature_metrics"]!.AsObject();
        Assert.Equal(["feature_density", "encoder_norm", "encoder_decoder_cosine_sim", "encoder_bias"], fm.Select(p => p.Key));
        Assert.Equal(0.96, fm["encoder_decoder_cosine_sim"]![0]!.GetValue<double>(), 12);
        Assert.Equal("NaN", fm["encoder_decoder_cosine_sim"]![1]!.GetValue<string>());
        Assert.Equal(0.25, fm["encoder_bias"]![2]!.GetValue<double>());
        // The scalar keys are ToJson's, unchanged.
        Assert.Equal(JsonNode.Parse(r.ToJson())!.AsObject().Select(p => p.Key), json.Select(p => p.Key).SkipLast(1));
    }

    /// <summary>
    /// Inside a model: SAEs on <c>hook_embed</c> of a tiny GPT-2 whose feature i fires exactly on token tᵢ (encoder column the
    /// unit embedding of tᵢ, bias halfway between tᵢ's own projection and the largest other token's), over three windows
    /// (each a prompt) in batches of two:
    /// <code>
    /// w0 = [P, A, A, D, A, x]    w1 = [P, y, E, E, z, x]    w2 = [P, A, y, P, D, z]
    /// </code>
    /// with P excluded (a pad/BOS token): 14 counted positions. Feature A: 4 tokens in 2 of 3 prompts (density 4/14,
    /// heuristic 2); D: 2 tokens in 2 prompts (1); E: 2 tokens in 1 prompt (2); P: fires only at excluded positions
    /// (density 0, heuristic NaN: SAELens's mask); N, on a token that never occurs: 0 and NaN. Without the exclusion P
    /// fires on 4 of 18 tokens in 3 prompts (4/3). A second SAE in the same pass (features on E and A) gets its own lists.
    /// </summary>
    [Fact]
    public void In_model_heuristic_counts_prompts_and_only_counted_positions()
    {
        using var model = Gpt2();
        // Every token's embedding (hook_embed has no position term), from two windows of 25.
        var ids = Enumerable.Range(0, 50).Select(i => (long)i).ToArray();
        var (_, cache) = model.RunWithCache(tensor(ids).view(2, 25), ["hook_embed"]);
        double[][] e;
        using (cache) e = Enumerable.Range(0, 50).Select(t => cache["hook_embed"][t / 25, t % 25].to(ScalarType.Float64).data<double>().ToArray()).ToArray();
        static double Dot(double[] a, double[] b) => a.Zip(b, (x, y) => x * y).Sum();
        // Tokens whose unit direction separates them from every other token: ‖E[t]‖ above every E[u]·E[t]/‖E[t]‖.
        double Gap(int t) => Math.Sqrt(Dot(e[t], e[t])) - Enumerable.Range(0, 50).Where(u => u != t).Max(u => Dot(e[u], e[t]) / Math.Sqrt(Dot(e[t], e[t])));
        var separable = Enumerable.Range(0, 50).Where(t => Gap(t) > 1e-3).ToList();
        Assert.True(separable.Count >= 5, $"only {separable.Count} separable tokens in the tiny GPT-2's embedding");
        long a = separable[0], d = separable[1], eTok = separable[2], pad = separable[3], never = separable[4];
        var fillers = Enumerable.Range(0, 50).Select(t => (long)t).Except([a, d, eTok, pad, never]).Take(3).ToArray();
        long x = fillers[0], y = fillers[1], z = fillers[2];
        var windows = new List<long[]> { new[] { pad, a, a, d, a, x }, new[] { pad, y, eTok, eTok, z, x }, new[] { pad, a, y, pad, d, z } };

        Sae OnTokens(params long[] tokens)
        {
            var cfg = new SaeConfig { DIn = 16, DSae = tokens.Length, ApplyBDecToInput = false };
            cfg.Metadata.HookName = "hook_embed";
            var sae = SaeFactory.Create(cfg);
            using var _ = no_grad();
            for (int i = 0; i < tokens.Length; i++)
            {
                int t = (int)tokens[i];
                double norm = Math.Sqrt(Dot(e[t], e[t]));
                sae.WEnc[.., i] = tensor(e[t].Select(v => (float)(v / norm)).ToArray());
                sae.BEnc[i] = -(float)(norm - Gap(t) / 2);
            }
            sae.WDec.copy_(sae.WEnc.t());
            return sae;
        }
        using var first = OnTokens(a, d, eTok, pad, never);
        using var second = OnTokens(eTok, a);

        var results = DownstreamEvaluator.Evaluate(model, [new DownstreamTarget(first), new DownstreamTarget(second)], windows,
            new DownstreamEvalOptions { BatchSizePrompts = 2, ExcludeTokenIds = [pad], MeanAblation = false, ErrorTerm = false });
        Assert.Equal(14, results[0].Tokens);
        var m = results[0].FeatureMetrics!;
        AssertList([4 / 14.0, 2 / 14.0, 2 / 14.0, 0, 0], m.FeatureDensity);
        AssertList([2, 1, 2, double.NaN, double.NaN], m.ConsistentActivationHeuristic);
        AssertList([1, 1, 1, 1, 1], m.EncoderNorm, 1e-6);
        AssertList([1, 1, 1, 1, 1], m.EncoderDecoderCosineSim, 1e-6);
        Assert.Same(m, results[0].Reconstruction.FeatureMetrics);
        var s = results[1].FeatureMetrics!;
        AssertList([2 / 14.0, 4 / 14.0], s.FeatureDensity);
        AssertList([2, 2], s.ConsistentActivationHeuristic);

        // Without the exclusion P counts: 4 of 18 tokens, in all 3 prompts.
        var all = DownstreamEvaluator.Evaluate(model, [new DownstreamTarget(first)], windows,
            new DownstreamEvalOptions { BatchSizePrompts = 2, MeanAblation = false, ErrorTerm = false })[0].FeatureMetrics!;
        AssertList([4 / 18.0, 2 / 18.0, 2 / 18.0, 4 / 18.0, 0], all.FeatureDensity);
        AssertList([2, 1, 2, 4 / 3.0, double.NaN], all.ConsistentActivationHeuristic);

        // The JSON: feature_metrics after the scalar groups, every list d_sae long, the undefined heuristics null.
        using var stream = new MemoryStream();
        using (var writer = new Utf8JsonWriter(stream)) results[0].WriteJson(writer);
        var json = JsonNode.Parse(stream.ToArray())!.AsObject();
        Assert.Equal("feature_metrics", json.Last().Key);
        var fm = json["feature_metrics"]!.AsObject();
        Assert.Equal(["feature_density", "consistent_activation_heuristic", "encoder_norm", "encoder_decoder_cosine_sim", "encoder_bias"],
            fm.Select(p => p.Key));
        Assert.All(fm, p => Assert.Equal(5, p.Value!.AsArray().Count));
        Assert.Null(fm["consistent_activation_heuristic"]![3]);
        Assert.Equal(2.0, fm["consistent_activation_heuristic"]![0]!.GetValue<double>());
    }
}
