using SaeSharp.Hub;
using SaeSharp.Interop;
using SaeSharp.Saes;
using SaeSharp.Tests.Cli;
using SaeSharp.Tests.Interop;
using SaeSharp.Tests.Saes;
using SaeSharp.Tests.Tokenizers;
using static TorchSharp.torch;

namespace SaeSharp.Tests.Hub;

/// <summary>Every SAE format's tiny files, written once for <see cref="SaeRouteMatrixTests"/>, each at the path its
/// real repo (and, where the release table has one, its release entry) gives it.</summary>
public sealed class SaeRouteMatrixFiles : IDisposable
{
    /// <summary>The folder holding one sub-folder per format, laid out as the format's repo.</summary>
    public string Root { get; } = TestPaths.TempDir();

    private static string Conversion(params string[] parts) => TestPaths.Data(["saelens_conversions", .. parts]);

    private const string Connor = "gpt2-small_L0_Hcat_z_lr1.20e-03_l11.80e+00_ds24576_bs4096_dc1.00e-06_rsanthropic_rie25000_nr4_v9";

    /// <summary>A format: the name <see cref="SaeLoader.DetectFormat(string, SaeLoadOptions?)"/> gives its files, the repo,
    /// the SAE's folder and its file in the repo ("" is the root), the release spec naming it (null: none in the table),
    /// and the writer of its files into the repo's local copy.</summary>
    public sealed record Format(string Name, string Repo, string Folder, string File, string? Release, Action<string> Write)
    {
        /// <summary>The name by release, when SAELens's <c>conversion_func</c> names the format otherwise.</summary>
        public string? ReleaseFormat { get; init; }
    }

