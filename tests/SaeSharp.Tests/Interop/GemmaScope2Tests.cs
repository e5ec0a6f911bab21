using System.Text.Json;
using System.Text.Json.Nodes;
using SaeSharp.Hub;
using SaeSharp.Interop;
using SaeSharp.IO;
using SaeSharp.Saes;
using SaeSharp.Tests.Hub;
using SaeSharp.Tests.Tokenizers;
using static TorchSharp.torch;

namespace SaeSharp.Tests.Interop;

/// <summary>
/// Gemma Scope 2 (SAELens 6.37.6's <c>gemma_3</c> conversion, on Gemma 3 models), loaded by release name through the fake
/// hub and by path from tests/data/saelens_conversions/gemma_scope_2 (written by
/// bench/reference/saelens_conversions_fixture.py, whose references follow SAELens's JumpReLU, transcoder and
/// SkipTranscoder formulas). The config values expected are those of <c>get_gemma_3_config_from_hf</c> and
/// <c>_infer_gemma_3_raw_cfg_dict</c> in sae_lens/loading/pretrained_sae_loaders.py at 69c4c62b (and SAELens's own tests
/// of them), read by hand; the hooks are SaeSharp's TransformerLens names for the HF hook points SAELens records.
/// </summary>
public sealed class GemmaScope2Tests : FakeHubTestBase
{
    private SaeLoadOptions Options => new() { Hub = Hub };

    private static string Fixture(params string[] parts) => TestPaths.Data(["saelens_conversions", "gemma_scope_2", .. parts]);

    private static string? Meta(Sae sae, string key) =>
        sae.Cfg.Metadata.Extra?.GetValueOrDefault(key) is { ValueKind: JsonValueKind.String } v ? v.GetString() : null;

    /// <summary>A copy of a fixture folder to spoil.</summary>
    private string Copy(string folder)
    {
        string dir = Path.Combine(_work, Guid.NewGuid().ToString("N"), Path.GetFileName(Path.GetDirectoryName(folder))!, Path.GetFileName(folder));
        Directory.CreateDirectory(dir);
        foreach (var f in Directory.GetFiles(folder)) File.Copy(f, Path.Combine(dir, Path.GetFileName(f)));
        return dir;
    }

    [Fact]
    public void A_resid_post_folder_with_config_json_loads_by_release_and_by_path()
    {
        const string path = "resid_post/layer_12_width_16k_l0_small";
        string folder = Fixture("resid_post", "layer_12_width_16k_l0_small");
        Serve("google/gemma-scope-2-270m-pt", path, folder, "params.safetensors", "config.json");
        var resolved = SaeSource.Resolve("gemma-scope-2-270m-pt-res/layer_12_width_16k_l0_small", Hub);
        Assert.Equal("gemma_3", SaeLoader.DetectFormat(resolved));
        foreach (var sae in new[] { SaeLoader.Load(resolved, Options), SaeLoader.Load(folder) })
            using (sae)
            {
                Assert.IsType<JumpReluSae>(sae);
                var c = sae.Cfg;
                Assert.Equal(("jumprelu", 6, 16, (int?)null, "float32", false, "none", "none"),
                    (SaeLensFormat.SaeLensArchitecture(c), c.DIn, c.DSae, c.DOut, c.Dtype, c.ApplyBDecToInput, c.NormalizeActivations, c.ReshapeActivations));
                var m = c.Metadata;
                // config.json's model_name "gemma-v3-270m-pt": google/ prefixed, -v3 → -3, and -pt dropped for 270m.
                Assert.Equal(("google/gemma-3-270m", "blocks.12.hook_resid_post", (string?)null, 1024, true, "monology/pile-uncopyrighted"),
                    (m.ModelName, m.HookName, m.HookNameOut, m.ContextSize, m.PrependBos, m.DatasetPath));
                Assert.Equal("model.layers.12.output", Meta(sae, "hf_hook_name"));
                Assert.False(sae.HasSkip);
                SaeLensConversionTests.AssertMatchesReference(sae, folder);
            }
        Assert.Equal("Gemma Scope 2", SaeLoader.DetectFormat(folder));
    }

