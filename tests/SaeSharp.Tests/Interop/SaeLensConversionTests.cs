using System.Text.Json;
using SaeSharp.Hub;
using SaeSharp.Interop;
using SaeSharp.IO;
using SaeSharp.Saes;
using SaeSharp.Tests.Hub;
using SaeSharp.Tests.Tokenizers;
using static TorchSharp.torch;

namespace SaeSharp.Tests.Interop;

/// <summary>
/// Releases whose SAELens <c>conversion_func</c> is deepseek_r1, connor_rob_hook_z, llama_scope_r1_distill,
/// gemma_2_transcoder, mwhanna_transcoder, mntss_clt_layer_transcoder or goodfire (gemma_3: GemmaScope2Tests), loaded by release name through the fake hub
/// from files in each repo's exact layout (tests/data/saelens_conversions, written by torch.save / numpy and a
/// safetensors writer in bench/reference/saelens_conversions_fixture.py, which also computed the reference features and
/// outputs by SAELens's formulas from the files). The config values checked are those of SAELens's config functions in
/// pretrained_sae_loaders.py at 91ca16cc (goodfire: at 69c4c62b, SAELens 6.37.6), read by hand.
/// </summary>
public sealed class SaeLensConversionTests : FakeHubTestBase
{
    private SaeLoadOptions Options => new() { Hub = Hub };

    private static string Fixture(params string[] parts) => TestPaths.Data(["saelens_conversions", .. parts]);

    /// <summary>Serves <paramref name="files"/> (repo path → fixture file) as the repo <paramref name="repo"/>.</summary>
    private void Serve(string repo, params (string RepoPath, string File)[] files) =>
        _server.Repos[repo] = files.ToDictionary(f => f.RepoPath, f => new FakeHubServer.FakeFile(File.ReadAllBytes(f.File), Lfs: f.File.EndsWith("safetensors") || f.File.EndsWith(".pt")));

    /// <summary>The SAE's features (<c>Encode</c>) and output (<c>forward</c>) on the fixture's x against the references
    /// computed by SAELens's formulas.</summary>
    internal static void AssertMatchesReference(Sae sae, string folder)
    {
        var reference = SafeTensors.Load(Path.Combine(folder, "reference.safetensors"));
        try
        {
            using var scope = NewDisposeScope();
            var x = reference["x"];
            var f = sae.Encode(x);
            Assert.True(f.gt(0).any().item<bool>() && f.eq(0).any().item<bool>(), "some latents fire and some do not");
            SaeSharp.Tests.Saes.SaeTestUtil.AssertClose(reference["feature_acts"], f, rtol: 1e-5, atol: 1e-5, what: "feature_acts");
            SaeSharp.Tests.Saes.SaeTestUtil.AssertClose(reference["sae_out"], sae.forward(x), rtol: 1e-5, atol: 1e-5, what: "sae_out");
        }
        finally
        {
            foreach (var t in reference.Values) t.Dispose();
        }
    }

    private static string? Extra(Sae sae, string key) => sae.Cfg.Metadata.Extra?.GetValueOrDefault(key) is { ValueKind: JsonValueKind.String } v ? v.GetString() : null;

    [Fact]
    public void Deepseek_r1_loads_the_pt_state_dict_transposed_with_the_layer_from_the_file_name()
    {
        const string file = "DeepSeek-R1-Distill-Llama-8B-SAE-l19.pt";
        Serve("qresearch/DeepSeek-R1-Distill-Llama-8B-SAE-l19", (file, Fixture("deepseek_r1", file)));
        var resolved = SaeSource.Resolve("deepseek-r1-distill-llama-8b-qresearch/blocks.19.hook_resid_post", Hub);
        Assert.Equal("deepseek_r1", SaeLoader.DetectFormat(resolved));
        using var sae = SaeLoader.Load(resolved, Options);
        var c = sae.Cfg;
        Assert.IsType<StandardSae>(sae);
        // get_deepseek_r1_config_from_hf, with d_in and d_sae from the weights; its dtype bfloat16 is overridden by SAELens
        // 6.37's from_pretrained(dtype="float32") (6.18 kept bfloat16), while the file read directly keeps it.
        Assert.Equal((6, 16, (int?)null, "float32", false, "none"), (c.DIn, c.DSae, c.DOut, c.Dtype, c.ApplyBDecToInput, c.NormalizeActivations));
        using (var direct = SaeLensConversions.LoadDeepSeekR1(Fixture("deepseek_r1", file)))
            Assert.Equal("bfloat16", direct.Cfg.Dtype);
        var m = c.Metadata;
        Assert.Equal(("deepseek-ai/DeepSeek-R1-Distill-Llama-8B", "blocks.19.hook_resid_post", 1024, true, "lmsys/lmsys-chat-1m"),
            (m.ModelName, m.HookName, m.ContextSize, m.PrependBos, m.DatasetPath));
        Assert.Equal("deepseek-r1-distill-llama-8b/19-qresearch-res-65k", Extra(sae, "neuronpedia_id"));
        AssertMatchesReference(sae, Fixture("deepseek_r1"));
    }

