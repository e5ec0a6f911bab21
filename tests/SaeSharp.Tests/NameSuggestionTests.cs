namespace SaeSharp.Tests;

public class NameSuggestionTests
{
    [Theory]
    [InlineData("", "", 0)]
    [InlineData("kitten", "sitting", 3)]          // the textbook pair: two substitutions and an insertion
    [InlineData("flaw", "lawn", 2)]               // a deletion and an insertion
    [InlineData("hook_mlp_ot", "hook_mlp_out", 1)]
    [InlineData("abc", "", 3)]
    public void Edit_distance_is_Levenshtein(string a, string b, int expected)
    {
        Assert.Equal(expected, NameSuggestion.EditDistance(a, b));
        Assert.Equal(expected, NameSuggestion.EditDistance(b, a));
    }

    [Fact]
    public void Suggests_the_nearest_name_within_two_edits_only()
    {
        string[] hooks = ["blocks.1.hook_mlp_out", "blocks.1.hook_attn_out", "blocks.11.hook_mlp_out"];
        Assert.Equal(" (did you mean 'blocks.1.hook_mlp_out'?)", NameSuggestion.For("blocks.1.hook_mlp_ot", hooks));
        Assert.Equal("", NameSuggestion.For("blocks.1.hook_resid", hooks));
        // Nearer wins over ordinal order (1 edit against 2), and a tie goes to the ordinal first.
        Assert.Equal(" (did you mean 'blocks.1.hook_mlp_out'?)", NameSuggestion.For("blocks.1.hook_mlp_outx", hooks));
        Assert.Equal(" (did you mean 'blocks.1.hook_mlp_out'?)", NameSuggestion.For("blocks.2.hook_mlp_out", ["blocks.3.hook_mlp_out", "blocks.1.hook_mlp_out"]));
    }

    [Fact]
    public void Case_is_ignored_and_breaks_ties()
    {
        // "TopK" is 2 edits from "topk" with case and 0 without; "BatchTopK" 3 with case.
        Assert.Equal(" (did you mean 'topk'?)", NameSuggestion.For("TopK", ["relu", "topk", "batchtopk"]));
        Assert.Equal(" (did you mean 'batchtopk'?)", NameSuggestion.For("BatchTopK", ["relu", "topk", "batchtopk"]));
        // Equal without case: the one that also matches the case wins, whatever the ordinal order.
        Assert.Equal(" (did you mean 'b'?)", NameSuggestion.For("b", ["B", "b"]));
    }

    [Theory]
    [InlineData("top-k", "topk")]
    [InlineData("TopK", "topk")]
    [InlineData("BatchTopK", "batchtopk")]
    [InlineData("jump_relu", "jumprelu")]
    public void Unknown_train_arch_suggests_the_nearest_recipe(string given, string nearest)
    {
        var e = Assert.Throws<SaeSharpException>(() => SaeSharp.Training.SaeRecipes.Get(given));
        Assert.Contains($"unknown architecture '{given}' (did you mean '{nearest}'?) (choose from relu,", e.Message);
    }

    [Fact]
    public void Unknown_cfg_architecture_suggests_the_nearest()
    {
        var e = Assert.Throws<SaeSharpException>(() => SaeSharp.Saes.SaeArchitectures.Get("JumpReLU", "x/cfg.json"));
        Assert.StartsWith("x/cfg.json: unknown architecture 'JumpReLU' (did you mean 'jumprelu'?) (known: ", e.Message);
    }
}
