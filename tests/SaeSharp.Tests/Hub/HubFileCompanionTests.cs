using SaeSharp.Hub;
using SaeSharp.IO;
using SaeSharp.Interop;
using SaeSharp.Saes;
using SaeSharp.Tests.Cli;
using SaeSharp.Tests.Saes;
using SaeSharp.Tests.Tokenizers;
using static TorchSharp.torch;

namespace SaeSharp.Tests.Hub;

/// <summary>
/// <c>hf:ORG/REPO/PATH</c> of one SAE file, from an offline hub cache (as <c>huggingface-cli download</c> leaves it) that
/// holds the file and the companions its format's loader reads beside it: the companions are found in the cached listing
/// and loaded with it, giving the same SAE as the same files copied to disk; without a required companion the error names
/// it, and nothing is loaded.
/// </summary>
public sealed class HubFileCompanionTests : IDisposable
{
    private readonly string _root = TestPaths.TempDir();

    public void Dispose()
    {
        try { Directory.Delete(_root, recursive: true); } catch (IOException) { /* best effort */ }
    }

    private static string Conversion(params string[] parts) => TestPaths.Data(["saelens_conversions", .. parts]);

    private const string Connor = "gpt2-small_L0_Hcat_z_lr1.20e-03_l11.80e+00_ds24576_bs4096_dc1.00e-06_rsanthropic_rie25000_nr4_v9";
    private const string R1Path = "800M-Slimpajama-0-OpenR1-Math-220k/L0R";
    private const string Clt = "clt/layer_3_width_16k_l0_medium";
    private const string TemporalPath = "llama-3.1-8B/layer_26/temporal";

    /// <summary>A CLT file's config.json (SAELens reads <c>clt/NAME/config.json</c>), whose model is not the one the repo id
    /// gives (gemma-3-270m): loaded only when the companion is.</summary>
    private const string CltConfig = """
        {"architecture": "jump_relu", "model_name": "gemma-3-270m-it", "hf_hook_point_in": "model.layers.3.pre_feedforward_layernorm.output",
         "hf_hook_point_out": "model.layers.3.post_feedforward_layernorm.output", "affine_connection": false}
        """;

    /// <summary>The repo, the file named, the repo's files (repo path → local source; null: <see cref="CltConfig"/>), and the
    /// companion whose absence is an error (null: all optional).</summary>
    public static TheoryData<string, string, string> Cases => new()
    {
        { "connor_rob_hook_z", Connor + ".pt", Connor + "_cfg.json" },
        { "mwhanna_transcoder", "layer_1.safetensors", "wandb-config.yaml or wanb-config.yaml" },
        { "mntss_clt_layer_transcoder", "W_enc_2.safetensors", "W_dec_2.safetensors" },
        { "gemma_3 clt", Clt + ".safetensors", "" },
        { "canrager temporal", TemporalPath + "/" + SaeLensConversions.TemporalWeightsFile, SaeLensConversions.TemporalConfigFile },
        { "llama_scope_r1_distill", R1Path + "/sae_weights.safetensors", "config.json" },
    };

    private static (string Repo, (string RepoPath, string? Source)[] Files) RepoOf(string format) => format switch
    {
        "connor_rob_hook_z" => ("ckkissane/attn-saes-gpt2-small-all-layers",
            [(Connor + ".pt", Conversion("connor_rob_hook_z", Connor + ".pt")), (Connor + "_cfg.json", Conversion("connor_rob_hook_z", Connor + "_cfg.json"))]),
        "mwhanna_transcoder" => ("mwhanna/qwen3-0.6b-transcoders-lowl0",
            [.. new[] { "layer_1.safetensors", "wandb-config.yaml", "config.yaml" }.Select(f => (f, (string?)Conversion("mwhanna", f)))]),
        "mntss_clt_layer_transcoder" => ("mntss/clt-gemma-2-2b-2.5M",
            [.. new[] { "W_enc_2.safetensors", "W_dec_2.safetensors", "config.yaml" }.Select(f => (f, (string?)Conversion("mntss", f)))]),
        "gemma_3 clt" => ("google/gemma-scope-2-270m-pt",
            [(Clt + ".safetensors", Conversion("gemma_scope_2", Clt + ".safetensors")), (Clt + "/config.json", null)]),
        "canrager temporal" => ("canrager/temporalSAEs",
            [.. new[] { SaeLensConversions.TemporalConfigFile, SaeLensConversions.TemporalWeightsFile }
                .Select(f => (TemporalPath + "/" + f, (string?)TemporalSaeTests.Fixture("untied_relu", "canrager", "layer_3", "temporal", f)))]),
        "llama_scope_r1_distill" => ("fnlp/Llama-Scope-R1-Distill",
            [.. new[] { "config.json", "sae_weights.safetensors" }.Select(f => (R1Path + "/" + f, (string?)Conversion("llama_scope_r1_distill", R1Path, f)))]),
        _ => throw new ArgumentException(format),
    };

