using System.Globalization;
using SaeSharp.Data;

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
