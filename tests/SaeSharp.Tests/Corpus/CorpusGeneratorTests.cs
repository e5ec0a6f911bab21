using SaeSharp.Corpus;
using SaeSharp.Tokenizers;

namespace SaeSharp.Tests.Corpus;

public class CorpusGeneratorTests
{
    private static readonly List<LabelledDocument> Docs = CorpusGenerator.Generate(11, 300).ToList();

    // Word lists written out here, independently of the generator's lexicon.
    private static readonly HashSet<string> Colours = ["red", "blue", "green", "yellow", "black", "white", "brown", "pink", "purple", "grey"];
    private static readonly string[] NumberWordList = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve"];
    private static readonly HashSet<string> NumberWords = [.. NumberWordList[2..]];
    private static readonly HashSet<string> Places = ["park", "garden", "river", "school", "market", "forest", "beach", "farm", "library", "kitchen"];

    private static bool Has(LabelledDocument d, int i, string label) => d.Labels[i].Contains(label);

    [Fact]
    public void Same_seed_same_documents_other_seed_other_documents()
    {
        var again = CorpusGenerator.Generate(11, 300).ToList();
        Assert.Equal(Docs.Select(d => d.Text), again.Select(d => d.Text));
        Assert.Equal(Docs.SelectMany(d => d.Labels.SelectMany(l => l)), again.SelectMany(d => d.Labels.SelectMany(l => l)));
        Assert.Equal(Docs.SelectMany(d => d.ChoiceNats), again.SelectMany(d => d.ChoiceNats));
        var other = CorpusGenerator.Generate(12, 20).Select(d => d.Text).ToList();
        Assert.NotEqual(Docs.Take(20).Select(d => d.Text), other);
    }

    /// <summary>A range that starts past the beginning is documents first..first+count−1 of the same corpus (so a
    /// held-out range or a resumed run sees the documents a run from 0 would), not a fresh run from document 0.</summary>
    [Fact]
    public void A_range_from_first_is_the_same_documents_as_in_the_whole_corpus()
    {
        var range = CorpusGenerator.Generate(11, 4, first: 250).ToList();
        Assert.Equal(Docs.Skip(250).Take(4).Select(d => d.Text), range.Select(d => d.Text));
        Assert.NotEqual(Docs.Take(4).Select(d => d.Text), range.Select(d => d.Text));
    }

    [Fact]
    public void The_builtin_tokenizer_splits_each_text_into_exactly_its_labelled_tokens()
    {
        var dir = Directory.CreateTempSubdirectory("corpus-tok").FullName;
        try
        {
            LabelledCorpus.WriteTokenizer(dir);
            var tok = Tokenizer.FromFolder(dir);
            Assert.IsType<WordLevelTokenizer>(tok);
            Assert.Equal(0, tok.BosTokenId);
            Assert.Equal(0, tok.EosTokenId);
            int unk = tok.TokenToId("<unk>")!.Value;
            foreach (var d in Docs)
            {
                Assert.Equal(d.Tokens.Count, d.Labels.Count);
                Assert.Equal(d.Tokens.Count, d.ChoiceNats.Count);
                var ids = tok.Encode(d.Text);
                Assert.DoesNotContain(unk, ids);
                Assert.Equal(d.Tokens, ids.Select(i => tok.IdToToken(i)!));
            }
        }
        finally
        {
            Directory.Delete(dir, true);
        }
    }

    [Fact]
    public void Category_labels_match_the_words()
    {
        int numberWords = 0, digits = 0, names = 0;
        foreach (var d in Docs)
            for (int i = 0; i < d.Tokens.Count; i++)
            {
                string t = d.Tokens[i];
                Assert.Equal(Colours.Contains(t), Has(d, i, "cat:colour"));
                Assert.Equal(Places.Contains(t), Has(d, i, "cat:place"));
                if (Has(d, i, "cat:number_word")) { Assert.Contains(t, NumberWords); numberWords++; }
                if (Has(d, i, "cat:number_digit")) { Assert.True(int.TryParse(t, out _), t); digits++; }
                Assert.Equal(t == "not", Has(d, i, "cat:negation"));
                Assert.Equal(t == "\"", Has(d, i, "cat:quote_mark"));
                if (Has(d, i, "cat:person_name") || Has(d, i, "cat:pet_name")) { Assert.True(char.IsUpper(t[0])); names++; }
            }
        // The one-way checks above ran: the corpus holds each of these labels.
        Assert.True(numberWords > 0 && digits > 0 && names > 0, $"number words {numberWords}, digits {digits}, names {names}");
    }

    [Fact]
    public void Context_labels_follow_from_reparsing_the_tokens()
    {
        foreach (var d in Docs)
        {
            bool inQuote = false, afterNot = false;
            int quoteStart = -1;
            for (int i = 0; i < d.Tokens.Count; i++)
            {
                string t = d.Tokens[i];
                if (t == "\"")
                {
                    Assert.False(Has(d, i, "ctx:in_quote"));
                    if (!inQuote) quoteStart = i;
                    else
                    {
                        // A quote whose last content token is '?' is a question: all its content is labelled so.
                        bool question = d.Tokens[i - 1] == "?";
                        for (int j = quoteStart + 1; j < i; j++) Assert.Equal(question, Has(d, j, "ctx:in_question"));
                    }
                    inQuote = !inQuote;
                    afterNot = false;
                    continue;
                }
                Assert.Equal(inQuote, Has(d, i, "ctx:in_quote"));
                if (!inQuote) Assert.False(Has(d, i, "ctx:in_question") || Has(d, i, "ctx:in_answer"));
                if (t is "." or "," or "?" or "!") afterNot = false;
                Assert.Equal(afterNot, Has(d, i, "ctx:after_negation"));
                if (t == "not") afterNot = true;
            }
            Assert.False(inQuote);
        }
    }