    public static readonly IReadOnlyDictionary<string, Format> Formats = new Format[]
    {
        new("SAELens", "chanind/gemma-2-2b-batch-topk-matryoshka-saes-w-32k-l0-40", "standard/blocks.0.hook_resid_post",
            SaeLensFormat.WeightsFile, "gemma-2-2b-res-matryoshka-dc/blocks.0.hook_resid_post", d => WriteSaeLens(d, scaled: false)),
        new("SAELens", "org/saelens-scaled", "run/sae", SaeLensFormat.WeightsFile, null, d => WriteSaeLens(d, scaled: true)),
        // Gemma Scope's release paths name a width (width_16k) that a tiny SAE cannot have: by release in PretrainedSaeTests.
        new("Gemma Scope", "google/gemma-scope-2b-pt-res", "layer_4/average_l0_20", GemmaScope.WeightsFile, null, d => GemmaScopeTests.WriteParams(d, dIn: 8, dSae: 16, seed: 3)),
        new("Gemma Scope 2", "google/gemma-scope-2-270m-pt", "resid_post/layer_12_width_16k_l0_small", GemmaScope.Scope2WeightsFile,
            "gemma-scope-2-270m-pt-res/layer_12_width_16k_l0_small",
            d => Copy(Conversion("gemma_scope_2", "resid_post", "layer_12_width_16k_l0_small"), d, GemmaScope.Scope2WeightsFile, GemmaScope.Scope2ConfigFile))
        { ReleaseFormat = SaeLensConversions.Gemma3 },
        new("dictionary_learning", "andyrdt/saes-gpt-oss-20b", "resid_post_layer_3/trainer_0", DictionaryLearning.WeightsFile,
            "gpt-oss-20b-andyrdt/resid_post_layer_3_trainer_0",
            d => Copy(TestPaths.Data("dictionary_learning", "BatchTopKSAE"), d, DictionaryLearning.WeightsFile, DictionaryLearning.ConfigFile)),
        new("Llama Scope", "fnlp/Llama3_1-8B-Base-LXA-32x", "Llama3_1-8B-Base-L0A-32x", LlamaScope.WeightsFile, "llama_scope_lxa_32x/l0a_32x",
            d => PretrainedSaeTests.LlamaScopeFiles(d, 8, 16, 0.3, 2.0, "blocks.0.hook_attn_out")),
        new("sparsify", "EleutherAI/sae-matrix", "layers.3", Sparsify.WeightsFile, null,
            d => SparsifyTests.WriteSae(d, dIn: 8, numLatents: 16, k: 3, seed: 4)),
        new("OpenAI sparse_autoencoder", "openai/sparse-autoencoder-matrix", "v5_32k/layer_4", "4.pt", null,
            d => OpenAiSaeTests.WriteCheckpoint(Path.Combine(d, "4.pt"), OpenAiSaeTests.RandomStateDict(d: 8, n: 16, seed: 5), "TopK", k: 3)),
        new(SaeLensConversions.ConnorRobHookZ, "ckkissane/attn-saes-gpt2-small-all-layers", "", Connor + ".pt", "gpt2-small-hook-z-kk/blocks.0.hook_z",
            d => Copy(Conversion("connor_rob_hook_z"), d, Connor + ".pt", Connor + "_cfg.json")),
        new(SaeLensConversions.DeepSeekR1, "qresearch/DeepSeek-R1-Distill-Llama-8B-SAE-l19", "", "DeepSeek-R1-Distill-Llama-8B-SAE-l19.pt",
            "deepseek-r1-distill-llama-8b-qresearch/blocks.19.hook_resid_post",
            d => Copy(Conversion("deepseek_r1"), d, "DeepSeek-R1-Distill-Llama-8B-SAE-l19.pt")),
        new(SaeLensConversions.Goodfire, "Goodfire/Llama-3.1-8B-Instruct-SAE-l19", "", "Llama-3.1-8B-Instruct-SAE-l19.pth", "goodfire-llama-3.1-8b-instruct/layer_19",
            d => Copy(Conversion("goodfire"), d, "Llama-3.1-8B-Instruct-SAE-l19.pth")),
        new(SaeLensConversions.MwhannaTranscoder, "mwhanna/qwen3-0.6b-transcoders-lowl0", "", "layer_1.safetensors", "mwhanna-qwen3-0.6b-transcoders-lowl0/layer_1",
            d => Copy(Conversion("mwhanna"), d, "layer_1.safetensors", "wandb-config.yaml", "config.yaml")),
        new(SaeLensConversions.MntssCltLayerTranscoder, "mntss/clt-gemma-2-2b-2.5M", "", "W_enc_2.safetensors", "mntss-gemma-2-2b-2.5m-clt-as-per-layer/layer_2",
            d => Copy(Conversion("mntss"), d, "W_enc_2.safetensors", "W_dec_2.safetensors", "config.yaml")),
        new(SaeLensConversions.LlamaScopeR1Distill, "fnlp/Llama-Scope-R1-Distill", "800M-Slimpajama-0-OpenR1-Math-220k/L0R", "sae_weights.safetensors",
            "llama_scope_r1_distill/l0r_800m_slimpajama",
            d => Copy(Conversion("llama_scope_r1_distill", "800M-Slimpajama-0-OpenR1-Math-220k", "L0R"), d, "config.json", "sae_weights.safetensors")),
        new("canrager temporal", "canrager/temporalSAEs", "gemma-2-2B/layer_12/temporal", SaeLensConversions.TemporalWeightsFile,
            "temporal-sae-gemma-2-2b/blocks.12.hook_resid_post",
            d => Copy(TemporalSaeTests.Fixture("untied_relu", "canrager", "layer_3", "temporal"), d, SaeLensConversions.TemporalConfigFile, SaeLensConversions.TemporalWeightsFile))
        { ReleaseFormat = SaeLensConversions.Temporal },
    }.ToDictionary(f => f.Repo.Split('/')[1] == "saelens-scaled" ? "SAELens scaled" : f.Name);

    public SaeRouteMatrixFiles()
    {
        foreach (var (key, f) in Formats) f.Write(Path.Combine(RepoFolder(key), f.Folder));
    }

    /// <summary>The local copy of <paramref name="key"/>'s repo.</summary>
    public string RepoFolder(string key) => Path.Combine(Root, key.Replace(' ', '_'));

    public void Dispose()
    {
        try { Directory.Delete(Root, recursive: true); } catch (IOException) { /* best effort */ }
    }

    private static void Copy(string from, string to, params string[] files)
    {
        Directory.CreateDirectory(to);
        foreach (var f in files) System.IO.File.Copy(Path.Combine(from, f), Path.Combine(to, f));
    }

