using SaeSharp.Interop;
using SaeSharp.IO;
using SaeSharp.Saes;
using SaeSharp.Tests.Interop;
using static TorchSharp.torch;
using static SaeSharp.Tests.Saes.CrossLayerTranscoderTests;

namespace SaeSharp.Tests.Saes;

/// <summary>
/// circuit-tracer's transcoder sets (one per-layer transcoder per layer, config.yaml <c>model_kind: transcoder_set</c>)
/// loaded as a <see cref="CrossLayerTranscoder"/> with <see cref="CrossLayerTranscoderConfig.PerLayer"/>: against the loop
/// reference of the CLT whose off-diagonal decoders are zero, and against each layer's file loaded as an ordinary SAE.
/// </summary>
public class TranscoderSetTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("tset-").FullName;

    public void Dispose()
    {
        Directory.Delete(_dir, true);
        GC.SuppressFinalize(this);
    }

    [Fact]
    public void Top_k_sets_keep_each_rows_k_largest_pre_activations_without_relu_as_circuit_tracer()
    {
        var r = CltReference.Random(3, 6, 5, seed: 21, threshold: false, skip: false).ZeroOffDiagonal();
        string folder = Path.Combine(_dir, "topk");
        r.WriteTranscoderSet(folder, threshold: false);
        string config = Path.Combine(folder, "config.yaml");
        string plain = File.ReadAllText(config);
        File.WriteAllText(config, plain + "activation: topk\nk: 2\n");
        using var set = CrossLayerTranscoderLoader.Load(folder, CrossLayerTranscoderLoadOptions.Eager());
        using var lazy = CrossLayerTranscoderLoader.Load(folder, new CrossLayerTranscoderLoadOptions { LazyEncoder = true });
        Assert.Equal((2, false), (set.Cfg.TopK, set.Cfg.JumpRelu));
        var rnd = new Random(4);
        var xs = Enumerable.Range(0, 3 * 4 * 5).Select(_ => rnd.NextDouble() * 2 - 1).ToArray();
        using var x = tensor(xs.Select(v => (float)v).ToArray()).view(3, 4, 5);
        int negativeKept = 0;
        for (int l = 0; l < 3; l++)
        {
            using var f = set.EncodeLayer(x[l], l);
            for (int p = 0; p < 4; p++)
            {
                // By hand: pre = x·W_enc[k] + b_enc[k]; the two largest stay as they are (negative ones too), the rest are 0.
                var pre = Enumerable.Range(0, 6).Select(k => Enumerable.Range(0, 5).Sum(e => xs[(l * 4 + p) * 5 + e] * r.WEnc[l][k][e]) + r.BEnc[l][k]).ToArray();
                var top = pre.Select((v, k) => (v, k)).OrderByDescending(t => t.v).Take(2).Select(t => t.k).ToHashSet();
                for (int k = 0; k < 6; k++) Assert.Equal(top.Contains(k) ? pre[k] : 0, f[p, k].item<float>(), 5);
                negativeKept += top.Count(k => pre[k] < 0);
            }
        }
        Assert.True(negativeKept > 0, "the case should keep a negative pre-activation (no ReLU, as circuit-tracer's TopK)");
        using (var a = set.forward(x))
        using (var b = lazy.forward(x))
            Assert.True(a.eq(b).all().item<bool>(), "lazy differs from eager");
        using (var sae = set.LayerTranscoder(1)) Assert.Equal((SaeArchitectures.TopK, (int?)2), (sae.Cfg.Architecture, sae.Cfg.K));

        // k from layer 0's file (circuit-tracer's SingleLayerTranscoder.to_safetensors writes a 'k' tensor).
        File.WriteAllText(config, plain + "activation: topk\n");
        string layer0 = Path.Combine(folder, "layer_0.safetensors");
        var e = Assert.Throws<SaeSharpException>(() => CrossLayerTranscoderLoader.Load(folder));
        Assert.Equal($"{config}: activation 'topk' needs k: a 'k' entry, or a 'k' tensor in layer 0's file {layer0}", e.Message);
        var t0 = SafeTensors.Load(layer0);
        t0["k"] = tensor(3L);
        SafeTensors.Save(layer0, t0);
        foreach (var t in t0.Values) t.Dispose();
        using (var fromFile = CrossLayerTranscoderLoader.Load(folder)) Assert.Equal(3, fromFile.Cfg.TopK);
    }

    [Theory]
    [InlineData(true, true)]
    [InlineData(false, false)]
    [InlineData(true, false)]
    public void Circuit_tracer_set_files_load_as_the_clt_whose_off_diagonal_decoders_are_zero(bool threshold, bool skip)
    {
        var r = CltReference.Random(3, 6, 5, seed: 13, threshold, skip).ZeroOffDiagonal();
        string folder = Path.Combine(_dir, "set");
        r.WriteTranscoderSet(folder, threshold);
        Assert.True(CrossLayerTranscoderLoader.IsCrossLayerTranscoder(folder));
        using var set = CrossLayerTranscoderLoader.Load(folder);
        Assert.Equal((3, 6, 5, threshold, skip, true), (set.Cfg.NLayers, set.Cfg.DTranscoder, set.Cfg.DModel, set.Cfg.JumpRelu, set.Cfg.SkipConnection, set.Cfg.PerLayer));
        Assert.Equal(("gpt2", "blocks.2.ln2.hook_normalized", "blocks.2.hook_mlp_out"), (set.Cfg.ModelName, set.InputHook(2), set.OutputHook(2)));
        // One decoder per layer, no zeros stored for the other layers.
        List<string> keys = ["W_dec.0 [6, 1, 5]", "W_dec.1 [6, 1, 5]", "W_dec.2 [6, 1, 5]", "W_enc [3, 6, 5]", "b_dec [3, 5]", "b_enc [3, 6]"];
        if (threshold) keys.Add("activation_function.threshold [3, 1, 6]");
        if (skip) keys.Add("W_skip [3, 5, 5]");
        using (var eager = CrossLayerTranscoderLoader.Load(folder, CrossLayerTranscoderLoadOptions.Eager()))
            Assert.Equal(keys.Order(StringComparer.Ordinal), Keys(eager));
        Assert.Equal(keys.Where(k => !k.StartsWith("W_dec.", StringComparison.Ordinal)).Order(StringComparer.Ordinal), Keys(set));   // lazy decoders

        var (x, expected) = Case(r, rows: 6, seed: 5);
        using var _ = x;
        using (var y = set.forward(x)) AssertClose(expected, y);
        // The same CLT in circuit-tracer's CLT files (zero off-diagonal decoders) gives the same reconstruction.
        string cltFolder = Path.Combine(_dir, "clt");
        r.WriteCircuitTracer(cltFolder, threshold);
        using (var clt = CrossLayerTranscoderLoader.Load(cltFolder))
        using (var a = clt.forward(x))
        using (var b = set.forward(x))
            Assert.True(a.allclose(b, rtol: 1e-5, atol: 1e-5));

        Assert.Equal((0, 2), (set.LastOutputLayer(0), set.LastOutputLayer(2)));
        using var feats = tensor(new long[] { 1, 4 });
        using (var rows = set.DecoderRows(1, 1, feats))
            for (int d = 0; d < 5; d++) Assert.Equal(r.WDec[1][4][0][d], rows[1, d].item<float>(), 5);
        var e = Assert.Throws<SaeSharpException>(() => set.DecoderRows(0, 1, feats));
        Assert.Equal("transcoder set: layer 0's features write to layers 0..0, not 1", e.Message);
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void A_listed_gemma_scope_set_equals_each_layers_file_loaded_as_an_sae_and_applied_by_hand(bool gemmaScope2)
    {
        // Gemma Scope's npz (W_enc [d_model, d_sae]) or Gemma Scope 2's safetensors (w_enc, affine_skip_connection applied as x·W).
        var r = CltReference.Random(3, 8, 6, seed: 17, threshold: true, skip: gemmaScope2).ZeroOffDiagonal();
        string folder = Path.Combine(_dir, "gs");
        var lines = new List<string>();
        for (int l = 0; l < 3; l++)
        {
            var p = r.PerLayerTensors(l, threshold: true);
            var raw = new Dictionary<string, Tensor>
            {
                [gemmaScope2 ? "w_enc" : "W_enc"] = p["W_enc"].t().contiguous(), [gemmaScope2 ? "w_dec" : "W_dec"] = p["W_dec"],
                ["b_enc"] = p["b_enc"], ["b_dec"] = p["b_dec"], ["threshold"] = p["activation_function.threshold"],
            };
            if (gemmaScope2) raw["affine_skip_connection"] = p["W_skip"].t().contiguous();
            string rel = gemmaScope2 ? $"transcoder/layer_{l}_width_16k_l0_small/params.safetensors" : $"layer_{l}/width_8/average_l0_{10 + l}/params.npz";
            string file = Path.Combine(folder, rel);
            Directory.CreateDirectory(Path.GetDirectoryName(file)!);
            if (gemmaScope2) SafeTensors.Save(file, raw);
            else GemmaScopeTests.WriteNpz(file, raw);
            foreach (var t in p.Values.Concat(raw.Values)) t.Dispose();
            lines.Add($"  - {rel}");
        }
        File.WriteAllText(Path.Combine(folder, "config.yaml"),
            "model_kind: transcoder_set\nfeature_input_hook: hook_resid_mid\nfeature_output_hook: hook_mlp_out\ntranscoders:\n" + string.Join("\n", lines) + "\n");
        using var set = CrossLayerTranscoderLoader.Load(folder);
        Assert.Equal((3, 8, 6, true, gemmaScope2, true), (set.Cfg.NLayers, set.Cfg.DTranscoder, set.Cfg.DModel, set.Cfg.JumpRelu, set.Cfg.SkipConnection, set.Cfg.PerLayer));
        var (x, expected) = Case(r, rows: 5, seed: 2);
        using var _ = x;
        using (var y = set.forward(x)) AssertClose(expected, y);
        if (gemmaScope2) return;   // SaeLoader reads Gemma Scope 2 transcoders without their skip; the npz case checks the SAE path
        for (int l = 0; l < 3; l++)
        {
            using var sae = SaeLoader.Load(Path.Combine(folder, $"layer_{l}", "width_8", $"average_l0_{10 + l}"));
            using var byHand = sae.Decode(sae.Encode(x[l]));
            using var features = set.EncodeLayer(x[l], l);
            using var saeFeatures = sae.Encode(x[l]);
            Assert.True(features.allclose(saeFeatures, rtol: 1e-5, atol: 1e-6));
            using var recon = set.DecodeLayer([features, features, features], l);
            Assert.True(recon.allclose(byHand, rtol: 1e-5, atol: 1e-5));
        }
    }

    [Fact]
    public void A_missing_layer_file_or_a_layer_named_twice_is_named()
    {
        var r = CltReference.Random(3, 4, 3, seed: 9, threshold: true, skip: false).ZeroOffDiagonal();
        string folder = Path.Combine(_dir, "bad");
        r.WriteTranscoderSet(folder, threshold: true);
        File.Delete(Path.Combine(folder, "layer_1.safetensors"));
        var e = Assert.Throws<SaeSharpException>(() => CrossLayerTranscoderLoader.Load(folder));
        Assert.Equal($"{Path.Combine(folder, "layer_1.safetensors")}: file not found (the CLT's files go up to layer 2; every layer 0..2 needs one)", e.Message);

        r.WriteTranscoderSet(folder, threshold: true);
        string config = Path.Combine(folder, "config.yaml");
        void Config(string list) => File.WriteAllText(config,
            "model_kind: transcoder_set\nfeature_input_hook: hook_resid_mid\nfeature_output_hook: hook_mlp_out\ntranscoders:\n" + list);
        Config("  - layer_0.safetensors\n  - layer_1.safetensors\n  - missing/layer_2.safetensors\n");
        e = Assert.Throws<SaeSharpException>(() => CrossLayerTranscoderLoader.Load(folder));
        Assert.Equal($"{Path.Combine(folder, "missing/layer_2.safetensors")}: file not found (transcoder set layer 2, {config})", e.Message);

        Config("  - layer_0.safetensors\n  - layer_1.safetensors\n  - layer_1.safetensors\n");
        e = Assert.Throws<SaeSharpException>(() => CrossLayerTranscoderLoader.Load(folder));
        Assert.Equal($"{config}: transcoders lists 'layer_1.safetensors' twice (layers 1 and 2); entry L is layer L's file", e.Message);

        Config("  - hf://google/gemma-scope-2b-pt-transcoders/layer_0/width_16k/average_l0_76/params.npz\n" +
               "  - hf://google/gemma-scope-2b-pt-transcoders/layer_0/width_16k/average_l0_11/params.npz\n");
        e = Assert.Throws<SaeSharpException>(() => CrossLayerTranscoderLoader.Load(folder));
        Assert.Equal($"{config}: transcoders names layer 0 twice (entries 0 and 1: 'hf://google/gemma-scope-2b-pt-transcoders/layer_0/width_16k/average_l0_76/params.npz', " +
            "'hf://google/gemma-scope-2b-pt-transcoders/layer_0/width_16k/average_l0_11/params.npz')", e.Message);

        Config("  - layer_1.safetensors\n  - layer_0.safetensors\n");
        e = Assert.Throws<SaeSharpException>(() => CrossLayerTranscoderLoader.Load(folder));
        Assert.Equal($"{config}: transcoders entry 0 is 'layer_1.safetensors', a layer 1 file; entry L must be layer L's file", e.Message);

        File.WriteAllText(config, "model_kind: transcoder_set\nfeature_input_hook: hook_resid_mid\nfeature_output_hook: hook_mlp_out\nactivation: gelu\n");
        e = Assert.Throws<SaeSharpException>(() => CrossLayerTranscoderLoader.Load(folder));
        Assert.StartsWith($"{config}: activation 'gelu' is not supported", e.Message);

        File.WriteAllText(config, "model_kind: something_else\n");
        Assert.False(CrossLayerTranscoderLoader.IsTranscoderSet(folder));
        e = Assert.Throws<SaeSharpException>(() => CrossLayerTranscoderLoader.Load(folder));
        Assert.StartsWith($"{config}: model_kind is 'something_else', expected 'transcoder_set'", e.Message);
    }

    [Fact]
    public void Saelens_transcoder_folders_listed_one_per_layer_form_a_set()
    {
        var r = CltReference.Random(2, 7, 5, seed: 23, threshold: true, skip: true).ZeroOffDiagonal();
        string folder = Path.Combine(_dir, "own");
        for (int l = 0; l < 2; l++)
        {
            var p = r.PerLayerTensors(l, threshold: true);
            var cfg = new SaeConfig
            {
                Architecture = SaeArchitectures.JumpReluSkipTranscoder, DIn = 5, DOut = 5, DSae = 7, ApplyBDecToInput = false,
                Metadata = new SaeMetadata { HookName = $"blocks.{l}.ln2.hook_normalized" },
            };
            // SaeSharp's (SAELens's) orientation: W_enc [d_in, d_sae]; W_skip [d_out, d_in], applied x·W_skipᵀ as circuit-tracer's file.
            var w = new Dictionary<string, Tensor>
            {
                ["W_enc"] = p["W_enc"].t().contiguous(), ["W_dec"] = p["W_dec"], ["b_enc"] = p["b_enc"], ["b_dec"] = p["b_dec"],
                ["threshold"] = p["activation_function.threshold"], ["W_skip"] = p["W_skip"],
            };
            using var sae = SaeWeights.Create(cfg, w, "test", "test");
            SaeLensFormat.Save(sae, Path.Combine(folder, $"layer_{l}"));
            foreach (var t in p.Values) t.Dispose();
        }
        File.WriteAllText(Path.Combine(folder, "config.yaml"),
            "model_kind: transcoder_set\nfeature_input_hook: ln2.hook_normalized\nfeature_output_hook: hook_mlp_out\ntranscoders:\n  - layer_0\n  - layer_1\n");
        using (var set = CrossLayerTranscoderLoader.Load(folder))
        {
            Assert.True(set.Cfg.JumpRelu && set.Cfg.SkipConnection && set.Cfg.PerLayer);
            var (x, expected) = Case(r, rows: 4, seed: 7);
            using var _ = x;
            using var y = set.forward(x);
            AssertClose(expected, y);
        }

        // A config that puts the transcoders at other hooks than their cfg.json records is refused, naming both.
        string yaml = Path.Combine(folder, "config.yaml");
        string good = File.ReadAllText(yaml);
        File.WriteAllText(yaml, good.Replace("feature_input_hook: ln2.hook_normalized", "feature_input_hook: hook_resid_pre", StringComparison.Ordinal));
        var wrong = Assert.Throws<SaeSharpException>(() => CrossLayerTranscoderLoader.Load(folder));
        Assert.Equal($"{Path.Combine(folder, "layer_0")}: the transcoder was trained at hook_name blocks.0.ln2.hook_normalized, but {yaml}'s " +
                     "feature_input_hook puts it at blocks.0.hook_resid_pre", wrong.Message);
        File.WriteAllText(yaml, good);

        // An SAE that subtracts b_dec from its input (SAELens's default) is not a per-layer transcoder of circuit-tracer's kind.
        using (var sae = SaeLoader.Load(Path.Combine(folder, "layer_1")))
        {
            var cfg = new SaeConfig { Architecture = SaeArchitectures.JumpReLU, DIn = 5, DSae = 7, ApplyBDecToInput = true };
            var w = new Dictionary<string, Tensor> { ["W_enc"] = sae.WEnc, ["W_dec"] = sae.WDec, ["b_enc"] = sae.BEnc, ["b_dec"] = sae.BDec, ["threshold"] = ((JumpReluSae)sae).Threshold };
            using var plain = SaeWeights.Create(cfg, w, "test", "test");
            Directory.Delete(Path.Combine(folder, "layer_1"), true);
            SaeLensFormat.Save(plain, Path.Combine(folder, "layer_1"));
        }
        var e = Assert.Throws<SaeSharpException>(() => CrossLayerTranscoderLoader.Load(folder));
        Assert.StartsWith($"{Path.Combine(folder, "layer_1")}: a transcoder set's layer must be a standard or jumprelu transcoder", e.Message);
    }

    [Fact]
    public void Activation_relu_ignores_the_files_thresholds()
    {
        var r = CltReference.Random(2, 5, 4, seed: 3, threshold: true, skip: false).ZeroOffDiagonal();
        string folder = Path.Combine(_dir, "relu");
        r.WriteTranscoderSet(folder, threshold: true);
        File.AppendAllText(Path.Combine(folder, "config.yaml"), "activation: relu\n");
        using var set = CrossLayerTranscoderLoader.Load(folder);
        Assert.False(set.Cfg.JumpRelu);
        for (int l = 0; l < 2; l++) Array.Clear(r.Threshold[l]);   // the reference's ReLU
        var (x, expected) = Case(r, rows: 4, seed: 6);
        using var _ = x;
        using var y = set.forward(x);
        AssertClose(expected, y);
    }
}
