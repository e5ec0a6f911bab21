using System.Text.RegularExpressions;
using SaeSharp.Hub;

namespace SaeSharp.Data;

/// <summary>
/// A Hugging Face dataset named as <c>hf:ORG/NAME[@REVISION][:SPLIT]</c> (split default <c>train</c>), read as
/// <c>datasets.load_dataset("ORG/NAME", split=SPLIT)</c> reads a repo of data files: its <c>.parquet</c>, <c>.jsonl</c>
/// (<c>.jsonl.gz</c>, <c>.ndjson</c>) and <c>.txt</c> files whose path names the split (a folder named after it, or a file
/// name with it between <c>-</c>, <c>_</c> or <c>.</c>, as in <c>data/train-00000-of-00001.parquet</c>); when no file names
/// any split, all of them are the train split. A repo with no such files (a loading script, <c>.jsonl.zst</c>) is read
/// from the hub's Parquet conversion (revision <c>refs/convert/parquet</c>, <c>{config}/{split}/0000.parquet</c>).
/// Files are downloaded one at a time, when the reader reaches them, through <see cref="HfHubClient"/> into the
/// Hugging Face cache (<c>datasets--org--name</c>), with its revision, offline and resume handling.
/// </summary>
public sealed class HubDataset
{
    /// <summary>The prefix of a hub dataset name.</summary>
    public const string Prefix = "hf:";

    private static readonly string[] SplitNames = ["train", "test", "validation", "valid", "dev", "eval"];

    private readonly HfHubOptions? _hub;
    private List<string>? _files;
    private string _revision;

    /// <summary>The dataset repo id (<c>ORG/NAME</c>): what SAELens records as <c>dataset_path</c>.</summary>
    public string Repo { get; }

    /// <summary>The split read.</summary>
    public string Split { get; }

    /// <summary>The revision the files are read at (<c>refs/convert/parquet</c> after falling back to the Parquet conversion).</summary>
    public string Revision => _revision;

    /// <summary>Parses <paramref name="spec"/>; nothing is fetched until <see cref="Files"/> or <see cref="LocalFiles"/>.</summary>
    public HubDataset(string spec, HfHubOptions? hub = null)
    {
        ArgumentException.ThrowIfNullOrEmpty(spec);
        if (!spec.StartsWith(Prefix, StringComparison.Ordinal))
            throw new SaeSharpException($"{spec}: a hub dataset is named hf:ORG/NAME[@REVISION][:SPLIT]");
        var m = Regex.Match(spec[Prefix.Length..], @"^(?<repo>[^@:]+)(@(?<rev>[^:]+))?(:(?<split>[A-Za-z0-9_.\-]+))?$", RegexOptions.CultureInvariant);
        if (!m.Success || !HubPaths.IsRepoId(m.Groups["repo"].Value) || !m.Groups["repo"].Value.Contains('/'))
            throw new SaeSharpException($"{spec}: expected hf:ORG/NAME[@REVISION][:SPLIT], e.g. hf:NeelNanda/pile-10k or hf:org/name:validation");
        Repo = m.Groups["repo"].Value;
        _revision = m.Groups["rev"].Success ? m.Groups["rev"].Value : "main";
        Split = m.Groups["split"].Success ? m.Groups["split"].Value : "train";
        _hub = hub;
    }

    /// <summary>True when <paramref name="path"/> names a hub dataset rather than an existing local file or folder.</summary>
    public static bool IsHubDataset(string path) =>
        path.StartsWith(Prefix, StringComparison.Ordinal) && !File.Exists(path) && !Directory.Exists(path);

    /// <summary>What to record as cfg.json's <c>dataset_path</c>: the repo id for a hub dataset (as SAELens does), else the path.</summary>
    public static string RecordedPath(string path) => IsHubDataset(path) ? new HubDataset(path).Repo : path;

    /// <summary>The split's data files in the repo (paths from its root), in ordinal order; listed once.</summary>
    public IReadOnlyList<string> Files()
    {
        if (_files is not null) return _files;
        using var client = Client();
        var files = Select(client.ListFiles(Repo, _revision, null, HfRepoType.Dataset));
        if (files is null && _revision == "main")
        {
            List<string>? converted = null;
            try
            {
                converted = Select(client.ListFiles(Repo, "refs/convert/parquet", null, HfRepoType.Dataset));
            }
            catch (SaeSharpException)
            {
                // no Parquet conversion either: reported below
            }
            if (converted is not null)
            {
                _revision = "refs/convert/parquet";
                files = converted;
            }
        }
        _files = files ?? throw new SaeSharpException(
            $"dataset {Repo} (revision {_revision}) has no .parquet, .jsonl or .txt files, and no Parquet conversion (refs/convert/parquet)");
        if (_files.Count == 0)
            throw new SaeSharpException($"dataset {Repo} has no split '{Split}' (splits: {string.Join(", ", _splits)})");
        return _files;
    }

    private IReadOnlyList<string> _splits = [];

    /// <summary>The split's files among <paramref name="all"/>; null when there are no readable data files at all.</summary>
    private List<string>? Select(IReadOnlyList<HfRepoFile> all)
    {
        var data = all.Select(f => f.Path).Where(p => TextDataset.KindOf(p) != TextDataset.FileKind.Unknown)
            .Where(p => !p.Split('/').Any(part => part.StartsWith('.'))).OrderBy(p => p, StringComparer.Ordinal).ToList();
        if (data.Count == 0) return null;
        var named = data.Select(p => (Path: p, Split: SplitOf(p))).ToList();
        _splits = named.Select(n => n.Split ?? "train").Distinct().ToList();
        if (named.All(n => n.Split is null)) return Split == "train" ? data : [];
        return named.Where(n => n.Split == Split || (n.Split is null && Split == "train")).Select(n => n.Path).ToList();
    }

    /// <summary>The split a data file's path names (a folder equal to a split name, or the name between separators in
    /// the file name), or null.</summary>
    internal static string? SplitOf(string path)
    {
        var parts = path.Split('/');
        foreach (var folder in parts[..^1].Reverse())
            if (SplitNames.Contains(folder, StringComparer.OrdinalIgnoreCase)) return Canonical(folder);
        string name = parts[^1];
        foreach (var s in SplitNames)
            if (Regex.IsMatch(name, $@"(^|[-_.]){s}([-_.]|$)", RegexOptions.IgnoreCase | RegexOptions.CultureInvariant)) return Canonical(s);
        return null;
    }

    private static string Canonical(string split) => split.ToLowerInvariant() switch
    {
        "valid" or "dev" or "eval" => "validation",
        var s => s,
    };

    /// <summary>The split's files as local paths, each downloaded (or found in the cache) only when the enumeration
    /// reaches it.</summary>
    public IEnumerable<string> LocalFiles()
    {
        var files = Files();
        var client = Client();
        try
        {
            foreach (var f in files)
                yield return client.DownloadFile(Repo, f, _revision, optional: false, HfRepoType.Dataset)!;
        }
        finally
        {
            client.Dispose();
        }
    }

    private HfHubClient Client() => new(_hub ?? HfHubOptions.FromEnvironment());
}
