using SaeSharp.Hub;
using SaeSharp.Interop;
using SaeSharp.Saes;
using SaeSharp.Tests.Hub;
using SaeSharp.Tests.Saes;
using SaeSharp.Tests.Tokenizers;
using static TorchSharp.torch;

namespace SaeSharp.Tests.Interop;

/// <summary>
/// Every SAELens conversion's files, copied as <c>huggingface-cli download ORG/REPO --local-dir DL/REPO</c> lays them out
/// (the repo's paths kept under a folder named after the repo), load by path through the same loader as by release id:
/// the same weights, and the same cfg once the release table's facts (<see cref="SaeSource.ApplyReleaseFacts"/>: the
/// Neuronpedia id, float32, config_overrides) are added. The release side is served by the fake hub into an offline cache.
/// </summary>
public sealed class SaeDiskLoadTests : FakeHubTestBase
{
    private SaeLoadOptions Options => new() { Hub = Hub };

    private static string Fixture(params string[] parts) => TestPaths.Data(["saelens_conversions", .. parts]);

    /// <summary>Serves <paramref name="files"/> (repo path → local file) as <paramref name="repo"/>, and copies them into
    /// <c>_work/dl/{repo name}/{repo path}</c> as <c>huggingface-cli download --local-dir</c> does; returns that folder.</summary>
    private string ServeAndDownload(string repo, params (string RepoPath, string File)[] files)
    {
        if (!_server.Repos.TryGetValue(repo, out var r)) _server.Repos[repo] = r = new();
        string local = Path.Combine(_work, "dl", repo.Split('/')[1]);
        foreach (var (repoPath, file) in files)
        {
            r[repoPath] = new FakeHubServer.FakeFile(File.ReadAllBytes(file), Lfs: !repoPath.EndsWith(".json", StringComparison.Ordinal) && !repoPath.EndsWith(".yaml", StringComparison.Ordinal));
            string to = Path.Combine(local, repoPath);
            Directory.CreateDirectory(Path.GetDirectoryName(to)!);
            File.Copy(file, to, overwrite: true);
        }
        return local;
    }

    /// <summary>Loads <paramref name="spec"/> by release id and each of <paramref name="paths"/> by path; asserts the format
    /// detected from the files, equal weights, and equal cfg once the release's facts are added to the path's. An
    /// <c>hf:ORG/REPO/PATH</c> path is loaded into a cache of its own, so that it has only the files it downloads itself.</summary>
    private void AssertSameAsRelease(string spec, string format, params string[] paths)
    {
        var resolved = SaeSource.Resolve(spec, Hub);
        using var byRelease = SaeLoader.Load(resolved, Options);
        var expected = byRelease.WeightsByName();
        foreach (var path in paths)
        {
            var options = path.StartsWith(SaeSource.HubPrefix, StringComparison.Ordinal)
                ? new SaeLoadOptions { Hub = new HfHubOptions { Endpoint = _server.Endpoint, CacheDir = Path.Combine(_work, "cache", Guid.NewGuid().ToString("N")) } }
                : null;
            Assert.Equal(format, SaeLoader.DetectFormat(path, options));
            using var byPath = SaeLoader.Load(path, options);
            SaeSource.ApplyReleaseFacts(byPath.Cfg, resolved);
            Assert.Equal(byRelease.Cfg.ToJson(), byPath.Cfg.ToJson());
            var got = byPath.WeightsByName();
            Assert.Equal(expected.Keys.Order(StringComparer.Ordinal), got.Keys.Order(StringComparer.Ordinal));
            using var scope = NewDisposeScope();
            foreach (var (name, t) in expected)
            {
                Assert.Equal(t.shape, got[name].shape);
                Assert.True(t.eq(got[name]).all().item<bool>(), $"{path}: {name} differs from the release's");
            }
        }
    }

    [Fact]
    public void Deepseek_r1_pt_file_and_its_folder()
    {
        const string file = "DeepSeek-R1-Distill-Llama-8B-SAE-l19.pt";
        string dl = ServeAndDownload("qresearch/DeepSeek-R1-Distill-Llama-8B-SAE-l19", (file, Fixture("deepseek_r1", file)));
        AssertSameAsRelease("deepseek-r1-distill-llama-8b-qresearch/blocks.19.hook_resid_post", "deepseek_r1", Path.Combine(dl, file), dl,
            "hf:qresearch/DeepSeek-R1-Distill-Llama-8B-SAE-l19/" + file);
    }

