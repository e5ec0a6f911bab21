using SaeSharp.Tests.Hub;

namespace SaeSharp.Tests.Cli;

/// <summary>A hub model whose family SaeSharp does not build (DeepSeek-V3 here) is
/// refused from its config.json, before its weights are downloaded, as is a supported family with a setting SaeSharp
/// refuses: the error names it, and the weights are
/// neither requested nor in the cache.</summary>
public class UnsupportedModelDownloadTests : FakeHubTestBase
{
    [Theory]
    // DeepSeek-V2-style routing on a deepseek_v3 config.
    [InlineData("deepseek", "topk_method 'group_limited_greedy' is not supported")]
    // A supported family with a setting it refuses: dynamic NTK rope scaling.
    [InlineData("qwen3-dynamic", "rope_scaling type 'dynamic' is not supported")]
    public void A_model_it_cannot_build_is_refused_before_the_weights_are_downloaded(string which, string error)
    {
        string config = which == "deepseek"
            ? """{"architectures": ["DeepseekV3ForCausalLM"], "model_type": "deepseek_v3", "hidden_size": 7168, "topk_method": "group_limited_greedy"}"""
            : """
              {"model_type": "qwen3", "hidden_size": 64, "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16, "num_hidden_layers": 2, "intermediate_size": 128,
               "vocab_size": 100, "rope_scaling": {"rope_type": "dynamic", "factor": 4.0}}
              """;
        _server.Repos["org/unsupported"] = new()
        {
            ["config.json"] = new FakeHubServer.FakeFile(System.Text.Encoding.UTF8.GetBytes(config)),
            ["model.safetensors"] = new FakeHubServer.FakeFile(new byte[4096], Lfs: true),
        };
        var env = new Dictionary<string, string> { ["HF_ENDPOINT"] = _server.Endpoint, ["HF_HUB_CACHE"] = _cache };
        var (exit, _, err) = CliRunner.RunWithEnvironment(env, "model", "info", "--model", "org/unsupported");
        Assert.Equal(1, exit);
        Assert.True(err.Contains(error, StringComparison.Ordinal), err);
        Assert.DoesNotContain(_server.Requests, r => r.Path.Contains("model.safetensors", StringComparison.Ordinal));
        Assert.Contains(_server.Requests, r => r.Path.Contains("config.json", StringComparison.Ordinal));
        Assert.Empty(Directory.EnumerateFiles(_cache, "model.safetensors", SearchOption.AllDirectories));
    }
}
