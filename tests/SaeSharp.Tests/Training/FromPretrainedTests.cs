using System.Text.Json.Nodes;
using SaeSharp.Interop;
using SaeSharp.IO;
using SaeSharp.Pipelines;
using SaeSharp.Saes;
using SaeSharp.Training;
using static TorchSharp.torch;

namespace SaeSharp.Tests.Training;

/// <summary>
/// SAELens's <c>from_pretrained_path</c> (<c>sae train --from-pretrained</c>): the run starts from a saved SAE's weights.
/// With lr 0 the SAE written is the file's; the first logged MSE is the loaded SAE's on the first batch (in the scale the
/// run trains in); the architecture, d_sae and hook come from the SAE, and a run that names others is refused.
/// </summary>
public class FromPretrainedTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("from-pretrained-").FullName;
    public void Dispose() => Directory.Delete(_dir, true);

    private string P(params string[] parts) => Path.Combine([_dir, .. parts]);

    private const int Batch = 32;

    /// <summary>600 rows of width 8, not centred (so that b_dec matters).</summary>
    private Tensor Rows()
    {
        if (!File.Exists(P("a.safetensors")))
        {
            using var rows = randn(600, 8, generator: new Generator(3)).mul_(1.5).add_(TorchScalars.Of(0.7), TorchScalars.One);
            SafeTensors.Save(P("a.safetensors"), new Dictionary<string, Tensor> { ["activations"] = rows });
        }
        return SafeTensors.Load(P("a.safetensors"))["activations"];
    }

    private TrainingSettings Settings(string fields, string outName)
    {
        Rows().Dispose();
        return TrainingSettings.FromJson($$"""
            {"activations": "{{P("a.safetensors").Replace("\\", "/")}}", "batch_size": {{Batch}}, "eval_rows": 64,
             "activations_mixing_fraction": 0, "out": "{{P(outName).Replace("\\", "/")}}" {{(fields.Length > 0 ? ", " + fields : "")}} }
            """, "ft.json");
    }

    /// <summary>A saved SAE trained for a few steps by <paramref name="fields"/>' recipe (so its weights are not an
    /// initialisation), in OUT/<paramref name="name"/>.</summary>
    private string Base(string fields, string name)
    {
        using var plan = TrainingPlan.ForActivations(Settings("\"steps\": 6, \"expansion_factor\": 2, " + fields, name));
        plan.Run();
        return P(name);
    }

    private static Dictionary<string, float[]> Weights(string dir)
    {
        using var sae = SaeLoader.Load(dir);
        return sae.state_dict().ToDictionary(kv => kv.Key, kv => kv.Value.data<float>().ToArray());
    }

    /// <summary>The saved SAE's reconstruction of the file's first rows, and of the SAE in <paramref name="dir"/>.</summary>
    private double MaxReconstructionDifference(string saved, string dir)
    {
        using var scope = NewDisposeScope();
        using var a = SaeLoader.Load(saved);
        using var b = SaeLoader.Load(dir);
        using var _ = no_grad();
        var x = Rows().narrow(0, 0, 128);
        var ya = a.Decode(a.Encode(x));
        var yb = b.Decode(b.Encode(x));
        return (ya - yb).abs().max().item<float>() / ya.abs().max().item<float>();
    }

    [Theory]
    [InlineData("\"architecture\": \"relu-april\"", "", false)]
    [InlineData("\"architecture\": \"gated\"", "", false)]
    [InlineData("\"architecture\": \"topk\", \"k\": 3", "", true)]
    [InlineData("\"architecture\": \"jumprelu\", \"jumprelu_init_threshold\": 0.3", "", true)]
    [InlineData("\"architecture\": \"relu\"", "", false)]                                     // trains as relu-april
    [InlineData("\"architecture\": \"relu\"", "\"architecture\": \"relu\", ", true)]          // unit-norm rows
    public void WithLearningRateZeroTheSaeWrittenIsTheSavedOne(string recipe, string fineTune, bool unitNormRows)
    {
        var saved = Base(recipe, "base");
        using (var plan = TrainingPlan.ForActivations(Settings($"{fineTune}\"steps\": 3, \"lr\": 0, \"from_pretrained_path\": \"{saved.Replace("\\", "/")}\"", "ft")))
        {
            var slot = plan.Options.Saes[0];
            Assert.Equal("none", plan.Options.Trainer.NormalizeActivations);
            Assert.Equal(saved.Replace("\\", "/"), slot.Config!.FromPretrainedPath);
            plan.Run();
        }
        var before = Weights(saved);
        var after = Weights(P("ft"));
        Assert.Equal(before.Keys.Order(), after.Keys.Order());
        Assert.Equal(JsonNode.Parse(File.ReadAllText(Path.Combine(saved, "cfg.json")))!["architecture"]!.GetValue<string>(),
                     JsonNode.Parse(File.ReadAllText(P("ft", "cfg.json")))!["architecture"]!.GetValue<string>());
        // The same function: b_dec (which topk and jumprelu would start at the geometric median), JumpReLU's thresholds
        // and the encoder are the file's, not an initialisation.
        Assert.True(MaxReconstructionDifference(saved, P("ft")) < 1e-5);
        Assert.Equal(before["b_dec"], after["b_dec"]);
        if (!unitNormRows)
        {
            foreach (var (name, w) in before) Assert.Equal(w, after[name]);
            return;
        }
        // relu, topk and jumprelu train with unit-norm decoder rows: the saved rows (at norm 1/s, the activation scale
        // folded in) start at unit norm with each norm folded into the latent's encoder column, b_enc and threshold.
        int dSae = 16, dIn = 8;
        for (int j = 0; j < dSae; j++)
        {
            double norm = Math.Sqrt(Enumerable.Range(0, dIn).Sum(i => (double)before["W_dec"][j * dIn + i] * before["W_dec"][j * dIn + i]));
            Assert.NotEqual(1, norm, 2);
            for (int i = 0; i < dIn; i++)
                Assert.Equal(before["W_dec"][j * dIn + i] / norm, after["W_dec"][j * dIn + i], 1e-5);
            Assert.Equal(before["b_enc"][j] * norm, after["b_enc"][j], 1e-5 * Math.Max(1, Math.Abs(before["b_enc"][j] * norm)));
            if (before.TryGetValue("threshold", out var theta)) Assert.Equal(theta[j] * norm, after["threshold"][j], 1e-5 * Math.Max(1, theta[j] * norm));
        }
    }

    [Fact]
    public void UnderNormalizationTheSavedWeightsAreRescaledIntoTheTrainingScaleAndBack()
    {
        var saved = Base("\"architecture\": \"relu-april\"", "base");
        using (var plan = TrainingPlan.ForActivations(Settings($"\"steps\": 3, \"lr\": 0, \"normalize_activations\": \"expected_average_only_in\", " +
                                                               $"\"n_batches_for_norm_estimate\": 1, \"from_pretrained_path\": \"{saved.Replace("\\", "/")}\"", "ft")))
            plan.Run();
        var before = Weights(saved);
        var after = Weights(P("ft"));
        foreach (var (name, w) in before)
            for (int i = 0; i < w.Length; i++)
                Assert.True(Math.Abs(w[i] - after[name][i]) <= 1e-5 * Math.Max(1, Math.Abs(w[i])), $"{name}[{i}]: {w[i]} became {after[name][i]}");
    }

    /// <summary>‖x̂ − x‖² summed over d_in, averaged over the rows, of the saved SAE in double.</summary>
    private static double Mse(Sae sae, Tensor x)
    {
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        var y = sae.Decode(sae.Encode(x)).to(ScalarType.Float64);
        return (y - x.to(ScalarType.Float64)).pow(2).sum(1).mean().item<double>();
    }

    private double[] LoggedMse(string run) =>
        File.ReadLines(P(run, "train_log.jsonl")).Select(l => JsonNode.Parse(l)!).Where(n => n["losses"] is not null)
            .Select(n => n["losses"]!["mse_loss"]!.GetValue<double>()).ToArray();

    [Fact]
    public void TheFirstLoggedMseIsTheSavedSaesOnTheFirstBatch()
    {
        var saved = Base("\"architecture\": \"topk\", \"k\": 3", "base");
        using var rows = Rows();
        using var sae = SaeLoader.Load(saved);

        // Without normalisation (the default from a saved SAE) the first batch is rows 0..31 of the file.
        using (var plan = TrainingPlan.ForActivations(Settings($"\"steps\": 4, \"from_pretrained_path\": \"{saved.Replace("\\", "/")}\"", "ft")))
            plan.Run();
        double expected = Mse(sae, rows.narrow(0, 0, Batch));
        Assert.Equal(expected, LoggedMse("ft")[0], 1e-5 * expected);

        // With the estimate over one batch (rows 0..31): the first training batch is rows 32..63, scaled by
        // s = √d_in / mean‖x‖ of rows 0..31, and the same function in that scale has s² times the MSE.
        using (var plan = TrainingPlan.ForActivations(Settings($"\"steps\": 4, \"normalize_activations\": \"expected_average_only_in\", \"n_batches_for_norm_estimate\": 1, " +
                                                               $"\"from_pretrained_path\": \"{saved.Replace("\\", "/")}\"", "ft2")))
            plan.Run();
        double meanNorm = rows.narrow(0, 0, Batch).to(ScalarType.Float64).norm(1).mean().item<double>();
        double s = Math.Sqrt(8) / meanNorm;
        double scaled = s * s * Mse(sae, rows.narrow(0, Batch, Batch));
        Assert.Equal(scaled, LoggedMse("ft2")[0], 1e-4 * scaled);
    }

    [Fact]
    public void TheRunTakesTheSavedSaesArchitectureDSaeAndKAndMayChangeK()
    {
        var saved = Base("\"architecture\": \"topk\", \"k\": 3", "base").Replace("\\", "/");
        using (var plan = TrainingPlan.ForActivations(Settings($"\"steps\": 2, \"from_pretrained_path\": \"{saved}\"", "ft")))
        {
            var slot = Assert.Single(plan.Options.Saes);
            Assert.Equal("topk", slot.Name);
            Assert.Equal(16, slot.Sae.Cfg.DSae);
            Assert.Equal(3, slot.Sae.Cfg.K);
        }
        using (var plan = TrainingPlan.ForActivations(Settings($"\"steps\": 2, \"k\": 5, \"d_sae\": 16, \"architecture\": \"topk\", \"from_pretrained_path\": \"{saved}\"", "ft")))
            Assert.Equal(5, plan.Options.Saes[0].Sae.Cfg.K);
        // A standard SAE trains as relu-april (SAELens's standard trainer: decoder-norm-weighted L1, no norm constraint).
        var relu = Base("\"architecture\": \"relu\"", "relu").Replace("\\", "/");
        using (var plan = TrainingPlan.ForActivations(Settings($"\"steps\": 2, \"from_pretrained_path\": \"{relu}\"", "ft")))
            Assert.Equal("relu-april", plan.Options.Saes[0].Name);
    }

    [Theory]
    [InlineData("\"architecture\": \"relu\"", "the SAE is a 'topk' SAE, and --arch relu trains 'standard' SAEs: give --arch topk or leave it out")]
    [InlineData("\"architecture\": \"topk,relu\"", "a run from a saved SAE trains that one SAE; this run names topk, relu")]
    [InlineData("\"d_sae\": 32", "the SAE has d_sae 16, and this run asks for d_sae 32 (--dict-size): give 16 or leave it out")]
    [InlineData("\"expansion_factor\": 4", "the SAE has d_sae 16, and --expansion 4 asks for 32 at d_in 8: leave it out")]
    [InlineData("\"b_dec_init_method\": \"geometric_median\"", "b_dec_init_method sets how a new SAE is initialised; the run starts from the saved SAE's weights: leave it out")]
    [InlineData("\"lr\": -1", "--lr -1: expected a positive, finite learning rate (0 only with --from-pretrained)")]
    public void ARunThatDoesNotFitTheSavedSaeIsRefusedNamingTheMismatch(string fields, string expected)
    {
        var saved = Base("\"architecture\": \"topk\", \"k\": 3", "base").Replace("\\", "/");
        var e = Assert.Throws<SaeSharpException>(() => TrainingPlan.ForActivations(Settings($"\"steps\": 2, {fields}, \"from_pretrained_path\": \"{saved}\"", "ft")));
        Assert.Contains(expected, e.Message);
        Assert.DoesNotContain('\n', e.Message);
    }

    [Theory]
    [InlineData("\"architecture\": \"topk\", \"k\": 3", "\"decoder_init_norm\": 0.1", "decoder_init_norm")]
    [InlineData("\"architecture\": \"jumprelu\"", "\"decoder_init_norm\": 0.1, \"jumprelu_init_threshold\": 0.01", "decoder_init_norm, jumprelu_init_threshold")]
    public void ASaeLensConfigAsToDictWritesItTrainsFromTheSavedSaeWithItsInitialisationDefaultsIgnored(string arch, string init, string named)
    {
        // SAELens's to_dict() writes every field of the nested sae object, the initialisation ones at their defaults
        // included, and its runner ignores them with from_pretrained_path.
        var saved = Base(arch, "base").Replace("\\", "/");
        using (var plan = TrainingPlan.ForActivations(Settings($"\"steps\": 2, \"sae\": {{ {arch}, {init} }}, \"from_pretrained_path\": \"{saved}\"", "ft")))
        {
            Assert.Single(plan.Options.Saes);
            Assert.Contains(plan.Notes, n => n.StartsWith($"--from-pretrained {saved}: ignored: {named}", StringComparison.Ordinal));
        }
        // Another value asks for an initialisation that cannot happen.
        var e = Assert.Throws<SaeSharpException>(() => TrainingPlan.ForActivations(
            Settings($"\"steps\": 2, \"sae\": {{ {arch}, \"decoder_init_norm\": 0.5 }}, \"from_pretrained_path\": \"{saved}\"", "ft2")));
        Assert.EndsWith("decoder_init_norm sets how a new SAE is initialised; the run starts from the saved SAE's weights: leave it out", e.Message);
    }

    [Fact]
    public void ASavedSaeOfAnotherWidthIsRefused()
    {
        using (var rows = randn(300, 6, generator: new Generator(5)))
            SafeTensors.Save(P("six.safetensors"), new Dictionary<string, Tensor> { ["activations"] = rows });
        var saved = Base("\"architecture\": \"topk\", \"k\": 3", "base").Replace("\\", "/");
        var s = Settings($"\"steps\": 2, \"from_pretrained_path\": \"{saved}\"", "ft");
        s.Activations = P("six.safetensors");
        var e = Assert.Throws<SaeSharpException>(() => TrainingPlan.ForActivations(s));
        Assert.Equal($"--from-pretrained {saved}: the SAE has d_in 8, and the activations have width 6", e.Message);
        Assert.False(Directory.Exists(P("ft")));
    }

    [Fact]
    public void AResumeMustContinueARunFromTheSameSavedSae()
    {
        var a = Base("\"architecture\": \"topk\", \"k\": 3", "a").Replace("\\", "/");
        var b = Base("\"architecture\": \"topk\", \"k\": 3", "b").Replace("\\", "/");
        using (var plan = TrainingPlan.ForActivations(Settings($"\"steps\": 4, \"from_pretrained_path\": \"{a}\"", "ft")))
            plan.Run();
        using (TrainingPlan.ForActivations(Settings($"\"steps\": 4, \"from_pretrained_path\": \"{a}\"", "ft"), resume: true)) { }
        var e = Assert.Throws<SaeSharpException>(() => TrainingPlan.ForActivations(Settings($"\"steps\": 4, \"from_pretrained_path\": \"{b}\"", "ft"), resume: true));
        Assert.Contains($"--from-pretrained {b}: --resume continues the run of ", e.Message);
        Assert.Contains($"which started from {a}: leave --from-pretrained out", e.Message);
    }

    private static void Ok((int Exit, string Out, string Err) r) => Assert.True(r.Exit == 0, r.Err + r.Out);

    [Fact]
    public void FromAModelTheSavedSaesHookIsTheRunsAndAnotherHookIsRefused()
    {
        Ok(Cli.CliRunner.Run("corpus", "--out", P("c.jsonl"), "--docs", "200", "--seed", "4"));
        string[] run = ["train", "--model", "builtin", "--dataset", P("c.jsonl"), "--tokens", "2048", "--context-size", "32", "--batch-size", "128",
            "--steps", "2", "--eval-rows", "128"];
        Ok(Cli.CliRunner.Run([.. run, "--hook", "blocks.1.hook_resid_post", "--arch", "topk", "--k", "4", "--dict-size", "32", "--out", P("base")]));
        // No --hook, --arch, --k or --dict-size: the saved SAE's.
        Ok(Cli.CliRunner.Run([.. run, "--from-pretrained", P("base"), "--out", P("ft")]));
        var cfg = JsonNode.Parse(File.ReadAllText(P("ft", "cfg.json")))!;
        Assert.Equal("blocks.1.hook_resid_post", cfg["metadata"]!["hook_name"]!.GetValue<string>());
        Assert.Equal("topk", cfg["architecture"]!.GetValue<string>());
        Assert.Equal(4, cfg["k"]!.GetValue<int>());
        Assert.Equal(32, cfg["d_sae"]!.GetValue<int>());
        var r = Cli.CliRunner.Run([.. run, "--from-pretrained", P("base"), "--hook", "blocks.0.hook_resid_post", "--out", P("bad")]);
        Assert.Equal(1, r.Exit);
        Assert.Contains($"--from-pretrained {P("base")}: the SAE reads blocks.1.hook_resid_post, and this run trains at blocks.0.hook_resid_post: " +
                        "give --hook blocks.1.hook_resid_post (hook_name) or leave it out", r.Err);
        Assert.False(Directory.Exists(P("bad")));
    }

    [Fact]
    public void ARunStartsFromAReleaseSaeNamedAsTheOtherCommandsNameIt()
    {
        // The same resolution as `sae info` / `--sae`: RELEASE/SAE_ID is downloaded from the (fake) hub into the cache.
        using var server = new Hub.FakeHubServer();
        var cfg = new SaeConfig { Architecture = SaeArchitectures.Standard, DIn = 8, DSae = 16, Metadata = new SaeMetadata { HookName = "blocks.4.hook_mlp_out" } };
        using (var sae = SaeFactory.Create(cfg))
        {
            using (no_grad())
                foreach (var (_, w) in sae.named_parameters()) w.uniform_(-1, 1, generator: new Generator(9));
            SaeLensFormat.Save(sae, P("src"));
        }
        server.Repos["ctigges/pythia-70m-deduped__mlp-sm_processed"] = new()
        {
            ["4-mlp-sm/cfg.json"] = new(File.ReadAllBytes(P("src", "cfg.json"))),
            ["4-mlp-sm/sae_weights.safetensors"] = new(File.ReadAllBytes(P("src", "sae_weights.safetensors")), Lfs: true),
        };
        Rows().Dispose();
        var r = Cli.CliRunner.RunWithEnvironment(new Dictionary<string, string> { ["HF_ENDPOINT"] = server.Endpoint, ["HF_HUB_CACHE"] = P("cache") },
            "train", "--activations", P("a.safetensors"), "--from-pretrained", "pythia-70m-deduped-mlp-sm/blocks.4.hook_mlp_out", "--lr", "0",
            "--steps", "2", "--batch-size", "32", "--eval-rows", "64", "--out", P("ft"));
        Ok(r);
        var written = JsonNode.Parse(File.ReadAllText(P("ft", "cfg.json")))!;
        Assert.Equal("standard", written["architecture"]!.GetValue<string>());
        Assert.Equal("blocks.4.hook_mlp_out", written["metadata"]!["hook_name"]!.GetValue<string>());
        var before = Weights(P("src"));
        var after = Weights(P("ft"));
        foreach (var (name, w) in before) Assert.Equal(w, after[name]);
    }
}
