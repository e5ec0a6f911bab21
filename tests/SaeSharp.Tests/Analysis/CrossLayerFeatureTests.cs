using System.Text.Json.Nodes;
using SaeSharp.Analysis;
using SaeSharp.Interop;
using SaeSharp.IO;
using SaeSharp.Models;
using SaeSharp.Saes;
using SaeSharp.Tests.Cli;
using SaeSharp.Tests.Saes;
using static TorchSharp.torch;

namespace SaeSharp.Tests.Analysis;

/// <summary>
/// <c>sae features</c> and <c>sae inspect</c> of a whole cross-layer transcoder: a 2-layer CLT in circuit-tracer's files
/// (ln2.hook_normalized → hook_mlp_out) over the analysis fixture's tiny GPT-NeoX, against the single-layer path on
/// SAELens's per-layer view of the same files and against loops in double.
/// </summary>
public class CrossLayerFeatureTests : IDisposable
{
    private readonly AnalysisFixture _fx = new();
    public void Dispose() => _fx.Dispose();

    private const int Layers = 2, Features = 10, DModel = 16;

    private (string Folder, CltReference Ref) WriteClt(bool threshold, int seed = 7)
    {
        var r = CltReference.Random(Layers, Features, DModel, seed, threshold, skip: false);
        string folder = Path.Combine(_fx.Dir, $"clt-{Guid.NewGuid():N}");
        r.WriteCircuitTracer(folder, threshold);
        File.WriteAllText(Path.Combine(folder, "config.yaml"),
            "model_name: tiny-neox\nfeature_input_hook: ln2.hook_normalized\nfeature_output_hook: hook_mlp_out\n");
        return (folder, r);
    }

    /// <summary>Random windows of 12 tokens over the fixture's vocabulary, BOS first.</summary>
    private List<long[]> Windows(int n, int seed = 1)
    {
        var rng = new Random(seed);
        return Enumerable.Range(0, n).Select(_ => new long[] { _fx.Bos }.Concat(Enumerable.Range(0, 11).Select(_ => (long)rng.Next(1, _fx.Vocab.Count))).ToArray()).ToList();
    }

    private static FeatureAnalysisOptions Options => new()
    {
        BatchSizePrompts = 3, Statistics = new FeatureStatisticsOptions { TopExamples = 4, Context = 3 }, TopLogits = 5, SimilarFeatures = 3, AlignedNeurons = 3,
    };

