using System.Text.RegularExpressions;
using SaeSharp.Tokenizers;

namespace SaeSharp.Analysis;

/// <summary>A named set of token ids (a "gene set" of SAELens's token set enrichment analysis,
/// <c>sae_lens/tutorial/tsea.py</c>), built from a tokenizer's vocabulary strings (byte-level, <c>Ġthe</c>).</summary>
/// <param name="Name">The set's name, e.g. <c>starts_with_space</c>.</param>
/// <param name="TokenIds">Distinct token ids, ascending.</param>
public sealed record TokenSet(string Name, IReadOnlyList<int> TokenIds)
{
    /// <summary>The regular expressions of the tutorial's <c>regex_dict</c> (logits_lens_with_features.ipynb), in its order.</summary>
    public static IReadOnlyList<(string Name, string Pattern)> TutorialPatterns { get; } =
    [
        ("starts_with_space", @"Ġ.*"),
        ("starts_with_capital", @"^Ġ*[A-Z].*"),
        ("starts_with_lower", @"^Ġ*[a-z].*"),
        ("all_digits", @"^Ġ*\d+$"),
        ("is_punctuation", @"^[^\w\s]+$"),
        ("contains_close_bracket", @".*\).*"),
        ("contains_open_bracket", @".*\(.*"),
        ("all_caps", @"Ġ*[A-Z]+$"),
        ("1 digit", @"Ġ*\d{1}$"),
        ("2 digits", @"Ġ*\d{2}$"),
        ("3 digits", @"Ġ*\d{3}$"),
        ("4 digits", @"Ġ*\d{4}$"),
        ("length_1", @"^Ġ*\w{1}$"),
        ("length_2", @"^Ġ*\w{2}$"),
        ("length_3", @"^Ġ*\w{3}$"),
        ("length_4", @"^Ġ*\w{4}$"),
        ("length_5", @"^Ġ*\w{5}$"),
    ];

    /// <summary>The tokens whose vocabulary string <paramref name="pattern"/> matches at its start, as Python's
    /// <c>re.match</c> in <c>get_gene_set_from_regex</c> (.NET's regular expressions, which agree with Python's on
    /// these classes). A pattern that does not parse is an error naming it.</summary>
    public static TokenSet FromRegex(ITextTokenizer tokenizer, string name, string pattern)
    {
        ArgumentNullException.ThrowIfNull(tokenizer);
        Regex regex;
        // Parsed on its own, so that the error's offset is in the user's pattern and a pattern such as "a)|(b" is not
        // read inside the anchoring group as another alternative; the first match found starts at 0 when one does.
        try { regex = new Regex(pattern, RegexOptions.CultureInvariant); }
        catch (RegexParseException e)
        {
            throw new SaeSharpException($"token set '{name}': regular expression '{pattern}' does not parse: {e.Message}");
        }
        return new TokenSet(name, Vocabulary(tokenizer).Where(t => regex.Match(t.Text) is { Success: true, Index: 0 }).Select(t => t.Id).ToList());
    }

    /// <summary>One set per letter a–z: the tokens that, with every leading and trailing <c>Ġ</c> removed, are all letters
    /// and start with that letter in either case (<c>get_letter_gene_sets</c>).</summary>
    public static IReadOnlyList<TokenSet> Letters(ITextTokenizer tokenizer)
    {
        var sets = Enumerable.Range('a', 26).ToDictionary(c => (char)c, _ => new List<int>());
        foreach (var (id, text) in Vocabulary(tokenizer))
        {
            string clean = text.Trim('Ġ');
            if (clean.Length > 0 && clean.All(char.IsLetter) && sets.TryGetValue(char.ToLowerInvariant(clean[0]), out var set)) set.Add(id);
        }
        return sets.Select(kv => new TokenSet(kv.Key.ToString(), kv.Value)).ToList();
    }

    /// <summary>Every token of <c>" " + word</c> for each word (<c>get_test_gene_sets</c>'s <c>convert_tokens_to_ids</c>:
    /// a word of several tokens adds them all), except the unknown token: a word the vocabulary does not hold adds nothing
    /// (its <c>&lt;unk&gt;</c> would put every unknown word in the set). <paramref name="notes"/>, when given, receives a
    /// line for each word that is not one token of its own: its tokens, or that it is not in the vocabulary.</summary>
    public static TokenSet FromWords(ITextTokenizer tokenizer, string name, IEnumerable<string> words, ICollection<string>? notes = null)
    {
        ArgumentNullException.ThrowIfNull(tokenizer);
        ArgumentNullException.ThrowIfNull(words);
        var ids = new SortedSet<int>();
        foreach (var w in words)
        {
            var wordIds = tokenizer.Encode(" " + w, parseSpecialTokens: false);
            var known = wordIds.Where(i => i != tokenizer.UnkTokenId).ToArray();
            ids.UnionWith(known);
            if (known.Length < wordIds.Length)
                notes?.Add($"token set '{name}': '{w}' is not in the vocabulary" + (known.Length == 0 ? ", left out" : $" as a whole: only its known tokens {Tokens(known)} are in the set"));
            else if (wordIds.Length > 1)
                notes?.Add($"token set '{name}': ' {w}' is not one token: its {wordIds.Length} tokens {Tokens(wordIds)} are in the set");
        }
        return new TokenSet(name, ids.ToList());

        string Tokens(int[] list) => string.Join(" ", list.Select(i => DashboardWriter.Quote(tokenizer.TokenText(i))));
    }

    /// <summary>The tutorial's regex sets (<see cref="TutorialPatterns"/>) and the 26 letter sets.</summary>
    public static IReadOnlyList<TokenSet> Tutorial(ITextTokenizer tokenizer) =>
        [.. Letters(tokenizer), .. TutorialPatterns.Select(p => FromRegex(tokenizer, p.Name, p.Pattern))];

    /// <summary>Refuses, naming the set, a set that cannot be scored against <paramref name="vocab"/> logits: empty,
    /// holding every token, or holding an id outside [0, vocab).</summary>
    public void CheckFor(long vocab)
    {
        if (TokenIds.Count == 0 || TokenIds.Count >= vocab)
            throw new SaeSharpException($"token set '{Name}': {TokenIds.Count} of {vocab} tokens (an enrichment score needs some tokens in the set and some outside it)");
        if (TokenIds.FirstOrDefault(i => i < 0 || i >= vocab, -1) is int bad and >= 0)
            throw new SaeSharpException($"token set '{Name}': token id {bad} is outside the vocabulary of {vocab} tokens");
    }

    private static IEnumerable<(int Id, string Text)> Vocabulary(ITextTokenizer tokenizer)
    {
        for (int id = 0; id < tokenizer.VocabSize; id++)
            if (tokenizer.IdToToken(id) is { } t) yield return (id, t);
    }
}
