using System.Text.Json.Nodes;
using SaeSharp.IO;
using SaeSharp.Pipelines;
using SaeSharp.Saes;
using SaeSharp.Training;
using static TorchSharp.torch;

namespace SaeSharp.Tests.Training;

/// <summary>
/// SAELens 6.37.6 (upstream 69c4c62b) runner configs: every field of its <c>LanguageModelSAERunnerConfig.to_dict()</c> is
/// read by <c>sae train --config</c>, including the fields added since 6.18 (activations_mixing_fraction,
/// logger.log_weights_to_wandb, the matryoshka SAE's use_matryoshka_aux_loss), and a misspelt field is still refused.
/// </summary>
public class SaeLensRunnerConfig637Tests
{
    /// <summary>The default to_dict() of a 6.37.6 run: 6.18's (<see cref="SaeLensRunnerConfigDefaultsTests.DefaultToDict"/>)
    /// with what sae_lens/config.py added since (activations_mixing_fraction 0.5; LoggingConfig.log_weights_to_wandb True),
    /// the version strings 6.37.6, and the matryoshka config's use_matryoshka_aux_loss False.</summary>
    public static JsonObject DefaultToDict637(string architecture, string own)
    {
        var d = SaeLensRunnerConfigDefaultsTests.DefaultToDict(architecture, own);
        d["activations_mixing_fraction"] = 0.5;
        d["logger"]!["log_weights_to_wandb"] = true;
        d["sae_lens_version"] = "6.37.6";
        d["sae_lens_training_version"] = "6.37.6";
        d["sae"]!["metadata"] = new JsonObject { ["sae_lens_version"] = "6.37.6", ["sae_lens_training_version"] = "6.37.6" };
        if (architecture == "matryoshka_batchtopk" && !d["sae"]!.AsObject().ContainsKey("use_matryoshka_aux_loss")) d["sae"]!["use_matryoshka_aux_loss"] = false;
        return d;
    }

    [Fact]
    public void TheTestsToDictHoldsEveryRunnerConfigFieldOfSaeLens6376()
    {
        // The dataclass fields of LanguageModelSAERunnerConfig and LoggingConfig in sae_lens/config.py at 69c4c62b, in
        // their order there.
        string[] fields =
        [
            "sae", "model_name", "model_class_name", "hook_name", "hook_eval", "hook_head_index", "dataset_path",
            "dataset_trust_remote_code", "streaming", "is_dataset_tokenized", "context_size", "use_cached_activations",
            "cached_activations_path", "from_pretrained_path", "n_batches_in_buffer", "training_tokens",
            "store_batch_size_prompts", "seqpos_slice", "disable_concat_sequences", "sequence_separator_token",
            "activations_mixing_fraction", "device", "act_store_device", "seed", "dtype", "prepend_bos", "autocast",
            "autocast_lm", "compile_llm", "llm_compilation_mode", "compile_sae", "sae_compilation_mode",
            "train_batch_size_tokens", "adam_beta1", "adam_beta2", "lr", "lr_scheduler_name", "lr_warm_up_steps", "lr_end",
            "lr_decay_steps", "n_restart_cycles", "dead_feature_window", "feature_sampling_window", "dead_feature_threshold",
            "n_eval_batches", "eval_batch_size_prompts", "logger", "n_checkpoints", "checkpoint_path", "save_final_checkpoint",
            "output_path", "resume_from_checkpoint", "verbose", "model_kwargs", "model_from_pretrained_kwargs",
            "sae_lens_version", "sae_lens_training_version", "exclude_special_tokens",
        ];
        string[] logger =
        [
            "log_to_wandb", "log_activations_store_to_wandb", "log_optimizer_state_to_wandb", "log_weights_to_wandb",
            "wandb_project", "wandb_id", "run_name", "wandb_entity", "wandb_log_frequency", "eval_every_n_wandb_logs",
        ];
        var d = DefaultToDict637("matryoshka_batchtopk", SaeLensRunnerConfigDefaultsTests.Architectures.First(r => (string)r[0] == "matryoshka_batchtopk")[1].ToString()!);
        Assert.Equal(fields.Order(), d.Select(kv => kv.Key).Order());
        Assert.Equal(logger.Order(), d["logger"]!.AsObject().Select(kv => kv.Key).Order());
        // MatryoshkaBatchTopKTrainingSAEConfig (sae_lens/saes/matryoshka_batchtopk_sae.py at 69c4c62b): BatchTopK's fields,
        // matryoshka_widths and use_matryoshka_aux_loss, beside SAEConfig's and TrainingSAEConfig's.
        Assert.Contains("use_matryoshka_aux_loss", d["sae"]!.AsObject().Select(kv => kv.Key));
    }

