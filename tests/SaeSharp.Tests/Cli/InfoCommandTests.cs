using System.Text.Json;
using SaeSharp.Data;
using SaeSharp.Interop;
using SaeSharp.Saes;
using SaeSharp.Tests.Tokenizers;

namespace SaeSharp.Tests.Cli;

/// <summary><c>sae info</c> on a transcoder: its output hook (cfg.json metadata <c>hook_name_out</c>) is shown beside its input hook.</summary>
public sealed class InfoCommandTests : TempDirTestBase
{
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
    /// <summary><c>sae info</c> on a run <c>sae train</c> wrote shows its held-out metrics under README's names; they are
    /// those <c>sae eval</c> gives on the same held-out rows (the file's last --eval-rows rows), evaluated separately.</summary>
    [Fact]
    public void Info_on_a_trained_run_shows_its_held_out_metrics()
    {
        string P(params string[] parts) => Path.Combine([_dir, .. parts]);
        Assert.Equal(0, CliRunner.Run("synth", "--out", P("data"), "--d-in", "16", "--features", "32", "--rows", "2000", "--eval-rows", "0").Exit);
        var (exit, _, err) = CliRunner.Run("train", "--activations", P("data", "train.safetensors"), "--arch", "topk", "--k", "3", "--dict-size", "32",
            "--steps", "20", "--batch-size", "64", "--out", P("run"), "--eval-rows", "200");
        Assert.True(exit == 0, err);
        using (var all = SaeSharp.IO.SafeTensors.Load(P("data", "train.safetensors"))["activations"])
            SaeSharp.IO.SafeTensors.Save(P("held.safetensors"), new Dictionary<string, TorchSharp.torch.Tensor> { ["activations"] = all[^200..] });
        (exit, _, err) = CliRunner.Run("eval", "--sae", P("run"), "--activations", P("held.safetensors"), "--json", P("eval.json"));
        Assert.True(exit == 0, err);
        var eval = System.Text.Json.Nodes.JsonNode.Parse(File.ReadAllText(P("eval.json")))!;

        (exit, var output, err) = CliRunner.Run("info", P("run"));
        Assert.True(exit == 0, err);
        var lines = output.ReplaceLineEndings("\n").Split('\n');
        int at = Array.IndexOf(lines, "metrics.json on 200 held-out rows");
        Assert.True(at > 0, output);
        var shown = lines[(at + 1)..].Where(l => l.Contains('\t')).ToDictionary(l => l.Split('\t')[0], l => double.Parse(l.Split('\t')[1], System.Globalization.CultureInfo.InvariantCulture));
        Assert.Equal(["FVU", "MSE", "L0", "dead share"], shown.Keys);   // no model: no % CE loss recovered, no KL
        Assert.Equal(eval["fvu"]!.GetValue<double>(), shown["FVU"], 3);
        Assert.Equal(eval["mse"]!.GetValue<double>(), shown["MSE"], 6);
        Assert.Equal(eval["l0"]!.GetValue<double>(), shown["L0"], 2);
        Assert.Equal(eval["dead_fraction"]!.GetValue<double>(), shown["dead share"], 9);

        // An SAE folder without metrics.json shows no such table.
        File.Delete(P("run", "metrics.json"));
        (exit, output, _) = CliRunner.Run("info", P("run"));
        Assert.Equal(0, exit);
        Assert.DoesNotContain("metrics.json", output);
    }

