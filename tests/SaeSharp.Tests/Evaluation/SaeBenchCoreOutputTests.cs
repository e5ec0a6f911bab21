using SaeSharp.Models;
using System.Text.Json;
using System.Text.Json.Nodes;
using SaeSharp.Evaluation;
using SaeSharp.Saes;
using SaeSharp.Tests.Models;
using SaeSharp.Tests.Tokenizers;
using static TorchSharp.torch;

namespace SaeSharp.Tests.Evaluation;

/// <summary>
/// SAEBench's core eval output: the per-feature max encoder/decoder cosine similarities and the misc metrics on hand-made
/// weights and densities, against SAEBench's own formula functions (<c>tests/data/saebench_core</c>, written by
/// <c>bench/reference/saebench_core_fixture.py</c>), and the written JSON against the schema its dataclasses declare.
/// </summary>
public class SaeBenchCoreOutputTests : ModelTestBase
{
    private static readonly JsonNode Expected = JsonNode.Parse(File.ReadAllText(TestPaths.Data("saebench_core", "expected.json")))!;

    private static double[] Doubles(JsonNode list) => list.AsArray().Select(v => v!.GetValue<double>()).ToArray();

    private static void AssertList(double[] expected, IReadOnlyList<double>? actual, double tol, string what)
    {
        Assert.NotNull(actual);
        Assert.Equal(expected.Length, actual.Count);
        for (int i = 0; i < expected.Length; i++)
            Assert.True(Math.Abs(expected[i] - actual[i]) <= tol, $"{what}[{i}]: expected {expected[i]:R}, got {actual[i]:R}");
    }

    private static double[] MaxCos(float[,] rows) { using var t = tensor(rows); return FeatureMetrics.MaxCosineSims(t); }

    /// <summary>Two parallel rows (one 2× the other) → 1 for both, and the row orthogonal to them 0; an orthonormal set → 0
    /// everywhere; directions at 0°, 60°, 90° → cos 60° = 0.5 for the first (its other neighbour is at 90°), cos 30° for the
    /// other two; a zero row → 0 (normalised to zero, as F.normalize) and no effect on the others; one row → −∞ (nothing
    /// else to compare with).</summary>
    [Fact]
    public void Max_cosine_sims_by_hand()
    {
        AssertList([1, 1, 0], MaxCos(new float[,] { { 1, 2, 0 }, { 2, 4, 0 }, { 0, 0, 3 } }), 1e-6, "parallel");
        AssertList([0, 0, 0, 0], MaxCos(new float[,] { { 1, 0, 0, 0 }, { 0, 2, 0, 0 }, { 0, 0, 3, 0 }, { 0, 0, 0, 4 } }), 0, "orthogonal");
        double s3 = Math.Sqrt(3) / 2;
        AssertList([0.5, s3, s3], MaxCos(new float[,] { { 1, 0 }, { 0.5f, (float)s3 }, { 0, 1 } }), 1e-6, "angles");
        AssertList([Math.Sqrt(0.5), 0, Math.Sqrt(0.5)], MaxCos(new float[,] { { 1, 0 }, { 0, 0 }, { 1, 1 } }), 1e-6, "zero row");
        Assert.Equal(double.NegativeInfinity, MaxCos(new float[,] { { 1, 2 } })[0]);
    }

    /// <summary>Blocks of rows of any size give the brute-force float64 answer (max over j ≠ i of the pairwise cosines).</summary>
    [Fact]
    public void Max_cosine_sims_do_not_depend_on_the_block_size()
    {
        using var v = randn(7, 5, generator: manual_seed(4));
        var x = new double[7][];
        for (int i = 0; i < 7; i++) x[i] = v[i].to(ScalarType.Float64).data<double>().ToArray();
        static double Cos(double[] a, double[] b) => a.Zip(b, (p, q) => p * q).Sum() / Math.Sqrt(a.Sum(p => p * p) * b.Sum(q => q * q));
        var brute = Enumerable.Range(0, 7).Select(i => Enumerable.Range(0, 7).Where(j => j != i).Max(j => Cos(x[i], x[j]))).ToArray();
        foreach (long chunk in new long[] { 1, 7, 14, 20, 49, 1 << 22 })
            AssertList(brute, FeatureMetrics.MaxCosineSims(v, chunk), 1e-6, $"chunk {chunk}");
    }

    /// <summary>Densities 0, 0.005, 0.01, 0.02, 0.2, 0.5: above 1% 3 of 6 (0.01 is not above), above 10% 2 of 6, alive 5 of 6;
    /// the firings of features above 1% are 0.72 of Σ = 0.735, above 10% 0.7; all dead: both shares 0 (not 0/0).</summary>
    [Fact]
    public void Misc_metrics_by_hand()
    {
        var m = SaeBenchMiscMetrics.From(new FeatureMetrics
        {
            FeatureDensity = [0, 0.005, 0.01, 0.02, 0.2, 0.5], MaxEncoderCosineSim = [0.5, 1, 0, 0.25, 0.25, 0], MaxDecoderCosineSim = [1, 1, 1, 1, 1, 1],
        });
        Assert.Equal(3 / 6.0, m.FreqOver1Percent, 12);
        Assert.Equal(2 / 6.0, m.FreqOver10Percent, 12);
        Assert.Equal(0.72 / 0.735, m.NormalizedFreqOver1Percent, 12);
        Assert.Equal(0.7 / 0.735, m.NormalizedFreqOver10Percent, 12);
        Assert.Equal(5 / 6.0, m.FracAlive, 12);
        Assert.Equal(2 / 6.0, m.AverageMaxEncoderCosineSim, 12);
        Assert.Equal(1, m.AverageMaxDecoderCosineSim, 12);
        var dead = SaeBenchMiscMetrics.From(new FeatureMetrics { FeatureDensity = [0, 0, 0] });
        Assert.Equal((0, 0, 0), (dead.NormalizedFreqOver1Percent, dead.NormalizedFreqOver10Percent, dead.FracAlive));
        Assert.True(double.IsNaN(dead.AverageMaxDecoderCosineSim));   // not computed
    }

