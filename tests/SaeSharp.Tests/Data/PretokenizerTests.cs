using System.Text.Json;
using SaeSharp.Data;
using SaeSharp.Tests.Tokenizers;
using SaeSharp.Tokenizers;

namespace SaeSharp.Tests.Data;

/// <summary>
/// <see cref="Pretokenizer"/> against rows worked out by hand from SAELens 6.37's <c>pretokenize_dataset</c>
/// (<c>tokenizer.encode(text)</c>, then <c>concat_and_batch_sequences</c> per map batch), with a tokenizer whose text is
/// its ids ("1 2 3" → [1 2 3]); BOS 100, EOS 101, SEP 102.
/// </summary>
public class PretokenizerTests
{
    /// <summary>GPT-2-like (<paramref name="addsBos"/> false: HF's encode adds nothing) or Llama-like (encode puts BOS first).</summary>
    internal sealed class IdTokenizer(bool addsBos, int? sep = 102) : ITextTokenizer
    {
        public int VocabSize => 1 << 20;
        public int? BosTokenId => 100;
        public int? EosTokenId => 101;
        public int? PadTokenId => null;
        public int? UnkTokenId => null;
        public int? SepTokenId => sep;
        public IReadOnlyList<AddedToken> AddedTokens => [];
        public IReadOnlyList<int> NamedSpecialTokenIds => [];
        public int[] Encode(string text, bool parseSpecialTokens = true) =>
            text.Split(' ', StringSplitOptions.RemoveEmptyEntries).Select(int.Parse).ToArray();
        public int[] EncodeWithSpecialTokens(string text) => addsBos ? [100, .. Encode(text)] : Encode(text);
        public string Decode(IEnumerable<int> ids, bool skipSpecialTokens = false) => string.Join(' ', ids);
        public string? IdToToken(int id) => id.ToString(System.Globalization.CultureInfo.InvariantCulture);
        public int? TokenToId(string token) => int.TryParse(token, out int i) ? i : null;
    }

    private static readonly string[] Docs = ["1 2 3", "4 5", "6 7 8 9"];

    /// <summary>In document order, one map job and batch (the order before SAELens's shuffle).</summary>
    private static readonly PretokenizeSettings Plain = new() { Shuffle = false, NumProc = 1, PretokenizeBatchSize = null, ContextSize = 4 };

    private static List<long[]> Rows(bool addsBos, PretokenizeSettings s, IEnumerable<string>? docs = null) =>
        Pretokenizer.Rows(docs ?? Docs, new IdTokenizer(addsBos), s).ToList();

    [Fact]
    public void Defaults_put_bos_first_in_every_row_and_between_documents()
    {
        // [1 2 3] → [100 1 2 3] | [100 4 5], then doc 3 gets the separator 100, which fills the row: [100 4 5 100] |
        // doc 3 goes on in a new row: [100 6 7 8] | [100 9] is partial and dropped.
        long[][] expected = [[100, 1, 2, 3], [100, 4, 5, 100], [100, 6, 7, 8]];
        Assert.Equal(expected, Rows(false, Plain));
        // A tokenizer whose encode puts BOS first gives the same rows here: no BOS is doubled.
        Assert.Equal(expected, Rows(true, Plain));
    }

    [Fact]
    public void Encode_adds_special_tokens_as_hugging_faces_encode_does()
    {
        // No begin-batch token, EOS between documents, context 5.
        var s = Plain with { ContextSize = 5, BeginBatchToken = null, SequenceSeparatorToken = PretokenizeToken.Eos };
        // GPT-2: [1 2 3] + 101 + [4] | [5] + 101 + [6 7 8] | [9] dropped.
        Assert.Equal(new long[][] { [1, 2, 3, 101, 4], [5, 101, 6, 7, 8] }, Rows(false, s));
        // Llama: every document is [100 ...]: [100 1 2 3] + 101 fills the row | [100 4 5] + 101 + [100] | [6 7 8 9] dropped.
        Assert.Equal(new long[][] { [100, 1, 2, 3, 101], [100, 4, 5, 101, 100] }, Rows(true, s));
    }

