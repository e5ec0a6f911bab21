using System.Text.Json.Nodes;

namespace SaeSharp.Tests.Analysis;

/// <summary>The toy two-attribute texts of the SCR and TPP suite tests: a class word (cat/dog/bird for a/b/c), a gender
/// word (sun/moon for m/f) and two filler words, shuffled.</summary>
internal static class ProbeRows
{
    private static readonly string[] Filler = ["the", "sat", "on", "mat", "ran", "to", "park", "big", "small", "and", "a"];

    /// <summary><paramref name="n"/> rows (text, cls, g) drawn with <paramref name="seed"/>: cls in a/b/c, g in m/f.</summary>
    internal static List<(string Text, string Cls, string G)> Rows(int n, int seed)
    {
        var rng = new Random(seed);
        string[] cls = ["a", "b", "c"], word = ["cat", "dog", "bird"];
        return [.. Enumerable.Range(0, n).Select(_ =>
        {
            int c = rng.Next(3);
            bool m = rng.Next(2) == 0;
            var words = new List<string> { word[c], m ? "sun" : "moon", Filler[rng.Next(Filler.Length)], Filler[rng.Next(Filler.Length)] };
            rng.Shuffle(System.Runtime.InteropServices.CollectionsMarshal.AsSpan(words));
            return (" " + string.Join(" ", words), cls[c], m ? "m" : "f");
        })];
    }

    /// <summary>Writes <paramref name="rows"/> to <paramref name="path"/> (its folder created) as JSON lines with fields
    /// <c>text</c>, <c>label</c> (the class) and <c>g</c>; returns the path.</summary>
    internal static string Jsonl(string path, IEnumerable<(string Text, string Cls, string G)> rows)
    {
        Directory.CreateDirectory(Path.GetDirectoryName(path)!);
        File.WriteAllLines(path, rows.Select(r => new JsonObject { ["text"] = r.Text, ["label"] = r.Cls, ["g"] = r.G }.ToJsonString()));
        return path;
    }
}
