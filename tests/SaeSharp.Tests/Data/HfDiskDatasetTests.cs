using System.Text.Json;
using SaeSharp.Data;
using SaeSharp.Tests.Tokenizers;

namespace SaeSharp.Tests.Data;

/// <summary>
/// The <c>save_to_disk</c> folder against an independent Arrow implementation, the npm package apache-arrow 21.2.0
/// (<c>bench/reference/pretokenize_arrow_js.mjs</c>): tests/data/pretokenize/saesharp_written is what
/// <see cref="HfDiskDataset.Write"/> writes for <see cref="FixtureRows"/>, saesharp_written.js.json what apache-arrow read
/// from it; js_written is a folder apache-arrow wrote by hand from the format.
/// </summary>
public class HfDiskDatasetTests
{
    /// <summary>Row i is [i, i+1, i+2, i+3]: 2,003 rows, so three record batches (1,000, 1,000, 3).</summary>
    private static List<int[]> FixtureRows() => Enumerable.Range(0, 2003).Select(i => new[] { i, i + 1, i + 2, i + 3 }).ToList();

    private static string Fixture(params string[] parts) => TestPaths.Data(["pretokenize", .. parts]);

    [Fact]
    public void Written_folder_is_the_fixture_apache_arrow_read()
    {
        // SAESHARP_PRETOKENIZE_FIXTURE_OUT=tests/data/pretokenize/saesharp_written regenerates the fixture.
        string? regenerate = Environment.GetEnvironmentVariable("SAESHARP_PRETOKENIZE_FIXTURE_OUT");
        string dir = regenerate ?? Path.Combine(TestPaths.TempDir(), "written");
        var names = HfDiskDataset.Write(dir, FixtureRows(), 4, "train");
        Assert.Equal(["data-00000-of-00001.arrow"], names);
        foreach (var f in new[] { names[0], HfDiskDataset.StateFile, HfDiskDataset.InfoFile })
            Assert.Equal(File.ReadAllBytes(Fixture("saesharp_written", f)), File.ReadAllBytes(Path.Combine(dir, f)));

        // What apache-arrow read from those bytes: the schema datasets writes, the features metadata, the rows.
        using var js = JsonDocument.Parse(File.ReadAllText(Fixture("saesharp_written.js.json")));
        var shard = Assert.Single(js.RootElement.GetProperty("shards").EnumerateArray());
        var field = Assert.Single(shard.GetProperty("fields").EnumerateArray());
        Assert.Equal(("input_ids", "List<Int32>", true),
            (field.GetProperty("name").GetString(), field.GetProperty("type").GetString(), field.GetProperty("nullable").GetBoolean()));
        using var hf = JsonDocument.Parse(shard.GetProperty("metadata").GetProperty("huggingface").GetString()!);
        var feature = hf.RootElement.GetProperty("info").GetProperty("features").GetProperty("input_ids");
        Assert.Equal("Sequence", feature.GetProperty("_type").GetString()); // datasets 3's form, which 4 and 5 read too
        Assert.Equal("int32", feature.GetProperty("feature").GetProperty("dtype").GetString());
        Assert.Equal(new[] { 1000, 1000, 3 }, shard.GetProperty("batch_rows").EnumerateArray().Select(x => x.GetInt32()));
        var rows = shard.GetProperty("rows").EnumerateArray().Select(r => r.EnumerateArray().Select(x => x.GetInt32()).ToArray()).ToList();
        Assert.Equal(2003, rows.Count);
        for (int i = 0; i < rows.Count; i++) Assert.Equal(new[] { i, i + 1, i + 2, i + 3 }, rows[i]);

        // state.json as save_to_disk writes it for SAELens's set_format(type="torch", columns=["input_ids"]).
        using var state = JsonDocument.Parse(File.ReadAllText(Path.Combine(dir, HfDiskDataset.StateFile)));
        Assert.Equal("torch", state.RootElement.GetProperty("_format_type").GetString());
        Assert.Equal("train", state.RootElement.GetProperty("_split").GetString());
        Assert.Equal(16, state.RootElement.GetProperty("_fingerprint").GetString()!.Length);
    }

    [Fact]
    public void Reads_the_folder_apache_arrow_wrote()
    {
        // Two int64 shards, read in state.json's order.
        string dir = Fixture("js_written");
        long[][] expected = [[7, 1, 2, 3], [7, 4, 5, 7], [7, 6, 8, 9], [7, 10, 11, 12], [7, 13, 14, 15]];
        Assert.Equal(expected, HfDiskDataset.DataFiles(dir).SelectMany(f => HfDiskDataset.ReadTokenRows(f)).ToList());
        // As --dataset: pre-tokenized rows; context 3 cuts them (sae_lens.json says 4: a warning, not an error).
        var tok = new PretokenizerTests.IdTokenizer(false);
        Assert.Equal(expected.Select(r => r[..3]), TokenWindows.FromPath(dir, tok, 3, prependBos: false).ToList());
        Assert.Equal(expected, TokenWindows.FromPath(Path.Combine(dir, "data-00000-of-00002.arrow"), tok, 4, false).Concat(
            TokenWindows.FromPath(Path.Combine(dir, "data-00001-of-00002.arrow"), tok, 4, false)).ToList());
        // Ids the tokenizer does not have: a dataset tokenized for another model.
        var small = new SmallVocabulary();
        Assert.Contains("token id 10", Assert.Throws<SaeSharpException>(() => TokenWindows.FromPath(dir, small, 4, false).ToList()).Message);
        // Longer windows than the rows: the sae_lens.json check names the mismatch before any row is read.
        var e = Assert.Throws<SaeSharpException>(() => TokenWindows.FromPath(dir, tok, 8, false).ToList());
        Assert.Contains("sae_lens.json", e.Message);
        Assert.Contains("context_size 4", e.Message);
    }