    [Fact]
    public void Begin_sequence_token_and_token_ids_and_sep()
    {
        // begin-sequence BOS, nothing else, context 4: [100 1 2 3] | [100 4 5] + doc 3's begin-sequence 100 fills it |
        // doc 3 goes on without one: [6 7 8 9].
        var s = Plain with { BeginBatchToken = null, SequenceSeparatorToken = null, BeginSequenceToken = PretokenizeToken.Bos };
        Assert.Equal(new long[][] { [100, 1, 2, 3], [100, 4, 5, 100], [6, 7, 8, 9] }, Rows(false, s));
        // begin-batch id 42, separator "sep" (102): [42 1 2 3] | [42 4 5 102] | [42 6 7 8] | [42 9] dropped.
        var ids = Plain with { BeginBatchToken = PretokenizeToken.OfId(42), SequenceSeparatorToken = PretokenizeToken.Sep };
        Assert.Equal(new long[][] { [42, 1, 2, 3], [42, 4, 5, 102], [42, 6, 7, 8] }, Rows(false, ids));
        // A tokenizer with no SEP: SAELens's get_special_token_from_cfg gives None and no separator is put.
        var noSep = Pretokenizer.Rows(Docs, new IdTokenizer(false, sep: null), ids).ToList();
        Assert.Equal(new long[][] { [42, 1, 2, 3], [42, 4, 5, 6], [42, 7, 8, 9] }, noSep);
    }

    [Fact]
    public void Disable_concat_sequences_gives_one_row_per_long_enough_document()
    {
        var s = Plain with { DisableConcatSequences = true };
        // begin-batch BOS becomes the begin-sequence token; [1 2 3] (3 ≥ 4−1) → [100 1 2 3]; [4 5] is too short;
        // [6 7 8 9] → [100 6 7 8].
        Assert.Equal(new long[][] { [100, 1, 2, 3], [100, 6, 7, 8] }, Rows(false, s));
        // Llama: [100 4 5] is 3 tokens, already starts with BOS, shorter than 4: dropped too.
        Assert.Equal(new long[][] { [100, 1, 2, 3], [100, 6, 7, 8] }, Rows(true, s));
    }

    [Fact]
    public void Concatenation_restarts_at_every_map_batch_and_shard_as_in_saelens()
    {
        string[] docs = ["1 2 3", "1 2 3", "1 2 3"];
        var s = Plain with { ContextSize = 5 };
        // One batch: [100 1 2 3] + 100 | [100 1 2 3] + 100 | [100 1 2 3] dropped: two rows.
        Assert.Equal(2, Rows(false, s, docs).Count);
        // Batches of 2 documents: docs 0–1 give one row (the second row's start is dropped at the batch end), doc 2 none.
        Assert.Equal(new long[][] { [100, 1, 2, 3, 100] }, Rows(false, s with { PretokenizeBatchSize = 2 }, docs));
        // num_proc 2: shards [0 1] and [2] (datasets' contiguous shards: the first count mod n one longer): one row.
        Assert.Single(Rows(false, s with { NumProc = 2 }, docs));
        // streaming: one job whatever num_proc says... SAELens refuses num_proc > 1 with streaming.
        Assert.Throws<SaeSharpException>(() => Rows(false, s with { NumProc = 2, Streaming = true }, docs));
        Assert.Equal(2, Rows(false, s with { NumProc = 1, Streaming = true }, docs).Count);
    }