    /// <summary>SAEBench's own <c>get_featurewise_weight_based_metrics</c> and <c>calculate_misc_metrics</c> on the fixture's
    /// weights (parallel decoder rows, an opposite pair, a zero encoder column, a parallel encoder pair): the same lists and
    /// misc metrics to float32 rounding.</summary>
    [Fact]
    public void Weight_based_and_misc_metrics_match_SAEBench()
    {
        using var sae = new StandardSae(new SaeConfig { DIn = 6, DSae = 10 });
        using (no_grad())
        {
            sae.WEnc.copy_(tensor(Rows(Expected["W_enc"]!)));
            sae.WDec.copy_(tensor(Rows(Expected["W_dec"]!)));
            sae.BEnc.copy_(tensor(Doubles(Expected["b_enc"]!).Select(v => (float)v).ToArray()));
        }
        var density = Doubles(Expected["feature_density"]!);
        var f = new FeatureMetrics { FeatureDensity = density }.WithWeights(sae).WithMaxCosineSims(sae);
        var w = Expected["weight_based"]!;
        AssertList(Doubles(w["max_encoder_cosine_sim"]!), f.MaxEncoderCosineSim, 1e-6, "max_encoder_cosine_sim");
        AssertList(Doubles(w["max_decoder_cosine_sim"]!), f.MaxDecoderCosineSim, 1e-6, "max_decoder_cosine_sim");
        AssertList(Doubles(w["encoder_norm"]!), f.EncoderNorm, 1e-5, "encoder_norm");
        AssertList(Doubles(w["encoder_bias"]!), f.EncoderBias, 1e-7, "encoder_bias");
        // SAEBench's cosine of a zero encoder column: the normalisation's 0/0 makes it NaN; so is SaeSharp's.
        var cos = Expected["weight_based"]!["encoder_decoder_cosine_sim"]!.AsArray();
        for (int i = 0; i < 10; i++)
        {
            if (cos[i] is null) Assert.True(double.IsNaN(f.EncoderDecoderCosineSim![i]));
            else Assert.True(Math.Abs(cos[i]!.GetValue<double>() - f.EncoderDecoderCosineSim![i]) <= 1e-6, $"encoder_decoder_cosine_sim[{i}]");
        }
        var misc = SaeBenchMiscMetrics.From(f);
        var e = Expected["misc"]!;
        foreach (var (key, got) in MiscPairs(misc))
            Assert.True(Math.Abs(e[key]!.GetValue<double>() - got) <= 1e-6, $"{key}: SAEBench {e[key]}, SaeSharp {got:R}");
        var dead = SaeBenchMiscMetrics.From(f with { FeatureDensity = new double[10] });
        foreach (var (key, got) in MiscPairs(dead))
            Assert.True(Math.Abs(Expected["misc_all_dead"]![key]!.GetValue<double>() - got) <= 1e-6, $"{key} (all dead)");
    }

    /// <summary>SAEBench folds a release SAE's decoder norms before its weight-based metrics: decoder rows of norms 2 and 0.5,
    /// encoder columns of norms 3 and 4, b_enc (1, −1) → encoder_norm 3·2 = 6 and 4·0.5 = 2, encoder_bias 2 and −0.5, unit
    /// decoder rows; the written details say so, and L0 (which folding cannot change for a ReLU SAE) is the unfolded one's.</summary>
    /// <summary>The core output validates against SAEBench's own schema (eval_output_schema_core.json), and every
    /// float-typed value is written as a float (16.0, not 16), the token counts as integers.</summary>
    [Fact]
    public void Core_output_validates_against_SAEBenchs_schema_with_floats_written_as_floats()
    {
        using var model = Gpt2();
        var cfg = new SaeConfig { DIn = 16, DSae = 4 };
        cfg.Metadata.HookName = "blocks.0.hook_resid_pre";
        using var sae = new StandardSae(cfg);
        // b_enc large enough that every latent fires on every token: L0 = 4 exactly, an integral float.
        using (no_grad()) sae.BEnc.fill_(100f);
        var windows = Enumerable.Range(0, 2).Select(w => Enumerable.Range(0, 8).Select(t => (long)(1 + (5 * w + 3 * t) % 49)).ToArray()).ToList();
        var r = SaeBenchCoreEvaluator.Evaluate(model, sae, () => windows, new SaeBenchCoreConfig { BatchSizePrompts = 2, NEvalReconstructionBatches = 1, ContextSize = 8 }, []);
        Assert.Equal(4, r.Metrics.L0);
        using var stream = new MemoryStream();
        using (var writer = new Utf8JsonWriter(stream, new JsonWriterOptions { Indented = true }))
            SaeBenchCoreOutput.Write(writer, r, new SaeBenchCoreRun { ModelName = "tiny-gpt2", Dataset = "d" });
        string text = System.Text.Encoding.UTF8.GetString(stream.ToArray());
        Assert.Empty(SaeBenchSchemaTests.SchemaErrors("core", text));
        Assert.Contains("\"l0\": 4.0", text);
        using var doc = JsonDocument.Parse(text);
        foreach (var group in doc.RootElement.GetProperty("eval_result_metrics").EnumerateObject())
            foreach (var metric in group.Value.EnumerateObject())
                Assert.True(group.Name == "token_stats" ? !metric.Value.GetRawText().Contains('.') : metric.Value.GetRawText().IndexOfAny(['.', 'E', 'e']) >= 0,
                    $"{group.Name}.{metric.Name} = {metric.Value.GetRawText()}");
        foreach (var feature in doc.RootElement.GetProperty("eval_result_details").EnumerateArray())
            foreach (var p in feature.EnumerateObject().Where(p => p.Name != "index"))
                Assert.True(p.Value.GetRawText().IndexOfAny(['.', 'E', 'e']) >= 0, $"{p.Name} = {p.Value.GetRawText()}");
    }

