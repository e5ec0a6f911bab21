using System.Globalization;

namespace SaeSharp.Analysis;

/// <summary>The per-feature files that the dashboard and the histogram PNGs name <c>&lt;feature&gt;&lt;extension&gt;</c>.</summary>
internal static class FeatureFiles
{
    /// <summary>Deletes the files in <paramref name="dir"/> named <c>&lt;i&gt;&lt;extension&gt;</c> (i a feature index)
    /// whose feature is not in <paramref name="keep"/>: pages of an earlier, larger run. Other files are left alone.</summary>
    public static void RemoveStale(string dir, string extension, IEnumerable<int> keep)
    {
        var wanted = keep.ToHashSet();
        foreach (var path in Directory.EnumerateFiles(dir, "*" + extension))
        {
            string stem = Path.GetFileNameWithoutExtension(path);
            if (Path.GetExtension(path) == extension
                && int.TryParse(stem, NumberStyles.None, CultureInfo.InvariantCulture, out int feature)
                && feature.ToString(CultureInfo.InvariantCulture) == stem && !wanted.Contains(feature))
                File.Delete(path);
        }
    }
}
