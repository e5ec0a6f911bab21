using System.Text.Json.Nodes;
using SaeSharp.Saes;
using SaeSharp.Data;
using SaeSharp.Tests.Tokenizers;

namespace SaeSharp.Tests.Data;

/// <summary>
/// Windows and seqpos_slice positions against SAELens 6.37.6's own code run on the same hand-made token lists
/// (tests/data/saelens_windows/windows.json, written by bench/reference/saelens637_windows_fixture.py with
/// <c>concat_and_batch_sequences</c> copied verbatim), and the separator / disable_concat_sequences / slice options of
/// a text dataset.
/// </summary>
public class SaelensWindowsTests
{
    private static JsonObject Fixture() => JsonNode.Parse(File.ReadAllText(TestPaths.Data("saelens_windows", "windows.json")))!.AsObject();

    private static long? Id(JsonNode? n) => n is null ? null : (long)n;

    [Fact]
    public void ConcatAndBatch_gives_saelens_windows_for_every_separator_and_disable_concat_setting()
    {
        var cases = Fixture()["windows"]!.AsArray();
        Assert.Equal(15, cases.Count);
        foreach (var c in cases)
        {
            var docs = c!["sequences"]!.AsArray().Select(d => d!.AsArray().Select(t => (long)t!).ToArray()).ToList();
            var expected = c["windows"]!.AsArray().Select(w => w!.AsArray().Select(t => (long)t!).ToArray()).ToList();
            var got = TokenWindows.ConcatAndBatch(docs, (int)c["context_size"]!, Id(c["begin_batch_token_id"]), Id(c["begin_sequence_token_id"]),
                Id(c["sequence_separator_token_id"]), (bool)c["disable_concat_sequences"]!).ToList();
            Assert.True(expected.Count > 0);
            Assert.True(expected.SequenceEqual(got, new WindowComparer()), $"case {c.ToJsonString()}: got {string.Join(" | ", got.Select(w => string.Join(",", w)))}");
        }
    }

    /// <summary>The one documented difference: with disable_concat_sequences SAELens tests the BOS id for truthiness
    /// (<c>if begin_batch_token_id and not begin_sequence_token_id</c>), so a BOS of 0 (Pythia's) is not put before the
    /// documents; SaeSharp puts it, as for any other BOS id.</summary>
    [Fact]
    public void A_bos_of_id_0_is_honoured_with_disable_concat_sequences_where_saelens_skips_it()
    {
        var c = Fixture()["bos0_disable_concat"]!;
        var docs = c["sequences"]!.AsArray().Select(d => d!.AsArray().Select(t => (long)t!).ToArray()).ToList();
        var saelens = c["windows"]!.AsArray().Select(w => w!.AsArray().Select(t => (long)t!).ToArray()).ToList();
        // SAELens: the documents of at least 4 tokens, as they are.
        Assert.Equal(new long[][] { [15, 16, 17, 18], [1, 25, 26, 27], [29, 30, 31, 32], [39, 40, 41, 42] }, saelens);
        // SaeSharp: BOS 0 and the first 3 tokens of every document of at least 3 tokens ([0 22 23] starts with BOS and is too short).
        Assert.Equal(new long[][] { [0, 10, 11, 12], [0, 15, 16, 17], [0, 1, 25, 26], [0, 29, 30, 31], [0, 39, 40, 41] },
            TokenWindows.ConcatAndBatch(docs, 4, beginBatchTokenId: 0, sequenceSeparatorTokenId: 0, disableConcatSequences: true).ToList());
    }

    private sealed class WindowComparer : IEqualityComparer<long[]>
    {
        public bool Equals(long[]? x, long[]? y) => x!.SequenceEqual(y!);
        public int GetHashCode(long[] obj) => obj.Length;
    }

