using System.IO.Compression;
using System.Text;
using SaeSharp.IO;
using TorchSharp;
using static TorchSharp.torch;

namespace SaeSharp.Tests.IO;

public sealed class NpyTests : IDisposable
{
    readonly string _dir = Directory.CreateTempSubdirectory("saesharp-npy-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    string PathOf(string name) => Path.Combine(_dir, name);

    /// <summary>A .npy file assembled by hand: magic, version, header length, header text, data.</summary>
    static byte[] HandWritten(int version, string header, byte[] data)
    {
        var h = Encoding.UTF8.GetBytes(header);
        var ms = new MemoryStream();
        ms.Write([0x93, (byte)'N', (byte)'U', (byte)'M', (byte)'P', (byte)'Y', (byte)version, 0]);
        if (version == 1) ms.Write(BitConverter.GetBytes((ushort)h.Length));
        else ms.Write(BitConverter.GetBytes((uint)h.Length));
        ms.Write(h);
        ms.Write(data);
        return ms.ToArray();
    }

    static void AssertSame(Tensor expected, Tensor actual)
    {
        Assert.Equal(expected.dtype, actual.dtype);
        Assert.Equal(expected.shape, actual.shape);
        using var eq = actual.eq(expected).all();
        Assert.True(eq.ToBoolean());
    }

    static byte[] Floats(params float[] v) => v.SelectMany(BitConverter.GetBytes).ToArray();

    [Fact]
    public void Save_writes_exactly_the_bytes_numpy_save_writes()
    {
        // numpy.save(f, np.arange(6, dtype='<f4').reshape(2, 3)): 128-byte v1.0 header, length 118 ('v').
        using var t = TorchScalars.Arange(6, dtype: ScalarType.Float32).reshape(2, 3);
        var path = PathOf("a.npy");
        Npy.Save(path, t);
        var bytes = File.ReadAllBytes(path);
        string dict = "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }";
        var expectedHeader = new byte[] { 0x93, (byte)'N', (byte)'U', (byte)'M', (byte)'P', (byte)'Y', 1, 0, (byte)'v', 0 }
            .Concat(Encoding.ASCII.GetBytes(dict.PadRight(117) + "\n")).ToArray();
        Assert.Equal(128, expectedHeader.Length);
        Assert.Equal(expectedHeader, bytes[..128]);
        Assert.Equal(Floats(0, 1, 2, 3, 4, 5), bytes[128..]);
    }

    /// <summary>numpy writes the shape as Python's repr of a tuple: a 1-tuple keeps its comma, "(3,)", and the empty
    /// tuple is "()". numpy.load refuses "(3)", which Python reads as the int 3, not a tuple.</summary>
    [Theory]
    [InlineData(new long[] { 3 }, "(3,)")]
    [InlineData(new long[0], "()")]
    public void Save_writes_the_shape_as_numpy_writes_a_tuple(long[] shape, string shapeText)
    {
        // numpy.save(f, np.zeros(shape, dtype='<i8')): dict padded with spaces to a 128-byte v1.0 header, length 118 ('v').
        using var t = torch.zeros(shape, dtype: ScalarType.Int64);
        var path = PathOf("s.npy");
        Npy.Save(path, t);
        var bytes = File.ReadAllBytes(path);
        string dict = "{'descr': '<i8', 'fortran_order': False, 'shape': " + shapeText + ", }";
        var expectedHeader = new byte[] { 0x93, (byte)'N', (byte)'U', (byte)'M', (byte)'P', (byte)'Y', 1, 0, (byte)'v', 0 }
            .Concat(Encoding.ASCII.GetBytes(dict.PadRight(117) + "\n")).ToArray();
        Assert.Equal(expectedHeader, bytes[..128]);
        Assert.Equal(128 + 8 * shape.Aggregate(1L, (a, b) => a * b), bytes.Length);
    }

    [Fact]
    public void A_save_that_fails_leaves_the_previous_file_unchanged()
    {
        var path = PathOf("keep.npy");
        using (var t = TorchScalars.Arange(6, dtype: ScalarType.Float32).reshape(2, 3)) Npy.Save(path, t);
        var before = File.ReadAllBytes(path);
        using var bf16 = torch.ones(4, 4, dtype: ScalarType.BFloat16);
        Assert.ThrowsAny<Exception>(() => Npy.Save(path, bf16));
        Assert.Equal(before, File.ReadAllBytes(path));
        Assert.Equal(["keep.npy"], Directory.GetFiles(_dir).Select(Path.GetFileName));
    }

    [Theory]
    [InlineData(ScalarType.Float32)]
    [InlineData(ScalarType.Float16)]
    [InlineData(ScalarType.Float64)]
    [InlineData(ScalarType.Int64)]
    [InlineData(ScalarType.Bool)]
    public void Round_trip_keeps_dtype_shape_and_values(ScalarType dtype)
    {
        using var src = (TorchScalars.Arange(24, dtype: ScalarType.Float64).reshape(2, 3, 4) % 5 - 2).to_type(dtype);
        var path = PathOf("r.npy");
        Npy.Save(path, src);
        using var back = Npy.Load(path);
        Assert.Equal(dtype, back.dtype);
        Assert.Equal(src.shape, back.shape);
        AssertSame(src, back);
    }

    [Theory]
    [InlineData(new long[0])]
    [InlineData(new long[] { 5 })]
    [InlineData(new long[] { 0, 4 })]
    public void Round_trip_of_scalar_vector_and_empty_shapes(long[] shape)
    {
        using var src = torch.rand(shape);
        var path = PathOf("s.npy");
        Npy.Save(path, src);
        Assert.Equal(shape, Npy.ReadHeader(path).Shape);
        using var back = Npy.Load(path);
        Assert.Equal(shape, back.shape);
        AssertSame(src, back);
    }

    [Fact]
    public void Save_of_a_non_contiguous_tensor_writes_it_in_C_order()
    {
        using var t = TorchScalars.Arange(6, dtype: ScalarType.Float32).reshape(2, 3).t(); // [[0,3],[1,4],[2,5]]
        var path = PathOf("t.npy");
        Npy.Save(path, t);
        using var back = Npy.Load(path);
        Assert.Equal(new float[] { 0, 3, 1, 4, 2, 5 }, back.data<float>().ToArray());
    }

    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(3)]
    public void Hand_written_header_of_each_version_is_read(int version)
    {
        // Unpadded header, double quotes, no trailing comma, extra spaces: all valid Python literals.
        var path = PathOf("h.npy");
        File.WriteAllBytes(path, HandWritten(version, "{\"descr\": \"<f4\",  'fortran_order':False, 'shape': ( 2 , 2 )}\n", Floats(1.5f, -2, 3, 4.25f)));
        var header = Npy.ReadHeader(path);
        Assert.Equal(version, header.Version);
        Assert.Equal("<f4", header.Descr);
        Assert.Equal(new long[] { 2, 2 }, header.Shape);
        using var t = Npy.Load(path);
        Assert.Equal(new float[] { 1.5f, -2, 3, 4.25f }, t.data<float>().ToArray());
    }