    [Fact]
    public void Batch_starts_follow_datasets_contiguous_shards()
    {
        static long[] Starts(long count, int shards, int? batch)
        {
            var f = Pretokenizer.BatchStarts(count, shards, batch);
            return Enumerable.Range(0, (int)count).Where(i => f(i)).Select(i => (long)i).ToArray();
        }
        // 5 documents, 2 shards: [0 1 2] [3 4]; batches of 2 within each: 0, 2 | 3.
        Assert.Equal(new long[] { 0, 2, 3 }, Starts(5, 2, 2));
        // 10 documents, 4 shards: sizes 3 3 2 2 → starts 0 3 6 8.
        Assert.Equal(new long[] { 0, 3, 6, 8 }, Starts(10, 4, 1000));
        // more shards than documents: one per document (datasets lowers num_proc to the row count).
        Assert.Equal(new long[] { 0, 1, 2 }, Starts(3, 4, 1000));
        // one shard, no batch size: only the first.
        Assert.Equal(new long[] { 0 }, Starts(7, 1, null));
    }

    [Fact]
    public void Documents_are_read_as_a_stream_and_counted_once_per_pass()
    {
        int reads = 0;
        IEnumerable<string> Stream()
        {
            for (int i = 0; i < 50; i++)
            {
                reads++;
                yield return "1 2 3";
            }
        }
        var result = Pretokenizer.Run(Stream(), new IdTokenizer(false), Plain with { NumProc = 4 });
        Assert.Equal(50, result.Documents);
        Assert.Equal(100, reads); // one pass to count for the shards, one to tokenize
    }

    /// <summary>NumPy 1.24.2's <c>default_rng(seed).permutation(n)</c> from tests/data/numpy_random (see NumpyRandomTests).</summary>
    internal static long[] NumpyPermutation(System.Numerics.BigInteger seed, int n)
    {
        using var doc = JsonDocument.Parse(File.ReadAllText(TestPaths.Data("numpy_random", "numpy_random.json")));
        var e = doc.RootElement.GetProperty("permutations").EnumerateArray()
            .Single(x => x.GetProperty("seed").GetRawText() == seed.ToString(System.Globalization.CultureInfo.InvariantCulture) && x.GetProperty("n").GetInt32() == n);
        return e.GetProperty("permutation").EnumerateArray().Select(v => v.GetInt64()).ToArray();
    }

    [Theory]
    [InlineData(42, 37)]
    [InlineData(0, 1000)]
    [InlineData(12345678901234, 37)]
    public void Shuffle_gives_the_row_order_of_datasets_shuffle_with_the_seed(long seed, int n)
    {
        // datasets' shuffle(seed) is select(indices=default_rng(seed).permutation(n)): row k of the result is row perm[k].
        // Document i is "i i i", one row [i i i] (no BOS, no separator).
        var docs = Enumerable.Range(0, n).Select(i => $"{i} {i} {i}").ToList();
        var s = Plain with { ContextSize = 3, BeginBatchToken = null, SequenceSeparatorToken = null };
        Assert.Equal(Enumerable.Range(0, n).Select(i => new[] { i, i, i }), Pretokenizer.Run(docs, new IdTokenizer(false), s).Rows);
        var shuffled = Pretokenizer.Run(docs, new IdTokenizer(false), s with { Shuffle = true, Seed = seed }).Rows;
        Assert.Equal(NumpyPermutation(seed, n).Select(k => new[] { (int)k, (int)k, (int)k }), shuffled);
    }

    [Fact]
    public void Unseeded_shuffle_is_a_fresh_permutation_and_a_negative_seed_is_refused()
    {
        var docs = Enumerable.Range(0, 200).Select(i => $"{i} {i} {i}").ToList();
        var s = Plain with { ContextSize = 3, BeginBatchToken = null, SequenceSeparatorToken = null, Shuffle = true };
        var a = Pretokenizer.Run(docs, new IdTokenizer(false), s).Rows;
        var b = Pretokenizer.Run(docs, new IdTokenizer(false), s).Rows;
        Assert.NotEqual(a, b); // 1/200! to fail
        Assert.Equal(Enumerable.Range(0, 200), a.Select(r => r[0]).Order());
        var e = Assert.Throws<SaeSharpException>(() => Pretokenizer.Run(docs, new IdTokenizer(false), s with { Seed = -3 }));
        Assert.Contains("seed -3", e.Message);
    }

