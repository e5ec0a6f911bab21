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
        // Quotes are escaped as Python's json.dumps writes them (\"), not as \u0022; the stories have speech.
        string raw = File.ReadAllText(path);
        Assert.Contains(rows, r => r.Text.Contains('"'));
        Assert.Contains("\\\"", raw);
        Assert.DoesNotContain("\\u0022", raw);
        Directory.Delete(Path.GetDirectoryName(path)!, true);
    }

    private static readonly HashSet<string> SayVerbs = ["say", "says", "said", "shout", "shouts", "shouted", "whisper", "whispers", "whispered"];
    private static readonly HashSet<string> GirlNames = ["Anna", "Mia", "Lily", "Emma", "Sara", "Lucy", "Rosa", "Nora"];
    private static readonly HashSet<string> BoyNames = ["Tom", "Sam", "Ben", "Leo", "Jack", "Omar", "Paul", "Hugo"];
    private static readonly HashSet<string> PluralNouns =
    [
        "cats", "dogs", "birds", "foxes", "horses", "rabbits", "mice", "cows", "ducks", "frogs", "balls", "boxes", "books", "hats",
        "cups", "kites", "cars", "bags", "keys", "chairs", "apples", "cakes", "eggs", "bananas", "pears", "cookies", "plums", "carrots",
    ];

    /// <summary>The choice nats of a story's opening counted by hand from its grammar: the first token carries the tense
    /// (½), the girl-or-boy coin (½) and the two names (1 of 8 each); the rest of the two opening sentences is forced (0);
    /// a pet sentence (chance 0.7) puts on its first token −ln 0.7, the owner (1 of 2), the animal (1 of 10), its colour
    /// (1 of 10) and its name (1 of 8), and the rest of that sentence is forced; a first body sentence of speech carries
    /// its weighted choice among the sentence kinds.</summary>
    [Fact]
    public void Choice_nats_of_the_opening_are_counted_by_hand()
    {
        double first = 2 * Math.Log(2) + 2 * Math.Log(8);
        double pet = -Math.Log(0.7) + Math.Log(2) + 2 * Math.Log(10) + Math.Log(8);
        int pets = 0, speeches = 0;
        foreach (var d in Docs)
        {
            Assert.Equal(first, d.ChoiceNats[0], 9);
            int secondStop = Enumerable.Range(0, d.Tokens.Count).Where(i => d.Tokens[i] == ".").Skip(1).First();
            for (int i = 1; i <= secondStop; i++) Assert.True(d.ChoiceNats[i] == 0, $"token {i} '{d.Tokens[i]}' of the opening: {d.ChoiceNats[i]} nats");
            int thirdStop = Enumerable.Range(secondStop + 1, d.Tokens.Count - secondStop - 1).First(i => d.Tokens[i] == ".");
            bool hasPet = d.Tokens.Skip(secondStop + 1).Take(thirdStop - secondStop).Contains("called");
            if (hasPet)
            {
                pets++;
                Assert.Equal(pet, d.ChoiceNats[secondStop + 1], 9);
                for (int i = secondStop + 2; i <= thirdStop; i++) Assert.True(d.ChoiceNats[i] == 0, $"token {i} '{d.Tokens[i]}' of the pet sentence");
            }
            // The first sentence of the body: when it is speech (weight 2 of 3+3+2+2+2+2, plus 3 for a question once the
            // pet's colour is known), its first token carries that choice, the speaker (1 of 2), the verb (1 of 3) and the
            // quote-first-or-last coin (½); without a pet, also the no-pet outcome (−ln 0.3).
            int s = hasPet ? thirdStop + 1 : secondStop + 1;
            if (d.Tokens[s] != "\"" && !SayVerbs.Contains(d.Tokens[s + 1])) continue;
            speeches++;
            double body = -Math.Log(2.0 / (hasPet ? 17 : 14)) + Math.Log(2) + Math.Log(3) + Math.Log(2) + (hasPet ? 0 : -Math.Log(0.3));
            Assert.Equal(body, d.ChoiceNats[s], 9);
        }
        Assert.InRange(pets, 150, 270); // chance 0.7 of 300
        Assert.InRange(speeches, 15, 70); // chance about 0.12 of 300
    }

    /// <summary>Labels that the word lists above decide: a female name is a girl's name, a male one a boy's, a plural
    /// noun is a plural form and a singular one not, and digits of a date are days 1–31, of a clock hours 1–12 (minutes
    /// after ':' excepted).</summary>
    [Fact]
    public void Name_number_and_date_labels_match_the_words()
    {
        int female = 0, male = 0, plural = 0, days = 0, hours = 0;
        foreach (var d in Docs)
            for (int i = 0; i < d.Tokens.Count; i++)
            {
                string t = d.Tokens[i];
                if (Has(d, i, "cat:female")) { Assert.Contains(t, GirlNames); female++; }
                if (Has(d, i, "cat:male")) { Assert.Contains(t, BoyNames); male++; }
                Assert.Equal(GirlNames.Contains(t), Has(d, i, "cat:female"));
                if (Has(d, i, "num:plural")) { Assert.Contains(t, PluralNouns); plural++; }
                if (Has(d, i, "num:singular")) Assert.DoesNotContain(t, PluralNouns);
                if (Has(d, i, "cat:date") && Has(d, i, "cat:number_digit")) { Assert.InRange(int.Parse(t, System.Globalization.CultureInfo.InvariantCulture), 1, 31); days++; }
                if (Has(d, i, "cat:time") && Has(d, i, "cat:number_digit") && d.Tokens[i - 1] != ":") { Assert.InRange(int.Parse(t, System.Globalization.CultureInfo.InvariantCulture), 1, 12); hours++; }
            }
        Assert.True(female > 0 && male > 0 && plural > 0 && days > 0 && hours > 0, $"{female} {male} {plural} {days} {hours}");
    }

    /// <summary>The text is written as English is: no space before . , ? ! or :, and every sentence (the first token, and
    /// the first word after . ! or ?, quote marks skipped) starts with a capital letter.</summary>
    [Fact]
    public void Text_is_punctuated_and_capitalised_as_english()
    {
        foreach (var d in Docs)
        {
            Assert.DoesNotMatch(" [.,?!:]", d.Text);
            bool start = true;
            for (int i = 0; i < d.Tokens.Count; i++)
            {
                string t = d.Tokens[i];
                if (t == "\"") continue;
                if (start) Assert.True(char.IsUpper(t[0]), $"sentence starts with '{t}' (token {i}): {d.Text}");
                start = t is "." or "!" or "?";
            }
        }
    }

    [Fact]
    public void Reading_a_folder_as_a_labelled_corpus_says_what_a_labelled_corpus_is()
    {
        // `sae score-labels --dataset pretok` (a pretokenized save_to_disk folder) said "dataset file 'pretok' does not exist".
        string dir = Path.Combine(Path.GetTempPath(), "saesharp-corpus-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(dir);
        try
        {
            var e = Assert.Throws<SaeSharpException>(() => LabelledCorpus.Read(dir).ToList());
            Assert.Equal($"{dir} is a folder: a labelled corpus is one .jsonl file whose lines have text and token-aligned labels (as `sae corpus` writes)", e.Message);
        }
        finally { Directory.Delete(dir); }
    }
}
