using System.Text.Json.Nodes;
using SaeSharp.Activations;
using SaeSharp.IO;
using SaeSharp.Pipelines;
using SaeSharp.Tests.Activations;
using SaeSharp.Tests.Cli;
using SaeSharp.Tests.Models;
using SaeSharp.Training;
using static TorchSharp.torch;

namespace SaeSharp.Tests.Pipelines;

/// <summary>
/// SAELens's <c>hook_head_index</c> (training/activations_store.py: <c>layerwise_activations[:, :, hook_head_index]</c>)
/// and <c>reshape_activations</c> "hook_z" (saes/sae.py) in <c>sae train</c>: one head of an attention hook is harvested,
/// the SAE's cfg.json records the head so that splicing reads it, and "hook_z" is written for an SAE on a hook_z.
/// </summary>
public class HookHeadTrainingTests : ModelTestBase
{
    private static void Ok((int Exit, string Out, string Err) r) => Assert.True(r.Exit == 0, r.Err + r.Out);

    private static List<ActivationBatch> Drain(IActivationSource src)
    {
        var list = new List<ActivationBatch>();
        while (src.Next(16) is { } b) list.Add(b);
        return list;
    }

    [Theory]
    [InlineData("blocks.1.attn.hook_z", 1)]
    [InlineData("blocks.0.attn.hook_q", 3)]
    [InlineData("blocks.0.attn.hook_v", 0)]
    public void OneHeadIsHarvestedAsThatHeadOfTheHooksActivation(string hook, int head)
    {
        using var model = Gpt2();
        var windows = ModelActivationSourceTests.Windows(5, 8);
        var spec = HarvestSpec.Resolve(model.HookPoints, hook, headIndex: head);
        using var src = new ModelActivationSource(model, spec, () => windows,
            new ModelActivationSourceOptions { ContextSize = 8, BatchSizePrompts = 2, BufferContexts = 2, Shuffle = false });
        Assert.Equal(model.Config.DHead, src.DIn);
        var batches = Drain(src);
        var got = cat(batches.Select(b => b.Input).ToList(), 0);
        // The full run's cache [batch, pos, head, d_head], that head.
        var tokens = Tokens([.. windows]);
        var (logits, cache) = model.RunWithCache(tokens, [hook]);
        using (cache)
        {
            logits?.Dispose();
            Assert.Equal(4, cache[hook].dim());
            var expected = cache[hook].select(2, head).reshape(tokens.numel(), model.Config.DHead);
            AssertAllClose(expected, got, 1e-6, "head rows");
        }
        foreach (var b in batches) b.Dispose();
    }

    [Fact]
    public void AHeadOfAHookWithoutHeadsOrPastTheLastHeadOrOfAModulesInputIsRefused()
    {
        using var model = Gpt2();
        ModelActivationSource Open(string hook, int head, HarvestMode mode = HarvestMode.Out) =>
            new(model, HarvestSpec.Resolve(model.HookPoints, hook, mode, headIndex: head), () => ModelActivationSourceTests.Windows(2, 8),
                new ModelActivationSourceOptions { ContextSize = 8 });
        Assert.Equal("hook_head_index 1: 'blocks.0.hook_resid_post' has no head dimension (hook_head_index picks a head of an attention hook: attn.hook_z, hook_q, hook_k, hook_v)",
            Assert.Throws<SaeSharpException>(() => Open("blocks.0.hook_resid_post", 1)).Message);
        Assert.Contains("hook_head_index 4: 'blocks.0.attn.hook_z' of ", Assert.Throws<SaeSharpException>(() => Open("blocks.0.attn.hook_z", 4)).Message);
        Assert.EndsWith("has 4 heads (0..3)", Assert.Throws<SaeSharpException>(() => Open("blocks.0.attn.hook_z", 4)).Message);
        Assert.Equal("hook_head_index 0 picks a head of the hook's activation: it takes --mode out, not in",
            Assert.Throws<SaeSharpException>(() => Open("blocks.0.attn", 0, HarvestMode.In)).Message);
    }

    private string Corpus()
    {
        var path = Sub("c.jsonl");
        if (!File.Exists(path)) Ok(CliRunner.Run("corpus", "--out", path, "--docs", "200", "--seed", "4"));
        return path;
    }

    private static readonly string[] Run = ["--model", "builtin", "--tokens", "2048", "--context-size", "32", "--arch", "topk", "--k", "4",
        "--dict-size", "32", "--batch-size", "128", "--steps", "2", "--eval-rows", "128"];

