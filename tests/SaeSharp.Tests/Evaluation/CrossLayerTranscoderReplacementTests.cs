using SaeSharp.Evaluation;
using SaeSharp.Interop;
using SaeSharp.Models;
using SaeSharp.Saes;
using SaeSharp.Tests.Activations;
using SaeSharp.Tests.Models;
using SaeSharp.Tests.Saes;
using static TorchSharp.torch;

namespace SaeSharp.Tests.Evaluation;

public class CrossLayerTranscoderReplacementTests : ModelTestBase
{
    private const int DModel = 16, Features = 12;

    /// <summary>A random 2-layer CLT on the tiny GPT-2 (d_model 16), from ln2's output to the MLP output, in circuit-tracer's files.</summary>
    private (CrossLayerTranscoder Clt, CltReference Ref) MakeClt(bool skip, int seed = 4)
    {
        var r = CltReference.Random(2, Features, DModel, seed, threshold: true, skip);
        string folder = Sub($"clt-{Guid.NewGuid():N}");
        r.WriteCircuitTracer(folder, threshold: true);
        File.WriteAllText(Path.Combine(folder, "config.yaml"), "feature_input_hook: ln2.hook_normalized\nfeature_output_hook: hook_mlp_out\nmodel_name: gpt2\n");
        return (CrossLayerTranscoderLoader.Load(folder), r);
    }

    /// <summary>Mean next-token CE of <paramref name="logits"/> [b, s, vocab] in double, over every position.</summary>
    private static double HandCe(Tensor logits, List<long[]> windows)
    {
        var l = logits.to(ScalarType.Float64);
        double sum = 0;
        long n = 0;
        for (int b = 0; b < windows.Count; b++)
            for (int p = 0; p + 1 < windows[b].Length; p++)
            {
                var row = l[b, p].data<double>().ToArray();
                double m = row.Max();
                sum += m + Math.Log(row.Sum(v => Math.Exp(v - m))) - row[windows[b][p + 1]];
                n++;
            }
        return sum / n;
    }

    private static double[][] Rows(Tensor x)
    {
        var a = x.to(ScalarType.Float64).reshape(-1, DModel).data<double>().ToArray();
        return Enumerable.Range(0, a.Length / DModel).Select(i => a.AsSpan(i * DModel, DModel).ToArray()).ToArray();
    }

    /// <summary>The replacement model run by hand: each layer's input read in this run, its MLP output replaced by the
    /// loop reference's reconstruction from the inputs of layers 0..l of the same position.</summary>
    private static Tensor HandReplacement(HookedTransformer model, CltReference r, Tensor tokens)
    {
        var inputs = new double[r.L][][];
        var hooks = new List<(string, Func<Tensor, Tensor?>)>();
        for (int l = 0; l < r.L; l++)
        {
            int layer = l;
            hooks.Add(($"blocks.{l}.ln2.hook_normalized", x => { inputs[layer] = Rows(x); return null; }));
            hooks.Add(($"blocks.{l}.hook_mlp_out", y =>
            {
                var rec = inputs[layer].Select((_, p) => r.Reconstruct(inputs.Take(layer + 1).Select(a => a[p]).ToList(), layer)).ToArray();
                return tensor(rec.SelectMany(v => v).Select(v => (float)v).ToArray()).view(y.shape);
            }));
        }
        return model.Run(tokens, new RunOptions { Hooks = hooks }).Logits!;
    }

    [Fact]
    public void Replacement_ce_matches_a_hand_run_of_the_reference_and_ablation_a_hand_zeroed_run()
    {
        using var model = Gpt2();
        var windows = ModelActivationSourceTests.Windows(4, 8);
        var (clt, reference) = MakeClt(skip: true);
        using (clt)
        {
            var m = DownstreamEvaluator.EvaluateReplacement(model, clt, windows, new DownstreamEvalOptions { BatchSizePrompts = 3 });
            using var tokens = Tokens([.. windows]);
            using var replaced = HandReplacement(model, reference, tokens);
            Assert.Equal(HandCe(replaced, windows), m.CeLossWithSae, 5);
            using var clean = model.Forward(tokens);
            Assert.Equal(HandCe(clean, windows), m.CeLossWithoutSae, 5);
            var zero = new List<(string, Func<Tensor, Tensor?>)>
            {
                ("blocks.0.hook_mlp_out", y => zeros_like(y)), ("blocks.1.hook_mlp_out", y => zeros_like(y)),
            };
            using var ablated = model.Run(tokens, new RunOptions { Hooks = zero }).Logits!;
            Assert.Equal(HandCe(ablated, windows), m.CeLossWithAblation, 5);
            Assert.True(m.KlDivWithSae > 1e-4, "a random CLT should change the outputs");
            Assert.Equal(["blocks.0.ln2.hook_normalized", "blocks.1.ln2.hook_normalized"], m.InputHooks);
            Assert.Equal(["blocks.0.hook_mlp_out", "blocks.1.hook_mlp_out"], m.OutputHooks);
            Assert.Equal(4 * 8, m.Tokens);
        }
    }