    [Fact]
    public void Verbs_agree_with_the_plural_subject_label()
    {
        int checkedVerbs = 0;
        foreach (var d in Docs)
            for (int i = 1; i < d.Tokens.Count; i++)
            {
                string t = d.Tokens[i];
                if (t is "is" or "was" or "are" or "were" && Has(d, i, "role:verb") && d.Tokens[i - 1] is not ("You" or "Where" or "colour" or "they" or "there"))
                {
                    bool pluralVerb = t is "are" or "were";
                    if (d.Tokens[i - 1] is not ("What")) Assert.Equal(Has(d, i, "ctx:plural_subject"), pluralVerb);
                    checkedVerbs++;
                }
                // A present-tense lexical verb right after a name or he/she/it ends in -s; after a plural subject it does not.
                if (Has(d, i, "pos:VERB") && Has(d, i, "tense:present") && Has(d, i - 1, "role:subject"))
                {
                    bool third = Has(d, i - 1, "cat:person_name") || Has(d, i - 1, "cat:pet_name") || d.Tokens[i - 1] is "He" or "She" or "It" or "he" or "she" or "it";
                    if (Has(d, i, "ctx:plural_subject")) Assert.False(t.EndsWith('s'), t);
                    else if (third) Assert.True(t.EndsWith('s'), $"{d.Tokens[i - 1]} {t}");
                    checkedVerbs++;
                }
            }
        Assert.True(checkedVerbs > 500);
    }

    [Fact]
    public void Answers_repeat_the_facts_stated_earlier_in_the_story()
    {
        int answers = 0;
        foreach (var d in Docs)
        {
            string text = d.Text;
            foreach (System.Text.RegularExpressions.Match m in System.Text.RegularExpressions.Regex.Matches(text, "\"What colour is (\\w+)\\?\" \\w+ repl\\w+, \"\\w+ is (\\w+)\\.\""))
            {
                // The pet's colour is introduced as "... a <colour> <animal> called <Name>."
                var intro = System.Text.RegularExpressions.Regex.Match(text, $"a (\\w+) \\w+ called {m.Groups[1].Value}\\.");
                if (!intro.Success) continue;
                Assert.Equal(intro.Groups[1].Value, m.Groups[2].Value);
                answers++;
            }
            foreach (System.Text.RegularExpressions.Match m in System.Text.RegularExpressions.Regex.Matches(text, "\"How many (\\w+) did (\\w+) \\w+\\?\" \\w+ repl\\w+, \"\\w+ \\w+ (\\w+) \\w+\\.\""))
            {
                int n = int.TryParse(m.Groups[3].Value, out int v) ? v : Array.IndexOf(NumberWordList, m.Groups[3].Value);
                // Some earlier sentence of that character counted that many of those things (digits or words).
                string before = text[..m.Index];
                string word = NumberWordList[n];
                Assert.Matches($"\\b({n}|{word})( \\w+)? {m.Groups[1].Value}\\b", before);
                answers++;
            }
        }
        Assert.True(answers > 20, $"{answers} answers checked");
    }

    [Fact]
    public void Choice_nats_are_an_information_count()
    {
        foreach (var d in Docs)
        {
            Assert.All(d.ChoiceNats, n => Assert.True(n >= 0));
            Assert.Equal(0.0, d.ChoiceNats[d.Tokens.Count - 1]); // "." after "The end" is fixed by the grammar.
        }
        double perToken = Docs.Sum(d => d.ChoiceNats.Sum()) / Docs.Sum(d => d.Tokens.Count);
        Assert.InRange(perToken, 0.3, 3.0);
    }

    [Fact]
    public void The_jsonl_round_trips_text_labels_and_nats()
    {
        string path = Path.Combine(Directory.CreateTempSubdirectory("corpus-jsonl").FullName, "c.jsonl");
        long tokens = LabelledCorpus.Write(path, 11, 25);
        var rows = LabelledCorpus.Read(path).ToList();
        Assert.Equal(Docs.Take(25).Sum(d => d.Tokens.Count), tokens);
        Assert.Equal(Docs.Take(25).Select(d => d.Text), rows.Select(r => r.Text));
        Assert.Equal(Docs.Take(25).SelectMany(d => d.Labels.SelectMany(l => l)), rows.SelectMany(r => r.Labels.SelectMany(l => l)));
        Assert.Equal(Docs.Take(25).SelectMany(d => d.ChoiceNats).Select(n => Math.Round(n, 5)), rows.SelectMany(r => r.ChoiceNats!));
        // Every existing reader sees the text field (and does not take the file for pre-tokenized ids).
        Assert.Equal(rows.Select(r => r.Text), SaeSharp.Data.TextDataset.Read(path));
        Assert.False(SaeSharp.Data.TextDataset.IsTokenizedJsonl(path));
        Directory.Delete(Path.GetDirectoryName(path)!, true);
    }
}