    /// <summary>Writes the repo's files into <paramref name="folder"/> at their repo paths.</summary>
    private static void Write(string folder, (string RepoPath, string? Source)[] files)
    {
        foreach (var (repoPath, source) in files)
        {
            string to = Path.Combine(folder, repoPath);
            Directory.CreateDirectory(Path.GetDirectoryName(to)!);
            if (source is null) File.WriteAllText(to, CltConfig);
            else File.Copy(source, to);
        }
    }

    [Theory]
    [MemberData(nameof(Cases))]
    public void A_file_from_an_offline_cache_loads_with_its_companions_as_from_disk(string format, string file, string required)
    {
        var (repo, files) = RepoOf(format);
        string cache = Path.Combine(_root, "cache");
        string snapshot = LlamaHubCache.Snapshot(cache, repo);
        Write(snapshot, files);
        // On disk as `huggingface-cli download REPO --local-dir DL/NAME` lays it out (the repo's name kept in the path).
        string disk = Path.Combine(_root, "dl", repo.Split('/')[1]);
        Write(disk, files);
        var options = new SaeLoadOptions { Hub = new HfHubOptions { CacheDir = cache, Offline = true } };
        string spec = $"hf:{repo}/{file}";

        using (var fromDisk = SaeLoader.Load(Path.Combine(disk, file)))
        using (var fromHub = SaeLoader.Load(spec, options))
        {
            AssertSame(fromDisk, fromHub, spec);
            if (format == "gemma_3 clt") Assert.Equal("google/gemma-3-270m-it", fromHub.Cfg.Metadata.ModelName); // from clt/NAME/config.json
        }

        if (required.Length == 0) return;
        // The cached snapshot without the required companion: the repo lacks it, and the error names it.
        foreach (var name in required.Split(" or "))
            File.Delete(Path.Combine(snapshot, SaeCompanion.Beside(file, name)));
        var e = Assert.Throws<SaeSharpException>(() => SaeLoader.Load(spec, options));
        if (format == "connor_rob_hook_z")
        {
            // A .pt alone may be an OpenAI or deepseek_r1 checkpoint (told by its keys): downloaded, it is neither, and the
            // error names the cfg the repo lacks for connor_rob_hook_z.
            Assert.StartsWith($"{spec}: not a recognised SAE: not OpenAI sparse_autoencoder nor deepseek_r1 by its keys,\n" +
                "and the cached snapshot (offline mode is on: HF_HUB_OFFLINE) lacks files the other formats need beside it:\n", e.Message);
            Assert.Contains($"\n  {format} needs {required}", e.Message);
            return;
        }
        // Offline the listing is the cache's: the cache lacks it (the repo may not), and the error says how to fetch it.
        Assert.StartsWith($"{spec}: the cached snapshot (offline mode is on: HF_HUB_OFFLINE) lacks files its format needs beside it:\n", e.Message);
        Assert.Contains($"\n  {format} needs {required}", e.Message);
        string fetch = Assert.Single(e.Message.Split('\n'), l => l.StartsWith("download them once online", StringComparison.Ordinal));
        Assert.StartsWith($"download them once online (unset HF_HUB_OFFLINE, or `huggingface-cli download {repo} ", fetch);
        Assert.Contains($" {SaeCompanion.Beside(file, required.Split(" or ")[0])}", fetch);   // the files of every format taking the name
    }