    /// <summary>An SAE of one head (hook_head_index 1 at blocks.0.attn.hook_z) is evaluated on that head's slice: the l2 norms
    /// in and out are those of hook_z[:, :, 1] and of its reconstruction by hand, and the CE with the SAE that of a run whose
    /// hook replaces head 1 alone by the hand reconstruction, the CE with ablation that of a run zeroing head 1 alone.</summary>
    [Fact]
    public void An_SAE_of_one_head_is_evaluated_on_its_hand_sliced_head()
    {
        using var model = Gpt2();
        const string Hook = "blocks.0.attn.hook_z";
        int dHead = model.Config.DHead;
        using var sae = Interventions.InterventionTests.RandomSae(Hook, dHead, 6, 4);
        sae.Cfg.Metadata.HookHeadIndex = 1;
        var windows = Enumerable.Range(0, 2).Select(w => Enumerable.Range(0, 8).Select(t => (long)(1 + (5 * w + 3 * t) % 49)).ToArray()).ToList();
        var r = SaeBenchCoreEvaluator.Evaluate(model, sae, () => windows, new SaeBenchCoreConfig { BatchSizePrompts = 2, NEvalReconstructionBatches = 1, NEvalSparsityVarianceBatches = 1, ContextSize = 8 }, []);
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        var tokens = tensor(windows.SelectMany(w => w).ToArray()).view(2, 8);
        Tensor Recon(Tensor xh) => matmul((matmul(xh - sae.BDec, sae.WEnc) + sae.BEnc).relu(), sae.WDec) + sae.BDec;
        var (_, cache) = model.Run(tokens, new RunOptions { CacheNames = [Hook] });
        var xh = cache![Hook].select(2, 1);
        double normIn = xh.norm(-1).mean().item<float>(), normOut = Recon(xh).norm(-1).mean().item<float>();
        Assert.Equal(normIn, r.Metrics.L2NormIn, 4);
        Assert.Equal(normOut, r.Metrics.L2NormOut, 4);
        using var logits = model.Run(tokens, new RunOptions
        {
            Hooks = [(Hook, x => { var heads = x.unbind(2).ToArray(); heads[1] = Recon(heads[1]); return stack(heads, 2); })],
        }).Logits!;
        double Ce(Tensor l) => -l.log_softmax(-1).narrow(1, 0, 7).gather(-1, tokens.narrow(1, 1, 7).unsqueeze(-1)).mean().item<float>();
        Assert.Equal(Ce(logits), r.Metrics.CeLossWithSae, 4);
        // Zero ablation zeroes head 1 alone (SAELens's single_head_zero_ablate_hook).
        using var zeroed = model.Run(tokens, new RunOptions
        {
            Hooks = [(Hook, x => { var heads = x.unbind(2).ToArray(); heads[1] = zeros_like(heads[1]); return stack(heads, 2); })],
        }).Logits!;
        Assert.Equal(Ce(zeroed), r.Metrics.CeLossWithAblation, 4);
    }

    [Fact]
    public void Folded_decoder_norms_give_the_encoder_norms_and_biases_SAEBench_writes()
    {
        using var model = Gpt2();
        var cfg = new SaeConfig { DIn = 16, DSae = 2 };
        cfg.Metadata.HookName = "blocks.0.hook_resid_pre";
        var wEnc = new float[16, 2];
        wEnc[0, 0] = 3; wEnc[1, 1] = 4;
        var wDec = new float[2, 16];
        wDec[0, 0] = 2; wDec[1, 1] = 0.3f; wDec[1, 2] = 0.4f;
        using var sae = new StandardSae(cfg);
        using (no_grad()) { sae.WEnc.copy_(tensor(wEnc)); sae.WDec.copy_(tensor(wDec)); sae.BEnc.copy_(tensor(new float[] { 1, -1 })); }
        var windows = Enumerable.Range(0, 2).Select(w => Enumerable.Range(0, 8).Select(t => (long)(1 + (5 * w + 3 * t) % 49)).ToArray()).ToList();
        var config = new SaeBenchCoreConfig { BatchSizePrompts = 2, NEvalReconstructionBatches = 1, ContextSize = 8 };
        var unfolded = SaeBenchCoreEvaluator.Evaluate(model, sae, () => windows, config, []);
        sae.FoldWDecNorm();
        var r = SaeBenchCoreEvaluator.Evaluate(model, sae, () => windows, config, [], foldedDecoderNorms: true);
        using var stream = new MemoryStream();
        using (var writer = new Utf8JsonWriter(stream))
            SaeBenchCoreOutput.Write(writer, r, new SaeBenchCoreRun { ModelName = "tiny-gpt2", Dataset = "d" });
        var json = JsonNode.Parse(stream.ToArray())!;
        var details = json["eval_result_details"]!.AsArray();
        Assert.Equal(6, details[0]!["encoder_norm"]!.GetValue<double>(), 5);
        Assert.Equal(2, details[1]!["encoder_norm"]!.GetValue<double>(), 5);
        Assert.Equal(2, details[0]!["encoder_bias"]!.GetValue<double>(), 6);
        Assert.Equal(-0.5, details[1]!["encoder_bias"]!.GetValue<double>(), 6);
        Assert.True(json["eval_result_unstructured"]!["folded_W_dec_norm"]!.GetValue<bool>());
        using var norms = sae.WDec.norm(1);
        Assert.Equal([1.0, 1.0], norms.data<float>().ToArray().Select(v => Math.Round((double)v, 5)));
        Assert.Equal(unfolded.Metrics.L0, r.Metrics.L0);
    }

