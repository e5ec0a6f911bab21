using System.Text.Json.Nodes;
using SaeSharp.Interop;
using SaeSharp.Interventions;
using SaeSharp.IO;
using SaeSharp.Models;
using SaeSharp.Tests.Analysis;
using SaeSharp.Tests.Interventions;
using SaeSharp.Cli.Commands;
using static TorchSharp.torch;

namespace SaeSharp.Tests.Cli;

/// <summary><c>sae model run --sae</c>, <c>sae steer</c>, <c>sae ablate</c>, <c>sae attribute</c> against the library and hand-written hooks.</summary>
public class InterventionCommandTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("cli-interv-").FullName;
    public void Dispose() => Directory.Delete(_dir, true);

    private string P(string name) => Path.Combine(_dir, name);

    private (string Model, string Sae, string Input, Tensor Tokens) Setup(string hook = "blocks.0.hook_resid_post")
    {
        var model = TinyModels.WriteGpt2(P("m"), seed: 3, nLayer: 2, nEmbd: 16, nHead: 4, vocab: 64);
        using var sae = InterventionTests.RandomSae(hook, 16, 32, 9, encBias: 0.1);
        SaeLensFormat.Save(sae, P("sae"));
        var tokens = tensor(new long[] { 1, 5, 9, 2, 7, 7, 3, 0 }).reshape(2, 4);
        SafeTensors.Save(P("in.safetensors"), new Dictionary<string, Tensor> { ["tokens"] = tokens });
        return (model, P("sae"), P("in.safetensors"), tokens);
    }

    /// <summary><c>model run --prompt</c>: the built-in model's word-level vocabulary gives the ids by hand (BOS
    /// <c>&lt;|endoftext|&gt;</c> first, as TransformerLens's run_with_cache(text)); the logits are those of a run on
    /// those ids; <c>--no-prepend-bos</c> drops the BOS; --prompt with --input, or neither, is refused.</summary>
    [Fact]
    public void ModelRunOnAPromptRunsItsTokensAndSavesThem()
    {
        string[] words = ["Mia", "had", "a", "dog", "."];
        var vocab = SaeSharp.Corpus.LabelledCorpus.Vocabulary.ToList();
        long[] expected = [vocab.IndexOf(SaeSharp.Corpus.LabelledCorpus.EndOfText), .. words.Select(w => (long)vocab.IndexOf(w))];
        Assert.DoesNotContain(-1L, expected);
        var (exit, stdout, err) = CliRunner.Run("model", "run", "--model", "builtin", "--prompt", string.Join(' ', words), "--out", P("p.safetensors"),
            "--hooks", "blocks.0.hook_resid_post");
        Assert.True(exit == 0, err);
        var f = SafeTensors.Load(P("p.safetensors"));
        Assert.Equal(expected, f["tokens"].data<long>().ToArray());
        Assert.Contains("tokens [1, 6]", stdout);
        using var m = ModelLoader.FromPretrained(SaeSharp.LanguageModels.BuiltinModel.Folder);
        using var ids = tensor(expected).unsqueeze(0);
        Assert.True(f["logits"].allclose(m.Forward(ids), rtol: 1e-5, atol: 1e-5));

        (exit, _, err) = CliRunner.Run("model", "run", "--model", "builtin", "--prompt", string.Join(' ', words), "--no-prepend-bos", "--out", P("n.safetensors"));
        Assert.True(exit == 0, err);
        Assert.Equal(expected[1..], SafeTensors.Load(P("n.safetensors"))["tokens"].data<long>().ToArray());

        var (_, _, both) = CliRunner.Run("model", "run", "--model", "builtin", "--prompt", "Mia", "--input", P("x.safetensors"), "--out", P("b.safetensors"));
        Assert.Contains("give one of --prompt and --input", both);
        var (_, _, neither) = CliRunner.Run("model", "run", "--model", "builtin", "--out", P("b.safetensors"));
        Assert.Contains("give --input", neither);
        Assert.False(File.Exists(P("b.safetensors")));
    }

    /// <summary><c>sae encode</c> reads what <c>sae model run --hooks H</c> saves: a [batch, seq, d] tensor named H (no
    /// <c>activations</c> tensor), picked by the SAE's hook_name or by <c>--tensor</c>, read position by position. Its
    /// feature_acts equal the hook_sae_acts_post that <c>model run --sae</c> saves for the same prompt (the splice's own path).</summary>
    [Fact]
    public void EncodeReadsAModelRunHookTensor()
    {
        const string hook = "blocks.1.hook_resid_pre", text = "Mia had a dog .";
        int dModel;
        using (var m = SaeSharp.LanguageModels.BuiltinModel.Load()) dModel = m.Config.DModel;
        using (var sae = InterventionTests.RandomSae(hook, dModel, 24, 5, encBias: 0.05)) SaeLensFormat.Save(sae, P("sae"));
        var (exit, _, err) = CliRunner.Run("model", "run", "--model", "builtin", "--prompt", text, "--out", P("run.safetensors"), "--hooks", hook);
        Assert.True(exit == 0, err);
        (exit, _, err) = CliRunner.Run("model", "run", "--model", "builtin", "--prompt", text, "--out", P("spliced.safetensors"), "--sae", P("sae"),
            "--error-term", "--hooks", $"{hook}.hook_sae_acts_post");
        Assert.True(exit == 0, err);
        var expected = SafeTensors.Load(P("spliced.safetensors"))[$"{hook}.hook_sae_acts_post"];   // [1, 6, 24]
        Assert.Equal([1L, 6, 24], expected.shape);

        (exit, var stdout, err) = CliRunner.Run("encode", "--sae", P("sae"), "--activations", P("run.safetensors"), "--out", P("enc.safetensors"));
        Assert.True(exit == 0, err);
        Assert.Contains("encoded 6 rows", stdout);
        var f = SafeTensors.Load(P("enc.safetensors"))["feature_acts"];
        Assert.Equal([6L, 24], f.shape);
        Assert.True(f.allclose(expected.reshape(6, 24), rtol: 1e-4, atol: 1e-5));

        // --tensor names it (a copy of the file whose hook tensor has another name); a missing name is refused, naming the file's tensors.
        var run = SafeTensors.Load(P("run.safetensors"));
        SafeTensors.Save(P("renamed.safetensors"), new Dictionary<string, Tensor> { ["logits"] = run["logits"], ["resid"] = run[hook] });
        (exit, _, err) = CliRunner.Run("encode", "--sae", P("sae"), "--activations", P("renamed.safetensors"), "--out", P("enc2.safetensors"), "--tensor", "resid");
        Assert.True(exit == 0, err);
        Assert.True(SafeTensors.Load(P("enc2.safetensors"))["feature_acts"].allclose(f));
        (exit, _, err) = CliRunner.Run("encode", "--sae", P("sae"), "--activations", P("renamed.safetensors"), "--out", P("enc3.safetensors"));
        Assert.NotEqual(0, exit);
        Assert.Contains($"no tensor named 'activations' or '{hook}' (or '{hook}.0', '{hook}.1', ...) (has: logits, resid)", err.ReplaceLineEndings(" "));
        Assert.False(File.Exists(P("enc3.safetensors")));
    }

    [Fact]
    public void ModelRunSplicesSaesWithTheirHookPointsAndInterventions()
    {
        var (model, saeDir, input, tokens) = Setup();
        using var m = ModelLoader.FromPretrained(model);
        using var sae = SaeLoader.Load(saeDir);
        string hook = "blocks.0.hook_resid_post";
        var clean = m.Forward(tokens);

        // --error-term: logits equal the clean run's, and SAE hook points are saved.
        var (exit, stdout, err) = CliRunner.Run("model", "run", "--model", model, "--input", input, "--out", P("e.safetensors"), "--sae", saeDir,
            "--error-term", "--hooks", $"{hook}.hook_sae_acts_post,{hook}.hook_sae_error,blocks.1.hook_resid_pre");
        Assert.True(exit == 0, err);
        // It says what it wrote (it used to print nothing): the file, the logits' shape and the number of hooks saved.
        Assert.Equal($"wrote {P("e.safetensors")}: logits [{tokens.shape[0]}, {tokens.shape[1]}, {clean.shape[2]}] and 3 hook tensors", stdout.Trim());
        var e = SafeTensors.Load(P("e.safetensors"));
        Assert.True(e["logits"].allclose(clean, rtol: 1e-4, atol: 1e-4));
        var (_, cache) = m.RunWithCache(tokens, [hook]);
        using (cache)
        {
            var f = InterventionTests.HandFeatures(sae, cache[hook]);
            Assert.True(e[$"{hook}.hook_sae_acts_post"].to(ScalarType.Float64).allclose(f, rtol: 1e-4, atol: 1e-5));
            // --ablate with the error term: x − Σ f_F·W_dec[F].
            var delta = (-(f[.., .., 3].unsqueeze(-1) * InterventionTests.DecoderRow(sae, 3)) - f[.., .., 8].unsqueeze(-1) * InterventionTests.DecoderRow(sae, 8)).to(ScalarType.Float32);
            (exit, _, err) = CliRunner.Run("model", "run", "--model", model, "--input", input, "--out", P("a.safetensors"), "--sae", saeDir,
                "--error-term", "--ablate", "3,8");
            Assert.True(exit == 0, err);
            Assert.True(SafeTensors.Load(P("a.safetensors"))["logits"].allclose(m.RunWithHooks(tokens, (hook, x => x + delta)), rtol: 1e-4, atol: 1e-4));
        }

        // No intervention and no --error-term: the reconstruction replaces the activation.
        (exit, _, err) = CliRunner.Run("model", "run", "--model", model, "--input", input, "--out", P("r.safetensors"), "--sae", saeDir);
        Assert.True(exit == 0, err);
        Assert.True(SafeTensors.Load(P("r.safetensors"))["logits"].allclose(m.RunWithHooks(tokens, (hook, x => sae.forward(x))), rtol: 1e-4, atol: 1e-4));

        // --steer without --error-term adds S·W_dec[F] to the raw activation.
        var v = (InterventionTests.DecoderRow(sae, 4) * 2.5).to(ScalarType.Float32);
        (exit, _, err) = CliRunner.Run("model", "run", "--model", model, "--input", input, "--out", P("s.safetensors"), "--sae", saeDir, "--steer", "4:2.5");
        Assert.True(exit == 0, err);
        Assert.True(SafeTensors.Load(P("s.safetensors"))["logits"].allclose(m.RunWithHooks(tokens, (hook, x => x + v)), rtol: 1e-4, atol: 1e-4));

        // --positions 1: the vector is added at position 1 only (the same as a raw hook adding it there).
        (exit, _, err) = CliRunner.Run("model", "run", "--model", model, "--input", input, "--out", P("sp.safetensors"), "--sae", saeDir, "--steer", "4:2.5", "--positions", "1");
        Assert.True(exit == 0, err);
        var atOne = zeros_like(clean[.., .., 0]).unsqueeze(-1).expand(-1, -1, v.shape[^1]).clone();
        atOne[.., 1] = v.expand(atOne.shape[0], -1);
        var stepped = SafeTensors.Load(P("sp.safetensors"))["logits"];
        Assert.True(stepped.allclose(m.RunWithHooks(tokens, (hook, x => x + atOne)), rtol: 1e-4, atol: 1e-4));
        Assert.True(stepped[.., 0].allclose(clean[.., 0], rtol: 1e-5, atol: 1e-5), "a causal model's position 0 is untouched by steering at 1");
        Assert.False(stepped[.., 1].allclose(clean[.., 1], rtol: 1e-4, atol: 1e-4));
        (exit, _, err) = CliRunner.Run("model", "run", "--model", model, "--input", input, "--out", P("bad.safetensors"), "--sae", saeDir, "--steer", "4:2.5", "--positions", "x");
        Assert.Equal(1, exit);
        Assert.Contains("--positions 'x'", err);

        (exit, _, err) = CliRunner.Run("model", "run", "--model", model, "--input", input, "--out", P("x.safetensors"), "--sae", saeDir, "--clamp", "4");
        Assert.Equal(1, exit);
        Assert.Contains("--clamp '4'", err);
        (exit, _, err) = CliRunner.Run("model", "run", "--model", model, "--input", input, "--out", P("x.safetensors"), "--sae", saeDir, "--sae-index", "1", "--ablate", "1");
        Assert.Equal(1, exit);
        Assert.Contains("--sae-index 1", err);
    }

    /// <summary><c>--sae-index 1</c> aims the interventions at the second --sae, and <c>--ablate-mode mean</c> sets the
    /// ablated feature to its mean over the input's tokens: with --error-term the logits are those of a raw hook adding
    /// (mean − f)·W_dec[F] of the second SAE at its hook, written out here.</summary>
    [Fact]
    public void ModelRunSaeIndexAndMeanAblationApplyToTheChosenSae()
    {
        var (model, saeDir, input, tokens) = Setup();
        string hook2 = "blocks.1.hook_resid_post";
        using (var second = InterventionTests.RandomSae(hook2, 16, 24, 11, encBias: 0.1))
            SaeLensFormat.Save(second, P("sae2"));
        using var m = ModelLoader.FromPretrained(model);
        using var sae2 = SaeLoader.Load(P("sae2"));
        var (_, cache) = m.RunWithCache(tokens, [hook2]);
        Tensor delta;
        using (cache)
        {
            var f = InterventionTests.HandFeatures(sae2, cache[hook2]);
            var mean = f[.., .., 3].mean();
            Assert.True(mean.item<double>() > 1e-3, "the feature fires, so mean- and zero-ablation differ");
            delta = ((mean - f[.., .., 3]).unsqueeze(-1) * InterventionTests.DecoderRow(sae2, 3)).to(ScalarType.Float32);
        }
        var (exit, _, err) = CliRunner.Run("model", "run", "--model", model, "--input", input, "--out", P("i.safetensors"), "--sae", saeDir, "--sae", P("sae2"),
            "--error-term", "--sae-index", "1", "--ablate", "3", "--ablate-mode", "mean");
        Assert.True(exit == 0, err);
        var expected = m.RunWithHooks(tokens, (hook2, x => x + delta));
        Assert.True(SafeTensors.Load(P("i.safetensors"))["logits"].allclose(expected, rtol: 1e-4, atol: 1e-4));
    }

    [Fact]
    public void ModelRunAttributeAndAblateRunTheModelProcessedAsTheSaeRecords()
    {
        // An SAE trained on GPT-2 with center_writing_weights (its cfg's model_from_pretrained_kwargs, as sae train
        // --center-writing-weights writes it): its hook's activation is the processed model's, whose residual stream
        // has each write's mean removed (for GPT-2 partly by a hook_embed hook), as sae eval, features and inspect run it.
        var (model, _, input, tokens) = Setup();
        string hook = "blocks.0.hook_resid_post";
        using (var s = InterventionTests.RandomSae(hook, 16, 32, 9, encBias: 0.1))
        {
            s.Cfg.Metadata.ModelFromPretrainedKwargs = new() { ["center_writing_weights"] = System.Text.Json.JsonSerializer.SerializeToElement(true) };
            SaeLensFormat.Save(s, P("cww"));
        }
        using var sae = SaeLoader.Load(P("cww"));
        using var pm = SaeSharp.Pipelines.ModelForSae.Load(model, new WeightProcessingOptions { CenterWritingWeights = true });
        var (_, cache) = pm.Model.Run(tokens, new RunOptions { Hooks = pm.Hooks, CacheNames = [hook] });
        Tensor f;
        using (cache) f = InterventionTests.HandFeatures(sae, cache![hook]);
        using (var raw = ModelLoader.FromPretrained(model))
        {
            var (_, rawCache) = raw.RunWithCache(tokens, [hook]);
            using (rawCache)
                Assert.False(InterventionTests.HandFeatures(sae, rawCache[hook]).allclose(f, rtol: 1e-3, atol: 1e-3), "the processing changes the features");
        }

        // model run --sae: the SAE's features at its hook point are the processed model's.
        var (exit, _, err) = CliRunner.Run("model", "run", "--model", model, "--input", input, "--out", P("cww.safetensors"), "--sae", P("cww"),
            "--error-term", "--hooks", $"{hook}.hook_sae_acts_post");
        Assert.True(exit == 0, err);
        Assert.True(SafeTensors.Load(P("cww.safetensors"))[$"{hook}.hook_sae_acts_post"].to(ScalarType.Float64).allclose(f, rtol: 1e-4, atol: 1e-5));

        // attribute: the activations it reports are the processed model's features.
        (exit, _, err) = CliRunner.Run("attribute", "--model", model, "--sae", P("cww"), "--input", input, "--metric", "loss",
            "--top", "10", "--json", P("cww.json"));
        Assert.True(exit == 0, err);
        var rows = JsonNode.Parse(File.ReadAllText(P("cww.json")))!["top"]!.AsArray();
        Assert.Equal(10, rows.Count);
        foreach (var row in rows)
            Assert.Equal(f[(int)row!["batch"]!, (int)row["position"]!, (int)row["feature"]!].item<double>(), (double)row["activation"]!, 4);

        // ablate --mode mean: each feature's mean is taken over the processed model's features.
        var means = f.mean([0, 1]);
        Assert.Equal(means[3].item<double>(), Ablation.FeatureMeans(pm.Model, sae, [tokens], modelHooks: pm.Hooks)[3].item<float>(), 4);
    }

    [Fact]
    public void AttributeOnAWholeCltWritesOneEntryPerLayerLabelledAsInspectDoes()
    {
        var (model, _, input, tokens) = Setup();
        var r0 = SaeSharp.Tests.Saes.CltReference.Random(2, 12, 16, 5, threshold: true, skip: true);
        r0.WriteCircuitTracer(P("clt"), threshold: true);
        File.WriteAllText(P("clt/config.yaml"), "feature_input_hook: ln2.hook_normalized\nfeature_output_hook: hook_mlp_out\n");
        var (exit, output, err) = CliRunner.Run("attribute", "--model", model, "--sae", P("clt"), "--input", input, "--metric", "logit-diff:5,9",
            "--freeze-attention-and-norms", "--top", "4", "--out", P("clt.safetensors"), "--json", P("clt.json"), "--html", P("clt.html"));
        Assert.True(exit == 0, err);
        Assert.Contains("layer 1 at blocks.1.hook_mlp_out", output);
        using var m = ModelLoader.FromPretrained(model);
        using var clt = CrossLayerTranscoderLoader.Load(P("clt"));
        using var r = FeatureAttribution.Run(m, clt, tokens, AttributionMetric.LogitDiff(5, 9), freezeAttentionAndNorms: true);
        var o = SafeTensors.Load(P("clt.safetensors"));
        for (int l = 0; l < 2; l++)
        {
            Assert.True(o[$"attribution.{l}"].allclose(r.Attribution[l], rtol: 1e-5, atol: 1e-6), $"layer {l}");
            Assert.True(o[$"error_attribution.{l}"].allclose(r.ErrorAttribution[l], rtol: 1e-5, atol: 1e-6), $"layer {l} errors");
        }
        var json = JsonNode.Parse(File.ReadAllText(P("clt.json")))!;
        var best = r.Top(1)[0];
        Assert.Equal($"L{best.Sae}/{best.Feature}", (string)json["top"]![0]!["feature_label"]!);
        Assert.True((bool)json["cross_layer"]! && (bool)json["freeze_attention_and_norms"]!);
        Assert.Contains($"feature L{best.Sae}/{best.Feature}", File.ReadAllText(P("clt.html")));
        Assert.Contains($"L{best.Sae}/{best.Feature}", output);

        // --ig-steps: the library's integrated gradients over every layer's features; --dtype bf16: the model and the CLT in
        // bfloat16, the results float32's to bfloat16 precision.
        (exit, _, err) = CliRunner.Run("attribute", "--model", model, "--sae", P("clt"), "--input", input, "--metric", "loss", "--ig-steps", "2",
            "--out", P("ig.safetensors"));
        Assert.True(exit == 0, err);
        using (var ig = FeatureAttribution.Run(m, clt, tokens, AttributionMetric.Loss, 2))
        {
            var o2 = SafeTensors.Load(P("ig.safetensors"));
            using (var file = SafeTensorsFile.Open(P("ig.safetensors"))) Assert.Equal("2", file.Metadata["integrated_gradient_steps"]);
            for (int l = 0; l < 2; l++)
                Assert.True(o2[$"attribution.{l}"].allclose(ig.Attribution[l], rtol: 1e-5, atol: 1e-6), $"layer {l} integrated gradients");
        }
        (exit, _, err) = CliRunner.Run("attribute", "--model", model, "--sae", P("clt"), "--input", input, "--metric", "loss", "--ig-steps", "2",
            "--ig-errors", "--out", P("ig-errors.safetensors"));
        Assert.Equal(1, exit);
        Assert.Contains("--ig-errors: for SAEs", err);
        Assert.False(File.Exists(P("ig-errors.safetensors")));
        (exit, _, err) = CliRunner.Run("attribute", "--model", model, "--sae", P("clt"), "--input", input, "--metric", "logit-diff:5,9",
            "--freeze-attention-and-norms", "--dtype", "bf16", "--out", P("bf16.safetensors"));
        Assert.True(exit == 0, err);
        var o16 = SafeTensors.Load(P("bf16.safetensors"));
        for (int l = 0; l < 2; l++)
        {
            double scale = r.Attribution[l].abs().max().item<float>();
            double diff = (o16[$"attribution.{l}"] - r.Attribution[l]).abs().max().item<float>();
            Assert.True(diff <= 10.0 / 256 * scale, $"layer {l} in bfloat16: differs by {diff} of {scale}");
        }
        (exit, _, err) = CliRunner.Run("attribute", "--model", model, "--sae", P("clt"), "--sae", P("clt"), "--input", input, "--metric", "loss");
        Assert.NotEqual(0, exit);
        Assert.Contains("on its own", err);
    }

    /// <summary><see cref="Setup"/>, a random 2-layer CLT of 12 features reading ln2's output at P("clt"), and the
    /// second token row alone in P("one.safetensors") (a graph is of one prompt).</summary>
    private (string Model, string Sae, string Input, Tensor Tokens, Tensor Row) GraphSetup()
    {
        var (model, sae, input, tokens) = Setup();
        var r0 = SaeSharp.Tests.Saes.CltReference.Random(2, 12, 16, 5, threshold: true, skip: true);
        r0.ScaleThresholds(0.2);
        r0.WriteCircuitTracerLn2(P("clt"));
        var row = tokens.narrow(0, 1, 1).clone();
        SafeTensors.Save(P("one.safetensors"), new Dictionary<string, Tensor> { ["tokens"] = row });
        return (model, sae, input, tokens, row);
    }

    [Fact]
    public void GraphWritesTheLibrarysPrunedGraphAsViewerJson()
    {
        var (model, _, input, _, row) = GraphSetup();
        var (exit, output, err) = CliRunner.Run("graph", "--model", model, "--sae", P("clt"), "--input", P("one.safetensors"), "--out", P("graphs/g.json"),
            "--max-logits", "3", "--logit-prob", "0.99", "--node-threshold", "0.9", "--edge-threshold", "0.95", "--batch-size", "5");
        Assert.True(exit == 0, err);
        Assert.Contains("direct effects on the centred logit", output);
        Assert.Contains("replacement score", output);

        using var m = ModelLoader.FromPretrained(model);
        using var clt = CrossLayerTranscoderLoader.Load(P("clt"));
        using var g = AttributionGraph.Build(m, clt, row, new AttributionGraphOptions { MaxLogits = 3, LogitProbability = 0.99 });
        var pruned = g.Prune(0.9, 0.95);
        var json = JsonNode.Parse(File.ReadAllText(P("graphs/g.json")))!;
        Assert.Equal("g", (string?)json["metadata"]!["slug"]);
        Assert.Equal("gpt2", (string?)json["metadata"]!["scan"]);
        var links = json["links"]!.AsArray();
        var expected = g.ToJson(pruned, id => id.ToString(System.Globalization.CultureInfo.InvariantCulture), "", "g", "gpt2", 0.9)["links"]!.AsArray();
        Assert.Equal(expected.Count, links.Count);
        for (int i = 0; i < links.Count; i++)
        {
            Assert.Equal((string?)expected[i]!["source"], (string?)links[i]!["source"]);
            Assert.Equal((string?)expected[i]!["target"], (string?)links[i]!["target"]);
            Assert.Equal((double)expected[i]!["weight"]!, (double)links[i]!["weight"]!, 5);
        }
        Assert.True(File.Exists(P("graphs/graph-metadata.json")));

        // --dtype bf16: the model and the CLT in bfloat16 (AttributionGraphTests compares such a graph with float32's).
        (exit, output, err) = CliRunner.Run("graph", "--model", model, "--sae", P("clt"), "--input", P("one.safetensors"), "--out", P("graphs/bf16.json"),
            "--max-logits", "3", "--dtype", "bf16");
        Assert.True(exit == 0, err);
        Assert.Contains("replacement score", output);
        Assert.True(JsonNode.Parse(File.ReadAllText(P("graphs/bf16.json")))!["nodes"]!.AsArray().Count > 3);

        (exit, _, err) = CliRunner.Run("graph", "--model", model, "--sae", P("clt"), "--input", input, "--out", P("g2.json"));
        Assert.NotEqual(0, exit);
        Assert.Contains("one prompt", err);
        Assert.False(File.Exists(P("g2.json")));
    }

    [Fact]
    public void GraphRefusesBadThresholdsFoldersAndGraphListsBeforeItsWork()
    {
        GraphSetup();
        string[] Graph(string outPath, params string[] more) =>
            ["graph", "--model", P("m"), "--sae", P("clt"), "--input", P("one.safetensors"), "--out", outPath, .. more];
        // NaN is outside [0, 1] (it passed "< 0 or > 1" and failed only when writing the JSON, after the whole graph).
        var (exit, _, err) = CliRunner.Run(Graph(P("graphs/n.json"), "--node-threshold", "NaN"));
        Assert.NotEqual(0, exit);
        Assert.Contains("--node-threshold must be between 0 and 1, got NaN", err);
        (exit, _, err) = CliRunner.Run(Graph(P("graphs/n.json"), "--edge-threshold", "1.01"));
        Assert.NotEqual(0, exit);
        Assert.Contains("--edge-threshold must be between 0 and 1, got 1.01", err);
        Assert.False(Directory.Exists(P("graphs")));

        // --out a folder is create_graph_files' output_path: it takes --slug (the file's name), which it needs.
        Directory.CreateDirectory(P("graphs"));
        (exit, _, err) = CliRunner.Run(Graph(P("graphs")));
        Assert.NotEqual(0, exit);
        Assert.Contains($"--out {P("graphs")}: a folder; give --slug NAME to write NAME.json there", err);
        (exit, _, err) = CliRunner.Run(Graph(P("graphs"), "--slug", "../up"));
        Assert.NotEqual(0, exit);
        Assert.Contains("--slug '../up': the graph's file name in --out, without '/'", err);
        Assert.Empty(Directory.EnumerateFileSystemEntries(P("graphs")));

        // A graph-metadata.json the graph cannot join: named before any work, the earlier graph file kept.
        File.WriteAllText(P("graphs/g.json"), "earlier graph");
        File.WriteAllText(P("graphs/graph-metadata.json"), "{\"graphs\": [1]}");
        (exit, _, err) = CliRunner.Run(Graph(P("graphs/g.json")));
        Assert.NotEqual(0, exit);
        Assert.Contains($"{P("graphs/graph-metadata.json")}: graphs[0] is not a graph's metadata", err);
        Assert.Equal("earlier graph", File.ReadAllText(P("graphs/g.json")));

        // The viewer loads graph_data/{slug}.json: a file of another name (or not .json) could be listed but never opened.
        File.Delete(P("graphs/graph-metadata.json"));
        (exit, _, err) = CliRunner.Run(Graph(P("graphs/g.json"), "--slug", "capital"));
        Assert.NotEqual(0, exit);
        Assert.Contains($"{P("graphs/g.json")}: the slug 'capital' is not the file name: circuit-tracer's viewer would look for capital.json", err);
        (exit, _, err) = CliRunner.Run(Graph(P("graphs/g.txt")));
        Assert.NotEqual(0, exit);
        Assert.Contains($"{P("graphs/g.txt")}: circuit-tracer's viewer loads a graph from SLUG.json", err);
        Assert.Equal("earlier graph", File.ReadAllText(P("graphs/g.json")));
        Assert.False(File.Exists(P("graphs/graph-metadata.json")));
        Assert.False(File.Exists(P("graphs/g.txt")));

        // --out FOLDER --slug NAME writes FOLDER/NAME.json, the same graph as --out FOLDER/NAME.json, and lists it.
        (exit, _, err) = CliRunner.Run(Graph(P("graphs"), "--slug", "capital"));
        Assert.True(exit == 0, err);
        (exit, _, err) = CliRunner.Run(Graph(P("graphs/same.json")));
        Assert.True(exit == 0, err);
        var byFolder = JsonNode.Parse(File.ReadAllText(P("graphs/capital.json")))!;
        var byFile = JsonNode.Parse(File.ReadAllText(P("graphs/same.json")))!;
        Assert.Equal("capital", (string?)byFolder["metadata"]!["slug"]);
        Assert.Equal(byFile["links"]!.ToJsonString(), byFolder["links"]!.ToJsonString());
        var listed = JsonNode.Parse(File.ReadAllText(P("graphs/graph-metadata.json")))!["graphs"]!.AsArray().Select(g => (string?)g!["slug"]).ToList();
        Assert.Equal(["capital", "same"], listed);
    }

    [Fact]
    public void GraphTargetsAreTheLibrarysAttributionTargets()
    {
        var (model, _, _, _, row) = GraphSetup();
        var (exit, output, err) = CliRunner.Run("graph", "--model", model, "--sae", P("clt"), "--input", P("one.safetensors"), "--out", P("graphs/t.json"),
            "--target", "logit-diff:3,7", "--target", "logit:7");
        Assert.True(exit == 0, err);
        Assert.Contains("direct effects on logit(3)-logit(7)", output);

        using var m = ModelLoader.FromPretrained(model);
        using var clt = CrossLayerTranscoderLoader.Load(P("clt"));
        using var g = AttributionGraph.Build(m, clt, row, new AttributionGraphOptions { Targets = [AttributionTarget.LogitDifference(3, 7), AttributionTarget.Token(7)] });
        var expected = g.ToJson(g.Prune(), id => id.ToString(System.Globalization.CultureInfo.InvariantCulture), "", "t", "gpt2");
        var json = JsonNode.Parse(File.ReadAllText(P("graphs/t.json")))!;
        string[] Logits(JsonNode j) => j["nodes"]!.AsArray().Where(n => (string?)n!["feature_type"] == "logit").Select(n => (string)n!["node_id"]! + " " + (string)n!["clerp"]!).ToArray();
        Assert.Equal(Logits(expected), Logits(json));
        Assert.StartsWith($"3_{m.Config.DVocab}_", Logits(json)[0]);
        Assert.Equal(expected["links"]!.AsArray().Count, json["links"]!.AsArray().Count);

        (exit, _, err) = CliRunner.Run("graph", "--model", model, "--sae", P("clt"), "--input", P("one.safetensors"), "--out", P("graphs/u.json"),
            "--target", "logit:7", "--max-logits", "3");
        Assert.NotEqual(0, exit);
        Assert.Contains("--target lists the logit nodes itself", err);
        (exit, _, err) = CliRunner.Run("graph", "--model", model, "--sae", P("clt"), "--input", P("one.safetensors"), "--out", P("graphs/u.json"),
            "--target", "logit-diff:3");
        Assert.NotEqual(0, exit);
        Assert.Contains("two tokens", err);
        Assert.False(File.Exists(P("graphs/u.json")));
    }

    [Fact]
    public void GraphVectorTargetFromAFileIsTheLogitDifferenceItsVectorIs()
    {
        // vector:PATH holding W_U[3] − W_U[7] is logit(3) − logit(7) read at the final norm: with one target the graph
        // (nodes, links and their weights) is the logit-diff graph's whatever the target's weight, since pruning keeps
        // shares of the influence; only the logit node's label and weight differ.
        var (model, _, _, _, row) = GraphSetup();
        using (var m = ModelLoader.FromPretrained(model))
        using (var wu = m.UnembedWeight())
        using (var v = wu[3] - wu[7])
        {
            Npy.Save(P("a_minus_b.npy"), v);
            SafeTensors.Save(P("two.safetensors"), new Dictionary<string, Tensor> { ["v"] = v, ["w"] = v });
            SafeTensors.Save(P("short.safetensors"), new Dictionary<string, Tensor> { ["v"] = v.narrow(0, 0, 5) });
        }
        var (exit, _, err) = CliRunner.Run("graph", "--model", model, "--sae", P("clt"), "--input", P("one.safetensors"), "--out", P("graphs/d.json"),
            "--target", "logit-diff:3,7");
        Assert.True(exit == 0, err);
        (exit, var output, err) = CliRunner.Run("graph", "--model", model, "--sae", P("clt"), "--input", P("one.safetensors"), "--out", P("graphs/v.json"),
            "--target", $"vector:{P("a_minus_b.npy")}@0.3");
        Assert.True(exit == 0, err);
        Assert.Contains("direct effects on a_minus_b", output);
        var (d, v2) = (JsonNode.Parse(File.ReadAllText(P("graphs/d.json")))!, JsonNode.Parse(File.ReadAllText(P("graphs/v.json")))!);
        string[] Links(JsonNode j) => j["links"]!.AsArray().Select(l => $"{l!["source"]} {l["target"]} {(double)l["weight"]!:R}").Order().ToArray();
        string[] Nodes(JsonNode j) => j["nodes"]!.AsArray().Select(n => (string)n!["node_id"]!).Order().ToArray();
        Assert.Equal(Nodes(d), Nodes(v2));
        Assert.Equal(Links(d), Links(v2));
        var logit = v2["nodes"]!.AsArray().Single(n => (string?)n!["feature_type"] == "logit")!;
        Assert.Equal("Output \"a_minus_b\" (p=0.300)", (string)logit["clerp"]!);

        foreach (var (spec, message) in new[]
        {
            ($"vector:{P("nothere.npy")}", "no such file"),
            ($"vector:{P("two.safetensors")}", "holds 2 tensors"),
            ($"vector:{P("short.safetensors")}", "has 5 values but d_model is 16"),
            ($"vector:{P("one.safetensors")}", "must be floating point"),
            ($"vector:{P("a_minus_b.npy")}@x", "not a number"),
        })
        {
            (exit, _, err) = CliRunner.Run("graph", "--model", model, "--sae", P("clt"), "--input", P("one.safetensors"), "--out", P("graphs/bad.json"), "--target", spec);
            Assert.NotEqual(0, exit);
            Assert.Contains(message, err);
        }
        Assert.False(File.Exists(P("graphs/bad.json")));
    }

    [Fact]
    public void GraphOfALazyCltEqualsTheEagerOneAndLazyNoLazyAreExclusive()
    {
        var (model, saeDir, _, _, row) = GraphSetup();
        string Graph(string name, params string[] extra)
        {
            var (exit, _, err) = CliRunner.Run(["graph", "--model", model, "--sae", P("clt"), "--input", P("one.safetensors"), "--out", P($"graphs/{name}.json"),
                "--max-logits", "3", .. extra]);
            Assert.True(exit == 0, err);
            var json = JsonNode.Parse(File.ReadAllText(P($"graphs/{name}.json")))!;
            return json["nodes"]!.ToJsonString() + json["links"]!.ToJsonString();
        }
        string eager = Graph("eager", "--no-lazy");
        Assert.Equal(eager, Graph("default"));
        Assert.Equal(eager, Graph("lazy", "--lazy"));

        var (code, _, error) = CliRunner.Run("graph", "--model", model, "--sae", P("clt"), "--input", P("one.safetensors"), "--out", P("graphs/x.json"), "--lazy", "--no-lazy");
        Assert.NotEqual(0, code);
        Assert.Contains("--lazy and --no-lazy: give one", error);
        (code, _, error) = CliRunner.Run("inspect", "--model", model, "--sae", saeDir, "--prompt", "hello", "--no-lazy");
        Assert.NotEqual(0, code);
        Assert.Contains("--no-lazy: only for a whole cross-layer transcoder or transcoder set", error);
    }

    [Fact]
    public void AttributeWritesTheFilesTheIssueNamesAndMatchesTheLibrary()
    {
        var (model, saeDir, input, tokens) = Setup();
        var (exit, output, err) = CliRunner.Run("attribute", "--model", model, "--sae", saeDir, "--input", input, "--metric", "logit-diff:5,9",
            "--top", "5", "--out", P("attr.safetensors"), "--json", P("attr.json"), "--html", P("attr.html"));
        Assert.True(exit == 0, err);
        Assert.Contains("top attributions", output);
        var o = SafeTensors.Load(P("attr.safetensors"));
        Assert.Equal(new long[] { 2, 4, 32 }, o["attribution"].shape);
        Assert.Equal(new long[] { 2, 4 }, o["error_attribution"].shape);
        Assert.Equal(0, o["metric"].dim());
        using var m = ModelLoader.FromPretrained(model);
        var logits = m.Forward(tokens);
        double metric = (logits[.., -1, 5] - logits[.., -1, 9]).sum().item<float>();
        Assert.Equal(metric, o["metric"].item<float>(), 3);
        using var sae = SaeLoader.Load(saeDir);
        var hooked = new HookedSaeTransformer(m);
        hooked.AddSae(sae);
        using var r = hooked.Attribute(tokens, AttributionMetric.LogitDiff(5, 9));
        Assert.True(o["attribution"].allclose(r.Attribution[0], rtol: 1e-5, atol: 1e-6));
        var json = JsonNode.Parse(File.ReadAllText(P("attr.json")))!;
        Assert.Equal(5, json["top"]!.AsArray().Count);
        var best = r.Top(1)[0];
        Assert.Equal(best.Feature, (int)json["top"]![0]!["feature"]!);
        Assert.Contains("<table>", File.ReadAllText(P("attr.html")));

        // --ig-steps 4: integrated gradients, the library's attribution with 4 steps (not attribution patching's).
        (exit, _, err) = CliRunner.Run("attribute", "--model", model, "--sae", saeDir, "--input", input, "--metric", "logit-diff:5,9",
            "--ig-steps", "4", "--out", P("ig.safetensors"));
        Assert.True(exit == 0, err);
        using (var ig = hooked.Attribute(tokens, AttributionMetric.LogitDiff(5, 9), 4))
        {
            Assert.False(ig.Attribution[0].allclose(r.Attribution[0], rtol: 1e-3, atol: 1e-5), "4 steps of integrated gradients differ from one linearisation");
            Assert.True(SafeTensors.Load(P("ig.safetensors"))["attribution"].allclose(ig.Attribution[0], rtol: 1e-5, atol: 1e-6));
        }
        // --ig-errors: the error term scaled along (Marks et al.); refused without --ig-steps, before anything is written.
        (exit, _, err) = CliRunner.Run("attribute", "--model", model, "--sae", saeDir, "--input", input, "--metric", "logit-diff:5,9",
            "--ig-steps", "4", "--ig-errors", "--out", P("ig-err.safetensors"), "--html", P("ig-err.html"));
        Assert.True(exit == 0, err);
        Assert.Contains("error rows: Σ ε·∂m/∂ε integrated along the same path", File.ReadAllText(P("ig-err.html")));
        Assert.DoesNotContain("integrated along", File.ReadAllText(P("attr.html")));
        using (var ig = hooked.Attribute(tokens, AttributionMetric.LogitDiff(5, 9), 4, integrateErrors: true))
        {
            var saved = SafeTensors.Load(P("ig-err.safetensors"));
            Assert.True(saved["error_attribution"].allclose(ig.ErrorAttribution[0], rtol: 1e-5, atol: 1e-6));
            Assert.True(saved["attribution"].allclose(ig.Attribution[0], rtol: 1e-5, atol: 1e-6));
            using (var file = SafeTensorsFile.Open(P("ig-err.safetensors"))) Assert.Equal("true", file.Metadata["integrated_errors"]);
        }
        (exit, _, err) = CliRunner.Run("attribute", "--model", model, "--sae", saeDir, "--input", input, "--metric", "logit-diff:5,9",
            "--ig-errors", "--out", P("no-steps.safetensors"));
        Assert.Equal(1, exit);
        Assert.Contains("--ig-errors", err);
        Assert.False(File.Exists(P("no-steps.safetensors")));

        // Two SAEs: attribution.0 / attribution.1.
        using (var second = InterventionTests.RandomSae("blocks.1.hook_resid_mid", 16, 24, 10))
            SaeLensFormat.Save(second, P("sae2"));
        (exit, _, err) = CliRunner.Run("attribute", "--model", model, "--sae", saeDir, "--sae", P("sae2"), "--input", input, "--metric", "loss",
            "--out", P("attr2.safetensors"));
        Assert.True(exit == 0, err);
        var o2 = SafeTensors.Load(P("attr2.safetensors"));
        Assert.Equal(new long[] { 2, 4, 24 }, o2["attribution.1"].shape);
        Assert.Equal(new long[] { 2, 4 }, o2["error_attribution.0"].shape);
        Assert.False(o2.ContainsKey("attribution"));
    }

    [Fact]
    public void SteerTopLogitsAreTheDashboardsLogitEffectWithTheFinalNormScaleFolded()
    {
        // W_dec[F]·diag(γ)·W_U (γ: ln_f's scale, TransformerLens fold_ln, as `sae features` reports it); an mlp.hook_post
        // decoder row first goes through W_out. Written out here from the checkpoint's parameters.
        foreach (var (hook, dIn) in new[] { ("blocks.0.hook_resid_post", 16), ("blocks.0.mlp.hook_post", 64) })
        {
            var model = TinyModels.WriteGpt2(P("m"), seed: 3, nLayer: 2, nEmbd: 16, nHead: 4, vocab: 64);
            using var m = ModelLoader.FromPretrained(model);
            using var sae = InterventionTests.RandomSae(hook, dIn, 32, 9);
            var w = m.named_parameters().ToDictionary(kv => kv.name, kv => kv.parameter.detach().to(ScalarType.Float64));
            var row = sae.WDec.detach()[4].to(ScalarType.Float64);
            if (dIn == 64) row = matmul(row, w["transformer.h.0.mlp.c_proj.weight"]);
            var expected = matmul(w["transformer.wte.weight"], row * w["transformer.ln_f.weight"]);
            var (values, ids) = expected.topk(5);
            var got = InterventionCommands.FeatureLogits(m, sae, hook, 4, 5, 64);
            Assert.Equal(ids.data<long>().ToArray(), got.Select(g => g.Token).ToArray());
            var v = values.data<double>().ToArray();
            for (int i = 0; i < 5; i++) Assert.True(Math.Abs(v[i] - got[i].Logit) < 1e-4, $"{hook}: logit {i}: {got[i].Logit} vs {v[i]}");
        }
    }

    /// <summary><c>sae steer</c> greedy on the built-in model: the steered column is a greedy loop written here, each step
    /// a whole-sequence run with S·W_dec[F] added at the hook at the listed positions only (one of the prompt, one of a
    /// generated token); the unsteered column is <c>sae model generate</c> on the same ids (steer puts BOS first as
    /// SAELens does, model generate only where the tokenizer adds it, so it is given the BOS in its text), greedy and
    /// sampled with the same seed, as is <c>sae model run --generate</c>'s clean row.</summary>
    [Fact]
    public void SteerAddsTheScaledDecoderRowAtTheListedPositionsOnlyAndItsUnsteeredRunIsModelGenerate()
    {
        const string hook = "blocks.1.hook_resid_post", prompt = "Once there was a girl named Anna .";
        const int feature = 3, newTokens = 6;
        const double scale = 60;
        using var sae = InterventionTests.RandomSae(hook, 128, 16, 7);
        SaeLensFormat.Save(sae, P("sae"));
        var vocab = SaeSharp.Corpus.LabelledCorpus.Vocabulary.ToList();
        var ids = new List<long> { vocab.IndexOf(SaeSharp.Corpus.LabelledCorpus.EndOfText) };
        ids.AddRange(prompt.Split(' ').Select(w => (long)vocab.IndexOf(w)));
        Assert.DoesNotContain(-1L, ids);
        string folder = SaeSharp.LanguageModels.BuiltinModel.Folder;
        var tok = SaeSharp.Tokenizers.Tokenizer.FromFolder(folder);
        using var m = ModelLoader.FromPretrained(folder);
        using var add = (sae.WDec.detach()[feature] * scale).alias();
        List<long> Greedy(long[] positions)
        {
            var seq = new List<long>(ids);
            for (int i = 0; i < newTokens; i++)
            {
                using var scope = NewDisposeScope();
                using var _ = no_grad();
                var t = tensor(seq.ToArray()).unsqueeze(0);
                var logits = m.Run(t, new RunOptions
                {
                    Hooks = positions.Length > 0 ? [(hook, x =>
                    {
                        var delta = zeros_like(x);
                        foreach (var p in positions.Where(p => p < x.shape[1])) delta[0, p] = add;
                        return x + delta;
                    })] : [],
                }).Logits!;
                long next = logits[0, -1].argmax().item<long>();
                seq.Add(next);
                if (next == tok.EosTokenId) break;
            }
            return seq.GetRange(ids.Count, seq.Count - ids.Count);
        }
        // The text after the prompt's: a word-level tokenizer joins words with a space, so the continuation starts with one.
        string Text(List<long> t) => " " + tok.Decode(t.Select(v => (int)v));
        string[] Row(string output, string seed = "0") => output.Split('\n').Single(l => l.StartsWith(seed + "\t", StringComparison.Ordinal)).Split('\t');

        // The prompt is BOS + 8 words: position 8 is its last token, position 10 the second generated token's.
        string clean = Text(Greedy([]));
        int exit;
        string output, err;
        foreach (long[] positions in new long[][] { [8], [10], [8, 10] })
        {
            (exit, output, err) = CliRunner.Run("steer", "--model", "builtin", "--sae", P("sae"), "--feature", $"{feature}", "--scale", $"{scale}",
                "--prompt", prompt, "--max-new-tokens", $"{newTokens}", "--runs", "1", "--temperature", "0", "--positions", string.Join(',', positions));
            Assert.True(exit == 0, err);
            var row = Row(output);
            string steered = Text(Greedy(positions));
            Assert.NotEqual(clean, steered);   // each position's edit matters, so a position ignored or misplaced shows
            Assert.Equal(clean, row[1]);
            Assert.Equal(steered, row[2]);
        }
        // --top-k 1 samples the most likely token: at any temperature and seed, the greedy continuations.
        (exit, output, err) = CliRunner.Run("steer", "--model", "builtin", "--sae", P("sae"), "--feature", $"{feature}", "--scale", $"{scale}",
            "--prompt", prompt, "--max-new-tokens", $"{newTokens}", "--runs", "1", "--temperature", "5", "--top-k", "1", "--seed", "2", "--positions", "8,10");
        Assert.True(exit == 0, err);
        Assert.Equal([clean, Text(Greedy([8, 10]))], Row(output, "2")[1..]);

        // The unsteered column is sae model generate's continuation of the same ids, greedy and sampled (also top-k).
        foreach (var sampling in new[] { new[] { "--temperature", "0" }, ["--temperature", "0.9", "--seed", "4"], ["--temperature", "1.5", "--top-k", "3", "--seed", "6"] })
        {
            (exit, output, err) = CliRunner.Run(["steer", "--model", "builtin", "--sae", P("sae"), "--feature", $"{feature}", "--scale", $"{scale}",
                "--prompt", prompt, "--max-new-tokens", $"{newTokens}", "--runs", "1", .. sampling]);
            Assert.True(exit == 0, err);
            string unsteered = Row(output, sampling.Length > 2 ? sampling[^1] : "0")[1];
            // sae model run --generate's clean row is the same continuation.
            (exit, output, err) = CliRunner.Run(["model", "run", "--model", "builtin", "--sae", P("sae"), "--prompt", prompt, "--generate", $"{newTokens}",
                "--out", P("gen.safetensors"), .. sampling]);
            Assert.True(exit == 0, err);
            Assert.Equal(unsteered, Row(output, "clean")[1]);
            (exit, output, err) = CliRunner.Run(["model", "generate", "--model", "builtin", "--prompt", SaeSharp.Corpus.LabelledCorpus.EndOfText + prompt,
                "--max-new-tokens", $"{newTokens}", .. sampling]);
            Assert.True(exit == 0, err);
            Assert.Equal($"{SaeSharp.Corpus.LabelledCorpus.EndOfText} {prompt}{unsteered}", output.Trim()); // unsteered starts with its space
            // --prepend-bos puts the BOS first as steer does: the same continuation of the plain prompt.
            (exit, output, err) = CliRunner.Run(["model", "generate", "--model", "builtin", "--prompt", prompt, "--prepend-bos",
                "--max-new-tokens", $"{newTokens}", .. sampling]);
            Assert.True(exit == 0, err);
            Assert.Equal($"{SaeSharp.Corpus.LabelledCorpus.EndOfText} {prompt}{unsteered}", output.Trim()); // unsteered starts with its space
        }
    }

    [Fact]
    public void SteerAndAblateRunOnPromptsAndADataset()
    {
        using var fx = new AnalysisFixture();
        var (exit, output, err) = CliRunner.Run("steer", "--model", fx.ModelDir, "--sae", fx.SaeDir, "--feature", "1", "--scale", "8",
            "--prompt", "the cat sat", "--max-new-tokens", "4", "--runs", "2", "--seed", "5");
        Assert.True(exit == 0, err);
        Assert.Contains("unsteered", output);
        Assert.Contains("logit", output);

        (exit, output, err) = CliRunner.Run("ablate", "--model", fx.ModelDir, "--sae", fx.SaeDir, "--features", "0,1", "--prompt", "the cat sat on the mat");
        Assert.True(exit == 0, err);
        Assert.Contains("ΔCE loss", output);
        Assert.Contains("per position", output);
        (exit, output, err) = CliRunner.Run("ablate", "--model", fx.ModelDir, "--sae", fx.SaeDir, "--features", "2", "--dataset", fx.DataPath,
            "--tokens", "64", "--context-size", "16", "--mode", "mean");
        Assert.True(exit == 0, err);
        Assert.Contains("mean-ablation", output);
        (exit, _, err) = CliRunner.Run("attribute", "--model", fx.ModelDir, "--sae", fx.SaeDir, "--prompt", "the cat sat", "--metric", "logit-diff: dog, bird");
        Assert.True(exit == 0, err);
        (exit, _, err) = CliRunner.Run("attribute", "--model", fx.ModelDir, "--sae", fx.SaeDir, "--prompt", "the cat sat", "--metric", "logit: dog cat");
        Assert.Equal(1, exit);
        Assert.Contains("is not a single token", err);
    }
    [Fact]
    public void AblateClampsFeaturesWithTheErrorTermKeptAsAHandWrittenHookDoes()
    {
        using var fx = new AnalysisFixture();
        const string prompt = "the cat sat on the mat";
        var (exit, output, err) = CliRunner.Run("ablate", "--model", fx.ModelDir, "--sae", fx.SaeDir, "--clamp", "1:3", "--features", "0", "--prompt", prompt);
        Assert.True(exit == 0, err);
        Assert.Contains("zero-ablation of 1 feature(s), feature 1 clamped to 3 at ", output);
        // By hand: f = encode(x) at the SAE's hook, feature 0 zeroed and feature 1 set to 3, x ← x + decode(f') − decode(f).
        using var scope = NewDisposeScope();
        using var sae = SaeLoader.Load(fx.SaeDir);
        using var m = ModelLoader.FromPretrained(fx.ModelDir);
        string hook = m.HookPoints.Resolve(sae.Cfg.Metadata.HookName!);
        var ids = InterventionCommands.PromptTokens(SaeSharp.Tokenizers.Tokenizer.FromFolder(fx.ModelDir), prompt, true)[0].data<long>().ToArray();
        var tokens = tensor(ids).unsqueeze(0);
        long n = ids.Length;
        double Ce(Tensor logits)
        {
            var lp = logits[0].narrow(0, 0, n - 1).to(ScalarType.Float64).log_softmax(-1);
            return -lp.gather(1, tokens[0].narrow(0, 1, n - 1).unsqueeze(1)).mean().item<double>();
        }
        double clean, edited;
        using (no_grad())
        {
            clean = Ce(m.Run(tokens, new RunOptions()).Logits!);
            edited = Ce(m.Run(tokens, new RunOptions
            {
                Hooks = [(hook, x =>
                {
                    var f = sae.Encode(x);
                    var g = f.clone();
                    g[TensorIndex.Ellipsis, 0] = tensor(0f);
                    g[TensorIndex.Ellipsis, 1] = tensor(3f);
                    return x + sae.Decode(g) - sae.Decode(f);
                })],
            }).Logits!);
        }
        string F(double v) => v.ToString("F4", System.Globalization.CultureInfo.InvariantCulture);
        Assert.Matches($@"CE loss clean\s+│?\s*{F(clean)}", output);
        Assert.Matches($@"CE loss ablated\s+│?\s*{F(edited)}", output);
        Assert.NotEqual(F(clean), F(edited));
        (exit, _, err) = CliRunner.Run("ablate", "--model", fx.ModelDir, "--sae", fx.SaeDir, "--clamp", "1:3", "--mode", "mean", "--prompt", prompt);
        Assert.NotEqual(0, exit);
        Assert.Contains("--mode: how --features are ablated; give --features", err);
    }

    /// <summary><c>sae ablate --metric M --each --positions P --ablate-error</c>: its rows are the library's single-feature
    /// ablations at P (each feature's logit difference by <see cref="FeatureAblation.Metric"/>), largest |Δ| first, the
    /// error node last (zeroed at P); without --each the metric's clean and ablated values are those of the library's run
    /// with the features ablated there. The options that need another are refused.</summary>
    [Fact]
    public void AblateReportsAMetricPerFeatureAndForTheErrorNode()
    {
        using var fx = new AnalysisFixture();
        const string prompt = "the cat sat on the dog";
        string[] common = ["ablate", "--model", fx.ModelDir, "--sae", fx.SaeDir, "--prompt", prompt, "--metric", "logit-diff: bird, fish", "--positions", "2"];
        var (exit, output, err) = CliRunner.Run([.. common, "--each", "--ablate-error"]);
        Assert.True(exit == 0, err);
        var rows = output.Split('\n').Select(l => l.Split('\t')).Where(c => c.Length == 4 && c[0] != "feature").ToList();

        using var scope = NewDisposeScope();
        using var sae = SaeLoader.Load(fx.SaeDir);
        using var pm = SaeSharp.Pipelines.ModelForSae.Load(fx.ModelDir, sae.Cfg);
        var tokens = InterventionCommands.PromptTokens(SaeSharp.Tokenizers.Tokenizer.FromFolder(fx.ModelDir), prompt, true);
        var hooked = new HookedSaeTransformer(pm.Model) { ModelHooks = pm.Hooks };
        hooked.AddSae(sae, useErrorTerm: true);
        var metric = AttributionMetric.LogitDiff(fx.Vocab["Ġbird"], fx.Vocab["Ġfish"]);
        double clean = FeatureAblation.Metric(hooked, tokens, metric);
        string F(double v) => v.ToString("F4", System.Globalization.CultureInfo.InvariantCulture);
        Assert.Contains($"= {F(clean)}", output);
        Assert.Equal("error", rows[^1][0]);
        double error = FeatureAblation.Metric(hooked, tokens, metric, [new ErrorAblation(sae) { Positions = [2] }]);
        Assert.Equal([F(error), F(error - clean)], rows[^1][2..]);
        var features = rows.SkipLast(1).ToList();
        Assert.Contains(0, features.Select(r => int.Parse(r[0])));   // feature 0 reads " cat" (AnalysisFixture.ChosenWords)
        Assert.Equal(features.Select(r => Math.Abs(double.Parse(r[3], System.Globalization.CultureInfo.InvariantCulture))).OrderDescending(),
            features.Select(r => Math.Abs(double.Parse(r[3], System.Globalization.CultureInfo.InvariantCulture))));
        foreach (var r in features)
        {
            double m = FeatureAblation.Metric(hooked, tokens, metric, [new Ablation(sae, [int.Parse(r[0])]) { Positions = [2] }]);
            Assert.Equal([F(m), F(m - clean)], r[2..]);
        }

        (exit, output, err) = CliRunner.Run([.. common, "--features", "0,1,2"]);
        Assert.True(exit == 0, err);
        double ablated = FeatureAblation.Metric(hooked, tokens, metric, [new Ablation(sae, [0, 1, 2]) { Positions = [2] }]);
        Assert.Matches($@"clean\s+│?\s*{F(clean)}", output);
        Assert.Matches($@"ablated\s+│?\s*{F(ablated)}", output);

        // --each over features none of which fires at the position: a sentence saying so, not an empty table.
        (exit, output, err) = CliRunner.Run([.. common, "--each", "--top", AnalysisFixture.DSae.ToString(System.Globalization.CultureInfo.InvariantCulture)]);
        Assert.True(exit == 0, err);
        var live = output.Split('\n').Select(l => l.Split('\t')).Where(c => c.Length == 4 && c[0] != "feature").Select(c => int.Parse(c[0])).ToHashSet();
        int quiet = Enumerable.Range(0, AnalysisFixture.DSae).First(f => !live.Contains(f));
        (exit, output, err) = CliRunner.Run([.. common, "--each", "--features", $"{quiet}"]);
        Assert.True(exit == 0, err);
        Assert.Contains($"no feature of --features {quiet} is active at", output);
        Assert.Contains($"nothing to ablate", output);
        Assert.DoesNotContain("feature\t", output);

        (exit, _, err) = CliRunner.Run("ablate", "--model", fx.ModelDir, "--sae", fx.SaeDir, "--prompt", prompt, "--each");
        Assert.NotEqual(0, exit);
        Assert.Contains("--each", err);
        Assert.Contains("give --metric", err);
        (exit, _, err) = CliRunner.Run("ablate", "--model", fx.ModelDir, "--sae", fx.SaeDir, "--dataset", fx.DataPath, "--features", "1", "--metric", "loss");
        Assert.NotEqual(0, exit);
        Assert.Contains("--metric", err);
        (exit, _, err) = CliRunner.Run([.. common, "--each", "--clamp", "1:3"]);
        Assert.NotEqual(0, exit);
        Assert.Contains("--clamp", err);
        (exit, _, err) = CliRunner.Run([.. common, "--clamp", "1:3"]);
        Assert.NotEqual(0, exit);
        Assert.Contains("--positions: where --features", err);
        (exit, _, err) = CliRunner.Run("ablate", "--model", fx.ModelDir, "--sae", fx.SaeDir, "--prompt", prompt);   // nothing to do: every way named
        Assert.NotEqual(0, exit);
        Assert.Contains("give --features (to ablate), --clamp F:V, --ablate-error, or --metric M --each", err);
    }

    /// <summary><c>model run --metric</c> over several prompts (the Hooked SAE demo's per-prompt logit difference): each
    /// row's clean value is the logit difference read by hand from <c>model run</c>'s logits of that prompt alone, the
    /// spliced one from the same command's saved logits of that prompt, the last row their means; one --metric per prompt
    /// pairs them in order; a count that fits neither, and neither --out nor --metric, are refused.</summary>
    [Fact]
    public void ModelRunPrintsAMetricPerPromptCleanAndSplicedWithTheirMeans()
    {
        using var fx = new AnalysisFixture();
        string[] prompts = ["the cat sat on the", "a dog ran to the park and"];
        long bird = fx.Vocab["Ġbird"], fish = fx.Vocab["Ġfish"];
        double Hand(string file, string key)
        {
            using var scope = NewDisposeScope();
            var l = SafeTensors.Load(file)[key].to(ScalarType.Float64);
            return (l[0, -1, bird] - l[0, -1, fish]).item<double>();
        }
        var clean = new List<double>();
        for (int i = 0; i < prompts.Length; i++)
        {
            var (code, _, e) = CliRunner.Run("model", "run", "--model", fx.ModelDir, "--prompt", prompts[i], "--out", P($"p{i}.safetensors"));
            Assert.True(code == 0, e);
            clean.Add(Hand(P($"p{i}.safetensors"), "logits"));
        }
        Assert.NotEqual(clean[0], clean[1], 3);
        static double D(string v) => double.Parse(v, System.Globalization.CultureInfo.InvariantCulture);
        string F(double v) => v.ToString("F4", System.Globalization.CultureInfo.InvariantCulture);

        var (exit, output, err) = CliRunner.Run("model", "run", "--model", fx.ModelDir, "--sae", fx.SaeDir, "--prompt", prompts[0], "--prompt", prompts[1],
            "--metric", "logit-diff: bird, fish", "--out", P("all.safetensors"));
        Assert.True(exit == 0, err);
        Assert.Contains("logit-diff:\" bird\",\" fish\" per prompt", output);
        var rows = output.Split('\n').Select(l => l.TrimEnd('\r').Split('\t')).Where(c => c.Length == 5 && c[0] != "prompt").ToList();
        Assert.Equal(3, rows.Count);
        var spliced = new List<double>();
        for (int i = 0; i < prompts.Length; i++)
        {
            spliced.Add(Hand(P("all.safetensors"), $"logits.{i}"));
            Assert.Equal([i.ToString(System.Globalization.CultureInfo.InvariantCulture), prompts[i]], rows[i][..2]);
            Assert.InRange(D(rows[i][2]) - (clean[i]), -1e-3, 1e-3);   // the SAE's processed model: logit differences are those of the plain one
            Assert.Equal(F(spliced[i]), rows[i][3]);
            Assert.InRange(D(rows[i][4]) - (D(rows[i][3]) - D(rows[i][2])), -2e-4, 2e-4);
        }
        Assert.Equal("mean", rows[2][0]);
        Assert.InRange(D(rows[2][2]) - (clean.Average()), -1e-3, 1e-3);
        Assert.Equal(F(spliced.Average()), rows[2][3]);

        // No --sae and no --out: the clean column alone; a metric per prompt, in order (the second the opposite difference).
        (exit, output, err) = CliRunner.Run("model", "run", "--model", fx.ModelDir, "--prompt", prompts[0], "--prompt", prompts[1],
            "--metric", "logit-diff: bird, fish", "--metric", $"logit-diff:{fish},{bird}");
        Assert.True(exit == 0, err);
        rows = output.Split('\n').Select(l => l.TrimEnd('\r').Split('\t')).Where(c => c.Length == 4 && c[0] != "prompt").ToList();
        Assert.Equal(["0", prompts[0], "logit-diff:\" bird\",\" fish\"", F(clean[0])], rows[0]);
        Assert.Equal(["1", prompts[1], "logit-diff:\" fish\",\" bird\"", F(-clean[1])], rows[1]);
        Assert.Equal(F((clean[0] - clean[1]) / 2), rows[2][3]);

        (exit, _, err) = CliRunner.Run("model", "run", "--model", fx.ModelDir, "--prompt", prompts[0], "--prompt", prompts[1],
            "--metric", "loss", "--metric", "loss", "--metric", "loss");
        Assert.Equal(1, exit);
        Assert.Contains("--metric is given 3 times for 2 prompts", err);
        (exit, _, err) = CliRunner.Run("model", "run", "--model", fx.ModelDir, "--prompt", prompts[0]);
        Assert.Equal(1, exit);
        Assert.Contains("give --out", err);
        // --loss-per-position with --sae: clean and spliced at each position of the prompt (one row per predicted token).
        (exit, output, err) = CliRunner.Run("model", "run", "--model", fx.ModelDir, "--sae", fx.SaeDir, "--prompt", prompts[0], "--loss-per-position");
        Assert.True(exit == 0, err);
        Assert.Contains("pos\tnext token\tclean\tspliced\tΔ", output);
        using (var saved = SafeTensors.Load(P("p0.safetensors"))["tokens"])
            Assert.Equal(saved.shape[1] - 1, output.Split('\n').Count(l => l.Split('\t') is { Length: 5 } c && c[1].StartsWith('"')));
    }

    /// <summary><c>sae ablate --prompt P1 --prompt P2 --metric M</c>: a row per prompt with the library's metric of that prompt
    /// alone, clean and ablated, and their means; with --each the prompts run as one batch, so each value is the sum of
    /// the prompts' own values (FeatureAblation.Sweep sums over a batch's rows); prompts of different token counts are
    /// refused for --each.</summary>
    [Fact]
    public void AblateOverSeveralPromptsReportsEachPromptAndSumsForEach()
    {
        using var fx = new AnalysisFixture();
        string[] prompts = ["the cat sat on the dog", "a bird ran to the tree"];
        using var scope = NewDisposeScope();
        using var sae = SaeLoader.Load(fx.SaeDir);
        using var pm = SaeSharp.Pipelines.ModelForSae.Load(fx.ModelDir, sae.Cfg);
        var tok = SaeSharp.Tokenizers.Tokenizer.FromFolder(fx.ModelDir);
        var tokens = prompts.Select(p => InterventionCommands.PromptTokens(tok, p, true)).ToList();
        Assert.Equal(tokens[0].shape[1], tokens[1].shape[1]);
        var hooked = new HookedSaeTransformer(pm.Model) { ModelHooks = pm.Hooks };
        hooked.AddSae(sae, useErrorTerm: true);
        var metric = AttributionMetric.LogitDiff(fx.Vocab["Ġbird"], fx.Vocab["Ġfish"]);
        string F(double v) => v.ToString("F4", System.Globalization.CultureInfo.InvariantCulture);
        static double D(string v) => double.Parse(v, System.Globalization.CultureInfo.InvariantCulture);

        string[] common = ["ablate", "--model", fx.ModelDir, "--sae", fx.SaeDir, "--prompt", prompts[0], "--prompt", prompts[1], "--metric", "logit-diff: bird, fish"];
        var (exit, output, err) = CliRunner.Run([.. common, "--features", "0,1,2", "--positions", "-2"]);
        Assert.True(exit == 0, err);
        var rows = output.Split('\n').Select(l => l.TrimEnd('\r').Split('\t')).Where(c => c.Length == 5 && c[0] != "prompt").ToList();
        Assert.Equal(3, rows.Count);
        var (clean, ablated) = (new List<double>(), new List<double>());
        for (int i = 0; i < 2; i++)
        {
            clean.Add(FeatureAblation.Metric(hooked, tokens[i], metric));
            ablated.Add(FeatureAblation.Metric(hooked, tokens[i], metric, [new Ablation(sae, [0, 1, 2]) { Positions = [tokens[i].shape[1] - 2] }]));
            Assert.Equal([i.ToString(System.Globalization.CultureInfo.InvariantCulture), prompts[i], F(clean[i]), F(ablated[i])], rows[i][..4]);
        }
        Assert.Equal(["mean", "", F(clean.Average()), F(ablated.Average())], rows[2][..4]);
        Assert.InRange(D(rows[2][4]) - (D(rows[2][3]) - D(rows[2][2])), -2e-4, 2e-4);

        (exit, output, err) = CliRunner.Run([.. common, "--each", "--positions", "2"]);
        Assert.True(exit == 0, err);
        Assert.Contains($"summed over 2 prompts = {F(clean.Sum())}", output);
        var effects = output.Split('\n').Select(l => l.Split('\t')).Where(c => c.Length == 4 && c[0] != "feature").ToList();
        Assert.NotEmpty(effects);
        foreach (var r in effects.Take(3))
        {
            double sum = tokens.Sum(t => FeatureAblation.Metric(hooked, t, metric, [new Ablation(sae, [int.Parse(r[0])]) { Positions = [2] }]));
            Assert.InRange(D(r[2]) - (sum), -2e-4, 2e-4);
        }

        (exit, _, err) = CliRunner.Run("ablate", "--model", fx.ModelDir, "--sae", fx.SaeDir, "--prompt", prompts[0], "--prompt", "the cat",
            "--metric", "logit-diff: bird, fish", "--each");
        Assert.Equal(1, exit);
        Assert.Contains("needs prompts of one token count", err);
    }

    /// <summary>A random transcoder from block 0's MLP input to its output, saved in SAELens's layout as P("tc").</summary>
    private (string Ln2, string MlpOut) SaveTranscoder()
    {
        const string ln2 = "blocks.0.ln2.hook_normalized", mlpOut = "blocks.0.hook_mlp_out";
        using (var tc = SaeSharp.Tests.Hooks.TranscoderSpliceTests.RandomTranscoder(ln2, mlpOut, 16, 16, 24, 5, dtype: ScalarType.Float32))
            SaeLensFormat.Save(tc, P("tc"));
        return (ln2, mlpOut);
    }

    [Fact]
    public void ModelRunSplicesATranscoderFolderFromItsInputHookToItsOutputHookAsTheLibraryDoes()
    {
        var (model, _, input, tokens) = Setup();
        var (ln2, mlpOut) = SaveTranscoder();
        using var m = ModelLoader.FromPretrained(model);
        using var sae = SaeLoader.Load(P("tc"));
        Assert.Equal(mlpOut, sae.Cfg.Metadata.HookNameOut);
        var hooked = new HookedSaeTransformer(m);
        hooked.AddSae(sae);

        // Spliced without the error term: the library's logits, and the hand-written hook pair's.
        var (exit, _, err) = CliRunner.Run("model", "run", "--model", model, "--input", input, "--out", P("t.safetensors"), "--sae", P("tc"),
            "--hooks", $"{ln2},{ln2}.hook_sae_acts_post");
        Assert.True(exit == 0, err);
        var t = SafeTensors.Load(P("t.safetensors"));
        Assert.True(t["logits"].allclose(hooked.RunWithHooks(tokens), rtol: 1e-5, atol: 1e-5));
        var hand = SaeSharp.Tests.Hooks.TranscoderSpliceTests.HookPair(m, tokens, ln2, mlpOut, (xin, _) =>
            SaeSharp.Tests.Hooks.TranscoderSpliceTests.HandDecode(sae, SaeSharp.Tests.Hooks.TranscoderSpliceTests.HandFeatures(sae, xin), xin));
        Assert.True(t["logits"].allclose(hand, rtol: 1e-4, atol: 1e-4));
        var (_, cache) = m.RunWithCache(tokens, [ln2, mlpOut]);
        using (cache)
        {
            Assert.True(t[ln2].allclose(cache[ln2]), "the input hook is left as the model computes it");
            Assert.True(t[$"{ln2}.hook_sae_acts_post"].to(ScalarType.Float64).allclose(SaeSharp.Tests.Hooks.TranscoderSpliceTests.HandFeatures(sae, cache[ln2]), rtol: 1e-4, atol: 1e-5));

            // --error-term: the clean logits, and hook_sae_error = x_out − x̂ at the output hook.
            (exit, _, err) = CliRunner.Run("model", "run", "--model", model, "--input", input, "--out", P("te.safetensors"), "--sae", P("tc"),
                "--error-term", "--hooks", $"{ln2}.hook_sae_error");
            Assert.True(exit == 0, err);
            var te = SafeTensors.Load(P("te.safetensors"));
            Assert.True(te["logits"].allclose(m.Forward(tokens), rtol: 1e-4, atol: 1e-4));
            var x = cache[ln2];
            var recon = SaeSharp.Tests.Hooks.TranscoderSpliceTests.HandDecode(sae, SaeSharp.Tests.Hooks.TranscoderSpliceTests.HandFeatures(sae, x), x);
            Assert.True(te[$"{ln2}.hook_sae_error"].to(ScalarType.Float64).allclose(cache[mlpOut].to(ScalarType.Float64) - recon, rtol: 1e-4, atol: 1e-5));
        }

        // --steer alone (not spliced): S·W_dec[F] is added to the raw output hook.
        var v = (InterventionTests.DecoderRow(sae, 4) * 2.5).to(ScalarType.Float32);
        (exit, _, err) = CliRunner.Run("model", "run", "--model", model, "--input", input, "--out", P("ts.safetensors"), "--sae", P("tc"), "--steer", "4:2.5");
        Assert.True(exit == 0, err);
        Assert.True(SafeTensors.Load(P("ts.safetensors"))["logits"].allclose(m.RunWithHooks(tokens, (mlpOut, a => a + v)), rtol: 1e-4, atol: 1e-4));
    }

    [Fact]
    public void AttributeNamesATranscoderByTheHookItReplacesAndTheHookItReads()
    {
        var (model, _, input, _) = Setup();
        var (ln2, mlpOut) = SaveTranscoder();
        var (exit, output, err) = CliRunner.Run("attribute", "--model", model, "--input", input, "--sae", P("tc"), "--metric", "loss");
        Assert.True(exit == 0, err);
        // Its error node is x_out − x̂ at hook_mlp_out, as steer says "at blocks.0.hook_mlp_out (transcoder reading ...)"
        // (was "SAE 0 at blocks.0.ln2.hook_normalized").
        Assert.Contains($"SAE 0 at {mlpOut} (transcoder reading {ln2}): features ", output);
    }
}