    [Fact]
    public void With_error_terms_the_replacement_is_the_clean_model_exactly()
    {
        using var model = Gpt2();
        var windows = ModelActivationSourceTests.Windows(5, 8);
        foreach (bool skip in new[] { false, true })
        {
            var (clt, _) = MakeClt(skip, seed: skip ? 7 : 8);
            using (clt)
            {
                var m = DownstreamEvaluator.EvaluateReplacement(model, clt, windows, new DownstreamEvalOptions { BatchSizePrompts = 2 });
                Assert.Equal(m.CeLossWithoutSae, m.CeLossWithErrorTerm);   // exactly: the error terms are frozen from the clean run
                Assert.Equal(0.0, m.KlDivWithErrorTerm);
                Assert.NotEqual(m.CeLossWithoutSae, m.CeLossWithSae);
            }
        }
    }

    [Fact]
    public void Per_layer_metrics_are_the_reconstruction_from_the_clean_activations()
    {
        using var model = Gpt2();
        var windows = ModelActivationSourceTests.Windows(3, 8);
        var (clt, r) = MakeClt(skip: false);
        using (clt)
        {
            var m = DownstreamEvaluator.EvaluateReplacement(model, clt, windows, new DownstreamEvalOptions { MeanAblation = false, ErrorTerm = false });
            Assert.True(double.IsNaN(m.CeLossWithErrorTerm) && double.IsNaN(m.CeLossWithMeanAblation));
            using var tokens = Tokens([.. windows]);
            var (_, cache) = model.RunWithCache(tokens, ["blocks.0.ln2.hook_normalized", "blocks.1.ln2.hook_normalized", "blocks.0.hook_mlp_out", "blocks.1.hook_mlp_out"]);
            using (cache)
            {
                var xs = new[] { Rows(cache["blocks.0.ln2.hook_normalized"]), Rows(cache["blocks.1.ln2.hook_normalized"]) };
                for (int l = 0; l < 2; l++)
                {
                    var y = Rows(cache[$"blocks.{l}.hook_mlp_out"]);
                    int n = y.Length;
                    double l0 = Enumerable.Range(0, n).Average(p => r.Features(xs[l][p], l).Count(v => v != 0));
                    Assert.Equal(l0, m.Layers[l].L0, 6);
                    // FVU about the mean: Σ‖y − ŷ‖² / Σ‖y − ȳ‖².
                    var mean = Enumerable.Range(0, DModel).Select(d => y.Average(row => row[d])).ToArray();
                    double err = 0, total = 0;
                    for (int p = 0; p < n; p++)
                    {
                        var rec = r.Reconstruct(xs.Take(l + 1).Select(a => a[p]).ToList(), l);
                        for (int d = 0; d < DModel; d++)
                        {
                            err += (y[p][d] - rec[d]) * (y[p][d] - rec[d]);
                            total += (y[p][d] - mean[d]) * (y[p][d] - mean[d]);
                        }
                    }
                    Assert.Equal(err / total, m.Layers[l].Fvu, 4);
                }
            }
        }
    }