    [Fact]
    public void Each_layer_of_the_whole_pass_equals_the_single_layer_path_on_saelens_per_layer_view()
    {
        // ReLU: SAELens's mntss_clt_layer_transcoder loads a layer as a standard (ReLU) transcoder with its decoders summed.
        var (folder, r) = WriteClt(threshold: false);
        using var model = ModelLoader.FromPretrained(_fx.ModelDir);
        using var clt = CrossLayerTranscoderLoader.Load(folder);
        var windows = Windows(7);
        var p = model.named_parameters().ToDictionary(kv => kv.name, kv => kv.parameter);
        var whole = FeatureAnalysis.Run(model, clt, windows, Options);
        Assert.Equal([0, 1], whole.Select(w => w.Layer));
        for (int l = 0; l < Layers; l++)
        {
            using var sae = SaeLensConversions.LoadMntssCltLayer(Path.Combine(folder, $"W_enc_{l}.safetensors"));
            var single = FeatureAnalysis.Run(model, sae, windows, Options with { Hook = null });
            var w = whole[l].Report;
            Assert.Equal($"blocks.{l}.ln2.hook_normalized", w.Source.Hook);
            Assert.Equal(single.Source.Hook, w.Source.Hook);
            Assert.Equal((single.Tokens, single.Windows), (w.Tokens, w.Windows));
            Assert.Equal(Features, w.Features.Count);
            Assert.Contains(w.Features, f => f.Firings > 0 && f.Firings < w.Tokens);   // the comparison is not vacuous
            for (int i = 0; i < Features; i++)
            {
                var (a, b) = (w.Features[i], single.Features[i]);
                Assert.Equal(b.Firings, a.Firings);
                Assert.Equal(b.MaxActivation, a.MaxActivation, 5);
                Assert.Equal(b.Density, a.Density, 12);
                Assert.Equal(b.TopExamples.Select(e => (e.Window, e.Position)), a.TopExamples.Select(e => (e.Window, e.Position)));
                Assert.Equal(b.TopLogits.Select(t => t.Token), a.TopLogits.Select(t => t.Token));
                Assert.Equal(b.BottomLogits.Select(t => t.Token), a.BottomLogits.Select(t => t.Token));
                foreach (var (x, y) in a.TopLogits.Zip(b.TopLogits)) Assert.Equal(y.Value, x.Value, 4);
                Assert.Equal(b.SimilarFeatures.Select(s => s.Index), a.SimilarFeatures.Select(s => s.Index));
                // The single-layer path reads its input hook (no MLP neurons there); the CLT's tables are at its output
                // hook: the neurons of layer l's MLP (dense_4h_to_h columns) most aligned (cosine) with the summed decoder row.
                Assert.Empty(b.AlignedNeurons ?? []);
                var wOut = p[$"gpt_neox.layers.{l}.mlp.dense_4h_to_h.weight"].to(ScalarType.Float64);   // [d_model, d_mlp]
                int dMlp = (int)wOut.shape[1];
                var wo = wOut.data<double>().ToArray();
                var row = new double[DModel];
                foreach (var j in r.WDec[l][i]) for (int d = 0; d < DModel; d++) row[d] += j[d];
                double Cos(int n)
                {
                    double dot = 0, nn = 0, rr = 0;
                    for (int d = 0; d < DModel; d++) { dot += row[d] * wo[d * dMlp + n]; nn += wo[d * dMlp + n] * wo[d * dMlp + n]; rr += row[d] * row[d]; }
                    return dot / Math.Sqrt(nn * rr);
                }
                var aligned = Enumerable.Range(0, dMlp).OrderByDescending(Cos).Take(3).ToList();
                Assert.Equal(aligned, a.AlignedNeurons!.Select(s => s.Index));
                Assert.Equal(Cos(aligned[0]), a.AlignedNeurons![0].Cosine, 4);
                Assert.Equal(b.NeuronAlignment!.Select(n => n.Neuron), a.NeuronAlignment!.Select(n => n.Neuron));
            }
        }
    }

    [Fact]
    public void Jumprelu_features_and_logit_effects_match_loops_in_double()
    {
        var (folder, r) = WriteClt(threshold: true, seed: 11);
        using var model = ModelLoader.FromPretrained(_fx.ModelDir);
        using var clt = CrossLayerTranscoderLoader.Load(folder);
        var windows = Windows(5, seed: 4);
        var reports = FeatureAnalysis.Run(model, clt, windows, Options, layers: [1]);
        var (layer, report) = Assert.Single(reports);
        Assert.Equal(1, layer);

        // Layer 1's input at every position, from a plain run of the model.
        var inputs = new List<double[]>();
        using (var tokens = tensor(windows.SelectMany(w => w).ToArray()).view(windows.Count, -1))
        {
            var (logits, cache) = model.Run(tokens, new RunOptions { CacheNames = ["blocks.1.ln2.hook_normalized"] });
            logits?.Dispose();
            using (cache!)
            {
                var a = cache!["blocks.1.ln2.hook_normalized"].to(ScalarType.Float64).reshape(-1, DModel).data<double>().ToArray();
                for (int i = 0; i < a.Length / DModel; i++) inputs.Add(a.AsSpan(i * DModel, DModel).ToArray());
            }
        }
        var acts = inputs.Select(x => r.Features(x, 1)).ToList();
        for (int k = 0; k < Features; k++)
        {
            var f = report.Features[k];
            Assert.Equal(acts.Count(a => a[k] > 0), f.Firings);
            Assert.Equal(acts.Max(a => a[k]), f.MaxActivation, 4);
        }

        // The logit effect: Σ_j W_dec[1][k][j] (every layer it writes) through diag(γ)·W_U, GPT-NeoX's final norm and unembedding.
        var p = model.named_parameters().ToDictionary(kv => kv.name, kv => kv.parameter);
        var wu = p["embed_out.weight"].to(ScalarType.Float64).data<double>().ToArray();               // [vocab, d]
        var gamma = p["gpt_neox.final_layer_norm.weight"].to(ScalarType.Float64).data<double>().ToArray();
        int vocab = wu.Length / DModel;
        for (int k = 0; k < Features; k++)
        {
            var dir = new double[DModel];
            foreach (var row in r.WDec[1][k]) for (int d = 0; d < DModel; d++) dir[d] += row[d];
            var logit = Enumerable.Range(0, vocab).Select(v => Enumerable.Range(0, DModel).Sum(d => dir[d] * gamma[d] * wu[v * DModel + d])).ToArray();
            var order = Enumerable.Range(0, vocab).OrderByDescending(v => logit[v]).Take(5).ToList();
            Assert.Equal(order, report.Features[k].TopLogits.Select(t => t.Token));
            Assert.Equal(logit[order[0]], report.Features[k].TopLogits[0].Value, 4);
        }
    }

