using System.Text.Json.Nodes;
using SaeSharp.Tests.Hub;
using SaeSharp.Tests.Tokenizers;

namespace SaeSharp.Tests.Cli;

/// <summary>
/// <c>sae eval --model openai/gpt-oss-20b --sae gpt-oss-20b-andyrdt/resid_post_layer_3_trainer_0</c> as a user runs it,
/// against a loopback hub: the model is the tiny MXFP4 gpt-oss checkpoint of tests/data/hf_models/gpt_oss-mxfp4 (4 layers,
/// so blocks.3.hook_resid_post exists) with a SentencePiece-style tokenizer, served as <c>openai/gpt-oss-20b</c>; the SAE is
/// dictionary_learning's AutoEncoder fixture (activation_dim 32 = the tiny model's d_model), served at the release's
/// repository and path (<c>andyrdt/saes-gpt-oss-20b</c>, <c>resid_post_layer_3/trainer_0</c>).
/// </summary>
public class GptOssReleaseTests : FakeHubTestBase
{
    [Fact]
    public void Gpt_oss_20b_andyrdt_release_evaluates_on_the_model_downloaded_as_openai_gpt_oss_20b()
    {
        string model = Path.Combine(_work, "gpt-oss-20b");
        Directory.CreateDirectory(model);
        foreach (var f in new[] { "config.json", "model.safetensors" })
            File.Copy(TestPaths.Data("hf_models", "gpt_oss-mxfp4", f), Path.Combine(model, f));
        SentencePieceTokenizerTests.WriteTokenizer(model);
        _server.Repos["openai/gpt-oss-20b"] = Directory.GetFiles(model).ToDictionary(f => Path.GetFileName(f),
            f => new FakeHubServer.FakeFile(File.ReadAllBytes(f), Lfs: f.EndsWith(".safetensors", StringComparison.Ordinal)));
        string sae = TestPaths.Data("dictionary_learning", "AutoEncoder");
        _server.Repos["andyrdt/saes-gpt-oss-20b"] = new()
        {
            ["resid_post_layer_3/trainer_0/ae.pt"] = new(File.ReadAllBytes(Path.Combine(sae, "ae.pt")), Lfs: true),
            ["resid_post_layer_3/trainer_0/config.json"] = new(File.ReadAllBytes(Path.Combine(sae, "config.json"))),
        };
        string data = Path.Combine(_work, "data.txt");
        var rng = new Random(5);
        string[] words = ["a", "b", "ab", "ba", "aab", "abb"];
        File.WriteAllLines(data, Enumerable.Range(0, 30).Select(_ => string.Join(" ", Enumerable.Range(0, 12).Select(_ => words[rng.Next(words.Length)]))));
        string json = Path.Combine(_work, "eval.json");
        var env = new Dictionary<string, string> { ["HF_ENDPOINT"] = _server.Endpoint, ["HF_HUB_CACHE"] = _cache };
        var (exit, output, err) = CliRunner.RunWithEnvironment(env, "eval", "--model", "openai/gpt-oss-20b", "--sae",
            "gpt-oss-20b-andyrdt/resid_post_layer_3_trainer_0", "--dataset", data, "--tokens", "64", "--context-size", "16", "--json", json);
        Assert.True(exit == 0, err + output);
        var result = JsonNode.Parse(File.ReadAllText(json))!;
        var r = result is JsonArray a ? a[0]! : result;
        Assert.Equal(64, (double?)r["token_stats"]?["total_tokens_eval_reconstruction"]);
        double ce = (double?)r["model_performance_preservation"]?["ce_loss_score"] ?? double.NaN;
        Assert.True(double.IsFinite(ce), r.ToJsonString());
        Assert.True(File.Exists(Path.Combine(_cache, "models--openai--gpt-oss-20b", "snapshots", _server.Commit, "model.safetensors")),
            "the model was not downloaded as openai/gpt-oss-20b");
        Assert.Contains(_server.Requests, r => r.Path.Contains("resid_post_layer_3/trainer_0/ae.pt", StringComparison.Ordinal));
    }
}