    [Fact]
    public void Goodfire_loads_the_pth_state_dict_transposed_with_SAELens_fixed_config()
    {
        const string file = "Llama-3.1-8B-Instruct-SAE-l19.pth";
        Serve("Goodfire/Llama-3.1-8B-Instruct-SAE-l19", (file, Fixture("goodfire", file)));
        var resolved = SaeSource.Resolve("goodfire-llama-3.1-8b-instruct/layer_19", Hub);
        Assert.Equal("goodfire", SaeLoader.DetectFormat(resolved));
        foreach (var sae in new[] { SaeLoader.Load(resolved, Options), SaeLensConversions.LoadGoodfire(Fixture("goodfire", file)) })
            using (sae)
            {
                var c = sae.Cfg;
                Assert.IsType<StandardSae>(sae);
                // get_goodfire_config_from_hf (SAELens 6.37.6), with d_in and d_sae from the weights.
                Assert.Equal((6, 16, (int?)null, "float32", false, "none"), (c.DIn, c.DSae, c.DOut, c.Dtype, c.ApplyBDecToInput, c.NormalizeActivations));
                Assert.Equal(("meta-llama/Llama-3.1-8B-Instruct", "blocks.19.hook_resid_post", "lmsys/lmsys-chat-1m"),
                    (c.Metadata.ModelName, c.Metadata.HookName, c.Metadata.DatasetPath));
                AssertMatchesReference(sae, Fixture("goodfire"));
            }
        using (var sae = SaeLoader.Load(resolved, Options))
            Assert.Equal("llama3.1-8b-it/19-resid-post-gf", Extra(sae, "neuronpedia_id"));

        // SAELens refuses a file of another name, or the file under the other repo.
        string renamed = Path.Combine(_work, "other.pth");
        File.Copy(Fixture("goodfire", file), renamed);
        var e = Assert.Throws<SaeSharpException>(() => SaeLensConversions.LoadGoodfire(renamed));
        Assert.StartsWith("other.pth: unsupported Goodfire SAE (SAELens's goodfire loader knows Goodfire/Llama-3.3-70B-Instruct-SAE-l50/Llama-3.3-70B-Instruct-SAE-l50.pt, ", e.Message);
        e = Assert.Throws<SaeSharpException>(() => SaeLensConversions.LoadGoodfire(Fixture("goodfire", file), "Goodfire/Llama-3.3-70B-Instruct-SAE-l50"));
        Assert.StartsWith($"Goodfire/Llama-3.3-70B-Instruct-SAE-l50/{file}: unsupported Goodfire SAE", e.Message);
    }