    [Fact]
    public void Repeated_replacement_evaluation_leaves_no_tensor_alive()
    {
        using var model = Gpt2();
        var windows = ModelActivationSourceTests.Windows(3, 8);
        var r = CltReference.Random(2, Features, DModel, 6, threshold: true, skip: true);
        string folder = Sub($"clt-leak-{Guid.NewGuid():N}");
        r.WriteCircuitTracerLn2(folder);
        // Every variant (replacement, error terms, zero and mean ablation) over two batches, the CLT loaded and freed each time.
        var options = new DownstreamEvalOptions { BatchSizePrompts = 2, MeanAblation = true, ErrorTerm = true };
        Assert.Equal(0, LiveTensors.Leaked(() =>
        {
            using var clt = CrossLayerTranscoderLoader.Load(folder);
            var m = DownstreamEvaluator.EvaluateReplacement(model, clt, windows, options);
            Assert.Equal(m.CeLossWithoutSae, m.CeLossWithErrorTerm);
        }));
        // And with the CLT kept: the evaluation alone.
        using var kept = CrossLayerTranscoderLoader.Load(folder);
        Assert.Equal(0, LiveTensors.Leaked(() => DownstreamEvaluator.EvaluateReplacement(model, kept, windows, options)));
    }

    [Fact]
    public void A_clt_of_another_width_or_more_layers_than_the_model_is_refused()
    {
        using var model = Gpt2();
        var windows = ModelActivationSourceTests.Windows(2, 8);
        var r = CltReference.Random(3, 4, DModel, 1, threshold: false, skip: false);
        string folder = Sub("clt3");
        r.WriteCircuitTracer(folder, threshold: false);
        using (var clt = CrossLayerTranscoderLoader.Load(folder))
        {
            var e = Assert.Throws<SaeSharpException>(() => DownstreamEvaluator.EvaluateReplacement(model, clt, windows));
            Assert.Equal("the cross-layer transcoder spans 3 layers but the model has 2", e.Message);
        }
        var narrow = CltReference.Random(2, 4, 8, 1, threshold: false, skip: false);
        folder = Sub("clt8");
        narrow.WriteCircuitTracer(folder, threshold: false);
        using (var clt = CrossLayerTranscoderLoader.Load(folder))
        {
            var e = Assert.Throws<SaeSharpException>(() => DownstreamEvaluator.EvaluateReplacement(model, clt, windows));
            Assert.Equal("the cross-layer transcoder has d_model = 8 but the model's is 16", e.Message);
        }
    }
}

public class CrossLayerTranscoderEvalCliTests : IDisposable
{
    private readonly SaeSharp.Tests.Analysis.AnalysisFixture _fx = new();
    public void Dispose() => _fx.Dispose();

    /// <summary>The replacement table's numeric rows: its label, and where the JSON holds the value, with the table's format.</summary>
    private static readonly (string Row, string Group, string Key, string Format)[] TableRows =
    [
        ("ce loss clean", "model_performance_preservation", "ce_loss_without_sae", "F4"),
        ("ce loss with replacement", "model_performance_preservation", "ce_loss_with_sae", "F4"),
        ("ce loss zero-ablated", "model_performance_preservation", "ce_loss_with_ablation", "F4"),
        ("ce loss mean-ablated", "model_performance_preservation", "ce_loss_with_mean_ablation", "F4"),
        ("ce loss with error terms", "model_performance_preservation", "ce_loss_with_error_term", "F4"),
        ("kl div with replacement", "model_behavior_preservation", "kl_div_with_sae", "G5"),
        ("kl div zero-ablated", "model_behavior_preservation", "kl_div_with_ablation", "G5"),
        ("kl div mean-ablated", "model_behavior_preservation", "kl_div_with_mean_ablation", "G5"),
        ("kl div with error terms", "model_behavior_preservation", "kl_div_with_error_term", "G5"),
        ("kl div score", "model_behavior_preservation", "kl_div_score", "F4"),
    ];

