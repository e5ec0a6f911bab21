using System.IO.Compression;
using System.Text;
using Parquet;
using Parquet.Schema;
using SaeSharp.Data;
using SaeSharp.Tests.Tokenizers;
using SaeSharp.Tokenizers;

namespace SaeSharp.Tests.Data;

public class TextDatasetTests
{
    static List<string> ReadLines(string text)
    {
        var lines = new List<string>();
        using var r = new StringReader(text);
        for (string? l; (l = r.ReadLine()) is not null;) lines.Add(l);
        return lines;
    }

    [Fact]
    public void Bounded_lines_split_exactly_as_ReadLine_including_across_buffer_ends()
    {
        // The reader's buffer holds 65,536 characters: put a \r\n, a lone \r and a \n across and at its end.
        string a = new('a', 65535), b = new('b', 65536);
        foreach (string text in new[] { "", "x", "x\n", "\n\n", "a\rb\r\nc\n\rd", "\r\n\r", a + "\r\n" + b + "\r" + "\n", a + "\r" + b, b + "\n" + a + "\r\n\r\n" })
            Assert.Equal(ReadLines(text), TextDataset.Lines(new StringReader(text), "t", int.MaxValue).ToList());
    }

    [Fact]
    public void Gzipped_parquet_is_refused_as_the_readme_says()
    {
        // README: .txt.gz and .jsonl.gz are read; Parquet compresses internally, so .parquet.gz is refused.
        string dir = TestPaths.TempDir();
        string p = Path.Combine(dir, "d.parquet.gz");
        File.WriteAllBytes(p, [0x1F, 0x8B]);
        var e = Assert.Throws<SaeSharpException>(() => TextDataset.Read(p).ToList());
        Assert.Contains("unsupported extension", e.Message);
        Directory.Delete(dir, recursive: true);
    }

    [Fact]
    public void A_corrupt_gzip_file_is_one_clear_error()
    {
        // found by the fuzzer (Gzipped_jsonl_text): GZipStream's InvalidDataException surfaced as it was
        string dir = TestPaths.TempDir();
        string gz = Path.Combine(dir, "d.jsonl.gz");
        using (var f = new System.IO.Compression.GZipStream(File.Create(gz), System.IO.Compression.CompressionLevel.Optimal))
            f.Write("{\"text\": \"hi\"}\n"u8);
        var bytes = File.ReadAllBytes(gz);
        bytes[2] = 7; // the header's compression method: 8 is deflate, the only one defined
        File.WriteAllBytes(gz, bytes);
        var e = Assert.Throws<SaeSharpException>(() => TextDataset.Read(gz).ToList());
        Assert.StartsWith($"{gz}: the compressed data is corrupt", e.Message);
        Directory.Delete(dir, recursive: true);
    }

    [Fact]
    public void A_line_longer_than_the_bound_is_refused_naming_the_line()
    {
        var e = Assert.Throws<SaeSharpException>(() => TextDataset.Lines(new StringReader("ok\n" + new string('x', 200_000)), "f.jsonl", 100_000).ToList());
        Assert.Equal("f.jsonl line 2: longer than 100,000 characters (a corrupt or hostile file, or one document too large for a line)", e.Message);
        // a gzip bomb: 8 MiB of one line in a few kilobytes, read through the dataset reader with the real bound
        string dir = TestPaths.TempDir();
        string gz = Path.Combine(dir, "bomb.jsonl.gz");
        using (var f = new System.IO.Compression.GZipStream(File.Create(gz), System.IO.Compression.CompressionLevel.SmallestSize))
        {
            f.Write("{\"text\": \""u8);
            var zeros = new byte[1 << 20];
            Array.Fill(zeros, (byte)'a');
            for (int i = 0; i < (TextDataset.MaxLineChars >> 20) + 1; i++) f.Write(zeros);
        }
        Assert.True(new FileInfo(gz).Length < 1 << 20);
        var bomb = Assert.Throws<SaeSharpException>(() => TextDataset.Read(gz).ToList());
        Assert.Contains("line 1: longer than", bomb.Message);
        Directory.Delete(dir, recursive: true);
    }

    [Fact]
    public void Txt_is_one_document_per_line_or_one_per_file()
    {
        string dir = TestPaths.TempDir();
        string path = Path.Combine(dir, "a.txt");
        File.WriteAllText(path, "first line\n\nsecond line\r\nthird");
        Assert.Equal(new[] { "first line", "", "second line", "third" }, TextDataset.ReadTxt(path).ToList());
        Assert.Equal(new[] { "first line\n\nsecond line\r\nthird" }, TextDataset.ReadTxt(path, TxtMode.WholeFile).ToList());
    }

