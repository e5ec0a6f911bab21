using SaeSharp.Saes;
using static TorchSharp.torch;
using static SaeSharp.Tests.Saes.SaeTestUtil;

namespace SaeSharp.Tests.Saes;

/// <summary>
/// <see cref="Sae.Encode"/> and <see cref="Sae.Decode"/> as a SAELens user calls them (<c>sae.encode(cache[hook])</c>):
/// any leading dimensions, the input converted to the weights' dtype, and a wrong width or dtype named in a
/// <see cref="SaeSharpException"/> rather than a libtorch error with a native stack trace.
/// </summary>
public class SaeEncodeDecodeInputTests
{
    /// <summary>The architectures that encode rows (the temporal SAE needs sequences: TemporalSaeTests).</summary>
    public static TheoryData<string> Architectures => new(SaeArchitectures.All.Where(a => !SaeArchitectures.Get(a).InferenceOnly));

    private static Sae Make(string arch) => SaeTestUtil.Make(new SaeConfig
    {
        Architecture = arch,
        DIn = 6,
        DSae = 10,
        K = arch.Contains("topk") ? 3 : null,
        MatryoshkaWidths = arch == SaeArchitectures.MatryoshkaBatchTopK ? [4, 10] : null,
    });

    [Theory]
    [MemberData(nameof(Architectures))]
    public void Encode_and_decode_keep_leading_dimensions_as_the_rows_do(string arch)
    {
        using var sae = Make(arch);
        using var x = randn(2, 5, 6, generator: new Generator(3));
        using var rows = x.reshape(10, 6);
        using var fRows = sae.Encode(rows);
        using var f = sae.Encode(x);
        Assert.Equal(new long[] { 2, 5, 10 }, f.shape);
        AssertClose(fRows.reshape(2, 5, 10), f, what: "Encode [b, p, d_in]");
        using var yRows = sae.Decode(fRows);
        using var y = sae.Decode(f);
        Assert.Equal(new long[] { 2, 5, 6 }, y.shape);
        AssertClose(yRows.reshape(2, 5, 6), y, what: "Decode [b, p, d_sae]");
    }

    [Theory]
    [MemberData(nameof(Architectures))]
    public void A_wrong_width_is_an_error_naming_it(string arch)
    {
        using var sae = Make(arch);
        using var wide = zeros(4, 7);
        var e = Assert.Throws<SaeSharpException>(() => sae.Encode(wide));
        Assert.Contains("d_in=6", e.Message);
        Assert.Contains("[4, 7]", e.Message);
        using var vector = zeros(7);
        Assert.Contains("d_in=6", Assert.Throws<SaeSharpException>(() => sae.Encode(vector)).Message);
        using var f = zeros(4, 11);
        e = Assert.Throws<SaeSharpException>(() => sae.Decode(f));
        Assert.Contains("d_sae=10", e.Message);
    }

    [Fact]
    public void Float64_input_is_encoded_in_the_weights_dtype_and_integer_input_is_refused()
    {
        using var sae = Make(SaeArchitectures.TopK);
        using var x = randn(4, 6, generator: new Generator(5));
        using var x64 = x.to(ScalarType.Float64);
        using var f = sae.Encode(x);
        using var f64 = sae.Encode(x64);
        Assert.Equal(ScalarType.Float32, f64.dtype);
        AssertClose(f, f64, what: "float64 input");
        using var ids = zeros(4, 6, dtype: ScalarType.Int64);
        Assert.Contains("floating-point", Assert.Throws<SaeSharpException>(() => sae.Encode(ids)).Message);
    }

    [Fact]
    public void Encode_and_decode_leave_no_live_tensor_even_when_they_refuse_the_input()
    {
        using var sae = Make(SaeArchitectures.TopK);
        using var x = randn(2, 3, 6);
        using var bad = zeros(3, 5);
        Assert.Equal(0, LiveTensors.Leaked(() =>
        {
            using var f = sae.Encode(x);
            sae.Decode(f).Dispose();
            Assert.Throws<SaeSharpException>(() => sae.Encode(bad));
        }));
    }

    /// <summary>TorchSharp says only "Tensor invalid -- empty handle" for a disposed tensor, of either side.</summary>
    [Fact]
    public void A_disposed_input_or_sae_is_named_as_such()
    {
        var sae = Make(SaeArchitectures.TopK);
        var x = randn(2, 6);
        x.Dispose();
        Assert.Equal("Encode: the input tensor has been disposed", Assert.Throws<SaeSharpException>(() => sae.Encode(x)).Message);
        Assert.Equal("SAE forward: the input tensor has been disposed", Assert.Throws<SaeSharpException>(() => sae.forward(x)).Message);
        sae.Dispose();
        using var y = randn(2, 6);
        Assert.Throws<ObjectDisposedException>(() => sae.Encode(y));
        Assert.Throws<ObjectDisposedException>(() => sae.Run(y));
    }
}
