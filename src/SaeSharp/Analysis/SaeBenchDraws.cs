using System.Globalization;
using SaeSharp.Data;
using SaeSharp.Rng;

namespace SaeSharp.Analysis;

/// <summary>A class that SAEBench's <c>get_balanced_dataset</c> keeps: its rows (indices into the half read), group by
/// group of the second column in pandas' <c>groupby</c> order, each group's rows in <c>sample</c>'s order.</summary>
/// <param name="Class">The class (first column's value, as stored).</param>
/// <param name="Rows">2 × m (or groups × m) row indices.</param>
public sealed record BalancedClass(string Class, int[] Rows);

/// <summary>A class that <c>get_balanced_dataset</c> leaves out, and why (its groups and their counts).</summary>
/// <param name="Class">The class.</param>
/// <param name="Reason">E.g. <c>'gender' has one value (0: 15 texts)</c>.</param>
public sealed record SkippedClass(string Class, string Reason);

/// <summary>
/// SAEBench's draws of texts for sparse probing and TPP on two-column datasets (bias_in_bios: profession × gender,
/// amazon reviews: category × rating; <c>sae_bench_utils/dataset_utils.py</c>), on rows in dataset order, so that on the
/// same rows and seed the same texts come out in the same order.
/// </summary>
public static class SaeBenchDraws
{
    /// <summary>
    /// <c>get_balanced_dataset(df, m, random_seed)</c> on one half: for each class of <paramref name="column1"/> in order of
    /// first appearance, its rows grouped by <paramref name="column2"/> (pandas' <c>groupby</c>: keys sorted, as numbers
    /// when every key is one); a class with fewer than two groups, or a group of fewer than <paramref name="perQuadrant"/>
    /// rows, is skipped; otherwise each group gives <c>group_df.sample(n=m, random_state=seed)</c> =
    /// <c>RandomState(seed).choice(len(group), m, replace=False)</c> of its rows in dataset order
    /// (<see cref="NumpyRandomState"/>). A class with more than two groups (where SAEBench's assertion fails) is an error
    /// naming the groups.
    /// </summary>
    public static (IReadOnlyList<BalancedClass> Kept, IReadOnlyList<SkippedClass> Skipped) Balanced(IReadOnlyList<string> column1,
        IReadOnlyList<string> column2, int perQuadrant, int seed, string column2Name = "column2")
    {
        ArgumentNullException.ThrowIfNull(column1);
        ArgumentNullException.ThrowIfNull(column2);
        if (column1.Count != column2.Count)
            throw new SaeSharpException($"balanced draw: {column1.Count} class values and {column2.Count} '{column2Name}' values must agree");
        if (perQuadrant < 1)
            throw new SaeSharpException($"balanced draw: {perQuadrant} texts per quadrant (a quarter of the set size); the set size must be at least 4");
        var byClass = new Dictionary<string, List<int>>(StringComparer.Ordinal);
        var order = new List<string>();
        for (int i = 0; i < column1.Count; i++)
        {
            if (!byClass.TryGetValue(column1[i], out var rows)) { byClass[column1[i]] = rows = []; order.Add(column1[i]); }
            rows.Add(i);
        }
        var kept = new List<BalancedClass>();
        var skipped = new List<SkippedClass>();
        foreach (var c in order)
        {
            var groups = byClass[c].GroupBy(i => column2[i], StringComparer.Ordinal).ToList();
            var keyOrder = GroupOrder(groups.Select(g => g.Key));
            groups.Sort((a, b) => keyOrder.Compare(a.Key, b.Key));
            // At most six values named (a column with a value per row, as a text column, would list every row).
            string Counts() => groups.Count <= 6
                ? string.Join(", ", groups.Select(g => $"{g.Key}: {g.Count()} texts"))
                : $"{groups.Count} values: {string.Join(", ", groups.Take(4).Select(g => $"{g.Key}: {g.Count()} texts"))}, and {groups.Count - 4} more";
            if (groups.Count < 2)
            {
                skipped.Add(new SkippedClass(c, $"'{column2Name}' has one value ({Counts()})"));
                continue;
            }
            if (groups.Min(g => g.Count()) < perQuadrant)
            {
                skipped.Add(new SkippedClass(c, $"a '{column2Name}' group has fewer than {perQuadrant} texts ({Counts()})"));
                continue;
            }
            if (groups.Count > 2)
                throw new SaeSharpException($"balanced draw: class '{c}' has {groups.Count} values of '{column2Name}' ({Counts()}); " +
                                            "SAEBench's get_balanced_dataset balances two (male / female, rating 1 / 5)");
            var picked = new List<int>();
            foreach (var g in groups)
            {
                var rows = g.ToArray();
                picked.AddRange(new NumpyRandomState(seed).Choice(rows.Length, perQuadrant).Select(k => rows[k]));
            }
            kept.Add(new BalancedClass(c, [.. picked]));
        }
        return (kept, skipped);
    }

