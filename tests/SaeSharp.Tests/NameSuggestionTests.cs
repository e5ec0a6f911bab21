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
}
