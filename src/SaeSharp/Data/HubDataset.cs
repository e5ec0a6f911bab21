using System.Text.RegularExpressions;
using SaeSharp.Hub;

namespace SaeSharp.Data;

/// <summary>
/// A Hugging Face dataset named as <c>hf:ORG/NAME[@REVISION][:SPLIT]</c> (split default <c>train</c>), read as
/// <c>datasets.load_dataset("ORG/NAME", split=SPLIT)</c> reads a repo of data files: its <c>.parquet</c>, <c>.jsonl</c>
/// (<c>.jsonl.gz</c>, <c>.ndjson</c>) and <c>.txt</c> files whose path names the split as <c>datasets</c> infers it
/// (<see cref="SplitFiles"/>: <c>data/train-00000-of-00001.parquet</c>, a folder <c>test/</c>, a file <c>val.jsonl</c>); when no
/// file names any split, all of them are the train split. A repo with no such files (a loading script, <c>.jsonl.zst</c>) is read
/// from the hub's Parquet conversion (revision <c>refs/convert/parquet</c>, <c>{config}/{split}/0000.parquet</c>).
/// Files are downloaded one at a time, when the reader reaches them, through <see cref="HfHubClient"/> into the
/// Hugging Face cache (<c>datasets--org--name</c>), with its revision, offline and resume handling.
/// </summary>
public sealed class HubDataset
{
    /// <summary>The prefix of a hub dataset name.</summary>
    public const string Prefix = "hf:";


    private readonly HfHubOptions? _hub;
    private List<string>? _files;
    private string _revision;

    /// <summary>The dataset repo id (<c>ORG/NAME</c>): what SAELens records as <c>dataset_path</c>.</summary>
    public string Repo { get; }

    /// <summary>The split read.</summary>
    public string Split { get; }

    /// <summary>Whether the name gave the split (<c>hf:ORG/NAME:SPLIT</c>) rather than defaulting to train.</summary>
    public bool SplitGiven { get; }

    /// <summary>Every split of the repo (as <see cref="SplitFiles"/> infers them), listed once; a repo without the train split
    /// still lists its others.</summary>
    public IReadOnlyList<string> Splits()
    {
        try
        {
            Files();
        }
        catch (SaeSharpException) when (_splits.Count > 0)
        {
            // the default split is missing: the others are listed
        }
        return _splits;
    }

    /// <summary>The revision the files are read at (<c>refs/convert/parquet</c> after falling back to the Parquet conversion).</summary>
    public string Revision => _revision;

