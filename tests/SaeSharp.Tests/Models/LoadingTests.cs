using System.Text.Json.Nodes;
using SaeSharp.IO;
using SaeSharp.Models;
using SaeSharp.Tests.IO;
using static TorchSharp.torch;

namespace SaeSharp.Tests.Models;

public class LoadingTests : ModelTestBase
{
    private static readonly Tensor Toks = tensor(new long[] { 4, 8, 15, 16, 23, 42 }).unsqueeze(0);

    private static void EditConfig(string dir, Action<JsonObject> edit)
    {
        var path = Path.Combine(dir, "config.json");
        var o = JsonNode.Parse(File.ReadAllText(path))!.AsObject();
        edit(o);
        File.WriteAllText(path, o.ToJsonString());
    }

    [Fact]
    public void Transformers5_rope_parameters_of_neox_and_decoders_are_read()
    {
        // transformers 5 moves rotary_pct / partial_rotary_factor and the rope base into rope_parameters.
        var n = TinyModels.WriteNeoX(Sub("n"), hiddenSize: 16, nHead: 2, rotaryPct: 0.25);
        EditConfig(n, o =>
        {
            o.Remove("rotary_pct");
            o.Remove("rotary_emb_base");
            o["rope_parameters"] = new JsonObject { ["rope_type"] = "default", ["rope_theta"] = 500.0, ["partial_rotary_factor"] = 1.0 };
        });
        using (var m = ModelLoader.FromPretrained(n))
        {
            Assert.Equal(8, m.Config.RotaryDim);
            Assert.Equal(500.0, m.Config.RotaryBase);
        }
        EditConfig(n, o => o["rope_parameters"]!["rope_type"] = "linear");
        Assert.Contains("rope_parameters of type 'linear' are not supported",
            Assert.Throws<SaeSharpException>(() => ModelLoader.FromPretrained(n).Dispose()).Message);

        // Decoders: rope_parameters' partial_rotary_factor wins over a top-level one (transformers 5 only fills it in
        // from the top level when absent); one set per layer type is accepted when the sets agree.
        var d = TinyDecoders.Write(Sub("d"), new DecoderSpec { ModelType = "llama", Hidden = 32, Heads = 2, KvHeads = 2 });
        EditConfig(d, o =>
        {
            o["partial_rotary_factor"] = 1.0;
            o["rope_parameters"] = new JsonObject { ["rope_type"] = "default", ["rope_theta"] = 10000.0, ["partial_rotary_factor"] = 0.5 };
        });
        using (var m = ModelLoader.FromPretrained(d)) Assert.Equal(8, m.Config.RotaryDim);
        JsonObject Set(double theta) => new() { ["rope_type"] = "default", ["rope_theta"] = theta };
        EditConfig(d, o => o["rope_parameters"] = new JsonObject { ["full_attention"] = Set(500), ["sliding_attention"] = Set(500) });
        using (var m = ModelLoader.FromPretrained(d)) Assert.Equal(500.0, m.Config.RotaryBase);
        EditConfig(d, o => o["rope_parameters"] = new JsonObject { ["full_attention"] = Set(1e6), ["sliding_attention"] = Set(1e4) });
        Assert.Contains("differ by layer type", Assert.Throws<SaeSharpException>(() => ModelLoader.FromPretrained(d).Dispose()).Message);
    }

    [Fact]
    public void StateDictKeysAreTheHfCheckpointKeys()
    {
        var g = TinyModels.WriteGpt2(Sub("g"), nLayer: 2, options: new TinyModelOptions { ExtraBuffers = false });
        var n = TinyModels.WriteNeoX(Sub("n"), nLayer: 2, options: new TinyModelOptions { ExtraBuffers = false });
        foreach (var dir in new[] { g, n })
        {
            using var file = SafeTensorsFile.Open(Path.Combine(dir, "model.safetensors"));
            using var model = ModelLoader.FromPretrained(dir);
            var keys = model.state_dict().ToDictionary(kv => kv.Key, kv => kv.Value.shape);
            Assert.Equal(file.Names.OrderBy(k => k, StringComparer.Ordinal), keys.Keys.OrderBy(k => k, StringComparer.Ordinal));
            foreach (var (k, shape) in keys) Assert.Equal(file.Info(k).Shape, shape);
        }
        using var gm = ModelLoader.FromPretrained(g);
        Assert.Equal(new long[] { 16, 48 }, gm.state_dict()["transformer.h.0.attn.c_attn.weight"].shape); // Conv1D [in, out]
    }

