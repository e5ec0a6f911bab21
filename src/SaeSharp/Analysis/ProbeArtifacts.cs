using System.Security.Cryptography;
using System.Text;
using System.Text.Json.Nodes;
using SaeSharp.IO;
using SaeSharp.Models;
using SaeSharp.Saes;
using static TorchSharp.torch;

namespace SaeSharp.Analysis;

/// <summary>
/// <c>sae probe --artifacts DIR</c>, SAEBench's <c>artifacts_folder</c>: the model's activations at each SAE hook for every
/// window or text a probe pass reads, kept on disk so that a later call reading the same tokens of the same model at the
/// same hook runs no model. One safetensors file per key (<c>DIR/probe_{hash}.safetensors</c>, tensors <c>acts</c>
/// [positions, d] in the model's dtype and <c>lengths</c> [items]), the key's JSON in its metadata. The key is the format
/// version, the model (its folder's files: names and the SHA-256 of their contents, remembered in <see cref="HashesFile"/>
/// by size and mtime, a Hugging Face cache's blobs taken by their names; its weight processing, dtype and device), the
/// hook, the pass ("token windows" or "texts"), the batch size and the SHA-256 of every token id read in order: whatever
/// option or dataset change alters which tokens are read changes the key; copying or moving the model's folder does
/// not. Hook functions passed besides the model's processing are not part of it.
/// </summary>
public sealed class ProbeArtifacts
{
    /// <summary>Version of the file layout and the key; a change makes older files unused (never misread).</summary>
    public const int FormatVersion = 2;
    /// <summary>The artifacts folder's memo of the model files' SHA-256 (<see cref="FileSha256"/>).</summary>
    public const string HashesFile = "model_files_sha256.json";
    internal const string KeyField = "saesharp_probe_artifact_key";
    private readonly List<string> _notes = [];
    private FileSha256? _hashes;

    /// <summary>Artifacts under <paramref name="directory"/> (created when the first file is written); bind the model with
    /// <see cref="ForModel"/> before a run.</summary>
    public ProbeArtifacts(string directory)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(directory);
        if (File.Exists(directory)) throw new SaeSharpException($"--artifacts {directory}: is a file; give a folder");
        Directory = directory;
    }

    /// <summary>The artifacts folder.</summary>
    public string Directory { get; }
    /// <summary>The model's part of every key (<see cref="ForModel"/>); null until bound.</summary>
    public JsonObject? Model { get; private set; }
    /// <summary>One line per pass: which file its activations came from (no model pass) or went to.</summary>
    public IReadOnlyList<string> Notes => _notes;

    /// <summary>Binds the model at <paramref name="modelFolder"/> as <paramref name="pm"/> loaded it; returns this.</summary>
    public ProbeArtifacts ForModel(string modelFolder, ProcessedModel pm)
    {
        ArgumentNullException.ThrowIfNull(modelFolder);
        ArgumentNullException.ThrowIfNull(pm);
        var dir = new DirectoryInfo(Path.GetFullPath(modelFolder));
        var files = new JsonArray();
        _hashes = new FileSha256(Path.Combine(Directory, HashesFile));
        string own = Path.GetFullPath(Directory) + Path.DirectorySeparatorChar;
        if (dir.Exists)
            foreach (var f in dir.EnumerateFiles("*", SearchOption.AllDirectories).OrderBy(f => f.FullName, StringComparer.Ordinal))
                if (!f.FullName.StartsWith(own, StringComparison.Ordinal)) // the artifacts themselves, when kept inside the model's folder
                    files.Add(new JsonObject { ["name"] = Path.GetRelativePath(dir.FullName, f.FullName).Replace('\\', '/'), ["sha256"] = _hashes.Of(f) });
        SaveHashes();
        var first = pm.Model.parameters().FirstOrDefault();
        Model = new JsonObject
        {
            ["files"] = files,
            ["processing"] = new JsonObject(pm.Options.ToKwargs().Select(kv => KeyValuePair.Create(kv.Key, (JsonNode?)kv.Value))),
            ["dtype"] = first is null ? null : SaeConfig.DtypeName(first.dtype),
            ["device"] = pm.Model.Device.ToString(),
        };
        return this;
    }

    /// <summary>The key of a pass reading <paramref name="items"/> (token ids per window or text) at <paramref name="hook"/>.</summary>
    internal JsonObject Key(string pass, string hook, IReadOnlyList<long[]> items, int batchSize)
    {
        if (Model is null) throw new InvalidOperationException("ProbeArtifacts.ForModel was not called");
        using var hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        foreach (var ids in items)
        {
            hash.AppendData(BitConverter.GetBytes((long)ids.Length));
            foreach (long id in ids) hash.AppendData(BitConverter.GetBytes(id));
        }
        return new JsonObject
        {
            ["format"] = FormatVersion, ["of"] = "sae probe model activations", ["model"] = Model.DeepClone(), ["hook"] = hook, ["pass"] = pass,
            ["batch_size"] = batchSize, ["items"] = items.Count, ["positions"] = items.Sum(i => (long)i.Length),
            ["token_ids_sha256"] = Convert.ToHexStringLower(hash.GetHashAndReset()),
        };
    }

    /// <summary>The file of <paramref name="key"/>: <c>probe_</c> and the first 16 hex digits of its JSON's SHA-256.</summary>
    internal string PathOf(JsonObject key) =>
        Path.Combine(Directory, "probe_" + Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(key.ToJsonString())))[..16] + ".safetensors");

    internal void Note(string line) => _notes.Add(line);

    /// <summary>Writes the model files' hashes to <see cref="HashesFile"/> when the folder exists (the next call reads
    /// them instead of the files).</summary>
    internal void SaveHashes()
    {
        if (System.IO.Directory.Exists(Directory)) _hashes?.Save();
    }
}