    [Fact]
    public void Layer_transcoder_sums_the_decoders_and_encodes_as_the_clt()
    {
        var (folder, r) = WriteClt(threshold: true, seed: 3);
        using var clt = CrossLayerTranscoderLoader.Load(folder);
        using var sae = clt.LayerTranscoder(0);
        Assert.Equal(SaeArchitectures.JumpReLU, sae.Cfg.Architecture);
        Assert.Equal(("blocks.0.ln2.hook_normalized", "blocks.0.hook_mlp_out"), (sae.Cfg.Metadata.HookName, sae.Cfg.Metadata.HookNameOut));
        var wDec = sae.WDec.detach().to(ScalarType.Float64).data<double>().ToArray();
        for (int k = 0; k < Features; k++)
            for (int d = 0; d < DModel; d++)
                Assert.Equal(r.WDec[0][k][0][d] + r.WDec[0][k][1][d], wDec[k * DModel + d], 5);
        // Thresholds are positive here, where SAELens's relu(pre)·[pre > θ] and circuit-tracer's pre·[pre > θ] agree.
        using var x = randn(6, DModel, generator: new TorchSharp.torch.Generator(5));
        using var a = sae.Encode(x);
        using var b = clt.EncodeLayer(x, 0);
        Assert.True(a.allclose(b, 1e-5, 1e-6));
        Assert.Throws<SaeSharpException>(() => clt.LayerTranscoder(2));
    }

    [Fact]
    public void The_whole_pass_leaves_no_tensor_alive()
    {
        var (folder, _) = WriteClt(threshold: true);
        using var model = ModelLoader.FromPretrained(_fx.ModelDir);
        using var clt = CrossLayerTranscoderLoader.Load(folder);
        var windows = Windows(4);
        Assert.Equal(0, LiveTensors.Leaked(() => FeatureAnalysis.Run(model, clt, windows, Options with { Features = [0, 3, 5] })));
        var inspector = new CrossLayerPromptInspector(model, clt, SaeSharp.Tokenizers.Tokenizer.FromFolder(_fx.ModelDir));
        Assert.Equal(0, LiveTensors.Leaked(() => inspector.Inspect(" cat sat on the mat", top: 4)));
    }

    [Fact]
    public void Bad_layers_and_a_hook_are_refused()
    {
        var (folder, _) = WriteClt(threshold: false);
        using var model = ModelLoader.FromPretrained(_fx.ModelDir);
        using var clt = CrossLayerTranscoderLoader.Load(folder);
        var w = Windows(2);
        Assert.Equal("layer 2: the cross-layer transcoder has layers 0..1", Assert.Throws<SaeSharpException>(() => FeatureAnalysis.Run(model, clt, w, Options, [2])).Message);
        Assert.Contains("listed twice", Assert.Throws<SaeSharpException>(() => FeatureAnalysis.Run(model, clt, w, Options, [1, 1])).Message);
        Assert.Contains("reads the hooks its files name", Assert.Throws<SaeSharpException>(() => FeatureAnalysis.Run(model, clt, w, Options with { Hook = "blocks.0.hook_resid_pre" })).Message);
        Assert.Equal("layers '0,4': 4 is outside 0..1", Assert.Throws<SaeSharpException>(() => FeatureSelection.Parse("0,4", 2, "layers")).Message);
    }

