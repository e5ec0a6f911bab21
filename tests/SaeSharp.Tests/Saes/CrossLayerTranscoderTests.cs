using SaeSharp.Interop;
using SaeSharp.IO;
using SaeSharp.Saes;
using static TorchSharp.torch;

namespace SaeSharp.Tests.Saes;

/// <summary>
/// A whole cross-layer transcoder in plain arrays (random weights), written in circuit-tracer's or Gemma Scope 2's files,
/// and the reference computation the loaded <see cref="CrossLayerTranscoder"/> must match: loops in double.
/// </summary>
internal sealed class CltReference
{
    public int L, F, D;
    public double[][][] WEnc = [];   // [l][k][e] (circuit-tracer's [d_transcoder, d_model])
    public double[][] BEnc = [], BDec = [], Threshold = [];
    public double[][][][] WDec = []; // [i][k][j][d]: source i, output layer i + j
    public double[][][]? WSkip;      // [l][e][d]: x·W_skip

    public static CltReference Random(int layers, int features, int dModel, int seed, bool threshold, bool skip)
    {
        var r = new Random(seed);
        double N(double s) => (r.NextDouble() * 2 - 1) * s;
        double[] V(int n, double s) => Enumerable.Range(0, n).Select(_ => N(s)).ToArray();
        double[][] M(int a, int b, double s) => Enumerable.Range(0, a).Select(_ => V(b, s)).ToArray();
        return new CltReference
        {
            L = layers, F = features, D = dModel,
            WEnc = Enumerable.Range(0, layers).Select(_ => M(features, dModel, 0.6)).ToArray(),
            BEnc = M(layers, features, 0.2),
            BDec = M(layers, dModel, 0.3),
            // Half the pre-activations clear these (|pre| is ~0.5); ReLU when there is no threshold.
            Threshold = threshold ? Enumerable.Range(0, layers).Select(_ => V(features, 0.4).Select(Math.Abs).ToArray()).ToArray() : M(layers, features, 0).Select(a => a.Select(_ => 0.0).ToArray()).ToArray(),
            WDec = Enumerable.Range(0, layers).Select(i => Enumerable.Range(0, features).Select(_ => M(layers - i, dModel, 0.5)).ToArray()).ToArray(),
            WSkip = skip ? Enumerable.Range(0, layers).Select(_ => M(dModel, dModel, 0.3)).ToArray() : null,
        };
    }

    public double[] Features(double[] x, int l) => Enumerable.Range(0, F).Select(k =>
    {
        double pre = BEnc[l][k];
        for (int e = 0; e < D; e++) pre += x[e] * WEnc[l][k][e];
        return pre > Threshold[l][k] ? pre : 0;
    }).ToArray();

    /// <summary>Layer l's reconstruction from the inputs xs[0..l] of one position.</summary>
    public double[] Reconstruct(IReadOnlyList<double[]> xs, int l)
    {
        var y = (double[])BDec[l].Clone();
        for (int i = 0; i <= l; i++)
        {
            var f = Features(xs[i], i);
            for (int k = 0; k < F; k++)
                for (int d = 0; d < D; d++) y[d] += f[k] * WDec[i][k][l - i][d];
        }
        if (WSkip is not null)
            for (int e = 0; e < D; e++)
                for (int d = 0; d < D; d++) y[d] += xs[l][e] * WSkip[l][e][d];
        return y;
    }

    private static Tensor T(double[] a) => tensor(a.Select(v => (float)v).ToArray());
    private static Tensor T(double[][] a) => stack(a.Select(T).ToArray(), 0);
    private static Tensor T(double[][][] a) => stack(a.Select(T).ToArray(), 0);

    /// <summary>circuit-tracer's files (<c>to_safetensors</c>): W_enc_i.safetensors and W_dec_i.safetensors.</summary>
    public void WriteCircuitTracer(string folder, bool threshold)
    {
        Directory.CreateDirectory(folder);
        for (int i = 0; i < L; i++)
        {
            var enc = new Dictionary<string, Tensor> { [$"W_enc_{i}"] = T(WEnc[i]), [$"b_enc_{i}"] = T(BEnc[i]), [$"b_dec_{i}"] = T(BDec[i]) };
            if (threshold) enc[$"threshold_{i}"] = T(Threshold[i]);
            if (WSkip is not null) enc[$"W_skip_{i}"] = T(WSkip[i]);
            SafeTensors.Save(Path.Combine(folder, $"W_enc_{i}.safetensors"), enc);
            SafeTensors.Save(Path.Combine(folder, $"W_dec_{i}.safetensors"), new Dictionary<string, Tensor> { [$"W_dec_{i}"] = T(WDec[i]) });
            foreach (var t in enc.Values) t.Dispose();
        }
    }