    /// <summary>The rows of <c>datasets</c>' text loader (packaged_modules/text/text.py: the file opened in text mode, which
    /// turns \r\n and \r into \n, <c>StringIO(chunk).readlines()</c>, each line's \n stripped), as Python 3.11 gave them for
    /// these files with that code copied: empty lines are rows, a final line break ends the last row without adding one.</summary>
    [Theory]
    [InlineData("a\n\nb\r\nc\rd\r\n\r\n  \ne\n", new[] { "a", "", "b", "c", "d", "", "  ", "e" })]
    [InlineData("\n", new[] { "" })]
    [InlineData("", new string[0])]
    [InlineData("x\n\n", new[] { "x", "" })]
    public void Txt_lines_are_the_rows_datasets_text_loader_reads(string text, string[] rows)
    {
        string path = Path.Combine(TestPaths.TempDir(), "a.txt");
        File.WriteAllText(path, text);
        Assert.Equal(rows, TextDataset.ReadTxt(path).ToList());
        Assert.Equal(rows, TextDataset.Read(path).ToList());
    }

    /// <summary>SAELens's ActivationsStore tokenizes each row with <c>to_tokens(row, prepend_bos=False)</c>, [] for an empty
    /// line, and <c>concat_and_batch_sequences</c> adds nothing for an empty sequence (no separator, no BOS): a text
    /// dataset's windows are the same with its empty lines as without them.</summary>
    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public void Empty_lines_leave_the_training_windows_unchanged(bool prependBos)
    {
        var tok = Gpt2();
        Assert.Empty(tok.Encode(""));
        string dir = TestPaths.TempDir();
        string[] lines = ["Hello world, this is a test.", "", "Another line of text here", "", "", "and the last one."];
        File.WriteAllText(Path.Combine(dir, "with.txt"), string.Join('\n', lines) + "\n");
        File.WriteAllText(Path.Combine(dir, "without.txt"), string.Join('\n', lines.Where(l => l.Length > 0)) + "\n");
        Assert.Equal(6, TextDataset.Read(Path.Combine(dir, "with.txt")).Count());
        var with = TokenWindows.FromPath(Path.Combine(dir, "with.txt"), tok, 5, prependBos).ToList();
        Assert.Equal(TokenWindows.FromPath(Path.Combine(dir, "without.txt"), tok, 5, prependBos).ToList(), with);
        // 18 tokens + 2 separators: 4 windows of 5; with a BOS first in each, [BOS Hello world , this] [BOS is a test .]
        // [BOS Another line of text] [BOS here BOS and the], and [BOS last one .] dropped.
        Assert.Equal(4, with.Count);
    }

    /// <summary>ReadJsonl's contract: blank lines are skipped, and a line of only spaces, tabs or a CR (a CRLF file,
    /// an editor's indentation) is blank too, not a JSON error; line numbers in errors still count every line.</summary>
    [Fact]
    public void Jsonl_skips_lines_of_only_whitespace()
    {
        string path = Path.Combine(TestPaths.TempDir(), "w.jsonl");
        File.WriteAllText(path, "{\"text\": \"a\"}\r\n   \n\t\n{\"text\": \"b\"}\r\n \r\n{\"x\": 1}\n");
        Assert.Equal(new[] { "a", "b" }, TextDataset.ReadJsonl(path).Take(2).ToList());
        var e = Assert.Throws<SaeSharpException>(() => TextDataset.ReadJsonl(path).ToList());
        Assert.Contains("line 6", e.Message);
    }

    [Fact]
    public void Jsonl_reads_the_named_field_and_streams()
    {
        string path = Path.Combine(TestPaths.TempDir(), "d.jsonl");
        File.WriteAllText(path, "{\"text\": \"a\\nb\", \"meta\": 1}\n\n{\"text\": \"ü 😀\", \"body\": \"x\"}\nnot json\n");
        // the broken third line is never read when only two documents are taken
        Assert.Equal(new[] { "a\nb", "ü 😀" }, TextDataset.ReadJsonl(path).Take(2).ToList());
        var e = Assert.Throws<SaeSharpException>(() => TextDataset.ReadJsonl(path).ToList());
        Assert.Contains("line 4", e.Message);
        var missing = Assert.Throws<SaeSharpException>(() => TextDataset.ReadJsonl(path, "body").ToList());
        Assert.Contains("line 1", missing.Message);
        Assert.Contains("'body'", missing.Message);
    }

