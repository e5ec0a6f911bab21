using SaeSharp.Evaluation;
using SaeSharp.Interop;
using SaeSharp.Interventions;
using SaeSharp.IO;
using SaeSharp.Models;
using SaeSharp.Saes;
using SaeSharp.Tests.Activations;
using SaeSharp.Tests.Models;
using static TorchSharp.torch;

namespace SaeSharp.Tests.Saes;

/// <summary>
/// Lazily loaded CLTs and transcoder sets (decoders, and encoders, read on demand from the files, circuit-tracer's
/// <c>lazy_decoder</c> / <c>lazy_encoder</c>) against the same files loaded eagerly: every result exactly equal, and every
/// row read equal to slicing the whole tensor read from the file.
/// </summary>
public class LazyCrossLayerTranscoderTests : ModelTestBase
{
    private const int DModel = 16, Features = 12, Layers = 2;
    private static readonly Tensor Prompt = tensor(new long[] { 5, 11, 23, 42, 7, 19 }, 1, 6);

    private static readonly CrossLayerTranscoderLoadOptions Lazy = new() { LazyDecoder = true, LazyEncoder = true };

    /// <summary>A random CLT of the tiny GPT-2's size (reading ln2's output, writing the MLP output) written in
    /// <paramref name="layout"/>: "ct" (circuit-tracer's CLT files), "gs2" (Gemma Scope 2's), "set" (a circuit-tracer
    /// transcoder set), with every tensor stored as <paramref name="fileDtype"/>.</summary>
    private string Write(string layout, int seed, ScalarType fileDtype = ScalarType.Float32, int layers = Layers, int features = Features, int dModel = DModel)
    {
        var r = CltReference.Random(layers, features, dModel, seed, threshold: true, skip: true).ScaleThresholds(0.2);
        string folder = Sub($"{layout}-{Guid.NewGuid():N}");
        switch (layout)
        {
            case "ct": r.WriteCircuitTracerLn2(folder); break;
            case "gs2": r.WriteGemmaScope2(folder); break;
            case "set": r.ZeroOffDiagonal().WriteTranscoderSet(folder, threshold: true); break;
            default: throw new ArgumentException(layout);
        }
        if (fileDtype != ScalarType.Float32)
            foreach (var file in Directory.EnumerateFiles(folder, "*.safetensors"))
            {
                var t = SafeTensors.Load(file, fileDtype);
                SafeTensors.Save(file, t);
                foreach (var v in t.Values) v.Dispose();
            }
        return folder;
    }

    private static void AssertExactlyEqual(Tensor expected, Tensor actual, string what)
    {
        Assert.Equal(expected.shape, actual.shape);
        Assert.Equal(expected.dtype, actual.dtype);
        Assert.True(expected.eq(actual).all().item<bool>(), $"{what}: lazy differs from eager (max |Δ| {(expected.to(ScalarType.Float64) - actual.to(ScalarType.Float64)).abs().max().item<double>()})");
    }

    /// <summary>Equal but for float32 rounding: every |Δ| at most 4 ulp of the largest |expected|. The backward passes of
    /// the lazy and eager CLTs multiply the same numbers through differently laid-out tensors; MKL sums those in one
    /// order on the Intel Xeons (bit-equal there) and in another on an AMD Zen 4 (1 ulp apart).</summary>
    private static void AssertEqualUpToRounding(Tensor expected, Tensor actual, string what)
    {
        Assert.Equal(expected.shape, actual.shape);
        Assert.Equal(expected.dtype, actual.dtype);
        using var scope = NewDisposeScope();
        double scale = expected.to(ScalarType.Float64).abs().max().item<double>();
        double diff = (expected.to(ScalarType.Float64) - actual.to(ScalarType.Float64)).abs().max().item<double>();
        Assert.True(diff <= 4 * scale * Math.Pow(2, -23), $"{what}: lazy differs from eager by {diff} (largest |value| {scale})");
    }