    /// <summary>Every threshold times <paramref name="factor"/> (low enough that several features fire on a tiny model).</summary>
    public CltReference ScaleThresholds(double factor)
    {
        foreach (var layer in Threshold)
            for (int k = 0; k < layer.Length; k++) layer[k] *= factor;
        return this;
    }

    /// <summary>The CLT's circuit-tracer files with thresholds, and a config.yaml reading ln2's output and writing the
    /// MLP output (the tiny GPT-2 tests' hooks).</summary>
    public void WriteCircuitTracerLn2(string folder)
    {
        WriteCircuitTracer(folder, threshold: true);
        File.WriteAllText(Path.Combine(folder, "config.yaml"), "feature_input_hook: ln2.hook_normalized\nfeature_output_hook: hook_mlp_out\nmodel_name: gpt2\n");
    }

    /// <summary><see cref="WriteCircuitTracerLn2"/> to <paramref name="folder"/>, loaded back in <paramref name="dtype"/>.</summary>
    public CrossLayerTranscoder LoadCircuitTracerLn2(string folder, ScalarType dtype = ScalarType.Float32)
    {
        WriteCircuitTracerLn2(folder);
        return CrossLayerTranscoderLoader.Load(folder, dtype: dtype);
    }

    /// <summary>The same CLT with every off-diagonal decoder (layer i writing layer j &gt; i) zero: the CLT a transcoder set is.</summary>
    public CltReference ZeroOffDiagonal()
    {
        foreach (var src in WDec)
            foreach (var k in src)
                for (int j = 1; j < k.Length; j++) Array.Clear(k[j]);
        return this;
    }

    /// <summary>Layer i as one per-layer transcoder's arrays: W_enc [d_transcoder, d_model], its own-layer decoder
    /// W_dec [d_transcoder, d_model], and W_skip as circuit-tracer's file holds it (applied as x·W_skipᵀ).</summary>
    public Dictionary<string, Tensor> PerLayerTensors(int i, bool threshold)
    {
        var p = new Dictionary<string, Tensor>
        {
            ["W_enc"] = T(WEnc[i]), ["W_dec"] = T(WDec[i].Select(k => k[0]).ToArray()), ["b_enc"] = T(BEnc[i]), ["b_dec"] = T(BDec[i]),
        };
        if (threshold) p["activation_function.threshold"] = T(Threshold[i]);
        if (WSkip is not null) p["W_skip"] = T(WSkip[i]).t().contiguous();
        return p;
    }

    /// <summary>circuit-tracer's transcoder set files (<c>TranscoderSet.to_safetensors</c>): layer_i.safetensors, one
    /// per-layer transcoder each (the diagonal decoders), and a config.yaml (model_kind: transcoder_set) without a list.</summary>
    public void WriteTranscoderSet(string folder, bool threshold, string inputHook = "ln2.hook_normalized")
    {
        Directory.CreateDirectory(folder);
        for (int i = 0; i < L; i++)
        {
            var p = PerLayerTensors(i, threshold);
            SafeTensors.Save(Path.Combine(folder, $"layer_{i}.safetensors"), p);
            foreach (var t in p.Values) t.Dispose();
        }
        File.WriteAllText(Path.Combine(folder, "config.yaml"),
            $"model_kind: transcoder_set\nmodel_name: gpt2\nfeature_input_hook: {inputHook}\nfeature_output_hook: hook_mlp_out\nscan: test\n");
    }

    /// <summary>Gemma Scope 2's files: params_layer_i.safetensors with w_enc [d_model, d_sae] and w_dec [d_sae, L, d_model],
    /// whose output layers before i hold junk the loader must ignore.</summary>
    public void WriteGemmaScope2(string folder, string prefix = "params_layer_")
    {
        Directory.CreateDirectory(folder);
        for (int i = 0; i < L; i++)
        {
            var full = WDec[i].Select(k => Enumerable.Range(0, L).Select(j => j < i ? Enumerable.Repeat(1e3, D).ToArray() : k[j - i]).ToArray()).ToArray();
            var p = new Dictionary<string, Tensor>
            {
                ["w_enc"] = T(WEnc[i]).t().contiguous(), ["b_enc"] = T(BEnc[i]), ["b_dec"] = T(BDec[i]), ["threshold"] = T(Threshold[i]), ["w_dec"] = T(full),
            };
            if (WSkip is not null) p["affine_skip_connection"] = T(WSkip[i]);
            SafeTensors.Save(Path.Combine(folder, $"{prefix}{i}.safetensors"), p);
            foreach (var t in p.Values) t.Dispose();
        }
    }
}