    [Fact]
    public void An_affine_transcoder_is_a_jumprelu_skip_transcoder_and_saves_as_SAELens_writes_one()
    {
        const string path = "transcoder_all/layer_5_width_16k_l0_big_affine";
        string folder = Fixture("transcoder_all", "layer_5_width_16k_l0_big_affine");
        Serve("google/gemma-scope-2-1b-pt", path, folder, "params.safetensors", "config.json");
        const string spec = "gemma-scope-2-1b-pt-transcoders-all/layer_5_width_16k_l0_big_affine";
        using var sae = SaeLoader.Load(spec, Options);
        var c = sae.Cfg;
        Assert.IsType<JumpReluSae>(sae);
        Assert.True(sae.HasSkip);
        Assert.Equal(("jumprelu_skip_transcoder", 6, 16, (int?)6, false), (c.Architecture, c.DIn, c.DSae, c.DOut, c.ApplyBDecToInput));
        Assert.Equal("jumprelu_skip_transcoder", SaeLensFormat.SaeLensArchitecture(c));
        // SAELens: hook_name blocks.5.hook_mlp_in (hf pre_feedforward_layernorm.output), which is SaeSharp's ln2.hook_normalized.
        Assert.Equal(("google/gemma-3-1b-pt", "blocks.5.ln2.hook_normalized", "blocks.5.hook_mlp_out"), (c.Metadata.ModelName, c.Metadata.HookName, c.Metadata.HookNameOut));
        Assert.Equal(("model.layers.5.pre_feedforward_layernorm.output", "model.layers.5.post_feedforward_layernorm.output"),
            (Meta(sae, "hf_hook_name"), Meta(sae, "hf_hook_name_out")));
        var (release, listed) = SaeReleases.Lookup(spec)!.Value;
        Assert.Equal((c.Metadata.HookName, c.Metadata.HookNameOut), SaeLensConversions.ReleaseHooks(release, listed));
        SaeLensConversionTests.AssertMatchesReference(sae, folder);

        // W_skip is affine_skip_connection as stored, [d_out, d_in], applied as x·W_skipᵀ to the raw input.
        var stored = SafeTensors.Load(Path.Combine(folder, "params.safetensors"));
        try
        {
            Assert.True(stored["affine_skip_connection"].equal(sae.WSkip.detach()).all().item<bool>(), "W_skip is affine_skip_connection as stored");
        }
        finally
        {
            foreach (var t in stored.Values) t.Dispose();
        }

        // Saved, it is SAELens's jumprelu_skip_transcoder: its cfg fields and state_dict keys, and loads back the same.
        string dir = Path.Combine(_work, "resaved");
        SaeLensFormat.Save(sae, dir);
        var cfg = JsonNode.Parse(File.ReadAllText(Path.Combine(dir, "cfg.json")))!.AsObject();
        Assert.Equal(("jumprelu_skip_transcoder", 6, 16, 6, false, "none"), ((string?)cfg["architecture"], (int)cfg["d_in"]!, (int)cfg["d_sae"]!,
            (int)cfg["d_out"]!, (bool)cfg["apply_b_dec_to_input"]!, (string?)cfg["normalize_activations"]));
        var meta = cfg["metadata"]!;
        Assert.Equal(("blocks.5.ln2.hook_normalized", "blocks.5.hook_mlp_out", "model.layers.5.pre_feedforward_layernorm.output",
                "model.layers.5.post_feedforward_layernorm.output", "google/gemma-3-1b-pt"),
            ((string?)meta["hook_name"], (string?)meta["hook_name_out"], (string?)meta["hf_hook_name"], (string?)meta["hf_hook_name_out"], (string?)meta["model_name"]));
        using (var f = SafeTensorsFile.Open(Path.Combine(dir, "sae_weights.safetensors")))
            Assert.Equal(["W_dec", "W_enc", "W_skip", "b_dec", "b_enc", "threshold"], f.Names.Order(StringComparer.Ordinal));
        using var again = SaeLoader.Load(dir);
        Assert.IsType<JumpReluSae>(again);
        Assert.True(again.HasSkip);
        SaeLensConversionTests.AssertMatchesReference(again, folder);
    }

