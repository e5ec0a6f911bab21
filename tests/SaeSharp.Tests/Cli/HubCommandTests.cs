using System.Text.Json.Nodes;
using SaeSharp.Interop;
using SaeSharp.Saes;
using SaeSharp.Tests.Hub;
using SaeSharp.Tests.Tokenizers;

namespace SaeSharp.Tests.Cli;

/// <summary><c>sae releases</c>, and <c>--sae RELEASE/SAE_ID</c> / bare ae.pt with <c>--arch</c> on the command line.</summary>
public sealed class HubCommandTests : IDisposable
{
    private readonly FakeHubServer _server = new();
    private readonly string _dir = TestPaths.TempDir();

    public void Dispose()
    {
        _server.Dispose();
        try { Directory.Delete(_dir, recursive: true); } catch (IOException) { /* best effort */ }
    }

    private string P(params string[] parts) => Path.Combine([_dir, .. parts]);

    private Dictionary<string, string> HubEnvironment => new() { ["HF_ENDPOINT"] = _server.Endpoint, ["HF_HUB_CACHE"] = P("cache") };

    [Fact]
    public void Releases_lists_and_filters_the_table()
    {
        var (exit, output, err) = CliRunner.Run("releases", "--model", "pythia-70m", "--search", "sm");
        Assert.True(exit == 0, err);
        foreach (var r in new[] { "pythia-70m-deduped-res-sm", "pythia-70m-deduped-mlp-sm", "pythia-70m-deduped-att-sm" })
            Assert.Contains(r, output);
        Assert.DoesNotContain("gpt2-small-res-jb", output);

        (exit, output, err) = CliRunner.Run("releases", "gpt2-small-res-jb", "--search", "blocks.7");
        Assert.True(exit == 0, err);
        Assert.Contains("gpt2-small/7-res-jb", output);
        Assert.DoesNotContain("gpt2-small/8-res-jb", output);
        if (Console.IsOutputRedirected)
            Assert.Contains("blocks.7.hook_resid_pre\tblocks.7.hook_resid_pre\tblocks.7.hook_resid_pre\tgpt2-small/7-res-jb\t54", output);

        // SAELens 6.37.6's temporal releases are listed as loadable.
        (exit, output, err) = CliRunner.Run("releases", "--search", "temporal");
        Assert.True(exit == 0, err);
        Assert.Contains("temporal-sae-llama-3.1-8b", output);
        Assert.DoesNotContain("not supported", output);
        (exit, output, err) = CliRunner.Run("releases", "temporal-sae-gemma-2-2b");
        Assert.True(exit == 0, err);
        Assert.Contains("blocks.12.hook_resid_post", output);

        (exit, _, err) = CliRunner.Run("releases", "gpt2-small-res");
        Assert.Equal(1, exit);
        Assert.Contains("no release 'gpt2-small-res' (did you mean gpt2-small-res-jb", err);
        // A typo inside the name (no release contains it): the nearest by edit distance.
        (exit, _, err) = CliRunner.Run("releases", "gpt2-smal-res-jb");
        Assert.Equal(1, exit);
        Assert.Contains("no release 'gpt2-smal-res-jb' (did you mean 'gpt2-small-res-jb'?)", err);
        // --model that no release's model contains is an error naming it and the nearest model (was "0 releases", exit 0);
        // --search that matches nothing is a filter's empty answer, not an error.
        (exit, output, err) = CliRunner.Run("releases", "--model", "pythia-70n");
        Assert.Equal(1, exit);
        Assert.Contains("error: --model pythia-70n: no release is of a model whose name contains it (did you mean 'pythia-70m'?); the table's models: ", err);
        Assert.Equal("", output);
        (exit, _, err) = CliRunner.Run("releases", "--model", "pythia-70m", "--search", "no-such-text");
        Assert.True(exit == 0, err);
    }