    /// <summary>The procedure's model runs against SaeSharp's downstream evaluator on one batch of the same 2 windows, nothing
    /// ignored (the sparsity batch is the same windows again, the data starting over): the clean, spliced and zero-ablated CE,
    /// both KLs, L0, the l2 ratio and the cosine agree; only the formulas SAEBench aggregates differently may differ.</summary>
    [Fact]
    public void Procedure_runs_the_model_as_the_downstream_evaluator()
    {
        using var model = Gpt2();
        var cfg = new SaeConfig { DIn = 16, DSae = 12 };
        cfg.Metadata.HookName = "blocks.1.hook_resid_pre";
        using var sae = SaeFactory.Create(cfg);
        using (no_grad()) { sae.WEnc.copy_(randn(16, 12, generator: manual_seed(2)).mul(TorchScalars.Of(0.3))); sae.WDec.copy_(sae.WEnc.t()); }
        var windows = Enumerable.Range(0, 2).Select(w => Enumerable.Range(0, 8).Select(t => (long)(1 + (11 * w + 7 * t) % 49)).ToArray()).ToList();
        var r = SaeBenchCoreEvaluator.Evaluate(model, sae, () => windows,
            new SaeBenchCoreConfig { BatchSizePrompts = 2, NEvalReconstructionBatches = 1, NEvalSparsityVarianceBatches = 1, ContextSize = 8 }, []).Metrics;
        var d = DownstreamEvaluator.Evaluate(model, [new DownstreamTarget(sae)], windows, new DownstreamEvalOptions { BatchSizePrompts = 2 })[0];
        foreach (var (what, a, b) in new[]
                 {
                     ("ce clean", r.CeLossWithoutSae, d.CeLossWithoutSae), ("ce sae", r.CeLossWithSae, d.CeLossWithSae),
                     ("ce zero", r.CeLossWithAblation, d.CeLossWithAblation), ("kl sae", r.KlDivWithSae, d.KlDivWithSae),
                     ("kl zero", r.KlDivWithAblation, d.KlDivWithAblation), ("l0", r.L0, d.L0), ("l2 ratio", r.L2Ratio, d.Reconstruction.L2Ratio),
                     ("cossim", r.Cossim, d.CosSim), ("l2 in", r.L2NormIn, d.Reconstruction.L2NormIn),
                 })
            Assert.True(Math.Abs(a - b) <= 1e-5 * Math.Max(1, Math.Abs(b)), $"{what}: procedure {a:R}, downstream evaluator {b:R}");

        // Token 1 ignored (window 0 holds it at positions 0 and 7: 1 + 7t mod 49 = 1 for t = 0, 7): with exclude_special_tokens_from_reconstruction the SAE is not
        // spliced there either, as the downstream evaluator's excluded tokens; without it the spliced CE/KL differ.
        var one = windows;
        var config = new SaeBenchCoreConfig { BatchSizePrompts = 2, NEvalReconstructionBatches = 1, ContextSize = 8, ExcludeSpecialTokensFromReconstruction = true };
        var excluded = SaeBenchCoreEvaluator.Evaluate(model, sae, () => one, config, [1]).Metrics;
        var spliced = SaeBenchCoreEvaluator.Evaluate(model, sae, () => one, config with { ExcludeSpecialTokensFromReconstruction = false }, [1]).Metrics;
        var de = DownstreamEvaluator.Evaluate(model, [new DownstreamTarget(sae)], one, new DownstreamEvalOptions { BatchSizePrompts = 2, ExcludeTokenIds = [1] })[0];
        Assert.Equal(14, excluded.ReconstructionPositions);
        Assert.Equal(de.CeLossWithSae, excluded.CeLossWithSae, 5);
        Assert.Equal(de.KlDivWithSae, excluded.KlDivWithSae, 5);
        Assert.Equal(excluded.CeLossWithoutSae, spliced.CeLossWithoutSae, 12);
        Assert.NotEqual(excluded.KlDivWithSae, spliced.KlDivWithSae, 5);
    }

