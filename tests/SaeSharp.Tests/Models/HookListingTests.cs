using SaeSharp.Models;
using SaeSharp.Tests.Tokenizers;
using static TorchSharp.torch;

namespace SaeSharp.Tests.Models;

/// <summary>What <c>sae model info</c> lists is what a run gives: every hook of <see cref="HookedTransformer.HookNames"/>
/// (opt-in ones included) fires, with exactly the shape <see cref="HookedTransformer.HookShape"/> lists, for every family's
/// tiny Hugging Face checkpoint in tests/data/hf_models.</summary>
public class HookListingTests
{
    public static TheoryData<string> Families => HfTransformersParityTests.Families;

    [Theory]
    [MemberData(nameof(Families))]
    public void Every_listed_hook_fires_with_its_listed_shape(string family)
    {
        using var scope = NewDisposeScope();
        using var model = ModelLoader.FromPretrained(TestPaths.Data("hf_models", family));
        const int batch = 2, pos = 5;
        var tokens = tensor(new long[,] { { 1, 2, 3, 4, 5 }, { 6, 7, 8, 9, 10 } });
        var (_, cache) = model.RunWithCache(tokens, model.HookNames);
        using (cache)
        {
            var problems = new List<string>();
            foreach (var name in model.HookNames)
            {
                // The listed shape with this run's sizes put in: [batch, pos, ...] or [batch, head, query_pos, key_pos].
                string listed = model.HookShape(name).Replace("query_pos", $"{pos}", StringComparison.Ordinal)
                    .Replace("key_pos", $"{pos}", StringComparison.Ordinal).Replace("batch", $"{batch}", StringComparison.Ordinal)
                    .Replace("pos", $"{pos}", StringComparison.Ordinal);
                if (!cache.TryGetValue(name, out var t))
                {
                    // An expert's hooks fire only when the router sends it a token (gpt-oss's tiny fixture leaves some idle).
                    bool idleExpert = model.HookPoints.ExpertRouting(name) is { } r && !cache[r.IndicesHook].eq(r.Expert).any().item<bool>();
                    if (!idleExpert) problems.Add($"{name}: listed as {listed} but never fired");
                }
                else if ($"[{string.Join(", ", t.shape)}]" is var actual && actual != listed) problems.Add($"{name}: listed as {listed}, fired {actual}");
            }
            Assert.True(problems.Count == 0, $"{family}:\n" + string.Join("\n", problems));
        }
    }
}