    [Fact]
    public void Connor_rob_hook_z_loads_the_pt_and_its_cfg_json_and_splices_at_the_flattened_heads_of_hook_z()
    {
        const string name = "gpt2-small_L0_Hcat_z_lr1.20e-03_l11.80e+00_ds24576_bs4096_dc1.00e-06_rsanthropic_rie25000_nr4_v9";
        Serve("ckkissane/attn-saes-gpt2-small-all-layers",
            (name + ".pt", Fixture("connor_rob_hook_z", name + ".pt")), (name + "_cfg.json", Fixture("connor_rob_hook_z", name + "_cfg.json")));
        using var sae = SaeLoader.Load("gpt2-small-hook-z-kk/blocks.0.hook_z", Options);
        var c = sae.Cfg;
        // get_connor_rob_hook_z_config_from_hf: act_size, dict_size, act_name from the cfg; b_dec subtracted; hook_z reshape.
        Assert.Equal((32, 24, "float32", true, "none", "hook_z"), (c.DIn, c.DSae, c.Dtype, c.ApplyBDecToInput, c.NormalizeActivations, c.ReshapeActivations));
        var m = c.Metadata;
        Assert.Equal(("gpt2-small", "blocks.0.attn.hook_z", 128, true, "Skylion007/openwebtext"),
            (m.ModelName, m.HookName, m.ContextSize, m.PrependBos, m.DatasetPath));
        AssertMatchesReference(sae, Fixture("connor_rob_hook_z"));

        // Spliced into a GPT-2 (4 heads × d_head 8 = 32): hook_z [b, p, 4, 8] is replaced by the SAE's output on its
        // flattened rows.
        using var model = SaeSharp.Models.ModelLoader.FromPretrained(TestPaths.Data("hf_models", "gpt2"));
        using var scope = NewDisposeScope();
        var tokens = tensor(new long[] { 1, 5, 9, 2, 7, 3, 4, 8 }, 2, 4);
        var spliced = model.Run(tokens, new SaeSharp.Models.RunOptions { Saes = [new SaeSharp.Hooks.AttachedSae(sae)] }).Logits!;
        var byHand = model.RunWithHooks(tokens, ("blocks.0.attn.hook_z", z => sae.forward(z.reshape(2, 4, 32)).reshape(z.shape)));
        SaeSharp.Tests.Saes.SaeTestUtil.AssertClose(byHand, spliced, rtol: 1e-5, atol: 1e-5, what: "logits");
        Assert.False(allclose(byHand, model.Forward(tokens), 1e-3, 1e-3), "the SAE changes the logits");
    }

    [Fact]
    public void Llama_scope_r1_distill_loads_config_json_and_safetensors_and_folds_the_norm_scaling_factor()
    {
        const string path = "800M-Slimpajama-0-OpenR1-Math-220k/L0R";
        Serve("fnlp/Llama-Scope-R1-Distill",
            (path + "/config.json", Fixture("llama_scope_r1_distill", path, "config.json")),
            (path + "/sae_weights.safetensors", Fixture("llama_scope_r1_distill", path, "sae_weights.safetensors")));
        using var sae = SaeLoader.Load("llama_scope_r1_distill/l0r_800m_slimpajama", Options);
        var c = sae.Cfg;
        Assert.IsType<JumpReluSae>(sae);
        // get_llama_scope_r1_distill_config_from_hf; "expected_average_only_in" is folded (from_pretrained) and becomes none.
        Assert.Equal((6, 24, "float32", false, "none"), (c.DIn, c.DSae, c.Dtype, c.ApplyBDecToInput, c.NormalizeActivations));
        var m = c.Metadata;
        Assert.Equal(("meta-llama/Llama-3.1-8B", "blocks.0.hook_resid_post", 1024, true, "cerebras/SlimPajama-627B"),
            (m.ModelName, m.HookName, m.ContextSize, m.PrependBos, m.DatasetPath));
        Assert.Equal(53.52995401997436, SaeReleases.Lookup("llama_scope_r1_distill/l0r_800m_slimpajama")!.Value.Sae.NormScalingFactor);
        AssertMatchesReference(sae, Fixture("llama_scope_r1_distill", path));

        var e = Assert.Throws<SaeSharpException>(() => SaeLensConversions.LoadLlamaScopeR1Distill(Fixture("llama_scope_r1_distill", path), null));
        Assert.Contains("norm_scaling_factor", e.Message);
    }

