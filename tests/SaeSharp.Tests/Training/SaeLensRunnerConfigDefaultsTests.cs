using System.Text.Json.Nodes;
using SaeSharp.IO;
using SaeSharp.Pipelines;
using SaeSharp.Training;
using static TorchSharp.torch;

namespace SaeSharp.Tests.Training;

/// <summary>
/// Every field of SAELens's <c>LanguageModelSAERunnerConfig.to_dict()</c> at SAELens's defaults, for each of its training
/// architectures, is read by <c>sae train --config</c> (<see cref="TrainingSettings.FromJson"/>): mapped, ignored with a
/// note, or fixed at the default, never "unknown field".
/// </summary>
public class SaeLensRunnerConfigDefaultsTests
{
    // Written by hand from SAELens 6.18 (jbloomAus/SAELens 91ca16c), sae_lens/config.py: every LanguageModelSAERunnerConfig
    // field at its default, after __post_init__ (lr_end = lr / 10, act_store_device = device, model_from_pretrained_kwargs
    // {"center_writing_weights": false} for a HookedTransformer, checkpoint_path + "/" + a wandb id, logger.run_name), and
    // to_dict()'s "logger" (asdict of LoggingConfig) and "sae" (the SAE's to_dict()).
    private const string RunnerDefaults = """
        {
          "model_name": "gelu-2l", "model_class_name": "HookedTransformer", "hook_name": "blocks.0.hook_mlp_out",
          "hook_eval": "NOT_IN_USE", "hook_head_index": null, "dataset_path": "", "dataset_trust_remote_code": true,
          "streaming": true, "is_dataset_tokenized": true, "context_size": 128, "use_cached_activations": false,
          "cached_activations_path": null, "from_pretrained_path": null, "n_batches_in_buffer": 20, "training_tokens": 2000000,
          "store_batch_size_prompts": 32, "seqpos_slice": [null], "disable_concat_sequences": false,
          "sequence_separator_token": "bos", "device": "cpu", "act_store_device": "cpu", "seed": 42, "dtype": "float32",
          "prepend_bos": true, "autocast": false, "autocast_lm": false, "compile_llm": false, "llm_compilation_mode": null,
          "compile_sae": false, "sae_compilation_mode": null, "train_batch_size_tokens": 4096, "adam_beta1": 0.9,
          "adam_beta2": 0.999, "lr": 0.0003, "lr_scheduler_name": "constant", "lr_warm_up_steps": 0,
          "lr_end": 2.9999999999999997e-05, "lr_decay_steps": 0, "n_restart_cycles": 1, "dead_feature_window": 1000,
          "feature_sampling_window": 2000, "dead_feature_threshold": 1e-08, "n_eval_batches": 10,
          "eval_batch_size_prompts": null,
          "logger": {"log_to_wandb": true, "log_activations_store_to_wandb": false, "log_optimizer_state_to_wandb": false,
                     "wandb_project": "sae_lens_training", "wandb_id": null, "run_name": "ARCH-4096-LR-0.0003-Tokens-2.000e+06",
                     "wandb_entity": null, "wandb_log_frequency": 10, "eval_every_n_wandb_logs": 100},
          "n_checkpoints": 0, "checkpoint_path": "checkpoints/2bl4v1ex", "save_final_checkpoint": false,
          "output_path": "output", "resume_from_checkpoint": null, "verbose": true, "model_kwargs": {},
          "model_from_pretrained_kwargs": {"center_writing_weights": false}, "sae_lens_version": "6.18.0",
          "sae_lens_training_version": "6.18.0", "exclude_special_tokens": false
        }
        """;

