using SaeSharp.Saes;
using SaeSharp.Training;

namespace SaeSharp.Tests.Training;

public class SaeRecipesTests
{
    [Fact]
    public void LongRunsKeepDictionaryLearningsBatchTopKThresholdSchedule()
    {
        using var sae = SaeRecipes.Create("batchtopk", dIn: 8, dSae: 32, k: 2, totalSteps: 100_000);
        Assert.Equal(1000, sae.Training.ThresholdStartStep);
        Assert.Equal(0.999, sae.Training.ThresholdMomentum);
    }

    [Fact]
    public void ShortRunsEstimateTheThresholdOverTheirLastSteps()
    {
        // 300 steps: the estimate starts at step 75 and averages over a fifth of the 225 remaining steps (β = 1 − 1/45).
        using var sae = SaeRecipes.Create("batchtopk", dIn: 8, dSae: 32, k: 2, totalSteps: 300);
        Assert.Equal(75, sae.Training.ThresholdStartStep);
        Assert.Equal(1 - 1.0 / 45, sae.Training.ThresholdMomentum, 12);
        // An EMA with that β forgets the first estimate: after the 225 updates its weight is below 1%.
        Assert.True(Math.Pow(sae.Training.ThresholdMomentum, 225) < 0.01);
    }

    /// <summary>From C# there is no --k flag: the message names the parameter (the flag in brackets for the CLI).</summary>
    [Fact]
    public void A_topk_recipe_without_k_names_the_parameter()
    {
        var e = Assert.Throws<SaeSharpException>(() => SaeRecipes.Create("batchtopk", dIn: 4, dSae: 8));
        Assert.Equal("architecture 'batchtopk' needs k, the active latents per row (--k)", e.Message);
    }
}
