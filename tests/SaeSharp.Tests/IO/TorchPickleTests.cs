using System.IO.Compression;
using System.Numerics;
using System.Text;
using SaeSharp.IO;
using TorchSharp;
using static TorchSharp.torch;

namespace SaeSharp.Tests.IO;

/// <summary>Hand-assembles pickle byte streams, opcode by opcode, so tests control exactly what the
/// unpickler sees (no Python, no torch needed).</summary>
internal sealed class PickleWriter
{
    readonly MemoryStream _s = new();

    public PickleWriter Op(params byte[] bytes) { _s.Write(bytes); return this; }
    public PickleWriter Proto(int p) => Op(0x80, (byte)p);
    public PickleWriter Mark() => Op((byte)'(');
    public PickleWriter Tuple() => Op((byte)'t');
    public PickleWriter EmptyTuple() => Op((byte)')');
    public PickleWriter EmptyDict() => Op((byte)'}');
    public PickleWriter SetItems() => Op((byte)'u');
    public PickleWriter Reduce() => Op((byte)'R');
    public PickleWriter Stop() => Op((byte)'.');
    public PickleWriter False() => Op(0x89);

    public PickleWriter Global(string module, string name) =>
        Op((byte)'c').Op(Encoding.ASCII.GetBytes($"{module}\n{name}\n"));

    public PickleWriter Str(string s)
    {
        var b = Encoding.UTF8.GetBytes(s);
        Op((byte)'X').Op(BitConverter.GetBytes((uint)b.Length));
        return Op(b);
    }

    public PickleWriter Int(long v)
    {
        if (v is >= 0 and < 256) return Op((byte)'K', (byte)v);
        return Op((byte)'J').Op(BitConverter.GetBytes((int)v));
    }

    public PickleWriter IntTuple(params long[] values)
    {
        Mark();
        foreach (var v in values) Int(v);
        return Tuple();
    }

    /// <summary>The exact pattern torch.save emits for a tensor: _rebuild_tensor_v2(persistent storage, offset, size, stride, False, OrderedDict()).</summary>
    public PickleWriter Tensor(string storageType, string key, long numel, long offset, long[] size, long[] stride)
    {
        Global("torch._utils", "_rebuild_tensor_v2");
        Mark();
        Mark().Str("storage").Global("torch", storageType).Str(key).Str("cpu").Int(numel).Tuple().Op((byte)'Q');
        Int(offset).IntTuple(size).IntTuple(stride).False();
        Global("collections", "OrderedDict").EmptyTuple().Reduce();
        Tuple();
        return Reduce();
    }

    public byte[] ToArray() => _s.ToArray();

    /// <summary>Writes a torch-style zip: archive/data.pkl, archive/data/&lt;key&gt; for each storage, archive/version.</summary>
    public static void WriteCheckpoint(string path, byte[] pickle, IDictionary<string, byte[]>? storages = null)
    {
        using var zip = ZipFile.Open(path, ZipArchiveMode.Create);
        void Add(string name, byte[] content)
        {
            var e = zip.CreateEntry(name, CompressionLevel.NoCompression);
            using var s = e.Open();
            s.Write(content);
        }
        Add("archive/data.pkl", pickle);
        foreach (var (key, bytes) in storages ?? new Dictionary<string, byte[]>()) Add("archive/data/" + key, bytes);
        Add("archive/version", "3\n"u8.ToArray());
    }
}