    [Fact]
    public void Sae_eval_of_a_hub_clt_writes_every_metric_of_the_library_to_json()
    {
        var r = CltReference.Random(2, 8, 16, 5, threshold: true, skip: true);
        string local = Path.Combine(_fx.Dir, "clt-src");
        r.WriteCircuitTracer(local, threshold: true);
        File.WriteAllText(Path.Combine(local, "config.yaml"), "feature_input_hook: ln2.hook_normalized\nfeature_output_hook: hook_mlp_out\n");
        using var server = new SaeSharp.Tests.Hub.FakeHubServer();
        server.Repos["someone/clt-tiny"] = Directory.EnumerateFiles(local).ToDictionary(f => "clt/" + Path.GetFileName(f),
            f => new SaeSharp.Tests.Hub.FakeHubServer.FakeFile(File.ReadAllBytes(f), Lfs: f.EndsWith(".safetensors", StringComparison.Ordinal)));
        string json = Path.Combine(_fx.Dir, "hub-clt.json");
        var (exit, output, err) = SaeSharp.Tests.Cli.CliRunner.RunWithEnvironment(
            new Dictionary<string, string> { ["HF_ENDPOINT"] = server.Endpoint, ["HF_HUB_CACHE"] = Path.Combine(_fx.Dir, "hubcache") },
            "eval", "--sae", "hf:someone/clt-tiny/clt", "--model", _fx.ModelDir, "--dataset", _fx.DataPath, "--tokens", "64", "--context-size", "16", "--json", json);
        Assert.True(exit == 0, err);
        Assert.Contains("hf:someone/clt-tiny/clt (replacement model", output);
        // The hooks of the two layers, written once per kind.
        Assert.Contains("reads\tblocks.{0..1}.ln2.hook_normalized", output);
        Assert.Contains("replaces\tblocks.{0..1}.hook_mlp_out", output);

        // The library on the local copy of the same files, the same data and settings.
        var m = SaeSharp.Pipelines.ModelPipeline.EvaluateReplacement(local,
            new SaeSharp.Pipelines.ModelDataOptions { ModelPath = _fx.ModelDir, DatasetPath = _fx.DataPath, Tokens = 64, ContextSize = 16 });
        using var doc = System.Text.Json.JsonDocument.Parse(File.ReadAllText(json));
        var root = doc.RootElement;
        void Same(double expected, System.Text.Json.JsonElement e, string what)
        {
            if (double.IsFinite(expected)) Assert.True(expected == e.GetDouble(), $"{what}: json {e.GetDouble()}, library {expected}");
            else Assert.Equal(System.Text.Json.JsonValueKind.Null, e.ValueKind);
        }
        var perf = root.GetProperty("model_performance_preservation");
        Same(m.CeLossWithoutSae, perf.GetProperty("ce_loss_without_sae"), "ce clean");
        Same(m.CeLossWithSae, perf.GetProperty("ce_loss_with_sae"), "ce with CLT");
        Same(m.CeLossWithAblation, perf.GetProperty("ce_loss_with_ablation"), "ce zero-ablated");
        Same(m.CeLossWithMeanAblation, perf.GetProperty("ce_loss_with_mean_ablation"), "ce mean-ablated");
        Same(m.CeLossWithErrorTerm, perf.GetProperty("ce_loss_with_error_term"), "ce with error terms");
        Same(m.CeLossScore, perf.GetProperty("ce_loss_score"), "ce score");
        Same(m.CeLossScoreMeanAblation, perf.GetProperty("ce_loss_score_mean_ablation"), "ce score (mean ablation)");
        var kl = root.GetProperty("model_behavior_preservation");
        Same(m.KlDivWithSae, kl.GetProperty("kl_div_with_sae"), "kl with CLT");
        Same(m.KlDivWithAblation, kl.GetProperty("kl_div_with_ablation"), "kl zero-ablated");
        Same(m.KlDivWithMeanAblation, kl.GetProperty("kl_div_with_mean_ablation"), "kl mean-ablated");
        Same(m.KlDivWithErrorTerm, kl.GetProperty("kl_div_with_error_term"), "kl with error terms");
        Same(m.KlDivScore, kl.GetProperty("kl_div_score"), "kl score");
        Same(m.KlDivScoreMeanAblation, kl.GetProperty("kl_div_score_mean_ablation"), "kl score (mean ablation)");
        Assert.Equal(m.Tokens, root.GetProperty("token_stats").GetProperty("total_tokens_eval_reconstruction").GetInt64());
        Assert.Equal(m.CeTokens, root.GetProperty("token_stats").GetProperty("total_tokens_eval_ce_loss").GetInt64());
        // Mean ablation and error terms ran: real numbers, and the error terms give back the clean model exactly.
        Assert.True(double.IsFinite(m.CeLossWithMeanAblation) && m.CeLossWithErrorTerm == m.CeLossWithoutSae && m.KlDivWithErrorTerm == 0);
        var layers = root.GetProperty("layers");
        Assert.Equal(m.Layers.Count, layers.GetArrayLength());
        for (int l = 0; l < m.Layers.Count; l++)
        {
            var j = layers[l];
            var e = m.Layers[l];
            Assert.Equal(l, j.GetProperty("layer").GetInt32());
            Assert.Equal(m.InputHooks[l], j.GetProperty("hook_name").GetString());
            Assert.Equal(m.OutputHooks[l], j.GetProperty("hook_name_out").GetString());
            var rq = j.GetProperty("reconstruction_quality");
            Same(e.Fvu, rq.GetProperty("fvu"), $"layer {l} fvu");
            Same(e.Mse, rq.GetProperty("mse"), $"layer {l} mse");
            Same(e.ExplainedVariance, rq.GetProperty("explained_variance"), $"layer {l} explained variance");
            Same(e.Cosine, rq.GetProperty("cossim"), $"layer {l} cosine");
            Same(e.L2Ratio, j.GetProperty("shrinkage").GetProperty("l2_ratio"), $"layer {l} l2 ratio");
            var sp = j.GetProperty("sparsity");
            Same(e.L0, sp.GetProperty("l0"), $"layer {l} l0");
            Same(e.L1, sp.GetProperty("l1"), $"layer {l} l1");
            Same(e.AliveFraction, sp.GetProperty("alive_fraction"), $"layer {l} alive");
            Assert.Equal(e.FeatureFrequency.Count(f => f == 0), sp.GetProperty("dead_latents").GetInt64());
        }
        // Only the CLT's files came from the hub.
        Assert.DoesNotContain(server.Requests, q => q.Path.Contains("/resolve/", StringComparison.Ordinal)
            && !System.Text.RegularExpressions.Regex.IsMatch(q.Path, @"/clt/(W_(enc|dec)_[01]\.safetensors|config\.yaml)$"));
    }

