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
}
