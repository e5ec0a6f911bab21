using SaeSharp.Interop;
using SaeSharp.Saes;
using SaeSharp.Tests.Saes;
using static TorchSharp.torch;

namespace SaeSharp.Tests.Hub;

/// <summary>Whole cross-layer transcoders named <c>hf:ORG/REPO[/PATH]</c>, served by the loopback hub in the exact files of
/// circuit-tracer (mntss's repos: W_enc_L/W_dec_L at the root + config.yaml) and Gemma Scope 2
/// (clt/width_…/params_layer_L.safetensors).</summary>
public class CrossLayerTranscoderHubTests : FakeHubTestBase
{
    private const string MntssRepo = "mntss/clt-tiny-426k", ScopeRepo = "google/gemma-scope-2-270m-pt", ScopeClt = "clt/width_4k_l0_medium";
    private const int Layers = 3, Features = 6, DModel = 5;

    /// <summary>Serves every file of <paramref name="folder"/> at <paramref name="repoPath"/> (the root when empty) of <paramref name="repo"/>.</summary>
    private void ServeAll(string repo, string repoPath, string folder)
    {
        if (!_server.Repos.TryGetValue(repo, out var r)) _server.Repos[repo] = r = new();
        foreach (var f in Directory.EnumerateFiles(folder))
        {
            string name = Path.GetFileName(f);
            r[(repoPath.Length == 0 ? "" : repoPath + "/") + name] = new FakeHubServer.FakeFile(File.ReadAllBytes(f), Lfs: name.EndsWith(".safetensors", StringComparison.Ordinal));
        }
    }

    private void ServeText(string repo, string path, string text) =>
        _server.Repos[repo][path] = new FakeHubServer.FakeFile(System.Text.Encoding.UTF8.GetBytes(text));

    /// <summary>A circuit-tracer CLT at the root of <see cref="MntssRepo"/>, beside files a CLT does not need.</summary>
    private CltReference ServeMntss()
    {
        var r = CltReference.Random(Layers, Features, DModel, seed: 11, threshold: true, skip: true);
        string folder = Path.Combine(_work, "mntss");
        r.WriteCircuitTracer(folder, threshold: true);
        File.WriteAllText(Path.Combine(folder, "config.yaml"), "model_name: google/gemma-2-2b\nfeature_input_hook: hook_resid_mid\nfeature_output_hook: hook_mlp_out\n");
        ServeAll(MntssRepo, "", folder);
        ServeText(MntssRepo, "README.md", "# a CLT\n");
        ServeText(MntssRepo, "features/layer_0.bin", "not a CLT file");
        return r;
    }

    /// <summary>A Gemma Scope 2 CLT at <see cref="ScopeClt"/>, beside another width, a resid_post SAE and a config.json.</summary>
    private CltReference ServeScope2()
    {
        var r = CltReference.Random(Layers, Features, DModel, seed: 12, threshold: true, skip: false);
        string folder = Path.Combine(_work, "scope2");
        r.WriteGemmaScope2(folder);
        File.WriteAllText(Path.Combine(folder, "config.json"), "{}");
        ServeAll(ScopeRepo, ScopeClt, folder);
        var other = CltReference.Random(2, Features, DModel, seed: 13, threshold: true, skip: false);
        string otherFolder = Path.Combine(_work, "scope2-other");
        other.WriteGemmaScope2(otherFolder);
        ServeAll(ScopeRepo, "clt/width_16k_l0_big", otherFolder);
        ServeText(ScopeRepo, "resid_post/layer_1_width_16k_l0_small/params.safetensors", "not read");
        return r;
    }

    /// <summary>The loaded CLT's reconstruction of every layer against the loop reference, on random inputs.</summary>
    private static void AssertMatches(CltReference r, CrossLayerTranscoder clt)
    {
        const int rows = 4;
        var rnd = new Random(5);
        var xs = Enumerable.Range(0, r.L).Select(_ => Enumerable.Range(0, rows).Select(_ => Enumerable.Range(0, r.D).Select(_ => rnd.NextDouble() * 2 - 1).ToArray()).ToArray()).ToArray();
        using var x = tensor(xs.SelectMany(a => a.SelectMany(b => b)).Select(v => (float)v).ToArray()).view(r.L, rows, r.D);
        using var y = clt.forward(x);
        var got = y.to(ScalarType.Float64).data<double>().ToArray();
        int i = 0;
        for (int l = 0; l < r.L; l++)
            for (int p = 0; p < rows; p++)
                foreach (var v in r.Reconstruct(xs.Select(layer => layer[p]).ToList(), l)) Assert.Equal(v, got[i++], 4);
    }

    /// <summary>The files the hub was asked for (resolve requests, relative to the repo).</summary>
    private List<string> Downloaded(string repo) =>
        _server.Requests.Where(q => q.Path.StartsWith($"/{repo}/resolve/", StringComparison.Ordinal))
            .Select(q => string.Join('/', q.Path.Split('/').Skip(5))).Distinct().Order(StringComparer.Ordinal).ToList();