    /// <summary><c>--saebench-config</c>: SAEBench's defaults for fields not given, the CLI's context size unless the JSON gives
    /// one, an unknown field and a non-positive count refused by name.</summary>
    [Fact]
    public void Config_parses_over_SAEBench_defaults()
    {
        var c = SaeBenchCoreConfig.Parse("""{"n_eval_sparsity_variance_batches": 20}""", contextSize: 64);
        Assert.Equal((16, 10, 20, 64, false), (c.BatchSizePrompts, c.NEvalReconstructionBatches, c.NEvalSparsityVarianceBatches, c.ContextSize, c.ExcludeSpecialTokensFromReconstruction));
        Assert.Equal(32, SaeBenchCoreConfig.Parse("""{"context_size": 32}""", contextSize: 64).ContextSize);
        Assert.Equal(128, SaeBenchCoreConfig.Parse("{}").ContextSize);
        Assert.Contains("batch_size", Assert.Throws<SaeSharpException>(() => SaeBenchCoreConfig.Parse("""{"batch_size": 4}""")).Message);
        // A misspelt field: its name and the nearest real one, no .NET type names; a value of the wrong kind: the field and
        // what it takes.
        string typo = Assert.Throws<SaeSharpException>(() => SaeBenchCoreConfig.Parse("""{"n_eval_reconstrction_batches": 2}""")).Message;
        Assert.Contains("unknown field 'n_eval_reconstrction_batches' (did you mean 'n_eval_reconstruction_batches'?)", typo);
        Assert.DoesNotContain(".NET", typo);
        Assert.Equal("--saebench-config: batch_size_prompts: expected a whole number",
            Assert.Throws<SaeSharpException>(() => SaeBenchCoreConfig.Parse("""{"batch_size_prompts": "16"}""")).Message);
        Assert.Equal("--saebench-config: verbose: expected true or false",
            Assert.Throws<SaeSharpException>(() => SaeBenchCoreConfig.Parse("""{"verbose": 1}""")).Message);
        Assert.Contains("n_eval_reconstruction_batches must be positive", Assert.Throws<SaeSharpException>(() => SaeBenchCoreConfig.Parse("""{"n_eval_reconstruction_batches": 0}""")).Message);
        Assert.Contains("neither a JSON object nor an existing file", Assert.Throws<SaeSharpException>(() => SaeBenchCoreConfig.Parse("/no/such/config.json")).Message);
    }

    /// <summary><c>--saebench-config</c> takes SAEBench's whole <c>CoreEvalConfig</c> (every field its schema names, as a
    /// SAEBench output's <c>eval_config</c> holds them); a field SaeSharp cannot honour is refused by name.</summary>
    [Fact]
    public void Config_accepts_every_field_of_SAEBenchs_CoreEvalConfig_and_refuses_what_it_cannot_honour()
    {
        var schema = JsonNode.Parse(File.ReadAllText(TestPaths.Data("saebench_schemas", "eval_output_schema_core.json")))!;
        var fields = schema["$defs"]!["CoreEvalConfig"]!["properties"]!.AsObject().Select(kv => kv.Key).ToList();
        Assert.Equal(fields.Order(), SaeBenchCoreConfig.FieldNames.Order());
        // An eval_config as SAEBench's core main.py writes it (its run sets every compute_* flag true).
        string pasted = """
            {"model_name": "gpt2", "llm_dtype": "float32", "batch_size_prompts": 4, "n_eval_reconstruction_batches": 3,
             "n_eval_sparsity_variance_batches": 2, "dataset": "Skylion007/openwebtext", "context_size": 32, "compute_kl": true,
             "compute_ce_loss": true, "compute_l2_norms": true, "compute_sparsity_metrics": true, "compute_variance_metrics": true,
             "compute_featurewise_density_statistics": true, "compute_featurewise_weight_based_metrics": true,
             "exclude_special_tokens_from_reconstruction": false, "verbose": true}
            """;
        var c = SaeBenchCoreConfig.Parse(pasted);
        Assert.Equal((4, 3, 2, 32, "gpt2", "float32", "Skylion007/openwebtext", true), (c.BatchSizePrompts, c.NEvalReconstructionBatches,
            c.NEvalSparsityVarianceBatches, c.ContextSize, c.ModelName, c.LlmDtype, c.Dataset, c.Verbose));
        // The fields naming the run agree with it: accepted (an hf: prefix aside); otherwise refused naming both values.
        c.CheckRun("gpt2", "float32", "hf:Skylion007/openwebtext");
        Assert.Contains("model_name 'gpt2', but the SAE is evaluated on 'pythia-70m'",
            Assert.Throws<SaeSharpException>(() => c.CheckRun("pythia-70m", "float32", "Skylion007/openwebtext")).Message);
        Assert.Contains("llm_dtype 'float32', but the model runs in bfloat16; give --dtype float32",
            Assert.Throws<SaeSharpException>(() => c.CheckRun("gpt2", "bfloat16", "Skylion007/openwebtext")).Message);
        Assert.Contains("dataset 'Skylion007/openwebtext', but --dataset is 'corpus.txt'; give --dataset hf:Skylion007/openwebtext",
            Assert.Throws<SaeSharpException>(() => c.CheckRun("gpt2", "float32", "corpus.txt")).Message);
        // Not given: nothing to check.
        SaeBenchCoreConfig.Parse("{}").CheckRun("anything", "bfloat16", "x");
        foreach (var flag in new[] { "compute_kl", "compute_ce_loss", "compute_l2_norms", "compute_sparsity_metrics", "compute_variance_metrics" })
            Assert.Contains($"{flag} false: SaeSharp always computes",
                Assert.Throws<SaeSharpException>(() => SaeBenchCoreConfig.Parse($$"""{"{{flag}}": false}""")).Message);
    }