public class CrossLayerTranscoderTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("clt-").FullName;

    public void Dispose()
    {
        Directory.Delete(_dir, true);
        GC.SuppressFinalize(this);
    }

    /// <summary>Inputs [L, rows, d_model] and the reference reconstruction of every layer and row.</summary>
    internal static (Tensor X, double[,,] Expected) Case(CltReference r, int rows, int seed)
    {
        var rnd = new Random(seed);
        var xs = Enumerable.Range(0, r.L).Select(_ => Enumerable.Range(0, rows).Select(_ => Enumerable.Range(0, r.D).Select(_ => rnd.NextDouble() * 2 - 1).ToArray()).ToArray()).ToArray();
        var expected = new double[r.L, rows, r.D];
        for (int l = 0; l < r.L; l++)
            for (int p = 0; p < rows; p++)
            {
                var y = r.Reconstruct(xs.Select(layer => layer[p]).ToList(), l);
                for (int d = 0; d < r.D; d++) expected[l, p, d] = y[d];
            }
        var x = tensor(xs.SelectMany(a => a.SelectMany(b => b)).Select(v => (float)v).ToArray()).view(r.L, rows, r.D);
        return (x, expected);
    }

    internal static void AssertClose(double[,,] expected, Tensor actual)
    {
        var a = actual.to(ScalarType.Float64).data<double>().ToArray();
        Assert.Equal(expected.Length, a.Length);
        int i = 0;
        foreach (var e in expected) Assert.Equal(e, a[i++], 4);
    }

    internal static List<string> Keys(CrossLayerTranscoder clt) =>
        clt.state_dict().Select(kv => $"{kv.Key} [{string.Join(", ", kv.Value.shape)}]").Order(StringComparer.Ordinal).ToList();

    [Theory]
    [InlineData(true, true)]
    [InlineData(false, false)]
    [InlineData(true, false)]
    public void Circuit_tracer_files_load_as_a_whole_clt_that_matches_a_loop_reference(bool threshold, bool skip)
    {
        var r = CltReference.Random(3, 6, 5, seed: 11, threshold, skip);
        string folder = Path.Combine(_dir, "ct");
        r.WriteCircuitTracer(folder, threshold);
        using var clt = CrossLayerTranscoderLoader.Load(folder);
        Assert.Equal("circuit-tracer", clt.Cfg.Format);
        Assert.Equal((3, 6, 5, threshold, skip), (clt.Cfg.NLayers, clt.Cfg.DTranscoder, clt.Cfg.DModel, clt.Cfg.JumpRelu, clt.Cfg.SkipConnection));
        // circuit-tracer's state-dict keys and shapes.
        List<string> expectedKeys = ["W_dec.0 [6, 3, 5]", "W_dec.1 [6, 2, 5]", "W_dec.2 [6, 1, 5]", "W_enc [3, 6, 5]", "b_dec [3, 5]", "b_enc [3, 6]"];
        if (threshold) expectedKeys.Add("activation_function.threshold [3, 1, 6]");
        if (skip) expectedKeys.Add("W_skip [3, 5, 5]");
        // Loaded eagerly: every weight a parameter; lazily (the default, as circuit-tracer's): the decoders stay in the files
        // (circuit-tracer's lazy W_dec is None).
        using (var eager = CrossLayerTranscoderLoader.Load(folder, CrossLayerTranscoderLoadOptions.Eager()))
            Assert.Equal(expectedKeys.Order(StringComparer.Ordinal), Keys(eager));
        Assert.True(clt.LazyDecoder);
        Assert.Equal(expectedKeys.Where(k => !k.StartsWith("W_dec.", StringComparison.Ordinal)).Order(StringComparer.Ordinal), Keys(clt));
        // Default hooks are circuit-tracer's (no config.yaml).
        Assert.Equal("blocks.2.hook_resid_mid", clt.InputHook(2));
        Assert.Equal("blocks.2.hook_mlp_out", clt.OutputHook(2));

        var (x, expected) = Case(r, rows: 7, seed: 3);
        using var _ = x;
        using (var y = clt.forward(x)) AssertClose(expected, y);
        // Encode + Decode is forward; a layer's features are the reference's.
        using (var f = clt.Encode(x))
        {
            var f1 = f[1, 4].data<float>().ToArray();
            var want = r.Features(Enumerable.Range(0, 5).Select(d => (double)x[1, 4, d].item<float>()).ToArray(), 1);
            for (int k = 0; k < 6; k++) Assert.Equal(want[k], f1[k], 5);
            Assert.Contains(f1, v => v == 0);
            Assert.Contains(f1, v => v != 0);
        }
    }

    [Fact]
    public void Config_yaml_gives_the_model_and_hooks()
    {
        var r = CltReference.Random(2, 4, 3, seed: 5, threshold: true, skip: false);
        string folder = Path.Combine(_dir, "cfg");
        r.WriteCircuitTracer(folder, threshold: true);
        File.WriteAllText(Path.Combine(folder, "config.yaml"),
            "feature_input_hook: ln2.hook_normalized\nfeature_output_hook: hook_mlp_out\nmodel_kind: cross_layer_transcoder\nmodel_name: google/gemma-2-2b\n");
        using var clt = CrossLayerTranscoderLoader.LoadCircuitTracer(folder);
        Assert.Equal("google/gemma-2-2b", clt.Cfg.ModelName);
        Assert.Equal("blocks.1.ln2.hook_normalized", clt.InputHook(1));
    }

    [Theory]
    [InlineData(true, "params_layer_")]
    [InlineData(false, "layer_")]
    public void Gemma_scope_2_files_load_as_a_whole_clt_that_matches_a_loop_reference(bool skip, string prefix)
    {
        var r = CltReference.Random(4, 5, 6, seed: 21, threshold: true, skip);
        string folder = Path.Combine(_dir, "gemma-scope-2-270m-pt", "clt", "width_16k_l0_small");
        r.WriteGemmaScope2(folder, prefix);
        using var clt = CrossLayerTranscoderLoader.Load(folder);
        Assert.Equal(("gemma-scope-2", 4, 5, 6, true, skip), (clt.Cfg.Format, clt.Cfg.NLayers, clt.Cfg.DTranscoder, clt.Cfg.DModel, clt.Cfg.JumpRelu, clt.Cfg.SkipConnection));
        Assert.Equal("google/gemma-3-270m", clt.Cfg.ModelName);
        Assert.Equal("blocks.3.ln2.hook_normalized", clt.InputHook(3));
        Assert.Equal("blocks.3.hook_mlp_out", clt.OutputHook(3));
        var (x, expected) = Case(r, rows: 5, seed: 8);
        using (x)
        using (var y = clt.forward(x)) AssertClose(expected, y);
    }

    [Fact]
    public void Decode_layer_reads_only_the_layers_up_to_it_and_needs_the_input_for_a_skip()
    {
        var r = CltReference.Random(3, 4, 3, seed: 2, threshold: true, skip: true);
        string folder = Path.Combine(_dir, "skip");
        r.WriteCircuitTracer(folder, threshold: true);
        using var clt = CrossLayerTranscoderLoader.Load(folder);
        var (x, expected) = Case(r, rows: 2, seed: 4);
        using (x)
        {
            var f = clt.Encode(x).unbind(0);
            // Layer 1 from layers 0..1: a junk entry for layer 2 is ignored.
            using var y = clt.DecodeLayer([f[0], f[1], full_like(f[2], 1e6)], 1, x[1]);
            for (int p = 0; p < 2; p++)
                for (int d = 0; d < 3; d++) Assert.Equal(expected[1, p, d], y[p, d].item<float>(), 4);
            var e = Assert.Throws<SaeSharpException>(() => clt.DecodeLayer(f, 1));
            Assert.Equal("cross-layer transcoder has a skip connection: its reconstruction needs the layer's input", e.Message);
            e = Assert.Throws<SaeSharpException>(() => clt.DecodeLayer([f[0]], 1, x[1]));
            Assert.Equal("cross-layer transcoder: layer 1's reconstruction needs the features of layers 0..1, got 1 layers", e.Message);
            e = Assert.Throws<SaeSharpException>(() => clt.EncodeLayer(x[0], 3));
            Assert.Equal("cross-layer transcoder: layer 3 is outside 0..2", e.Message);
        }
    }

    [Fact]
    public void Bad_files_are_named()
    {
        var r = CltReference.Random(3, 4, 3, seed: 9, threshold: true, skip: false);
        string ct = Path.Combine(_dir, "bad-ct");
        r.WriteCircuitTracer(ct, threshold: true);
        File.Delete(Path.Combine(ct, "W_dec_1.safetensors"));
        var e = Assert.Throws<SaeSharpException>(() => CrossLayerTranscoderLoader.Load(ct));
        Assert.Equal($"{Path.Combine(ct, "W_dec_1.safetensors")}: file not found (the decoders of CLT layer 1; {Path.Combine(ct, "W_enc_1.safetensors")} exists)", e.Message);

        r.WriteCircuitTracer(ct, threshold: true);
        File.Delete(Path.Combine(ct, "W_enc_1.safetensors"));
        e = Assert.Throws<SaeSharpException>(() => CrossLayerTranscoderLoader.Load(ct));
        Assert.Equal($"{Path.Combine(ct, "W_enc_1.safetensors")}: file not found (the CLT's files go up to layer 2; every layer 0..2 needs one)", e.Message);

        // The last layer's files missing would otherwise load as a CLT of fewer layers (or fail on a decoder's shape):
        // W_dec_2 without W_enc_2 names the encoder; both missing, W_dec_0's three output layers give it away (eager too).
        r.WriteCircuitTracer(ct, threshold: true);
        File.Delete(Path.Combine(ct, "W_enc_2.safetensors"));
        e = Assert.Throws<SaeSharpException>(() => CrossLayerTranscoderLoader.Load(ct));
        Assert.Equal($"{Path.Combine(ct, "W_enc_2.safetensors")}: file not found (the encoder of CLT layer 2; {Path.Combine(ct, "W_dec_2.safetensors")} exists)", e.Message);
        File.Delete(Path.Combine(ct, "W_dec_2.safetensors"));
        foreach (var options in new[] { new CrossLayerTranscoderLoadOptions(), CrossLayerTranscoderLoadOptions.Eager(ScalarType.Float32) })
        {
            e = Assert.Throws<SaeSharpException>(() => CrossLayerTranscoderLoader.Load(ct, options));
            Assert.Equal($"{Path.Combine(ct, "W_dec_0.safetensors")}: 'W_dec_0' writes 3 layers, but the folder has encoder files W_enc_0..W_enc_1.safetensors " +
                         "for 2: every layer 0..2 needs its W_enc and W_dec file", e.Message);
        }

        r.WriteCircuitTracer(ct, threshold: true);
        using (var w = zeros(4, 3, 3)) SafeTensors.Save(Path.Combine(ct, "W_dec_1.safetensors"), new Dictionary<string, Tensor> { ["W_dec_1"] = w });
        e = Assert.Throws<SaeSharpException>(() => CrossLayerTranscoderLoader.Load(ct));
        Assert.Equal($"{Path.Combine(ct, "W_dec_1.safetensors")}: tensor 'W_dec_1' has shape [4, 3, 3], expected [4, 2, 3] (the CLT's other layers fix the sizes)", e.Message);

        // A threshold in some layers only.
        r.WriteCircuitTracer(ct, threshold: true);
        var enc = SafeTensors.Load(Path.Combine(ct, "W_enc_2.safetensors"));
        enc.Remove("threshold_2", out var th);
        th!.Dispose();
        SafeTensors.Save(Path.Combine(ct, "W_enc_2.safetensors"), enc);
        foreach (var t in enc.Values) t.Dispose();
        e = Assert.Throws<SaeSharpException>(() => CrossLayerTranscoderLoader.Load(ct));
        Assert.Equal($"{Path.Combine(ct, "W_enc_2.safetensors")}: lacks 'threshold_2' but layer 0 has one: every layer of a CLT has a threshold or none", e.Message);

        string gs = Path.Combine(_dir, "bad-gs");
        r.WriteGemmaScope2(gs);
        File.Move(Path.Combine(gs, "params_layer_2.safetensors"), Path.Combine(gs, "layer_2.safetensors"));
        e = Assert.Throws<SaeSharpException>(() => CrossLayerTranscoderLoader.Load(gs));
        Assert.Equal($"{gs}: both params_layer_<L>.safetensors and layer_<L>.safetensors: which are the CLT's layers is ambiguous", e.Message);

        string empty = Path.Combine(_dir, "empty");
        Directory.CreateDirectory(empty);
        e = Assert.Throws<SaeSharpException>(() => CrossLayerTranscoderLoader.Load(empty));
        Assert.StartsWith($"{empty}: no cross-layer transcoder here", e.Message);
    }
}
