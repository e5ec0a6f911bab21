using System.Diagnostics;
using SaeSharp.Data;
using SaeSharp.Tests.Tokenizers;

namespace SaeSharp.Tests.Data;

/// <summary>Parquet files whose footer would send Parquet.Net's Thrift reader past its end: each fails fast with one
/// clear error instead of spinning.</summary>
public sealed class ParquetFooterTests : IDisposable
{
    readonly string _dir = Directory.CreateTempSubdirectory("saesharp-parquet-footer-").FullName;
    public void Dispose() => Directory.Delete(_dir, recursive: true);

    [Fact]
    public void Fuzzed_footer_that_hung_the_reader_fails_fast_with_a_clear_error()
    {
        // tests/data/fuzz/parquet-hang.parquet: a 320-byte mutation of a valid three-row file, found by the fuzzer;
        // Parquet.Net's footer parser spun on it for more than 25 minutes.
        string p = TestPaths.Data("fuzz", "parquet-hang.parquet");
        var clock = Stopwatch.StartNew();
        var e = Assert.Throws<SaeSharpException>(() => TextDataset.Read(p).ToList());
        Assert.True(clock.Elapsed < TimeSpan.FromSeconds(30), $"took {clock.Elapsed}");
        Assert.Contains("corrupt footer", e.Message);
        Assert.DoesNotContain('\n', e.Message);
    }

    /// <summary>Builds PAR1 + footer + length + PAR1 around a hand-written Thrift compact footer.</summary>
    string WithFooter(string name, byte[] footer)
    {
        string p = Path.Combine(_dir, name);
        using var s = File.Create(p);
        s.Write("PAR1"u8);
        s.Write(footer);
        s.Write(BitConverter.GetBytes(footer.Length));
        s.Write("PAR1"u8);
        return p;
    }

    [Fact]
    public void List_declaring_more_elements_than_bytes_left_is_refused()
    {
        // field 1 (delta 1) of type list (9); list header 0xF5 = long count of i32 (5); count varint 0xFFFFFFFF07 = 2^31 - 1
        var p = WithFooter("biglist.parquet", [0x19, 0xF5, 0xFF, 0xFF, 0xFF, 0xFF, 0x07, 0x00]);
        var e = Assert.Throws<SaeSharpException>(() => TextDataset.Read(p).ToList());
        Assert.Contains("declares 2147483647 elements", e.Message);
    }

    [Fact]
    public void Footer_ending_inside_a_varint_is_refused()
    {
        // field 1 of type i32 (5) whose varint has its continuation bit set on the last byte
        var p = WithFooter("varint.parquet", [0x15, 0x80, 0x80]);
        var e = Assert.Throws<SaeSharpException>(() => TextDataset.Read(p).ToList());
        Assert.Contains("ends inside a value", e.Message);
    }

    [Fact]
    public void Nesting_deeper_than_the_limit_is_refused()
    {
        // 100 nested structs: field 1 of type struct (0x1C) each
        var footer = Enumerable.Repeat((byte)0x1C, 100).Concat(Enumerable.Repeat((byte)0, 101)).ToArray();
        var p = WithFooter("deep.parquet", footer);
        var e = Assert.Throws<SaeSharpException>(() => TextDataset.Read(p).ToList());
        Assert.Contains("nesting deeper than", e.Message);
    }

    [Fact]
    public void Footer_length_past_the_file_is_refused()
    {
        string p = Path.Combine(_dir, "len.parquet");
        File.WriteAllBytes(p, [.. "PAR1"u8, 0, 0, 0, 0, .. BitConverter.GetBytes(1_000_000), .. "PAR1"u8]);
        var e = Assert.Throws<SaeSharpException>(() => TextDataset.Read(p).ToList());
        Assert.Contains("footer length 1000000", e.Message);
    }
}
