using SaeSharp.Tests.Cli;
using SaeSharp.Activations;
using SaeSharp.Evaluation;
using SaeSharp.Interop;
using SaeSharp.IO;
using SaeSharp.Kernels;
using SaeSharp.Models;
using SaeSharp.Saes;
using SaeSharp.Training;
using SaeSharp.Pipelines;
using SaeSharp.Tokenizers;
using System.Text.Json.Nodes;
using TorchSharp;
using static TorchSharp.torch;

namespace SaeSharp.Tests;

/// <summary>
/// The README's library samples run here (<see cref="ReadmeSamples"/>): each region between "readme-sample NAME" markers
/// below is the README's code block of that name line for line, after the substitutions next to it (paths to temp
/// files, a tiny model and toy sizes); the test beside it runs the region and checks what the README says it does.
/// </summary>
public class ReadmeSampleTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("readme-").FullName;
    public void Dispose() => Directory.Delete(_dir, true);

    /// <summary>README literal → the test's literal.</summary>
    private static readonly (string Readme, string Test)[] ToyScale =
    [
        ("\"cache/gpt2-l3\"", "acts"), ("\"runs/topk\"", "saved"), ("\"ckpt\"", "ckpt"), ("\"models/gpt2\"", "modelDir"),
        ("16 * train.DIn", "4 * train.DIn"), ("k: 32", "k: 4"), ("10_000", "20"), ("4096", "256"),
    ];

    [Fact]
    public void LibrarySampleTrainsSavesEvaluatesAndSplices()
    {
        string acts = Path.Combine(_dir, "acts.safetensors"), saved = Path.Combine(_dir, "runs", "topk"), ckpt = Path.Combine(_dir, "ckpt");
        SafeTensors.Save(acts, new Dictionary<string, Tensor> { ["activations"] = randn(3000, 8, generator: new Generator(1)) });
        // GPT-2's vocabulary and its real tokenizer files, so that the sample's text tokenizes as with gpt2.
        string modelDir = TinyModels.WriteGpt2(Path.Combine(_dir, "gpt2"), seed: 2, nLayer: 4, nEmbd: 8, nHead: 2, vocab: 50257);
        foreach (var f in new[] { "vocab.json", "merges.txt" }) File.Copy(Tokenizers.TestPaths.Data("gpt2-tokenizer", f), Path.Combine(modelDir, f));
        var output = new StringWriter();
        // Console.Out is process-wide: hold the CLI runner's gate so that no CLI test writes into this capture.
        Monitor.Enter(CliRunner.Gate);
        var console = Console.Out;
        Console.SetOut(output);
        try
        {
            // readme-sample library begin
            NativeRuntime.Tune();  // first: passive OpenMP waits, freed tensor memory reused (Linux; see BENCHMARKS.md)

            // Train a TopK SAE on GPT-2 activations (`sae cache --model gpt2 --hook blocks.3.hook_mlp_out --out cache/gpt2-l3`)
            // and save it in SAELens layout.
            var (train, eval) = ActivationSplit.HoldOut([acts], evalRows: null,
                new ActivationFileSourceOptions { Seed = 1, Loop = true });
            var sae = SaeRecipes.Create("topk", dIn: train.DIn, dSae: 4 * train.DIn, k: 4);
            sae.Training.Autocast = CpuFeatures.Bf16MatMul;  // bf16 matmuls on CPUs with AVX512-BF16 or AMX
            var config = new TrainerConfig { TotalTrainingSteps = 20, TrainBatchSizeTokens = 256,
                                             NormalizeActivations = "expected_average_only_in", CheckpointPath = ckpt };
            using (var trainer = new SaeTrainer(config, train, [new SaeSlot("topk", sae)]))
            using (var result = trainer.Run())
            {
                SaeLensFormat.Save(result.Saes[0].Sae, saved, result.Saes[0].Sparsity);
                Console.WriteLine(SaeEvaluator.Evaluate(result.Saes[0].Sae, eval, maxRows: 16384).ToJson());
            }

            // Load the saved SAE (SaeLoader reads every supported format) and splice it into GPT-2 at the hook it was trained on.
            using var loaded = SaeLoader.Load(saved);
            using var model = ModelLoader.FromPretrained(modelDir);
            using var tokens = model.ToTokens("The capital of");  // TransformerLens to_tokens: [1, 4], <|endoftext|> (BOS) first
            Console.WriteLine(string.Join("|", model.ToStringTokens("The capital of")));  // <|endoftext|>|The| capital| of
            using var run = model.RunWithCache(tokens, ["blocks.3.hook_mlp_out"]);  // CachedRun: disposing it frees logits and cache
            var (logits, cache) = run;                                               // TransformerLens's logits, cache = model.run_with_cache(...)
            using var feats = loaded.Encode(cache["mlp_out", 3]);  // cache["mlp_out", 3] = blocks.3.hook_mlp_out; as SAELens's sae.encode
            var spliced = model.RunWithHooks(tokens, ("blocks.3.hook_mlp_out", act => loaded.forward(act)));
            // readme-sample library end

            // The held-out share of a 3,000-row file is its last 300 rows; metrics.json-style output was printed.
            Assert.Equal(300, eval.Rows);
            Assert.Contains("\"n_rows\": 300", output.ToString());
            Assert.Equal(logits!.shape, spliced.shape);
            Assert.Equal(new long[] { 1, 4, loaded.Cfg.DSae }, feats.shape);
            Assert.Equal(new long[] { 50256, 464, 3139, 286 }, tokens.data<long>().ToArray()); // "The capital of" in GPT-2 ids
            Assert.Contains("<|endoftext|>|The| capital| of", output.ToString());
            Assert.Same(run.Cache, cache);
            // Splicing the SAE's own reconstruction of the cached activation reproduces the spliced run.
            var recon = loaded.forward(cache["blocks.3.hook_mlp_out"]);
            var again = model.RunWithHooks(tokens, ("blocks.3.hook_mlp_out", _ => recon));
            Assert.True(again.allclose(spliced, rtol: 1e-5, atol: 1e-5));
            Assert.False(spliced.allclose(logits, rtol: 1e-6, atol: 1e-6)); // the splice changed the run
            train.Dispose();
            eval.Dispose();
        }
        finally
        {
            Console.SetOut(console);
            Monitor.Exit(CliRunner.Gate);
        }
    }

    [Fact]
    public void The_readme_block_is_this_sample() => ReadmeSamples.AssertBlockIsRegion("library", ToyScale);

    [Fact]
    public void TrainingPlanSampleWritesTheRunAsTheCommandDoes()
    {
        string acts = Path.Combine(_dir, "acts.safetensors"), saved = Path.Combine(_dir, "runs", "topk");
        SafeTensors.Save(acts, new Dictionary<string, Tensor> { ["activations"] = randn(3000, 8, generator: new Generator(1)) });

        // readme-sample training-plan begin
        var settings = new TrainingSettings { Activations = acts, Architecture = "topk", K = 4, ExpansionFactor = 4, Out = saved, Steps = 20, BatchSize = 256 };
        using var plan = TrainingPlan.ForActivations(settings);   // or TrainingPlan.ForModel(settings, data, hook)
        var run = plan.Run();                                     // writes cfg.json, weights, metrics.json
        // readme-sample training-plan end

        Assert.Equal(20, run.Steps);
        foreach (var f in new[] { "cfg.json", "sae_weights.safetensors", "metrics.json" }) Assert.True(File.Exists(Path.Combine(saved, f)), f);
        var cfg = JsonNode.Parse(File.ReadAllText(Path.Combine(saved, "cfg.json")))!;
        Assert.Equal("topk", cfg["architecture"]!.GetValue<string>());
        Assert.Equal(32, cfg["d_sae"]!.GetValue<int>());   // expansion 4 × d_in 8
        Assert.Equal(4, cfg["k"]!.GetValue<int>());
    }

    private static readonly (string Readme, string Test)[] TrainingPlanToyScale =
    [
        ("\"cache/gpt2-l3\"", "acts"), ("K = 32, ExpansionFactor = 16", "K = 4, ExpansionFactor = 4"),
        ("Out = \"runs/topk\" }", "Out = saved, Steps = 20, BatchSize = 256 }"),
    ];

    [Fact]
    public void The_training_plan_block_is_this_sample() => ReadmeSamples.AssertBlockIsRegion("training-plan", TrainingPlanToyScale);

    [Fact]
    public void ModelDtypeSampleHoldsWeightsInBf16AndReturnsFloat32Logits()
    {
        // GPT-2's vocabulary and its real tokenizer files in place of Gemma 2's: the sample is the same for every family.
        string modelDir = TinyModels.WriteGpt2(Path.Combine(_dir, "gpt2"), seed: 2, nLayer: 2, nEmbd: 8, nHead: 2, vocab: 50257);
        foreach (var f in new[] { "vocab.json", "merges.txt" }) File.Copy(Tokenizers.TestPaths.Data("gpt2-tokenizer", f), Path.Combine(modelDir, f));

        // readme-sample model-dtype begin
        using var model = ModelLoader.FromPretrained(modelDir, ModelLoader.ParseDtype("bf16"));
        var tok = Tokenizer.FromFolder(modelDir);
        using var tokens = torch.tensor(tok.EncodeWithSpecialTokens("The capital of France is").Select(i => (long)i).ToArray()).unsqueeze(0);
        using var run = model.RunWithCache(tokens, ["blocks.1.hook_resid_post"]);  // frees logits and cache at the end of the scope
        var (logits, cache) = run;
        // readme-sample model-dtype end

        {
            // GPT-2's tokenizer adds no BOS (Hugging Face tokenizer(text)): the five words' ids.
            Assert.Equal(new long[] { 464, 3139, 286, 4881, 318 }, tokens.data<long>().ToArray());
            Assert.All(model.parameters(), p => Assert.Equal(ScalarType.BFloat16, p.dtype));
            Assert.Equal(ScalarType.Float32, logits!.dtype);
            Assert.Equal(new long[] { 1, 5, 50257 }, logits.shape);
            Assert.Equal(new long[] { 1, 5, 8 }, cache["blocks.1.hook_resid_post"].shape);
        }
    }

    private static readonly (string Readme, string Test)[] ModelDtypeToyScale =
        [("\"models/gemma-2-2b\"", "modelDir"), ("blocks.12.", "blocks.1.")];

    [Fact]
    public void The_model_dtype_block_is_this_sample() => ReadmeSamples.AssertBlockIsRegion("model-dtype", ModelDtypeToyScale);

    [Fact]
    public void DeviceSampleOnACpuBuildStopsWithTheBuildFlag()
    {
        if (torch.cuda.is_available()) return;   // on a CUDA build with a GPU the sample trains there (DeviceTrainingTests)
        using var source = new ActivationFileSource([WriteActs("device.safetensors")], new ActivationFileSourceOptions { Seed = 1 });
        using var sae = SaeRecipes.Create("topk", dIn: 8, dSae: 32, k: 4);
        var error = Assert.Throws<SaeSharpException>(() =>
        {
            // readme-sample device begin
            var cfg = new TrainerConfig { TotalTrainingSteps = 1000, Device = "cuda" };   // null: where the SAEs are (new ones: cpu)
            using var trainer = new SaeTrainer(cfg, source, [new SaeSlot("topk", sae)]);
            // readme-sample device end
        });
        Assert.Contains("device cuda", error.Message);
        Assert.Contains("-p:TorchBackend=cuda", error.Message);
    }

    [Fact]
    public void The_device_block_is_this_sample() => ReadmeSamples.AssertBlockIsRegion("device");

    private string WriteActs(string name)
    {
        string path = Path.Combine(_dir, name);
        SafeTensors.Save(path, new Dictionary<string, Tensor> { ["activations"] = randn(1000, 8, generator: new Generator(1)) });
        return path;
    }
}