    [Theory]
    [MemberData(nameof(SaeLensRunnerConfigDefaultsTests.Architectures), MemberType = typeof(SaeLensRunnerConfigDefaultsTests))]
    public void EveryFieldOfA6376DefaultToDictIsRead(string architecture, string own)
    {
        var s = TrainingSettings.FromJson(DefaultToDict637(architecture, own).ToJsonString(), "runner_cfg.json");
        s.CheckArchitectureFields(s.Recipes);
        s.Trainer.Validate("runner_cfg.json");
        Assert.Equal(0.5, s.ActivationsMixingFraction);
        Assert.Contains("log_weights_to_wandb", string.Join("\n", s.Notes));
        if (architecture == "matryoshka_batchtopk") Assert.False(s.UseMatryoshkaAuxLoss);
    }

    /// <summary>The docs' training example (docs/training_saes.md at 69c4c62b: tiny-stories-1L-21M, context 256,
    /// n_batches_in_buffer 64, store_batch_size_prompts 16, wandb logging) as a matryoshka run with the 6.37 fields set
    /// away from their defaults.</summary>
    private static JsonObject DocsExample()
    {
        var d = DefaultToDict637("matryoshka_batchtopk", """{"k": 32, "aux_loss_coefficient": 1.0, "topk_threshold_lr": 0.01, "matryoshka_widths": [1024, 4096, 16384], "use_matryoshka_aux_loss": true}""");
        d["model_name"] = "tiny-stories-1L-21M";
        d["hook_name"] = "blocks.0.hook_mlp_out";
        d["dataset_path"] = "apollo-research/roneneldan-TinyStories-tokenizer-gpt2";
        d["sae"]!["d_in"] = 1024;
        d["sae"]!["d_sae"] = 16 * 1024;
        d["lr"] = 5e-5;
        d["lr_end"] = 5e-6;
        d["lr_decay_steps"] = 6000;
        d["training_tokens"] = 30_000L * 4096;
        d["context_size"] = 256;
        d["n_batches_in_buffer"] = 64;
        d["store_batch_size_prompts"] = 16;
        d["activations_mixing_fraction"] = 0.25;
        d["logger"] = JsonNode.Parse("""
            {"log_to_wandb": true, "log_activations_store_to_wandb": false, "log_optimizer_state_to_wandb": false,
             "log_weights_to_wandb": false, "wandb_project": "sae_lens_tutorial", "wandb_id": null, "run_name": null,
             "wandb_entity": null, "wandb_log_frequency": 30, "eval_every_n_wandb_logs": 20}
            """);
        return d;
    }

    [Fact]
    public void TheDocsExampleWithThe637FieldsSetIsReadWithTheirMeaning()
    {
        var s = TrainingSettings.FromJson(DocsExample().ToJsonString(), "runner_cfg.json");
        s.CheckArchitectureFields(s.Recipes);
        s.Trainer.Validate("runner_cfg.json");
        Assert.Equal("matryoshka_batchtopk", s.Architecture);
        Assert.Equal(0.25, s.ActivationsMixingFraction);
        Assert.True(s.UseMatryoshkaAuxLoss);
        Assert.Equal(64, s.NBatchesInBuffer);
        Assert.Equal(16, s.StoreBatchSizePrompts);
        Assert.Equal(256, s.ContextSize);
        Assert.Contains("logger (log_to_wandb, log_activations_store_to_wandb, log_optimizer_state_to_wandb, log_weights_to_wandb", string.Join("\n", s.Notes));

        // The fields reach the SAE and the buffer.
        var sae = (MatryoshkaBatchTopKSae)SaeRecipes.Create("matryoshka_batchtopk", 1024, s.DSae!.Value, s.K, s.SparsityCoefficientFor("matryoshka_batchtopk"), matryoshkaWidths: s.MatryoshkaWidths);
        using (sae)
        {
            Assert.False(sae.Training.UseMatryoshkaAuxLoss);
            s.ApplyArchitectureFields(sae, s.Trainer.Clone());
            Assert.True(sae.Training.UseMatryoshkaAuxLoss);
        }
    }

