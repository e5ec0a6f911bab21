using SaeSharp.IO;
using SaeSharp.Models;
using SaeSharp.Tests.Tokenizers;
using static SaeSharp.Tests.Models.TranscriptionReference;
using static TorchSharp.torch;

namespace SaeSharp.Tests.Models;

/// <summary>
/// Every hook and the logits against TransformerLens's own HookedTransformer (v2.12.0, bench/reference/tl_reference_fixture.py)
/// run on the same tiny Hugging Face checkpoints (tests/data/hf_models): unprocessed ("raw"), and after from_pretrained's
/// default processing (fold_ln, center_writing_weights, center_unembed, fold_value_biases) against
/// <see cref="WeightProcessing"/> with <see cref="WeightProcessingOptions.TransformerLensDefaults"/> ("processed").
/// TransformerLens's per-family converters and process_weights made the reference; its raw logits equal transformers'
/// (reference.npz) within 2e-5 for every family here, which the fixture script checked.
/// </summary>
public class TransformerLensReferenceTests
{
    public static TheoryData<string, bool> Cases()
    {
        var data = new TheoryData<string, bool>();
        foreach (var family in new[] { "gpt2", "gpt_neo", "gptj", "opt", "gpt_neox-parallel", "gpt_neox-sequential", "llama3", "mistral",
                                       "qwen2", "phi", "phi3", "bloom" })
        {
            data.Add(family, false);
            data.Add(family, true);
        }
        return data;
    }

    [Theory]
    [MemberData(nameof(Cases))]
    public void Hooks_and_logits_equal_TransformerLens(string family, bool processed)
    {
        using var scope = NewDisposeScope();
        var reference = Npy.LoadNpz(TestPaths.Data("tl_reference", family + ".npz"));
        string setting = processed ? "processed/" : "raw/";
        var model = ModelLoader.FromPretrained(TestPaths.Data("hf_models", family));
        using var run = WeightProcessing.Apply(model, processed ? WeightProcessingOptions.TransformerLensDefaults : new WeightProcessingOptions());
        var hooks = reference.Keys.Where(k => k.StartsWith(setting, StringComparison.Ordinal) && k != setting + "logits")
                                  .Select(k => k[setting.Length..]).ToList();
        var missing = hooks.Where(h => !model.HookPoints.Names.Contains(h)).ToList();
        Assert.True(missing.Count == 0, $"{family}: TransformerLens hooks the model does not list: {string.Join(", ", missing)}");
        var (logits, cache) = model.RunWithCache(reference["tokens"], new RunOptions { CacheNames = hooks, Hooks = run.Hooks });
        using (cache)
        {
            var failures = new List<string>();
            foreach (var h in hooks)
            {
                var expected = reference[setting + h];
                // An RMSNorm's hook_normalized: TransformerLens's is x/scale before the weight (RMSNorm.forward), SaeSharp's
                // the norm's output, weight included (HookPoints: exactly the next layer's input); after fold_ln both are x/scale.
                if (!processed && h.EndsWith(".hook_normalized", StringComparison.Ordinal) && model.Config.NormalizationType == "RMS")
                    expected = expected * RmsWeight(model, h);
                var actual = cache[h];
                if (!expected.shape.SequenceEqual(actual.shape))
                {
                    failures.Add($"{h}: shape [{string.Join(", ", actual.shape)}], TransformerLens [{string.Join(", ", expected.shape)}]");
                    continue;
                }
                double d = h.EndsWith("hook_attn_scores", StringComparison.Ordinal) ? MaskedDifference(expected, actual) : RelativeDifference(expected, actual);
                if (!(d < 1e-4)) failures.Add($"{h}: {d:g3}");
            }
            double dl = RelativeDifference(reference[setting + "logits"], logits!);
            if (!(dl < 1e-4)) failures.Add($"logits: {dl:g3}");
            Assert.True(failures.Count == 0, $"{family} {setting}: " + string.Join("; ", failures));
        }
    }

    /// <summary>The checkpoint's RMSNorm weight behind <paramref name="hook"/> (ln1: input_layernorm, ln2:
    /// post_attention_layernorm, ln_final: model.norm).</summary>
    private static Tensor RmsWeight(HookedTransformer model, string hook)
    {
        var p = model.named_parameters().ToDictionary(kv => kv.name, kv => kv.parameter, StringComparer.Ordinal);
        if (hook == "ln_final.hook_normalized") return p["model.norm.weight"];
        var parts = hook.Split('.');
        return p[$"model.layers.{parts[1]}.{(parts[2] == "ln1" ? "input_layernorm" : "post_attention_layernorm")}.weight"];
    }

    /// <summary>Attention scores where TransformerLens's are finite (its masked entries are -inf; ours may be another large
    /// negative), after checking both mask the same entries.</summary>
    private static double MaskedDifference(Tensor expected, Tensor actual)
    {
        var keep = expected.isfinite();
        Assert.True(actual.masked_select(keep.logical_not()).le(-1e30).all().item<bool>(), "a score TransformerLens masks is not masked");
        return RelativeDifference(expected.masked_select(keep), actual.masked_select(keep));
    }
}