    [Fact]
    public void PrefixedAndUnprefixedKeysLoadTheSameModel()
    {
        using var a = ModelLoader.FromPretrained(TinyModels.WriteGpt2(Sub("a"), seed: 3));
        using var b = ModelLoader.FromPretrained(TinyModels.WriteGpt2(Sub("b"), seed: 3, options: new TinyModelOptions { Prefixed = false }));
        Assert.True(a.Forward(Toks).equal(b.Forward(Toks)).all().item<bool>());
        using var c = ModelLoader.FromPretrained(TinyModels.WriteNeoX(Sub("c"), seed: 3));
        using var d = ModelLoader.FromPretrained(TinyModels.WriteNeoX(Sub("d"), seed: 3, options: new TinyModelOptions { Prefixed = false }));
        Assert.True(c.Forward(Toks).equal(d.Forward(Toks)).all().item<bool>());
        Assert.Contains("embed_out.weight", SafeTensorsFile.Open(Path.Combine(Sub("d"), "model.safetensors")).Names);
    }

    [Fact]
    public void ShardedIndexLoadsLikeSingleFile()
    {
        var single = TinyModels.WriteNeoX(Sub("s"), seed: 6, parallelResidual: false);
        var sharded = TinyModels.WriteNeoX(Sub("sh"), seed: 6, parallelResidual: false, options: new TinyModelOptions { Shards = 3 });
        Assert.False(File.Exists(Path.Combine(sharded, "model.safetensors")));
        var index = JsonNode.Parse(File.ReadAllText(Path.Combine(sharded, "model.safetensors.index.json")))!;
        Assert.Equal(3, index["weight_map"]!.AsObject().Select(kv => kv.Value!.ToString()).Distinct().Count());
        using var a = ModelLoader.FromPretrained(single);
        using var b = ModelLoader.FromPretrained(sharded);
        Assert.True(a.Forward(Toks).equal(b.Forward(Toks)).all().item<bool>());
    }

    [Theory]
    [InlineData(ScalarType.Float16)]
    [InlineData(ScalarType.BFloat16)]
    public void HalfPrecisionWeightsLoadIntoFloat32(ScalarType stored)
    {
        var half = TinyModels.WriteGpt2(Sub("h"), seed: 8, options: new TinyModelOptions { Dtype = stored });
        using (var f = SafeTensorsFile.Open(Path.Combine(half, "model.safetensors")))
            Assert.Equal(stored, f.Info("transformer.h.0.mlp.c_fc.weight").ScalarType);
        // The same weights widened to float32 by hand, in a second folder.
        var wide = Sub("w");
        Directory.CreateDirectory(wide);
        File.Copy(Path.Combine(half, "config.json"), Path.Combine(wide, "config.json"));
        var w = SafeTensors.Load(Path.Combine(half, "model.safetensors"));
        SafeTensors.Save(Path.Combine(wide, "model.safetensors"), w.ToDictionary(kv => kv.Key, kv => kv.Value.is_floating_point() ? kv.Value.to(ScalarType.Float32) : kv.Value));
        using var a = ModelLoader.FromPretrained(half);
        using var b = ModelLoader.FromPretrained(wide);
        Assert.Equal(ScalarType.Float32, a.state_dict()["transformer.wte.weight"].dtype);
        Assert.True(a.Forward(Toks).equal(b.Forward(Toks)).all().item<bool>());
    }

    [Fact]
    public void ArchitectureIsChosenFromArchitecturesWhenModelTypeIsAbsent()
    {
        var dir = TinyModels.WriteNeoX(Sub("n"));
        var path = Path.Combine(dir, "config.json");
        var cfg = JsonNode.Parse(File.ReadAllText(path))!.AsObject();
        cfg.Remove("model_type");
        File.WriteAllText(path, cfg.ToJsonString());
        using var m = ModelLoader.FromPretrained(dir);
        Assert.IsType<GptNeoXModel>(m);
        Assert.Equal("gpt_neox", m.Config.Architecture);
        Assert.Equal(64, m.Config.NCtx);
        Assert.Equal(64, m.Config.DVocab);
        Assert.Equal(2, m.Config.NLayers);
        Assert.Equal(16, m.Config.DModel);
    }

    [Fact]
    public void MissingWeightIsNamed()
    {
        var dir = TinyModels.WriteGpt2(Sub("m"));
        var path = Path.Combine(dir, "model.safetensors");
        var w = SafeTensors.Load(path);
        w.Remove("transformer.h.1.mlp.c_fc.bias");
        SafeTensors.Save(path, w);
        var e = Assert.Throws<SaeSharpException>(() => ModelLoader.FromPretrained(dir));
        Assert.Contains("transformer.h.1.mlp.c_fc.bias", e.Message);
        Assert.Contains("[64]", e.Message);
    }