    [Fact]
    public void Txt_empty_lines_are_documents_as_datasets_reads_them()
    {
        // datasets' text loader gives ["1 2 3", "", "4 5", "6 7 8 9"] for this file.
        string path = Path.Combine(TestPaths.TempDir(), "d.txt");
        File.WriteAllText(path, "1 2 3\n\n4 5\n6 7 8 9\n");
        // Llama-like: encode("") is [100], a lone BOS: [100 1 2 3] | [100] + [100 4 5] (BOS already first: no separator) |
        // [100 6 7 8] | [100 9] dropped. Skipping the empty line would give [100 4 5 100] as the second row.
        var llama = Pretokenizer.Run(path, new IdTokenizer(true), Plain);
        Assert.Equal(new[] { new[] { 100, 1, 2, 3 }, [100, 100, 4, 5], [100, 6, 7, 8] }, llama.Rows);
        Assert.Equal(4, llama.Documents);
        // GPT-2-like: encode("") is [], which adds nothing, but the empty document still counts toward a map batch. Batches
        // of 2 documents: {"1 2 3", ""} → [100 1 2 3]; {"4 5", "6 7 8 9"} → [100 4 5 100] | [100 6 7 8] | [100 9] dropped.
        // (Without the empty line: {"1 2 3", "4 5"} → [100 1 2 3] and [100 4 5] dropped; {"6 7 8 9"} → [100 6 7 8].)
        var gpt2 = Pretokenizer.Run(path, new IdTokenizer(false), Plain with { PretokenizeBatchSize = 2 });
        Assert.Equal(new[] { new[] { 100, 1, 2, 3 }, [100, 4, 5, 100], [100, 6, 7, 8] }, gpt2.Rows);
    }

    [Fact]
    public void Config_json_takes_pretokenize_runner_config_fields()
    {
        string path = Path.Combine(TestPaths.TempDir(), "pretok.json");
        File.WriteAllText(path, """
            {"tokenizer_name": "gpt2", "dataset_path": "NeelNanda/pile-10k", "context_size": 64, "shuffle": false, "seed": 3,
             "begin_batch_token": 42, "begin_sequence_token": "eos", "sequence_separator_token": null, "num_proc": 1,
             "pretokenize_batch_size": null, "hf_repo_id": null, "column_name": "body"}
            """);
        var s = PretokenizeSettings.FromJson(path);
        Assert.Equal((64, false, (System.Numerics.BigInteger?)3, "body", 1, (int?)null), (s.ContextSize, s.Shuffle, s.Seed, s.ColumnName, s.NumProc, s.PretokenizeBatchSize));
        Assert.Equal(PretokenizeToken.OfId(42), s.BeginBatchToken);
        Assert.Equal(PretokenizeToken.Eos, s.BeginSequenceToken);
        Assert.Null(s.SequenceSeparatorToken);
        File.WriteAllText(path, """{"context_sise": 64}""");
        Assert.Contains("context_sise", Assert.Throws<SaeSharpException>(() => PretokenizeSettings.FromJson(path)).Message);
        File.WriteAllText(path, """{"begin_batch_token": "cls"}""");
        Assert.Contains("cls", Assert.Throws<SaeSharpException>(() => PretokenizeSettings.FromJson(path)).Message);
    }