    [Fact]
    public void Inspect_ranks_the_features_of_all_layers_together_as_loops_in_double_do()
    {
        var (folder, r) = WriteClt(threshold: true, seed: 9);
        using var model = ModelLoader.FromPretrained(_fx.ModelDir);
        using var clt = CrossLayerTranscoderLoader.Load(folder);
        var tokenizer = SaeSharp.Tokenizers.Tokenizer.FromFolder(_fx.ModelDir);
        var inspector = new CrossLayerPromptInspector(model, clt, tokenizer);
        var view = inspector.Inspect(" cat sat on the mat and the dog ran", top: 5);
        Assert.Equal(tokenizer.BosTokenId, view.Tokens[0]);
        Assert.Equal(1, view.SkippedPrefix);

        // Hand: each layer's input from a plain run, features in double, summed over the tokens after BOS.
        var sums = new List<(int Layer, int Index, double Sum)>();
        using (var tokens = tensor(view.Tokens.Select(t => (long)t).ToArray()).unsqueeze(0))
        {
            var (logits, cache) = model.Run(tokens, new RunOptions { CacheNames = ["blocks.0.ln2.hook_normalized", "blocks.1.ln2.hook_normalized"] });
            logits?.Dispose();
            using (cache!)
                for (int l = 0; l < Layers; l++)
                {
                    var a = cache![$"blocks.{l}.ln2.hook_normalized"].to(ScalarType.Float64).reshape(-1, DModel).data<double>().ToArray();
                    var f = Enumerable.Range(1, view.Tokens.Length - 1).Select(p => r.Features(a.AsSpan(p * DModel, DModel).ToArray(), l)).ToList();
                    for (int k = 0; k < Features; k++) sums.Add((l, k, f.Sum(v => v[k])));
                }
        }
        var expected = sums.OrderByDescending(s => s.Sum).Take(5).ToList();
        Assert.Equal(expected.Select(e => $"L{e.Layer}/{e.Index}"), view.Features.Select(u => u.Label));
        foreach (var (e, u) in expected.Zip(view.Features)) Assert.Equal(e.Sum, u.Sum, 4);
        Assert.Contains(view.Features, u => u.Layer == 0);
        Assert.Contains(view.Features, u => u.Layer == 1);
        var json = view.ToJson()["features"]![0]!;
        Assert.Equal((expected[0].Layer, expected[0].Index), ((int)json["layer"]!, (int)json["feature"]!));
    }

    [Fact]
    public void Cli_features_writes_a_folder_per_layer_that_dashboard_and_neuronpedia_take()
    {
        var (folder, _) = WriteClt(threshold: true, seed: 5);
        string outDir = Path.Combine(_fx.Dir, "clt-feat"), site = Path.Combine(_fx.Dir, "clt-site"), np = Path.Combine(_fx.Dir, "clt-np");
        var (exit, stdout, err) = CliRunner.Run("features", "--sae", folder, "--model", _fx.ModelDir, "--dataset", _fx.DataPath,
            "--tokens", "96", "--context-size", "16", "--out", outDir, "--top", "4", "--batch-size", "2", "--html", site);
        Assert.True(exit == 0, err);
        Assert.Contains("layer 0 (blocks.0.ln2.hook_normalized): 10 features over 96 tokens", stdout);
        Assert.Contains("layer 1 (blocks.1.ln2.hook_normalized): 10 features over 96 tokens", stdout);

        // The library's pipeline on the same settings gives the numbers written.
        var lib = SaeSharp.Pipelines.AnalysisPipeline.CrossLayerFeatures(folder,
            new SaeSharp.Pipelines.ModelDataOptions { ModelPath = _fx.ModelDir, DatasetPath = _fx.DataPath, Tokens = 96, ContextSize = 16, BatchSizePrompts = 2 },
            new FeatureAnalysisOptions { Statistics = new FeatureStatisticsOptions { TopExamples = 4 } });
        foreach (var (layer, expected) in lib)
        {
            var written = FeatureReport.Load(Path.Combine(outDir, $"layer_{layer}"));
            Assert.Equal(expected.Features.Select(f => (f.Firings, f.MaxActivation)), written.Features.Select(f => (f.Firings, f.MaxActivation)));
            Assert.Equal(FeatureAnalysis.CrossLayerArchitecture, written.Source.Architecture);
            Assert.Equal(10, Directory.GetFiles(Path.Combine(site, $"layer_{layer}", "features"), "*.html").Length);
        }

        (exit, _, err) = CliRunner.Run("dashboard", "--features", Path.Combine(outDir, "layer_1"), "--out", Path.Combine(_fx.Dir, "clt-site1"));
        Assert.True(exit == 0, err);
        (exit, stdout, err) = CliRunner.Run("neuronpedia", "--features", Path.Combine(outDir, "layer_1"), "--out", np, "--np-set-name", "clt-hp", "--model-id", "tiny");
        Assert.True(exit == 0, err);
        var settings = JsonNode.Parse(File.ReadAllText(Path.Combine(np, "tiny_clt-hp_blocks.1.ln2.hook_normalized_10", "run_settings.json")))!;
        Assert.Equal(1, (int)settings["layer"]!);

        // --layers: only those folders.
        string only = Path.Combine(_fx.Dir, "clt-only1");
        (exit, _, err) = CliRunner.Run("features", "--sae", folder, "--model", _fx.ModelDir, "--dataset", _fx.DataPath,
            "--tokens", "32", "--context-size", "16", "--out", only, "--layers", "1", "--features", "0-2");
        Assert.True(exit == 0, err);
        Assert.Equal(["layer_1"], Directory.GetDirectories(only).Select(Path.GetFileName));
        Assert.Equal(3, File.ReadAllLines(Path.Combine(only, "layer_1", FeatureReport.FeaturesFile)).Length);
        (exit, _, err) = CliRunner.Run("features", "--sae", folder, "--model", _fx.ModelDir, "--dataset", _fx.DataPath, "--out", only, "--layers", "0,5");
        Assert.Equal(1, exit);
        Assert.Contains("layers '0,5': 5 is outside 0..1", err);
        (exit, _, err) = CliRunner.Run("features", "--sae", _fx.SaeDir, "--model", _fx.ModelDir, "--dataset", _fx.DataPath, "--out", only, "--layers", "0");
        Assert.Equal(1, exit);
        Assert.Contains("not a whole cross-layer transcoder", err);
    }