    [Fact]
    public void MisshapedWeightNamesKeyAndBothShapes()
    {
        var dir = TinyModels.WriteNeoX(Sub("m"), hiddenSize: 16, intermediateSize: 24);
        var path = Path.Combine(dir, "model.safetensors");
        var w = SafeTensors.Load(path);
        w["gpt_neox.layers.0.mlp.dense_h_to_4h.weight"] = zeros(16, 24);
        SafeTensors.Save(path, w);
        var e = Assert.Throws<SaeSharpException>(() => ModelLoader.FromPretrained(dir));
        Assert.Contains("gpt_neox.layers.0.mlp.dense_h_to_4h.weight", e.Message);
        Assert.Contains("[16, 24]", e.Message);
        Assert.Contains("[24, 16]", e.Message);
    }

    [Fact]
    public void UnexpectedWeightIsAnError()
    {
        var dir = TinyModels.WriteGpt2(Sub("u"));
        var path = Path.Combine(dir, "model.safetensors");
        var w = SafeTensors.Load(path);
        w["transformer.h.0.mlp.gate.weight"] = zeros(2);
        SafeTensors.Save(path, w);
        var e = Assert.Throws<SaeSharpException>(() => ModelLoader.FromPretrained(dir));
        Assert.Contains("transformer.h.0.mlp.gate.weight", e.Message);
    }

    [Fact]
    public void BadFoldersGiveClearErrors()
    {
        Assert.Contains("not found", Assert.Throws<SaeSharpException>(() => ModelLoader.FromPretrained(Sub("none"))).Message);
        // A name the CLI takes (a hub id, builtin) says what the library call needs instead.
        var named = Assert.Throws<SaeSharpException>(() => ModelLoader.FromPretrained("builtin")).Message;
        Assert.Contains("HfHub.Resolve", named);
        Assert.Contains("BuiltinModel.Folder", named);
        var empty = Sub("empty");
        Directory.CreateDirectory(empty);
        Assert.Contains("config.json", Assert.Throws<SaeSharpException>(() => ModelLoader.FromPretrained(empty)).Message);
        File.WriteAllText(Path.Combine(empty, "config.json"), "{\"model_type\":\"mamba\"}");
        Assert.Contains("mamba", Assert.Throws<SaeSharpException>(() => ModelLoader.FromPretrained(empty)).Message);
        File.WriteAllText(Path.Combine(empty, "config.json"), "{\"model_type\":\"gpt2\",\"n_embd\":8,\"n_layer\":1,\"n_head\":2}");
        Assert.Contains("model.safetensors", Assert.Throws<SaeSharpException>(() => ModelLoader.FromPretrained(empty)).Message);
    }

    [Fact]
    public void InputsAreValidated()
    {
        using var m = Gpt2(nPositions: 8);
        Assert.Contains("outside the vocabulary", Assert.Throws<SaeSharpException>(() => m.Forward(tensor(new long[] { 1, 50 }).unsqueeze(0))).Message);
        Assert.Contains("[batch, pos]", Assert.Throws<SaeSharpException>(() => m.Forward(tensor(new long[] { 1, 2 }))).Message);
        Assert.Contains("n_ctx=8", Assert.Throws<SaeSharpException>(() => m.Forward(zeros(1, 9, dtype: ScalarType.Int64))).Message);
        Assert.Contains("attention mask", Assert.Throws<SaeSharpException>(() => m.Forward(zeros(1, 3, dtype: ScalarType.Int64), ones(1, 4))).Message);
    }

    [Theory]
    [InlineData(ScalarType.Float16, 0.05)]
    [InlineData(ScalarType.BFloat16, 0.3)]
    [InlineData(ScalarType.Float64, 1e-5)]
    public void ModelsRunInAChosenDtype(ScalarType dtype, double atol)
    {
        var dir = TinyModels.WriteNeoX(Sub("d"), seed: 21);
        using var f32 = ModelLoader.FromPretrained(dir);
        using var other = ModelLoader.FromPretrained(dir, dtype);
        Assert.Equal(dtype, other.Config.Dtype);
        Assert.Equal(dtype, other.state_dict()["embed_out.weight"].dtype);
        var logits = other.Forward(Toks);
        // Half-precision models return float32 logits; a float64 model keeps float64 (exact gradients for checks).
        Assert.Equal(dtype == ScalarType.Float64 ? ScalarType.Float64 : ScalarType.Float32, logits.dtype);
        AssertAllClose(f32.Forward(Toks), logits, atol, dtype.ToString());
    }

