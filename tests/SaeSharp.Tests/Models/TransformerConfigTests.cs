using SaeSharp.Models;

namespace SaeSharp.Tests.Models;

/// <summary>The one-line model summary (<c>sae model info</c>) for hub-sized layer layouts the tiny fixtures do not have:
/// which layers are sliding-window, the attention sinks, the rope type with its parameters.</summary>
public class TransformerConfigTests
{
    private static TransformerConfig Config(int layers, IEnumerable<int> sliding, RopeScaling? rope = null, bool sinks = false) => new()
    {
        ModelName = "m", Architecture = "olmo3", NLayers = layers, DModel = 64, NHeads = 4, DMlp = 128, DVocab = 100, NCtx = 4096,
        Activation = "silu", LayerNormEps = 1e-6, RotaryDim = 16, RotaryBase = 500_000, SlidingWindow = 4096,
        SlidingWindowLayers = [.. sliding], RopeScaling = rope, AttentionSinks = sinks,
    };

    [Theory]
    // gpt-oss-20b: layer_types alternate, even layers sliding.
    [InlineData(24, "0,2,4,6,8,10,12,14,16,18,20,22", " sliding_layers=0,2,...,22 ")]
    // OLMo 3 7B: every fourth layer full: the full ones are the shorter list.
    [InlineData(32, "0,1,2,4,5,6,8,9,10,12,13,14,16,17,18,20,21,22,24,25,26,28,29,30", " full_attention_layers=3,7,...,31 ")]
    // Gemma 3 27B: every sixth layer global.
    [InlineData(62, "", " full_attention_layers=5,11,...,59 ")]
    // Mistral: every layer.
    [InlineData(4, "0,1,2,3", " sliding_layers=all ")]
    // Qwen2 use_sliding_window from max_window_layers 2 of 6: a run ("0-1" is no shorter).
    [InlineData(6, "2,3,4,5", " sliding_layers=2-5 ")]
    // No pattern: ranges, of the sliding layers or of the full ones, whichever is shorter.
    [InlineData(8, "1,2,5", " sliding_layers=1-2,5 ")]
    [InlineData(5, "0,1,3", " full_attention_layers=2,4 ")]
    public void Sliding_layers_are_listed_compactly(int layers, string sliding, string expected)
    {
        var list = sliding.Length > 0 ? sliding.Split(',').Select(int.Parse) : Enumerable.Range(0, layers).Where(i => (i + 1) % 6 != 0);
        Assert.Contains(expected, Config(layers, list).ToString());
    }

    [Fact]
    public void Rope_type_parameters_and_sinks_are_printed()
    {
        var yarn = new RopeScaling { Type = "yarn", Factor = 32, OriginalMaxPositionEmbeddings = 4096, BetaFast = 32, BetaSlow = 1, Truncate = false, AttentionFactor = 0.1 * Math.Log(32) + 1 };
        string s = Config(2, [0], yarn, sinks: true).ToString();
        Assert.Contains(" attn_sinks ", s);
        Assert.Contains(" rotary_dim=16 rotary_base=500000 rope_type=yarn(factor=32 original_max_position_embeddings=4096 beta_fast=32 beta_slow=1 truncate=false attention_factor=1.34657) ", s);
        var llama3 = new RopeScaling { Type = "llama3", Factor = 8, LowFreqFactor = 1, HighFreqFactor = 4, OriginalMaxPositionEmbeddings = 8192 };
        Assert.Contains(" rope_type=llama3(factor=8 low_freq_factor=1 high_freq_factor=4 original_max_position_embeddings=8192) ", Config(2, [], llama3).ToString());
        string plain = Config(2, []).ToString();
        Assert.Contains(" rope_type=default ", plain);
        Assert.DoesNotContain("attn_sinks", plain);
        Assert.DoesNotContain("sliding_layers", plain);
    }
}