    /// <summary>Online but with the hub unreachable, the listing is the cache's too: the error says so (the repo may hold the
    /// companion the cache lacks) rather than that the repo lacks it.</summary>
    [Fact]
    public void An_unreachable_hub_says_the_cache_lacks_the_companion_not_the_repo()
    {
        var (repo, files) = RepoOf("mntss_clt_layer_transcoder");
        string cache = Path.Combine(_root, "cache");
        string snapshot = LlamaHubCache.Snapshot(cache, repo);
        Write(snapshot, files);
        File.Delete(Path.Combine(snapshot, "W_dec_2.safetensors"));
        // Nothing listens on port 9 of this machine: the connection is refused at once.
        var options = new SaeLoadOptions { Hub = new HfHubOptions { CacheDir = cache, Endpoint = "http://127.0.0.1:9", MetadataTimeout = TimeSpan.FromSeconds(5) } };
        string spec = $"hf:{repo}/W_enc_2.safetensors";
        var e = Assert.Throws<SaeSharpException>(() => SaeLoader.Load(spec, options));
        Assert.StartsWith($"{spec}: the hub could not be reached (listed from the cache), and the cached snapshot lacks files its format needs beside it:\n", e.Message);
        Assert.Contains("\n  mntss_clt_layer_transcoder needs W_dec_2.safetensors", e.Message);
        Assert.DoesNotContain("the repo lacks", e.Message);
        Assert.EndsWith("try again when http://127.0.0.1:9 can be reached", e.Message);
    }

    /// <summary>A folder of one circuit-tracer CLT layer, layer 0 (W_enc_0 + W_dec_0 + config.yaml): a local folder loads it as
    /// that layer (mntss_clt_layer_transcoder); the same folder as <c>hf:</c> was refused as a whole CLT. Both give one SAE.</summary>
    [Fact]
    public void A_folder_of_one_clt_layer_loads_as_that_layer_from_the_hub_as_from_disk()
    {
        string disk = Path.Combine(_root, "dl", "one");
        Directory.CreateDirectory(disk);
        string cache = Path.Combine(_root, "cache");
        string snapshotFolder = Path.Combine(LlamaHubCache.Snapshot(cache, "mntss/clt-tiny"), "one");
        Directory.CreateDirectory(snapshotFolder);
        manual_seed(4);
        using (var scope = NewDisposeScope())
        {
            SafeTensors.Save(Path.Combine(disk, "W_enc_0.safetensors"), new Dictionary<string, Tensor>
                { ["W_enc_0"] = randn(12, 6), ["b_enc_0"] = randn(12), ["b_dec_0"] = randn(6) });
            SafeTensors.Save(Path.Combine(disk, "W_dec_0.safetensors"), new Dictionary<string, Tensor> { ["W_dec_0"] = randn(12, 3, 6) });
        }
        File.Copy(Conversion("mntss", "config.yaml"), Path.Combine(disk, "config.yaml"));
        foreach (var f in Directory.GetFiles(disk)) File.Copy(f, Path.Combine(snapshotFolder, Path.GetFileName(f)));
        var options = new SaeLoadOptions { Hub = new HfHubOptions { CacheDir = cache, Offline = true } };
        using var fromDisk = SaeLoader.Load(disk);
        using var fromHub = SaeLoader.Load("hf:mntss/clt-tiny/one", options);
        AssertSame(fromDisk, fromHub, "hf:mntss/clt-tiny/one");
    }

    /// <summary>The same cfg and the same weights, bit for bit, as the copy on disk.</summary>
    private static void AssertSame(Sae fromDisk, Sae fromHub, string spec)
    {
        Assert.Equal(fromDisk.Cfg.ToJson(), fromHub.Cfg.ToJson());
        var expected = fromDisk.WeightsByName();
        var got = fromHub.WeightsByName();
        Assert.Equal(expected.Keys.Order(StringComparer.Ordinal), got.Keys.Order(StringComparer.Ordinal));
        using var scope = NewDisposeScope();
        foreach (var (name, t) in expected) Assert.True(t.eq(got[name]).all().item<bool>(), $"{spec}: {name} differs from the copy on disk");
    }
}
