using SaeSharp.Tests.Cli;
using SaeSharp.Activations;
using SaeSharp.Evaluation;
using SaeSharp.Interop;
using SaeSharp.IO;
using SaeSharp.Kernels;
using SaeSharp.Models;
using SaeSharp.Saes;
using SaeSharp.Training;
using static TorchSharp.torch;

namespace SaeSharp.Tests;

/// <summary>
/// The README's library sample runs here. The region between the "readme-sample" markers below is the README's code
/// block line for line, after <see cref="ToyScale"/>'s substitutions (paths to temp files, a tiny model and toy sizes);
/// <see cref="The_readme_block_is_this_sample"/> checks that, and <see cref="LibrarySampleTrainsSavesEvaluatesAndSplices"/>
/// runs it and checks what the README says it does.
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
            // readme-sample begin
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
            var (logits, cache) = model.RunWithCache(tokens, ["blocks.3.hook_mlp_out"]);
            using var feats = loaded.Encode(cache["mlp_out", 3]);  // cache["mlp_out", 3] = blocks.3.hook_mlp_out; as SAELens's sae.encode
            var spliced = model.RunWithHooks(tokens, ("blocks.3.hook_mlp_out", act => loaded.forward(act)));
            // readme-sample end

            // The held-out share of a 3,000-row file is its last 300 rows; metrics.json-style output was printed.
            Assert.Equal(300, eval.Rows);
            Assert.Contains("\"n_rows\": 300", output.ToString());
            Assert.Equal(logits!.shape, spliced.shape);
            Assert.Equal(new long[] { 1, 4, loaded.Cfg.DSae }, feats.shape);
            Assert.Equal(new long[] { 50256, 464, 3139, 286 }, tokens.data<long>().ToArray()); // "The capital of" in GPT-2 ids
            Assert.Contains("<|endoftext|>|The| capital| of", output.ToString());
            using (cache)
            {
                // Splicing the SAE's own reconstruction of the cached activation reproduces the spliced run.
                var recon = loaded.forward(cache["blocks.3.hook_mlp_out"]);
                var again = model.RunWithHooks(tokens, ("blocks.3.hook_mlp_out", _ => recon));
                Assert.True(again.allclose(spliced, rtol: 1e-5, atol: 1e-5));
                Assert.False(spliced.allclose(logits, rtol: 1e-6, atol: 1e-6)); // the splice changed the run
            }
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
    public void The_readme_block_is_this_sample()
    {
        string readme = File.ReadAllText(Path.Combine(AppContext.BaseDirectory, "readme", "README.md"));
        string source = File.ReadAllText(Path.Combine(AppContext.BaseDirectory, "readme", "ReadmeSampleTests.cs"));
        int marker = readme.IndexOf("ReadmeSampleTests.cs's sample", StringComparison.Ordinal);
        Assert.True(marker >= 0, "README has no marked library sample");
        int start = readme.IndexOf("```csharp\n", marker, StringComparison.Ordinal) + "```csharp\n".Length;
        string block = readme[start..readme.IndexOf("```", start, StringComparison.Ordinal)];
        var readmeLines = Lines(block).SkipWhile(l => l.StartsWith("using ", StringComparison.Ordinal)).Select(l =>
        {
            foreach (var (r, t) in ToyScale) l = l.Replace(r, t);
            return l;
        }).ToList();
        string begin = "// readme-sample " + "begin", end = "// readme-sample " + "end";
        int b = source.IndexOf(begin, StringComparison.Ordinal) + begin.Length;
        var sampleLines = Lines(source[b..source.IndexOf(end, b, StringComparison.Ordinal)]).ToList();
        Assert.Equal(sampleLines, readmeLines);
    }

    private static IEnumerable<string> Lines(string text) =>
        text.Split('\n').Select(l => l.Trim()).Where(l => l.Length > 0);
}