    /// <summary>
    /// <c>gather_dataset_from_df(df, chosen, n, label_key, text_key, seed)</c> (ag_news): for each chosen class, its rows in
    /// dataset order sampled with <c>sample(n=n, random_state=seed)</c> (<see cref="NumpyRandomState"/>'s
    /// <c>choice(len, n, replace=False)</c>). A chosen class with no rows, or fewer than <paramref name="perClass"/>, is an
    /// error naming it (pandas refuses to sample more than it has).
    /// </summary>
    public static IReadOnlyList<BalancedClass> PerClass(IReadOnlyList<string> labels, IReadOnlyList<string> chosen, int perClass, int seed,
        string labelName = "label")
    {
        ArgumentNullException.ThrowIfNull(labels);
        ArgumentNullException.ThrowIfNull(chosen);
        var rows = RowsByValue(labels);
        return [.. chosen.Select(c => Sample(c, rows.TryGetValue(c, out var r) ? r : [], perClass, seed, labelName, rows.Keys))];
    }

    /// <summary>
    /// <c>get_balanced_amazon_sentiment_dataset(df, n, seed)</c>: each value of the rating column, in order of first
    /// appearance (pandas' <c>unique</c>), gives <c>sample(n=n, random_state=seed)</c> of its rows; the class is named as
    /// Python's <c>str(rating)</c> names a float rating (<c>1.0</c>, <c>5.0</c>: SAEBench's chosen classes).
    /// </summary>
    public static IReadOnlyList<BalancedClass> Sentiment(IReadOnlyList<string> ratings, int perClass, int seed, string ratingName = "rating")
    {
        ArgumentNullException.ThrowIfNull(ratings);
        var rows = RowsByValue(ratings);
        return [.. rows.Keys.Select(c => Sample(c, rows[c], perClass, seed, ratingName, rows.Keys) with { Class = PythonFloatText(c, ratingName) })];
    }

    /// <summary>The row indices of each value, values in order of first appearance.</summary>
    private static OrderedDictionary<string, List<int>> RowsByValue(IReadOnlyList<string> values)
    {
        var rows = new OrderedDictionary<string, List<int>>(StringComparer.Ordinal);
        for (int i = 0; i < values.Count; i++)
        {
            if (!rows.TryGetValue(values[i], out var r)) rows[values[i]] = r = [];
            r.Add(i);
        }
        return rows;
    }

    private static BalancedClass Sample(string c, List<int> rows, int n, int seed, string column, IEnumerable<string> known)
    {
        if (rows.Count == 0)
            throw new SaeSharpException($"no text has class '{c}' in '{column}'{NameSuggestion.WithKnown(c, [.. known], "classes")}");
        if (rows.Count < n)
            throw new SaeSharpException($"class '{c}' of '{column}' has {rows.Count} texts, fewer than the {n} SAEBench samples (a half of the set size)");
        return new BalancedClass(c, [.. new NumpyRandomState(seed).Choice(rows.Count, n).Select(k => rows[(int)k])]);
    }

    /// <summary>Python's <c>str(float(v))</c> for a number read as text: <c>1</c> → <c>1.0</c>, <c>4.5</c> stays.</summary>
    private static string PythonFloatText(string v, string column)
    {
        if (!double.TryParse(v, NumberStyles.Float, CultureInfo.InvariantCulture, out double d))
            throw new SaeSharpException($"'{column}' value '{v}' is not a number (SAEBench's amazon sentiment classes are ratings 1.0 and 5.0)");
        string r = d.ToString("R", CultureInfo.InvariantCulture);
        return r.Contains('.') || r.Contains('E') ? r : r + ".0";
    }

    /// <summary>SAEBench's europarl configs: the language-pair config each language is read from (<c>get_europarl_dataset</c>).</summary>
    public static readonly IReadOnlyList<(string Language, string Pair)> EuroparlPairs =
        [("en", "en-fr"), ("fr", "fr-it"), ("de", "de-en"), ("es", "es-fr"), ("nl", "nl-pt")];