    [Fact]
    public void Cli_inspect_lists_features_across_layers()
    {
        var (folder, _) = WriteClt(threshold: true, seed: 9);
        string json = Path.Combine(_fx.Dir, "clt-inspect.json"), html = Path.Combine(_fx.Dir, "clt-inspect.html");
        var (exit, stdout, err) = CliRunner.Run("inspect", "--sae", folder, "--model", _fx.ModelDir, "--prompt", " cat sat on the mat and the dog ran",
            "--top", "5", "--json", json, "--html", html);
        Assert.True(exit == 0, err);
        Assert.Contains("blocks.{0..1}.ln2.hook_normalized", stdout);
        var features = JsonNode.Parse(File.ReadAllText(json))!["features"]!.AsArray();
        Assert.Equal(5, features.Count);
        foreach (var f in features) Assert.Contains($"feature L{(int)f!["layer"]!}/{(int)f["feature"]!}", stdout);
        Assert.Contains("feature L", File.ReadAllText(html));
        (exit, _, err) = CliRunner.Run("inspect", "--sae", folder, "--model", _fx.ModelDir, "--prompt", " cat", "--neurons");
        Assert.Equal(1, exit);
        Assert.Contains("--neurons: not for a whole cross-layer transcoder", err);
    }
    [Fact]
    public void Inspect_in_bfloat16_ranks_the_features_float32_ranks_with_sums_within_bfloat16_tolerance()
    {
        // `sae inspect --dtype bf16` of a CLT: the model and the CLT in bfloat16 (CrossLayerTranscoderLoader.ForModel).
        var (folder, _) = WriteClt(threshold: true, seed: 9);
        using var m32 = ModelLoader.FromPretrained(_fx.ModelDir);
        using var m16 = ModelLoader.FromPretrained(_fx.ModelDir, ScalarType.BFloat16);
        using var c32 = CrossLayerTranscoderLoader.Load(folder);
        using var c16 = CrossLayerTranscoderLoader.Load(folder, dtype: CrossLayerTranscoderLoader.ForModel(ScalarType.BFloat16));
        var tokenizer = SaeSharp.Tokenizers.Tokenizer.FromFolder(_fx.ModelDir);
        const string prompt = " cat sat on the mat and the dog ran";
        var a = new CrossLayerPromptInspector(m32, c32, tokenizer).Inspect(prompt, top: 5);
        var b = new CrossLayerPromptInspector(m16, c16, tokenizer).Inspect(prompt, top: 5);
        Assert.Equal(a.Tokens, b.Tokens);
        double scale = a.Features.Max(u => Math.Abs(u.Sum));
        Assert.True(scale > 0.1, "no feature fires");
        // The same top features (up to swaps of near-equal sums), each sum within ten bfloat16 steps of the largest.
        foreach (var u in b.Features)
        {
            var match = a.Features.FirstOrDefault(v => v.Index == u.Index && v.Layer == u.Layer);
            double expected = match?.Sum ?? a.Features.Min(v => v.Sum);
            Assert.True(Math.Abs(u.Sum - expected) <= 10.0 / 256 * scale, $"{u.Label}: {u.Sum} vs float32 {expected}");
        }
        Assert.Equal(a.Features[0].Label, b.Features[0].Label);
    }