    [Fact]
    public void Python2_long_shape_and_half_precision_are_read()
    {
        var path = PathOf("p2.npy");
        // float16 1.0 = 0x3C00, -2.0 = 0xC000
        File.WriteAllBytes(path, HandWritten(1, "{'descr': '<f2', 'fortran_order': False, 'shape': (2L,), }\n", [0x00, 0x3C, 0x00, 0xC0]));
        using var t = Npy.Load(path);
        Assert.Equal(ScalarType.Float16, t.dtype);
        using var f = t.to_type(ScalarType.Float32);
        Assert.Equal(new float[] { 1, -2 }, f.data<float>().ToArray());
    }

    [Fact]
    public void ReadRows_returns_the_requested_slice_of_the_first_axis()
    {
        using var src = TorchScalars.Arange(20, dtype: ScalarType.Float32).reshape(5, 4);
        var path = PathOf("rows.npy");
        Npy.Save(path, src);
        using var rows = Npy.ReadRows(path, 1, 3);
        Assert.Equal(new long[] { 3, 4 }, rows.shape);
        Assert.Equal(Enumerable.Range(4, 12).Select(i => (float)i).ToArray(), rows.data<float>().ToArray());

        using var reader = NpyReader.Open(path);
        Assert.Equal(5, reader.RowCount);
        using var last = reader.ReadRows(4, 1);
        using var first = reader.ReadRows(0, 1);
        Assert.Equal(new float[] { 16, 17, 18, 19 }, last.data<float>().ToArray());
        Assert.Equal(new float[] { 0, 1, 2, 3 }, first.data<float>().ToArray());
        using var none = reader.ReadRows(5, 0);
        Assert.Equal(new long[] { 0, 4 }, none.shape);
    }

    [Fact]
    public void ReadRows_outside_the_array_is_refused()
    {
        using var src = torch.zeros(5, 4);
        var path = PathOf("rows.npy");
        Npy.Save(path, src);
        var e = Assert.Throws<SaeSharpException>(() => Npy.ReadRows(path, 3, 3));
        Assert.Contains("rows [3, 6)", e.Message);
        Assert.Contains("5 rows", e.Message);
    }

    [Fact]
    public void Truncated_data_is_detected_from_the_header_before_reading()
    {
        using var src = torch.zeros(5, 4);
        var path = PathOf("trunc.npy");
        Npy.Save(path, src);
        var bytes = File.ReadAllBytes(path);
        File.WriteAllBytes(path, bytes[..^4]);
        var e = Assert.Throws<SaeSharpException>(() => Npy.ReadRows(path, 0, 1));
        Assert.Contains("truncated", e.Message);
        Assert.Contains(path, e.Message);
        Assert.Contains("80 data bytes", e.Message);
    }