    [Fact]
    public void Gemma_scope_transcoder_is_a_jumprelu_transcoder_from_ln2_to_hook_mlp_out()
    {
        string src = Path.Combine(_work, "gst");
        var p = GemmaScopeTests.WriteParams(src, dIn: 4, dSae: 16384, seed: 5);
        Serve("google/gemma-scope-2b-pt-transcoders", ("layer_3/width_16k/average_l0_54/params.npz", Path.Combine(src, "params.npz")));
        using var sae = SaeLoader.Load("gemma-scope-2b-pt-transcoders/layer_3/width_16k/average_l0_54", Options);
        var c = sae.Cfg;
        Assert.IsType<JumpReluSae>(sae);
        // get_gemma_2_transcoder_config_from_hf (d_in from the weights).
        Assert.Equal((4, 4, 16384, false, "none"), (c.DIn, c.DOut, c.DSae, c.ApplyBDecToInput, c.NormalizeActivations));
        Assert.Equal(("gemma-2-2b", "blocks.3.ln2.hook_normalized", "blocks.3.hook_mlp_out", 1024, "monology/pile-uncopyrighted"),
            (c.Metadata.ModelName, c.Metadata.HookName, Extra(sae, "hook_name_out"), c.Metadata.ContextSize, c.Metadata.DatasetPath));
        Assert.Equal("jumprelu_transcoder", SaeLensFormat.SaeLensArchitecture(c));
        Assert.Equal("gemma-2-2b/3-gemmascope-transcoder-16k", Extra(sae, "neuronpedia_id"));
        // `sae releases` lists the hooks the loader set.
        var (release, listed) = SaeReleases.Lookup("gemma-scope-2b-pt-transcoders/layer_3/width_16k/average_l0_54")!.Value;
        Assert.Equal((c.Metadata.HookName, c.Metadata.HookNameOut), SaeLensConversions.ReleaseHooks(release, listed));

        using var scope = NewDisposeScope();
        var x = randn(6, 4, generator: new TorchSharp.torch.Generator(9));
        var pre = x.matmul(p["W_enc"]) + p["b_enc"];
        var f = nn.functional.relu(pre) * pre.gt(p["threshold"]);
        SaeSharp.Tests.Saes.SaeTestUtil.AssertClose(f, sae.Encode(x), what: "features");
        // 16,384 terms per output that largely cancel: the tolerance is float32 rounding of the sum of their magnitudes
        // (MKL adds them in another order per CPU kind: 1.1e-4 apart on an AMD Zen 4, against outputs below 1).
        float sumOfMagnitudes = f.abs().matmul(p["W_dec"].abs()).max().item<float>();
        SaeSharp.Tests.Saes.SaeTestUtil.AssertClose(f.matmul(p["W_dec"]) + p["b_dec"], sae.forward(x), atol: 1e-6 * sumOfMagnitudes, what: "output");
        Assert.True(f.gt(0).any().item<bool>());

        // The same folder as hf:ORG/REPO/PATH: the metadata is read off the cache path (models--google--gemma-scope-2b-pt-transcoders).
        using var byPath = SaeLoader.Load("hf:google/gemma-scope-2b-pt-transcoders/layer_3/width_16k/average_l0_54", Options);
        Assert.Equal((4, "blocks.3.ln2.hook_normalized", "blocks.3.hook_mlp_out"), (byPath.Cfg.DOut, byPath.Cfg.Metadata.HookName, Extra(byPath, "hook_name_out")));
    }

    [Fact]
    public void Mwhanna_transcoder_reads_the_wandb_and_repo_yaml_and_transposes_W_enc()
    {
        Serve("mwhanna/qwen3-0.6b-transcoders-lowl0",
            ("layer_1.safetensors", Fixture("mwhanna", "layer_1.safetensors")),
            ("wandb-config.yaml", Fixture("mwhanna", "wandb-config.yaml")),
            ("config.yaml", Fixture("mwhanna", "config.yaml")));
        using var sae = SaeLoader.Load("mwhanna-qwen3-0.6b-transcoders-lowl0/layer_1", Options);
        var c = sae.Cfg;
        Assert.IsType<StandardSae>(sae);
        // get_mwhanna_transcoder_config_from_hf: d_model, d_feature and batch_size (as context_size) from wandb-config.yaml.
        Assert.Equal((32, 32, 40, "float32", false, "none"), (c.DIn, c.DOut, c.DSae, c.Dtype, c.ApplyBDecToInput, c.NormalizeActivations));
        Assert.Equal(("Qwen/Qwen3-0.6B", "blocks.1.mlp.hook_in", "blocks.1.hook_mlp_out", 4096, "monology/pile-uncopyrighted"),
            (c.Metadata.ModelName, c.Metadata.HookName, Extra(sae, "hook_name_out"), c.Metadata.ContextSize, c.Metadata.DatasetPath));
        Assert.False(c.Metadata.ModelFromPretrainedKwargs!["fold_ln"].GetBoolean());
        Assert.Equal("transcoder", SaeLensFormat.SaeLensArchitecture(c));
        AssertMatchesReference(sae, Fixture("mwhanna"));
        var (release, listed) = SaeReleases.Lookup("mwhanna-qwen3-0.6b-transcoders-lowl0/layer_1")!.Value;
        Assert.Equal((c.Metadata.HookName, c.Metadata.HookNameOut), SaeLensConversions.ReleaseHooks(release, listed));
    }

