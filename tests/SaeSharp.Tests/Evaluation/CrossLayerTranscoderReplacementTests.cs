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
        Assert.True(layers[0].GetProperty("l0").GetDouble() > 0);

        // With another SAE, or a hook: refused.
        var two = SaeSharp.Tests.Cli.CliRunner.Run("eval", "--sae", clt, "--sae", _fx.SaeDir, "--model", _fx.ModelDir, "--dataset", _fx.DataPath);
        Assert.Equal(1, two.Exit);
        Assert.Contains("a whole cross-layer transcoder is evaluated alone: give it as the only --sae", two.Err);
    }
}