    /// <summary>
    /// The tail of <c>get_europarl_dataset</c> and <c>get_github_code_dataset</c>: after <c>random.seed(seed)</c>, each chosen
    /// class's collected texts in turn (in <paramref name="chosen"/>'s order, one <see cref="PythonRandom"/> for all)
    /// are shuffled with <c>random.shuffle</c>; the first <paramref name="trainHalf"/> train and the next
    /// <paramref name="testHalf"/> test. A class with too few texts is an error naming it and its count.
    /// </summary>
    public static IReadOnlyList<(string Class, IReadOnlyList<string> Train, IReadOnlyList<string> Test)> ShuffledSplits(
        IReadOnlyDictionary<string, List<string>> collected, IReadOnlyList<string> chosen, int trainHalf, int testHalf, int seed)
    {
        ArgumentNullException.ThrowIfNull(collected);
        ArgumentNullException.ThrowIfNull(chosen);
        var random = new PythonRandom(seed);
        var result = new List<(string, IReadOnlyList<string>, IReadOnlyList<string>)>();
        foreach (var c in chosen)
        {
            var texts = collected.TryGetValue(c, out var t) ? new List<string>(t) : [];
            if (texts.Count < trainHalf + testHalf)
                throw new SaeSharpException($"class '{c}' has {texts.Count} texts, fewer than the {trainHalf} + {testHalf} SAEBench splits it into");
            random.Shuffle(texts);
            result.Add((c, texts[..trainHalf], texts.GetRange(trainHalf, testHalf)));
        }
        return result;
    }

    /// <summary>
    /// <c>get_github_code_dataset</c>'s collection: rows (code, language) in dataset order; a row of a chosen language whose
    /// code is longer than 534 characters (128 × 3 + 150, Python's <c>len</c>: code points) keeps its code from the
    /// 151st character on; the read stops at the first chosen row after which every chosen language has more than
    /// <paramref name="perLanguage"/> texts.
    /// </summary>
    public static Dictionary<string, List<string>> GithubCode(IEnumerable<(string Code, string Language)> rows, IReadOnlyList<string> chosen, int perLanguage)
    {
        ArgumentNullException.ThrowIfNull(rows);
        ArgumentNullException.ThrowIfNull(chosen);
        const int CharsToSkip = 50 * 3, MinChars = 128 * 3 + CharsToSkip;
        var collected = chosen.Distinct().ToDictionary(c => c, _ => new List<string>(), StringComparer.Ordinal);
        foreach (var (code, language) in rows)
        {
            if (!collected.TryGetValue(language, out var list)) continue;
            if (PythonLength(code) > MinChars) list.Add(PythonSliceFrom(code, CharsToSkip));
            if (collected.Values.All(l => l.Count > perLanguage)) break;
        }
        return collected;
    }

    /// <summary>Python's <c>len(s)</c>: code points (a surrogate pair is one).</summary>
    internal static int PythonLength(string s)
    {
        int n = s.Length;
        for (int i = 1; i < s.Length; i++)
            if (char.IsLowSurrogate(s[i]) && char.IsHighSurrogate(s[i - 1])) n--;
        return n;
    }

    /// <summary>Python's <c>s[start:]</c> in code points.</summary>
    internal static string PythonSliceFrom(string s, int start)
    {
        int i = 0;
        for (int cp = 0; cp < start && i < s.Length; cp++)
            i += char.IsHighSurrogate(s[i]) && i + 1 < s.Length && char.IsLowSurrogate(s[i + 1]) ? 2 : 1;
        return s[i..];
    }

    /// <summary>pandas' <c>groupby</c> key order for keys read as text: numeric order when every key parses as a number
    /// (gender 0/1, rating 1/5, 2 before 10), else ordinal.</summary>
    internal static IComparer<string> GroupOrder(IEnumerable<string> keys)
    {
        static bool Num(string s, out double v) => double.TryParse(s, NumberStyles.Float, CultureInfo.InvariantCulture, out v);
        if (keys.All(k => Num(k, out _)))
            return Comparer<string>.Create((a, b) =>
            {
                Num(a, out double x);
                Num(b, out double y);
                return x.CompareTo(y);
            });
        return StringComparer.Ordinal;
    }
}