    /// <summary>A nested JSON array as a float32 tensor of its shape (int64 with <paramref name="int64"/>).</summary>
    private static Tensor Nested(JsonNode node, bool int64 = false)
    {
        var shape = new List<long>();
        for (var n = node; n is JsonArray a; n = a[0]) shape.Add(a.Count);
        var flat = new List<double>();
        void Walk(JsonNode n) { if (n is JsonArray a) foreach (var c in a) Walk(c!); else flat.Add(n.GetValue<double>()); }
        Walk(node);
        return int64 ? tensor(flat.Select(v => (long)v).ToArray()).view([.. shape]) : tensor(flat.Select(v => (float)v).ToArray()).view([.. shape]);
    }

    /// <summary>SAEBench's own <c>get_downstream_reconstruction_metrics</c> (with its <c>get_recons_loss</c>) and
    /// <c>get_sparsity_and_variance_metrics</c>, run by the fixture on 3 + 2 fixed batches (tokens with special tokens 0 and 6
    /// ignored, logits, x, x̂, f): the accumulator, fed the same batches with CE and KL per token from the same logits, gives
    /// every scalar metric and the per-feature density and consistent-activation heuristic to 10⁻⁵.</summary>
    [Fact]
    public void Core_procedure_aggregates_batches_as_SAEBench()
    {
        var p = Expected["procedure"]!;
        using var scope = NewDisposeScope();
        var tokens = Nested(p["tokens"]!, int64: true);
        var logits = Nested(p["logits"]!);
        var (x, f, xHat) = (Nested(p["x"]!), Nested(p["f"]!), Nested(p["x_hat"]!));
        int nRec = p["n_eval_reconstruction_batches"]!.GetValue<int>(), nSv = p["n_eval_sparsity_variance_batches"]!.GetValue<int>();
        var acc = new SaeBenchCoreAccumulator((int)f.shape[^1], Doubles(p["ignore_tokens"]!).Select(v => (long)v));
        for (int b = 0; b < nRec; b++)
        {
            var t = tokens[b];
            var (lc, ls, lz) = (logits[b][0], logits[b][1], logits[b][2]);
            var (pc, ps, pz) = (TokenLosses.LogProbs(lc), TokenLosses.LogProbs(ls), TokenLosses.LogProbs(lz));
            acc.AddReconstruction(t, TokenLosses.NextTokenLoss(pc, t), TokenLosses.NextTokenLoss(ps, t),
                TokenLosses.NextTokenLoss(pz, t), TokenLosses.Kl(pc, ps), TokenLosses.Kl(pc, pz));
        }
        for (int b = 0; b < nSv; b++) acc.AddSparsityVariance(tokens[nRec + b], x[b], xHat[b], f[b]);
        var m = acc.Result();
        var rec = p["reconstruction_metrics"]!;
        var sv = p["sparsity_variance_metrics"]!;
        foreach (var (key, got) in new (string, double)[]
                 {
                     ("kl_div_with_sae", m.KlDivWithSae), ("kl_div_with_ablation", m.KlDivWithAblation), ("kl_div_score", m.KlDivScore),
                     ("ce_loss_with_sae", m.CeLossWithSae), ("ce_loss_without_sae", m.CeLossWithoutSae), ("ce_loss_with_ablation", m.CeLossWithAblation),
                     ("ce_loss_score", m.CeLossScore),
                 })
            // Relative for the scores: SAEBench's float32 means, divided by a difference of 0.19, move the fifth decimal of 5.9.
            Assert.True(Math.Abs(rec[key]!.GetValue<double>() - got) <= 1e-5 * Math.Max(1, Math.Abs(got)), $"{key}: SAEBench {rec[key]}, SaeSharp {got:R}");
        foreach (var (key, got) in new (string, double)[]
                 {
                     ("l2_norm_in", m.L2NormIn), ("l2_norm_out", m.L2NormOut), ("l2_ratio", m.L2Ratio),
                     ("relative_reconstruction_bias", m.RelativeReconstructionBias), ("l0", m.L0), ("l1", m.L1),
                     ("explained_variance", m.ExplainedVariance), ("explained_variance_legacy", m.ExplainedVarianceLegacy),
                     ("mse", m.Mse), ("cossim", m.Cossim),
                 })
            Assert.True(Math.Abs(sv[key]!.GetValue<double>() - got) <= 1e-5, $"{key}: SAEBench {sv[key]}, SaeSharp {got:R}");
        AssertList(Doubles(p["feature_metrics"]!["feature_density"]!), m.FeatureDensity, 1e-6, "feature_density");
        AssertList(Doubles(p["feature_metrics"]!["consistent_activation_heuristic"]!), m.ConsistentActivationHeuristic, 1e-5, "consistent_activation_heuristic");
        // 2 windows × 5 tokens per batch, special tokens left out: 30 − 5 = 25 KL positions, 20 − 3 = 17 sparsity positions.
        Assert.Equal((25L, 17L), (m.ReconstructionPositions, m.SparsityVariancePositions));
    }

    private static float[,] Rows(JsonNode node)
    {
        var rows = node.AsArray().Select(r => Doubles(r!)).ToArray();
        var a = new float[rows.Length, rows[0].Length];
        for (int i = 0; i < rows.Length; i++)
            for (int j = 0; j < rows[0].Length; j++) a[i, j] = (float)rows[i][j];
        return a;
    }