    [Theory]
    [InlineData("ct", ScalarType.Float32)]
    [InlineData("ct", ScalarType.BFloat16)]
    [InlineData("ct", ScalarType.Float16)]
    [InlineData("gs2", ScalarType.BFloat16)]
    [InlineData("gs2", ScalarType.Float32)]
    [InlineData("set", ScalarType.Float16)]
    [InlineData("set", ScalarType.Float32)]
    public void Rows_read_from_the_files_equal_slicing_the_whole_tensors(string layout, ScalarType fileDtype)
    {
        string folder = Write(layout, seed: 3, fileDtype, layers: 3, features: 10, dModel: 6);
        long[] ids = [7, 0, 7, 9, 2];   // unsorted, repeated
        using var feats = tensor(ids);
        foreach (var dtype in new[] { ScalarType.Float32, fileDtype })
        {
            using var eager = CrossLayerTranscoderLoader.Load(folder, CrossLayerTranscoderLoadOptions.Eager(dtype));
            using var lazy = CrossLayerTranscoderLoader.Load(folder, Lazy with { Dtype = dtype });
            Assert.False(eager.LazyDecoder);
            Assert.True(lazy.LazyDecoder && lazy.LazyEncoder);
            for (int i = 0; i < 3; i++)
            {
                // The independent expectation: the whole tensor read from the file, sliced here.
                string file = layout switch
                {
                    "ct" => Path.Combine(folder, $"W_dec_{i}.safetensors"),
                    "gs2" => Path.Combine(folder, $"params_layer_{i}.safetensors"),
                    _ => Path.Combine(folder, $"layer_{i}.safetensors"),
                };
                using var f = SafeTensorsFile.Open(file);
                using var whole = f.Read(layout switch { "ct" => $"W_dec_{i}", "gs2" => "w_dec", _ => "W_dec" }, dtype);
                for (int j = i; j <= lazy.LastOutputLayer(i); j++)
                {
                    using var expected = whole.dim() == 2 ? whole.index_select(0, feats) : whole.index_select(0, feats).select(1, layout == "ct" ? j - i : j);
                    using var rows = lazy.DecoderRows(i, j, feats);
                    AssertExactlyEqual(expected, rows, $"{layout} W_dec[{i}] → {j} ({fileDtype} file as {dtype})");
                    using var eagerRows = eager.DecoderRows(i, j, feats);
                    AssertExactlyEqual(eagerRows, rows, $"{layout} W_dec[{i}] → {j} ({fileDtype} file as {dtype})");
                }
                using var e1 = eager.EncoderRows(i, feats);
                using var e2 = lazy.EncoderRows(i, feats);
                AssertExactlyEqual(e1, e2, $"{layout} W_enc[{i}]");
            }
        }
    }

    [Theory]
    [InlineData("ct", ScalarType.Float32)]
    [InlineData("ct", ScalarType.BFloat16)]
    [InlineData("gs2", ScalarType.Float32)]
    [InlineData("set", ScalarType.Float32)]
    [InlineData("set", ScalarType.BFloat16)]
    public void Forward_and_layer_transcoders_of_a_lazy_clt_equal_the_eager_ones_exactly(string layout, ScalarType dtype)
    {
        string folder = Write(layout, seed: 5, layers: 3, features: 40, dModel: 8);
        using var eager = CrossLayerTranscoderLoader.Load(folder, CrossLayerTranscoderLoadOptions.Eager(dtype));
        using var lazyDecoder = CrossLayerTranscoderLoader.Load(folder, new CrossLayerTranscoderLoadOptions { Dtype = dtype });
        using var lazy = CrossLayerTranscoderLoader.Load(folder, Lazy with { Dtype = dtype });
        Assert.True(lazyDecoder.LazyDecoder && !lazyDecoder.LazyEncoder);   // circuit-tracer's defaults
        manual_seed(7);
        using var x = randn(3, 5, 8).to(dtype);
        using var fe = eager.Encode(x);
        using var fl = lazy.Encode(x);
        AssertExactlyEqual(fe, fl, "features");
        long active = fe.ne(0).sum().item<long>();
        Assert.True(active > 0 && active < fe.numel(), $"{active} of {fe.numel()} features active: the test needs some of each");
        using var ye = eager.forward(x);
        foreach (var clt in new[] { lazyDecoder, lazy })
        {
            using var y = clt.forward(x);
            AssertExactlyEqual(ye, y, "reconstruction");
        }
        for (int l = 0; l < 3; l++)
        {
            using var se = eager.LayerTranscoder(l);
            using var sl = lazy.LayerTranscoder(l);
            foreach (var (k, t) in se.state_dict()) AssertExactlyEqual(t, sl.state_dict()[k], $"layer transcoder {l} {k}");
        }
    }