    [Fact]
    public void Goodfire_pth_file_and_its_folder()
    {
        const string file = "Llama-3.1-8B-Instruct-SAE-l19.pth";
        string dl = ServeAndDownload("Goodfire/Llama-3.1-8B-Instruct-SAE-l19", (file, Fixture("goodfire", file)));
        AssertSameAsRelease("goodfire-llama-3.1-8b-instruct/layer_19", "goodfire", Path.Combine(dl, file), dl);
    }

    [Fact]
    public void Connor_rob_hook_z_pt_with_its_cfg_json_and_their_folder()
    {
        const string name = "gpt2-small_L0_Hcat_z_lr1.20e-03_l11.80e+00_ds24576_bs4096_dc1.00e-06_rsanthropic_rie25000_nr4_v9";
        string dl = ServeAndDownload("ckkissane/attn-saes-gpt2-small-all-layers",
            (name + ".pt", Fixture("connor_rob_hook_z", name + ".pt")), (name + "_cfg.json", Fixture("connor_rob_hook_z", name + "_cfg.json")));
        AssertSameAsRelease("gpt2-small-hook-z-kk/blocks.0.hook_z", "connor_rob_hook_z", Path.Combine(dl, name + ".pt"), dl,
            $"hf:ckkissane/attn-saes-gpt2-small-all-layers/{name}.pt");
    }

    [Fact]
    public void Llama_scope_r1_distill_folder_finds_its_norm_scaling_factor_by_the_repo_path_and_else_says_how_to_give_it()
    {
        const string path = "800M-Slimpajama-0-OpenR1-Math-220k/L0R";
        string dl = ServeAndDownload("fnlp/Llama-Scope-R1-Distill",
            (path + "/config.json", Fixture("llama_scope_r1_distill", path, "config.json")),
            (path + "/sae_weights.safetensors", Fixture("llama_scope_r1_distill", path, "sae_weights.safetensors")));
        string folder = Path.Combine(dl, path);
        AssertSameAsRelease("llama_scope_r1_distill/l0r_800m_slimpajama", "llama_scope_r1_distill", folder, Path.Combine(folder, "sae_weights.safetensors"),
            $"hf:fnlp/Llama-Scope-R1-Distill/{path}/sae_weights.safetensors");

        // Renamed, the folder no longer names its release entry: the factor (in the table only) is asked for.
        string moved = Path.Combine(_work, "mine", "L0R");
        Directory.CreateDirectory(Path.GetDirectoryName(moved)!);
        Directory.Move(folder, moved);
        var e = Assert.Throws<SaeSharpException>(() => SaeLoader.Load(moved));
        Assert.Contains("needs the release table's norm_scaling_factor", e.Message);
        Assert.Contains("load it by release id (llama_scope_r1_distill/SAE_ID", e.Message);
    }