    /// <summary>Parses <paramref name="spec"/>; nothing is fetched until <see cref="Files"/> or <see cref="LocalFiles()"/>.</summary>
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
        SplitGiven = m.Groups["split"].Success;
        _hub = hub;
    }

    /// <summary>True when <paramref name="path"/> names a hub dataset rather than an existing local file or folder.</summary>
    public static bool IsHubDataset(string path) =>
        path.StartsWith(Prefix, StringComparison.Ordinal) && !File.Exists(path) && !Directory.Exists(path);

    /// <summary>What to record as cfg.json's <c>dataset_path</c>: the repo id for a hub dataset (as SAELens does), a local
    /// file or folder as an absolute path (so that <c>sae eval --model</c> and <c>sae features</c> find it from any folder),
    /// else the path as given.</summary>
    public static string RecordedPath(string path) =>
        IsHubDataset(path) ? new HubDataset(path).Repo : File.Exists(path) || Directory.Exists(path) ? Path.GetFullPath(path) : path;

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

    private List<string> _splits = [];

    /// <summary>The split's files among <paramref name="all"/>; null when there are no readable data files at all.</summary>
    private List<string>? Select(IReadOnlyList<HfRepoFile> all)
    {
        var data = all.Select(f => f.Path).Where(p => TextDataset.KindOf(p) != TextDataset.FileKind.Unknown)
            .Where(p => !p.Split('/').Any(part => part.StartsWith('.'))).OrderBy(p => p, StringComparer.Ordinal).ToList();
        if (data.Count == 0) return null;
        var splits = SplitFiles(data);
        _splits = splits.Select(s => s.Split).ToList();
        return splits.FirstOrDefault(s => s.Split == Split).Files ?? [];
    }

    /// <summary>The split keywords of <c>datasets</c> (<c>data_files.py: SPLIT_KEYWORDS</c>).</summary>
    private static readonly (string Split, string[] Keywords)[] SplitKeywords =
    [
        ("train", ["train", "training"]),
        ("validation", ["validation", "valid", "dev", "val"]),
        ("test", ["test", "testing", "eval", "evaluation"]),
    ];

    /// <summary>What may stand next to a split keyword in a name (<c>NON_WORDS_CHARS</c>).</summary>
    private const string NonWord = "[-._ 0-9]";

    private static readonly Regex Sharded = new(@"^data/(?<split>\w+(\.\w+)*)-[0-9]{5}-of-[0-9]{5}[^/]*\.[^/]*$", RegexOptions.CultureInvariant);

    /// <summary>
    /// The splits of a repo's data files and each split's files (in the order given), as <c>datasets</c> infers them
    /// (<c>data_files.py: _get_data_files_patterns</c>): sharded names <c>data/{split}-NNNNN-of-NNNNN.*</c> (any split
    /// name) if there are any; else folders named after a split keyword (the keyword alone, or set off by one of
    /// <c>-._ 0-9</c>); else file names with a keyword followed by one of those (and preceded by one, unless it starts the
    /// name); else all files are <c>train</c>. The first of these that matches any file decides; files it does not match
    /// are in no split. Keywords: train/training, validation/valid/dev/val, test/testing/eval/evaluation; case matters.
    /// </summary>
    internal static List<(string Split, List<string> Files)> SplitFiles(IReadOnlyList<string> paths)
    {
        var sharded = paths.Select(p => (Path: p, Match: Sharded.Match(p))).Where(x => x.Match.Success).ToList();
        if (sharded.Count > 0)
        {
            var names = sharded.Select(x => x.Match.Groups["split"].Value).Distinct().ToList();
            var ordered = SplitKeywords.Select(k => k.Split).Where(names.Contains)
                .Concat(names.Except(SplitKeywords.Select(k => k.Split)).OrderBy(n => n, StringComparer.Ordinal));
            return ordered.Select(n => (n, sharded.Where(x => x.Match.Groups["split"].Value == n).Select(x => x.Path).ToList())).ToList();
        }
        foreach (bool inFolder in new[] { true, false })
        {
            var found = SplitKeywords
                .Select(k => (k.Split, Files: paths.Where(p => k.Keywords.Any(kw => NamesSplit(p, kw, inFolder))).ToList()))
                .Where(s => s.Files.Count > 0).ToList();
            if (found.Count > 0) return found;
        }
        return [("train", paths.ToList())];
    }

    /// <summary>Does a folder of <paramref name="path"/> (or its file name) name the split keyword <paramref name="keyword"/>?</summary>
    private static bool NamesSplit(string path, string keyword, bool inFolder)
    {
        var parts = path.Split('/');
        return inFolder
            ? parts[..^1].Any(f => Regex.IsMatch(f, $"^(.*{NonWord})?{keyword}({NonWord}.*)?$", RegexOptions.CultureInvariant))
            : Regex.IsMatch(parts[^1], $"^(.*{NonWord})?{keyword}{NonWord}.*$", RegexOptions.CultureInvariant);
    }

    /// <summary>The split's files as local paths, each downloaded (or found in the cache) only when the enumeration
    /// reaches it.</summary>
    public IEnumerable<string> LocalFiles() => LocalFiles(_ => true);

    /// <summary>The split's files (repo paths) that <paramref name="include"/> keeps, as local paths, each downloaded only
    /// when the enumeration reaches it: e.g. one config folder (<c>en-fr/</c>) of a repo with a folder per config.</summary>
    public IEnumerable<string> LocalFiles(Func<string, bool> include)
    {
        ArgumentNullException.ThrowIfNull(include);
        var files = Files().Where(include).ToList();
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

    /// <summary>The dataset's SAELens metadata (<c>sae_lens.json</c> at the repo's root, as SAELens's hub upload puts it),
    /// downloaded into the cache; null when the repo has none or it cannot be fetched (SAELens also goes on then).</summary>
    public string? MetadataFile()
    {
        Files(); // settles the revision (the Parquet conversion has no sae_lens.json)
        if (_revision == "refs/convert/parquet") return null;
        using var client = Client();
        try
        {
            return client.DownloadFile(Repo, PretokenizedMetadata.FileName, _revision, optional: true, HfRepoType.Dataset);
        }
        catch (SaeSharpException)
        {
            return null;
        }
    }

    private HfHubClient Client() => new(_hub ?? HfHubOptions.FromEnvironment());
}