    [Fact]
    public void A_transcoder_without_config_json_is_inferred_from_the_repo_and_folder_name()
    {
        const string path = "transcoder/layer_13_width_16k_l0_big";
        string folder = Fixture("transcoder", "layer_13_width_16k_l0_big");
        Serve("google/gemma-scope-2-1b-pt", path, folder, "params.safetensors");
        using var sae = SaeLoader.Load("gemma-scope-2-1b-pt-transcoders/transcoder/layer_13_width_16k_l0_big", Options);
        var c = sae.Cfg;
        // _infer_gemma_3_raw_cfg_dict: not "affine" → affine_connection false → jumprelu_transcoder; the model from the repo id.
        Assert.IsType<JumpReluSae>(sae);
        Assert.False(sae.HasSkip);
        Assert.Equal(("jumprelu_transcoder", 6, 16, (int?)6), (SaeLensFormat.SaeLensArchitecture(c), c.DIn, c.DSae, c.DOut));
        Assert.Equal(("google/gemma-3-1b-pt", "blocks.13.ln2.hook_normalized", "blocks.13.hook_mlp_out"), (c.Metadata.ModelName, c.Metadata.HookName, c.Metadata.HookNameOut));
        Assert.Equal(("model.layers.13.pre_feedforward_layernorm.output", "model.layers.13.post_feedforward_layernorm.output"),
            (Meta(sae, "hf_hook_name"), Meta(sae, "hf_hook_name_out")));
        // The file's extra tensor is ignored, as SAELens takes only the keys it names.
        SaeLensConversionTests.AssertMatchesReference(sae, folder);
        Assert.True(_server.Requests.Any(r => r.Path.Contains(path + "/config.json")), "config.json was asked for first");

        // As an hf: folder: the model inferred from the cache folder models--google--gemma-scope-2-1b-pt.
        using (var hub = SaeLoader.Load("hf:google/gemma-scope-2-1b-pt/" + path, Options))
        {
            Assert.Equal(("google/gemma-3-1b-pt", "blocks.13.ln2.hook_normalized", (int?)6), (hub.Cfg.Metadata.ModelName, hub.Cfg.Metadata.HookName, hub.Cfg.DOut));
            SaeLensConversionTests.AssertMatchesReference(hub, folder);
        }

        // By path: the same, but no repo id names the model.
        using var local = SaeLoader.Load(folder);
        Assert.Equal(((string?)null, "blocks.13.ln2.hook_normalized", "blocks.13.hook_mlp_out"), (local.Cfg.Metadata.ModelName, local.Cfg.Metadata.HookName, local.Cfg.Metadata.HookNameOut));
        SaeLensConversionTests.AssertMatchesReference(local, folder);
    }

    [Fact]
    public void A_clt_file_sums_its_decoders_and_loads_from_the_hub_and_by_path()
    {
        string file = Fixture("clt", "layer_3_width_16k_l0_medium.safetensors");
        Serve("google/gemma-scope-2-270m-pt", "clt", Fixture("clt"), "layer_3_width_16k_l0_medium.safetensors");
        foreach (var spec in new[] { "hf:google/gemma-scope-2-270m-pt/clt/layer_3_width_16k_l0_medium.safetensors", file })
        {
            using var sae = SaeLoader.Load(spec, Options);
            var c = sae.Cfg;
            Assert.IsType<JumpReluSae>(sae);
            Assert.Equal(("jumprelu_transcoder", 6, 16, (int?)6), (SaeLensFormat.SaeLensArchitecture(c), c.DIn, c.DSae, c.DOut));
            Assert.Equal(("blocks.3.ln2.hook_normalized", "blocks.3.hook_mlp_out"), (c.Metadata.HookName, c.Metadata.HookNameOut));
            // From the hub cache folder models--google--gemma-scope-2-270m-pt: gemma-3-270m-pt, -pt dropped for 270m.
            Assert.Equal(spec == file ? null : "google/gemma-3-270m", c.Metadata.ModelName);
            Assert.Equal(SaeLensConversions.CltLayerNote, Meta(sae, SaeLensConversions.NoteKey));
            SaeLensConversionTests.AssertMatchesReference(sae, Fixture("clt"));
        }
    }

    /// <summary>SAELens's rules on folder names, on the release table: every gemma_3 SAE's hooks, read by hand from
    /// get_gemma_3_config_from_hf (first layer_N; resid_post, attn_out, mlp_out, else transcoder → MLP in/out).</summary>
    [Fact]
    public void Every_gemma_3_release_SAE_has_the_hooks_of_its_folder_name()
    {
        var releases = SaeReleases.All.Where(r => r.Conversion == "gemma_3").ToList();
        Assert.Equal(75, releases.Count);
        foreach (var r in releases)
            foreach (var s in r.Saes)
            {
                string n = System.Text.RegularExpressions.Regex.Match(s.Path, @"layer_(\d+)").Groups[1].Value;
                string kind = s.Path.Split('/')[0];
                (string?, string?) expected = kind switch
                {
                    "resid_post" or "resid_post_all" => ($"blocks.{n}.hook_resid_post", null),
                    "attn_out" or "attn_out_all" => ($"blocks.{n}.attn.hook_z", null),
                    "mlp_out" or "mlp_out_all" => ($"blocks.{n}.hook_mlp_out", null),
                    "transcoder" or "transcoder_all" => ($"blocks.{n}.ln2.hook_normalized", $"blocks.{n}.hook_mlp_out"),
                    _ => throw new Xunit.Sdk.XunitException($"{r.Release}: unexpected folder {s.Path}"),
                };
                Assert.Equal(expected, SaeLensConversions.ReleaseHooks(r, s));
            }
        Assert.Equal("google/gemma-3-270m", SaeReleases.Find("gemma-scope-2-270m-pt-res")!.Model);
    }