    [Fact]
    public void Mwhanna_14b_repo_without_config_yaml_and_with_the_misspelt_wandb_config_takes_the_model_from_the_repo_id()
    {
        Serve("mwhanna/qwen3-14b-transcoders",
            ("layer_1.safetensors", Fixture("mwhanna", "layer_1.safetensors")),
            ("wanb-config.yaml", Fixture("mwhanna", "wandb-config.yaml")));
        using var sae = SaeLoader.Load("mwhanna-qwen3-14b-transcoders/layer_1", Options);
        Assert.Equal("Qwen/Qwen3-14B", sae.Cfg.Metadata.ModelName);
        AssertMatchesReference(sae, Fixture("mwhanna"));

        _server.Repos["mwhanna/qwen3-4b-transcoders"] = new() { ["layer_1.safetensors"] = new(File.ReadAllBytes(Fixture("mwhanna", "layer_1.safetensors"))) };
        var e = Assert.Throws<SaeSharpException>(() => SaeLoader.Load("mwhanna-qwen3-4b-transcoders/layer_1", Options));
        Assert.Equal("mwhanna-qwen3-4b-transcoders/layer_1: repository 'mwhanna/qwen3-4b-transcoders' has neither wandb-config.yaml nor wanb-config.yaml", e.Message);
    }

    [Fact]
    public void Mntss_clt_layer_sums_the_layers_decoders_and_keeps_SAELens_warning_as_a_note()
    {
        Serve("mntss/clt-gemma-2-2b-2.5M",
            ("config.yaml", Fixture("mntss", "config.yaml")),
            ("W_enc_2.safetensors", Fixture("mntss", "W_enc_2.safetensors")),
            ("W_dec_2.safetensors", Fixture("mntss", "W_dec_2.safetensors")));
        using var sae = SaeLoader.Load("mntss-gemma-2-2b-2.5m-clt-as-per-layer/layer_2", Options);
        var c = sae.Cfg;
        // get_mntss_clt_layer_config_from_hf: sizes from b_dec_2 and b_enc_2, hooks from config.yaml.
        Assert.Equal((6, 6, 12, false, "none"), (c.DIn, c.DOut, c.DSae, c.ApplyBDecToInput, c.NormalizeActivations));
        Assert.Equal(("google/gemma-2-2b", "blocks.2.hook_resid_mid", "blocks.2.hook_mlp_out"),
            (c.Metadata.ModelName, c.Metadata.HookName, Extra(sae, "hook_name_out")));
        Assert.False(c.Metadata.ModelFromPretrainedKwargs!["fold_ln"].GetBoolean());
        Assert.Equal("This loads the CLT layer as a single layer transcoder by summing all decoders together. " +
            "This should only be used to find feature activations, not for reconstruction", Extra(sae, SaeLensConversions.NoteKey));
        AssertMatchesReference(sae, Fixture("mntss"));

        // sae info shows the note (and the format: SAELens's conversion_func).
        var env = new Dictionary<string, string> { ["HF_ENDPOINT"] = _server.Endpoint, ["HF_HUB_CACHE"] = _cache };
        var (exit, output, err) = SaeSharp.Tests.Cli.CliRunner.RunWithEnvironment(env, "info", "mntss-gemma-2-2b-2.5m-clt-as-per-layer/layer_2");
        Assert.True(exit == 0, err);
        Assert.Matches(@"format\W+mntss_clt_layer_transcoder", output);
        Assert.Matches(@"architecture\W+standard \(SAELens: transcoder\)", output);
        Assert.Matches(@"note\W+This loads the CLT layer as a single layer transcoder", output);
    }

