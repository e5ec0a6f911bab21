using System.Text.Json.Nodes;
using SaeSharp.Analysis;
using SaeSharp.IO;
using SaeSharp.Models;
using SaeSharp.Tests.Tokenizers;
using static TorchSharp.torch;

namespace SaeSharp.Tests.Models;

/// <summary>GPT-Neo's config reading and weights, on the tests/data/hf_models/gpt_neo fixture (its forward against
/// transformers' is in <see cref="HfTransformersParityTests"/>).</summary>
public class GptNeoTests : TempDirTestBase
{
    private static string Fixture => TestPaths.Data("hf_models", "gpt_neo");

    /// <summary>A copy of the fixture with config.json edited by <paramref name="edit"/>.</summary>
    private string Edited(Action<JsonObject> edit) => EditedCopy(Fixture, edit);

    [Fact]
    public void Attention_types_expand_as_GPTNeoConfig_does_when_attention_layers_is_absent()
    {
        // [[["global", "local"], 1], [["local"], 1]] is global, local, local: the fixture's attention_layers, so the same logits.
        using var scope = NewDisposeScope();
        var r = Npy.LoadNpz(Path.Combine(Fixture, "reference.npz"));
        string dir = Edited(c => c.Remove("attention_layers"));
        using var model = ModelLoader.FromPretrained(dir);
        Assert.Equal([1, 2], model.Config.SlidingWindowLayers);
        Assert.True(r["logits"].allclose(model.Forward(r["tokens"]), rtol: 0, atol: 1e-4));
        // Pattern ["local", "global"] once then ["global"] once: local, global, global.
        string other = Edited(c =>
        {
            c.Remove("attention_layers");
            c["attention_types"] = JsonNode.Parse("""[[["local", "global"], 1], [["global"], 1]]""");
        });
        using var model2 = ModelLoader.FromPretrained(other);
        Assert.Equal([0], model2.Config.SlidingWindowLayers);
        Assert.Equal(5, model2.Config.SlidingWindow);
    }

    [Theory]
    [InlineData("attention_layers", """["global", "local"]""", "attention_types give 2 layer(s) but num_layers=3")]
    [InlineData("attention_layers", """["global", "sparse", "local"]""", "attention type 'sparse' is not supported")]
    [InlineData("attention_layers", """["global", 1, "local"]""", "attention_layers must be a list")]
    [InlineData("window_size", "0", "window_size=0 must be positive")]
    [InlineData("tie_word_embeddings", "false", "tie_word_embeddings=false is not supported for gpt_neo")]
    [InlineData("num_heads", "5", "hidden_size=32 must be a positive multiple of num_heads=5")]
    [InlineData("intermediate_size", "64", "intermediate_size=64, hidden_size=32 imply")]
    public void Bad_config_is_refused_naming_the_key(string key, string value, string message)
    {
        string dir = Edited(c => c[key] = JsonNode.Parse(value));
        var e = Assert.Throws<SaeSharpException>(() => ModelLoader.FromPretrained(dir));
        Assert.Contains(message, e.Message);
        Assert.Contains("config.json", e.Message);
    }

    [Fact]
    public void Bad_attention_types_entry_is_refused()
    {
        string dir = Edited(c =>
        {
            c.Remove("attention_layers");
            c["attention_types"] = JsonNode.Parse("""[[["global", "local"]], 3]""");
        });
        Assert.Contains("must be [[\"global\"|\"local\", ...], count]", Assert.Throws<SaeSharpException>(() => ModelLoader.FromPretrained(dir)).Message);
    }

    [Fact]
    public void Found_by_architecture_without_model_type()
    {
        using var scope = NewDisposeScope();
        string dir = Edited(c => c.Remove("model_type"));
        using var model = ModelLoader.FromPretrained(dir);
        Assert.Equal("gpt_neo", model.Config.Architecture);
    }

    [Fact]
    public void Mlp_out_weights_are_c_proj_transposed_and_write_hook_mlp_out()
    {
        // FeatureWeights.MlpOut [d_mlp, d_model]: hook_mlp_out = hook_post · W_out + c_proj.bias.
        using var scope = NewDisposeScope();
        using var model = ModelLoader.FromPretrained(Fixture);
        var p = model.named_parameters().ToDictionary(kv => kv.name, kv => kv.parameter);
        var wOut = FeatureWeights.MlpOut(model, 1);
        Assert.True(wOut.allclose(p["transformer.h.1.mlp.c_proj.weight"].t(), rtol: 0, atol: 0));
        var blk = model.HookPoints.Blocks[1];
        using var run = model.RunWithCache(tensor(new long[] { 3, 7, 1, 9, 4 }).unsqueeze(0), new RunOptions { CacheNames = [blk.MlpPost, blk.MlpOut] });
        var expected = run.Cache[blk.MlpPost].matmul(wOut) + p["transformer.h.1.mlp.c_proj.bias"];
        Assert.True(expected.allclose(run.Cache[blk.MlpOut], rtol: 0, atol: 1e-4));
    }
}