    [Fact]
    public void Truncated_header_is_reported()
    {
        var path = PathOf("th.npy");
        File.WriteAllBytes(path, HandWritten(1, "{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }\n", [])[..30]);
        var e = Assert.Throws<SaeSharpException>(() => Npy.ReadHeader(path));
        Assert.Contains("truncated", e.Message);
    }

    [Theory]
    [InlineData("{'descr': '<f4', 'fortran_order': True, 'shape': (2,), }", "Fortran")]
    [InlineData("{'descr': '>f4', 'fortran_order': False, 'shape': (2,), }", "big-endian")]
    [InlineData("{'descr': '|O', 'fortran_order': False, 'shape': (2,), }", "unsupported .npy dtype '|O'")]
    [InlineData("{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (2,), }", "structured")]
    [InlineData("{'descr': '<f4', 'fortran_order': False}", "'shape'")]
    [InlineData("{'descr': '<f4', 'fortran_order': False, 'shape': (2, x), }", "malformed")]
    public void Unsupported_or_malformed_headers_are_refused_clearly(string header, string expected)
    {
        var path = PathOf("bad.npy");
        File.WriteAllBytes(path, HandWritten(1, header + "\n", Floats(1, 2)));
        var e = Assert.Throws<SaeSharpException>(() => Npy.Load(path));
        Assert.Contains(expected, e.Message);
        Assert.Contains(path, e.Message);
    }

    [Fact]
    public void Not_an_npy_file_is_refused()
    {
        var path = PathOf("x.npy");
        File.WriteAllText(path, "hello world, not numpy");
        var e = Assert.Throws<SaeSharpException>(() => Npy.Load(path));
        Assert.Contains("magic", e.Message);
    }

    [Fact]
    public void Bfloat16_cannot_be_saved()
    {
        using var t = torch.zeros(2, dtype: ScalarType.BFloat16);
        var e = Assert.Throws<SaeSharpException>(() => Npy.Save(PathOf("b.npy"), t));
        Assert.Contains("bfloat16", e.Message);
    }

    static void AddEntry(ZipArchive zip, string name, Tensor t, CompressionLevel level)
    {
        using var s = zip.CreateEntry(name, level).Open();
        Npy.Write(s, t);
    }

    [Fact]
    public void Npz_with_several_arrays_stored_and_deflated_loads_by_name()
    {
        // Gemma Scope params.npz layout: W_enc [d, F], W_dec [F, d], b_enc [F], b_dec [d], threshold [F].
        using var wEnc = TorchScalars.Arange(12, dtype: ScalarType.Float32).reshape(3, 4);
        using var wDec = TorchScalars.Arange(12, dtype: ScalarType.Float32).reshape(4, 3) * -1;
        using var bEnc = torch.tensor(new float[] { 1, 2, 3, 4 });
        using var bDec = torch.tensor(new float[] { 0.5f, 0.25f, 0.125f });
        using var threshold = torch.full(4, 0.75f);
        var path = PathOf("params.npz");
        using (var zip = ZipFile.Open(path, ZipArchiveMode.Create))
        {
            AddEntry(zip, "W_enc.npy", wEnc, CompressionLevel.NoCompression);
            AddEntry(zip, "W_dec.npy", wDec, CompressionLevel.Optimal);
            AddEntry(zip, "b_enc.npy", bEnc, CompressionLevel.NoCompression);
            AddEntry(zip, "b_dec.npy", bDec, CompressionLevel.Optimal);
            AddEntry(zip, "threshold.npy", threshold, CompressionLevel.Optimal);
        }

        var arrays = Npy.LoadNpz(path);
        try
        {
            Assert.Equal(["W_enc", "W_dec", "b_enc", "b_dec", "threshold"], arrays.Keys.ToArray());
            AssertSame(wEnc, arrays["W_enc"]);
            AssertSame(wDec, arrays["W_dec"]);
            AssertSame(bEnc, arrays["b_enc"]);
            AssertSame(bDec, arrays["b_dec"]);
            AssertSame(threshold, arrays["threshold"]);
        }
        finally
        {
            foreach (var t in arrays.Values) t.Dispose();
        }
    }

    [Fact]
    public void Npz_entry_with_missing_data_is_reported_by_entry_name()
    {
        var path = PathOf("short.npz");
        using (var zip = ZipFile.Open(path, ZipArchiveMode.Create))
        using (var s = zip.CreateEntry("W_enc.npy").Open())
            s.Write(HandWritten(1, "{'descr': '<f4', 'fortran_order': False, 'shape': (4,), }\n", Floats(1, 2)));
        var e = Assert.Throws<SaeSharpException>(() => Npy.LoadNpz(path));
        Assert.Contains("W_enc.npy", e.Message);
        Assert.Contains("truncated", e.Message);
    }

    [Fact]
    public void Corrupt_npz_is_reported()
    {
        var path = PathOf("corrupt.npz");
        File.WriteAllBytes(path, "PK\u0003\u0004garbage"u8.ToArray());
        var e = Assert.Throws<SaeSharpException>(() => Npy.LoadNpz(path));
        Assert.Contains("corrupt", e.Message);
    }
}
