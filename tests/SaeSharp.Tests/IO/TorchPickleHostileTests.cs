using System.Diagnostics;
using System.IO.Compression;
using System.Text;
using SaeSharp.IO;

namespace SaeSharp.Tests.IO;

/// <summary>
/// Hostile .pt files that run no code but try to exhaust the stack, the CPU or memory. Each must end in a
/// SaeSharpException (a stack overflow would kill the test process, which .NET cannot catch).
/// </summary>
public sealed class TorchPickleHostileTests : IDisposable
{
    readonly string _dir = Directory.CreateTempSubdirectory("saesharp-hostile-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    string Write(byte[] pickle, IDictionary<string, byte[]>? storages = null)
    {
        var path = Path.Combine(_dir, Guid.NewGuid().ToString("N") + ".pt");
        PickleWriter.WriteCheckpoint(path, pickle, storages);
        return path;
    }

    static byte[] Repeat(byte[] unit, int times)
    {
        var b = new byte[unit.Length * times];
        for (int i = 0; i < times; i++) unit.CopyTo(b, i * unit.Length);
        return b;
    }

    [Fact]
    public void A_tuple_nested_a_hundred_thousand_deep_as_a_dict_key_is_refused_not_a_stack_overflow()
    {
        // {((((...(),),),)...): None} : each TUPLE1 (0x85) wraps the previous tuple once more
        var pickle = new PickleWriter().Proto(2).EmptyDict().EmptyTuple().Op(Repeat([0x85], 100_000))
            .Op((byte)'N').Op((byte)'s').Stop().ToArray();
        var e = Assert.Throws<SaeSharpException>(() => TorchPickle.Load(Write(pickle)));
        Assert.Contains("nested more than 100 deep", e.Message);
    }

    [Fact]
    public void A_shared_tuple_of_exponential_expanded_size_as_a_key_is_refused_at_once()
    {
        // t = (); 90 times t = (t, t) via DUP + TUPLE2: depth 90 (allowed) but 2^90 leaves when walked as a tree.
        // Using it as a key (twice, so that equality is also exercised) must not walk the tree.
        var build = new PickleWriter().Proto(2).EmptyDict().EmptyTuple();
        for (int i = 0; i < 90; i++) build.Op((byte)'2', 0x86);
        var pickle = build.Op((byte)'q', 0).Op((byte)'N').Op((byte)'s')
            .Op((byte)'h', 0).Op((byte)'N').Op((byte)'s').Stop().ToArray();
        var clock = Stopwatch.StartNew();
        var e = Assert.Throws<SaeSharpException>(() => TorchPickle.Load(Write(pickle)));
        Assert.Contains($"more than {PickleKeyComparer.MaxKeyNodes} nested tuple elements", e.Message);
        Assert.True(clock.Elapsed < TimeSpan.FromSeconds(10), $"took {clock.Elapsed}");
    }

    [Fact]
    public void Small_tuple_keys_still_compare_by_content()
    {
        var a = new object?[] { "x", new object?[] { 1L, 2L } };
        var b = new object?[] { "x", new object?[] { 1L, 2L } };
        Assert.True(PickleKeyComparer.Instance.Equals(a, b));
        Assert.Equal(PickleKeyComparer.Instance.GetHashCode(a), PickleKeyComparer.Instance.GetHashCode(b));
        Assert.False(PickleKeyComparer.Instance.Equals(a, new object?[] { "x", new object?[] { 1L, 3L } }));
    }

    [Fact]
    public void Describing_a_deep_or_wide_value_in_an_error_stays_short()
    {
        object? deep = Array.Empty<object?>();
        for (int i = 0; i < 1_000_000; i++) deep = new[] { deep, deep };
        string text = TorchPickleLoader.Describe(new[] { deep, new string('s', 10_000), Enumerable.Range(0, 1000).Select(i => (object?)(long)i).ToArray() });
        Assert.True(text.Length < 400, text);
        Assert.Contains("…", text);
    }

    [Fact]
    public void A_bad_persistent_id_holding_a_huge_shared_tuple_gives_a_short_error()
    {
        // ('storage', t, ...) where t has 2^80 leaves as a tree: the error message must not expand it
        var build = new PickleWriter().Proto(2).Mark().Str("storage").EmptyTuple();
        for (int i = 0; i < 80; i++) build.Op((byte)'2', 0x86);
        var pickle = build.Str("0").Str("cpu").Int(1).Tuple().Op((byte)'Q').Stop().ToArray();
        var e = Assert.Throws<SaeSharpException>(() => TorchPickle.Load(Write(pickle)));
        Assert.Contains("storage type", e.Message);
        Assert.True(e.Message.Length < 1000);
    }

    [Fact]
    public void Many_marks_over_a_deep_stack_cost_linear_time()
    {
        // 200,000 items, then 200,000 × (MARK, POP_MARK): copying the stack at each MARK would cost 4·10^10 copies
        const int n = 200_000;
        var pickle = new PickleWriter().Proto(2).Op(Repeat([(byte)'K', 1], n)).Op(Repeat([(byte)'(', (byte)'1'], n)).Stop().ToArray();
        var clock = Stopwatch.StartNew();
        var e = Assert.Throws<SaeSharpException>(() => TorchPickle.Load(Write(pickle)));
        Assert.Contains($"STOP with {n} items on the stack", e.Message);
        Assert.True(clock.Elapsed < TimeSpan.FromSeconds(10), $"took {clock.Elapsed}");
    }

    [Fact]
    public void Popping_below_a_mark_is_an_underflow_as_in_Python()
    {
        var pickle = new PickleWriter().Proto(2).Int(1).Mark().Op((byte)'0').Stop().ToArray();
        var e = Assert.Throws<SaeSharpException>(() => TorchPickle.Load(Write(pickle)));
        Assert.Contains("stack underflow", e.Message);
    }

    [Fact]
    public void A_stride_zero_view_that_would_expand_to_gigabytes_is_refused()
    {
        // one float, viewed as [65536, 65536] with strides (0, 0): passes the bounds check, its copy is 16 GiB
        var pickle = new PickleWriter().Proto(2).EmptyDict().Mark()
            .Str("w").Tensor("FloatStorage", "0", 1, 0, [65536, 65536], [0, 0]).SetItems().Stop().ToArray();
        var e = Assert.Throws<SaeSharpException>(() => TorchPickle.Load(Write(pickle, new Dictionary<string, byte[]> { ["0"] = BitConverter.GetBytes(1f) })));
        Assert.Contains("contiguous copy", e.Message);
        Assert.Contains("budget", e.Message);
    }

    [Fact]
    public void A_small_stride_zero_view_is_still_expanded_like_torch()
    {
        var pickle = new PickleWriter().Proto(2).EmptyDict().Mark()
            .Str("w").Tensor("FloatStorage", "0", 2, 0, [3, 2], [0, 1]).SetItems().Stop().ToArray();
        using var ckpt = TorchPickle.Load(Write(pickle, new Dictionary<string, byte[]> { ["0"] = [.. BitConverter.GetBytes(1f), .. BitConverter.GetBytes(2f)] }));
        Assert.Equal(new float[] { 1, 2, 1, 2, 1, 2 }, ckpt.GetTensor("w").data<float>().ToArray());
    }

    [Fact]
    public void A_deflate_bomb_storage_is_refused_before_it_is_inflated()
    {
        // 48 MiB of zeros compress to ~50 KB; the declared size matches numel × 4, so only a budget catches it
        const long numel = 12L << 20;
        var pickle = new PickleWriter().Proto(2).EmptyDict().Mark()
            .Str("w").Tensor("FloatStorage", "0", numel, 0, [numel], [1]).SetItems().Stop().ToArray();
        string path = Path.Combine(_dir, "bomb.pt");
        using (var zip = ZipFile.Open(path, ZipArchiveMode.Create))
        {
            using (var s = zip.CreateEntry("archive/data.pkl", CompressionLevel.NoCompression).Open()) s.Write(pickle);
            using (var s = zip.CreateEntry("archive/data/0", CompressionLevel.SmallestSize).Open())
            {
                var zeros = new byte[1 << 20];
                for (int i = 0; i < numel * 4 / zeros.Length; i++) s.Write(zeros);
            }
        }
        Assert.True(new FileInfo(path).Length < 1 << 20);
        var e = Assert.Throws<SaeSharpException>(() => TorchPickle.Load(path));
        Assert.Contains("storage 'archive/data/0'", e.Message);
        Assert.Contains("budget", e.Message);

        // the same file with a budget from the tensors the caller expects (one [12M] float32) loads
        using var ok = TorchPickle.Load(path, maxBytes: numel * 4 + pickle.Length);
        Assert.Equal(new[] { numel }, ok.GetTensor("w").shape);
    }

    [Fact]
    public void A_compressed_small_checkpoint_loads_within_the_default_budget()
    {
        var pickle = new PickleWriter().Proto(2).EmptyDict().Mark()
            .Str("w").Tensor("FloatStorage", "0", 4, 0, [4], [1]).SetItems().Stop().ToArray();
        string path = Path.Combine(_dir, "deflated.pt");
        using (var zip = ZipFile.Open(path, ZipArchiveMode.Create))
        {
            using (var s = zip.CreateEntry("archive/data.pkl", CompressionLevel.Optimal).Open()) s.Write(pickle);
            using (var s = zip.CreateEntry("archive/data/0", CompressionLevel.Optimal).Open())
                foreach (float f in new float[] { 1, 2, 3, 4 }) s.Write(BitConverter.GetBytes(f));
        }
        using var ckpt = TorchPickle.Load(path);
        Assert.Equal(new float[] { 1, 2, 3, 4 }, ckpt.GetTensor("w").data<float>().ToArray());
    }

    [Fact]
    public void A_text_integer_of_a_million_digits_is_refused()
    {
        var pickle = new PickleWriter().Proto(2).Op((byte)'L').Op(Encoding.ASCII.GetBytes(new string('7', 1_000_000) + "L\n")).Stop().ToArray();
        var e = Assert.Throws<SaeSharpException>(() => TorchPickle.Load(Write(pickle)));
        Assert.Contains("4300", e.Message);
    }
}
