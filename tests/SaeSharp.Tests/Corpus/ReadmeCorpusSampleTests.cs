using SaeSharp.Corpus;
using SaeSharp.Tokenizers;

namespace SaeSharp.Tests.Corpus;

/// <summary>The README's corpus sample, verbatim (<see cref="ReadmeSamples"/>) at toy size: it writes the stories and the
/// tokenizer that reads them.</summary>
public class ReadmeCorpusSampleTests : TempDirTestBase
{
    private static readonly (string Readme, string Test)[] ToyScale =
        [("\"stories.jsonl\"", "stories"), ("\"builtin-tokenizer\"", "tokenizerDir"), ("3000", "20")];

    [Fact]
    public void CorpusSampleWritesStoriesAndTheirTokenizer()
    {
        string stories = Path.Combine(_dir, "stories.jsonl"), tokenizerDir = Path.Combine(_dir, "tok");
        // readme-sample corpus begin
        long tokens = LabelledCorpus.Write(stories, seed: 7, documents: 20);  // as `sae corpus --out stories.jsonl --docs 20 --seed 7`
        LabelledCorpus.WriteTokenizer(tokenizerDir);                              // its word-level tokenizer (tokenizer.json)
        var first = LabelledCorpus.Read(stories).First();                       // first.Text, first.Labels[i]: token i's labels
        // readme-sample corpus end

        var rows = LabelledCorpus.Read(stories).ToList();
        Assert.Equal(20, rows.Count);
        // The returned count is the tokens the written tokenizer makes of the texts: one label set per token.
        var tok = Tokenizer.FromFolder(tokenizerDir);
        Assert.Equal(tokens, rows.Sum(r => (long)tok.Encode(r.Text).Length));
        Assert.Equal(tok.Encode(first.Text).Length, first.Labels.Count);
        // The same seed gives the same corpus.
        string again = Path.Combine(_dir, "again.jsonl");
        LabelledCorpus.Write(again, seed: 7, documents: 20);
        Assert.Equal(File.ReadAllText(stories), File.ReadAllText(again));
    }

    [Fact]
    public void The_readme_block_is_this_sample() => ReadmeSamples.AssertBlockIsRegion("corpus", ToyScale);
}
