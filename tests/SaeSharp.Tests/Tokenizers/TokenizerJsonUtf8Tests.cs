using System.Text;
using SaeSharp.Tokenizers;

namespace SaeSharp.Tests.Tokenizers;

/// <summary>tokenizer.json bytes that are not UTF-8 (fuzz finding, seed cbd4IHTVAXz1) fail with one clear error; a
/// UTF-8 byte-order mark is still accepted.</summary>
public sealed class TokenizerJsonUtf8Tests
{
    [Theory]
    [InlineData("\"pre_tokenizer\": {\"type\": \"ByteLevel\"", "\"pre_tokenizer\": {\"type\": false")] // fuzz seed 10PpSmN1RD01
    [InlineData("\"normalizer\": {\"type\": \"NFC\"}", "\"normalizer\": {\"type\": 7}")]
    [InlineData("\"type\": \"BPE\"", "\"type\": [1]")]
    public void A_value_of_another_json_type_is_one_clear_error(string from, string to)
    {
        string dir = TestPaths.TempDir();
        string p = Path.Combine(dir, "tokenizer.json");
        Assert.Contains(from, TokenizerJsonTests.TinyTokenizerJson);
        File.WriteAllText(p, TokenizerJsonTests.TinyTokenizerJson.Replace(from, to));
        var e = Assert.Throws<SaeSharpException>(() => Tokenizer.FromTokenizerJson(p));
        Assert.StartsWith(p, e.Message);
        Assert.DoesNotContain('\n', e.Message);
        Directory.Delete(dir, recursive: true);
    }

    [Fact]
    public void Invalid_utf8_inside_a_string_fails_naming_utf8()
    {
        string dir = TestPaths.TempDir();
        string p = Path.Combine(dir, "tokenizer.json");
        var bytes = Encoding.UTF8.GetBytes(TokenizerJsonTests.TinyTokenizerJson).ToList();
        int quote = bytes.IndexOf((byte)'"');
        bytes.Insert(quote + 1, 0xC3); // a lead byte with no continuation byte
        File.WriteAllBytes(p, bytes.ToArray());
        var e = Assert.Throws<SaeSharpException>(() => Tokenizer.FromTokenizerJson(p));
        Assert.Contains("not valid UTF-8", e.Message);
        Directory.Delete(dir, recursive: true);
    }

    [Fact]
    public void Byte_order_mark_is_accepted()
    {
        string dir = TestPaths.TempDir();
        string p = Path.Combine(dir, "tokenizer.json");
        File.WriteAllBytes(p, [.. Encoding.UTF8.GetPreamble(), .. Encoding.UTF8.GetBytes(TokenizerJsonTests.TinyTokenizerJson)]);
        var withBom = Tokenizer.FromTokenizerJson(p).Encode("ab abc");
        File.WriteAllText(Path.Combine(dir, "plain.json"), TokenizerJsonTests.TinyTokenizerJson);
        Assert.Equal(Tokenizer.FromTokenizerJson(Path.Combine(dir, "plain.json")).Encode("ab abc"), withBom);
        Directory.Delete(dir, recursive: true);
    }
}
