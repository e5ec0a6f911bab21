using System.Text.Json.Nodes;
using SaeSharp.Analysis;
using SaeSharp.Tests.Cli;

namespace SaeSharp.Tests.Analysis;

/// <summary><c>sae features</c> then <c>sae neuronpedia</c> on the tiny model of <see cref="AnalysisFixture"/>.</summary>
public sealed class NeuronpediaCliTests : IDisposable
{
    private readonly AnalysisFixture _fx = new();

    public void Dispose() => _fx.Dispose();

    [Fact]
    public void Features_then_neuronpedia_writes_each_example_with_its_token_and_value()
    {
        string feat = Path.Combine(_fx.Dir, "feat"), np = Path.Combine(_fx.Dir, "np");
        var (exit, _, err) = CliRunner.Run("features", "--sae", _fx.SaeDir, "--model", _fx.ModelDir, "--dataset", _fx.DataPath,
            "--tokens", "200", "--out", feat, "--features", "0-4,9", "--top", "3", "--context", "4", "--batch-size", "2");
        Assert.True(exit == 0, err);

        // The fixture's SAE has neuronpedia_id tiny-neox/0-embed: model id, layer and set come from it.
        string stdout;
        (exit, stdout, err) = CliRunner.Run("neuronpedia", "--features", feat, "--out", np, "--model", _fx.ModelDir, "--n-features-per-batch", "4");
        Assert.True(exit == 0, err);
        string dir = Path.Combine(np, $"tiny-neox_embed_hook_embed_{AnalysisFixture.DSae}");
        Assert.Contains($"2 batch files: {dir}", stdout);
        // A standard SAE's features computed unfolded: the runner would have folded them first.
        Assert.Contains("note: the features were computed without --fold-w-dec-norm", err);
        var batches = new[] { "batch-0.json", "batch-1.json" }.Select(b => JsonNode.Parse(File.ReadAllText(Path.Combine(dir, b)))!).ToList();
        Assert.Equal([0, 1, 2, 3, 4, 9], batches.SelectMany(b => b["features"]!.AsArray().Select(f => (int)f!["feature_index"]!)));   // 6 → 3 + 3

        var tok = SaeSharp.Tokenizers.Tokenizer.FromFolder(_fx.ModelDir);
        var lines = File.ReadAllLines(Path.Combine(feat, "features.jsonl")).Select(l => JsonNode.Parse(l)!).ToList();
        var features = batches.SelectMany(b => b["features"]!.AsArray()).ToList();
        for (int i = 0; i < lines.Count; i++)
        {
            var examples = lines[i]["top_examples"]!.AsArray();
            var acts = features[i]!["activations"]!.AsArray();
            Assert.True(acts.Count >= examples.Count);
            for (int j = 0; j < examples.Count; j++)
            {
                var e = examples[j]!;
                var a = acts[j]!;
                int q = (int)a["qualifying_token_index"]!;
                // The qualifying token is the example's token (a vocabulary string: Ġ read as a space), its value the
                // activation to 4 places; window position 0 is never written.
                Assert.Equal(tok.IdToToken((int)e["token"]!)!.Replace("Ġ", " ", StringComparison.Ordinal), (string)a["tokens"]![q]!);
                Assert.Equal(Math.Round((double)(float)e["activation"]!, 4), (double)a["values"]![q]!, 1e-12);
                int first = (int)e["position"]! - (int)e["index"]!;
                Assert.Equal(e["context_tokens"]!.AsArray().Count - (first == 0 ? 1 : 0), a["tokens"]!.AsArray().Count);
                Assert.Equal(-1.0, (double)a["bin_min"]!);
            }
            Assert.Equal(13, (int)features[i]!["n_prompts_total"]!);                // ⌈200/16⌉ windows of 16
            Assert.Equal(16, (int)features[i]!["n_tokens_in_prompt"]!);
        }

        Assert.All(batches, b => Assert.Equal(("tiny-neox", 0, "embed"), ((string)b["model_id"]!, (int)b["layer"]!, (string)b["sae_set"]!)));

        (exit, stdout, err) = CliRunner.Run("neuronpedia", "--features", feat, "--out", feat, "--np-set-name", "emb", "--layer-num", "2", "--model-id", "neox");
        Assert.True(exit == 0, err);                                                  // a subfolder beside the report's files
        string dir2 = Path.Combine(feat, $"neox_emb_hook_embed_{AnalysisFixture.DSae}");
        Assert.Contains($"1 batch file: {dir2}", stdout);                              // 6 features at 128 per batch
        var b0 = JsonNode.Parse(File.ReadAllText(Path.Combine(dir2, "batch-0.json")))!;
        Assert.Equal(("neox", 2, "emb"), ((string)b0["model_id"]!, (int)b0["layer"]!, (string)b0["sae_set"]!));
        (exit, _, err) = CliRunner.Run("neuronpedia", "--features", _fx.Dir, "--out", np);
        Assert.Equal(1, exit);
        Assert.Contains("no features.jsonl", err);
    }
}