    private static (string, double)[] MiscPairs(SaeBenchMiscMetrics m) =>
    [
        ("freq_over_1_percent", m.FreqOver1Percent), ("freq_over_10_percent", m.FreqOver10Percent),
        ("normalized_freq_over_1_percent", m.NormalizedFreqOver1Percent), ("normalized_freq_over_10_percent", m.NormalizedFreqOver10Percent),
        ("average_max_encoder_cosine_sim", m.AverageMaxEncoderCosineSim), ("average_max_decoder_cosine_sim", m.AverageMaxDecoderCosineSim),
        ("frac_alive", m.FracAlive),
    ];

    /// <summary>The fields of SAEBench dataclass <paramref name="name"/> (name, Python annotation), in declaration order.</summary>
    private static List<(string Name, string Type)> Fields(string name) =>
        Expected["schema"]![name]!["fields"]!.AsArray().Select(p => (p![0]!.GetValue<string>(), p[1]!.GetValue<string>())).ToList();

    /// <summary>Whether <paramref name="value"/> is what SAEBench's annotation allows.</summary>
    private static bool Fits(JsonNode? value, string type) => type switch
    {
        "str" => value?.GetValueKind() == JsonValueKind.String,
        "int" => value?.GetValueKind() == JsonValueKind.Number && value.AsValue().TryGetValue<long>(out _),
        "float" => value?.GetValueKind() == JsonValueKind.Number,
        "bool" => value?.GetValueKind() is JsonValueKind.True or JsonValueKind.False,
        "str | None" => value is null || value.GetValueKind() == JsonValueKind.String,
        "dict[str, Any] | None" => value is null || value.GetValueKind() == JsonValueKind.Object,
        "Any | None" => true,
        _ when type.StartsWith("list[", StringComparison.Ordinal) => value?.GetValueKind() == JsonValueKind.Array,
        _ => value?.GetValueKind() == JsonValueKind.Object,   // a nested dataclass or a type parameter
    };

    /// <summary>A gated SAE has no b_enc: SAEBench's core writes its b_mag as <c>encoder_bias</c> (its
    /// <c>architecture_str == "gated"</c> branch), while SAELens's <c>feature_metrics</c> has no <c>encoder_bias</c>;
    /// a standard SAE writes b_enc.</summary>
    [Fact]
    public void A_gated_saes_encoder_bias_is_its_b_mag_as_SAEBench_writes_it()
    {
        using var model = Gpt2();
        var windows = Enumerable.Range(0, 3).Select(w => Enumerable.Range(0, 8).Select(t => (long)(1 + (7 * w + 3 * t) % 49)).ToArray()).ToList();
        double[] EncoderBias(Sae sae)
        {
            var r = SaeBenchCoreEvaluator.Evaluate(model, sae, () => windows,
                new SaeBenchCoreConfig { BatchSizePrompts = 2, NEvalReconstructionBatches = 1, ContextSize = 8 }, []);
            using var stream = new MemoryStream();
            using (var writer = new Utf8JsonWriter(stream))
                SaeBenchCoreOutput.Write(writer, r, new SaeBenchCoreRun { ModelName = "tiny-gpt2", Dataset = "d" });
            return JsonNode.Parse(stream.ToArray())!["eval_result_details"]!.AsArray().Select(d => d!["encoder_bias"]!.GetValue<double>()).ToArray();
        }
        float[] bMag = [0.25f, -0.5f, 0.125f, 1f, -2f, 0.75f];
        float[] bEnc = [0.5f, 0.25f, -1f, 0f, 2f, -0.125f];
        var cfg = new SaeConfig { Architecture = SaeArchitectures.Gated, DIn = 16, DSae = 6 };
        cfg.Metadata.HookName = "blocks.0.hook_resid_pre";
        using var gated = new GatedSae(cfg);
        using (no_grad()) gated.BMag.copy_(tensor(bMag));
        Assert.Null(new FeatureMetrics { FeatureDensity = new double[6] }.WithWeights(gated).EncoderBias);
        Assert.Equal(bMag.Select(v => (double)v), EncoderBias(gated));
        var scfg = new SaeConfig { DIn = 16, DSae = 6 };
        scfg.Metadata.HookName = "blocks.0.hook_resid_pre";
        using var standard = new StandardSae(scfg);
        using (no_grad()) standard.BEnc.copy_(tensor(bEnc));
        Assert.Equal(bEnc.Select(v => (double)v), EncoderBias(standard));
    }

