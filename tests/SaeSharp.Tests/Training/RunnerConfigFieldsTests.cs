using SaeSharp.IO;
using SaeSharp.Pipelines;
using SaeSharp.Training;
using static TorchSharp.torch;

namespace SaeSharp.Tests.Training;

/// <summary>
/// The model/data fields of SAELens's LanguageModelSAERunnerConfig in <see cref="TrainingSettings.FromJson"/>: mapped to
/// the settings (<see cref="RunnerConfigFields"/>), ignored with a note, or refused unless at the value SaeSharp implements.
/// </summary>
public class RunnerConfigFieldsTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("runner-fields-").FullName;
    public void Dispose() => Directory.Delete(_dir, true);

    private string P(params string[] parts) => Path.Combine([_dir, .. parts]);

    [Fact]
    public void ModelAndDataFieldsAreReadUnderSaeLensNames()
    {
        var s = TrainingSettings.FromJson("""
            {"model_name": "EleutherAI/pythia-70m", "hook_name": "blocks.3.hook_resid_post", "dataset_path": "NeelNanda/pile-10k",
             "context_size": 64, "prepend_bos": false, "exclude_special_tokens": true, "d_in": 512, "store_batch_size_prompts": 16,
             "model_from_pretrained_kwargs": {"fold_ln": true, "dtype": "bfloat16"}, "n_checkpoints": 4, "device": "cpu",
             "dtype": "float32", "hook_head_index": null, "seqpos_slice": [null, null], "streaming": false,
             "log_to_wandb": true, "wandb_project": "p", "output_path": "out/run"}
            """, "runner.json");
        Assert.Equal("EleutherAI/pythia-70m", s.ModelName);
        Assert.Equal("blocks.3.hook_resid_post", s.HookName);
        Assert.Equal("hf:NeelNanda/pile-10k", TrainingSettings.DatasetSpec(s.DatasetPath!));
        Assert.Equal(64, s.ContextSize);
        Assert.False(s.PrependBos);
        Assert.True(s.ExcludeSpecialTokens);
        Assert.Equal(512, s.DIn);
        Assert.Equal(16, s.StoreBatchSizePrompts);
        Assert.True(s.ModelFromPretrainedKwargs!["fold_ln"].GetBoolean());
        Assert.Equal(4, s.NCheckpoints);
        Assert.Equal("out/run", s.Out);
        Assert.Contains(s.Notes, n => n.Contains("log_to_wandb") && n.Contains("wandb_project") && n.Contains("Weights & Biases"));
        Assert.Contains(s.Notes, n => n.Contains("streaming"));
        // A local path stays a path.
        File.WriteAllText(P("d.jsonl"), "{\"text\": \"a\"}\n");
        Assert.Equal(P("d.jsonl"), TrainingSettings.DatasetSpec(P("d.jsonl")));
        // A missing local file is not taken for a hub id (the reader then reports it missing).
        Assert.Equal("data/missing.jsonl", TrainingSettings.DatasetSpec("data/missing.jsonl"));
        Assert.Equal("hf:roneneldan/TinyStories", TrainingSettings.DatasetSpec("roneneldan/TinyStories"));
        Assert.Equal("hf:org/name:validation", TrainingSettings.DatasetSpec("hf:org/name:validation"));
    }

    [Fact]
    public void SaeLensNestedSaeConfigReadsAsItsFieldsAtTheTopLevel()
    {
        // The shape of LanguageModelSAERunnerConfig.to_dict() in SAELens 6.18 (sae_lens/config.py: d["sae"] = self.sae.to_dict(),
        // SAEConfig.to_dict adds "architecture" and "metadata"; "logger" is its LoggingConfig).
        const string nested = """
            {"model_name": "gpt2", "hook_name": "blocks.0.hook_resid_post", "dataset_path": "NeelNanda/pile-10k", "context_size": 32,
             "training_tokens": 40960, "train_batch_size_tokens": 4096, "lr": 0.0003, "dtype": "float32", "device": "cpu",
             "sae": {"d_in": 768, "d_sae": 6144, "dtype": "float32", "device": "cpu", "apply_b_dec_to_input": true,
                     "normalize_activations": "none", "reshape_activations": "none", "decoder_init_norm": 0.1,
                     "k": 32, "aux_loss_coefficient": 0.5, "architecture": "topk",
                     "metadata": {"model_name": null, "hook_name": null, "sae_lens_version": "6.18.0"}},
             "logger": {"log_to_wandb": false, "wandb_project": "sae_lens_training"}}
            """;
        const string flat = """
            {"model_name": "gpt2", "hook_name": "blocks.0.hook_resid_post", "dataset_path": "NeelNanda/pile-10k", "context_size": 32,
             "training_tokens": 40960, "train_batch_size_tokens": 4096, "lr": 0.0003, "dtype": "float32", "device": "cpu",
             "d_in": 768, "d_sae": 6144, "apply_b_dec_to_input": true, "normalize_activations": "none", "reshape_activations": "none", "decoder_init_norm": 0.1, "k": 32,
             "aux_loss_coefficient": 0.5, "architecture": "topk"}
            """;
        var a = TrainingSettings.FromJson(nested, "runner.json");
        var b = TrainingSettings.FromJson(flat, "flat.json");
        Assert.Equal("topk", a.Architecture);
        Assert.Equal(768, a.DIn);
        Assert.Equal(6144, a.DSae);
        Assert.Equal(32, a.K);
        Assert.Equal(10, a.RunSteps);
        Assert.Equal(System.Text.Json.JsonSerializer.Serialize(b), System.Text.Json.JsonSerializer.Serialize(a));
        Assert.Equal(System.Text.Json.JsonSerializer.Serialize(b.Trainer), System.Text.Json.JsonSerializer.Serialize(a.Trainer));
        Assert.Equal(b.GivenTrainerFields.Order(), a.GivenTrainerFields.Order());
    }

    [Theory]
    [InlineData("\"dtype\": \"float16\"", "'dtype'")]
    [InlineData("\"resume_from_checkpoint\": \"x\"", "sae train --resume")]
    [InlineData("\"exclude_special_tokens\": [-1]", "exclude_special_tokens [-1]: expected true, false or a list of non-negative token ids")]
    [InlineData("\"model_from_pretrained_kwargs\": {\"n_devices\": 2}", "'n_devices'")]
    [InlineData("\"sae\": {\"d_in\": 8}, \"d_in\": 16", "'d_in' is 16 at the top level and 8 in 'sae'")]
    [InlineData("\"sae\": 3", "nested SAE config")]
    public void FieldsThatWouldChangeTheResultAreRefused(string field, string expected)
    {
        var e = Assert.Throws<SaeSharpException>(() => TrainingSettings.FromJson($"{{\"model_name\": \"gpt2\", {field}}}", "runner.json"));
        Assert.StartsWith("runner.json: ", e.Message);
        Assert.Contains(expected, e.Message);
    }

    [Fact]
    public void CachedActivationsAndCheckpointCountAndDInApplyToAnActivationRun()
    {
        SafeTensors.Save(P("a.safetensors"), new Dictionary<string, Tensor> { ["activations"] = randn(600, 8, generator: new Generator(3)) });
        string Json(int dIn) => $$"""
            {"model_name": "gpt2", "hook_name": "blocks.0.hook_resid_pre", "dataset_path": "NeelNanda/pile-10k",
             "use_cached_activations": true, "cached_activations_path": "{{P("a.safetensors").Replace("\\", "/")}}",
             "architecture": "relu", "d_in": {{dIn}}, "d_sae": 16, "total_training_steps": 8, "train_batch_size_tokens": 32,
             "eval_rows": 64, "n_checkpoints": 2, "out": "{{P("run").Replace("\\", "/")}}"}
            """;
        var s = TrainingSettings.FromJson(Json(8), "runner.json");
        Assert.Equal(P("a.safetensors").Replace("\\", "/"), s.Activations);
        Assert.Null(s.ModelName);
        using (var plan = TrainingPlan.ForActivations(s))
            Assert.Equal(4, plan.Options.Trainer.CheckpointEverySteps);
        var e = Assert.Throws<SaeSharpException>(() => TrainingPlan.ForActivations(TrainingSettings.FromJson(Json(12), "runner.json")).Dispose());
        Assert.Contains("d_in 12", e.Message);
        Assert.Contains("width is 8", e.Message);
    }
}