    // SAEConfig and TrainingSAEConfig (sae_lens/saes/sae.py) fields at their defaults; d_in and d_sae have none (gelu-2l's
    // d_model 512, expansion 8). SAEMetadata.to_dict() of a fresh config holds the two versions.
    private const string SaeBase = """
        {"d_in": 512, "d_sae": 4096, "dtype": "float32", "device": "cpu", "apply_b_dec_to_input": true,
         "normalize_activations": "none", "reshape_activations": "none",
         "metadata": {"sae_lens_version": "6.18.0", "sae_lens_training_version": "6.18.0"}, "decoder_init_norm": 0.1}
        """;

    // Each registered training architecture's own fields at their defaults (sae_lens/saes/*_sae.py). matryoshka_widths
    // defaults to [], which SAELens itself cannot train (_validate_matryoshka_config indexes widths[-1]): widths are given.
    public static TheoryData<string, string> Architectures => new()
    {
        { "standard", """{"l1_coefficient": 1.0, "lp_norm": 1.0, "l1_warm_up_steps": 0}""" },
        { "gated", """{"l1_coefficient": 1.0, "l1_warm_up_steps": 0}""" },
        { "jumprelu", """{"jumprelu_init_threshold": 0.01, "jumprelu_bandwidth": 0.05, "jumprelu_sparsity_loss_mode": "step", "l0_coefficient": 1.0, "l0_warm_up_steps": 0, "pre_act_loss_coefficient": null, "jumprelu_tanh_scale": 4.0}""" },
        { "topk", """{"k": 100, "use_sparse_activations": false, "aux_loss_coefficient": 1.0, "rescale_acts_by_decoder_norm": true}""" },
        { "batchtopk", """{"k": 100, "use_sparse_activations": false, "aux_loss_coefficient": 1.0, "rescale_acts_by_decoder_norm": true, "topk_threshold_lr": 0.01}""" },
        { "matryoshka_batchtopk", """{"k": 100, "use_sparse_activations": false, "aux_loss_coefficient": 1.0, "rescale_acts_by_decoder_norm": true, "topk_threshold_lr": 0.01, "matryoshka_widths": [512, 1024, 4096]}""" },
    };

    /// <summary>The default to_dict() of a run of <paramref name="architecture"/> with its own fields <paramref name="own"/>.</summary>
    public static JsonObject DefaultToDict(string architecture, string own)
    {
        var runner = JsonNode.Parse(RunnerDefaults)!.AsObject();
        runner["logger"]!["run_name"] = $"{architecture}-4096-LR-0.0003-Tokens-2.000e+06";
        var sae = JsonNode.Parse(SaeBase)!.AsObject();
        foreach (var (key, value) in JsonNode.Parse(own)!.AsObject().ToList()) sae[key] = value?.DeepClone();
        sae["architecture"] = architecture;
        runner["sae"] = sae;
        return runner;
    }

    [Theory]
    [MemberData(nameof(Architectures))]
    public void EveryFieldOfTheDefaultToDictIsRead(string architecture, string own)
    {
        var json = DefaultToDict(architecture, own).ToJsonString();
        var s = TrainingSettings.FromJson(json, "runner_cfg.json");
        s.CheckArchitectureFields(s.Recipes);
        s.Trainer.Validate("runner_cfg.json");

        // SAELens's values arrive under SaeSharp's names.
        Assert.Equal(architecture, s.Architecture);
        Assert.Equal(512, s.DIn);
        Assert.Equal(4096, s.DSae);
        Assert.Equal(4096, s.BatchSize);
        Assert.Equal(2_000_000 / 4096, s.RunSteps);
        Assert.Equal("output", s.Out);
        Assert.Equal(32, s.StoreBatchSizePrompts);
        Assert.Equal(0.0003, s.Lr);
        Assert.Equal("constant", s.Trainer.LrSchedulerName);
        Assert.Equal(3e-5, s.Trainer.LrEnd!.Value, 12);
        Assert.Equal(1, s.Trainer.NRestartCycles);
        Assert.Equal(0.9, s.Trainer.AdamBeta1);
        Assert.Equal(0.999, s.Trainer.AdamBeta2);
        Assert.Equal(2000, s.Trainer.FeatureSamplingWindow);
        Assert.Equal("none", s.Trainer.NormalizeActivations);
        Assert.Equal(0.1, s.Trainer.DecoderInitNorm);
        Assert.Equal(20, s.NBatchesInBuffer);
        Assert.Equal(1000, s.DeadFeatureWindowSteps);
        Assert.Null(s.Trainer.DeadFeatureWindow); // in rows once the plan knows the batch size: 1001 × 4096

        // The fields with no effect are named in the notes.
        var notes = string.Join("\n", s.Notes);
        foreach (var ignored in new[] { "logger", "dead_feature_threshold", "n_eval_batches", "act_store_device", "hook_eval", "streaming" })
            Assert.Contains(ignored, notes);
        if (architecture == "jumprelu") Assert.Contains("jumprelu_tanh_scale", notes);
        if (architecture.Contains("topk")) Assert.Contains("use_sparse_activations", notes);
    }