    [Fact]
    public void Sae_eval_with_a_clt_folder_reports_the_replacement_and_each_layer()
    {
        var r = CltReference.Random(2, 8, 16, 3, threshold: true, skip: false);
        string clt = Path.Combine(_fx.Dir, "clt");
        r.WriteCircuitTracer(clt, threshold: true);
        File.WriteAllText(Path.Combine(clt, "config.yaml"), "feature_input_hook: ln2.hook_normalized\nfeature_output_hook: hook_mlp_out\n");
        string json = Path.Combine(_fx.Dir, "clt.json");
        var (exit, output, err) = SaeSharp.Tests.Cli.CliRunner.Run("eval", "--sae", clt, "--model", _fx.ModelDir, "--dataset", _fx.DataPath,
            "--tokens", "64", "--context-size", "16", "--json", json);
        Assert.True(exit == 0, err);
        Assert.Contains("replacement model", output);
        var clean = System.Text.RegularExpressions.Regex.Match(output, @"ce loss clean\W+([0-9.]+)").Groups[1].Value;
        var withErrors = System.Text.RegularExpressions.Regex.Match(output, @"ce loss with error terms\W+([0-9.]+)").Groups[1].Value;
        Assert.NotEmpty(clean);
        Assert.Equal(clean, withErrors);
        using var doc = System.Text.Json.JsonDocument.Parse(File.ReadAllText(json));
        var layers = doc.RootElement.GetProperty("layers");
        Assert.Equal(2, layers.GetArrayLength());
        Assert.Equal("blocks.1.hook_mlp_out", layers[1].GetProperty("hook_name_out").GetString());
        Assert.True(layers[0].GetProperty("sparsity").GetProperty("l0").GetDouble() > 0);

        // Every number the table prints is in the JSON, as printed.
        var root = doc.RootElement;
        double J(string group, string key) => root.GetProperty(group).GetProperty(key).GetDouble();
        foreach (var (row, group, key, format) in TableRows)
        {
            string printed = System.Text.RegularExpressions.Regex.Match(output, System.Text.RegularExpressions.Regex.Escape(row) + @"[^0-9\-]*(-?[0-9.]+(?:E[-+]?[0-9]+)?)").Groups[1].Value;
            Assert.False(printed.Length == 0, $"table row '{row}' not found in:\n{output}");
            Assert.Equal(printed, J(group, key).ToString(format, System.Globalization.CultureInfo.InvariantCulture));
        }

        // With another SAE, or a hook: refused.
        var two = SaeSharp.Tests.Cli.CliRunner.Run("eval", "--sae", clt, "--sae", _fx.SaeDir, "--model", _fx.ModelDir, "--dataset", _fx.DataPath);
        Assert.Equal(1, two.Exit);
        Assert.Contains("a whole cross-layer transcoder is evaluated alone: give it as the only --sae", two.Err);
    }
}