    private sealed class SmallVocabulary : SaeSharp.Tokenizers.ITextTokenizer
    {
        private readonly PretokenizerTests.IdTokenizer _inner = new(false);
        public int VocabSize => 10;
        public int? BosTokenId => 7;
        public int? EosTokenId => null;
        public int? PadTokenId => null;
        public int? UnkTokenId => null;
        public IReadOnlyList<SaeSharp.Tokenizers.AddedToken> AddedTokens => [];
        public IReadOnlyList<int> NamedSpecialTokenIds => [];
        public int[] Encode(string text, bool parseSpecialTokens = true) => _inner.Encode(text);
        public string Decode(IEnumerable<int> ids, bool skipSpecialTokens = false) => _inner.Decode(ids);
        public string? IdToToken(int id) => _inner.IdToToken(id);
        public int? TokenToId(string token) => _inner.TokenToId(token);
    }

    [Fact]
    public void Our_writer_round_trips_through_our_reader_with_many_shards_in_order()
    {
        var rows = FixtureRows();
        string dir = Path.Combine(TestPaths.TempDir(), "rt");
        HfDiskDataset.Write(dir, rows, 4, null);
        Assert.Equal(rows.Select(r => r.Select(x => (long)x).ToArray()), TokenWindows.FromPath(dir, new PretokenizerTests.IdTokenizer(false), 4, false).ToList());
        // The shard count save_to_disk picks: one per 500 MB, never more than the rows.
        Assert.Equal(1, HfDiskDataset.ShardCount(2003, 4));
        Assert.Equal(2, HfDiskDataset.ShardCount(1_000_000, 128)); // 10⁶ rows × (128 × 4 + 4) B = 516 MB → 2 shards
    }

    [Fact]
    public void A_truncated_or_corrupt_arrow_file_is_one_error_naming_it()
    {
        string src = Fixture("saesharp_written", "data-00000-of-00001.arrow");
        var bytes = File.ReadAllBytes(src);
        string dir = TestPaths.TempDir();
        var tok = new PretokenizerTests.IdTokenizer(false);
        foreach (var (name, content) in new[]
                 {
                     ("cut.arrow", bytes[..(bytes.Length * 6 / 10)]),       // mid-batch
                     ("noend.arrow", bytes[..^8]),                          // the end-of-stream marker lost
                     ("garbage.arrow", Enumerable.Range(0, 4096).Select(i => (byte)(i * 37)).ToArray()),
                     ("empty.arrow", Array.Empty<byte>()),
                 })
        {
            string path = Path.Combine(dir, name);
            File.WriteAllBytes(path, content);
            var e = Assert.Throws<SaeSharpException>(() => TokenWindows.FromPath(path, tok, 4, false).ToList());
            Assert.Contains(path, e.Message);
            Assert.DoesNotContain('\n', e.Message);
        }
        // A shard state.json lists that is missing: the dataset is incomplete.
        string folder = Path.Combine(dir, "partial");
        HfDiskDataset.Write(folder, FixtureRows(), 4, "train");
        File.Delete(Path.Combine(folder, "data-00000-of-00001.arrow"));
        Assert.Contains("missing", Assert.Throws<SaeSharpException>(() => TokenWindows.FromPath(folder, tok, 4, false).ToList()).Message);
    }

