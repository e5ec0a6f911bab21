using System.Text.Json;
using SaeSharp.Interop;
using SaeSharp.Saes;
using SaeSharp.Tests.Tokenizers;

namespace SaeSharp.Tests.Cli;

/// <summary><c>sae info</c> on a transcoder: its output hook (cfg.json metadata <c>hook_name_out</c>) is shown beside its input hook.</summary>
public sealed class InfoCommandTests : IDisposable
{
    private readonly string _dir = TestPaths.TempDir();

    public void Dispose()
    {
        try { Directory.Delete(_dir, recursive: true); } catch (IOException) { /* best effort */ }
    }

    [Fact]
    public void Info_shows_a_transcoders_output_hook_and_a_dash_for_an_SAE()
    {
        var transcoderMeta = new SaeMetadata { HookName = "blocks.1.ln2.hook_normalized" };
        transcoderMeta.Extra = new() { ["hook_name_out"] = JsonSerializer.SerializeToElement("blocks.1.hook_mlp_out") };
        var transcoder = Path.Combine(_dir, "tc");
        using (var sae = SaeFactory.Create(new SaeConfig { Architecture = SaeArchitectures.Standard, DIn = 8, DSae = 16, DOut = 12, ApplyBDecToInput = false, Metadata = transcoderMeta }))
            SaeLensFormat.Save(sae, transcoder);
        var plain = Path.Combine(_dir, "sae");
        using (var sae = SaeFactory.Create(new SaeConfig { Architecture = SaeArchitectures.Standard, DIn = 8, DSae = 16, Metadata = new SaeMetadata { HookName = "blocks.1.hook_mlp_out" } }))
            SaeLensFormat.Save(sae, plain);

        var (exit, output, err) = CliRunner.Run("info", transcoder);
        Assert.True(exit == 0, err);
        Assert.Matches(@"hook_name\W+blocks\.1\.ln2\.hook_normalized", output);
        Assert.Matches(@"hook_name_out\W+blocks\.1\.hook_mlp_out", output);
        // d_in and d_out are the cfg's (8 in, 12 out), each in its own row.
        Assert.Matches(@"(?m)^\W*d_in\W+8\W*$", output);
        Assert.Matches(@"(?m)^\W*d_out\W+12\W*$", output);
        Assert.Matches(@"(?m)^\W*d_sae\W+16\W*$", output);

        (exit, output, err) = CliRunner.Run("info", plain);
        Assert.True(exit == 0, err);
        Assert.Matches(@"hook_name_out\W+-", output);
    }
}