    [Fact]
    public void Mwhanna_layer_file_with_the_repo_yaml_and_the_14b_repo_named_by_its_folder()
    {
        string dl = ServeAndDownload("mwhanna/qwen3-0.6b-transcoders-lowl0",
            ("layer_1.safetensors", Fixture("mwhanna", "layer_1.safetensors")),
            ("wandb-config.yaml", Fixture("mwhanna", "wandb-config.yaml")),
            ("config.yaml", Fixture("mwhanna", "config.yaml")));
        AssertSameAsRelease("mwhanna-qwen3-0.6b-transcoders-lowl0/layer_1", "mwhanna_transcoder", Path.Combine(dl, "layer_1.safetensors"),
            "hf:mwhanna/qwen3-0.6b-transcoders-lowl0/layer_1.safetensors");

        // The 14b repos: no config.yaml, the misspelt wandb config; the model comes from the folder's name as from the repo id.
        string dl14 = ServeAndDownload("mwhanna/qwen3-14b-transcoders",
            ("layer_1.safetensors", Fixture("mwhanna", "layer_1.safetensors")),
            ("wanb-config.yaml", Fixture("mwhanna", "wandb-config.yaml")));
        AssertSameAsRelease("mwhanna-qwen3-14b-transcoders/layer_1", "mwhanna_transcoder", Path.Combine(dl14, "layer_1.safetensors"),
            "hf:mwhanna/qwen3-14b-transcoders/layer_1.safetensors");
        string renamed = Path.Combine(_work, "mine");
        Directory.Move(dl14, renamed);
        var e = Assert.Throws<SaeSharpException>(() => SaeLoader.Load(Path.Combine(renamed, "layer_1.safetensors")));
        Assert.Contains("config.yaml: not found", e.Message);
        Assert.Contains("or load it by release id", e.Message);

        // Without the wandb config the file is not taken, and the error says what is missing.
        File.Delete(Path.Combine(renamed, "wanb-config.yaml"));
        e = Assert.Throws<SaeSharpException>(() => SaeLoader.Load(Path.Combine(renamed, "layer_1.safetensors")));
        Assert.Contains("not a recognised SAE: an mwhanna_transcoder layer file needs the repo's wandb-config.yaml", e.Message);
    }

    [Fact]
    public void Mntss_clt_layer_encoder_file_and_a_folder_of_that_one_layer()
    {
        string dl = ServeAndDownload("mntss/clt-gemma-2-2b-2.5M",
            ("config.yaml", Fixture("mntss", "config.yaml")),
            ("W_enc_2.safetensors", Fixture("mntss", "W_enc_2.safetensors")),
            ("W_dec_2.safetensors", Fixture("mntss", "W_dec_2.safetensors")));
        AssertSameAsRelease("mntss-gemma-2-2b-2.5m-clt-as-per-layer/layer_2", "mntss_clt_layer_transcoder", Path.Combine(dl, "W_enc_2.safetensors"), dl,
            "hf:mntss/clt-gemma-2-2b-2.5M/W_enc_2.safetensors");
    }

    [Fact]
    public void Gemma_scope_transcoder_params_npz_folder()
    {
        const string path = "layer_3/width_16k/average_l0_54";
        string src = Path.Combine(_work, "src");
        var p = GemmaScopeTests.WriteParams(src, dIn: 4, dSae: 16384, seed: 5);
        foreach (var t in p.Values) t.Dispose();
        string dl = ServeAndDownload("google/gemma-scope-2b-pt-transcoders", (path + "/params.npz", Path.Combine(src, "params.npz")));
        AssertSameAsRelease("gemma-scope-2b-pt-transcoders/" + path, "Gemma Scope", Path.Combine(dl, path), Path.Combine(dl, path, "params.npz"));

        // Without the repo's name in the path nothing tells the model, the hooks or that it is a transcoder: a note says so.
        using var bare = SaeLoader.Load(Path.Combine(src, "params.npz"));
        Assert.Equal(((string?)null, (string?)null, (int?)null), (bare.Cfg.Metadata.ModelName, bare.Cfg.Metadata.HookName, bare.Cfg.DOut));
        Assert.Equal(GemmaScope.NoRepoInPathNote, bare.Cfg.Metadata.Extra![SaeLensConversions.NoteKey].GetString());
        using var named = SaeLoader.Load(Path.Combine(dl, path));
        Assert.False(named.Cfg.Metadata.Extra?.ContainsKey(SaeLensConversions.NoteKey) ?? false);
    }

    [Fact]
    public void Gemma_scope_2_sae_and_transcoder_folders()
    {
        string Gs2(params string[] parts) => Fixture(["gemma_scope_2", .. parts]);
        const string res = "resid_post/layer_12_width_16k_l0_small", tc = "transcoder/layer_13_width_16k_l0_big";
        string dl = ServeAndDownload("google/gemma-scope-2-270m-pt",
            (res + "/params.safetensors", Gs2(res, "params.safetensors")), (res + "/config.json", Gs2(res, "config.json")));
        AssertSameAsRelease("gemma-scope-2-270m-pt-res/layer_12_width_16k_l0_small", "Gemma Scope 2", Path.Combine(dl, res), Path.Combine(dl, res, "params.safetensors"),
            $"hf:google/gemma-scope-2-270m-pt/{res}/params.safetensors");
        // No config.json: the model comes from the repo id, here from the folder named after the repo.
        dl = ServeAndDownload("google/gemma-scope-2-1b-pt", (tc + "/params.safetensors", Gs2(tc, "params.safetensors")));
        AssertSameAsRelease("gemma-scope-2-1b-pt-transcoders/" + tc, "Gemma Scope 2", Path.Combine(dl, tc));
    }