    [Fact]
    public void A_clt_loaded_in_bfloat16_takes_half_the_memory_and_agrees_with_float32_within_bfloat16_tolerance()
    {
        var r = CltReference.Random(Layers, Features, DModel, 13, threshold: false, skip: true);
        string folder = Path.Combine(_fx.Dir, "clt-bf16");
        r.WriteCircuitTracer(folder, threshold: false);
        File.WriteAllText(Path.Combine(folder, "config.yaml"), "feature_input_hook: ln2.hook_normalized\nfeature_output_hook: hook_mlp_out\n");
        using var f32 = CrossLayerTranscoderLoader.Load(folder);
        using var bf16 = CrossLayerTranscoderLoader.Load(folder, dtype: ScalarType.BFloat16);
        static long Bytes(CrossLayerTranscoder c) => c.parameters().Sum(p => p.numel() * p.element_size());
        Assert.All(bf16.parameters(), p => Assert.Equal(ScalarType.BFloat16, p.dtype));
        Assert.Equal(Bytes(f32), 2 * Bytes(bf16));
        Assert.Equal(ScalarType.BFloat16, CrossLayerTranscoderLoader.ForModel(ScalarType.BFloat16));
        Assert.Equal(ScalarType.Float32, CrossLayerTranscoderLoader.ForModel(null));

        // bfloat16 keeps 8 significant bits (relative step 2^-8 ≈ 0.004): over 16-term dot products of O(0.5) values, the
        // features and reconstructions agree with float32 to a few hundredths.
        using var x = randn(Layers, 8, DModel, generator: new Generator(2));
        using var a = f32.forward(x);
        using var b = bf16.forward(x).to(ScalarType.Float32);
        Assert.True(a.allclose(b, rtol: 0.03, atol: 0.05), $"max |Δ| {(a - b).abs().max().item<float>()}");
        using var fa = f32.EncodeLayer(x[1], 1);
        using var fb = bf16.EncodeLayer(x[1], 1).to(ScalarType.Float32);
        Assert.True(fa.allclose(fb, rtol: 0.03, atol: 0.03), $"max |Δ| {(fa - fb).abs().max().item<float>()}");

        // The pipeline with the model in bfloat16 loads the CLT in bfloat16; its statistics agree with float32's.
        var data = new SaeSharp.Pipelines.ModelDataOptions { ModelPath = _fx.ModelDir, DatasetPath = _fx.DataPath, Tokens = 64, ContextSize = 16 };
        var o = new FeatureAnalysisOptions { Statistics = new FeatureStatisticsOptions { TopExamples = 2 } };
        var full = SaeSharp.Pipelines.AnalysisPipeline.CrossLayerFeatures(folder, data, o);
        var half = SaeSharp.Pipelines.AnalysisPipeline.CrossLayerFeatures(folder, data with { ModelDtype = ScalarType.BFloat16 }, o);
        foreach (var ((_, p), (_, q)) in full.Zip(half))
            foreach (var (u, v) in p.Features.Zip(q.Features))
                Assert.True(Math.Abs(u.MaxActivation - v.MaxActivation) <= 0.05 * Math.Abs(u.MaxActivation) + 0.05,
                    $"feature {u.Feature}: max {u.MaxActivation} in float32, {v.MaxActivation} in bfloat16");

        // sae eval of the replacement model in bfloat16 (model and CLT): the CE with the CLT close to float32's, and the error
        // terms still give back the clean run exactly.
        var e32 = SaeSharp.Pipelines.ModelPipeline.EvaluateReplacement(folder, data);
        var e16 = SaeSharp.Pipelines.ModelPipeline.EvaluateReplacement(folder, data with { ModelDtype = ScalarType.BFloat16 });
        Assert.True(Math.Abs(e32.CeLossWithSae - e16.CeLossWithSae) <= 0.02 * e32.CeLossWithSae, $"CE with CLT {e32.CeLossWithSae} vs {e16.CeLossWithSae}");
        Assert.Equal(e16.CeLossWithoutSae, e16.CeLossWithErrorTerm);
    }
}
