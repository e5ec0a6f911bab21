using System.Globalization;
using System.Text.Json;
using SaeSharp.Corpus;
using SaeSharp.Interop;
using SaeSharp.Tests.Interventions;

namespace SaeSharp.Tests.Cli;

/// <summary><c>sae steer --scale-by-max-act</c> (SAELens's steering tutorial: coefficient × the feature's max activation):
/// the max comes from <c>sae features</c>' features.jsonl or is measured over <c>--dataset</c> as it measures it, is
/// printed, and the steered continuations equal a raw <c>--scale</c> run of coefficient × that max.</summary>
public class SteerMaxActTests : CliTempDirTestBase
{
    private static string[] Table(string output, string scale) => SteerSweepTests.Table(output, scale);

    [Fact]
    public void Strengths_in_max_activations_equal_raw_strengths_times_the_max()
    {
        using (var sae = InterventionTests.RandomSae("blocks.0.hook_mlp_out", 128, 64, 5)) SaeLensFormat.Save(sae, P("sae"));
        LabelledCorpus.Write(P("c.jsonl"), 9, 40);
        var (exit, _, err) = CliRunner.Run("features", "--sae", P("sae"), "--model", "builtin", "--dataset", P("c.jsonl"), "--tokens", "2000",
            "--features", "3", "--out", P("feats"));
        Assert.True(exit == 0, err);
        // The max as the file holds it, read here as plain JSON.
        double max = File.ReadLines(P("feats/features.jsonl")).Select(l => JsonDocument.Parse(l).RootElement)
            .Single(e => e.GetProperty("feature").GetInt32() == 3).GetProperty("max_activation").GetDouble();
        Assert.True(max > 0, $"feature 3 never fired: {max}");
        max = (float)max;

        string[] common = ["steer", "--model", "builtin", "--sae", P("sae"), "--feature", "3", "--prompt", "Sara has a white fox",
            "--max-new-tokens", "5", "--runs", "2", "--temperature", "0.9", "--seed", "4"];
        string raw = (2 * max).ToString(CultureInfo.InvariantCulture);
        (exit, var rawOut, err) = CliRunner.Run([.. common, "--scale", raw]);
        Assert.True(exit == 0, err);
        (exit, var fromFile, err) = CliRunner.Run([.. common, "--scale", "2", "--scale-by-max-act", "--features-file", P("feats/features.jsonl")]);
        Assert.True(exit == 0, err);
        Assert.Contains($"feature 3 max activation {max.ToString("G6", CultureInfo.InvariantCulture)} ({P("feats/features.jsonl")})\nstrengths: 2 → ", fromFile.ReplaceLineEndings("\n"));
        Assert.Equal(Table(rawOut, raw).Skip(1), Table(fromFile, "2 max act").Skip(1));   // the rows; the titles name the scale
        (exit, var measured, err) = CliRunner.Run([.. common, "--scale", "2", "--scale-by-max-act", "--dataset", P("c.jsonl"), "--tokens", "2000"]);
        Assert.True(exit == 0, err);
        Assert.Contains($"feature 3 max activation {max.ToString("G6", CultureInfo.InvariantCulture)} (measured over 2000 tokens of {P("c.jsonl")})", measured);
        Assert.Equal(Table(rawOut, raw).Skip(1), Table(measured, "2 max act").Skip(1));

        // Refusals: no source; both sources; a source without the flag; a feature the file lacks.
        (exit, _, err) = CliRunner.Run([.. common, "--scale", "2", "--scale-by-max-act"]);
        Assert.Equal(1, exit);
        Assert.Contains("--features-file", err);
        (exit, _, err) = CliRunner.Run([.. common, "--scale", "2", "--scale-by-max-act", "--features-file", P("feats"), "--dataset", P("c.jsonl")]);
        Assert.Equal(1, exit);
        Assert.Contains("--dataset", err);
        (exit, _, err) = CliRunner.Run([.. common, "--scale", "2", "--features-file", P("feats")]);
        Assert.Equal(1, exit);
        Assert.Contains("--scale-by-max-act", err);
        (exit, _, err) = CliRunner.Run([.. common[..5], "--feature", "4", .. common[7..], "--scale", "2", "--scale-by-max-act", "--features-file", P("feats")]);
        Assert.Equal(1, exit);
        Assert.Contains("no line for feature 4", err);
        // The features folder of another SAE (another hook, another d_sae): its max activations are not this SAE's.
        using (var other = InterventionTests.RandomSae("blocks.1.hook_resid_post", 128, 32, 6)) SaeLensFormat.Save(other, P("other"));
        (exit, _, err) = CliRunner.Run([.. common[..4], P("other"), .. common[5..], "--scale", "2", "--scale-by-max-act", "--features-file", P("feats")]);
        Assert.Equal(1, exit);
        Assert.Contains("(d_sae 64, hook blocks.0.hook_mlp_out) is not of this SAE (d_sae 32, hook blocks.1.hook_resid_post): its max activations are another SAE's", err.ReplaceLineEndings(" "));
    }
}