    /// <summary>A SAELens folder (d_in 8, d_sae 16, random weights); <paramref name="scaled"/>: with
    /// <c>expected_average_only_in</c> and its factor only in <c>activation_scaler.json</c>, as SAELens's trainer writes.</summary>
    private static void WriteSaeLens(string dir, bool scaled)
    {
        var cfg = new SaeConfig
        {
            Architecture = SaeArchitectures.Standard, DIn = 8, DSae = 16,
            Metadata = new SaeMetadata { HookName = "blocks.0.hook_resid_post", ModelName = "gemma-2-2b" },
        };
        using var sae = SaeFactory.Create(cfg);
        sae.InitializeWeights(new TorchSharp.torch.Generator(1));
        using (no_grad()) sae.BDec.copy_(randn(8, generator: new TorchSharp.torch.Generator(2)));
        SaeLensFormat.Save(sae, dir);
        if (!scaled) return;
        string cfgPath = Path.Combine(dir, SaeLensFormat.CfgFile);
        System.IO.File.WriteAllText(cfgPath, System.IO.File.ReadAllText(cfgPath).Replace("\"normalize_activations\": \"none\"", "\"normalize_activations\": \"expected_average_only_in\"", StringComparison.Ordinal));
        Assert.Contains("expected_average_only_in", System.IO.File.ReadAllText(cfgPath));
        System.IO.File.WriteAllText(Path.Combine(dir, SaeLensFormat.ActivationScalerFile), """{"scaling_factor": 2.5}""");
    }
}

/// <summary>
/// Every SAE format by every route a user can name it: the local folder, a local file in it, <c>hf:ORG/REPO/FOLDER</c>,
/// <c>hf:ORG/REPO/FILE</c>, <c>RELEASE/SAE_ID</c> and <c>sae convert</c> of the local copy. A route a format supports
/// loads the same weights, with the same encode and decode on random rows, as the format's own local path, and
/// <see cref="SaeLoader.DetectFormat(string, SaeLoadOptions?)"/> names the same format; a route it does not support fails
/// with an error that says what to do.
/// </summary>
public sealed class SaeRouteMatrixTests(SaeRouteMatrixFiles files) : FakeHubTestBase, IClassFixture<SaeRouteMatrixFiles>
{
    public static TheoryData<string, string> Cells()
    {
        var data = new TheoryData<string, string>();
        foreach (var format in SaeRouteMatrixFiles.Formats.Keys)
            foreach (var route in new[] { "folder", "file", "hf-folder", "hf-file", "release", "convert" })
                data.Add(format, route);
        return data;
    }

    /// <summary>What a cell gives: null, the same SAE as the baseline; else a part of the error it fails with.</summary>
    private static string? Expected(string format, string route) => (format, route) switch
    {
        // OpenAI's checkpoints (any N.pt, told by its keys) load by their own path.
        ("OpenAI sparse_autoencoder", "folder") => "its 4.pt is an OpenAI sparse_autoencoder\n  checkpoint, loaded by its own path: point at ",
        ("OpenAI sparse_autoencoder", "hf-folder") =>
            "a .pt file (an OpenAI sparse_autoencoder N.pt) is loaded by its own path, e.g. hf:openai/sparse-autoencoder-matrix/v5_32k/layer_4/4.pt",
        // A repo of per-layer transcoder files (with circuit-tracer's config.yaml) is a whole CLT or transcoder set; one
        // layer loads by its file or release id. A folder of one mntss layer's files only (W_enc_2, W_dec_2, config.yaml)
        // is that layer, local and hf: alike (the hf: folder was refused as a whole CLT: its config.yaml, unread, might
        // have been a transcoder set's).
        ("mwhanna_transcoder", "folder" or "hf-folder") =>
            "a whole cross-layer transcoder, not a single SAE: load it with CrossLayerTranscoderLoader.Load",
        _ => null,
    };