    [Theory]
    [InlineData("ct")]
    [InlineData("gs2")]
    [InlineData("set")]
    public void Eval_attribution_and_graph_of_a_lazy_clt_equal_the_eager_ones_eval_exactly(string layout)
    {
        string folder = Write(layout, seed: 4);
        using var model = Gpt2();
        using var eager = CrossLayerTranscoderLoader.Load(folder, CrossLayerTranscoderLoadOptions.Eager());
        using var lazy = CrossLayerTranscoderLoader.Load(folder, Lazy);
        using var lazyDecoder = CrossLayerTranscoderLoader.Load(folder);

        var windows = ModelActivationSourceTests.Windows(4, 8);
        var options = new DownstreamEvalOptions { BatchSizePrompts = 3 };
        string expected = DownstreamEvaluator.EvaluateReplacement(model, eager, windows, options).ToJson().ToJsonString();
        Assert.Equal(expected, DownstreamEvaluator.EvaluateReplacement(model, lazy, windows, options).ToJson().ToJsonString());
        Assert.Equal(expected, DownstreamEvaluator.EvaluateReplacement(model, lazyDecoder, windows, options).ToJson().ToJsonString());

        using var ae = FeatureAttribution.Run(model, eager, Prompt, AttributionMetric.Logit(3));
        using var al = FeatureAttribution.Run(model, lazy, Prompt, AttributionMetric.Logit(3));
        Assert.Equal(ae.Metric, al.Metric);
        for (int l = 0; l < Layers; l++)
        {
            AssertExactlyEqual(ae.FeatureActs[l], al.FeatureActs[l], $"activations {l}");
            AssertEqualUpToRounding(ae.Attribution[l], al.Attribution[l], $"attribution {l}");
            AssertEqualUpToRounding(ae.ErrorAttribution[l], al.ErrorAttribution[l], $"error attribution {l}");
        }

        var graphOptions = new AttributionGraphOptions { MaxLogits = 3, BatchSize = 4 };
        using var ge = AttributionGraph.Build(model, eager, Prompt, graphOptions);
        using var gl = AttributionGraph.Build(model, lazy, Prompt, graphOptions);
        using var gd = AttributionGraph.Build(model, lazyDecoder, Prompt, graphOptions);
        Assert.True(ge.NFeatures > 0, "the graph should have active features");
        Assert.Equal(ge.ActiveFeatures, gl.ActiveFeatures);
        AssertEqualUpToRounding(ge.AdjacencyMatrix, gl.AdjacencyMatrix, "adjacency");
        AssertEqualUpToRounding(ge.AdjacencyMatrix, gd.AdjacencyMatrix, "adjacency (lazy decoder only)");
    }

    [Fact]
    public void A_file_changed_or_deleted_under_a_lazy_clt_is_an_error_naming_it()
    {
        string folder = Write("ct", seed: 6, layers: 3, features: 10, dModel: 6);
        using var clt = CrossLayerTranscoderLoader.Load(folder, Lazy);
        using var feats = tensor(new long[] { 1, 2 });
        clt.DecoderRows(1, 2, feats).Dispose();
        string dec = Path.Combine(folder, "W_dec_1.safetensors");
        // Rewritten with fewer features: reading row 9 of the old layout would read other bytes.
        using (var w = zeros(4, 2, 6)) SafeTensors.Save(dec, new Dictionary<string, Tensor> { ["W_dec_1"] = w });
        var e = Assert.Throws<SaeSharpException>(() => clt.DecoderRows(1, 2, feats));
        Assert.StartsWith($"{dec}: changed since the cross-layer transcoder was loaded lazily (", e.Message);
        Assert.Contains("reload it", e.Message);
        using var x = randn(3, 4, 6);
        e = Assert.Throws<SaeSharpException>(() => clt.forward(x));
        Assert.StartsWith($"{dec}: changed since", e.Message);

        string enc = Path.Combine(folder, "W_enc_0.safetensors");
        File.Delete(enc);
        e = Assert.Throws<SaeSharpException>(() => clt.EncodeLayer(x[0], 0));
        Assert.Equal($"{enc}: deleted since the cross-layer transcoder was loaded lazily (its weights are read on demand): reload it", e.Message);
        // Layer 2's files are untouched: still read.
        clt.DecoderRows(2, 2, feats).Dispose();
    }

    [Fact]
    public void Gathered_rows_out_of_range_are_refused()
    {
        string file = Sub("t.safetensors");
        Directory.CreateDirectory(Dir);
        using (var t = TorchScalars.Arange(24, dtype: ScalarType.Float32).view(4, 3, 2)) SafeTensors.Save(file, new Dictionary<string, Tensor> { ["w"] = t });
        using var f = SafeTensorsFile.Open(file);
        using (var rows = f.ReadGathered("w", [3, 1], 2, 2))
            Assert.Equal([20f, 21f, 8f, 9f], rows.data<float>().ToArray());   // row r's elements 2..3 are 6r + 2, 6r + 3
        var e = Assert.Throws<SaeSharpException>(() => f.ReadGathered("w", [4], 0, 2));
        Assert.Equal($"{file}: tensor 'w': row 4 out of range 0..3", e.Message);
        e = Assert.Throws<SaeSharpException>(() => f.ReadGathered("w", [0], 5, 2));
        Assert.Equal($"{file}: tensor 'w': elements [5, 7) of a row lie outside its 6", e.Message);
    }
}