/// <summary>The hook's activations of one probe pass, batch by batch: from the model (recorded when artifacts are kept,
/// written by <see cref="Complete"/>) or, when the artifacts hold the pass's key, from its file with no model run.</summary>
internal sealed class HookActivations : IDisposable
{
    private readonly ProbeArtifacts? _artifacts;
    private readonly JsonObject? _key;
    private readonly string? _path;
    private readonly IReadOnlyList<long[]> _items;
    private readonly long[] _offsets;
    private readonly Device _device;
    private Tensor? _stored;
    private readonly List<(int[] Idx, Tensor X)> _recorded = [];

    private HookActivations(ProbeArtifacts? artifacts, string pass, string hook, IReadOnlyList<long[]> items, int batchSize, Device device)
    {
        _artifacts = artifacts;
        _items = items;
        _device = device;
        _offsets = new long[items.Count + 1];
        for (int i = 0; i < items.Count; i++) _offsets[i + 1] = _offsets[i] + items[i].Length;
        if (artifacts is null) return;
        _key = artifacts.Key(pass, hook, items, batchSize);
        _path = artifacts.PathOf(_key);
        if (File.Exists(_path))
        {
            _stored = Read(_path, _key.ToJsonString(), items, _offsets[^1]);
            artifacts.Note($"model activations from {_path}, no model pass");
        }
    }

    /// <summary>The pass over <paramref name="items"/> at <paramref name="hook"/>, kept in or read from <paramref name="artifacts"/> when given.</summary>
    public static HookActivations For(ProbeArtifacts? artifacts, string pass, string hook, IReadOnlyList<long[]> items, int batchSize, Device device) =>
        new(artifacts, pass, hook, items, batchSize, device);

    /// <summary>True when the activations come from a file (the model is not run).</summary>
    public bool Stored => _stored is not null;

    /// <summary>The hook's activations [idx, len, d] of the items <paramref name="idx"/> (all of <paramref name="len"/>
    /// tokens): read from the file, or <paramref name="run"/>'s (the model run on them), recorded when artifacts are kept.</summary>
    public Tensor Get(int[] idx, long len, Func<Tensor> run)
    {
        if (_stored is not null)
            return cat([.. idx.Select(i => _stored.narrow(0, _offsets[i], len))], 0).view(idx.Length, len, -1).to(_device);
        var x = run();
        if (_artifacts is not null) _recorded.Add((idx, x.detach().cpu().clone().DetachFromDisposeScope()));
        return x;
    }

    /// <summary>After the pass: writes the recorded activations to the artifacts (temporary file renamed into place; the
    /// temporaries a killed run left there are removed first).</summary>
    public void Complete()
    {
        if (_artifacts is null || _stored is not null) return;
        using var scope = NewDisposeScope();
        var first = _recorded[0].X;
        var acts = empty(_offsets[^1], first.shape[^1], first.dtype);
        var done = new bool[_items.Count];
        foreach (var (idx, x) in _recorded)
            for (int b = 0; b < idx.Length; b++)
            {
                acts.narrow(0, _offsets[idx[b]], _items[idx[b]].Length).copy_(x.select(0, b));
                done[idx[b]] = true;
            }
        if (done.Any(d => !d)) throw new InvalidOperationException("a probe pass did not run every item");
        System.IO.Directory.CreateDirectory(_artifacts.Directory);
        AtomicFile.RemoveAbandonedTemporaries(_artifacts.Directory); // those of killed runs
        _artifacts.SaveHashes();
        SafeTensors.Save(_path!, [KeyValuePair.Create("acts", acts), KeyValuePair.Create("lengths", tensor(_items.Select(i => (long)i.Length).ToArray()))],
            new Dictionary<string, string> { [ProbeArtifacts.KeyField] = _key!.ToJsonString() });
        _artifacts.Note($"model activations written to {_path}");
    }

    private static Tensor Read(string path, string key, IReadOnlyList<long[]> items, long positions)
    {
        static SaeSharpException Bad(string path, string why) =>
            new($"{path}: not a readable sae probe artifact ({(why.StartsWith(path + ": ", StringComparison.Ordinal) ? why[(path.Length + 2)..] : why)}); " +
                "delete it to compute the model's activations again");
        SafeTensorsFile file;
        try { file = SafeTensorsFile.Open(path); }
        catch (Exception e) when (e is SaeSharpException or IOException) { throw Bad(path, e.Message); }
        using (file)
        {
            if (!file.Metadata.TryGetValue(ProbeArtifacts.KeyField, out var k)) throw Bad(path, $"its metadata has no {ProbeArtifacts.KeyField}");
            if (k != key) throw Bad(path, "its key differs from this call's");
            if (!file.Tensors.TryGetValue("acts", out var acts) || !file.Tensors.TryGetValue("lengths", out var lengths))
                throw Bad(path, "it lacks the tensors acts and lengths");
            if (acts.Shape.Length != 2 || acts.Shape[0] != positions || lengths.Shape.Length != 1 || lengths.Shape[0] != items.Count)
                throw Bad(path, $"acts [{string.Join(", ", acts.Shape)}] and lengths [{string.Join(", ", lengths.Shape)}] do not hold {positions} positions of {items.Count} items");
            try
            {
                using (var l = file.Read("lengths"))
                    if (!l.data<long>().SequenceEqual(items.Select(i => (long)i.Length))) throw Bad(path, "its lengths differ from the items read");
                return file.Read("acts").DetachFromDisposeScope();
            }
            catch (Exception e) when (e is IOException or InvalidOperationException) { throw Bad(path, e.Message); }
        }
    }

    public void Dispose()
    {
        _stored?.Dispose();
        foreach (var (_, x) in _recorded) x.Dispose();
        _recorded.Clear();
    }
}