    [Fact]
    public void Temporal_folder()
    {
        const string path = "llama-3.1-8B/layer_26/temporal";
        string src = TemporalSaeTests.Fixture("untied_relu", "canrager", "layer_3", "temporal");
        string dl = ServeAndDownload("canrager/temporalSAEs",
            (path + "/" + SaeLensConversions.TemporalConfigFile, Path.Combine(src, SaeLensConversions.TemporalConfigFile)),
            (path + "/" + SaeLensConversions.TemporalWeightsFile, Path.Combine(src, SaeLensConversions.TemporalWeightsFile)));
        AssertSameAsRelease("temporal-sae-llama-3.1-8b/blocks.26.hook_resid_post", "canrager temporal", Path.Combine(dl, path),
            $"hf:canrager/temporalSAEs/{path}/{SaeLensConversions.TemporalWeightsFile}");
    }

    [Fact]
    public void SAELens_folder_whose_factor_only_the_release_table_has_finds_it_by_the_repo_path()
    {
        // gpt2-small-mlp-tm: a pre-6.0 cfg with the boolean normalisation and no factor; the table's norm_scaling_factor is folded in.
        const string path = "sae_group_gpt2_blocks.0.hook_mlp_out_24576:v1";
        string src = Path.Combine(_work, "src");
        Directory.CreateDirectory(src);
        File.WriteAllText(Path.Combine(src, "cfg.json"), """
            {"d_in": 8, "d_sae": 24, "dtype": "float32", "device": "cpu", "model_name": "gpt2-small", "hook_point": "blocks.0.hook_mlp_out",
             "hook_point_layer": 0, "activation_fn_str": "relu", "apply_b_dec_to_input": true, "normalize_activations": true}
            """);
        using (var scope = NewDisposeScope())
        {
            var g = new Generator(4);
            SaeSharp.IO.SafeTensors.Save(Path.Combine(src, "sae_weights.safetensors"), new Dictionary<string, Tensor>
            {
                ["W_enc"] = randn(8, 24, generator: g), ["W_dec"] = randn(24, 8, generator: g), ["b_enc"] = randn(24, generator: g), ["b_dec"] = randn(8, generator: g),
            });
        }
        string dl = ServeAndDownload("tommmcgrath/gpt2-small-mlp-out-saes",
            (path + "/cfg.json", Path.Combine(src, "cfg.json")), (path + "/sae_weights.safetensors", Path.Combine(src, "sae_weights.safetensors")));
        AssertSameAsRelease("gpt2-small-mlp-tm/blocks.0.hook_mlp_out", "SAELens", Path.Combine(dl, path));

        var e = Assert.Throws<SaeSharpException>(() => SaeLoader.Load(src));
        Assert.Contains("no scaling factor was found", e.Message);
        Assert.Contains("load it by release id, or keep the repo's folder names in its path", e.Message);
    }

    [Fact]
    public void The_not_recognised_error_lists_what_each_format_needs_on_disk()
    {
        string dir = Path.Combine(_work, "empty");
        Directory.CreateDirectory(dir);
        var e = Assert.Throws<SaeSharpException>(() => SaeLoader.Load(dir));
        foreach (var needs in new[] { "SAELens: cfg.json + sae_weights.safetensors", "deepseek_r1: ", "goodfire: ", "connor_rob_hook_z: NAME.pt + NAME_cfg.json",
                     "llama_scope_r1_distill: config.json + sae_weights.safetensors", "mwhanna_transcoder: layer_N.safetensors + wandb-config.yaml",
                     "mntss_clt_layer_transcoder: W_enc_N.safetensors + W_dec_N.safetensors", "canrager temporal: conf.yaml + latest_ckpt.safetensors" })
            Assert.Contains(needs, e.Message);
    }
}
