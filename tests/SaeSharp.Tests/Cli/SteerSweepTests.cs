using SaeSharp.Interop;
using SaeSharp.Tests.Interventions;

namespace SaeSharp.Tests.Cli;

/// <summary><c>sae steer --scale A --scale B</c> (SAELens tutorial 2.0's sweep over steering strengths): each scale's table
/// equals the table of a call with that scale alone (same seeds), and a crosscoder refuses a sweep.</summary>
public class SteerSweepTests : CliTempDirTestBase
{
    /// <summary>The table of feature 3 at <paramref name="scale"/> (as its title names it) in <c>sae steer</c>'s output: title,
    /// header and two seeds.</summary>
    internal static string[] Table(string output, string scale)
    {
        var lines = output.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        int start = Array.FindIndex(lines, l => l.StartsWith($"feature 3 × {scale} at ", StringComparison.Ordinal));
        Assert.True(start >= 0, output);
        return lines.Skip(start).Take(4).ToArray();   // title, header, two seeds
    }

    [Fact]
    public void A_sweep_prints_for_each_scale_the_table_of_a_call_with_that_scale_alone()
    {
        using (var sae = InterventionTests.RandomSae("blocks.0.hook_mlp_out", 128, 64, 5)) SaeLensFormat.Save(sae, P("sae"));
        string[] common = ["steer", "--model", "builtin", "--sae", P("sae"), "--feature", "3", "--prompt", "Sara has a white fox",
            "--max-new-tokens", "5", "--runs", "2", "--temperature", "0.9", "--seed", "4"];
        var (exit, sweep, err) = CliRunner.Run([.. common, "--scale", "-30", "--scale", "30"]);
        Assert.True(exit == 0, err);
        foreach (var scale in new[] { "-30", "30" })
        {
            var (e1, alone, err1) = CliRunner.Run([.. common, "--scale", scale]);
            Assert.True(e1 == 0, err1);
            Assert.Equal(Table(alone, scale), Table(sweep, scale));
        }
        Assert.NotEqual(Table(sweep, "-30").Skip(2), Table(sweep, "30").Skip(2));   // the two scales steer differently

        // A scale given twice (30 and 30.0) would print the same table twice: refused before the model runs.
        (exit, var output, err) = CliRunner.Run([.. common, "--scale", "30", "--scale", "-4", "--scale", "30.0"]);
        Assert.Equal(1, exit);
        Assert.Contains("--scale 30.0: the same strength as --scale 30; give each strength once", err);
        Assert.DoesNotContain("feature 3 ×", output);
    }
}