    [Fact]
    public void Save_replaces_only_a_dataset_and_only_with_force_and_leaves_nothing_when_it_fails()
    {
        string root = TestPaths.TempDir();
        var s = new PretokenizeSettings { ContextSize = 4 };
        string outDir = Path.Combine(root, "ds");
        Pretokenizer.Save(outDir, FixtureRows(), s);
        Assert.Contains("--force", Assert.Throws<SaeSharpException>(() => Pretokenizer.Save(outDir, FixtureRows(), s)).Message);
        Pretokenizer.Save(outDir, FixtureRows()[..5], s, force: true);
        Assert.Equal(5, TokenWindows.FromPath(outDir, new PretokenizerTests.IdTokenizer(false), 4, true).Count());
        // --force never deletes a folder that is not a dataset.
        string other = Path.Combine(root, "other");
        Directory.CreateDirectory(other);
        File.WriteAllText(Path.Combine(other, "notes.txt"), "mine");
        Assert.Throws<SaeSharpException>(() => Pretokenizer.Save(other, FixtureRows(), s, force: true));
        Assert.True(File.Exists(Path.Combine(other, "notes.txt")));
        // A write that fails part-way (an empty row cannot be a Parquet row) leaves no folder, and the one there before stays.
        List<int[]> bad = [[1, 2, 3, 4], []];
        string fresh = Path.Combine(root, "fresh");
        Assert.Throws<SaeSharpException>(() => Pretokenizer.Save(fresh, bad, s, PretokenizedFormat.Parquet));
        Assert.False(Directory.Exists(fresh));
        Assert.Throws<SaeSharpException>(() => Pretokenizer.Save(outDir, bad, s, PretokenizedFormat.Parquet, force: true));
        Assert.Equal(5, TokenWindows.FromPath(outDir, new PretokenizerTests.IdTokenizer(false), 4, true).Count());
        Assert.Empty(Directory.EnumerateDirectories(root, ".*.tmp"));
    }

    [Fact]
    public void Parquet_format_is_read_as_a_hub_upload_is()
    {
        string dir = Path.Combine(TestPaths.TempDir(), "pq");
        var files = Pretokenizer.Save(dir, FixtureRows(), new PretokenizeSettings { ContextSize = 4 }, PretokenizedFormat.Parquet);
        Assert.Equal(["data/train-00000-of-00001.parquet"], files);
        Assert.True(File.Exists(Path.Combine(dir, PretokenizedMetadata.FileName)));
        var rows = TokenWindows.FromPath(dir, new PretokenizerTests.IdTokenizer(false), 4, true).ToList();
        Assert.Equal(2003, rows.Count);
        for (int i = 0; i < rows.Count; i++) Assert.Equal(new long[] { i, i + 1, i + 2, i + 3 }, rows[i]);
    }
}

/// <summary>Mutated shards (bytes flipped, cut, a length rewritten): each reads or is one SaeSharp error naming the file,
/// never another exception, a hang or an allocation out of proportion to the file.</summary>
public class HfDiskDatasetMutationTests
{
    [Fact]
    public void Mutated_arrow_shards_are_read_or_refused_in_one_line()
    {
        var good = File.ReadAllBytes(TestPaths.Data("pretokenize", "js_written", "data-00001-of-00002.arrow"));
        string dir = TestPaths.TempDir();
        var rng = new Random(20261205);
        int refused = 0;
        for (int n = 0; n < 300; n++)
        {
            var bytes = (byte[])good.Clone();
            switch (n % 4)
            {
                case 0: bytes[rng.Next(bytes.Length)] ^= (byte)(1 << rng.Next(8)); break;
                case 1: bytes = bytes[..rng.Next(bytes.Length)]; break;
                case 2: BitConverter.GetBytes(rng.Next() * (rng.Next(2) == 0 ? 1 : -1)).CopyTo(bytes, rng.Next(bytes.Length - 4) & ~3); break;
                default: for (int i = 0; i < 8; i++) bytes[rng.Next(bytes.Length)] = (byte)rng.Next(256); break;
            }
            string path = Path.Combine(dir, $"m{n}.arrow");
            File.WriteAllBytes(path, bytes);
            try
            {
                _ = HfDiskDataset.ReadTokenRows(path).Sum(r => r.Length);
            }
            catch (SaeSharpException e)
            {
                Assert.Contains(path, e.Message);
                refused++;
            }
        }
        Assert.True(refused > 50, $"{refused} refused");
    }
}

/// <summary>A saved text dataset (a <c>text</c> string column) is read as documents, so it can be pretokenized.</summary>
public class HfDiskDatasetTextTests
{
    [Fact]
    public void A_text_arrow_file_is_read_as_documents()
    {
        string path = Path.Combine(TestPaths.TempDir(), "text.arrow");
        var schema = new Apache.Arrow.Schema.Builder().Field(new Apache.Arrow.Field("text", Apache.Arrow.Types.StringType.Default, true)).Build();
        using (var file = File.Create(path))
        using (var writer = new Apache.Arrow.Ipc.ArrowStreamWriter(file, schema))
        {
            using var batch = new Apache.Arrow.RecordBatch(schema, [new Apache.Arrow.StringArray.Builder().AppendRange(["1 2 3", "4 5", "6 7 8 9"]).Build()], 3);
            writer.WriteRecordBatch(batch);
            writer.WriteEnd();
        }
        Assert.Equal(["1 2 3", "4 5", "6 7 8 9"], TextDataset.Read(path));
        var result = Pretokenizer.Run(path, new PretokenizerTests.IdTokenizer(false),
            new PretokenizeSettings { ContextSize = 4, Shuffle = false, NumProc = 1 });
        Assert.Equal(new[] { new[] { 100, 1, 2, 3 }, [100, 4, 5, 100], [100, 6, 7, 8] }, result.Rows);
        Assert.Equal(3, result.Documents);
    }
}