    [Fact]
    public void Bad_gemma_scope_2_files_are_refused_naming_the_problem()
    {
        // params.safetensors without threshold
        string dir = Copy(Fixture("resid_post", "layer_12_width_16k_l0_small"));
        string weights = Path.Combine(dir, "params.safetensors");
        var w = SafeTensors.Load(weights);
        w.Remove("threshold", out var th);
        th!.Dispose();
        SafeTensors.Save(weights, w);
        foreach (var t in w.Values) t.Dispose();
        var e = Assert.Throws<SaeSharpException>(() => SaeLoader.Load(dir));
        Assert.StartsWith($"{weights}: missing array 'threshold' (expected shape [16]; keys: ", e.Message);

        // an affine transcoder without affine_skip_connection
        dir = Copy(Fixture("transcoder_all", "layer_5_width_16k_l0_big_affine"));
        weights = Path.Combine(dir, "params.safetensors");
        w = SafeTensors.Load(weights);
        w.Remove("affine_skip_connection", out var skip);
        skip!.Dispose();
        SafeTensors.Save(weights, w);
        foreach (var t in w.Values) t.Dispose();
        e = Assert.Throws<SaeSharpException>(() => SaeLoader.Load(dir));
        Assert.StartsWith($"{weights}: missing tensor 'affine_skip_connection' ({Path.Combine(dir, "config.json")} says affine_connection", e.Message);

        // a config.json of another architecture (SAELens: "Unexpected architecture in Gemma 3 config")
        dir = Copy(Fixture("resid_post", "layer_12_width_16k_l0_small"));
        string cfg = Path.Combine(dir, "config.json");
        File.WriteAllText(cfg, File.ReadAllText(cfg).Replace("\"jump_relu\"", "\"topk\""));
        e = Assert.Throws<SaeSharpException>(() => SaeLoader.Load(dir));
        Assert.StartsWith($"{cfg}: unexpected architecture 'topk' in a Gemma Scope 2 config", e.Message);

        // a folder name with no hook kind, and no config.json to fall back on
        dir = Path.Combine(_work, "elsewhere", "layer_2_width_16k");
        Directory.CreateDirectory(dir);
        File.Copy(Path.Combine(Fixture("transcoder", "layer_13_width_16k_l0_big"), "params.safetensors"), Path.Combine(dir, "params.safetensors"));
        e = Assert.Throws<SaeSharpException>(() => SaeLoader.Load(dir));
        Assert.Equal("elsewhere/layer_2_width_16k: could not infer the hook type from the folder name (resid_post, attn_out, mlp_out, transcoder or clt)", e.Message);
    }

    /// <summary>Every architecture SAELens 6.37.6 registers (<c>register_sae_class</c> / <c>register_sae_training_class</c>
    /// in sae_lens/__init__.py at 69c4c62b) loads: none is left in the unsupported table, and a cfg.json naming an
    /// architecture SAELens does not have is refused listing the registered ones.</summary>
    [Fact]
    public void Every_SAELens_637_architecture_loads_and_an_unknown_one_is_refused_naming_the_known_ones()
    {
        Assert.Empty(SaeLensFormat.UnsupportedSaeLensArchitectures);
        string[] saeLens = ["standard", "gated", "topk", "jumprelu", "batchtopk", "matryoshka_batchtopk", "transcoder", "skip_transcoder",
            "jumprelu_transcoder", "jumprelu_skip_transcoder", "temporal", "matching_pursuit"];
        Assert.Equal(saeLens.Order(StringComparer.Ordinal),
            SaeLensFormat.SupportedSaeLensArchitectures.Where(n => !n.StartsWith("test_", StringComparison.Ordinal)).Order(StringComparer.Ordinal));
        string dir = Path.Combine(_work, "no_such_arch");
        Directory.CreateDirectory(dir);
        string cfgPath = Path.Combine(dir, "cfg.json");
        File.WriteAllText(cfgPath, """
            {"architecture": "no_such_arch", "d_in": 4, "d_sae": 8, "dtype": "float32", "device": "cpu", "apply_b_dec_to_input": true,
             "normalize_activations": "none", "reshape_activations": "none", "metadata": {"sae_lens_version": "6.37.6", "hook_name": "blocks.0.hook_resid_post"}}
            """);
        File.Copy(Path.Combine(TestPaths.Data("saelens_conversions", "saelens_transcoder"), "sae_weights.safetensors"), Path.Combine(dir, "sae_weights.safetensors"));
        var e = Assert.Throws<SaeSharpException>(() => SaeLoader.Load(dir));
        Assert.Contains("unknown architecture 'no_such_arch'", e.Message);
        Assert.Contains("matching_pursuit", e.Message);
        Assert.Contains("temporal", e.Message);
    }
}
