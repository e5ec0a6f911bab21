using System.Text.Json.Nodes;
using SaeSharp.Interop;
using SaeSharp.IO;
using SaeSharp.Saes;
using static TorchSharp.torch;

namespace SaeSharp.Tests.Interop;

public class SaeLensFormatTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("saelens-").FullName;
    public void Dispose() => Directory.Delete(_dir, true);

    private static Sae RandomSae(int dIn = 6, int dSae = 10)
    {
        var sae = SaeFactory.Create(new SaeConfig
        {
            DIn = dIn, DSae = dSae,
            Metadata = new SaeMetadata { HookName = "blocks.3.hook_mlp_out", ModelName = "gpt2", ContextSize = 128, DatasetPath = "data.txt" },
        });
        sae.InitializeWeights(new Generator(7));
        using (no_grad()) { sae.BEnc.copy_(randn(dSae, generator: new Generator(8)) * 0.1); sae.BDec.copy_(randn(dIn, generator: new Generator(9))); }
        return sae;
    }

    [Fact]
    public void SaveLoadReproducesEncodeAndDecodeExactly()
    {
        var sae = RandomSae();
        var sparsity = tensor(Enumerable.Range(0, 10).Select(i => -(float)i / 3).ToArray());
        SaeLensFormat.Save(sae, _dir, sparsity);
        var loaded = SaeLensFormat.Load(_dir);
        var x = randn(5, 6, generator: new Generator(10));
        var (y1, f1) = sae.Run(x);
        var (y2, f2) = loaded.Run(x);
        Assert.True(f1.equal(f2).all().item<bool>());
        Assert.True(y1.equal(y2).all().item<bool>());
        Assert.Equal("blocks.3.hook_mlp_out", loaded.Cfg.Metadata.HookName);
        Assert.True(SaeLensFormat.LoadSparsity(_dir)!.equal(sparsity).all().item<bool>());
    }

    /// <summary>SAELens saves the state dict in the SAE's dtype, the one cfg.json names: a bfloat16 or float16 SAE gives
    /// BF16 or F16 tensors in sae_weights.safetensors (the safetensors dtype codes), not float32 ones.</summary>
    [Theory]
    [InlineData("bfloat16", "BF16")]
    [InlineData("float16", "F16")]
    public void Save_writes_the_weights_in_the_dtype_the_cfg_names(string dtype, string code)
    {
        using (var sae = SaeFactory.Create(new SaeConfig { DIn = 4, DSae = 8, Dtype = dtype }))
            SaeLensFormat.Save(sae, _dir);
        Assert.Equal(dtype, JsonNode.Parse(File.ReadAllText(Path.Combine(_dir, "cfg.json")))!["dtype"]!.GetValue<string>());
        using var f = SafeTensorsFile.Open(Path.Combine(_dir, "sae_weights.safetensors"));
        Assert.Equal(["W_dec", "W_enc", "b_dec", "b_enc"], f.Names.Order(StringComparer.Ordinal));
        Assert.All(f.Names, n => Assert.Equal(code, f.Info(n).Dtype));
    }

    [Fact]
    public void AnArchitectureGivenForASaeLensFolderIsAnErrorNotIgnored()
    {
        SaeLensFormat.Save(RandomSae(), _dir);
        var e = Assert.Throws<SaeSharpException>(() => SaeLoader.Load(_dir, new SaeLoadOptions { Architecture = "topk" }));
        Assert.Contains("--arch topk is for a dictionary_learning ae.pt", e.Message);
        Assert.Contains("SAELens", e.Message);
        using var loaded = SaeLoader.Load(_dir);
        Assert.Equal("standard", loaded.Cfg.Architecture);
    }

    [Fact]
    public void CfgJsonHasSaeLensV6Keys()
    {
        SaeLensFormat.Save(RandomSae(), _dir);
        var cfg = JsonNode.Parse(File.ReadAllText(Path.Combine(_dir, "cfg.json")))!.AsObject();
        foreach (var key in new[] { "architecture", "d_in", "d_sae", "dtype", "apply_b_dec_to_input", "normalize_activations", "metadata" })
            Assert.True(cfg.ContainsKey(key), key);
        var meta = cfg["metadata"]!.AsObject();
        foreach (var key in new[] { "hook_name", "model_name", "context_size", "prepend_bos", "dataset_path" })
            Assert.True(meta.ContainsKey(key), key);
        Assert.Equal("standard", cfg["architecture"]!.GetValue<string>());
        using var w = SafeTensorsFile.Open(Path.Combine(_dir, "sae_weights.safetensors"));
        Assert.Equal(new[] { "W_dec", "W_enc", "b_dec", "b_enc" }, w.Names.OrderBy(n => n, StringComparer.Ordinal));
    }

    [Fact]
    public void Sae_lens_version_is_the_followed_release_for_a_new_cfg_and_kept_for_a_SAELens_one()
    {
        // SAELens's handle_config_defaulting converts a cfg whose metadata.sae_lens_version is missing or < 6.0.0-rc.0 as
        // pre-6.0: a cfg SaeSharp writes must carry a v6 version, the release whose layout it follows.
        SaeLensFormat.Save(RandomSae(), _dir);
        var cfgPath = Path.Combine(_dir, "cfg.json");
        Assert.Equal("6.37.6", JsonNode.Parse(File.ReadAllText(cfgPath))!["metadata"]!["sae_lens_version"]!.GetValue<string>());
        Assert.Equal("6.37.6", SaeSharp.Data.PretokenizedMetadata.FormatVersion);
        // A cfg SAELens wrote keeps its own version (and training version) through load and save.
        var node = JsonNode.Parse(File.ReadAllText(cfgPath))!;
        node["metadata"]!["sae_lens_version"] = "6.5.1";
        node["metadata"]!["sae_lens_training_version"] = "6.5.0";
        File.WriteAllText(cfgPath, node.ToJsonString());
        string again = Path.Combine(_dir, "again");
        using (var loaded = SaeLensFormat.Load(_dir)) SaeLensFormat.Save(loaded, again);
        var meta = JsonNode.Parse(File.ReadAllText(Path.Combine(again, "cfg.json")))!["metadata"]!;
        Assert.Equal("6.5.1", meta["sae_lens_version"]!.GetValue<string>());
        Assert.Equal("6.5.0", meta["sae_lens_training_version"]!.GetValue<string>());
    }

    [Fact]
    public void Pre6ConfigWithBooleanNormalisationAndScalerIsFolded()
    {
        var sae = RandomSae();
        SafeTensors.Save(Path.Combine(_dir, "sae_weights.safetensors"), sae.state_dict().ToDictionary(kv => kv.Key, kv => kv.Value));
        File.WriteAllText(Path.Combine(_dir, "cfg.json"), """
            {"d_in": 6, "d_sae": 10, "dtype": "float32", "device": "cpu", "hook_point": "blocks.0.hook_resid_pre",
             "model_name": "gpt2", "activation_fn_str": "relu", "apply_b_dec_to_input": true,
             "normalize_activations": true, "context_size": 64, "prepend_bos": false}
            """);
        File.WriteAllText(Path.Combine(_dir, "activation_scaler.json"), """{"scaling_factor": 0.25}""");
        var loaded = SaeLensFormat.Load(_dir);
        Assert.Equal("blocks.0.hook_resid_pre", loaded.Cfg.Metadata.HookName);
        Assert.Equal("none", loaded.Cfg.NormalizeActivations);
        Assert.False(loaded.Cfg.Metadata.PrependBos);
        // The loaded SAE on raw x equals the original on 0.25·x, rescaled back.
        var x = randn(4, 6, generator: new Generator(11)) * 8;
        var (yScaled, fScaled) = sae.Run(x * 0.25);
        var (yRaw, fRaw) = loaded.Run(x);
        Assert.True(fRaw.allclose(fScaled, rtol: 1e-4, atol: 1e-5));
        Assert.True(yRaw.allclose(yScaled / 0.25, rtol: 1e-4, atol: 1e-4));
    }

    /// <summary>Keys a cfg.json leaves out take SAELens's defaults (<c>handle_config_defaulting</c> for pre-6 configs,
    /// the <c>SAEConfig</c> fields for 6): apply_b_dec_to_input and prepend_bos true, a ReLU "standard" SAE.</summary>
    [Theory]
    [InlineData("""{"d_in": 2, "d_sae": 2, "dtype": "float32", "device": "cpu", "hook_point": "blocks.0.hook_resid_pre", "model_name": "gpt2"}""")]
    [InlineData("""{"architecture": "standard", "d_in": 2, "d_sae": 2, "metadata": {"hook_name": "blocks.0.hook_resid_pre"}}""")]
    public void Omitted_cfg_keys_take_the_SAELens_defaults(string cfgJson)
    {
        SafeTensors.Save(Path.Combine(_dir, "sae_weights.safetensors"), new Dictionary<string, Tensor>
        {
            ["W_enc"] = eye(2), ["b_enc"] = zeros(2), ["W_dec"] = eye(2), ["b_dec"] = tensor(new[] { 1f, -1f }),
        });
        File.WriteAllText(Path.Combine(_dir, "cfg.json"), cfgJson);
        using var sae = SaeLensFormat.Load(_dir);
        Assert.Equal(SaeArchitectures.Standard, sae.Cfg.Architecture);
        Assert.True(sae.Cfg.ApplyBDecToInput);
        Assert.True(sae.Cfg.Metadata.PrependBos);
        Assert.Equal("none", sae.Cfg.NormalizeActivations);
        // f = ReLU((x − b_dec)·I): (3, 0) − (1, −1) = (2, 1); without b_dec subtracted it would be (3, 0).
        Assert.Equal(new[] { 2f, 1f }, SaeSharp.Tests.Saes.SaeTestUtil.F(sae.Encode(tensor(new[,] { { 3f, 0f } }))));
    }

    [Fact]
    public void MissingAndMisshapedTensorsNameTheKey()
    {
        var sae = RandomSae();
        SaeLensFormat.Save(sae, _dir);
        var path = Path.Combine(_dir, "sae_weights.safetensors");
        var w = sae.state_dict().ToDictionary(kv => kv.Key, kv => kv.Value);
        w.Remove("b_enc");
        SafeTensors.Save(path, w);
        var e = Assert.Throws<SaeSharpException>(() => SaeLensFormat.Load(_dir));
        Assert.Contains("'b_enc'", e.Message);
        w["b_enc"] = zeros(11);
        SafeTensors.Save(path, w);
        e = Assert.Throws<SaeSharpException>(() => SaeLensFormat.Load(_dir));
        Assert.Contains("'b_enc'", e.Message);
        Assert.Contains("[11]", e.Message);
    }

    [Fact]
    public void AFolderWithTwoFormatsIsRefusedNamingBoth()
    {
        SaeLensFormat.Save(RandomSae(4, 8), _dir);
        GemmaScopeTests.WriteParams(_dir, dIn: 4, dSae: 8, seed: 1);
        var e = Assert.Throws<SaeSharpException>(() => SaeLoader.Load(_dir));
        Assert.Contains($"{_dir}: holds the files of several SAE formats (SAELens, Gemma Scope)", e.Message);
        using var single = SaeLoader.Load(Path.Combine(_dir, "params.npz"));
        Assert.Equal("jumprelu", single.Cfg.Architecture);
    }

    [Fact]
    public void TheWeightsFileItselfLoadsItsFolder()
    {
        // hf:ORG/REPO/FOLDER/sae_weights.safetensors resolves to the file (with cfg.json fetched beside it).
        var sae = RandomSae();
        SaeLensFormat.Save(sae, _dir);
        string file = Path.Combine(_dir, "sae_weights.safetensors");
        Assert.Equal("SAELens", SaeLoader.DetectFormat(file));
        using var loaded = SaeLoader.Load(file);
        var x = randn(5, 6, generator: new Generator(10));
        Assert.True(sae.forward(x).equal(loaded.forward(x)).all().item<bool>());
    }

    [Fact]
    public void UnknownArchitectureIsAClearError()
    {
        SaeLensFormat.Save(RandomSae(), _dir);
        var cfgPath = Path.Combine(_dir, "cfg.json");
        File.WriteAllText(cfgPath, File.ReadAllText(cfgPath).Replace("\"standard\"", "\"mystery\""));
        var e = Assert.Throws<SaeSharpException>(() => SaeLensFormat.Load(_dir));
        Assert.Contains("mystery", e.Message);
    }

    [Theory]
    [InlineData("architecture")]
    [InlineData("d_in")]
    [InlineData("d_sae")]
    public void A_SAELens_6_cfg_without_a_required_key_is_an_error_naming_it_not_a_default(string key)
    {
        // SAELens 6 reads cfg_dict["architecture"], d_in and d_sae without defaults (KeyError); a TopK SAE whose cfg lost
        // its architecture loaded as a ReLU "standard" SAE, and a lost d_in read as "d_in must be positive, got 0".
        using (var topk = SaeFactory.Create(new SaeConfig { Architecture = SaeArchitectures.TopK, DIn = 6, DSae = 10, K = 2 }))
            SaeLensFormat.Save(topk, _dir);
        var cfgPath = Path.Combine(_dir, "cfg.json");
        var cfg = (System.Text.Json.Nodes.JsonObject)System.Text.Json.Nodes.JsonNode.Parse(File.ReadAllText(cfgPath))!;
        Assert.True(cfg.Remove(key));
        File.WriteAllText(cfgPath, cfg.ToJsonString());
        var e = Assert.Throws<SaeSharpException>(() => SaeLensFormat.Load(_dir));
        Assert.Contains($"cfg.json: missing '{key}'", e.Message);
    }

    [Theory]
    [InlineData("k", "\"4\"", "'k' is \"4\", a value of the wrong type")]
    [InlineData("d_in", "16.5", "'d_in' is 16.5, a value of the wrong type")]
    public void A_cfg_value_of_the_wrong_type_names_the_key_and_value(string key, string json, string expected)
    {
        using (var topk = SaeFactory.Create(new SaeConfig { Architecture = SaeArchitectures.TopK, DIn = 6, DSae = 10, K = 2 }))
            SaeLensFormat.Save(topk, _dir);
        var cfgPath = Path.Combine(_dir, "cfg.json");
        var cfg = (System.Text.Json.Nodes.JsonObject)System.Text.Json.Nodes.JsonNode.Parse(File.ReadAllText(cfgPath))!;
        cfg[key] = System.Text.Json.Nodes.JsonNode.Parse(json);
        File.WriteAllText(cfgPath, cfg.ToJsonString());
        var e = Assert.Throws<SaeSharpException>(() => SaeLensFormat.Load(_dir));
        Assert.Contains(expected, e.Message);
        Assert.DoesNotContain("System.", e.Message);
    }

    [Fact]
    public void An_integer_tensor_where_a_weight_belongs_is_an_error_not_converted()
    {
        using (var sae = RandomSae()) SaeLensFormat.Save(sae, _dir);
        string weightsPath = Path.Combine(_dir, "sae_weights.safetensors");
        var weights = SaeSharp.IO.SafeTensors.Load(weightsPath);
        var asInt = weights["W_enc"].to(ScalarType.Int32);
        weights["W_enc"].Dispose();
        weights["W_enc"] = asInt;
        SaeSharp.IO.SafeTensors.Save(weightsPath, weights);
        foreach (var t in weights.Values) t.Dispose();
        var e = Assert.Throws<SaeSharpException>(() => SaeLensFormat.Load(_dir));
        Assert.Contains("tensor 'W_enc' is Int32, expected floating point", e.Message);
    }
    [Fact]
    public void Save_to_a_path_that_is_a_file_says_a_folder_is_expected()
    {
        string file = Path.Combine(_dir, "not-a-folder.bin");
        File.WriteAllText(file, "x");
        using var sae = SaeFactory.Create(new SaeConfig { DIn = 4, DSae = 8 });
        var e = Assert.Throws<SaeSharpException>(() => SaeLensFormat.Save(sae, file));
        Assert.Contains(file, e.Message, StringComparison.Ordinal);
        Assert.Contains("folder is expected", e.Message, StringComparison.Ordinal);
        Assert.Equal("x", File.ReadAllText(file));
        // A path under a file cannot be a folder either.
        var under = Assert.Throws<SaeSharpException>(() => SaeLensFormat.Save(sae, Path.Combine(file, "sae")));
        Assert.Contains("folder", under.Message, StringComparison.Ordinal);
    }

    /// <summary>A disposed SAE's state_dict is empty: saving it over a saved SAE used to replace the weights with an empty
    /// file. It is refused before anything is written, and the saved SAE is intact.</summary>
    [Fact]
    public void Saving_a_disposed_sae_is_refused_and_leaves_the_folder_as_it_was()
    {
        string dir = Path.Combine(_dir, "sae");
        using (var live = RandomSae()) SaeLensFormat.Save(live, dir);
        byte[] weights = File.ReadAllBytes(Path.Combine(dir, "sae_weights.safetensors"));
        var sae = RandomSae();
        sae.Dispose();
        Assert.Throws<ObjectDisposedException>(() => SaeLensFormat.Save(sae, dir));
        Assert.Throws<ObjectDisposedException>(() => SaeLensFormat.Save(sae, Path.Combine(_dir, "new")));
        Assert.Equal(weights, File.ReadAllBytes(Path.Combine(dir, "sae_weights.safetensors")));
        Assert.False(Directory.Exists(Path.Combine(_dir, "new")));
        using var back = SaeLensFormat.Load(dir);
        Assert.Equal(10, back.Cfg.DSae);
    }
}
