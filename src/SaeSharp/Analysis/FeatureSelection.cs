using System.Globalization;

namespace SaeSharp.Analysis;

/// <summary>Parses feature lists as the CLI takes them: <c>all</c>, or indices and inclusive ranges, <c>0-99,123</c>.</summary>
public static class FeatureSelection
{
    /// <summary>The selected features (or, with <paramref name="what"/> = "layers", layers) in the order given, without
    /// duplicates; null for <c>all</c>.</summary>
    public static IReadOnlyList<int>? Parse(string? spec, int dSae, string what = "features")
    {
        if (spec is null || spec.Trim() is "all" or "") return null;
        var result = new List<int>();
        var seen = new HashSet<int>();
        foreach (var part in spec.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
        {
            int dash = part.IndexOf('-', 1);
            int lo = Int(dash < 0 ? part : part[..dash], spec, what), hi = dash < 0 ? lo : Int(part[(dash + 1)..], spec, what);
            if (hi < lo) throw new SaeSharpException($"{what} '{spec}': range {part} is empty");
            if (lo < 0 || hi >= dSae) throw new SaeSharpException($"{what} '{spec}': {part} is outside 0..{dSae - 1}");
            for (int i = lo; i <= hi; i++) if (seen.Add(i)) result.Add(i);
        }
        return result;
    }

    private static int Int(string s, string spec, string what) =>
        int.TryParse(s.Trim(), NumberStyles.None, CultureInfo.InvariantCulture, out int v) ? v
        : throw new SaeSharpException($"{what} '{spec}': '{s}' is not a {what.TrimEnd('s')} index (give 'all' or a list such as 0-99,123)");
}