    [Fact]
    public void TheTestsToDictHoldsEveryRunnerConfigFieldOfSaeLens()
    {
        // The dataclass fields of LanguageModelSAERunnerConfig in sae_lens/config.py, in their order there.
        string[] fields =
        [
            "sae", "model_name", "model_class_name", "hook_name", "hook_eval", "hook_head_index", "dataset_path",
            "dataset_trust_remote_code", "streaming", "is_dataset_tokenized", "context_size", "use_cached_activations",
            "cached_activations_path", "from_pretrained_path", "n_batches_in_buffer", "training_tokens",
            "store_batch_size_prompts", "seqpos_slice", "disable_concat_sequences", "sequence_separator_token", "device",
            "act_store_device", "seed", "dtype", "prepend_bos", "autocast", "autocast_lm", "compile_llm",
            "llm_compilation_mode", "compile_sae", "sae_compilation_mode", "train_batch_size_tokens", "adam_beta1",
            "adam_beta2", "lr", "lr_scheduler_name", "lr_warm_up_steps", "lr_end", "lr_decay_steps", "n_restart_cycles",
            "dead_feature_window", "feature_sampling_window", "dead_feature_threshold", "n_eval_batches",
            "eval_batch_size_prompts", "logger", "n_checkpoints", "checkpoint_path", "save_final_checkpoint", "output_path",
            "resume_from_checkpoint", "verbose", "model_kwargs", "model_from_pretrained_kwargs", "sae_lens_version",
            "sae_lens_training_version", "exclude_special_tokens",
        ];
        var d = DefaultToDict("topk", "{}");
        Assert.Equal(fields.Order(), d.Select(kv => kv.Key).Order());
    }

    [Fact]
    public void Expansion_factor_and_total_training_steps_are_not_SAELens_6_fields_but_are_read()
    {
        // SAELens 6 sets the width only as the SAE's d_sae; expansion_factor was a runner field before 6.0 (d_sae =
        // expansion_factor × d_in) and total_training_steps is a property (training_tokens // train_batch_size_tokens),
        // so neither is in a v6 to_dict(), at the top or under "sae" (the README says so).
        var d = DefaultToDict("standard", "{}");
        foreach (var name in new[] { "expansion_factor", "total_training_steps", "steps" })
        {
            Assert.False(d.ContainsKey(name), name);
            Assert.False(d["sae"]!.AsObject().ContainsKey(name), "sae." + name);
        }
        var s = TrainingSettings.FromJson("""{"expansion_factor": 4, "train_batch_size_tokens": 256, "total_training_steps": 7}""", "old.json");
        Assert.Equal(4 * 48, s.DSaeFor(48));
        Assert.Equal(7, s.RunSteps);
        // training_tokens // train_batch_size_tokens, floored as SAELens's property is.
        Assert.Equal(3, TrainingSettings.FromJson("""{"training_tokens": 1000, "train_batch_size_tokens": 256}""", "v6.json").RunSteps);
    }

