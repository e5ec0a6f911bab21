using SaeSharp.Activations;
using SaeSharp.Evaluation;
using SaeSharp.Interop;
using SaeSharp.IO;
using SaeSharp.Models;
using SaeSharp.Training;
using static TorchSharp.torch;

namespace SaeSharp.Tests;

/// <summary>The README's library sample, at toy sizes: it must compile and do what the README says.</summary>
public class ReadmeSampleTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("readme-").FullName;
    public void Dispose() => Directory.Delete(_dir, true);

    [Fact]
    public void LibrarySampleTrainsSavesEvaluatesAndSplices()
    {
        var acts = Path.Combine(_dir, "acts.safetensors");
        SafeTensors.Save(acts, new Dictionary<string, Tensor> { ["activations"] = randn(3000, 8, generator: new Generator(1)) });

        NativeRuntime.Tune();
        var (train, eval) = ActivationSplit.HoldOutLastRows([acts], evalRows: 500,
            new ActivationFileSourceOptions { Seed = 1, Loop = true });
        var sae = SaeRecipes.Create("topk", dIn: train.DIn, dSae: 4 * train.DIn, k: 4);
        sae.Training.Autocast = SaeSharp.Kernels.CpuFeatures.Bf16MatMul;
        var config = new TrainerConfig { TotalTrainingSteps = 20, TrainBatchSizeTokens = 256,
                                         NormalizeActivations = "expected_average_only_in", CheckpointPath = Path.Combine(_dir, "ckpt"),
                                         NBatchesForNormEstimate = 2, BDecInitRows = 256 };
        string saved = Path.Combine(_dir, "runs", "topk");
        SaeEvalResult metrics;
        using (var trainer = new SaeTrainer(config, train, [new SaeSlot("topk", sae)]))
        using (var result = trainer.Run())
        {
            SaeLensFormat.Save(result.Saes[0].Sae, saved, result.Saes[0].Sparsity);
            metrics = SaeEvaluator.Evaluate(result.Saes[0].Sae, eval, maxRows: 500);
        }
        Assert.Equal(500, metrics.Rows);
        Assert.True(metrics.L0 <= 4 + 1e-9);

        using var loaded = SaeLoader.Load(saved);
        var modelDir = TinyModels.WriteGpt2(Path.Combine(_dir, "gpt2"), seed: 2, nLayer: 2, nEmbd: 8, nHead: 2, vocab: 64);
        using var model = ModelLoader.FromPretrained(modelDir);
        var tokens = tensor(new long[] { 5, 46, 31, 28 }).unsqueeze(0);
        var (logits, cache) = model.RunWithCache(tokens, ["blocks.0.hook_mlp_out"]);
        using (cache)
        {
            var spliced = model.RunWithHooks(tokens, ("blocks.0.hook_mlp_out", act => loaded.forward(act)));
            Assert.Equal(logits!.shape, spliced.shape);
            // Splicing the SAE's own reconstruction of the cached activation reproduces the spliced run.
            var recon = loaded.forward(cache["blocks.0.hook_mlp_out"]);
            var again = model.RunWithHooks(tokens, ("blocks.0.hook_mlp_out", _ => recon));
            Assert.True(again.allclose(spliced, rtol: 1e-5, atol: 1e-5));
        }
        train.Dispose();
        eval.Dispose();
    }
}