    [Fact]
    public void A_missing_or_misshapen_file_is_named_in_the_error()
    {
        // mwhanna: W_enc of another width than wandb's d_model.
        string dir = Path.Combine(_work, "mw");
        Directory.CreateDirectory(dir);
        foreach (var f in new[] { "layer_1.safetensors", "config.yaml" }) File.Copy(Fixture("mwhanna", f), Path.Combine(dir, f));
        File.WriteAllText(Path.Combine(dir, "wandb-config.yaml"), File.ReadAllText(Fixture("mwhanna", "wandb-config.yaml")).Replace("value: 32", "value: 30"));
        var e = Assert.Throws<SaeSharpException>(() => SaeLensConversions.LoadMwhannaTranscoder(Path.Combine(dir, "layer_1.safetensors")));
        Assert.Contains("wandb-config.yaml: d_in=30, d_sae=40 imply 'W_enc' of shape [30, 40]", e.Message);
        Assert.Contains("layer_1.safetensors holds [32, 40]", e.Message);

        // mntss: a decoder of two dimensions is not a CLT layer's.
        string clt = Path.Combine(_work, "clt");
        Directory.CreateDirectory(clt);
        foreach (var f in new[] { "W_enc_2.safetensors", "config.yaml" }) File.Copy(Fixture("mntss", f), Path.Combine(clt, f));
        using (var w = randn(12, 6)) SafeTensors.Save(Path.Combine(clt, "W_dec_2.safetensors"), new Dictionary<string, Tensor> { ["W_dec_2"] = w });
        e = Assert.Throws<SaeSharpException>(() => SaeLensConversions.LoadMntssCltLayer(Path.Combine(clt, "W_enc_2.safetensors")));
        Assert.Equal($"{Path.Combine(clt, "W_dec_2.safetensors")}: tensor 'W_dec_2' has shape [12, 6], expected 3 dimensions", e.Message);
        File.Delete(Path.Combine(clt, "config.yaml"));
        e = Assert.Throws<SaeSharpException>(() => SaeLensConversions.LoadMntssCltLayer(Path.Combine(clt, "W_enc_2.safetensors")));
        Assert.Equal($"{Path.Combine(clt, "config.yaml")}: file not found", e.Message);

        // connor_rob_hook_z: the cfg beside the .pt is required, and its act_size must match the weights.
        const string name = "gpt2-small_L0_Hcat_z_lr1.20e-03_l11.80e+00_ds24576_bs4096_dc1.00e-06_rsanthropic_rie25000_nr4_v9";
        string hz = Path.Combine(_work, "hz");
        Directory.CreateDirectory(hz);
        File.Copy(Fixture("connor_rob_hook_z", name + ".pt"), Path.Combine(hz, name + ".pt"));
        e = Assert.Throws<SaeSharpException>(() => SaeLensConversions.LoadConnorRobHookZ(Path.Combine(hz, name + ".pt")));
        Assert.Equal($"{Path.Combine(hz, name + "_cfg.json")}: file not found", e.Message);
        File.WriteAllText(Path.Combine(hz, name + "_cfg.json"), """{"act_size": 16, "dict_size": 24, "act_name": "blocks.0.attn.hook_z"}""");
        e = Assert.Throws<SaeSharpException>(() => SaeLensConversions.LoadConnorRobHookZ(Path.Combine(hz, name + ".pt")));
        Assert.Contains("_cfg.json: d_in=16, d_sae=24 imply 'W_enc' of shape [16, 24]", e.Message);

        // deepseek_r1: the layer comes from the file name.
        File.Copy(Fixture("deepseek_r1", "DeepSeek-R1-Distill-Llama-8B-SAE-l19.pt"), Path.Combine(hz, "sae.pt"));
        e = Assert.Throws<SaeSharpException>(() => SaeLensConversions.LoadDeepSeekR1(Path.Combine(hz, "sae.pt")));
        Assert.Contains("no layer number 'l<N>' in the file name", e.Message);
    }
}