    [Fact]
    public void TheRestartScheduleAndTheBufferOfAToDictAreRead()
    {
        var d = DefaultToDict("topk", """{"k": 100}""");
        d["lr_scheduler_name"] = "cosineannealingwarmrestarts";
        d["n_restart_cycles"] = 4;
        d["lr_warm_up_steps"] = 8;
        d["n_batches_in_buffer"] = 6;
        d["dead_feature_threshold"] = 0.001;
        var s = TrainingSettings.FromJson(d.ToJsonString(), "runner_cfg.json");
        s.Trainer.Validate("runner_cfg.json");
        Assert.Equal("cosineannealingwarmrestarts", s.Trainer.LrSchedulerName);
        Assert.Equal(4, s.Trainer.NRestartCycles);
        Assert.Equal(6, s.NBatchesInBuffer);
        // 488 steps: 480 after warm-up, cycles of 120 with η_min = lr_end = 3e-5: back at lr 3e-4 at step 8 + 120.
        Assert.Equal(3e-4, Schedules.LearningRate(s.Trainer, s.Lr!.Value, 8 + 120), 12);
        Assert.Equal(3e-5 + (3e-4 - 3e-5) * (1 + Math.Cos(Math.PI * 60 / 120)) / 2, Schedules.LearningRate(s.Trainer, s.Lr!.Value, 8 + 120 + 60), 12);
    }

    [Fact]
    public void DeadFeatureWindowIsSaeLensStepsAndBecomesTheTrainersRows()
    {
        var dir = Directory.CreateTempSubdirectory("dead-window-").FullName;
        try
        {
            string acts = Path.Combine(dir, "a.safetensors").Replace("\\", "/");
            SafeTensors.Save(acts, new Dictionary<string, Tensor> { ["activations"] = randn(600, 8, generator: new Generator(3)) });
            var s = TrainingSettings.FromJson($$"""
                {"activations": "{{acts}}", "architecture": "topk", "k": 2, "d_sae": 16, "total_training_steps": 8,
                 "train_batch_size_tokens": 32, "eval_rows": 64, "dead_feature_window": 3, "out": "{{Path.Combine(dir, "run").Replace("\\", "/")}}"}
                """, "runner.json");
            Assert.Equal(3, s.DeadFeatureWindowSteps);
            using (var plan = TrainingPlan.ForActivations(s))
            {
                Assert.Equal(4 * 32, plan.Options.Trainer.DeadFeatureWindow);
                Assert.Equal(4 * 32, plan.Options.Saes[0].Config!.DeadFeatureWindow);
            }
            s.BatchSize = 16; // --batch-size over the config's batch: the window follows it
            using (var plan = TrainingPlan.ForActivations(s))
                Assert.Equal(4 * 16, plan.Options.Trainer.DeadFeatureWindow);
        }
        finally
        {
            Directory.Delete(dir, true);
        }

        // SAELens (sae_trainer.py): n_forward_passes_since_fired += 1 each step, dead when > dead_feature_window. With
        // window 3, a latent silent for 3 steps is alive and for 4 steps dead; the trainer's rows test gives the same.
        using var stats = new FeatureStatistics(1, (3 + 1) * 32, 2000);
        using var silent = zeros(1, dtype: ScalarType.Int64);
        for (int step = 1; step <= 4; step++)
        {
            stats.UpdateCounts(silent, 32);
            using var dead = stats.DeadMask();
            Assert.Equal(step > 3, dead.item<bool>());
        }
    }

    [Fact]
    public void ANegativeDeadFeatureWindowIsAnErrorNamingIt()
    {
        var e = Assert.Throws<SaeSharpException>(() => TrainingSettings.FromJson("""{"dead_feature_window": -1}""", "runner.json"));
        Assert.Contains("runner.json: dead_feature_window -1", e.Message);
    }
}