    /// <summary>A transcoder release lists each SAE's input hook and the output hook it replaces (SAELens's loaders set
    /// them; the yaml has none); a CLT release, whose hooks are in its repo's config.yaml, says so in the title.</summary>
    [Fact]
    public void Releases_of_transcoders_show_the_input_and_output_hooks()
    {
        var (exit, output, err) = CliRunner.Run("releases", "mwhanna-qwen3-4b-transcoders", "--search", "layer_10");
        Assert.True(exit == 0, err);
        Assert.Contains("blocks.10.mlp.hook_in", output);
        Assert.Contains("blocks.10.hook_mlp_out", output);
        if (Console.IsOutputRedirected)
        {
            Assert.StartsWith("sae_id\thook\thook_out\tpath\tneuronpedia\tl0\n", output.ReplaceLineEndings("\n"));
            Assert.Contains("layer_10\tblocks.10.mlp.hook_in\tblocks.10.hook_mlp_out\tlayer_10.safetensors\tqwen3-4b/10-transcoder-hp\t-", output);
        }

        // --search matches the input hook, which Gemma Scope's ids do not spell, and the output hook.
        (exit, output, err) = CliRunner.Run("releases", "gemma-scope-2b-pt-transcoders", "--search", "blocks.3.ln2.hook_normalized");
        Assert.True(exit == 0, err);
        Assert.Contains("layer_3/width_16k/average_l0_54", output);
        Assert.DoesNotContain("layer_10/", output);
        (exit, output, err) = CliRunner.Run("releases", "gemma-scope-2b-pt-transcoders", "--search", "blocks.12.hook_mlp_out");
        Assert.True(exit == 0, err);
        Assert.Contains("gemma-2-2b/12-gemmascope-transcoder-16k", output);
        Assert.DoesNotContain("layer_3/", output);

        (exit, output, err) = CliRunner.Run("releases", "mntss-gemma-2-2b-2.5m-clt-as-per-layer", "--search", "layer_2");
        Assert.True(exit == 0, err);
        Assert.Contains("feature_input_hook", Console.IsOutputRedirected ? err : output);
        if (Console.IsOutputRedirected)
            Assert.Contains("layer_2\t-\t-\t2\tgemma-2-2b/2-clt-hp", output);

        // A Gemma Scope 2 transcoder release (SAELens 6.37.6's gemma_3): the MLP's input and output hooks of the layer.
        (exit, output, err) = CliRunner.Run("releases", "gemma-scope-2-1b-pt-transcoders", "--search", "layer_13_width_16k_l0_big_affine");
        Assert.True(exit == 0, err);
        if (Console.IsOutputRedirected)
            Assert.Contains("transcoder/layer_13_width_16k_l0_big_affine\tblocks.13.ln2.hook_normalized\tblocks.13.hook_mlp_out\t", output);
        else Assert.Contains("blocks.13.ln2.hook_normalized", output);

        // An SAE release has no hook_out column.
        (exit, output, err) = CliRunner.Run("releases", "gpt2-small-res-jb", "--search", "blocks.7");
        Assert.True(exit == 0, err);
        Assert.DoesNotContain("hook_out", output);
    }

    [Fact]
    public void Info_downloads_a_release_SAE_and_shows_its_Neuronpedia_id()
    {
        var cfg = new SaeConfig { Architecture = SaeArchitectures.Standard, DIn = 8, DSae = 16, Metadata = new SaeMetadata { HookName = "blocks.4.hook_mlp_out" } };
        using (var sae = SaeFactory.Create(cfg)) SaeLensFormat.Save(sae, P("src"));
        _server.Repos["ctigges/pythia-70m-deduped__mlp-sm_processed"] = new()
        {
            ["4-mlp-sm/cfg.json"] = new(File.ReadAllBytes(P("src", "cfg.json"))),
            ["4-mlp-sm/sae_weights.safetensors"] = new(File.ReadAllBytes(P("src", "sae_weights.safetensors")), Lfs: true),
        };
        var (exit, output, err) = CliRunner.RunWithEnvironment(HubEnvironment, "info", "pythia-70m-deduped-mlp-sm/blocks.4.hook_mlp_out");
        Assert.True(exit == 0, err);
        Assert.Contains("pythia-70m-deduped/4-mlp-sm", output);
        Assert.Contains("blocks.4.hook_mlp_out", output);
        Assert.True(File.Exists(P("cache", "models--ctigges--pythia-70m-deduped__mlp-sm_processed", "snapshots", _server.Commit, "4-mlp-sm", "cfg.json")));

        (exit, _, err) = CliRunner.RunWithEnvironment(HubEnvironment, "info", "pythia-70m-deduped-mlp-sm/blocks.9.hook_mlp_out");
        Assert.Equal(1, exit);
        Assert.Contains("release 'pythia-70m-deduped-mlp-sm' has no SAE 'blocks.9.hook_mlp_out'", err);
    }

    [Fact]
    public void Convert_names_the_architecture_of_a_bare_ae_pt_with_arch()
    {
        Directory.CreateDirectory(P("zip", "10_32768"));
        File.Copy(TestPaths.Data("dictionary_learning", "BatchTopKSAE", "ae.pt"), P("zip", "10_32768", "ae.pt"));
        var (exit, output, err) = CliRunner.Run("convert", P("zip", "10_32768"), P("out"), "--arch", "batchtopk");
        Assert.True(exit == 0, err);
        Assert.Contains("converted dictionary_learning SAE", output);
        // SAELens v6 saves BatchTopK in its inference form, JumpReLU with the stored threshold (0.15 in the fixture).
        var written = JsonNode.Parse(File.ReadAllText(P("out", "cfg.json")))!;
        Assert.Equal("jumprelu", written["architecture"]!.GetValue<string>());

        (exit, output, err) = CliRunner.Run("convert", P("zip", "10_32768"), P("out2"));
        Assert.True(exit == 0, err);
        Assert.Equal("topk", JsonNode.Parse(File.ReadAllText(P("out2", "cfg.json")))!["architecture"]!.GetValue<string>());
    }
}
