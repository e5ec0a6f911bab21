using System.Text;
using SaeSharp.Hub;
using SaeSharp.Interop;
using SaeSharp.Saes;
using SaeSharp.Tests.Interop;
using SaeSharp.Tests.Tokenizers;
using TorchSharp;
using static TorchSharp.torch;

namespace SaeSharp.Tests.Hub;

/// <summary><c>--sae RELEASE/SAE_ID</c> and <c>hf:ORG/REPO[/PATH]</c> against the local fake hub: the release table's
/// facts, files downloaded into the Hugging Face cache and loaded by the right loader, 404s and a resumed download.</summary>
public sealed class PretrainedSaeTests : FakeHubTestBase
{
    private SaeLoadOptions Options => new() { Hub = Hub };

    /// <summary>A random standard SAE saved in the SAELens layout; returns its files' bytes and its weights.</summary>
    private (Dictionary<string, byte[]> Files, Dictionary<string, float[]> Weights) SaeLensFiles(string hook, int dIn = 8, int dSae = 24)
    {
        var cfg = new SaeConfig { Architecture = SaeArchitectures.Standard, DIn = dIn, DSae = dSae, Metadata = new SaeMetadata { HookName = hook, ModelName = "gpt2-small" } };
        using var sae = SaeFactory.Create(cfg);
        using (torch.no_grad())
            foreach (var (_, p) in sae.named_parameters()) p.uniform_(-1, 1);
        string dir = Path.Combine(_work, "src-" + Guid.NewGuid().ToString("N"));
        SaeLensFormat.Save(sae, dir);
        var files = Directory.GetFiles(dir).ToDictionary(f => Path.GetFileName(f), File.ReadAllBytes);
        var weights = sae.named_parameters().ToDictionary(p => p.name, p => p.parameter.detach().reshape(-1).data<float>().ToArray());
        return (files, weights);
    }

