using System.Diagnostics;
using Parquet;
using Parquet.Schema;
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
        // field 2 (schema, delta 2) of type list (9); list header 0xFC = long count of structs (12); count varint
        // 0xFFFFFFFF07 = 2^31 - 1
        var p = WithFooter("biglist.parquet", [0x29, 0xFC, 0xFF, 0xFF, 0xFF, 0xFF, 0x07, 0x00]);
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
        // an unknown field (40, long form 0x09 0x50) holding 100 nested lists: header 0x19 = one element of type list,
        // the innermost 0x09 = no elements; Parquet.Net's SkipField would recurse once per level
        byte[] footer = [0x09, 0x50, .. Enumerable.Repeat((byte)0x19, 100), 0x09, 0x00];
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

    [Fact]
    public void Second_fuzzed_footer_with_a_field_of_the_wrong_type_fails_fast()
    {
        // tests/data/fuzz/parquet-hang-2.parquet (seed c4EuCsFcqYN1): FileMetaData field 6 (created_by, a string) is
        // declared an i32 in its first byte (0x65: delta 6, type 5); Parquet.Net reads a string there regardless and
        // then spins skipping fields past the end of the footer.
        string p = TestPaths.Data("fuzz", "parquet-hang-2.parquet");
        var clock = Stopwatch.StartNew();
        var e = Assert.Throws<SaeSharpException>(() => TextDataset.Read(p).ToList());
        Assert.True(clock.Elapsed < TimeSpan.FromSeconds(30), $"took {clock.Elapsed}");
        Assert.Contains("FileMetaData field 6 at byte 0 declares type 5, expected 8", e.Message);
        Assert.DoesNotContain('\n', e.Message);
    }

    [Fact]
    public void Known_field_declared_with_another_type_is_refused()
    {
        // FileMetaData field 1 (version, i32) declared as a struct (0x1C), then a stop
        var p = WithFooter("type.parquet", [0x1C, 0x00, 0x00]);
        var e = Assert.Throws<SaeSharpException>(() => TextDataset.Read(p).ToList());
        Assert.Contains("FileMetaData field 1 at byte 0 declares type 12, expected 5", e.Message);
    }

    [Fact]
    public void List_whose_elements_have_another_type_is_refused()
    {
        // FileMetaData field 2 (schema, list<SchemaElement>): header 0x29 (delta 2, list); list header 0x15 = one i32
        var p = WithFooter("element.parquet", [0x29, 0x15, 0x02, 0x00]);
        var e = Assert.Throws<SaeSharpException>(() => TextDataset.Read(p).ToList());
        Assert.Contains("declares elements of type 5, expected 12", e.Message);
    }

    [Fact]
    public void Unknown_field_of_a_type_the_reader_cannot_skip_is_refused()
    {
        // field 40 in the long form (0x0B = delta 0, type map; zigzag(40) = 80 = 0x50), an empty map
        var p = WithFooter("map.parquet", [0x0B, 0x50, 0x00, 0x00]);
        var e = Assert.Throws<SaeSharpException>(() => TextDataset.Read(p).ToList());
        Assert.Contains("Thrift type 11", e.Message);
    }

    static byte[] ValidFile()
    {
        var text = new DataField<string>("text");
        using var ms = new MemoryStream();
        Task.Run(async () =>
        {
            await using var writer = await ParquetWriter.CreateAsync(new ParquetSchema(text), ms);
            using var g = writer.CreateRowGroup();
            await g.WriteAsync(text, new[] { "Hello world", "héllo 日本", "third" });
        }).GetAwaiter().GetResult();
        return ms.ToArray();
    }

    static (int FooterStart, int FooterLength) Layout(byte[] file)
    {
        int footerLength = BitConverter.ToInt32(file, file.Length - 8);
        return (file.Length - 8 - footerLength, footerLength);
    }

    [Fact]
    public void Unknown_fields_are_skipped_as_the_parquet_reader_skips_them()
    {
        // A valid file with two fields this reader does not know appended to FileMetaData: field 20 an i64
        // (0x06 = long form, i64; zigzag(20) = 40; value zigzag(1) = 2) and field 21 an empty struct.
        byte[] file = ValidFile();
        var (start, length) = Layout(file);
        byte[] footer = file.AsSpan(start, length - 1).ToArray(); // without FileMetaData's stop byte
        byte[] extended = [.. file.AsSpan(0, start), .. footer, 0x06, 0x28, 0x02, 0x0C, 0x2A, 0x00, 0x00,
            .. BitConverter.GetBytes(length + 6), .. "PAR1"u8];
        string p = Path.Combine(_dir, "unknown.parquet");
        File.WriteAllBytes(p, extended);
        Assert.Equal(["Hello world", "héllo 日本", "third"], TextDataset.Read(p).ToList());
    }

    /// <summary>The valid file with its data (byte 4 up to the footer) replaced by <paramref name="page"/> and zeros:
    /// the footer's page offsets (the first page at byte 4) still hold, so Parquet.Net would read this page first.</summary>
    string WithPage(string name, byte[] page)
    {
        byte[] file = ValidFile();
        var (start, _) = Layout(file);
        Assert.True(page.Length <= start - 4);
        Array.Clear(file, 4, start - 4);
        page.CopyTo(file, 4);
        string p = Path.Combine(_dir, name);
        File.WriteAllBytes(p, file);
        return p;
    }

    // PageHeader: 0x15 type (i32, field 1), 0x15 uncompressed size (field 2), 0x15 stored size (field 3), then
    // 0x2C = field 5 (delta 2) DataPageHeader { 0x15 num_values, stop }, stop. Values are zigzag varints.

    [Fact]
    public void Page_with_a_negative_stored_size_is_refused()
    {
        // stored size zigzag(-1) = 1: Parquet.Net would step back and read the same page again
        var p = WithPage("negative.parquet", [0x15, 0x00, 0x15, 0x02, 0x15, 0x01, 0x2C, 0x15, 0x06, 0x00, 0x00]);
        var e = Assert.Throws<SaeSharpException>(() => TextDataset.Read(p).ToList());
        Assert.Contains("declares -1 stored bytes", e.Message);
    }

    [Fact]
    public void Page_stored_past_the_data_is_refused()
    {
        // stored size 1000 (zigzag 2000 = 0xD0 0x0F) in a file of a few hundred bytes
        var p = WithPage("past.parquet", [0x15, 0x00, 0x15, 0x02, 0x15, 0xD0, 0x0F, 0x2C, 0x15, 0x06, 0x00, 0x00]);
        var e = Assert.Throws<SaeSharpException>(() => TextDataset.Read(p).ToList());
        Assert.Contains("declares 1000 stored bytes, past the data", e.Message);
    }

    [Fact]
    public void Page_declaring_a_huge_uncompressed_size_is_refused_before_allocation()
    {
        // uncompressed 2^31 - 1 (zigzag 0xFE 0xFF 0xFF 0xFF 0x0F) from 2 stored bytes
        var p = WithPage("huge.parquet", [0x15, 0x00, 0x15, 0xFE, 0xFF, 0xFF, 0xFF, 0x0F, 0x15, 0x04, 0x2C, 0x15, 0x06, 0x00, 0x00]);
        var e = Assert.Throws<SaeSharpException>(() => TextDataset.Read(p).ToList());
        Assert.Contains("declares 2147483647 uncompressed bytes from 2 stored", e.Message);
    }

    [Fact]
    public void Data_page_without_values_is_refused()
    {
        // num_values 0: Parquet.Net would read on, page after page, to the end of the file
        var p = WithPage("empty.parquet", [0x15, 0x00, 0x15, 0x02, 0x15, 0x02, 0x2C, 0x15, 0x00, 0x00, 0x00]);
        var e = Assert.Throws<SaeSharpException>(() => TextDataset.Read(p).ToList());
        Assert.Contains("declares 0 values", e.Message);
    }

    [Fact]
    public void Page_header_running_into_the_footer_is_refused()
    {
        // a header that never stops: field 1 (long form 0x05 0x02) = 0, again and again, cut off at the footer
        byte[] file = ValidFile();
        var (start, _) = Layout(file);
        var page = Enumerable.Repeat(new byte[] { 0x05, 0x02, 0x00 }, start).SelectMany(b => b).Take(start - 4).ToArray();
        var p = WithPage("endless.parquet", page);
        var e = Assert.Throws<SaeSharpException>(() => TextDataset.Read(p).ToList());
        Assert.Contains("runs into the footer", e.Message);
    }

    [Fact]
    public void Snappy_data_declaring_more_than_its_page_is_refused_before_allocation()
    {
        // tests/data/fuzz/parquet-snappy-length.parquet (fuzz property Parquet_pages, seed 57YjMULWPXM1): a sane page
        // header (47 bytes uncompressed) whose snappy data begins with a length varint of hundreds of MiB, which the
        // snappy decoder allocated as given (256 MiB for a 317-byte file).
        string p = TestPaths.Data("fuzz", "parquet-snappy-length.parquet");
        long before = GC.GetAllocatedBytesForCurrentThread();
        var e = Assert.Throws<SaeSharpException>(() => TextDataset.Read(p).ToList());
        Assert.Contains("more than the page's 47 uncompressed", e.Message);
        Assert.True(GC.GetAllocatedBytesForCurrentThread() - before < 16 << 20);
    }
}
