using SaeSharp.Tests.Hub;

namespace SaeSharp.Tests.Cli;

/// <summary>A hub model whose family SaeSharp does not build (SAELens's <c>openai/gpt-oss-20b</c> release names one) is
/// refused from its config.json, before its weights are downloaded: the error names the model_type, and the weights are
/// neither requested nor in the cache.</summary>
public class UnsupportedModelDownloadTests : FakeHubTestBase
{
    [Fact]
    public void An_unsupported_model_type_is_refused_before_the_weights_are_downloaded()
    {
        _server.Repos["openai/gpt-oss-20b"] = new()
        {
            ["config.json"] = new FakeHubServer.FakeFile("""{"architectures": ["GptOssForCausalLM"], "model_type": "gpt_oss", "hidden_size": 2880}"""u8.ToArray()),
            ["model.safetensors"] = new FakeHubServer.FakeFile(new byte[4096], Lfs: true),
        };
        var env = new Dictionary<string, string> { ["HF_ENDPOINT"] = _server.Endpoint, ["HF_HUB_CACHE"] = _cache };
        var (exit, _, err) = CliRunner.RunWithEnvironment(env, "model", "info", "--model", "openai/gpt-oss-20b");
        Assert.Equal(1, exit);
        Assert.Contains("model_type 'gpt_oss' is not supported", err);
        Assert.DoesNotContain(_server.Requests, r => r.Path.Contains("model.safetensors", StringComparison.Ordinal));
        Assert.Contains(_server.Requests, r => r.Path.Contains("config.json", StringComparison.Ordinal));
        Assert.Empty(Directory.EnumerateFiles(_cache, "model.safetensors", SearchOption.AllDirectories));
    }
}