    [Theory]
    [InlineData("hook_head_index", "\"x\"", "hook_head_index \"x\": expected a whole number")]
    [InlineData("disable_concat_sequences", "\"yes\"", "disable_concat_sequences \"yes\": expected true or false")]
    [InlineData("from_pretrained_path", "5", "from_pretrained_path 5: expected a string")]
    [InlineData("lr", "[1]", "lr [1]: expected a number")]
    public void AFieldOfTheWrongJsonTypeIsOneLineNamingItAndWhatItTakes(string field, string value, string expected)
    {
        var d = DocsExample();
        d[field] = JsonNode.Parse(value);
        var e = Assert.Throws<SaeSharpException>(() => TrainingSettings.FromJson(d.ToJsonString(), "runner_cfg.json"));
        Assert.Equal($"runner_cfg.json: {expected}", e.Message);
    }

    [Fact]
    public void UnknownFieldsOfA637ConfigAreStillRefusedByName()
    {
        var d = DocsExample();
        d["activations_mixing_fractoin"] = 0.25;
        d.Remove("activations_mixing_fraction");
        d["use_matryoshka_aux"] = true;
        var e = Assert.Throws<SaeSharpException>(() => TrainingSettings.FromJson(d.ToJsonString(), "runner_cfg.json"));
        Assert.Contains("unknown fields", e.Message);
        Assert.Contains("'activations_mixing_fractoin' (did you mean 'activations_mixing_fraction'?)", e.Message);
        Assert.Contains("'use_matryoshka_aux'", e.Message);
    }

    [Theory]
    [InlineData("""{"activations_mixing_fraction": 1.5}""", "activations_mixing_fraction 1.5")]
    [InlineData("""{"activations_mixing_fraction": -0.1}""", "activations_mixing_fraction -0.1")]
    [InlineData("""{"architecture": "matryoshka_batchtopk", "use_matryoshka_aux_loss": 1}""", "use_matryoshka_aux_loss 1: expected true or false")]
    [InlineData("""{"architecture": "matching_pursuit", "max_iterations": 2.5}""", "max_iterations 2.5: expected a whole number")]
    [InlineData("""{"architecture": "matching_pursuit", "max_iterations": 0}""", "max_iterations 0: expected at least 1")]
    [InlineData("""{"architecture": "matching_pursuit", "stop_on_duplicate_support": "yes"}""", "stop_on_duplicate_support \"yes\": expected true or false")]
    public void BadValuesOfThe637FieldsAreErrorsNamingThem(string json, string expected)
    {
        var e = Assert.Throws<SaeSharpException>(() => TrainingSettings.FromJson(json, "runner.json"));
        Assert.Contains(expected, e.Message);
    }

    [Fact]
    public void UseMatryoshkaAuxLossOnAnotherArchitectureIsRefused()
    {
        var s = TrainingSettings.FromJson("""{"architecture": "topk", "k": 4, "use_matryoshka_aux_loss": true}""", "runner.json");
        var e = Assert.Throws<SaeSharpException>(() => s.CheckArchitectureFields(s.Recipes));
        Assert.Contains("'use_matryoshka_aux_loss' applies to matryoshka", e.Message);
    }

    [Fact]
    public void AnActivationFileRunTakesMixingFractionZeroOrTheDefaultOnly()
    {
        var dir = Directory.CreateTempSubdirectory("mixing-").FullName;
        try
        {
            string acts = Path.Combine(dir, "a.safetensors").Replace("\\", "/");
            SafeTensors.Save(acts, new Dictionary<string, Tensor> { ["activations"] = TorchScalars.Arange(400 * 4, dtype: ScalarType.Float32).reshape(400, 4) });
            TrainingSettings Settings(double f) => TrainingSettings.FromJson($$"""
                {"activations": "{{acts}}", "architecture": "topk", "k": 2, "d_sae": 8, "total_training_steps": 4,
                 "train_batch_size_tokens": 16, "eval_rows": 40, "out": "{{Path.Combine(dir, "run").Replace("\\", "/")}}", "activations_mixing_fraction": {{f.ToString(System.Globalization.CultureInfo.InvariantCulture)}}}
                """, "runner.json");
            var e = Assert.Throws<SaeSharpException>(() => TrainingPlan.ForActivations(Settings(0.25)));
            Assert.Contains("activations_mixing_fraction 0.25", e.Message);
            using (var plan = TrainingPlan.ForActivations(Settings(0.5))) { }
            // 0: rows in file order, as SAELens's mixing buffer passes a cache through with mix_fraction 0.
            using var ordered = TrainingPlan.ForActivations(Settings(0));
            using var b = ordered.Options.TrainSource.Next(16)!;
            Assert.Equal(TorchScalars.Arange(16 * 4, dtype: ScalarType.Float32).reshape(16, 4).data<float>().ToArray(), b.Input.data<float>().ToArray());
        }
        finally
        {
            Directory.Delete(dir, true);
        }
    }
}