    [Theory]
    [MemberData(nameof(Cells))]
    public void Every_route_loads_the_same_SAE_or_says_what_to_do(string format, string route)
    {
        var f = SaeRouteMatrixFiles.Formats[format];
        string repoFolder = files.RepoFolder(format);
        if (!_server.Repos.TryGetValue(f.Repo, out var repo)) _server.Repos[f.Repo] = repo = new();
        foreach (var path in Directory.EnumerateFiles(repoFolder, "*", SearchOption.AllDirectories))
        {
            string rel = Path.GetRelativePath(repoFolder, path).Replace(Path.DirectorySeparatorChar, '/');
            repo[rel] = new FakeHubServer.FakeFile(File.ReadAllBytes(path), Lfs: rel.EndsWith(".safetensors", StringComparison.Ordinal));
        }
        string folder = Path.Combine(repoFolder, f.Folder), file = Path.Combine(folder, f.File);
        string Hub(string rel) => $"hf:{f.Repo}{(rel.Length == 0 ? "" : "/" + rel)}";
        string inRepo = f.Folder.Length == 0 ? f.File : f.Folder + "/" + f.File;
        var options = new SaeLoadOptions { Hub = this.Hub };
        string? spec = route switch
        {
            "folder" => folder,
            "file" => file,
            "hf-folder" => Hub(f.Folder),
            "hf-file" => Hub(inRepo),
            "release" => f.Release,
            "convert" => Path.Combine(_work, "converted"),
            _ => throw new ArgumentException(route),
        };
        if (spec is null) return; // no release in the table
        string? expected = Expected(format, route);
        if (route == "convert")
        {
            var (exit, _, err) = CliRunner.Run("convert", file, spec);
            if (expected is not null)
            {
                Assert.Equal(1, exit);
                Assert.Contains(expected, err);
                return;
            }
            Assert.True(exit == 0, err);
        }
        if (expected is not null)
        {
            var e = Assert.Throws<SaeSharpException>(() => SaeLoader.Load(spec, options));
            Assert.True(e.Message.Contains(expected, StringComparison.Ordinal), $"expected '{expected}' in: {e.Message}");
            return;
        }
        Assert.Equal(route switch { "convert" => "SAELens", "release" => f.ReleaseFormat ?? f.Name, _ => f.Name }, SaeLoader.DetectFormat(spec, options));
        using var baseline = SaeLoader.Load(SaeLoader.DetectFormat(folder) is null ? file : folder);
        using var got = SaeLoader.Load(spec, options);
        AssertSame(baseline, got, $"{format} by {route} ({spec})");
    }

    [Fact]
    public void An_hf_folder_of_several_SAE_files_names_them_before_downloading()
    {
        // ckkissane's repo holds one NAME.pt + NAME_cfg.json per layer: the folder is no single SAE.
        string connor = files.RepoFolder(SaeLensConversions.ConnorRobHookZ);
        var repo = _server.Repos["ckkissane/attn-saes-gpt2-small-all-layers"] = new();
        foreach (var path in Directory.EnumerateFiles(connor))
        {
            var bytes = File.ReadAllBytes(path);
            repo[Path.GetFileName(path)] = new FakeHubServer.FakeFile(bytes);
            repo[Path.GetFileName(path).Replace("_L0_", "_L1_", StringComparison.Ordinal)] = new FakeHubServer.FakeFile(bytes);
        }
        var e = Assert.Throws<SaeSharpException>(() => SaeLoader.Load("hf:ckkissane/attn-saes-gpt2-small-all-layers", new SaeLoadOptions { Hub = Hub }));
        Assert.StartsWith("hf:ckkissane/attn-saes-gpt2-small-all-layers: holds 2 SAE files (gpt2-small_L0_", e.Message);
        Assert.EndsWith("one SAE each: point at one, e.g. hf:ckkissane/attn-saes-gpt2-small-all-layers/gpt2-small_L0_Hcat_z_lr1.20e-03_l11.80e+00_ds24576_bs4096_dc1.00e-06_rsanthropic_rie25000_nr4_v9.pt", e.Message);
        Assert.False(Directory.Exists(Path.Combine(_cache, "models--ckkissane--attn-saes-gpt2-small-all-layers", "blobs")), "nothing downloaded");
    }

    /// <summary>The same weights, by name, and the same encode and decode of a few random rows.</summary>
    private static void AssertSame(Sae expected, Sae got, string what)
    {
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        var want = expected.WeightsByName();
        var have = got.WeightsByName();
        Assert.Equal(want.Keys.Order(StringComparer.Ordinal), have.Keys.Order(StringComparer.Ordinal));
        foreach (var (name, t) in want)
            Assert.True(t.to(ScalarType.Float32).equal(have[name].to(ScalarType.Float32)).all().item<bool>(), $"{what}: {name} differs");
        // A temporal SAE encodes a token from its context: ordered sequences [batch, pos, d_in].
        long[] shape = expected is TemporalSae ? [2, 3, expected.Cfg.DIn] : [4, expected.Cfg.DIn];
        var x = randn(shape, generator: new TorchSharp.torch.Generator(7)) * 2 + 0.5;
        var (y1, f1) = expected.Run(x);
        var (y2, f2) = got.Run(x);
        Assert.True(f1.equal(f2).all().item<bool>(), $"{what}: feature activations differ");
        Assert.True(y1.equal(y2).all().item<bool>(), $"{what}: reconstructions differ");
        Assert.True(expected.Decode(f1).equal(got.Decode(f2)).all().item<bool>(), $"{what}: decode differs");
    }
}
