using System.Text;
using SaeSharp.IO;
using static TorchSharp.torch;

namespace SaeSharp.Tests.IO;

public class SafeTensorsTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("st-").FullName;
    public void Dispose() => Directory.Delete(_dir, true);

    private static byte[] Build(string headerJson, byte[] data)
    {
        var h = Encoding.UTF8.GetBytes(headerJson);
        return BitConverter.GetBytes((ulong)h.Length).Concat(h).Concat(data).ToArray();
    }

    [Fact]
    public void ReadsHandWrittenFile()
    {
        // Two F32 values 1.5, -2 and one I64 value 7, laid out by hand.
        var data = BitConverter.GetBytes(1.5f).Concat(BitConverter.GetBytes(-2f)).Concat(BitConverter.GetBytes(7L)).ToArray();
        var path = Path.Combine(_dir, "a.safetensors");
        File.WriteAllBytes(path, Build("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},\"b\":{\"dtype\":\"I64\",\"shape\":[],\"data_offsets\":[8,16]},\"__metadata__\":{\"format\":\"pt\"}}", data));
        using var f = SafeTensorsFile.Open(path);
        Assert.Equal(new[] { 1.5f, -2f }, f.Read("a").data<float>().ToArray());
        Assert.Equal(7L, f.Read("b").item<long>());
        Assert.Equal("pt", f.Metadata["format"]);
    }

    [Theory]
    [InlineData("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"shape\":[1],\"data_offsets\":[0,4]}}")] // fuzz seed cv6wruXgB071
    [InlineData("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}")]
    public void A_header_with_a_repeated_key_is_one_clear_error(string header)
    {
        // JsonNode accepts repeated keys and throws ArgumentException at the first read of the object; found by scripts/fuzz.sh.
        var path = Path.Combine(_dir, "dup.safetensors");
        File.WriteAllBytes(path, Build(header, BitConverter.GetBytes(1f)));
        var e = Assert.Throws<SaeSharpException>(() => SafeTensorsFile.Open(path).Dispose());
        Assert.Contains("safetensors header is not valid JSON", e.Message);
        Assert.Contains("Duplicate", e.Message, StringComparison.OrdinalIgnoreCase);
    }

    [Fact]
    public void RoundTripsDtypesAndRows()
    {
        var path = Path.Combine(_dir, "rt.safetensors");
        var x = TorchScalars.Arange(60, dtype: ScalarType.Float32).reshape(20, 3);
        var h = x.to(ScalarType.Float16);
        var b = (x / 7).to(ScalarType.BFloat16);
        SafeTensors.Save(path, new Dictionary<string, Tensor> { ["x"] = x, ["h"] = h, ["b"] = b }, new Dictionary<string, string> { ["k"] = "v" });
        using var f = SafeTensorsFile.Open(path);
        Assert.True(f.Read("x").equal(x).all().item<bool>());
        Assert.Equal(ScalarType.Float16, f.Read("h").dtype);
        Assert.True(f.Read("h", ScalarType.Float32).equal(x).all().item<bool>());
        Assert.True(f.Read("b").equal(b).all().item<bool>());
        // Rows 5..8 of x are 15..26.
        var rows = f.ReadRows("x", 5, 4);
        Assert.Equal(new long[] { 4, 3 }, rows.shape);
        Assert.Equal(Enumerable.Range(15, 12).Select(i => (float)i).ToArray(), rows.data<float>().ToArray());
        Assert.Equal("v", f.Metadata["k"]);
    }

    [Fact]
    public void HeaderIsPaddedAndFileIsReadableByLayout()
    {
        var path = Path.Combine(_dir, "p.safetensors");
        SafeTensors.Save(path, new Dictionary<string, Tensor> { ["w"] = ones(3) });
        var bytes = File.ReadAllBytes(path);
        ulong n = BitConverter.ToUInt64(bytes, 0);
        Assert.Equal(0UL, n % 8);
        Assert.Equal(8 + (long)n + 12, bytes.Length);
        Assert.Equal(1f, BitConverter.ToSingle(bytes, 8 + (int)n));
    }

    [Fact]
    public void TruncatedFileIsAClearError()
    {
        var path = Path.Combine(_dir, "t.safetensors");
        SafeTensors.Save(path, new Dictionary<string, Tensor> { ["w"] = ones(100) });
        var bytes = File.ReadAllBytes(path);
        File.WriteAllBytes(path, bytes[..^10]);
        var e = Assert.Throws<SaeSharpException>(() => SafeTensorsFile.Open(path));
        Assert.Contains("'w'", e.Message);
        Assert.Contains("truncated", e.Message);
    }

    [Fact]
    public void OversizedHeaderLengthIsAClearError()
    {
        var path = Path.Combine(_dir, "o.safetensors");
        File.WriteAllBytes(path, BitConverter.GetBytes(ulong.MaxValue / 2).Concat(new byte[32]).ToArray());
        var e = Assert.Throws<SaeSharpException>(() => SafeTensorsFile.Open(path));
        Assert.Contains("header length", e.Message);
        File.WriteAllBytes(path, BitConverter.GetBytes(1000UL).Concat(new byte[32]).ToArray());
        e = Assert.Throws<SaeSharpException>(() => SafeTensorsFile.Open(path));
        Assert.Contains("exceeds the file", e.Message);
    }

    [Theory]
    [InlineData("{\"a\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,8]}}", "needs 12 bytes")]
    [InlineData("{\"a\":{\"dtype\":\"Q4\",\"shape\":[2],\"data_offsets\":[0,8]}}", "unsupported dtype")]
    [InlineData("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}", "overlapping")]
    [InlineData("{not json", "not valid JSON")]
    [InlineData("{\"a\":{\"dtype\":\"F32\",\"shape\":[-2],\"data_offsets\":[0,8]}}", "negative")]
    [InlineData("{\"a\":{\"dtype\":5,\"shape\":[2],\"data_offsets\":[0,8]}}", "missing dtype, or not a string")]
    [InlineData("{\"a\":{\"dtype\":\"F32\",\"shape\":[1099511627776,1099511627776],\"data_offsets\":[0,8]}}", "tensor 'a': shape [1099511627776, 1099511627776] is too large")]
    public void CorruptHeadersAreClearErrors(string header, string expected)
    {
        var path = Path.Combine(_dir, "c.safetensors");
        File.WriteAllBytes(path, Build(header, new byte[8]));
        var e = Assert.Throws<SaeSharpException>(() => SafeTensorsFile.Open(path));
        Assert.Contains(expected, e.Message);
        Assert.Contains(path, e.Message);
    }

    [Fact]
    public void SaveDoesNotLeaveTemporaryFiles()
    {
        var path = Path.Combine(_dir, "s.safetensors");
        SafeTensors.Save(path, new Dictionary<string, Tensor> { ["w"] = ones(3) });
        SafeTensors.Save(path, new Dictionary<string, Tensor> { ["w"] = zeros(5) });
        Assert.Single(Directory.GetFiles(_dir));
        Assert.Equal(new long[] { 5 }, SafeTensors.Load(path)["w"].shape);
    }
}