    [Fact]
    public void SeqposSlice_keeps_the_positions_python_slicing_keeps()
    {
        var cases = Fixture()["seqpos_slices"]!.AsArray();
        Assert.True(cases.Count > 40);
        foreach (var c in cases)
        {
            var slice = SeqposSlice.FromJson(c!["seqpos_slice"]);
            int ctx = (int)c["context_size"]!;
            var expected = c["positions"]!.AsArray().Select(p => (int)p!).ToArray();
            Assert.Equal((int)c["training_context_size"]!, expected.Length);
            if (expected.Length == 0)
            {
                // SAELens's _validate_seqpos refuses a slice that keeps nothing.
                var e = Assert.Throws<SaeSharpException>(() => slice.Positions(ctx));
                Assert.Contains($"seqpos_slice {slice}", e.Message);
                continue;
            }
            Assert.Equal(expected, slice.Positions(ctx));
            // Slice text round-trips to the same positions (":-1" for [null, -1], "3" alone is not slice text, [3] is ":3").
            Assert.Equal(expected, SeqposSlice.Parse(slice.ToString()).Positions(ctx));
            // The JSON list is written back as given.
            Assert.Equal(c["seqpos_slice"]!.ToJsonString(), slice.ToJson().ToJsonString());
        }
    }

    [Theory]
    [InlineData("1:", "[1,null]", new[] { 1, 2, 3, 4, 5, 6, 7 })]
    [InlineData(":-1", "[null,-1]", new[] { 0, 1, 2, 3, 4, 5, 6 })]
    [InlineData("2:100", "[2,100]", new[] { 2, 3, 4, 5, 6, 7 })]
    [InlineData("::3", "[null,null,3]", new[] { 0, 3, 6 })]
    [InlineData(" 1 : -2 : 2 ", "[1,-2,2]", new[] { 1, 3, 5 })]
    [InlineData(":", "[null,null]", new[] { 0, 1, 2, 3, 4, 5, 6, 7 })]
    public void Slice_text_parses_as_python_slices(string text, string json, int[] positions)
    {
        var s = SeqposSlice.Parse(text);
        Assert.Equal(json, s.ToJson().ToJsonString());
        Assert.Equal(positions, s.Positions(8));
    }

    [Theory]
    [InlineData("abc", "--seqpos-slice abc")]
    [InlineData("1", "--seqpos-slice 1:")]       // an index, not a slice
    [InlineData("1:x", "'x' is not an integer")]
    [InlineData("1:2:3:4", "--seqpos-slice 1:2:3:4")]
    [InlineData("::0", "step must be at least 1")]
    [InlineData("::-1", "step must be at least 1")]
    public void Bad_slice_text_is_a_one_line_error_naming_it(string text, string expected)
    {
        var e = Assert.Throws<SaeSharpException>(() => SeqposSlice.Parse(text));
        Assert.Contains(expected, e.Message);
        Assert.DoesNotContain('\n', e.Message);
        Assert.Contains(text, e.Message);
    }

    [Fact]
    public void A_slice_that_keeps_no_position_is_an_error_naming_it()
    {
        var e = Assert.Throws<SaeSharpException>(() => SeqposSlice.Parse("5:2").Positions(128));
        Assert.Contains("seqpos_slice 5:2", e.Message);
        Assert.Contains("128-token", e.Message);
        Assert.Throws<SaeSharpException>(() => SeqposSlice.FromJson(JsonNode.Parse("[200, null]")).Positions(128));
        Assert.Contains("element 0", Assert.Throws<SaeSharpException>(() => SeqposSlice.FromJson(JsonNode.Parse("[\"a\"]"))).Message);
        Assert.Contains("1 to 3", Assert.Throws<SaeSharpException>(() => SeqposSlice.FromJson(JsonNode.Parse("[]"))).Message);
        Assert.Contains("expected a list", Assert.Throws<SaeSharpException>(() => SeqposSlice.FromJson(JsonNode.Parse("1"))).Message);
    }

    // IdTokenizer: BOS 100, EOS 101, SEP 102 (or none); documents are their ids.
    private static List<long[]> Text(PretokenizeToken? separator, bool disable = false, bool bos = true, int? sep = 102) =>
        TokenWindows.TokenizeAndConcatenate(["1 2 3", "4 5", "6 7 8 9"], new PretokenizerTests.IdTokenizer(false, sep), 4, bos, disable, separator).ToList();