    [Fact]
    public void ATrainedHeadSaeRecordsItsHeadAndIsSplicedOnThatHead()
    {
        var corpus = Corpus();
        Ok(CliRunner.Run(["train", .. Run, "--dataset", corpus, "--hook", "blocks.0.attn.hook_z", "--hook-head-index", "2", "--out", Sub("head")]));
        var cfg = JsonNode.Parse(File.ReadAllText(Path.Combine(Sub("head"), "cfg.json")))!;
        Assert.Equal(2, cfg["metadata"]!["hook_head_index"]!.GetValue<int>());
        Assert.Equal("blocks.0.attn.hook_z", cfg["metadata"]!["hook_name"]!.GetValue<string>());
        Assert.Equal(32, cfg["d_in"]!.GetValue<int>());                  // d_head of the built-in model (4 heads of 32)
        // The held-out evaluation spliced it into head 2 of the model's hook_z.
        var metrics = JsonNode.Parse(File.ReadAllText(Path.Combine(Sub("head"), "metrics.json")))!;
        Assert.NotNull(metrics["ce_loss_score"]);
        // The same field in a runner config; a saved head SAE fine-tunes on its head without naming it.
        File.WriteAllText(Sub("run.json"), $$"""{"hook_name": "blocks.0.attn.hook_z", "hook_head_index": 2, "dataset_path": "{{corpus.Replace("\\", "/")}}"}""");
        Ok(CliRunner.Run(["train", .. Run, "--config", Sub("run.json"), "--out", Sub("cfg")]));
        Assert.Equal(2, JsonNode.Parse(File.ReadAllText(Path.Combine(Sub("cfg"), "cfg.json")))!["metadata"]!["hook_head_index"]!.GetValue<int>());
        Ok(CliRunner.Run("train", "--model", "builtin", "--tokens", "2048", "--context-size", "32", "--batch-size", "128", "--steps", "2",
            "--eval-rows", "128", "--dataset", corpus, "--from-pretrained", Sub("head"), "--out", Sub("ft")));
        var ft = JsonNode.Parse(File.ReadAllText(Path.Combine(Sub("ft"), "cfg.json")))!;
        Assert.Equal(2, ft["metadata"]!["hook_head_index"]!.GetValue<int>());
        Assert.Equal("blocks.0.attn.hook_z", ft["metadata"]!["hook_name"]!.GetValue<string>());
        var e = CliRunner.Run("train", "--model", "builtin", "--tokens", "2048", "--context-size", "32", "--batch-size", "128", "--steps", "2",
            "--eval-rows", "128", "--dataset", corpus, "--from-pretrained", Sub("head"), "--hook-head-index", "1", "--out", Sub("ft2"));
        Assert.Equal(1, e.Exit);
        Assert.Contains($"--from-pretrained {Sub("head")}: the SAE reads head 2 (hook_head_index), and this run trains on head 1 (hook_head_index): give --hook-head-index 2 or leave it out", e.Err);
    }

    [Fact]
    public void ReshapeActivationsHookZIsWrittenForAHookZSaeAndRefusedElsewhere()
    {
        var corpus = Corpus();
        string Config(string fields) =>
            $$"""{"dataset_path": "{{corpus.Replace("\\", "/")}}", {{fields}} }""";
        File.WriteAllText(Sub("z.json"), Config("\"hook_name\": \"blocks.1.attn.hook_z\", \"reshape_activations\": \"hook_z\""));
        Ok(CliRunner.Run(["train", .. Run, "--config", Sub("z.json"), "--out", Sub("z")]));
        var cfg = JsonNode.Parse(File.ReadAllText(Path.Combine(Sub("z"), "cfg.json")))!;
        Assert.Equal("hook_z", cfg["reshape_activations"]!.GetValue<string>());
        Assert.Equal(128, cfg["d_in"]!.GetValue<int>());                 // 4 heads × d_head 32, flattened
        // Not given: "none", SAELens's default, whatever the hook.
        File.WriteAllText(Sub("n.json"), Config("\"hook_name\": \"blocks.1.attn.hook_z\""));
        Ok(CliRunner.Run(["train", .. Run, "--config", Sub("n.json"), "--out", Sub("n")]));
        Assert.Equal("none", JsonNode.Parse(File.ReadAllText(Path.Combine(Sub("n"), "cfg.json")))!["reshape_activations"]!.GetValue<string>());

        foreach (var (fields, expected) in new[]
                 {
                     ("\"hook_name\": \"blocks.1.hook_resid_post\", \"reshape_activations\": \"hook_z\"",
                      "reshape_activations \"hook_z\" describes an SAE on attn.hook_z, whose heads are flattened; blocks.1.hook_resid_post is not a hook_z"),
                     ("\"hook_name\": \"blocks.1.attn.hook_z\", \"hook_head_index\": 0, \"reshape_activations\": \"hook_z\"",
                      "reshape_activations \"hook_z\" flattens every head of the hook, and hook_head_index 0 trains on one: give one of them"),
                     ("\"hook_name\": \"blocks.1.attn.hook_z\", \"reshape_activations\": \"heads\"",
                      "reshape_activations \"heads\": expected \"none\" or \"hook_z\""),
                 })
        {
            File.WriteAllText(Sub("bad.json"), Config(fields));
            var r = CliRunner.Run(["train", .. Run, "--config", Sub("bad.json"), "--out", Sub("bad")]);
            Assert.Equal(1, r.Exit);
            Assert.Contains($"{Sub("bad.json")}: {expected}", r.Err);
            Assert.False(Directory.Exists(Sub("bad")));
        }
    }

    [Fact]
    public void AHeadIndexOnActivationFilesIsRefused()
    {
        using (var rows = randn(200, 8))
            SafeTensors.Save(Sub("a.safetensors"), new Dictionary<string, Tensor> { ["activations"] = rows });
        var s = TrainingSettings.FromJson($$"""{"activations": "{{Sub("a.safetensors").Replace("\\", "/")}}", "hook_head_index": 1, "out": "{{Sub("o").Replace("\\", "/")}}"}""", "h.json");
        var e = Assert.Throws<SaeSharpException>(() => TrainingPlan.ForActivations(s));
        Assert.StartsWith("h.json: hook_head_index 1 applies to runs from a model (--model)", e.Message);
    }
}