    [Fact]
    public void Gzipped_jsonl_is_read_transparently()
    {
        string path = Path.Combine(TestPaths.TempDir(), "d.jsonl.gz");
        using (var gz = new GZipStream(File.Create(path), CompressionLevel.Fastest))
            gz.Write(Encoding.UTF8.GetBytes("{\"text\": \"one\"}\n{\"text\": \"two\"}\n"));
        Assert.Equal(new[] { "one", "two" }, TextDataset.Read(path).ToList());
    }

    [Fact]
    public void Tokenized_jsonl_yields_token_rows()
    {
        string path = Path.Combine(TestPaths.TempDir(), "t.jsonl");
        File.WriteAllText(path, "{\"input_ids\": [1, 2, 3]}\n{\"input_ids\": [4, 5, 6, 7]}\n");
        Assert.True(TextDataset.IsTokenizedJsonl(path));
        Assert.Equal(new long[][] { [1, 2, 3], [4, 5, 6, 7] }, TextDataset.ReadTokenizedJsonl(path).ToList());
        // FromPath treats it as pre-tokenized: each row is one window, cut to the context size
        var tok = Gpt2();
        Assert.Equal(new long[][] { [1, 2, 3], [4, 5, 6] }, TokenWindows.FromPath(path, tok, 3).ToList());
    }

    [Fact]
    public void Parquet_text_column_is_read_across_row_groups()
    {
        string path = Path.Combine(TestPaths.TempDir(), "d.parquet");
        var id = new DataField<int>("id");
        var text = new DataField<string>("text");
        WriteParquet(path, new ParquetSchema(id, text), async writer =>
        {
            using (var g = writer.CreateRowGroup())
            {
                await g.WriteAsync(id, new ReadOnlyMemory<int>([1, 2]));
                await g.WriteAsync(text, new[] { "Hello world", "héllo 日本" });
            }
            using (var g = writer.CreateRowGroup())
            {
                await g.WriteAsync(id, new ReadOnlyMemory<int>([3]));
                await g.WriteAsync(text, new[] { "Hello world" });
            }
        });
        Assert.False(TextDataset.IsTokenizedParquet(path));
        Assert.Equal(new[] { "Hello world", "héllo 日本", "Hello world" }, TextDataset.ReadParquet(path).ToList());
        var e = Assert.Throws<SaeSharpException>(() => TextDataset.ReadParquet(path, "body").ToList());
        Assert.Contains("'body'", e.Message);
        Assert.Contains("text", e.Message);
        // "Hello world" = [15496, 995]; the windows come from the tokenized documents in order
        var windows = TokenWindows.FromPath(path, Gpt2(), 3).ToList();
        Assert.Equal(new long[] { 50256, 15496, 995 }, windows[0]);
    }

    [Fact]
    public void Parquet_token_list_column_is_read_as_rows()
    {
        string path = Path.Combine(TestPaths.TempDir(), "t.parquet");
        var item = new DataField<long>("element");
        var list = new ListField("input_ids", item);
        WriteParquet(path, new ParquetSchema(list), async writer =>
        {
            using var g = writer.CreateRowGroup();
            // rows [1 2 3], [4], [5 6]: repetition level 0 starts a row
            int present = item.MaxDefinitionLevel; // every value is present (no null or empty lists)
            await g.WriteAllPartsAsync(item, new ReadOnlyMemory<long>([1, 2, 3, 4, 5, 6]),
                new ReadOnlyMemory<int>(Enumerable.Repeat(present, 6).ToArray()), new ReadOnlyMemory<int>([0, 1, 1, 0, 0, 1]), default);
        });
        Assert.True(TextDataset.IsTokenizedParquet(path));
        Assert.Equal(new long[][] { [1, 2, 3], [4], [5, 6] }, TextDataset.ReadTokenizedParquet(path).ToList());
    }

