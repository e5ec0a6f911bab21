namespace SaeSharp;

/// <summary>"Did you mean" for a mistyped name: the known name nearest by edit distance (Levenshtein, ignoring case), within
/// two edits.</summary>
public static class NameSuggestion
{
    /// <summary><c> (did you mean 'x'?)</c> for the name among <paramref name="known"/> nearest <paramref name="name"/>
    /// within two edits, case ignored (<c>TopK</c> → <c>topk</c>; ties: the one nearer with case, then the ordinal first),
    /// else "".</summary>
    public static string For(string name, IEnumerable<string> known)
    {
        var lower = name.ToLowerInvariant();
        var best = known.Select(k => (k, d: EditDistance(lower, k.ToLowerInvariant()))).Where(p => p.d <= 2)
            .OrderBy(p => p.d).ThenBy(p => EditDistance(name, p.k)).ThenBy(p => p.k, StringComparer.Ordinal).FirstOrDefault();
        return best.k is null ? "" : $" (did you mean '{best.k}'?)";
    }

    /// <summary><see cref="For"/> followed by <c>; {what}: </c> and the first 30 of <paramref name="known"/> (with their count
    /// when there are more): the tail of an error about a value that is not among them.</summary>
    public static string WithKnown(string name, IReadOnlyList<string> known, string what) =>
        $"{For(name, known)}; {what}: {string.Join(", ", known.Take(30))}{(known.Count > 30 ? $", … ({known.Count})" : "")}";

    /// <summary>The Levenshtein distance: insertions, deletions and substitutions of single characters.</summary>
    public static int EditDistance(string a, string b)
    {
        var row = Enumerable.Range(0, b.Length + 1).ToArray();
        for (int i = 1; i <= a.Length; i++)
        {
            int diagonal = row[0];
            row[0] = i;
            for (int j = 1; j <= b.Length; j++)
            {
                int above = row[j];
                row[j] = Math.Min(Math.Min(row[j] + 1, row[j - 1] + 1), diagonal + (a[i - 1] == b[j - 1] ? 0 : 1));
                diagonal = above;
            }
        }
        return row[b.Length];
    }
}