    [Fact]
    public void Info_shows_the_head_and_the_seqpos_slice_an_SAE_was_trained_on()
    {
        // A head SAE of hook_z has d_in d_head: without its head the hook and width would not fit.
        var meta = new SaeMetadata { HookName = "blocks.1.attn.hook_z", HookHeadIndex = 2 };
        meta.SetWindowFields(SeqposSlice.Parse("1:-1"), null, null);
        var head = Path.Combine(_dir, "head");
        using (var sae = SaeFactory.Create(new SaeConfig { Architecture = SaeArchitectures.Standard, DIn = 8, DSae = 16, Metadata = meta }))
            SaeLensFormat.Save(sae, head);
        var (exit, output, err) = CliRunner.Run("info", head);
        Assert.True(exit == 0, err);
        Assert.Matches(@"(?m)^\W*hook_head_index\W+2\W*$", output);
        Assert.Matches(@"(?m)^\W*seqpos_slice\W+1:-1\W*$", output);
        // Nor the windows' other fields, which eval --model and features take from the cfg.
        Assert.Matches(@"(?m)^\W*prepend_bos\W+true\W*$", output);
        Assert.Matches(@"(?m)^\W*disable_concat_sequences\W+false\W*$", output);
        Assert.Matches(@"(?m)^\W*sequence_separator_token\W+bos\W*$", output);
        Assert.Matches(@"(?m)^\W*exclude_special_tokens\W+-\W*$", output);
        var listed = Path.Combine(_dir, "listed");
        var listedMeta = new SaeMetadata { HookName = "blocks.1.hook_resid_post", PrependBos = false, ExcludeTokenIds = [0, 50256] };
        listedMeta.SetWindowFields(null, true, PretokenizeToken.None);
        using (var sae = SaeFactory.Create(new SaeConfig { Architecture = SaeArchitectures.Standard, DIn = 8, DSae = 16, Metadata = listedMeta }))
            SaeLensFormat.Save(sae, listed);
        (exit, output, err) = CliRunner.Run("info", listed);
        Assert.True(exit == 0, err);
        Assert.Matches(@"(?m)^\W*prepend_bos\W+false\W*$", output);
        Assert.Matches(@"(?m)^\W*exclude_special_tokens[\s│]+\[0, 50256\][\s│]*$", output);   // SAELens's list, not a bare "0"
        Assert.Matches(@"(?m)^\W*disable_concat_sequences\W+true\W*$", output);
        Assert.Matches(@"(?m)^\W*sequence_separator_token\W+none\W*$", output);
        var plain = Path.Combine(_dir, "plain");
        using (var sae = SaeFactory.Create(new SaeConfig { Architecture = SaeArchitectures.Standard, DIn = 8, DSae = 16, Metadata = new SaeMetadata { HookName = "blocks.1.hook_mlp_out" } }))
            SaeLensFormat.Save(sae, plain);
        (exit, output, err) = CliRunner.Run("info", plain);
        Assert.True(exit == 0, err);
        Assert.Matches(@"(?m)^\W*hook_head_index\W+-\W*$", output);
        Assert.Matches(@"(?m)^\W*seqpos_slice\W+-\W*$", output);
        Assert.Matches(@"(?m)^\W*sequence_separator_token\W+-\W*$", output);
    }

    [Fact]
    public void Info_takes_the_SAE_as_its_argument_or_as_sae_like_the_other_commands_but_not_both_or_neither()
    {
        var plain = Path.Combine(_dir, "sae");
        using (var sae = SaeFactory.Create(new SaeConfig { Architecture = SaeArchitectures.Standard, DIn = 8, DSae = 16, Metadata = new SaeMetadata { HookName = "blocks.1.hook_mlp_out" } }))
            SaeLensFormat.Save(sae, plain);
        var (exit, output, err) = CliRunner.Run("info", "--sae", plain);
        Assert.True(exit == 0, err);
        Assert.Matches(@"(?m)^\W*d_sae\W+16\W*$", output);
        (exit, _, err) = CliRunner.Run("info", plain, "--sae", plain);
        Assert.NotEqual(0, exit);
        Assert.Contains("give the SAE once: as the argument or as --sae, not both", err);
        (exit, _, err) = CliRunner.Run("info");
        Assert.NotEqual(0, exit);
        Assert.Contains("no SAE given", err);
    }

    [Theory]
    // conf.yaml of canrager's layout: n_heads 2, n_attn_layers 1, bottleneck_factor 8, topk with kval_topk 3, tied, scaling 0.5.
    [InlineData("temporal_sae/tied_topk/canrager/layer_3/temporal",
        "n_heads=2", "n_attn_layers=1", "bottleneck_factor=8", "sae_diff_type=topk", "kval_topk=3", "tied_weights=true", "activation_normalization_factor=0.5")]
    // SAELens's cfg.json: residual_threshold 1.5, max_iterations 3, stop_on_duplicate_support false.
    [InlineData("matching_pursuit/b", "residual_threshold=1.5", "max_iterations=3", "stop_on_duplicate_support=false")]
    // SAELens's defaults written as such: max_iterations null means d_in (8).
    [InlineData("matching_pursuit/a", "residual_threshold=0.01", "max_iterations=8", "stop_on_duplicate_support=true")]
    public void Info_lists_the_architectures_own_fields_with_their_values_in_effect(string folder, params string[] fields)
    {
        var (exit, output, err) = CliRunner.Run("info", TestPaths.Data(folder.Split('/')));
        Assert.True(exit == 0, err);
        foreach (var f in fields)
        {
            var (name, value) = (f[..f.IndexOf('=')], f[(f.IndexOf('=') + 1)..]);
            Assert.Matches($@"(?m)^\W*{name}\W+{System.Text.RegularExpressions.Regex.Escape(value)}\W*$", output);
        }
    }
}