    [Fact]
    public void A_circuit_tracer_repo_root_loads_as_a_whole_clt_downloading_only_its_files()
    {
        var r = ServeMntss();
        Assert.True(CrossLayerTranscoderLoader.IsCrossLayerTranscoder($"hf:{MntssRepo}", Hub));
        using (var clt = CrossLayerTranscoderLoader.Load($"hf:{MntssRepo}", Hub))
        {
            Assert.Equal(Layers, clt.Cfg.NLayers);
            Assert.Equal("circuit-tracer", clt.Cfg.Format);
            Assert.Equal("google/gemma-2-2b", clt.Cfg.ModelName);
            Assert.Equal("blocks.2.hook_resid_mid", clt.InputHook(2));
            Assert.True(clt.Cfg.JumpRelu && clt.Cfg.SkipConnection);
            AssertMatches(r, clt);
        }
        string[] expected = ["W_dec_0.safetensors", "W_dec_1.safetensors", "W_dec_2.safetensors", "W_enc_0.safetensors", "W_enc_1.safetensors", "W_enc_2.safetensors", "config.yaml"];
        Assert.Equal(expected, Downloaded(MntssRepo));

        // Cached: offline, the spec still names the whole CLT and loads it.
        var offline = new SaeSharp.Hub.HfHubOptions { Endpoint = _server.Endpoint, CacheDir = _cache, Offline = true };
        Assert.True(CrossLayerTranscoderLoader.IsCrossLayerTranscoder($"hf:{MntssRepo}", offline));
        using (var again = CrossLayerTranscoderLoader.Load($"hf:{MntssRepo}", offline)) AssertMatches(r, again);
    }

    [Fact]
    public void A_gemma_scope_2_clt_folder_loads_as_a_whole_clt_downloading_only_that_width()
    {
        var r = ServeScope2();
        string spec = $"hf:{ScopeRepo}/{ScopeClt}";
        Assert.True(CrossLayerTranscoderLoader.IsCrossLayerTranscoder(spec, Hub));
        using (var clt = CrossLayerTranscoderLoader.Load(spec, Hub))
        {
            Assert.Equal("gemma-scope-2", clt.Cfg.Format);
            Assert.Equal(Layers, clt.Cfg.NLayers);
            Assert.Equal("google/gemma-3-270m", clt.Cfg.ModelName);   // from the repo folder of the cache path
            Assert.Equal("blocks.1.ln2.hook_normalized", clt.InputHook(1));
            AssertMatches(r, clt);
        }
        Assert.Equal([.. Enumerable.Range(0, Layers).Select(l => $"{ScopeClt}/params_layer_{l}.safetensors")], Downloaded(ScopeRepo));
    }

    [Fact]
    public void Files_release_entries_single_saes_and_parent_folders_are_not_whole_clts()
    {
        ServeMntss();
        ServeScope2();
        // One layer's file: not the whole CLT (SaeLoader reads such a file as one layer).
        Assert.False(CrossLayerTranscoderLoader.IsCrossLayerTranscoder($"hf:{MntssRepo}/W_enc_1.safetensors", Hub));
        Assert.False(CrossLayerTranscoderLoader.IsCrossLayerTranscoder($"hf:{ScopeRepo}/{ScopeClt}/params_layer_1.safetensors", Hub));
        // A SAELens release entry of mntss_clt_layer_transcoder is one layer with its decoders summed, and says so.
        Assert.False(CrossLayerTranscoderLoader.IsCrossLayerTranscoder("mntss-gemma-2-2b-2.5m-clt-as-per-layer/layer_0", Hub));
        var e = Assert.Throws<SaeSharpException>(() => CrossLayerTranscoderLoader.Load("mntss-gemma-2-2b-2.5m-clt-as-per-layer/layer_0", Hub));
        Assert.StartsWith("mntss-gemma-2-2b-2.5m-clt-as-per-layer/layer_0: a SAELens release entry is one layer of a cross-layer transcoder", e.Message);
        // The clt/ folder above the widths holds no layer file itself.
        Assert.False(CrossLayerTranscoderLoader.IsCrossLayerTranscoder($"hf:{ScopeRepo}/clt", Hub));
        // A single SAE's folder is not a CLT; a CLT folder is not a single SAE, and the error says where it goes.
        Assert.False(CrossLayerTranscoderLoader.IsCrossLayerTranscoder($"hf:{ScopeRepo}/resid_post/layer_1_width_16k_l0_small", Hub));
        // ... and says so from the listing, downloading nothing (a CLT can be many gigabytes).
        e = Assert.Throws<SaeSharpException>(() => SaeLoader.Load($"hf:{MntssRepo}", new SaeLoadOptions { Hub = Hub }));
        Assert.StartsWith($"hf:{MntssRepo}: a whole cross-layer transcoder, not a single SAE: load it with CrossLayerTranscoderLoader.Load", e.Message);
        e = Assert.Throws<SaeSharpException>(() => SaeLoader.Load($"hf:{ScopeRepo}/{ScopeClt}", new SaeLoadOptions { Hub = Hub }));
        Assert.StartsWith($"hf:{ScopeRepo}/{ScopeClt}: a whole cross-layer transcoder, not a single SAE", e.Message);
        Assert.Empty(Downloaded(MntssRepo));
        Assert.Empty(Downloaded(ScopeRepo));
        // A folder with no CLT, given as one, is named.
        e = Assert.Throws<SaeSharpException>(() => CrossLayerTranscoderLoader.Load($"hf:{ScopeRepo}/clt", Hub));
        Assert.StartsWith($"hf:{ScopeRepo}/clt: no cross-layer transcoder in clt: expected circuit-tracer's W_enc_0.safetensors", e.Message);
    }

    [Fact]
    public void A_missing_layer_on_the_hub_is_named()
    {
        ServeMntss();
        _server.Repos[MntssRepo].Remove("W_dec_1.safetensors");
        var e = Assert.Throws<SaeSharpException>(() => CrossLayerTranscoderLoader.Load($"hf:{MntssRepo}", Hub));
        Assert.EndsWith("W_dec_1.safetensors: file not found (the decoders of CLT layer 1; " +
            Path.Combine(Path.GetDirectoryName(e.Message.Split(':')[0])!, "W_enc_1.safetensors") + " exists)", e.Message);
    }
}