    /// <summary>The SAE of <paramref name="files"/> loaded from a local folder, to compare a hub load with.</summary>
    private Sae LoadLocally(Dictionary<string, byte[]> files)
    {
        string dir = Path.Combine(_work, "local-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(dir);
        foreach (var (name, bytes) in files) File.WriteAllBytes(Path.Combine(dir, name), bytes);
        return SaeLensFormat.Load(dir);
    }

    /// <summary>SAE.from_pretrained's fold_activation_norm_scaling_factor: <paramref name="folded"/> on raw x is
    /// <paramref name="original"/> (trained on s·x) on s·x, its output rescaled by 1/s.</summary>
    private static void AssertScaleFolded(Sae original, Sae folded, double s)
    {
        using var scope = torch.NewDisposeScope();
        var x = torch.randn(5, 8, generator: new Generator(3)) * 4;
        var (yScaled, fScaled) = original.Run(x * s);
        var (yRaw, fRaw) = folded.Run(x);
        Assert.True(fRaw.allclose(fScaled, rtol: 1e-4, atol: 1e-5));
        Assert.True(yRaw.allclose(yScaled / s, rtol: 1e-4, atol: 1e-4));
    }

    private static void AssertWeights(Dictionary<string, float[]> expected, Sae sae)
    {
        foreach (var (name, p) in sae.named_parameters())
            Assert.Equal(expected[name], p.detach().reshape(-1).data<float>().ToArray());
    }

    [Fact]
    public void Release_table_holds_SAELens_facts_for_the_main_releases()
    {
        foreach (var name in new[]
                 {
                     "gpt2-small-res-jb", "gpt2-small-attn-out-v5-32k", "gpt2-small-mlp-out-v5-32k", "gpt2-small-resid-post-v5-32k",
                     "pythia-70m-deduped-res-sm", "pythia-70m-deduped-mlp-sm", "pythia-70m-deduped-att-sm",
                     "gemma-scope-2b-pt-res", "gemma-scope-2b-pt-mlp", "gemma-scope-2b-pt-att",
                     "gemma-scope-2b-pt-res-canonical", "gemma-scope-2b-pt-mlp-canonical", "gemma-scope-2b-pt-att-canonical",
                     "llama_scope_lxr_8x", "llama_scope_lxa_32x", "llama_scope_lxm_8x",
                 })
            Assert.True(SaeReleases.Find(name) is { Saes.Count: > 0 }, name);

        // Facts read by hand from SAELens's pretrained_saes.yaml at the commit the table names.
        // SAELens 6.37.6 (jbloomAus/SAELens, now decoderesearch/SAELens); the table was from 6.18.0 (91ca16cc) before.
        Assert.Equal("69c4c62b0dc24e5ba23fc773a0286149514b4a23", SaeReleases.Commit);
        Assert.Equal(156, SaeReleases.All.Count);
        var jb = SaeReleases.Find("gpt2-small-res-jb")!;
        Assert.Equal(("jbloom/GPT2-Small-SAEs-Reformatted", "gpt2-small", (string?)null), (jb.RepoId, jb.Model, jb.Conversion));
        Assert.Equal(13, jb.Saes.Count);
        Assert.Equal(new PretrainedSae("blocks.7.hook_resid_pre", "blocks.7.hook_resid_pre", "blocks.7.hook_resid_pre", "gpt2-small/7-res-jb", 54.0),
            jb.Find("blocks.7.hook_resid_pre"));
        Assert.True(jb.ConfigOverrides!["model_from_pretrained_kwargs"]!["center_writing_weights"]!.GetValue<bool>());

        var canonical = SaeReleases.Lookup("gemma-scope-2b-pt-res-canonical/layer_12/width_16k/canonical")!.Value;
        Assert.Equal("google/gemma-scope-2b-pt-res", canonical.Release.RepoId);
        Assert.Equal("gemma_2", canonical.Release.Conversion);
        Assert.Equal("layer_12/width_16k/average_l0_82", canonical.Sae.Path);
        Assert.Equal("blocks.12.hook_resid_post", canonical.Sae.Hook);
        Assert.Equal("gemma-2-2b/12-gemmascope-res-16k", canonical.Sae.Neuronpedia);
        Assert.Equal("blocks.5.attn.hook_z", SaeReleases.Lookup("gemma-scope-2b-pt-att-canonical/layer_5/width_16k/canonical")!.Value.Sae.Hook);
        Assert.Equal(316, SaeReleases.Find("gemma-scope-2b-pt-res")!.Saes.Count);

        var llama = SaeReleases.Lookup("llama_scope_lxr_8x/l15r_8x")!.Value;
        Assert.Equal(("fnlp/Llama3_1-8B-Base-LXR-8x", "Llama3_1-8B-Base-L15R-8x", "blocks.15.hook_resid_post", "llama3.1-8b/15-llamascope-res-32k"),
            (llama.Release.RepoId, llama.Sae.Path, llama.Sae.Hook, llama.Sae.Neuronpedia));
        Assert.Equal("blocks.3.hook_mlp_out", SaeReleases.Lookup("llama_scope_lxm_32x/l3m_32x")!.Value.Sae.Hook);

        var pythia = SaeReleases.Lookup("pythia-70m-deduped-mlp-sm/blocks.4.hook_mlp_out")!.Value;
        Assert.Equal(("ctigges/pythia-70m-deduped__mlp-sm_processed", "4-mlp-sm", "pythia-70m-deduped/4-mlp-sm"),
            (pythia.Release.RepoId, pythia.Sae.Path, pythia.Sae.Neuronpedia));

        Assert.Null(SaeReleases.Lookup("no-such-release/blocks.0.hook_resid_pre"));
        var e = Assert.Throws<SaeSharpException>(() => SaeReleases.Lookup("gpt2-small-res-jb/blocks.99.hook_resid_pre"));
        Assert.Contains("release 'gpt2-small-res-jb' has no SAE 'blocks.99.hook_resid_pre'", e.Message);
        var pythiaReleases = SaeReleases.Filter(model: "pythia").ToList();
        Assert.Contains(pythiaReleases, r => r.Release == pythia.Release.Release);
        Assert.All(pythiaReleases, r => Assert.Contains("pythia", r.Model));
        Assert.Equal(SaeReleases.All.Count(r => r.Model.Contains("pythia")), pythiaReleases.Count);
        Assert.True(pythiaReleases.Count < SaeReleases.All.Count);
        Assert.Equal(pythiaReleases, SaeReleases.Filter(model: "PYTHIA")); // case-insensitive
        // A Hugging Face id: its organisation is not in the table's own names (pythia-70m-deduped), but is in those that
        // have one (google/gemma-3-1b-pt), where another organisation does not match.
        Assert.Equal(SaeReleases.Filter(model: "pythia-70m-deduped"), SaeReleases.Filter(model: "EleutherAI/pythia-70m-deduped"));
        Assert.NotEmpty(SaeReleases.Filter(model: "EleutherAI/pythia-70m-deduped"));
        Assert.Equal(SaeReleases.All.Where(r => r.Model == "google/gemma-3-1b-pt"), SaeReleases.Filter(model: "google/gemma-3-1b-pt"));
        Assert.DoesNotContain(SaeReleases.Filter(model: "someone/gemma-3-1b-pt"), r => r.Model.Contains('/'));
    }

    /// <summary>The yaml names no hooks; a transcoder release's two hooks are those SAELens's loader sets, read by hand
    /// from <c>sae_lens/loading/pretrained_sae_loaders.py</c> (and its tests) at the table's commit.</summary>
    [Fact]
    public void Transcoder_releases_have_the_input_and_output_hooks_SAELens_loaders_set()
    {
        static (string? In, string? Out) Hooks(string spec)
        {
            var (release, sae) = SaeReleases.Lookup(spec)!.Value;
            return SaeLensConversions.ReleaseHooks(release, sae);
        }
        // get_gemma_2_transcoder_config_from_hf("google/gemma-scope-2b-pt-transcoders", "layer_3/width_16k/average_l0_54").
        Assert.Equal(("blocks.3.ln2.hook_normalized", "blocks.3.hook_mlp_out"), Hooks("gemma-scope-2b-pt-transcoders/layer_3/width_16k/average_l0_54"));
        // get_mwhanna_transcoder_config_from_hf("mwhanna/qwen3-4b-transcoders", "layer_10.safetensors").
        Assert.Equal(("blocks.10.mlp.hook_in", "blocks.10.hook_mlp_out"), Hooks("mwhanna-qwen3-4b-transcoders/layer_10"));

        // Every SAE of those releases, its layer taken from the id (layer_N, layer_N/width_...).
        foreach (var r in SaeReleases.All.Where(r => r.Conversion is "gemma_2_transcoder" or "mwhanna_transcoder"))
        {
            Assert.NotEmpty(r.Saes);
            foreach (var sae in r.Saes)
            {
                string n = System.Text.RegularExpressions.Regex.Match(sae.Id, @"^layer_(\d+)").Groups[1].Value;
                string input = r.Conversion == "gemma_2_transcoder" ? $"blocks.{n}.ln2.hook_normalized" : $"blocks.{n}.mlp.hook_in";
                Assert.Equal((input, $"blocks.{n}.hook_mlp_out"), SaeLensConversions.ReleaseHooks(r, sae));
            }
        }

        // mntss_clt_layer_transcoder reads its hooks from the repo's config.yaml on load: the table cannot know them.
        Assert.Equal((null, null), Hooks("mntss-gemma-2-2b-2.5m-clt-as-per-layer/layer_2"));
        // An SAE: the table's hook, no output hook.
        Assert.Equal(("blocks.7.hook_resid_pre", null), Hooks("gpt2-small-res-jb/blocks.7.hook_resid_pre"));
        Assert.Equal(("blocks.12.hook_resid_post", null), Hooks("gemma-scope-2b-pt-res-canonical/layer_12/width_16k/canonical"));
    }

    /// <summary>A Gemma Scope path's layer is its last <c>layer_N</c> folder, as the loader reads a local folder that sits
    /// below another <c>layer_N</c> (the user's own directory names).</summary>
    [Fact]
    public void A_gemma_scope_layer_is_read_from_the_last_layer_folder()
    {
        Assert.Equal(("blocks.12.ln2.hook_normalized", "blocks.12.hook_mlp_out"),
            SaeLensConversions.TranscoderHooks(SaeLensConversions.Gemma2Transcoder, "/data/layer_0/gemma-scope-2b-pt-transcoders/layer_12/width_16k/average_l0_54"));
        var cfg = new SaeConfig { DIn = 4, DSae = 16384 };
        GemmaScope.ApplyPathMetadata("/runs/layer_3/gemma-scope-2b-pt-res/layer_20/width_16k/average_l0_71", cfg, "test");
        Assert.Equal("blocks.20.hook_resid_post", cfg.Metadata.HookName);
    }

    [Fact]
    public void Release_sae_is_downloaded_into_the_hub_cache_and_loaded_with_the_release_facts()
    {
        var (files, weights) = SaeLensFiles("blocks.7.hook_resid_pre", dIn: 8, dSae: 24);
        _server.Repos["jbloom/GPT2-Small-SAEs-Reformatted"] = new()
        {
            ["blocks.7.hook_resid_pre/cfg.json"] = new(files["cfg.json"]),
            ["blocks.7.hook_resid_pre/sae_weights.safetensors"] = new(files["sae_weights.safetensors"], Lfs: true),
        };
        using var sae = SaeLoader.Load("gpt2-small-res-jb/blocks.7.hook_resid_pre", Options);

        AssertWeights(weights, sae);
        string snapshot = Path.Combine(_cache, "models--jbloom--GPT2-Small-SAEs-Reformatted", "snapshots", _server.Commit, "blocks.7.hook_resid_pre");
        Assert.True(File.Exists(Path.Combine(snapshot, "sae_weights.safetensors")));
        // sparsity.safetensors is optional: its absence is remembered
        Assert.True(File.Exists(Path.Combine(_cache, "models--jbloom--GPT2-Small-SAEs-Reformatted", ".no_exist", _server.Commit, "blocks.7.hook_resid_pre", "sparsity.safetensors")));
        // SAELens's config_overrides and the table's Neuronpedia id
        Assert.True(sae.Cfg.Metadata.ModelFromPretrainedKwargs!["center_writing_weights"].GetBoolean());
        Assert.Equal("gpt2-small/7-res-jb", sae.Cfg.Metadata.Extra!["neuronpedia_id"].GetString());
        Assert.Equal("blocks.7.hook_resid_pre", sae.Cfg.Metadata.HookName);

        // A second load is served from the cache without any request.
        int before = _server.Requests.Count;
        using var again = SaeLoader.Load("gpt2-small-res-jb/blocks.7.hook_resid_pre", Options);
        AssertWeights(weights, again);
        Assert.Equal(before, _server.Requests.Count);
    }

    [Fact]
    public void Release_in_a_hand_made_cache_without_sparsity_loads_offline_and_with_the_hub_unreachable()
    {
        // What huggingface_hub leaves after snapshot_download(allow_patterns=[cfg.json, sae_weights.safetensors]):
        // refs/main and the snapshot files, no sparsity.safetensors and no .no_exist marker for it.
        var (files, weights) = SaeLensFiles("blocks.7.hook_resid_pre", dIn: 8, dSae: 24);
        const string commit = "0123456789abcdef0123456789abcdef01234567";
        string storage = Path.Combine(_cache, "models--jbloom--GPT2-Small-SAEs-Reformatted");
        string snapshot = Path.Combine(storage, "snapshots", commit, "blocks.7.hook_resid_pre");
        Directory.CreateDirectory(snapshot);
        Directory.CreateDirectory(Path.Combine(storage, "refs"));
        File.WriteAllText(Path.Combine(storage, "refs", "main"), commit);
        File.WriteAllBytes(Path.Combine(snapshot, "cfg.json"), files["cfg.json"]);
        File.WriteAllBytes(Path.Combine(snapshot, "sae_weights.safetensors"), files["sae_weights.safetensors"]);

        // SAELens catches EntryNotFoundError around the sparsity download; LocalEntryNotFoundError is one.
        using (var offline = SaeLoader.Load("gpt2-small-res-jb/blocks.7.hook_resid_pre", new SaeLoadOptions { Hub = new HfHubOptions { Endpoint = _server.Endpoint, CacheDir = _cache, Offline = true } }))
            AssertWeights(weights, offline);
        var unreachable = new SaeLoadOptions { Hub = new HfHubOptions { Endpoint = "http://127.0.0.1:9", CacheDir = _cache } };
        using (var noNetwork = SaeLoader.Load("gpt2-small-res-jb/blocks.7.hook_resid_pre", unreachable))
            AssertWeights(weights, noNetwork);

        // A required file that is not cached is still an error naming it.
        var e = Assert.Throws<SaeSharpException>(() => SaeLoader.Load("gpt2-small-res-jb/blocks.8.hook_resid_pre", new SaeLoadOptions { Hub = new HfHubOptions { Endpoint = _server.Endpoint, CacheDir = _cache, Offline = true } }));
        Assert.Contains("blocks.8.hook_resid_pre/cfg.json (revision main) is not in the cache", e.Message);
    }

    [Fact]
    public void Release_config_override_of_normalize_activations_is_applied()
    {
        // pretrained_saes.yaml: mistral-7b-res-wg has config_overrides {normalize_activations: constant_norm_rescale}.
        var (files, _) = SaeLensFiles("blocks.8.hook_resid_pre", dIn: 8, dSae: 24);
        using var original = LoadLocally(files);
        _server.Repos["JoshEngels/Mistral-7B-Residual-Stream-SAEs"] = new()
        {
            ["mistral_7b_layer_8/cfg.json"] = new(files["cfg.json"]),
            ["mistral_7b_layer_8/sae_weights.safetensors"] = new(files["sae_weights.safetensors"], Lfs: true),
        };
        using var sae = SaeLoader.Load("mistral-7b-res-wg/blocks.8.hook_resid_pre", Options);
        Assert.Equal("constant_norm_rescale", sae.Cfg.NormalizeActivations);
        // SAELens: c = √d_in/‖x‖; the SAE runs on c·x and its output is divided by c.
        using var x = torch.randn(5, 8, generator: new Generator(4)) * 3;
        using var c = Math.Sqrt(8) / x.norm(1, keepdim: true);
        var (yScaled, fScaled) = original.Run(x * c);
        var (y, f) = sae.Run(x);
        Assert.True(f.allclose(fScaled, rtol: 1e-4, atol: 1e-5));
        Assert.True(y.allclose(yScaled / c, rtol: 1e-4, atol: 1e-4));
    }

    [Fact]
    public void Release_norm_scaling_factor_is_folded_into_an_expected_average_only_in_SAE()
    {
        // pretrained_saes.yaml at the table's commit: gpt2-small-mlp-tm blocks.0.hook_mlp_out, norm_scaling_factor 1.049317316132615.
        const double s = 1.049317316132615;
        Assert.Equal(s, SaeReleases.Lookup("gpt2-small-mlp-tm/blocks.0.hook_mlp_out")!.Value.Sae.NormScalingFactor);
        Assert.Null(SaeReleases.Lookup("gpt2-small-res-jb/blocks.7.hook_resid_pre")!.Value.Sae.NormScalingFactor);

        var (files, _) = SaeLensFiles("blocks.0.hook_mlp_out", dIn: 8, dSae: 24);
        string dir = Path.Combine(_work, "tm");
        Directory.CreateDirectory(dir);
        File.WriteAllBytes(Path.Combine(dir, "sae_weights.safetensors"), files["sae_weights.safetensors"]);
        File.WriteAllBytes(Path.Combine(dir, "cfg.json"), files["cfg.json"]);
        using var original = SaeLensFormat.Load(dir);
        // The files as SAELens trained them: a pre-6.0 flat cfg with the boolean normalisation and no factor of its own.
        var cfg = Encoding.UTF8.GetBytes("""
            {"d_in": 8, "d_sae": 24, "dtype": "float32", "device": "cpu", "model_name": "gpt2-small", "hook_point": "blocks.0.hook_mlp_out",
             "hook_point_layer": 0, "activation_fn_str": "relu", "apply_b_dec_to_input": true, "normalize_activations": true}
            """);
        _server.Repos["tommmcgrath/gpt2-small-mlp-out-saes"] = new()
        {
            ["sae_group_gpt2_blocks.0.hook_mlp_out_24576:v1/cfg.json"] = new(cfg),
            ["sae_group_gpt2_blocks.0.hook_mlp_out_24576:v1/sae_weights.safetensors"] = new(files["sae_weights.safetensors"], Lfs: true),
        };
        using var sae = SaeLoader.Load("gpt2-small-mlp-tm/blocks.0.hook_mlp_out", Options);
        Assert.Equal("none", sae.Cfg.NormalizeActivations);
        AssertScaleFolded(original, sae, s);

        // The same folder loaded as a plain folder has no factor and says where it looked.
        File.WriteAllBytes(Path.Combine(dir, "cfg.json"), cfg);
        var e = Assert.Throws<SaeSharpException>(() => SaeLoader.Load(dir));
        Assert.Contains("no scaling factor was found", e.Message);
    }

    [Fact]
    public void Gemma_Scope_canonical_release_loads_params_npz_with_the_hook_from_its_path()
    {
        string src = Path.Combine(_work, "gs");
        var p = GemmaScopeTests.WriteParams(src, dIn: 4, dSae: 16384, seed: 2);
        _server.Repos["google/gemma-scope-2b-pt-res"] = new()
        {
            ["layer_12/width_16k/average_l0_82/params.npz"] = new(File.ReadAllBytes(Path.Combine(src, "params.npz")), Lfs: true),
        };
        using var sae = SaeLoader.Load("gemma-scope-2b-pt-res-canonical/layer_12/width_16k/canonical", Options);
        Assert.IsType<JumpReluSae>(sae);
        Assert.Equal((4, 16384), (sae.Cfg.DIn, sae.Cfg.DSae));
        Assert.Equal("blocks.12.hook_resid_post", sae.Cfg.Metadata.HookName);
        Assert.Equal("gemma-2-2b", sae.Cfg.Metadata.ModelName);
        Assert.Equal("gemma-2-2b/12-gemmascope-res-16k", sae.Cfg.Metadata.Extra!["neuronpedia_id"].GetString());
        var named = sae.named_parameters().ToDictionary(x => x.name, x => x.parameter);
        Assert.Equal(p["W_enc"].data<float>().ToArray(), named["W_enc"].detach().data<float>().ToArray());
        Assert.Equal(p["threshold"].data<float>().ToArray(), sae.named_buffers().Concat(sae.named_parameters().Select(x => (x.name, (Tensor)x.parameter)))
            .First(x => x.name == "threshold").Item2.detach().data<float>().ToArray());
    }

    [Fact]
    public void Dictionary_learning_release_loads_ae_pt_with_its_config()
    {
        string fixture = TestPaths.Data("dictionary_learning", "AutoEncoderTopK");
        const string path = "pythia70m_sweep_topk_ctx128_0730/resid_post_layer_3/trainer_0";
        _server.Repos["canrager/lm_sae"] = new()
        {
            [path + "/ae.pt"] = new(File.ReadAllBytes(Path.Combine(fixture, "ae.pt")), Lfs: true),
            [path + "/config.json"] = new(File.ReadAllBytes(Path.Combine(fixture, "config.json"))),
        };
        using var sae = SaeLoader.Load("sae_bench_pythia70m_sweep_topk_ctx128_0730/blocks.3.hook_resid_post__trainer_0", Options);
        Assert.IsType<TopKSae>(sae);
        Assert.Equal(8, sae.Cfg.K);
        using var direct = DictionaryLearning.Load(Path.Combine(fixture, "ae.pt"));
        var expected = direct.named_parameters().ToDictionary(x => x.name, x => x.parameter.detach().reshape(-1).data<float>().ToArray());
        AssertWeights(expected, sae);
    }

    /// <summary>A Llama Scope folder's files as the hub serves them: <c>hyperparams.json</c> (the keys of the real
    /// files) and <c>checkpoints/final.safetensors</c> with PyTorch Linear weights; returns the raw arrays.</summary>
    internal static (byte[] Hyperparams, byte[] Weights, float[] EncW, float[] EncB, float[] DecW, float[] DecB) LlamaScopeFiles(
        string dir, int dIn, int dSae, double threshold, double normIn, string hook, string? extraJson = null)
    {
        var rng = new Random(13);
        float[] Rand(int n) => Enumerable.Range(0, n).Select(_ => (float)(rng.NextDouble() * 2 - 1)).ToArray();
        float[] encW = Rand(dSae * dIn), encB = Rand(dSae), decW = Rand(dIn * dSae), decB = Rand(dIn);
        Directory.CreateDirectory(Path.Combine(dir, "checkpoints"));
        string w = Path.Combine(dir, "checkpoints", "final.safetensors");
        using (var a = torch.tensor(encW, [dSae, dIn])) using (var b = torch.tensor(encB, [dSae]))
        using (var c = torch.tensor(decW, [dIn, dSae])) using (var d = torch.tensor(decB, [dIn]))
            SaeSharp.IO.SafeTensors.Save(w, new Dictionary<string, Tensor> { ["encoder.weight"] = a, ["encoder.bias"] = b, ["decoder.weight"] = c, ["decoder.bias"] = d });
        string hp = $$"""
            {"d_model": {{dIn}}, "expansion_factor": {{dSae / dIn}}, "d_sae": {{dSae}}, "hook_point_in": "{{hook}}", "hook_point_out": "{{hook}}",
             "use_decoder_bias": true, "apply_decoder_bias_to_pre_encoder": false, "norm_activation": "dataset-wise",
             "sparsity_include_decoder_norm": true, "act_fn": "jumprelu", "jump_relu_threshold": {{threshold.ToString(System.Globalization.CultureInfo.InvariantCulture)}},
             "dataset_average_activation_norm": {"in": {{normIn.ToString(System.Globalization.CultureInfo.InvariantCulture)}}, "out": {{normIn.ToString(System.Globalization.CultureInfo.InvariantCulture)}}}{{extraJson}}}
            """;
        File.WriteAllText(Path.Combine(dir, "hyperparams.json"), hp);
        return (Encoding.UTF8.GetBytes(hp), File.ReadAllBytes(w), encW, encB, decW, decB);
    }

    [Fact]
    public void Llama_Scope_release_loads_as_JumpReLU_with_the_SAELens_scaled_scalar_threshold()
    {
        const int dIn = 8, dSae = 32, n = 6;
        const double jrt = 0.3, normIn = 2.0;
        var (hp, weightsFile, encW, encB, decW, decB) = LlamaScopeFiles(Path.Combine(_work, "ls"), dIn, dSae, jrt, normIn, "blocks.15.hook_resid_post");
        _server.Repos["fnlp/Llama3_1-8B-Base-LXR-8x"] = new()
        {
            ["Llama3_1-8B-Base-L15R-8x/hyperparams.json"] = new(hp),
            ["Llama3_1-8B-Base-L15R-8x/checkpoints/final.safetensors"] = new(weightsFile, Lfs: true),
        };
        using var sae = SaeLoader.Load("llama_scope_lxr_8x/l15r_8x", Options);
        var jr = Assert.IsType<JumpReluSae>(sae);
        Assert.Equal((dIn, dSae, false, "none"), (sae.Cfg.DIn, sae.Cfg.DSae, sae.Cfg.ApplyBDecToInput, sae.Cfg.NormalizeActivations));
        Assert.Equal("blocks.15.hook_resid_post", sae.Cfg.Metadata.HookName);
        Assert.Equal("meta-llama/Llama-3.1-8B", sae.Cfg.Metadata.ModelName);
        Assert.Equal("llama3.1-8b/15-llamascope-res-32k", sae.Cfg.Metadata.Extra!["neuronpedia_id"].GetString());
        Assert.Equal(2.0, sae.Cfg.Metadata.Extra!["dataset_average_activation_norm"].GetProperty("in").GetDouble());
        Assert.Equal("Llama Scope", SaeLoader.DetectFormat("llama_scope_lxr_8x/l15r_8x", Options));

        // SAELens: threshold = jump_relu_threshold · √d_model / dataset_average_activation_norm.in, for every latent.
        float theta = (float)(0.3 * Math.Sqrt(8) / 2.0);
        Assert.All(jr.Threshold.detach().data<float>().ToArray(), t => Assert.Equal(theta, t, 6));

        // Independent expectation: SAE.from_pretrained folds norm_scaling_factor s = √d_model / norm_in (the release table's
        // value) into W_enc, W_dec and b_dec: pre = s·x·encoder.weightᵀ + encoder.bias; f = pre·[pre > θ];
        // x̂ = (f·decoder.weightᵀ + decoder.bias)/s.
        double s = Math.Sqrt(8) / 2.0;
        var rng = new Random(5);
        float[] x = Enumerable.Range(0, n * dIn).Select(_ => (float)(rng.NextDouble() * 2 - 1)).ToArray();
        var f = new float[n * dSae];
        int fired = 0, belowThreshold = 0;
        for (int i = 0; i < n; i++)
            for (int j = 0; j < dSae; j++)
            {
                double pre = encB[j];
                for (int k = 0; k < dIn; k++) pre += s * x[i * dIn + k] * encW[j * dIn + k];
                if (pre > theta) { f[i * dSae + j] = (float)pre; fired++; }
                else if (pre > 0) belowThreshold++;
            }
        Assert.True(fired > 0 && belowThreshold > 0, "the threshold matters for this input");
        var xhat = new float[n * dIn];
        for (int i = 0; i < n; i++)
            for (int k = 0; k < dIn; k++)
            {
                double v = decB[k];
                for (int j = 0; j < dSae; j++) v += f[i * dSae + j] * decW[k * dSae + j];
                xhat[i * dIn + k] = (float)(v / s);
            }
        using var input = torch.tensor(x, [n, dIn]);
        using var acts = sae.Encode(input);
        using var recon = sae.Decode(acts);
        var got = acts.data<float>().ToArray();
        for (int i = 0; i < got.Length; i++) Assert.Equal(f[i], got[i], 4);
        var gotRecon = recon.data<float>().ToArray();
        for (int i = 0; i < gotRecon.Length; i++) Assert.Equal(xhat[i], gotRecon[i], 4);
    }

    [Fact]
    public void Llama_Scope_folder_with_bad_hyperparams_or_weights_fails_naming_the_problem()
    {
        string dir = Path.Combine(_work, "bad");
        LlamaScopeFiles(dir, 4, 8, 0.1, 1.0, "blocks.0.hook_mlp_out", ", \"unused\": 1");
        using (var ok = SaeLoader.Load(dir)) Assert.Equal("blocks.0.hook_mlp_out", ok.Cfg.Metadata.HookName);
        // The weights file names its folder, as hf:…/checkpoints/final.safetensors does.
        using (var byFile = SaeLoader.Load(Path.Combine(dir, "checkpoints", "final.safetensors")))
            Assert.Equal("blocks.0.hook_mlp_out", byFile.Cfg.Metadata.HookName);

        string hpPath = Path.Combine(dir, "hyperparams.json");
        File.WriteAllText(hpPath, File.ReadAllText(hpPath).Replace("\"act_fn\": \"jumprelu\"", "\"act_fn\": \"topk\""));
        var act = Assert.Throws<SaeSharpException>(() => SaeLoader.Load(dir));
        Assert.Contains("act_fn 'topk' is not supported", act.Message);

        LlamaScopeFiles(dir, 4, 8, 0.1, 1.0, "blocks.0.hook_mlp_out");
        File.WriteAllText(hpPath, File.ReadAllText(hpPath).Replace("\"d_sae\": 8", "\"d_sae\": 9"));
        var shape = Assert.Throws<SaeSharpException>(() => SaeLoader.Load(dir));
        Assert.Contains("'encoder.weight' has shape [8, 4], expected [9, 4]", shape.Message);

        LlamaScopeFiles(dir, 4, 8, 0.1, 1.0, "blocks.0.hook_mlp_out");
        File.WriteAllText(hpPath, File.ReadAllText(hpPath).Replace("\"jump_relu_threshold\"", "\"threshold\""));
        var missing = Assert.Throws<SaeSharpException>(() => SaeLoader.Load(dir));
        Assert.Contains("missing key 'jump_relu_threshold'", missing.Message);
    }

    [Fact]
    public void Hf_folder_path_picks_the_SAE_files_from_the_listing_across_pages()
    {
        var (files, weights) = SaeLensFiles("blocks.2.hook_mlp_out");
        _server.TreePageSize = 2;
        _server.Repos["someone/my-saes"] = new()
        {
            ["README.md"] = new("# saes"u8.ToArray()),
            ["runs/a/cfg.json"] = new(files["cfg.json"]),
            ["runs/a/sae_weights.safetensors"] = new(files["sae_weights.safetensors"], Lfs: true),
            ["runs/a/notes.txt"] = new("not needed"u8.ToArray()),
            ["runs/b/cfg.json"] = new(files["cfg.json"]),
        };
        using var sae = SaeLoader.Load("hf:someone/my-saes/runs/a", Options);
        AssertWeights(weights, sae);
        Assert.Equal("blocks.2.hook_mlp_out", sae.Cfg.Metadata.HookName);
        var requests = _server.Requests.ToList();
        Assert.True(requests.Count(r => r.Path.StartsWith("/api/models/someone/my-saes/tree/main/runs/a")) >= 2, "the listing was paged");
        Assert.DoesNotContain(requests, r => r.Path.Contains("notes.txt"));
        Assert.Equal("SAELens", SaeLoader.DetectFormat("hf:someone/my-saes/runs/a", Options));

        // runs/ holds no SAE itself; of its folders only a/ holds a whole one (b/ has a cfg.json alone).
        var e = Assert.Throws<SaeSharpException>(() => SaeLoader.Load("hf:someone/my-saes/runs", Options));
        Assert.Contains("not an SAE itself, but its folder a holds one: point at hf:someone/my-saes/runs/a", e.Message);
        var partial = Assert.Throws<SaeSharpException>(() => SaeLoader.Load("hf:someone/my-saes/runs/b", Options));
        Assert.Contains("no SAE files", partial.Message);
    }

    [Fact]
    public void Hf_folder_of_a_SAELens_training_run_reads_its_activation_scaler()
    {
        // SAELens's trainer saves activation_scaler.json beside cfg.json when normalize_activations is
        // expected_average_only_in; the folder by hf: must fold that factor as the same folder on disk does.
        var (files, _) = SaeLensFiles("blocks.1.hook_resid_pre", dIn: 8, dSae: 24);
        using var original = LoadLocally(files);
        var cfg = System.Text.Json.Nodes.JsonNode.Parse(files["cfg.json"])!;
        cfg["normalize_activations"] = "expected_average_only_in";
        var cfgBytes = Encoding.UTF8.GetBytes(cfg.ToJsonString());
        const double s = 0.25;
        _server.Repos["someone/scaled-saes"] = new()
        {
            ["run/cfg.json"] = new(cfgBytes),
            ["run/sae_weights.safetensors"] = new(files["sae_weights.safetensors"], Lfs: true),
            ["run/activation_scaler.json"] = new("""{"scaling_factor": 0.25}"""u8.ToArray()),
        };
        using var sae = SaeLoader.Load("hf:someone/scaled-saes/run", Options);
        Assert.Equal("none", sae.Cfg.NormalizeActivations);
        AssertScaleFolded(original, sae, s);
    }

    [Fact]
    public void Hf_folder_of_a_Llama_Scope_SAE_loads_as_its_release_name_does()
    {
        // fnlp/Llama-Scope's layout: L15R-8x/hyperparams.json and L15R-8x/checkpoints/final.safetensors.
        var (hp, weightsFile, _, _, _, _) = LlamaScopeFiles(Path.Combine(_work, "ls"), 8, 32, 0.3, 2.0, "blocks.15.hook_resid_post");
        _server.Repos["fnlp/Llama-Scope"] = new()
        {
            ["README.md"] = new("# Llama Scope"u8.ToArray()),
            ["L15R-8x/hyperparams.json"] = new(hp),
            ["L15R-8x/checkpoints/final.safetensors"] = new(weightsFile, Lfs: true),
        };
        _server.Repos["fnlp/Llama3_1-8B-Base-LXR-8x"] = new()
        {
            ["Llama3_1-8B-Base-L15R-8x/hyperparams.json"] = new(hp),
            ["Llama3_1-8B-Base-L15R-8x/checkpoints/final.safetensors"] = new(weightsFile, Lfs: true),
        };
        using var byRelease = SaeLoader.Load("llama_scope_lxr_8x/l15r_8x", Options);
        var expected = byRelease.named_parameters().ToDictionary(x => x.name, x => x.parameter.detach().reshape(-1).data<float>().ToArray());
        foreach (var spec in new[] { "hf:fnlp/Llama-Scope/L15R-8x", "hf:fnlp/Llama-Scope/L15R-8x/checkpoints/final.safetensors" })
        {
            Assert.Equal("Llama Scope", SaeLoader.DetectFormat(spec, Options));
            using var sae = SaeLoader.Load(spec, Options);
            Assert.IsType<JumpReluSae>(sae);
            AssertWeights(expected, sae);
            Assert.Equal(("blocks.15.hook_resid_post", false, "none"), (sae.Cfg.Metadata.HookName, sae.Cfg.ApplyBDecToInput, sae.Cfg.NormalizeActivations));
        }
        // The repo root holds one Llama Scope SAE below it: named, as a local folder's are.
        var root = Assert.Throws<SaeSharpException>(() => SaeLoader.Load("hf:fnlp/Llama-Scope", Options));
        Assert.Contains("its folder L15R-8x holds one: point at hf:fnlp/Llama-Scope/L15R-8x", root.Message);
    }

    [Fact]
    public void Hf_sparsify_run_root_names_its_hookpoint_folders_and_one_of_them_loads_with_the_run_model()
    {
        // A sparsify training run pushed as is: the trainer's config.json and one folder per hookpoint.
        string run = Path.Combine(_work, "run");
        SparsifyTests.WriteSae(Path.Combine(run, "layers.3"), dIn: 5, numLatents: 12, k: 3, seed: 1);
        SparsifyTests.WriteSae(Path.Combine(run, "layers.4.mlp"), dIn: 5, numLatents: 12, k: 3, seed: 2);
        File.WriteAllText(Path.Combine(run, "config.json"), """{"model": "EleutherAI/pythia-70m", "batch_size": 8, "hookpoints": ["layers.3", "layers.4.mlp"]}""");
        var repo = new Dictionary<string, FakeHubServer.FakeFile>();
        foreach (var f in Directory.GetFiles(run, "*", SearchOption.AllDirectories))
            repo[Path.GetRelativePath(run, f).Replace('\\', '/')] = new(File.ReadAllBytes(f), Lfs: f.EndsWith(".safetensors"));
        _server.Repos["EleutherAI/sae-run"] = repo;

        foreach (var spec in new[] { "hf:EleutherAI/sae-run", run })
        {
            var e = Assert.Throws<SaeSharpException>(() => SaeLoader.Load(spec, Options));
            Assert.Contains("layers.3, layers.4.mlp", e.Message);
        }
        var hub = Assert.Throws<SaeSharpException>(() => SaeLoader.Load("hf:EleutherAI/sae-run", Options));
        Assert.Contains("point at one, e.g. hf:EleutherAI/sae-run/layers.3", hub.Message);

        using var sae = SaeLoader.Load("hf:EleutherAI/sae-run/layers.4.mlp", Options);
        using var local = SaeLoader.Load(Path.Combine(run, "layers.4.mlp"));
        AssertWeights(local.named_parameters().ToDictionary(x => x.name, x => x.parameter.detach().reshape(-1).data<float>().ToArray()), sae);
        Assert.Equal(("blocks.4.hook_mlp_out", "EleutherAI/pythia-70m"), (sae.Cfg.Metadata.HookName, sae.Cfg.Metadata.ModelName));
    }

    [Fact]
    public void Hf_file_path_loads_a_bare_dictionary_learning_ae_pt()
    {
        string fixture = TestPaths.Data("dictionary_learning", "GatedAutoEncoder");
        _server.Repos["someone/dl-zips"] = new()
        {
            ["gated/10_32768/ae.pt"] = new(File.ReadAllBytes(Path.Combine(fixture, "ae.pt")), Lfs: true),
        };
        using var sae = SaeLoader.Load("hf:someone/dl-zips/gated/10_32768/ae.pt", Options);
        Assert.IsType<GatedSae>(sae);
        Assert.Equal((32, 128), (sae.Cfg.DIn, sae.Cfg.DSae));
    }

    [Fact]
    public void Hf_step_checkpoint_downloads_the_runs_config_from_one_folder_up()
    {
        // A sweep repo's trainer_0/checkpoints/ae_100.pt (trainSAE's save_steps): the run's config.json, one folder up,
        // comes with it and names the class (BatchTopKSAE, whose keys alone read as AutoEncoderTopK) and the hook.
        string fixture = TestPaths.Data("dictionary_learning", "BatchTopKSAE");
        _server.Repos["someone/dl-sweep"] = new()
        {
            ["resid/trainer_0/config.json"] = new(File.ReadAllBytes(Path.Combine(fixture, "config.json"))),
            ["resid/trainer_0/ae.pt"] = new(File.ReadAllBytes(Path.Combine(fixture, "ae.pt")), Lfs: true),
            ["resid/trainer_0/checkpoints/ae_100.pt"] = new(File.ReadAllBytes(Path.Combine(fixture, "ae.pt")), Lfs: true),
        };
        using var sae = SaeLoader.Load("hf:someone/dl-sweep/resid/trainer_0/checkpoints/ae_100.pt", Options);
        Assert.IsType<BatchTopKSae>(sae);
        Assert.Equal(("blocks.3.hook_mlp_out", 8), (sae.Cfg.Metadata.HookName, sae.Cfg.K));
    }

    [Fact]
    public void Missing_repo_file_or_release_fails_with_a_clear_message()
    {
        var repo = Assert.Throws<SaeSharpException>(() => SaeLoader.Load("hf:nobody/nothing/x", Options));
        Assert.Contains("repository 'nobody/nothing' not found", repo.Message);

        _server.Repos["jbloom/GPT2-Small-SAEs-Reformatted"] = new();
        var file = Assert.Throws<SaeSharpException>(() => SaeLoader.Load("gpt2-small-res-jb/blocks.0.hook_resid_pre", Options));
        Assert.Equal("file 'blocks.0.hook_resid_pre/cfg.json' not found in repository 'jbloom/GPT2-Small-SAEs-Reformatted' at revision 'main'", file.Message);

        var unknown = Assert.Throws<SaeSharpException>(() => SaeLoader.Load("not-a-release/blocks.0", Options));
        Assert.Contains("no such SAE file or folder", unknown.Message);
        // A mistyped release name is answered with the nearest release; a release without an SAE id with one of its ids;
        // an SAE id not in the release with the nearest ids (gpt2-small-res-jb has resid_pre for layers 0-11).
        var typo = Assert.Throws<SaeSharpException>(() => SaeLoader.Load("gpt2-small-res_jb/blocks.0.hook_resid_pre", Options));
        Assert.Contains("no release 'gpt2-small-res_jb' (did you mean 'gpt2-small-res-jb'?)", typo.Message);
        var bare = Assert.Throws<SaeSharpException>(() => SaeLoader.Load("gpt2-small-res-jb", Options));
        Assert.Contains("'gpt2-small-res-jb' is a release; name one of its", bare.Message);
        Assert.Contains("e.g. gpt2-small-res-jb/blocks.", bare.Message);
        var id = Assert.Throws<SaeSharpException>(() => SaeLoader.Load("gpt2-small-res-jb/blocks.8.hook_resid_post", Options));
        Assert.Contains("release 'gpt2-small-res-jb' has no SAE 'blocks.8.hook_resid_post'", id.Message);
        Assert.Contains("blocks.8.hook_resid_pre", id.Message[id.Message.IndexOf("nearest:", StringComparison.Ordinal)..]);
        var idTypo = Assert.Throws<SaeSharpException>(() => SaeLoader.Load("gpt2-small-res-jb/blocks.8.hook_resid_pr", Options));
        Assert.Contains("(did you mean 'blocks.8.hook_resid_pre'?)", idTypo.Message);

        // A release in another library's format names the file its SAELens loader reads first (connor_rob_hook_z: NAME_cfg.json).
        _server.Repos["ckkissane/attn-saes-gpt2-small-all-layers"] = new();
        var converted = Assert.Throws<SaeSharpException>(() => SaeLoader.Load("gpt2-small-hook-z-kk/blocks.0.hook_z", Options));
        Assert.Equal("file 'gpt2-small_L0_Hcat_z_lr1.20e-03_l11.80e+00_ds24576_bs4096_dc1.00e-06_rsanthropic_rie25000_nr4_v9_cfg.json' " +
            "not found in repository 'ckkissane/attn-saes-gpt2-small-all-layers' at revision 'main'", converted.Message);
    }

    /// <summary>Every release of the table is in a format SaeSharp loads (SAELens 6.37.6's two <c>temporal</c> ones too):
    /// against empty repos, the first SAE of each fails on a missing file of its format, never on the format.</summary>
    [Fact]
    public void Every_release_of_the_table_is_in_a_loadable_format()
    {
        foreach (var release in SaeReleases.All)
        {
            _server.Repos[release.RepoId] = new();
            var e = Assert.Throws<SaeSharpException>(() => SaeLoader.Load($"{release.Release}/{release.Saes[0].Id}", Options));
            Assert.DoesNotContain("does not load yet", e.Message);
            Assert.DoesNotContain("not supported", e.Message);
            Assert.Contains($"repository '{release.RepoId}'", e.Message);     // a file of its format not found in it
        }
        Assert.Empty(SaeLensConversions.Unsupported);
    }

    [Fact]
    public void Interrupted_release_download_resumes_from_the_partial_blob()
    {
        var (files, weights) = SaeLensFiles("blocks.7.hook_resid_pre", dIn: 16, dSae: 64);
        byte[] blobBytes = files["sae_weights.safetensors"];
        _server.Repos["jbloom/GPT2-Small-SAEs-Reformatted"] = new()
        {
            ["blocks.7.hook_resid_pre/cfg.json"] = new(files["cfg.json"]),
            ["blocks.7.hook_resid_pre/sae_weights.safetensors"] = new(blobBytes, Lfs: true),
        };
        _server.CutBodyAfter = blobBytes.Length / 3;
        var e = Assert.Throws<SaeSharpException>(() => SaeLoader.Load("gpt2-small-res-jb/blocks.7.hook_resid_pre", Options));
        Assert.Contains("run again to resume", e.Message);
        string partial = Path.Combine(_cache, "models--jbloom--GPT2-Small-SAEs-Reformatted", "blobs", FakeHubServer.Sha256(blobBytes) + ".incomplete");
        Assert.Equal(blobBytes.Length / 3, new FileInfo(partial).Length);

        _server.CutBodyAfter = null;
        using var sae = SaeLoader.Load("gpt2-small-res-jb/blocks.7.hook_resid_pre", Options);
        AssertWeights(weights, sae);
        var resumed = _server.Requests.Last(r => r.Method == "GET" && r.Path.StartsWith("/cdn/"));
        Assert.Equal($"bytes={blobBytes.Length / 3}-", resumed.Range);
        Assert.Equal(blobBytes.Length - blobBytes.Length / 3, resumed.BodyBytesSent);
    }
}