    /// <summary>Evaluated in a tiny GPT-2 (5 windows of 8 tokens in batches of 2, a random SAE at blocks.0.hook_resid_pre),
    /// the output has every field SAEBench's <c>CoreEvalOutput</c> declares (BaseEvalOutput's order), each of the type its
    /// annotation says, the config fields of <c>CoreEvalConfig</c>, the seven metric groups of <c>CoreMetricCategories</c>
    /// with exactly their dataclasses' fields, and d_sae details with <c>CoreFeatureMetric</c>'s fields; the values are the
    /// SAEBench procedure's (2 CE/KL batches of 2 windows, 32 tokens, then 1 batch, 16 tokens: the fifth window and, the data
    /// used up, the first again).</summary>
    [Fact]
    public void Output_has_every_field_of_the_SAEBench_schema()
    {
        using var model = Gpt2();
        var cfg = new SaeConfig { DIn = 16, DSae = 12 };
        cfg.Metadata.HookName = "blocks.0.hook_resid_pre";
        cfg.Metadata.ModelName = "tiny-gpt2";
        using var sae = SaeFactory.Create(cfg);
        using (no_grad()) { sae.WEnc.copy_(randn(16, 12, generator: manual_seed(1)).mul(TorchScalars.Of(0.3))); sae.WDec.copy_(sae.WEnc.t()); }
        var rng = new Random(5);
        var windows = Enumerable.Range(0, 5).Select(_ => Enumerable.Range(0, 8).Select(_ => (long)rng.Next(1, 50)).ToArray()).ToList();
        var r = SaeBenchCoreEvaluator.Evaluate(model, sae, () => windows,
            new SaeBenchCoreConfig { BatchSizePrompts = 2, NEvalReconstructionBatches = 2, NEvalSparsityVarianceBatches = 1, ContextSize = 8 }, []);
        var m = r.Metrics;
        Assert.Equal((32L, 16L), (m.ReconstructionPositions, m.SparsityVariancePositions));

        using var stream = new MemoryStream();
        using (var writer = new Utf8JsonWriter(stream))
            SaeBenchCoreOutput.Write(writer, r, new SaeBenchCoreRun { ModelName = "tiny-gpt2", Dataset = "corpus.txt", SaeLensReleaseId = "mine", SaeLensId = "custom_sae" });
        var json = JsonNode.Parse(stream.ToArray())!.AsObject();

        var top = Fields("BaseEvalOutput");
        Assert.Equal(top.Select(f => f.Name), json.Select(p => p.Key));
        var core = Fields("CoreEvalOutput").ToDictionary(f => f.Name, f => f.Type);
        foreach (var (name, type) in top)
            Assert.True(Fits(json[name], core.GetValueOrDefault(name, type)), $"{name}: {json[name]?.ToJsonString()} is not {core.GetValueOrDefault(name, type)}");
        Assert.Equal("core", json["eval_type_id"]!.GetValue<string>());

        var config = json["eval_config"]!.AsObject();
        Assert.Equal(Fields("CoreEvalConfig").Select(f => f.Name), config.Select(p => p.Key));
        foreach (var (name, type) in Fields("CoreEvalConfig")) Assert.True(Fits(config[name], type), $"eval_config.{name} is not {type}");
        Assert.Equal(2, config["n_eval_reconstruction_batches"]!.GetValue<long>());
        Assert.Equal(1, config["n_eval_sparsity_variance_batches"]!.GetValue<long>());
        Assert.Equal(8, config["context_size"]!.GetValue<long>());

        var groups = json["eval_result_metrics"]!.AsObject();
        var categories = Fields("CoreMetricCategories");
        Assert.Equal(categories.Select(c => c.Name), groups.Select(p => p.Key));
        foreach (var (group, cls) in categories)
        {
            var g = groups[group]!.AsObject();
            Assert.Equal(Fields(cls).Select(f => f.Name), g.Select(p => p.Key));
            foreach (var (name, type) in Fields(cls)) Assert.True(Fits(g[name], type), $"{group}.{name} is not {type}");
        }
        Assert.Equal(m.KlDivScore, groups["model_behavior_preservation"]!["kl_div_score"]!.GetValue<double>());
        Assert.Equal(m.CeLossWithSae, groups["model_performance_preservation"]!["ce_loss_with_sae"]!.GetValue<double>());
        Assert.Equal(m.L0, groups["sparsity"]!["l0"]!.GetValue<double>());
        Assert.Equal(32, groups["token_stats"]!["total_tokens_eval_reconstruction"]!.GetValue<long>());
        Assert.Equal(16, groups["token_stats"]!["total_tokens_eval_sparsity_variance"]!.GetValue<long>());
        Assert.Equal(m.Mse, groups["reconstruction_quality"]!["mse"]!.GetValue<double>());
        var features = r.Features;
        Assert.Equal(SaeBenchMiscMetrics.From(features).FracAlive, groups["misc_metrics"]!["frac_alive"]!.GetValue<double>());

        var details = json["eval_result_details"]!.AsArray();
        Assert.Equal(12, details.Count);
        var detailFields = Fields("CoreFeatureMetric");
        using var wdec = sae.WDec.detach().clone();
        var maxDec = FeatureMetrics.MaxCosineSims(wdec);
        for (int i = 0; i < 12; i++)
        {
            var d = details[i]!.AsObject();
            Assert.Equal(detailFields.Select(f => f.Name), d.Select(p => p.Key));
            foreach (var (name, type) in detailFields) Assert.True(Fits(d[name], type), $"details[{i}].{name} is not {type}");
            Assert.Equal(i, d["index"]!.GetValue<long>());
            Assert.Equal(Math.Round(maxDec[i], 10), d["max_decoder_cosine_sim"]!.GetValue<double>());
            // W_dec = W_encᵀ: the encoder's max cosines are the decoder's.
            Assert.Equal(d["max_decoder_cosine_sim"]!.GetValue<double>(), d["max_encoder_cosine_sim"]!.GetValue<double>(), 6);
        }
        Assert.Equal(JsonNode.Parse(cfg.ToJson())!["architecture"]!.GetValue<string>(), json["sae_cfg_dict"]!["architecture"]!.GetValue<string>());
        Assert.Equal(12, json["sae_cfg_dict"]!["d_sae"]!.GetValue<long>());
    }
}