    [Fact]
    public void Seeds_of_any_size_round_trip_through_the_config_and_the_metadata()
    {
        // Python's json writes 2⁶⁴ + 5 as a plain integer; NumPy seeds default_rng with it.
        var big = System.Numerics.BigInteger.Pow(2, 64) + 5;
        string dir = TestPaths.TempDir(), path = Path.Combine(dir, "cfg.json"), metaPath = Path.Combine(dir, "sae_lens.json");
        File.WriteAllText(path, """{"tokenizer_name": "gpt2", "seed": 18446744073709551621}""");
        var s = PretokenizeSettings.FromJson(path);
        Assert.Equal(big, s.Seed);
        var meta = PretokenizedMetadata.FromSettings(s with { DatasetPath = "d" });
        Assert.Contains("\"seed\": 18446744073709551621,", meta.ToJson());
        File.WriteAllText(metaPath, meta.ToJson());
        Assert.Equal(big, PretokenizedMetadata.Read(metaPath).Seed);
        File.WriteAllText(path, """{"seed": null}""");
        Assert.Null(PretokenizeSettings.FromJson(path).Seed);
        foreach (string bad in new[] { "1.5", "\"42\"", "true" })
        {
            File.WriteAllText(path, $$"""{"seed": {{bad}}}""");
            var e = Assert.Throws<SaeSharpException>(() => PretokenizeSettings.FromJson(path));
            Assert.Contains("seed", e.Message);
            Assert.Contains("expected an integer or null", e.Message);
        }
    }

    [Fact]
    public void Metadata_has_saelens_keys_and_checks_the_run()
    {
        var meta = PretokenizedMetadata.FromSettings(new PretokenizeSettings { TokenizerName = "gpt2", DatasetPath = "d", ContextSize = 16, Seed = 5 });
        using var doc = JsonDocument.Parse(meta.ToJson());
        string[] saelensKeys =
        [
            "sae_lens_version", "tokenizer_name", "original_dataset", "original_dataset_name", "original_split", "original_data_files",
            "original_column_name", "context_size", "shuffled", "seed", "begin_batch_token", "begin_sequence_token",
            "sequence_separator_token", "disable_concat_sequences",
        ];
        var keys = doc.RootElement.EnumerateObject().Select(p => p.Name).ToList();
        Assert.Equal([.. saelensKeys, "written_by"], keys);
        Assert.Equal("bos", doc.RootElement.GetProperty("begin_batch_token").GetString());
        Assert.Equal(JsonValueKind.Null, doc.RootElement.GetProperty("begin_sequence_token").ValueKind);
        var tok = new IdTokenizer(false);
        Assert.Empty(meta.Check("f", 16, prependBos: true, tok));
        Assert.Contains("cut", Assert.Single(meta.Check("f", 8, prependBos: true, tok)));
        Assert.Contains("context_size 16", Assert.Throws<SaeSharpException>(() => meta.Check("f", 32, true, tok)).Message);
        Assert.Contains("--no-prepend-bos", Assert.Single(meta.Check("f", 16, prependBos: false, tok)));
        Assert.Contains("do not start with BOS", Assert.Single((meta with { BeginBatchToken = null }).Check("f", 16, true, tok)));
        Assert.Contains("BOS is 100", Assert.Single((meta with { BeginBatchToken = PretokenizeToken.OfId(7) }).Check("f", 16, true, tok)));
    }
}

/// <summary>The SEP token "sep" resolves to: tokenizer_config.json's <c>sep_token</c> (Hugging Face's sep_token_id).</summary>
public class SepTokenTests
{
    [Fact]
    public void Sep_token_comes_from_the_tokenizer_config()
    {
        string dir = TestPaths.TempDir();
        File.Copy(Path.Combine(SaeSharp.LanguageModels.BuiltinModel.Folder, "tokenizer.json"), Path.Combine(dir, "tokenizer.json"));
        File.WriteAllText(Path.Combine(dir, "tokenizer_config.json"), """{"bos_token": "<|endoftext|>", "sep_token": {"content": "."}}""");
        var tok = Tokenizer.FromFolder(dir);
        Assert.NotNull(tok.TokenToId("."));
        Assert.Equal(tok.TokenToId("."), tok.SepTokenId);
        Assert.Equal((long?)tok.TokenToId("."), PretokenizeToken.Sep.Resolve(tok));
        // The built-in model's tokenizer names none: "sep" is no token, as HF's sep_token_id None.
        Assert.Null(Tokenizer.FromFolder(SaeSharp.LanguageModels.BuiltinModel.Folder).SepTokenId);
    }
}
