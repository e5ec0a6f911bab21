using SaeSharp.Analysis;

namespace SaeSharp.Tests.Analysis;

/// <summary>PromptInspector.Compare on views written by hand.</summary>
public class PromptComparisonTests
{
    private static PromptView View(params (int Feature, double Sum)[] features) => new()
    {
        Prompt = "p", Tokens = [1], TokenStrings = ["a"],
        Features = features.Select(f => new UnitActivations(f.Feature, f.Sum, [(float)f.Sum])).ToList(),
    };

    [Fact]
    public void Compare_lists_features_active_on_every_prompt_and_those_active_on_one_prompt_only()
    {
        // Active = positive sum. Prompt 0: 1, 2, 5; prompt 1: 2, 4, 5; prompt 2: 2, 5, 6 (feature 3 and 7 never fire).
        var views = new[] { View((1, 2), (2, 1), (5, 1), (3, 0)), View((2, 3), (4, 1), (5, 2)), View((5, 1), (2, 1), (6, 4), (7, 0)) };
        var c = PromptInspector.Compare(views);
        Assert.Equal([2, 5], c.Shared.Order());
        Assert.Equal([1], c.Specific[0]);
        Assert.Equal([4], c.Specific[1]);
        Assert.Equal([6], c.Specific[2]);
    }
}
