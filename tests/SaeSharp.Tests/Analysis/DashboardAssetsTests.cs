using System.Text.RegularExpressions;
using SaeSharp.Analysis;

namespace SaeSharp.Tests.Analysis;

/// <summary>The dashboard index's stylesheet and script agree on how a row is laid out.</summary>
public class DashboardAssetsTests
{
    [Fact]
    public void The_density_cell_keeps_its_percentage_and_bar_on_one_line()
    {
        // The script renders the density as text followed by an inline bar; without nowrap a five-character
        // percentage ("2.63%") wrapped above its bar while a four-character one ("2.8%") stayed beside it, so
        // rows of the index came out in two heights (seen on the demo's dashboard).
        var cell = Regex.Match(DashboardAssets.Js, """<td class="([^"]+)">' \+ pct\(r\.d\) \+ '<span class="dbar">""");
        Assert.True(cell.Success, "the index script no longer renders the density cell as expected");
        string[] classes = cell.Groups[1].Value.Split(' ');
        bool nowrap = classes.Any(c => Regex.IsMatch(DashboardAssets.Css, @"td\." + Regex.Escape(c) + @"\s*\{[^}]*white-space:\s*nowrap"));
        Assert.True(nowrap, $"no class of the density cell ({cell.Groups[1].Value}) has white-space: nowrap in the stylesheet");
    }

    // The index's density column is in percent; a density below 1e-4 came out as the bare fraction ("6.52e-5", a feature
    // that fired 3 times in 46,029 tokens) among percentages, read as 6.52e-5 % (seen on the demo's dashboard).
    [Theory]
    [InlineData(0.0933, "9.3%")]
    [InlineData(0.00013, "0.013%")]
    [InlineData(3.0 / 46029, "6.52e-3%")]
    [InlineData(0.0, "0")]
    public void Densities_are_percentages_at_every_size(double density, string expected) =>
        Assert.Equal(expected, DashboardWriter.Percent(density));

    [Fact]
    public void The_index_scripts_density_is_a_percentage_at_every_size()
    {
        var pct = Regex.Match(DashboardAssets.Js, @"function pct\(d\) \{ return (.*?); \}");
        Assert.True(pct.Success, "the index script no longer has its pct function");
        // every branch but the zero one multiplies by 100 and appends '%'
        string[] branches = pct.Groups[1].Value.Split(" : ");
        Assert.All(branches.Skip(1), b => Assert.Matches(@"\(d \* 100\).*\+ '%'$", b));
    }
}

