using System.Text.Json.Nodes;
using SaeSharp.Activations;
using SaeSharp.IO;
using SaeSharp.Kernels;
using SaeSharp.Models;
using SaeSharp.Pipelines;
using SaeSharp.Training;
using static TorchSharp.torch;

namespace SaeSharp.Tests.Pipelines;

/// <summary>The policies of <c>sae train</c>, reached from the library: settings under SAELens's names, the default
/// normalisation, the cadence, the token budget and the provenance in cfg.json.</summary>
public class TrainingPlanTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("plan-").FullName;
    public void Dispose() => Directory.Delete(_dir, true);

    private string P(params string[] parts) => Path.Combine([_dir, .. parts]);

    [Fact]
    public void SaeLensNamesAndTheOlderNamesReadTheSameSettings()
    {
        var saeLens = TrainingSettings.FromJson("""{"architecture": "relu,topk", "d_sae": 96, "expansion_factor": 4, "l1_coefficient": 2.5, "k": 3}""");
        var old = TrainingSettings.FromJson("""{"arch": "relu,topk", "dict_size": 96, "expansion": 4, "l1": 2.5, "k": 3}""");
        foreach (var s in new[] { saeLens, old })
        {
            Assert.Equal(["relu", "topk"], s.Recipes);
            Assert.Equal(96, s.DSae);
            Assert.Equal(4, s.ExpansionFactor);
            Assert.Equal(2.5, s.L1Coefficient);
            Assert.Equal(3, s.K);
        }
        var e = Assert.Throws<SaeSharpException>(() => TrainingSettings.FromJson("""{"d_sae": 8, "dict_size": 16}""", "run.json"));
        Assert.Contains("run.json", e.Message);
        Assert.Contains("dict_size", e.Message);
        Assert.Equal(16 * 4, TrainingSettings.FromJson("""{"expansion_factor": 4}""").DSaeFor(16));
        Assert.Equal(8 * 16, new TrainingSettings().DSaeFor(16));
        Assert.Throws<SaeSharpException>(() => TrainingSettings.FromJson("""{"architecture": "relu,nope"}""").Recipes);
    }

    [Fact]
    public void SaeLensRunLengthNamesSetTheStepsAndAMisspeltFieldIsAnError()
    {
        // SAELens: total_training_steps = training_tokens // train_batch_size_tokens.
        var s = TrainingSettings.FromJson("""{"architecture": "topk", "k": 4, "training_tokens": 5120, "train_batch_size_tokens": 256}""");
        Assert.Equal(256, s.BatchSize);
        Assert.Equal(20, s.RunSteps);
        s.Steps = 7;   // a flag overrides the file's budget
        Assert.Equal(7, s.RunSteps);
        Assert.Equal(33, TrainingSettings.FromJson("""{"total_training_steps": 33}""").RunSteps);
        Assert.Equal(1000 / 100, TrainingSettings.FromJson("""{"training_tokens": 1000, "batch_size": 100}""").RunSteps);
        Assert.Null(new TrainingSettings().RunSteps);

        var e = Assert.Throws<SaeSharpException>(() => TrainingSettings.FromJson("""{"l1_coeficient": 3, "k": 2}""", "run.json"));
        Assert.Contains("run.json", e.Message);
        Assert.Contains("'l1_coeficient' (did you mean 'l1_coefficient'?)", e.Message);
        // SAELens's wandb fields cannot change the SAE: accepted, and named in a note (RunnerConfigFieldsTests).
        Assert.Contains(TrainingSettings.FromJson("""{"wandb_project": "x"}""").Notes, n => n.Contains("wandb_project"));
        e = Assert.Throws<SaeSharpException>(() => TrainingSettings.FromJson("""{"batch_size": 128, "train_batch_size_tokens": 256}"""));
        Assert.Contains("differ", e.Message);
        Assert.Equal(128, TrainingSettings.FromJson("""{"batch_size": 128, "train_batch_size_tokens": 128}""").BatchSize);
        Assert.Throws<SaeSharpException>(() => TrainingSettings.FromJson("""{"steps": 10, "training_tokens": 5120}"""));
    }

    [Fact]
    public void RunsNormaliseUnlessTheConfigNamesANormalisation()
    {
        Assert.Equal("expected_average_only_in", new TrainingSettings().Trainer.NormalizeActivations);
        var s = TrainingSettings.FromJson("""{"k": 2, "lr_warm_up_steps": 7}""");
        Assert.Equal("expected_average_only_in", s.Trainer.NormalizeActivations);
        Assert.Equal(7, s.Trainer.LrWarmUpSteps);
        Assert.Contains("lr_warm_up_steps", s.GivenTrainerFields);
        Assert.Equal("none", TrainingSettings.FromJson("""{"normalize_activations": "none"}""").Trainer.NormalizeActivations);
        Assert.Throws<SaeSharpException>(() => TrainingSettings.FromJson("""[1, 2]"""));
        Assert.Throws<SaeSharpException>(() => TrainingSettings.FromJson("""{"k": "two"}"""));
        Assert.Throws<SaeSharpException>(() => new TrainingSettings { CandidatePass = "maybe" }.ParsedCandidatePass);
        Assert.Equal(CandidatePass.Off, new TrainingSettings { CandidatePass = " OFF " }.ParsedCandidatePass);
    }

    [Theory]
    [InlineData(1000L, 0L, 100L, 10)]   // a tenth of the run; 100 log lines
    [InlineData(50L, 0L, 5L, 1)]        // short runs log every step
    [InlineData(5L, 0L, 1L, 1)]         // at least every step
    [InlineData(1000L, 7L, 7L, 10)]     // a given cadence is kept
    [InlineData(1_000_000L, 0L, 100_000L, 100)] // never rarer than log_every_steps
    public void CheckpointAndLogCadenceFollowTheRunLength(long steps, long every, long checkpointEvery, int logEvery)
    {
        var trainer = new TrainerConfig();
        TrainingPlan.ApplyCadence(trainer, steps, every);
        Assert.Equal(checkpointEvery, trainer.CheckpointEverySteps);
        Assert.Equal(logEvery, trainer.LogEverySteps);
    }

    [Fact]
    public void ATokenBudgetIsForStepsTheInitialisationRowsComeOnTop()
    {
        // batch 4096: the norm estimate is cut to 16384 rows (4 batches), the b_dec sample stays 8192 rows.
        var t = new TrainerConfig { NormalizeActivations = "expected_average_only_in" };
        Assert.Equal(4 * 4096 + 8192, TrainingPlan.InitializationRows(t, 4096));
        Assert.Equal(4, t.NBatchesForNormEstimate);
        // batch 64: 100 batches for the estimate (the default), b_dec sample cut to 4 batches.
        Assert.Equal(100 * 64 + 4 * 64, TrainingPlan.InitializationRows(new TrainerConfig { NormalizeActivations = "expected_average_only_in" }, 64));
        // No normalisation: only the b_dec sample.
        Assert.Equal(8192, TrainingPlan.InitializationRows(new TrainerConfig { NormalizeActivations = "none" }, 4096));
    }

    [Fact]
    public void ACacheManifestBecomesTheSaesProvenance()
    {
        var m = new ActivationCacheManifest
        {
            Model = "gpt2", Hook = "blocks.3.hook_resid_pre", ContextSize = 64, PrependBos = false, DatasetPath = "data.jsonl",
            ExcludeTokenIds = [50256], ModelFromPretrainedKwargs = new() { ["fold_ln"] = true },
        };
        var md = TrainingPlan.MetadataOf(m);
        Assert.Equal(("gpt2", "blocks.3.hook_resid_pre", 64, false, "data.jsonl", true), (md.ModelName, md.HookName, md.ContextSize, md.PrependBos, md.DatasetPath, md.ExcludeSpecialTokens));
        Assert.True(md.ModelFromPretrainedKwargs!["fold_ln"].GetBoolean());
        var none = TrainingPlan.MetadataOf(new ActivationCacheManifest());
        Assert.Null(none.ModelFromPretrainedKwargs);
        Assert.False(none.ExcludeSpecialTokens);
        Assert.False(md.Extra?.ContainsKey("hook_name_out") ?? false);
        // A transcoder cache (sae cache --mode in_to_out): its target hook is the hook the transcoder's output replaces,
        // as when it trains on the model directly (sae eval --model splices the output there).
        var transcoder = TrainingPlan.MetadataOf(new ActivationCacheManifest { Model = "gpt2", Hook = "blocks.0.ln2.hook_normalized", TargetHook = "blocks.0.hook_mlp_out" });
        Assert.Equal("blocks.0.hook_mlp_out", transcoder.Extra!["hook_name_out"].GetString());

        var fromModel = TrainingPlan.MetadataOf(new ModelDataOptions { ModelPath = "/models/tiny-gpt2/", DatasetPath = "d.txt" }, "blocks.0.ln2.hook_normalized", "blocks.0.hook_mlp_out");
        Assert.Equal(("tiny-gpt2", "blocks.0.ln2.hook_normalized", 128, true, false), (fromModel.ModelName, fromModel.HookName, fromModel.ContextSize, fromModel.PrependBos, fromModel.ExcludeSpecialTokens));
        Assert.Equal("blocks.0.hook_mlp_out", fromModel.Extra!["hook_name_out"].GetString());

        // A model downloaded from the hub sits in a snapshot folder named by its commit: its name is the repo id.
        var snapshot = Directory.CreateDirectory(P("hub", "models--EleutherAI--pythia-tiny", "snapshots", "0123abcd")).FullName;
        File.WriteAllText(Path.Combine(snapshot, "config.json"), """{"model_type": "gpt_neox"}""");
        var hub = TrainingPlan.MetadataOf(new ModelDataOptions { ModelPath = snapshot, DatasetPath = "d.txt" }, "blocks.0.hook_resid_post");
        Assert.Equal("EleutherAI/pythia-tiny", hub.ModelName);
        File.WriteAllText(Path.Combine(snapshot, "config.json"), """{"model_type": "gpt_neox", "_name_or_path": "pythia-tiny-local"}""");
        Assert.Equal("pythia-tiny-local", SaeSharp.Models.ModelLoader.NameOf(snapshot));
    }

    [Fact]
    public void APlanOnActivationFilesTrainsWithTheRecipesAndWritesTheSaes()
    {
        SafeTensors.Save(P("a.safetensors"), new Dictionary<string, Tensor> { ["activations"] = randn(1200, 8, generator: new Generator(5)) });
        var s = TrainingSettings.FromJson($$"""
            {"activations": "{{P("a.safetensors").Replace("\\", "/")}}", "architecture": "relu,topk", "k": 2, "expansion_factor": 2,
             "steps": 1000, "batch_size": 32, "eval_rows": 200, "out": "{{P("run").Replace("\\", "/")}}", "l1_warm_up_steps": 3}
            """);
        using (var plan = TrainingPlan.ForActivations(s))
        {
            var o = plan.Options;
            Assert.Equal(200, o.EvalRows);
            Assert.Equal(1000, o.Trainer.TotalTrainingSteps);
            Assert.Equal(100, o.Trainer.CheckpointEverySteps);
            Assert.Equal("expected_average_only_in", o.Trainer.NormalizeActivations);
            Assert.Equal(["relu", "topk"], o.Saes.Select(x => x.Name));
            Assert.All(o.Saes, x => Assert.Equal(16, x.Sae.Cfg.DSae));
            var relu = o.Saes[0].Config!;
            // Towards Monosemanticity's resampling at T/4, T/2, 3T/4 for relu runs of 1000 steps or more.
            Assert.Equal([250L, 500L, 750L], relu.ResampleSteps!);
            Assert.Equal(3, relu.L1WarmUpSteps); // given in the config: the recipe leaves it alone
            Assert.Null(o.Saes[1].Config!.ResampleSteps);
            Assert.Equal(P("a.safetensors").Replace("\\", "/"), o.Saes[0].Sae.Cfg.Metadata.DatasetPath);
        }
        s.Steps = 20;
        s.Architecture = "topk";
        using (var plan = TrainingPlan.ForActivations(s))
        {
            var result = plan.Run();
            Assert.Equal(20, result.Steps);
            var cfg = JsonNode.Parse(File.ReadAllText(P("run", "cfg.json")))!;
            Assert.Equal(16, cfg["d_sae"]!.GetValue<int>());
            Assert.True(File.Exists(P("run", TrainingRun.MetricsFile)));
        }
    }
    /// <summary>A run given only its data, architecture and k takes the defaults that <c>sae train --help</c> states (the
    /// test reads them there): 1000 steps of 4096 rows, seed 42, a checkpoint every tenth of the run, d_sae = 8 × d_in, and
    /// held-out rows min(16384, a tenth of the data). SAELens's n_checkpoints sets the interval to steps / n.</summary>
    [Fact]
    public void APlanGivenNoSizesTakesTheDefaultsTheHelpStates()
    {
        // Help descriptions wrap at the console width: compare with runs of white space made one space.
        var help = System.Text.RegularExpressions.Regex.Replace(SaeSharp.Tests.Cli.CliRunner.Run("train", "--help").Out, @"\s+", " ");
        foreach (var stated in new[] { "Training steps (default 1000)", "Rows per step (default 4096)", "(default 42)", "d_sae = expansion × d_in (default 8)",
                     "Checkpoint every N steps (default: steps/10)", "(default 16384, at most a tenth of the data)" })
            Assert.Contains(stated, help);

        SafeTensors.Save(P("a.safetensors"), new Dictionary<string, Tensor> { ["activations"] = randn(500, 8, generator: new Generator(3)) });
        var s = new TrainingSettings { Activations = P("a.safetensors"), Architecture = "topk", K = 2, Out = P("run") };
        using (var plan = TrainingPlan.ForActivations(s))
        {
            var t = plan.Options.Trainer;
            Assert.Equal(1000, t.TotalTrainingSteps);
            Assert.Equal(4096, t.TrainBatchSizeTokens);
            Assert.Equal(42, t.Seed);
            Assert.Equal(100, t.CheckpointEverySteps);
            Assert.Equal(64, plan.Options.Saes[0].Sae.Cfg.DSae);
            Assert.Equal(50, plan.Options.EvalRows);
        }

        var n = TrainingSettings.FromJson($$"""
            {"activations": "{{P("a.safetensors").Replace("\\", "/")}}", "architecture": "topk", "k": 2, "total_training_steps": 100,
             "n_checkpoints": 4, "out": "{{P("run").Replace("\\", "/")}}"}
            """);
        using (var plan = TrainingPlan.ForActivations(n))
            Assert.Equal(25, plan.Options.Trainer.CheckpointEverySteps);
    }

    /// <summary>On a model, a token budget sets the steps as SAELens does (total_training_steps = training_tokens //
    /// train_batch_size_tokens), whether it comes from --tokens or from the config's training_tokens, which is then also
    /// the harvest budget; the end-of-training evaluation in the model covers at least one window of the default context
    /// size 128.</summary>
    [Fact]
    public void AModelRunsStepsComeFromItsTokenBudget()
    {
        var corpus = P("c.jsonl");
        SaeSharp.Corpus.LabelledCorpus.Write(corpus, 1, 40);
        var data = new ModelDataOptions { ModelPath = SaeSharp.LanguageModels.BuiltinModel.Folder, DatasetPath = corpus, Tokens = 5000 };
        var s = new TrainingSettings { Architecture = "topk", K = 2, BatchSize = 256, EvalRows = 64, Out = P("m") };
        using (var plan = TrainingPlan.ForModel(s, data, SaeSharp.LanguageModels.BuiltinModel.MiddleHook))
        {
            Assert.Equal(5000 / 256, plan.Options.Trainer.TotalTrainingSteps);
            Assert.Equal(19, plan.Options.Trainer.TotalTrainingSteps);
            Assert.Equal(128, plan.ModelEvalTokens);
        }
        var fromConfig = TrainingSettings.FromJson("""{"architecture": "topk", "k": 2, "training_tokens": 5000, "train_batch_size_tokens": 256, "eval_rows": 64}""");
        fromConfig.Out = P("m2");
        using (var plan = TrainingPlan.ForModel(fromConfig, data with { Tokens = null }, SaeSharp.LanguageModels.BuiltinModel.MiddleHook))
        {
            Assert.Equal(19, plan.Options.Trainer.TotalTrainingSteps);
            Assert.Equal(5000, plan.ModelData!.Tokens);
        }
    }

    /// <summary>A budget that sets the steps counts trained rows (SAELens's training_tokens): with BOS and the document
    /// separators left out, a window gives fewer rows than tokens (an eighth fewer in windows of 8), and the run still reaches every step, reading further
    /// into the data, instead of ending early as if the data had run out.</summary>
    [Fact]
    public void ABudgetWithSpecialTokensLeftOutReachesEveryStep()
    {
        var corpus = P("c.jsonl");
        SaeSharp.Corpus.LabelledCorpus.Write(corpus, 1, 400);   // about 30,000 tokens: more than the run needs
        var data = new ModelDataOptions
        {
            // "builtin" names the shipped model in the library as --model builtin does in the CLI.
            ModelPath = "builtin", DatasetPath = corpus, Tokens = 8192, ContextSize = 8, ExcludeSpecialTokens = true,
        };
        Assert.Equal(SaeSharp.LanguageModels.BuiltinModel.Folder, data.ModelPath);
        Assert.Equal(SaeSharp.LanguageModels.BuiltinModel.Folder, (data with { ModelPath = "Builtin" }).ModelPath);
        Assert.Equal(P("elsewhere"), (data with { ModelPath = P("elsewhere") }).ModelPath);
        var s = new TrainingSettings { Architecture = "topk", K = 2, DSae = 32, BatchSize = 256, EvalRows = 64, Out = P("x") };
        using var plan = TrainingPlan.ForModel(s, data, SaeSharp.LanguageModels.BuiltinModel.MiddleHook);
        var result = plan.Run();
        Assert.Equal(TrainingStatus.Completed, result.Status);
        Assert.Equal(8192 / 256, result.Steps);
        Assert.Equal(8192, result.Tokens);   // every step a full batch
    }

    /// <summary>jumprelu_skip_transcoder trains as jumprelu: SAELens's jumprelu fields of a config (l0_coefficient,
    /// jumprelu_bandwidth, jumprelu_init_threshold, pre_act_loss_coefficient, l0_warm_up_steps) reach it, and a field of the
    /// ReLU family's skip_transcoder is refused naming the recipes that take it. Without target_name the recipe is refused.</summary>
    [Fact]
    public void TheJumpReluFieldsOfAConfigReachAJumpReluSkipTranscoder()
    {
        SafeTensors.Save(P("pairs.safetensors"), new Dictionary<string, Tensor>
        {
            ["activations"] = randn(600, 8, generator: new Generator(3)),
            ["targets"] = randn(600, 8, generator: new Generator(4)),
        });
        string Json(string arch, string fields, bool targets = true) =>
            "{\"activations\": \"" + P("pairs.safetensors").Replace("\\", "/") + "\", " + (targets ? "\"target_name\": \"targets\", " : "") +
            "\"architecture\": \"" + arch + "\", \"expansion_factor\": 2, \"steps\": 40, \"batch_size\": 32, \"eval_rows\": 100, " +
            "\"out\": \"" + P(arch).Replace("\\", "/") + "\"" + fields + "}";
        var s = TrainingSettings.FromJson(Json("jumprelu_skip_transcoder",
            ", \"l0_coefficient\": 2, \"jumprelu_bandwidth\": 0.01, \"jumprelu_init_threshold\": 0.02, \"pre_act_loss_coefficient\": 0.003, \"l0_warm_up_steps\": 7"));
        using (var plan = TrainingPlan.ForActivations(s))
        {
            var slot = plan.Options.Saes[0];
            var t = slot.Sae.Training;
            Assert.Equal(("jumprelu_skip_transcoder", true), (slot.Sae.Cfg.Architecture, slot.Sae.HasSkip));
            Assert.Equal((2.0, 0.01, 0.02, (double?)0.003, 7L), (t.SparsityCoefficient, t.Bandwidth, t.InitialThreshold, t.PreActLossCoefficient, slot.Config!.L1WarmUpSteps));
        }
        var e = Assert.Throws<SaeSharpException>(() => TrainingPlan.ForActivations(TrainingSettings.FromJson(Json("skip_transcoder", ", \"l0_coefficient\": 2"))));
        Assert.Contains("'l0_coefficient' applies to jumprelu, jumprelu_skip_transcoder", e.Message);
        e = Assert.Throws<SaeSharpException>(() => TrainingPlan.ForActivations(TrainingSettings.FromJson(Json("jumprelu_skip_transcoder", "", targets: false))));
        Assert.Contains("--mode in_to_out", e.Message);
    }

    /// <summary>A transcoder is an SAE whose targets are another activation than its inputs, whatever the widths: an MLP's
    /// input → output (d_out = d_in = d_model) is one, as in SAELens (<c>TranscoderConfig</c>: <c>d_out</c>, and
    /// <c>apply_b_dec_to_input</c> false, which it requires). It used to be told by d_out ≠ d_in, so an MLP transcoder was
    /// saved as a plain "standard" SAE that subtracted its output-space b_dec from its input.</summary>
    [Fact]
    public void ATranscoderOfEqualWidthsIsSavedAsATranscoder()
    {
        // Activation files with a target tensor of the same width.
        SafeTensors.Save(P("pairs.safetensors"), new Dictionary<string, Tensor>
        {
            ["activations"] = randn(600, 8, generator: new Generator(3)),
            ["targets"] = randn(600, 8, generator: new Generator(4)),
        });
        var s = TrainingSettings.FromJson($$"""
            {"activations": "{{P("pairs.safetensors").Replace("\\", "/")}}", "target_name": "targets", "architecture": "relu",
             "expansion_factor": 2, "steps": 3, "batch_size": 32, "eval_rows": 100, "out": "{{P("tc").Replace("\\", "/")}}"}
            """);
        using (var plan = TrainingPlan.ForActivations(s))
        {
            var cfg = plan.Options.Saes[0].Sae.Cfg;
            Assert.Equal((8, false), (cfg.DOut, cfg.ApplyBDecToInput));
            plan.Run();
        }
        var saved = JsonNode.Parse(File.ReadAllText(P("tc", "cfg.json")))!;
        Assert.Equal(("transcoder", 8, false), (saved["architecture"]!.GetValue<string>(), saved["d_out"]!.GetValue<int>(), saved["apply_b_dec_to_input"]!.GetValue<bool>()));

        // The same files without target_name: an SAE of the inputs.
        s.TargetName = null;
        s.Out = P("sae");
        using (var plan = TrainingPlan.ForActivations(s))
            Assert.Equal((null, true), (plan.Options.Saes[0].Sae.Cfg.DOut, plan.Options.Saes[0].Sae.Cfg.ApplyBDecToInput));

        // The built-in model's MLP, input → output (d_model both).
        var corpus = P("c.jsonl");
        SaeSharp.Corpus.LabelledCorpus.Write(corpus, 1, 40);
        var data = new ModelDataOptions { ModelPath = SaeSharp.LanguageModels.BuiltinModel.Folder, DatasetPath = corpus, Tokens = 2000 };
        var m = new TrainingSettings { Architecture = "relu", BatchSize = 256, EvalRows = 64, Out = P("mlp") };
        using (var plan = TrainingPlan.ForModel(m, data, "blocks.1.mlp", HarvestMode.InToOut))
        {
            var cfg = plan.Options.Saes[0].Sae.Cfg;
            Assert.Equal((cfg.DIn, false), (cfg.DOut, cfg.ApplyBDecToInput));
            Assert.Equal("blocks.1.hook_mlp_out", cfg.Metadata.Extra!["hook_name_out"].GetString());
        }
    }

    /// <summary><c>deterministic</c> fixes the two choices made from timings (the candidate pass's <c>auto</c> runs as
    /// <c>off</c>, ReLU's sparse pass from 5 % density) and keeps a candidate pass the settings name; without it both stay
    /// measured.</summary>
    [Theory]
    [InlineData(false, "auto", CandidatePass.Auto, double.NaN)]
    [InlineData(true, "auto", CandidatePass.Off, 0.05)]
    [InlineData(true, "on", CandidatePass.On, 0.05)]
    public void DeterministicRunsFixTheTimedChoices(bool deterministic, string candidatePass, CandidatePass expectedPass, double expectedDensity)
    {
        SafeTensors.Save(P("d.safetensors"), new Dictionary<string, Tensor> { ["activations"] = randn(600, 8, generator: new Generator(7)) });
        var s = TrainingSettings.FromJson($$"""
            {"activations": "{{P("d.safetensors").Replace("\\", "/")}}", "architecture": "relu,topk,relu-april", "k": 2, "expansion_factor": 2,
             "steps": 10, "batch_size": 32, "eval_rows": 100, "out": "{{P("d").Replace("\\", "/")}}",
             "candidate_pass": "{{candidatePass}}", "deterministic": {{(deterministic ? "true" : "false")}} }
            """);
        Assert.Equal(deterministic, s.Deterministic);
        using var plan = TrainingPlan.ForActivations(s);
        var saes = plan.Options.Saes.Select(x => x.Sae).ToList();
        Assert.Equal(expectedPass, saes[1].Training.CandidatePass);
        foreach (var relu in new[] { saes[0], saes[2] }.Cast<SaeSharp.Saes.StandardSae>())
        {
            Assert.Equal(expectedDensity, relu.SparseTrainingDensity);
            Assert.Equal(double.IsNaN(expectedDensity) ? null : expectedDensity, relu.Training.SparsePassDensity);
        }
    }

    /// <summary>issue #15 §2: cfg.json records the target and the coefficient the controller ended with (SAELens's
    /// l1_coefficient; l0_coefficient for JumpReLU), which differs from the one it started from.</summary>
    [Theory]
    [InlineData("relu", "l1_coefficient")]
    [InlineData("jumprelu", "l0_coefficient")]
    public void TargetL0RunsRecordTheTargetAndTheFinalCoefficient(string arch, string key)
    {
        SafeTensors.Save(P("t.safetensors"), new Dictionary<string, Tensor> { ["activations"] = randn(1200, 8, generator: new Generator(6)) });
        var s = TrainingSettings.FromJson($$"""
            {"activations": "{{P("t.safetensors").Replace("\\", "/")}}", "architecture": "{{arch}}", "expansion_factor": 2,
             "steps": 30, "batch_size": 32, "eval_rows": 200, "target_l0": 3, "out": "{{P("t" + arch).Replace("\\", "/")}}"}
            """);
        using var plan = TrainingPlan.ForActivations(s);
        var sae = plan.Options.Saes[0].Sae;
        double start = sae.Training.SparsityCoefficient;
        plan.Run();
        var cfg = JsonNode.Parse(File.ReadAllText(P("t" + arch, "cfg.json")))!;
        Assert.Equal(3, cfg["target_l0"]!.GetValue<double>());
        double recorded = cfg[key]!.GetValue<double>();
        Assert.Equal(sae.Training.SparsityCoefficient, recorded, 12);
        Assert.NotEqual(start, recorded);
    }
}