    [Fact]
    public void CacheSavesToSafetensorsAndReloads()
    {
        // What `sae model run --hooks ...` does: resolve the hook list, stop as early as possible, save the cache.
        using var m = NeoX(parallel: true);
        var names = m.HookPoints.Select("gpt_neox.layers.0.mlp:in,blocks.0.hook_resid_post");
        var (logits, cache) = m.RunWithCache(Toks, names, stopAtLayer: m.HookPoints.StopAtLayerFor(names));
        Assert.Null(logits);
        var path = Path.Combine(Dir, "acts.safetensors");
        using (cache) SafeTensors.Save(path, cache);
        var back = SafeTensors.Load(path);
        Assert.Equal(new[] { "blocks.0.hook_resid_post", "blocks.0.ln2.hook_normalized" }, back.Keys.OrderBy(k => k, StringComparer.Ordinal));
        var (_, full) = m.RunWithCache(Toks);
        using (full)
            foreach (var (k, t) in back) Assert.True(full[k].equal(t).all().item<bool>(), k);
    }

    /// <summary>Writes float32 tensors as a torch.save zip (a dict of _rebuild_tensor_v2 entries, one storage each).</summary>
    private static void WriteTorchBin(string path, IEnumerable<KeyValuePair<string, Tensor>> tensors)
    {
        var w = new PickleWriter().Proto(2).EmptyDict().Mark();
        var storages = new Dictionary<string, byte[]>();
        int i = 0;
        foreach (var (name, t) in tensors)
        {
            var c = t.to(ScalarType.Float32).contiguous();
            var shape = c.shape;
            var stride = Enumerable.Range(0, shape.Length).Select(d => shape.Skip(d + 1).Aggregate(1L, (a, b) => a * b)).ToArray();
            string key = (i++).ToString(System.Globalization.CultureInfo.InvariantCulture);
            w.Str(name).Tensor("FloatStorage", key, c.numel(), 0, shape, stride);
            storages[key] = c.data<float>().ToArray().SelectMany(BitConverter.GetBytes).ToArray();
        }
        PickleWriter.WriteCheckpoint(path, w.SetItems().Stop().ToArray(), storages);
    }

    [Fact]
    public void PytorchModelBinLoadsLikeSafetensors()
    {
        var st = TinyModels.WriteNeoX(Sub("st"), seed: 31, options: new TinyModelOptions { ExtraBuffers = false });
        var w = SafeTensors.Load(Path.Combine(st, "model.safetensors"));
        using var reference = ModelLoader.FromPretrained(st);

        var bin = Sub("bin");
        Directory.CreateDirectory(bin);
        File.Copy(Path.Combine(st, "config.json"), Path.Combine(bin, "config.json"));
        WriteTorchBin(Path.Combine(bin, "pytorch_model.bin"), w);
        using (var m = ModelLoader.FromPretrained(bin))
            Assert.True(reference.Forward(Toks).equal(m.Forward(Toks)).all().item<bool>());

        // Sharded: two .bin files and pytorch_model.bin.index.json.
        var sharded = Sub("binsh");
        Directory.CreateDirectory(sharded);
        File.Copy(Path.Combine(st, "config.json"), Path.Combine(sharded, "config.json"));
        var keys = w.Keys.ToList();
        var map = new JsonObject();
        for (int s = 0; s < 2; s++)
        {
            string file = $"pytorch_model-0000{s + 1}-of-00002.bin";
            var part = keys.Where((_, i) => i % 2 == s).ToList();
            WriteTorchBin(Path.Combine(sharded, file), part.Select(k => new KeyValuePair<string, Tensor>(k, w[k])));
            foreach (var k in part) map[k] = file;
        }
        File.WriteAllText(Path.Combine(sharded, "pytorch_model.bin.index.json"), new JsonObject { ["weight_map"] = map }.ToJsonString());
        using (var m = ModelLoader.FromPretrained(sharded))
            Assert.True(reference.Forward(Toks).equal(m.Forward(Toks)).all().item<bool>());
    }

    /// <summary>TorchSharp says only "Tensor invalid -- empty handle" for disposed tokens or a disposed model.</summary>
    [Fact]
    public void Disposed_tokens_or_a_disposed_model_are_named_as_such()
    {
        var model = Gpt2();
        var tokens = tensor(new long[] { 1, 2, 3 }).unsqueeze(0);
        tokens.Dispose();
        Assert.Equal("tokens: the tensor has been disposed", Assert.Throws<SaeSharpException>(() => model.Forward(tokens)).Message);
        model.Dispose();
        Assert.Throws<ObjectDisposedException>(() => model.Forward(Toks));
        Assert.Throws<ObjectDisposedException>(() => model.RunWithCache(Toks, ["blocks.0.hook_resid_post"]));
    }
}
