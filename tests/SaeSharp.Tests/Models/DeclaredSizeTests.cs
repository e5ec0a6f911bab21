using System.Text.Json.Nodes;
using SaeSharp.Interop;
using SaeSharp.Models;
using SaeSharp.Saes;
using SaeSharp.Tokenizers;

namespace SaeSharp.Tests.Models;

/// <summary>
/// A config that declares a huge model, SAE or vocabulary is refused against the files actually present, in one
/// line naming the declared size, before anything of that size is allocated (a fuzz finding: the model used to be
/// built first). "Allocated" is measured as managed bytes on this thread; native tensors would be far larger still.
/// </summary>
public class DeclaredSizeTests : ModelTestBase
{
    const long Budget = 64L << 20;

    static SaeSharpException Refused(Action load)
    {
        long before = GC.GetAllocatedBytesForCurrentThread();
        var e = Assert.Throws<SaeSharpException>(load);
        Assert.True(GC.GetAllocatedBytesForCurrentThread() - before < Budget, "the refusal allocated more than 64 MiB");
        Assert.DoesNotContain('\n', e.Message);
        return e;
    }

    static void Edit(string dir, string file, Action<JsonObject> edit)
    {
        string p = Path.Combine(dir, file);
        var o = JsonNode.Parse(File.ReadAllText(p))!.AsObject();
        edit(o);
        File.WriteAllText(p, o.ToJsonString());
    }

    [Theory]
    [InlineData("vocab_size", 1_000_000_000, "wte.weight")]
    [InlineData("n_layer", 1_000_000, "layer")]
    [InlineData("n_positions", int.MaxValue, "wpe.weight")]
    [InlineData("n_inner", 1_000_000_000, "c_fc.weight")]
    [InlineData("n_embd", 1 << 30, "wte.weight")]
    public void Gpt2_config_declaring_a_huge_model_is_refused_before_building(string key, int value, string named)
    {
        string dir = TinyModels.WriteGpt2(Sub("g"), seed: 1, nLayer: 1, nEmbd: 8, nHead: 2, vocab: 16);
        Edit(dir, "config.json", o => o[key] = value);
        var e = Refused(() => ModelLoader.FromPretrained(dir).Dispose());
        Assert.Contains($"{key}={value}", e.Message);
        Assert.Contains(named, e.Message);
    }

    [Theory]
    [InlineData("num_hidden_layers", 1_000_000)]
    [InlineData("vocab_size", 1_000_000_000)]
    [InlineData("intermediate_size", 1_000_000_000)]
    public void NeoX_config_declaring_a_huge_model_is_refused(string key, int value)
    {
        string dir = TinyModels.WriteNeoX(Sub("n"), nLayer: 1);
        Edit(dir, "config.json", o => o[key] = value);
        var e = Refused(() => ModelLoader.FromPretrained(dir).Dispose());
        Assert.Contains($"{key}={value}", e.Message);
    }

    [Theory]
    [InlineData("num_hidden_layers", 1_000_000_000)] // would allocate a per-layer table while reading the settings
    [InlineData("head_dim", 1 << 30)]                // would allocate the rotary frequencies while reading the settings
    [InlineData("vocab_size", 1_000_000_000)]
    [InlineData("num_attention_heads", 1 << 24)]
    public void Llama_config_declaring_a_huge_model_is_refused(string key, int value)
    {
        string dir = TinyDecoders.Write(Sub("l"), new DecoderSpec { ModelType = "llama", Layers = 1 });
        Edit(dir, "config.json", o =>
        {
            o[key] = value;
            if (key == "num_attention_heads") o["num_key_value_heads"] = value;
        });
        var e = Refused(() => ModelLoader.FromPretrained(dir).Dispose());
        Assert.Contains($"{key}={value}", e.Message);
    }

    [Fact]
    public void Matching_sizes_still_load()
    {
        using var m = ModelLoader.FromPretrained(TinyDecoders.Write(Sub("ok"), new DecoderSpec { ModelType = "qwen3", Layers = 2 }));
        Assert.Equal(2, m.Config.NLayers);
    }

    [Theory]
    [InlineData("d_sae", 1_000_000_000)]
    [InlineData("d_in", 1_000_000_000)]
    public void Saelens_cfg_declaring_a_huge_sae_is_refused_before_building(string key, int value)
    {
        string dir = Sub("sae");
        var cfg = new SaeConfig { Architecture = SaeArchitectures.TopK, DIn = 4, DSae = 6, K = 2 };
        using (var sae = SaeFactory.Create(cfg)) SaeLensFormat.Save(sae, dir);
        Edit(dir, "cfg.json", o => o[key] = value);
        var e = Refused(() => SaeLoader.Load(dir).Dispose());
        Assert.Contains($"{key}={value}", e.Message);
        Assert.Contains("W_enc", e.Message);
    }

    [Theory]
    [InlineData(2_000_000_000)]
    [InlineData(int.MaxValue)]
    [InlineData(-3)]
    public void Tokenizer_ids_far_beyond_the_vocabulary_are_refused(int id)
    {
        string dir = Sub("tok");
        Directory.CreateDirectory(dir);
        string bpe = Path.Combine(dir, "tokenizer.json");
        File.WriteAllText(bpe, SaeSharp.Tests.Tokenizers.TokenizerJsonTests.TinyTokenizerJson.Replace("\"id\": 10,", $"\"id\": {id},"));
        var e = Refused(() => Tokenizer.FromTokenizerJson(bpe));
        Assert.Contains(id.ToString(System.Globalization.CultureInfo.InvariantCulture), e.Message);
    }
}