    [Fact]
    public void A_text_dataset_takes_the_separator_as_saelens_resolves_it()
    {
        // [B 1 2 3] | [B 4 5] + separator fills the window | [B 6 7 8] | [B 9] dropped.
        Assert.Equal(new long[][] { [100, 1, 2, 3], [100, 4, 5, 100], [100, 6, 7, 8] }, Text(null));
        Assert.Equal(Text(null), Text(PretokenizeToken.Bos));
        Assert.Equal(new long[][] { [100, 1, 2, 3], [100, 4, 5, 101], [100, 6, 7, 8] }, Text(PretokenizeToken.Eos));
        Assert.Equal(new long[][] { [100, 1, 2, 3], [100, 4, 5, 102], [100, 6, 7, 8] }, Text(PretokenizeToken.Sep));
        Assert.Equal(new long[][] { [100, 1, 2, 3], [100, 4, 5, 7], [100, 6, 7, 8] }, Text(PretokenizeToken.OfId(7)));
        // None: documents run on: [B 1 2 3] | [B 4 5 6] | [B 7 8 9]
        Assert.Equal(new long[][] { [100, 1, 2, 3], [100, 4, 5, 6], [100, 7, 8, 9] }, Text(PretokenizeToken.None));
        // disable_concat_sequences: one BOS-prefixed window per document of at least context − 1 tokens.
        Assert.Equal(new long[][] { [100, 1, 2, 3], [100, 6, 7, 8] }, Text(null, disable: true));
        Assert.Equal(new long[][] { [6, 7, 8, 9] }, Text(null, disable: true, bos: false));
    }

    [Fact]
    public void A_separator_the_tokenizer_lacks_is_an_error_naming_it()
    {
        var e = Assert.Throws<SaeSharpException>(() => Text(PretokenizeToken.Sep, sep: null));
        Assert.Contains("sequence_separator_token sep", e.Message);
        Assert.Contains("no SEP token", e.Message);
        e = Assert.Throws<SaeSharpException>(() => Text(PretokenizeToken.OfId(1 << 20)));
        Assert.Contains($"sequence_separator_token {1 << 20}", e.Message);
        Assert.Contains("beyond the tokenizer", e.Message);
        Assert.Contains("expected bos, eos, sep, a token id, or none",
            Assert.Throws<SaeSharpException>(() => PretokenizeToken.Parse("cls", "--sequence-separator-token")).Message);
    }

    [Fact]
    public void The_window_fields_round_trip_through_cfg_json_metadata_as_saelens_writes_them()
    {
        var m = new SaeSharp.Saes.SaeMetadata();
        Assert.Null(m.SeqposSlice());
        Assert.Null(m.DisableConcatSequences());
        Assert.Null(m.SequenceSeparatorToken());
        m.SetWindowFields(SeqposSlice.Parse("1:"), true, PretokenizeToken.None);
        var json = JsonNode.Parse(System.Text.Json.JsonSerializer.Serialize(m))!.AsObject();
        Assert.Equal("[1,null]", json["seqpos_slice"]!.ToJsonString());
        Assert.True((bool)json["disable_concat_sequences"]!);
        Assert.True(json.ContainsKey("sequence_separator_token"));
        Assert.Null(json["sequence_separator_token"]);
        var back = System.Text.Json.JsonSerializer.Deserialize<SaeSharp.Saes.SaeMetadata>(json.ToJsonString())!;
        Assert.Equal(SeqposSlice.Parse("1:"), back.SeqposSlice());
        Assert.True(back.DisableConcatSequences());
        Assert.Equal(PretokenizeToken.None, back.SequenceSeparatorToken());
        // SAELens's defaults: [null], false, "bos"; an id is written as a number.
        m.SetWindowFields(null, null, PretokenizeToken.OfId(7));
        json = JsonNode.Parse(System.Text.Json.JsonSerializer.Serialize(m))!.AsObject();
        Assert.Equal("[null]", json["seqpos_slice"]!.ToJsonString());
        Assert.False((bool)json["disable_concat_sequences"]!);
        Assert.Equal("7", json["sequence_separator_token"]!.ToJsonString());
    }
}