    [Fact]
    public void A_null_token_inside_a_parquet_token_list_is_an_error_not_dropped()
    {
        string path = Path.Combine(TestPaths.TempDir(), "n.parquet");
        var item = new DataField<long?>("element");
        var list = new ListField("input_ids", item);
        WriteParquet(path, new ParquetSchema(list), async writer =>
        {
            using var g = writer.CreateRowGroup();
            // rows [1 2 3], [4 null 6]: the null element has definition level max - 1
            int md = item.MaxDefinitionLevel;
            await g.WriteAllPartsAsync(item, new ReadOnlyMemory<long>([1, 2, 3, 4, 6]),
                new ReadOnlyMemory<int>([md, md, md, md, md - 1, md]), new ReadOnlyMemory<int>([0, 1, 1, 0, 1, 1]), default);
        });
        // was read as [4 6]: the tokens after the null moved one position left
        var e = Assert.Throws<SaeSharpException>(() => TextDataset.ReadTokenizedParquet(path).ToList());
        Assert.Contains("row 1", e.Message);
        Assert.Contains("token 1", e.Message);
        Assert.Contains("null", e.Message);
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void A_null_parquet_token_list_is_an_error_naming_file_and_row_and_an_empty_one_an_empty_row(bool nullableIds)
    {
        string path = Path.Combine(TestPaths.TempDir(), "nl.parquet");
        DataField item = nullableIds ? new DataField<long?>("element") : new DataField<long>("element");
        var list = new ListField("tokens", item);
        var schema = new ParquetSchema(list); // sets the levels
        // Definition levels of an optional list: max = the id is there; one less (two with nullable ids) = an empty list;
        // one less again = the whole cell is null.
        int md = item.MaxDefinitionLevel, empty = md - 1 - (nullableIds ? 1 : 0), nul = empty - 1;
        Assert.True(nul >= 0);
        void Write(int[] defs, long[] values, int[] reps) => WriteParquet(path, schema, async writer =>
        {
            using var g = writer.CreateRowGroup();
            await g.WriteAllPartsAsync(item, new ReadOnlyMemory<long>(values), new ReadOnlyMemory<int>(defs), new ReadOnlyMemory<int>(reps), default);
        });
        // rows [1 2 3], [], [4 5]
        Write([md, md, md, empty, md, md], [1, 2, 3, 4, 5], [0, 1, 1, 0, 0, 1]);
        Assert.Equal(new long[][] { [1, 2, 3], [], [4, 5] }, TextDataset.ReadTokenizedParquet(path).ToList());
        // rows [1 2 3], null, [4 5]
        Write([md, md, md, nul, md, md], [1, 2, 3, 4, 5], [0, 1, 1, 0, 0, 1]);
        var e = Assert.Throws<SaeSharpException>(() => TextDataset.ReadTokenizedParquet(path).ToList());
        Assert.Contains(path, e.Message);
        Assert.Contains("row 1", e.Message);
        Assert.Contains("'tokens' is null", e.Message);
        var windows = Assert.Throws<SaeSharpException>(() => TokenWindows.FromPath(path, Gpt2(), 3).ToList());
        Assert.Contains(path, windows.Message);
    }

    [Fact]
    public void Column_is_chosen_as_SAELens_ActivationsStore_does_tokens_input_ids_text_problem()
    {
        string dir = TestPaths.TempDir();
        var tok = Gpt2();
        long[] Encoded(string text) => Array.ConvertAll(tok.Encode(text), x => (long)x);
        // "Hello world" = [15496, 995]; windows of 3 start with BOS 50256
        long[] helloWindow = [50256, .. Encoded("Hello world")];

        // A math dataset (e.g. OpenR1-Math) has "problem" and no "text": SAELens reads "problem".
        string problem = Path.Combine(dir, "math.jsonl");
        File.WriteAllText(problem, "{\"problem\": \"Hello world\", \"solution\": \"42\"}\n");
        Assert.Equal(("problem", false), TextDataset.ChooseColumn(problem));
        Assert.Equal(helloWindow, TokenWindows.FromPath(problem, tok, 3).Single());

        string problemParquet = Path.Combine(dir, "math.parquet");
        var p = new DataField<string>("problem");
        var a = new DataField<string>("answer");
        WriteParquet(problemParquet, new ParquetSchema(a, p), async writer =>
        {
            using var g = writer.CreateRowGroup();
            await g.WriteAsync(a, new[] { "42" });
            await g.WriteAsync(p, new[] { "Hello world" });
        });
        Assert.Equal(("problem", false), TextDataset.ChooseColumn(problemParquet));
        Assert.Equal(helloWindow, TokenWindows.FromPath(problemParquet, tok, 3).Single());

        // "text" before "problem"; "tokens" and "input_ids" before both, "tokens" first.
        string both = Path.Combine(dir, "both.jsonl");
        File.WriteAllText(both, "{\"problem\": \"no\", \"text\": \"Hello world\"}\n");
        Assert.Equal(("text", false), TextDataset.ChooseColumn(both));
        Assert.Equal(helloWindow, TokenWindows.FromPath(both, tok, 3).Single());
        string ids = Path.Combine(dir, "ids.jsonl");
        File.WriteAllText(ids, "{\"text\": \"x\", \"input_ids\": [1, 2, 3], \"tokens\": [4, 5, 6]}\n");
        Assert.Equal(("tokens", true), TextDataset.ChooseColumn(ids, "text"));
        Assert.Equal(new long[] { 4, 5, 6 }, TokenWindows.FromPath(ids, tok, 3).Single());

        // None of them: one error listing the columns there are; a named column is read.
        string other = Path.Combine(dir, "other.jsonl");
        File.WriteAllText(other, "{\"body\": \"Hello world\", \"id\": 7}\n");
        var e = Assert.Throws<SaeSharpException>(() => TokenWindows.FromPath(other, tok, 3).ToList());
        Assert.Contains(other, e.Message);
        Assert.Contains("no 'tokens', 'input_ids', 'text' or 'problem' field", e.Message);
        Assert.Contains("it has: body, id", e.Message);
        Assert.Contains("--text-field", e.Message);
        Assert.Equal(helloWindow, TokenWindows.FromPath(other, tok, 3, textField: "body").Single());
        var pe = Assert.Throws<SaeSharpException>(() => TextDataset.ChooseColumn(problemParquet.Replace("math", "none")));
        Assert.Contains("does not exist", pe.Message);
        string otherParquet = Path.Combine(dir, "other.parquet");
        WriteParquet(otherParquet, new ParquetSchema(a), async writer =>
        {
            using var g = writer.CreateRowGroup();
            await g.WriteAsync(a, new[] { "42" });
        });
        var pq = Assert.Throws<SaeSharpException>(() => TokenWindows.FromPath(otherParquet, tok, 3).ToList());
        Assert.Contains("no 'tokens', 'input_ids', 'text' or 'problem' column (it has: answer)", pq.Message);
    }

    [Fact]
    public void Column_is_chosen_by_the_first_file_with_a_row_passing_over_empty_ones()
    {
        string dir = TestPaths.TempDir();
        var tok = Gpt2();
        // Empty files first: a JSONL with only blank lines, a .txt with no line.
        File.WriteAllText(Path.Combine(dir, "a.jsonl"), "\n\n");
        File.WriteAllText(Path.Combine(dir, "b.txt"), "");
        string math = Path.Combine(dir, "d.jsonl");
        File.WriteAllText(math, "{\"problem\": \"Hello world\"}\n");
        Assert.Equal(("problem", false, math), TextDataset.ChooseColumn(TextDataset.ExpandFiles(dir), null));
        Assert.Equal([50256, 15496, 995], TokenWindows.FromPath(dir, tok, 3).Single());
        // A Parquet file with no rows is passed over too (its only column, "answer", would be an error if it decided).
        string noRows = Path.Combine(TestPaths.TempDir(), "c.parquet");
        var a = new DataField<string>("answer");
        WriteParquet(noRows, new ParquetSchema(a), async writer =>
        {
            using var g = writer.CreateRowGroup();
            await g.WriteAsync(a, Array.Empty<string>());
        });
        Assert.Equal(("problem", false, math), TextDataset.ChooseColumn([noRows, math], null));

        // A pre-tokenized file after an empty one is read as pre-tokenized.
        File.Delete(math);
        string ids = Path.Combine(dir, "d.jsonl");
        File.WriteAllText(ids, "{\"text\": \"x\", \"input_ids\": [1, 2, 3]}\n");
        File.Delete(Path.Combine(dir, "b.txt"));
        Assert.Equal(("input_ids", true, ids), TextDataset.ChooseColumn(TextDataset.ExpandFiles(dir), "text"));
        Assert.Equal(new long[] { 1, 2, 3 }, TokenWindows.FromPath(dir, tok, 3).Single());

        // No file with a row: "text" (or the named field); reading windows from it is an error naming the dataset.
        File.Delete(ids);
        Assert.Equal(("text", false, null), TextDataset.ChooseColumn(TextDataset.ExpandFiles(dir), null));
        Assert.Equal(("body", false, null), TextDataset.ChooseColumn(TextDataset.ExpandFiles(dir), "body"));
        Assert.Contains(dir, Assert.Throws<SaeSharpException>(() => TokenWindows.FromPath(dir, tok, 3).ToList()).Message);
    }

    /// <summary>A Parquet file with no rows, written by Parquet.Net: with one empty row group, or with none.</summary>
    private static void WriteEmptyParquet(string path, DataField column, bool rowGroup) => WriteParquet(path, new ParquetSchema(column), async writer =>
    {
        if (!rowGroup) return;
        using var g = writer.CreateRowGroup();
        await g.WriteAsync(column, Array.Empty<string>());
    });

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public void A_parquet_file_with_no_rows_among_others_is_skipped_when_reading(bool rowGroup)
    {
        var tok = Gpt2();
        // Text: an empty file whose only column is "answer" (no "text" column), before one with text.
        string dir = TestPaths.TempDir();
        WriteEmptyParquet(Path.Combine(dir, "a.parquet"), new DataField<string>("answer"), rowGroup);
        var text = new DataField<string>("text");
        WriteParquet(Path.Combine(dir, "b.parquet"), new ParquetSchema(text), async writer =>
        {
            using var g = writer.CreateRowGroup();
            await g.WriteAsync(text, new[] { "Hello world" });
        });
        WriteEmptyParquet(Path.Combine(dir, "c.parquet"), new DataField<string>("answer"), rowGroup);
        Assert.Equal(new long[][] { [50256, 15496, 995] }, TokenWindows.FromPath(dir, tok, 3).ToList());
        Assert.Equal(new[] { "Hello world" }, TextDataset.Read(dir).ToList());

        // Pre-tokenized: an empty file with only a text column before and after one with "tokens".
        string tdir = TestPaths.TempDir();
        WriteEmptyParquet(Path.Combine(tdir, "a.parquet"), new DataField<string>("text"), rowGroup);
        var item = new DataField<long>("element");
        var list = new ListField("tokens", item);
        WriteParquet(Path.Combine(tdir, "b.parquet"), new ParquetSchema(list), async writer =>
        {
            using var g = writer.CreateRowGroup();
            await g.WriteAllPartsAsync(item, new ReadOnlyMemory<long>([7, 8, 9]),
                new ReadOnlyMemory<int>(Enumerable.Repeat(item.MaxDefinitionLevel, 3).ToArray()), new ReadOnlyMemory<int>([0, 1, 1]), default);
        });
        WriteEmptyParquet(Path.Combine(tdir, "c.parquet"), new DataField<string>("text"), rowGroup);
        File.WriteAllText(Path.Combine(tdir, "d.txt"), "\n"); // an empty .txt is skipped too, not "text mixed with pre-tokenized"
        Assert.Equal(new long[][] { [7, 8, 9] }, TokenWindows.FromPath(tdir, tok, 3).ToList());
        File.WriteAllText(Path.Combine(tdir, "d.txt"), "words");
        Assert.Contains("do not mix", Assert.Throws<SaeSharpException>(() => TokenWindows.FromPath(tdir, tok, 3).ToList()).Message);
        Directory.Delete(dir, recursive: true);
        Directory.Delete(tdir, recursive: true);
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public void A_dataset_whose_every_file_has_no_rows_is_an_error_naming_it(bool rowGroup)
    {
        var tok = Gpt2();
        string dir = TestPaths.TempDir();
        string only = Path.Combine(dir, "only.parquet");
        WriteEmptyParquet(only, new DataField<string>("text"), rowGroup);
        var e = Assert.Throws<SaeSharpException>(() => TokenWindows.FromPath(only, tok, 3).ToList());
        Assert.Contains(only, e.Message);
        Assert.Contains("no rows", e.Message);

        WriteEmptyParquet(Path.Combine(dir, "second.parquet"), new DataField<string>("answer"), rowGroup);
        var all = Assert.Throws<SaeSharpException>(() => TokenWindows.FromPath(dir, tok, 3).ToList());
        Assert.Contains(dir, all.Message);
        Assert.Contains("no rows", all.Message);
        Directory.Delete(dir, recursive: true);
    }

    [Fact]
    public void Folder_is_read_file_by_file_in_name_order()
    {
        string dir = TestPaths.TempDir();
        File.WriteAllText(Path.Combine(dir, "b.txt"), "from b");
        File.WriteAllText(Path.Combine(dir, "a.jsonl"), "{\"text\": \"from a\"}");
        File.WriteAllText(Path.Combine(dir, "notes.md"), "ignored");
        Assert.Equal(new[] { "from a", "from b" }, TextDataset.Read(dir).ToList());
    }

    [Fact]
    public void Missing_dataset_names_the_path()
    {
        var e = Assert.Throws<SaeSharpException>(() => TextDataset.Read("/nonexistent/x.jsonl").ToList());
        Assert.Contains("/nonexistent/x.jsonl", e.Message);
    }

    private static BpeTokenizer Gpt2() => TestPaths.Gpt2;

    [Fact]
    public void Classified_jsonl_rows_keep_string_and_integer_classes()
    {
        string dir = TestPaths.TempDir();
        string path = Path.Combine(dir, "bios.jsonl");
        File.WriteAllText(path, """
            {"hard_text": "She is a nurse.", "profession": 13, "gender": 1}
            {"hard_text": "He teaches.", "profession": "professor"}

            {"hard_text": "Négatif", "profession": -2}
            """);
        Assert.Equal(new[] { ("She is a nurse.", "13"), ("He teaches.", "professor"), ("Négatif", "-2") },
            TextDataset.ReadClassified(path, "hard_text", "profession").ToList());
        var e = Assert.Throws<SaeSharpException>(() => TextDataset.ReadClassified(path, "hard_text", "label").ToList());
        Assert.Contains("no class field 'label'", e.Message);
        Assert.Contains("line 1", e.Message);
        e = Assert.Throws<SaeSharpException>(() => TextDataset.ReadClassified(path).ToList());
        Assert.Contains("no text field 'text'", e.Message);
        File.WriteAllText(path, """{"text": "a", "label": 1.5}""");
        e = Assert.Throws<SaeSharpException>(() => TextDataset.ReadClassified(path).ToList());
        Assert.Contains("expected a string or an integer", e.Message);
    }

    [Fact]
    public void Classified_parquet_rows_read_integer_and_string_class_columns()
    {
        string dir = TestPaths.TempDir();
        string ints = Path.Combine(dir, "ag.parquet"), strs = Path.Combine(dir, "lang.parquet");
        var text = new DataField<string>("text");
        var label = new DataField<long>("label");
        WriteParquet(ints, new ParquetSchema(text, label), async writer =>
        {
            using (var g = writer.CreateRowGroup())
            {
                await g.WriteAsync(text, new[] { "World news", "Sports" });
                await g.WriteAsync(label, new ReadOnlyMemory<long>([0, 1]));
            }
            using (var g = writer.CreateRowGroup())
            {
                await g.WriteAsync(text, new[] { "Sci/Tech" });
                await g.WriteAsync(label, new ReadOnlyMemory<long>([3]));
            }
        });
        Assert.Equal(new[] { ("World news", "0"), ("Sports", "1"), ("Sci/Tech", "3") }, TextDataset.ReadClassified(ints).ToList());
        var nullable = new DataField<int?>("lang");
        var body = new DataField<string>("code");
        var name = new DataField<string>("name");
        WriteParquet(strs, new ParquetSchema(body, nullable, name), async writer =>
        {
            using var g = writer.CreateRowGroup();
            await g.WriteAsync(body, new[] { "x = 1", "int x;" });
            await g.WriteAsync(nullable, new ReadOnlyMemory<int?>([7, null]));
            await g.WriteAsync(name, new[] { "Python", "C" });
        });
        Assert.Equal(new[] { ("x = 1", "Python"), ("int x;", "C") }, TextDataset.ReadClassified(strs, "code", "name").ToList());
        var e = Assert.Throws<SaeSharpException>(() => TextDataset.ReadClassified(strs, "code", "lang").ToList());
        Assert.Contains("class column 'lang' is null in row 1", e.Message);
        e = Assert.Throws<SaeSharpException>(() => TextDataset.ReadClassified(strs, "code", "category").ToList());
        Assert.Contains("no column 'category'", e.Message);
    }

    private static void WriteParquet(string path, ParquetSchema schema, Func<ParquetWriter, Task> body)
    {
        Task.Run(async () =>
        {
            await using var stream = File.Create(path);
            await using var writer = await ParquetWriter.CreateAsync(schema, stream);
            await body(writer);
        }).GetAwaiter().GetResult();
    }
}