public sealed class TorchPickleTests : IDisposable
{
    static readonly string Fixtures = Path.Combine(SaeSharp.Tests.Tokenizers.TestPaths.Data(), "dictionary_learning");
    readonly string _dir = Directory.CreateTempSubdirectory("saesharp-pickle-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);


    static byte[] Floats(params float[] v) => v.SelectMany(BitConverter.GetBytes).ToArray();

    string Write(byte[] pickle, IDictionary<string, byte[]>? storages = null, string name = "ckpt.pt")
    {
        var path = Path.Combine(_dir, name);
        PickleWriter.WriteCheckpoint(path, pickle, storages);
        return path;
    }

    // ---- fixtures written by real torch.save (PyTorch 1.13.1)

    // (key, shape, sum, first, last) computed independently with Python's struct module from the raw storages.
    public static TheoryData<string, string, long[], double, double, double> FixtureTensors => new()
    {
        { "AutoEncoder", "bias", [32], -0.39529081399086863, 0.0665697306394577, 0.17962200939655304 },
        { "AutoEncoder", "encoder.weight", [128, 32], -5.618532776512438, -0.06886421889066696, -0.0793531984090805 },
        { "AutoEncoder", "encoder.bias", [128], -0.1257072796142893, -0.04408218711614609, 0.1500704288482666 },
        { "AutoEncoder", "decoder.weight", [32, 128], 2.2719408016128, -0.06540146470069885, 0.05108345299959183 },
        { "GatedAutoEncoder", "decoder_bias", [32], 0.06157414976041764, -0.009683703072369099, 0.03685944527387619 },
        { "GatedAutoEncoder", "r_mag", [128], 2.841969713161234, -0.1610102653503418, -0.19620735943317413 },
        { "GatedAutoEncoder", "gate_bias", [128], -0.5487179322444717, -0.11836539953947067, 0.12979063391685486 },
        { "GatedAutoEncoder", "mag_bias", [128], -1.233265383518301, -0.06082449480891228, -0.021611345931887627 },
        { "GatedAutoEncoder", "encoder.weight", [128, 32], 12.585376659149915, 0.007715992163866758, 0.08671557903289795 },
        { "GatedAutoEncoder", "decoder.weight", [32, 128], 0.36388185424038966, -0.02250818721950054, 0.03423730656504631 },
        { "JumpReluAutoEncoder", "W_enc", [32, 128], -16.811604963244463, 0.2722490131855011, -0.15422801673412323 },
        { "JumpReluAutoEncoder", "b_enc", [128], 0.9165493577311281, 0.06307721883058548, -0.049730438739061356 },
        { "JumpReluAutoEncoder", "W_dec", [128, 32], -11.877512264718462, -0.26166418194770813, 0.033865462988615036 },
        { "JumpReluAutoEncoder", "b_dec", [32], -0.4501637383364141, 0.15970663726329803, 0.02371782250702381 },
        { "JumpReluAutoEncoder", "threshold", [128], 18.553673422895372, 0.04670237377285957, 0.15644533932209015 },
        { "AutoEncoderTopK", "b_dec", [32], 0.4370632023201324, -0.10084182024002075, 0.03320031985640526 },
        { "AutoEncoderTopK", "threshold", [], -1.0, -1.0, -1.0 },
        { "AutoEncoderTopK", "decoder.weight", [32, 128], 2.7716096932399523, -0.06730947643518448, 0.029680252075195312 },
        { "AutoEncoderTopK", "encoder.weight", [128, 32], -4.764541437802109, -0.1216646283864975, -0.02940739318728447 },
        { "AutoEncoderTopK", "encoder.bias", [128], -0.7701828910503536, -0.05553266406059265, 0.10241186618804932 },
        { "BatchTopKSAE", "b_dec", [32], -0.1286052067298442, 0.1234206110239029, -0.05522436648607254 },
        { "BatchTopKSAE", "threshold", [], 0.15000000596046448, 0.15000000596046448, 0.15000000596046448 },
        { "BatchTopKSAE", "decoder.weight", [32, 128], 1.7106887211393769, -0.03258781507611275, -0.07107909023761749 },
        { "BatchTopKSAE", "encoder.weight", [128, 32], -0.4871488304961531, 0.043739620596170425, -0.10277563333511353 },
        { "BatchTopKSAE", "encoder.bias", [128], -1.1110593997873366, 0.005488025490194559, 0.020982956513762474 },
    };

    [Theory]
    [MemberData(nameof(FixtureTensors))]
    public void Fixture_tensor_has_expected_shape_and_values(string arch, string key, long[] shape, double sum, double first, double last)
    {
        using var ckpt = TorchPickle.Load(Path.Combine(Fixtures, arch, "ae.pt"));
        var t = ckpt.GetTensor(key);
        Assert.Equal(shape, t.shape);
        Assert.Equal(ScalarType.Float32, t.dtype);
        using var flat = t.reshape(-1);
        Assert.Equal(first, flat[0].ToSingle(), 6);
        Assert.Equal(last, flat[-1].ToSingle(), 6);
        Assert.Equal(sum, flat.sum().ToDouble(), 4);
    }

    [Theory]
    [InlineData("AutoEncoder", new[] { "bias", "encoder.weight", "encoder.bias", "decoder.weight" })]
    [InlineData("GatedAutoEncoder", new[] { "decoder_bias", "r_mag", "gate_bias", "mag_bias", "encoder.weight", "decoder.weight" })]
    [InlineData("JumpReluAutoEncoder", new[] { "W_enc", "b_enc", "W_dec", "b_dec", "threshold" })]
    [InlineData("AutoEncoderTopK", new[] { "b_dec", "k", "threshold", "decoder.weight", "encoder.weight", "encoder.bias" })]
    [InlineData("BatchTopKSAE", new[] { "b_dec", "k", "threshold", "decoder.weight", "encoder.weight", "encoder.bias" })]
    public void Fixture_state_dict_has_exactly_the_module_keys_in_file_order(string arch, string[] keys)
    {
        var sd = TorchPickle.LoadStateDict(Path.Combine(Fixtures, arch, "ae.pt"));
        try
        {
            Assert.Equal(keys, sd.Keys.ToArray());
        }
        finally
        {
            foreach (var t in sd.Values) t.Dispose();
        }
    }

    [Theory]
    [InlineData("AutoEncoderTopK")]
    [InlineData("BatchTopKSAE")]
    public void TopK_k_is_an_int32_scalar_buffer_equal_to_8(string arch)
    {
        using var ckpt = TorchPickle.Load(Path.Combine(Fixtures, arch, "ae.pt"));
        var k = ckpt.GetTensor("k");
        Assert.Equal(ScalarType.Int32, k.dtype);
        Assert.Empty(k.shape);
        Assert.Equal(8, k.ToInt32());
    }

    [Fact]
    public void Loading_leaks_no_tensors_and_the_checkpoint_owns_what_it_returns() => LiveTensors.OnOwnThread(() =>
    {
        TorchPickle.Load(Path.Combine(Fixtures, "AutoEncoder", "ae.pt")).Dispose(); // warm-up: lazily created state
        long before = DisposeScopeManager.Statistics.ThreadTotalLiveCount;
        Tensor bias;
        using (var ckpt = TorchPickle.Load(Path.Combine(Fixtures, "AutoEncoder", "ae.pt")))
        {
            bias = ckpt.GetTensor("bias");
            Assert.Equal(before + 4, DisposeScopeManager.Statistics.ThreadTotalLiveCount);
        }
        Assert.True(bias.IsInvalid);
        Assert.Equal(before, DisposeScopeManager.Statistics.ThreadTotalLiveCount);
    });

    // ---- hand-written pickles: layout, dtypes, plain values

    [Fact]
    public void Non_contiguous_stride_and_storage_offset_give_the_right_values()
    {
        // storage = 0..11; view size (2,3) stride (1,2) offset 1 → t[i,j] = storage[1 + i + 2j]
        var pickle = new PickleWriter().Proto(2).EmptyDict().Mark()
            .Str("w").Tensor("FloatStorage", "0", 12, 1, [2, 3], [1, 2])
            .Str("s").Tensor("FloatStorage", "0", 12, 11, [], [])
            .SetItems().Stop().ToArray();
        var path = Write(pickle, new Dictionary<string, byte[]> { ["0"] = Floats(Enumerable.Range(0, 12).Select(i => (float)i).ToArray()) });

        using var ckpt = TorchPickle.Load(path);
        var w = ckpt.GetTensor("w");
        Assert.Equal(new long[] { 2, 3 }, w.shape);
        Assert.True(w.is_contiguous());
        Assert.Equal(new float[] { 1, 3, 5, 2, 4, 6 }, w.data<float>().ToArray());
        Assert.Equal(11f, ckpt.GetTensor("s").ToSingle());
    }

    [Theory]
    [InlineData("HalfStorage", ScalarType.Float16)]
    [InlineData("BFloat16Storage", ScalarType.BFloat16)]
    [InlineData("DoubleStorage", ScalarType.Float64)]
    [InlineData("LongStorage", ScalarType.Int64)]
    [InlineData("CharStorage", ScalarType.Int8)]
    [InlineData("ByteStorage", ScalarType.Byte)]
    [InlineData("BoolStorage", ScalarType.Bool)]
    public void Storage_types_map_to_their_dtypes(string storageType, ScalarType dtype)
    {
        // Element values 1 and 0 encoded by hand for each format (little-endian).
        byte[] one = dtype switch
        {
            ScalarType.Float16 => [0x00, 0x3C],
            ScalarType.BFloat16 => [0x80, 0x3F],
            ScalarType.Float64 => BitConverter.GetBytes(1.0),
            ScalarType.Int64 => BitConverter.GetBytes(1L),
            _ => [1],
        };
        var bytes = one.Concat(new byte[one.Length]).ToArray();
        var pickle = new PickleWriter().Proto(2).EmptyDict().Mark()
            .Str("t").Tensor(storageType, "0", 2, 0, [2], [1]).SetItems().Stop().ToArray();
        using var ckpt = TorchPickle.Load(Write(pickle, new Dictionary<string, byte[]> { ["0"] = bytes }));
        var t = ckpt.GetTensor("t");
        Assert.Equal(dtype, t.dtype);
        using var d = t.to_type(ScalarType.Float64);
        Assert.Equal(new[] { 1.0, 0.0 }, d.data<double>().ToArray());
    }

    [Fact]
    public void Rebuild_tensor_v3_reinterprets_an_untyped_storage_with_the_given_dtype()
    {
        var w = new PickleWriter().Proto(2);
        w.Global("torch._utils", "_rebuild_tensor_v3").Mark();
        w.Mark().Str("storage").Global("torch", "UntypedStorage").Str("0").Str("cpu").Int(8).Tuple().Op((byte)'Q');
        w.Int(0).IntTuple(2).IntTuple(1).False().Global("collections", "OrderedDict").EmptyTuple().Reduce()
            .Global("torch", "float32").Tuple().Reduce().Stop();
        using var ckpt = TorchPickle.Load(Write(w.ToArray(), new Dictionary<string, byte[]> { ["0"] = Floats(2.5f, -3f) }));
        var t = Assert.IsType<Tensor>(ckpt.Root);
        Assert.Equal(ScalarType.Float32, t.dtype);
        Assert.Equal(new[] { 2.5f, -3f }, t.data<float>().ToArray());
    }

    [Fact]
    public void Non_tensor_entries_like_OpenAI_activation_are_plain_data_and_left_out_of_the_state_dict()
    {
        // {'pre_bias': tensor, 'activation': 'TopK', 'activation_state_dict': {'k': 32, 'postact_fn': 'ReLU'}}
        var pickle = new PickleWriter().Proto(2).Global("collections", "OrderedDict").EmptyTuple().Reduce().Mark()
            .Str("pre_bias").Tensor("FloatStorage", "0", 2, 0, [2], [1])
            .Str("activation").Str("TopK")
            .Str("activation_state_dict").EmptyDict().Mark().Str("k").Int(32).Str("postact_fn").Str("ReLU").SetItems()
            .SetItems().Stop().ToArray();
        var path = Write(pickle, new Dictionary<string, byte[]> { ["0"] = Floats(1f, 2f) });

        using (var ckpt = TorchPickle.Load(path))
        {
            Assert.Equal(["pre_bias", "activation", "activation_state_dict"], ckpt.Entries.Keys.ToArray());
            Assert.Equal("TopK", ckpt.Values["activation"]);
            var act = Assert.IsType<OrderedDictionary<object, object?>>(ckpt.Values["activation_state_dict"]);
            Assert.Equal(32L, act["k"]);
            Assert.Equal("ReLU", act["postact_fn"]);
            Assert.Equal(["pre_bias"], ckpt.Tensors.Keys.ToArray());
        }

        var sd = TorchPickle.LoadStateDict(path);
        Assert.Equal(["pre_bias"], sd.Keys.ToArray());
        Assert.Equal(new[] { 1f, 2f }, sd["pre_bias"].data<float>().ToArray());
        sd["pre_bias"].Dispose();
    }

    [Fact]
    public void Protocol_4_primitives_are_decoded()
    {
        // [None, True, 2**70, -1.5, b'ab', ('x', 'x'), {'s'}, 300] using FRAME, SHORT_BINUNICODE, MEMOIZE, BINGET, LONG1, BINFLOAT, SHORT_BINBYTES, EMPTY_SET
        var w = new PickleWriter().Proto(4).Op(0x95).Op(BitConverter.GetBytes(0L)).Op((byte)']').Op(0x94).Mark();
        w.Op((byte)'N').Op(0x88);
        var big = (BigInteger.One << 70).ToByteArray();
        w.Op(0x8a, (byte)big.Length).Op(big);
        w.Op((byte)'G').Op(BitConverter.GetBytes(-1.5).Reverse().ToArray());
        w.Op((byte)'C', 2, (byte)'a', (byte)'b');
        w.Op(0x8c, 1, (byte)'x').Op(0x94).Op((byte)'h', 1).Op(0x86);
        w.Op(0x8f).Mark().Op(0x8c, 1, (byte)'s').Op(0x90);
        w.Op((byte)'M').Op(BitConverter.GetBytes((ushort)300));
        w.Op((byte)'e').Stop();
        using var ckpt = TorchPickle.Load(Write(w.ToArray()));
        var list = Assert.IsType<List<object?>>(ckpt.Root);
        Assert.Null(list[0]);
        Assert.Equal(true, list[1]);
        Assert.Equal(BigInteger.Pow(2, 70), list[2]);
        Assert.Equal(-1.5, list[3]);
        Assert.Equal("ab"u8.ToArray(), list[4]);
        Assert.Equal(new object?[] { "x", "x" }, list[5]);
        Assert.Contains("s", Assert.IsType<HashSet<object>>(list[6]));
        Assert.Equal(300L, list[7]);
    }

    [Fact]
    public void Integers_that_fit_in_64_bits_decode_as_long_from_every_integer_opcode()
    {
        // [2**40 (LONG1), -7 (text LONG "-7L"), 5 (text INT), -2**63 (LONG1), 2**63 (LONG1: too wide, stays a BigInteger)]
        PickleWriter Long1(PickleWriter w, BigInteger v) { var b = v.ToByteArray(); return w.Op(0x8a, (byte)b.Length).Op(b); }
        var w = new PickleWriter().Proto(2).Op((byte)']').Mark();
        Long1(w, BigInteger.One << 40);
        w.Op((byte)'L').Op("-7L\n"u8.ToArray());
        w.Op((byte)'I').Op("5\n"u8.ToArray());
        Long1(w, BigInteger.MinusOne << 63);
        Long1(w, BigInteger.One << 63);
        w.Op((byte)'e').Stop();
        using var ckpt = TorchPickle.Load(Write(w.ToArray()));
        var list = Assert.IsType<List<object?>>(ckpt.Root);
        Assert.Equal(1L << 40, Assert.IsType<long>(list[0]));
        Assert.Equal(-7L, Assert.IsType<long>(list[1]));
        Assert.Equal(5L, Assert.IsType<long>(list[2]));
        Assert.Equal(long.MinValue, Assert.IsType<long>(list[3]));
        Assert.Equal(BigInteger.One << 63, Assert.IsType<BigInteger>(list[4]));
    }

    // ---- hostile and broken files

    [Fact]
    public void Posix_system_global_is_refused_naming_file_and_global()
    {
        var pickle = new PickleWriter().Proto(2).Global("posix", "system").Mark().Str("touch /tmp/pwned").Tuple().Reduce().Stop().ToArray();
        var path = Write(pickle);
        var e = Assert.Throws<SaeSharpException>(() => TorchPickle.Load(path));
        Assert.Contains("posix.system", e.Message);
        Assert.Contains(path, e.Message);
    }

    [Fact]
    public void Builtins_eval_through_stack_global_is_refused()
    {
        var pickle = new PickleWriter().Proto(4).Op(0x8c, 8).Op("builtins"u8.ToArray()).Op(0x8c, 4).Op("eval"u8.ToArray()).Op(0x93)
            .Mark().Str("__import__('os')").Tuple().Reduce().Stop().ToArray();
        var e = Assert.Throws<SaeSharpException>(() => TorchPickle.Load(Write(pickle)));
        Assert.Contains("builtins.eval", e.Message);
    }

    [Theory]
    [InlineData("subprocess", "Popen")]
    [InlineData("os", "system")]
    [InlineData("torch.nn.modules.linear", "Linear")]
    [InlineData("numpy.core.multiarray", "_reconstruct")]
    public void Globals_outside_the_allow_list_are_refused_even_inside_a_state_dict(string module, string name)
    {
        var pickle = new PickleWriter().Proto(2).EmptyDict().Mark()
            .Str("w").Tensor("FloatStorage", "0", 2, 0, [2], [1])
            .Str("evil").Global(module, name).EmptyTuple().Reduce()
            .SetItems().Stop().ToArray();
        var e = Assert.Throws<SaeSharpException>(() => TorchPickle.Load(Write(pickle, new Dictionary<string, byte[]> { ["0"] = Floats(1, 2) })));
        Assert.Contains($"{module}.{name}", e.Message);
    }

    [Fact]
    public void Inst_opcode_is_refused()
    {
        var pickle = new PickleWriter().Proto(2).Mark().Str("id").Op((byte)'i').Op("os\nsystem\n"u8.ToArray()).Stop().ToArray();
        var e = Assert.Throws<SaeSharpException>(() => TorchPickle.Load(Write(pickle)));
        Assert.Contains("INST", e.Message);
    }

    [Fact]
    public void Build_on_a_list_is_refused()
    {
        var pickle = new PickleWriter().Proto(2).Op((byte)']').EmptyDict().Op((byte)'b').Stop().ToArray();
        var e = Assert.Throws<SaeSharpException>(() => TorchPickle.Load(Write(pickle)));
        Assert.Contains("BUILD", e.Message);
    }

    [Fact]
    public void Truncated_zip_is_refused()
    {
        var bytes = File.ReadAllBytes(Path.Combine(Fixtures, "AutoEncoder", "ae.pt"));
        var path = Path.Combine(_dir, "truncated.pt");
        File.WriteAllBytes(path, bytes[..(bytes.Length / 2)]);
        var e = Assert.Throws<SaeSharpException>(() => TorchPickle.Load(path));
        Assert.Contains(path, e.Message);
        Assert.Contains("truncated or corrupt", e.Message);
    }

    [Fact]
    public void Missing_storage_file_is_reported_by_name()
    {
        var pickle = new PickleWriter().Proto(2).EmptyDict().Mark()
            .Str("w").Tensor("FloatStorage", "7", 2, 0, [2], [1]).SetItems().Stop().ToArray();
        var e = Assert.Throws<SaeSharpException>(() => TorchPickle.Load(Write(pickle)));
        Assert.Contains("archive/data/7", e.Message);
        Assert.Contains("missing", e.Message);
    }

    [Fact]
    public void Storage_with_the_wrong_byte_count_is_refused()
    {
        var pickle = new PickleWriter().Proto(2).EmptyDict().Mark()
            .Str("w").Tensor("FloatStorage", "0", 4, 0, [4], [1]).SetItems().Stop().ToArray();
        var e = Assert.Throws<SaeSharpException>(() => TorchPickle.Load(Write(pickle, new Dictionary<string, byte[]> { ["0"] = Floats(1, 2, 3) })));
        Assert.Contains("holds 12 bytes, expected 16", e.Message);
    }

    [Fact]
    public void View_beyond_the_storage_is_refused()
    {
        var pickle = new PickleWriter().Proto(2).EmptyDict().Mark()
            .Str("w").Tensor("FloatStorage", "0", 4, 1, [2, 2], [2, 1]).SetItems().Stop().ToArray();
        var e = Assert.Throws<SaeSharpException>(() => TorchPickle.Load(Write(pickle, new Dictionary<string, byte[]> { ["0"] = Floats(1, 2, 3, 4) })));
        Assert.Contains("reaches element 4", e.Message);
    }

    [Fact]
    public void Pickle_without_stop_is_reported_as_truncated()
    {
        var pickle = new PickleWriter().Proto(2).EmptyDict().Mark().Str("a").ToArray();
        var e = Assert.Throws<SaeSharpException>(() => TorchPickle.Load(Write(pickle)));
        Assert.Contains("truncated", e.Message);
    }

    [Fact]
    public void Legacy_non_zip_format_is_refused_with_advice()
    {
        var path = Path.Combine(_dir, "legacy.pt");
        File.WriteAllBytes(path, [0x80, 0x02, 0x8a, 0x0a, 0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19, (byte)'.']);
        var e = Assert.Throws<SaeSharpException>(() => TorchPickle.Load(path));
        Assert.Contains("legacy", e.Message);
    }

    [Fact]
    public void Zip_without_data_pkl_is_not_a_checkpoint()
    {
        var path = Path.Combine(_dir, "other.zip");
        using (var zip = ZipFile.Open(path, ZipArchiveMode.Create))
        using (var s = zip.CreateEntry("readme.txt").Open()) s.Write("hi"u8);
        var e = Assert.Throws<SaeSharpException>(() => TorchPickle.Load(path));
        Assert.Contains("data.pkl", e.Message);
    }
}
