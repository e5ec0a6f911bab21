using System.Buffers;
using System.Numerics;
using System.Text;
using System.Globalization;
using System.Text.Json;
using System.Text.Json.Serialization;
using SaeSharp.Tokenizers;

namespace SaeSharp.Data;

/// <summary>
/// A special token named as SAELens's <c>PretokenizeRunnerConfig</c> names one (<c>begin_batch_token</c>,
/// <c>begin_sequence_token</c>, <c>sequence_separator_token</c>): <c>"bos"</c>, <c>"eos"</c>, <c>"sep"</c> (the
/// tokenizer's), or a token id. The absence of a token is a null <see cref="PretokenizeToken"/>, or
/// <see cref="None"/> where null means "not given" (<c>ModelDataOptions.SequenceSeparatorToken</c>).
/// </summary>
[JsonConverter(typeof(PretokenizeTokenConverter))]
public sealed record PretokenizeToken
{
    /// <summary>"bos", "eos" or "sep"; null for an id.</summary>
    public string? Name { get; }

    /// <summary>The token id given, or null for a name.</summary>
    public long? Id { get; }

    private PretokenizeToken(string? name, long? id) => (Name, Id) = (name, id);

    /// <summary>The tokenizer's BOS.</summary>
    public static PretokenizeToken Bos { get; } = new("bos", null);
    /// <summary>The tokenizer's EOS.</summary>
    public static PretokenizeToken Eos { get; } = new("eos", null);
    /// <summary>The tokenizer's SEP.</summary>
    public static PretokenizeToken Sep { get; } = new("sep", null);
    /// <summary>No token, given explicitly (SAELens's <c>None</c>); written as JSON null.</summary>
    public static PretokenizeToken None { get; } = new("none", null);

    /// <summary>A token id.</summary>
    public static PretokenizeToken OfId(long id) =>
        id >= 0 ? new(null, id) : throw new SaeSharpException($"token id {id}: expected a non-negative integer");

    /// <summary>Parses a command-line value: bos, eos, sep, a token id, or none / null (no token: returns null).</summary>
    public static PretokenizeToken? Parse(string? value, string what)
    {
        switch (value?.Trim().ToLowerInvariant())
        {
            case null or "" or "none" or "null": return null;
            case "bos": return Bos;
            case "eos": return Eos;
            case "sep": return Sep;
        }
        if (long.TryParse(value, NumberStyles.None, CultureInfo.InvariantCulture, out long id)) return OfId(id);
        throw new SaeSharpException($"{what} {value}: expected bos, eos, sep, a token id, or none");
    }

    /// <summary>The id this names for <paramref name="tokenizer"/>, as SAELens's <c>get_special_token_from_cfg</c> resolves it:
    /// the tokenizer's <c>bos_token_id</c> / <c>eos_token_id</c> / <c>sep_token_id</c>, null when it has none (the token is
    /// then left out, as SAELens leaves it out).</summary>
    public long? Resolve(ITextTokenizer tokenizer)
    {
        ArgumentNullException.ThrowIfNull(tokenizer);
        return Name switch
        {
            null => Id,
            "bos" => tokenizer.BosTokenId,
            "eos" => tokenizer.EosTokenId,
            "sep" => tokenizer.SepTokenId,
            _ => null,
        };
    }

    /// <summary>SAELens's JSON form (a config's or cfg.json metadata's <c>sequence_separator_token</c>): the name, the id, or
    /// null for <see cref="None"/>.</summary>
    public System.Text.Json.Nodes.JsonNode? ToJson() =>
        this == None ? null : Name is { } n ? System.Text.Json.Nodes.JsonValue.Create(n) : System.Text.Json.Nodes.JsonValue.Create(Id!.Value);

    /// <summary>Reads SAELens's JSON form: "bos", "eos", "sep", a token id, or null (<see cref="None"/>); <paramref name="what"/>
    /// names the field in errors.</summary>
    public static PretokenizeToken FromJson(System.Text.Json.Nodes.JsonNode? node, string what)
    {
        if (node is null) return None;
        return node.GetValueKind() switch
        {
            JsonValueKind.String => Parse(node.GetValue<string>(), what) ?? None,
            JsonValueKind.Number when long.TryParse(node.ToJsonString(), NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out long id) => OfId(id),
            _ => throw new SaeSharpException($"{what} {node.ToJsonString()}: expected \"bos\", \"eos\", \"sep\", a token id, or null"),
        };
    }

    /// <summary>As SAELens writes it: the name, or the id.</summary>
    public override string ToString() => Name ?? Id!.Value.ToString(CultureInfo.InvariantCulture);
}

/// <summary>JSON form of <see cref="PretokenizeToken"/>: a string ("bos", "eos", "sep"), an integer, or null.</summary>
internal sealed class PretokenizeTokenConverter : JsonConverter<PretokenizeToken>
{
    public override bool HandleNull => false;

    public override PretokenizeToken? Read(ref Utf8JsonReader reader, Type typeToConvert, JsonSerializerOptions options) => reader.TokenType switch
    {
        JsonTokenType.String => PretokenizeToken.Parse(reader.GetString(), "token"),
        JsonTokenType.Number when reader.TryGetInt64(out long id) => PretokenizeToken.OfId(id),
        _ => throw new JsonException($"expected \"bos\", \"eos\", \"sep\", a token id or null, got {reader.TokenType}"),
    };

    public override void Write(Utf8JsonWriter writer, PretokenizeToken value, JsonSerializerOptions options)
    {
        if (value == PretokenizeToken.None) writer.WriteNullValue();
        else if (value.Name is { } name) writer.WriteStringValue(name);
        else writer.WriteNumberValue(value.Id!.Value);
    }
}

/// <summary>A shuffle seed as a JSON integer of any size (Python's int; NumPy's <c>default_rng</c> takes any non-negative one).</summary>
internal sealed class SeedConverter : JsonConverter<BigInteger?>
{
    public override bool HandleNull => true;

    public override BigInteger? Read(ref Utf8JsonReader reader, Type typeToConvert, JsonSerializerOptions options)
    {
        if (reader.TokenType == JsonTokenType.Null) return null;
        if (reader.TokenType == JsonTokenType.Number
            && BigInteger.TryParse(Encoding.UTF8.GetString(reader.HasValueSequence ? reader.ValueSequence.ToArray() : reader.ValueSpan),
                                   NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out var seed))
            return seed;
        throw new JsonException($"seed: expected an integer or null, got {(reader.TokenType == JsonTokenType.Number ? "a fraction" : reader.TokenType.ToString().ToLowerInvariant())}");
    }

    public override void Write(Utf8JsonWriter writer, BigInteger? value, JsonSerializerOptions options)
    {
        if (value is { } seed) writer.WriteRawValue(seed.ToString(CultureInfo.InvariantCulture), skipInputValidation: true);
        else writer.WriteNullValue();
    }
}

/// <summary>
/// The fields of SAELens's <c>PretokenizeRunnerConfig</c> (sae_lens/config.py, 6.37) that decide the token rows, with its
/// defaults and its JSON names (a <c>sae pretokenize --config</c> file). Fields about the hub upload are not here.
/// </summary>
public sealed record PretokenizeSettings
{
    /// <summary>The tokenizer (a model name or folder), recorded in <c>sae_lens.json</c>.</summary>
    [JsonPropertyName("tokenizer_name")] public string TokenizerName { get; init; } = "gpt2";
    /// <summary>The hub revision of <see cref="TokenizerName"/> (<c>sae pretokenize --revision</c>; null: main), recorded in
    /// <c>sae_lens.json</c> as SaeSharp's <c>tokenizer_revision</c>. Not a SAELens field.</summary>
    [JsonIgnore] public string? TokenizerRevision { get; init; }
    /// <summary>The text dataset, recorded in <c>sae_lens.json</c> as <c>original_dataset</c>.</summary>
    [JsonPropertyName("dataset_path")] public string DatasetPath { get; init; } = "";
    /// <summary>The dataset's config name (recorded only).</summary>
    [JsonPropertyName("dataset_name")] public string? DatasetName { get; init; }
    /// <summary>The split read (recorded; also the <c>_split</c> of state.json).</summary>
    [JsonPropertyName("split")] public string? Split { get; init; } = "train";
    /// <summary>The dataset's data files (recorded only).</summary>
    [JsonPropertyName("data_files")] public IReadOnlyList<string>? DataFiles { get; init; }
    /// <summary>Tokens per row.</summary>
    [JsonPropertyName("context_size")] public int ContextSize { get; init; } = 128;
    /// <summary>The column (jsonl field) holding the text.</summary>
    [JsonPropertyName("column_name")] public string ColumnName { get; init; } = "text";
    /// <summary>Shuffle the rows once they are all cut.</summary>
    [JsonPropertyName("shuffle")] public bool Shuffle { get; init; } = true;
    /// <summary>Seed of the shuffle, a non-negative integer as NumPy's <c>default_rng</c> takes; null: a fresh random seed
    /// each run (as <c>datasets</c>' <c>shuffle(seed=None)</c>).</summary>
    [JsonPropertyName("seed"), JsonConverter(typeof(SeedConverter))] public BigInteger? Seed { get; init; }
    /// <summary>SAELens's streaming mode: the documents are one map job (<see cref="NumProc"/> must be 1). The shuffle stays
    /// the permutation; SAELens's streamed rows get <c>datasets</c>' buffer shuffle instead, another order.</summary>
    [JsonPropertyName("streaming")] public bool Streaming { get; init; }
    /// <summary>The map jobs SAELens's <c>dataset.map(num_proc=...)</c> runs: the documents are cut into this many contiguous
    /// shards, and concatenation restarts at each. Default 4, as SAELens.</summary>
    [JsonPropertyName("num_proc")] public int NumProc { get; init; } = 4;
    /// <summary>Documents per map batch (<c>pretokenize_batch_size</c>): concatenation restarts every this many documents
    /// of a shard, the partial window at the end of each batch dropped. Null (or 0 or less): a shard is one batch.</summary>
    [JsonPropertyName("pretokenize_batch_size")] public int? PretokenizeBatchSize { get; init; } = 1000;
    /// <summary>Put at position 0 of every row (unless the row already starts with it).</summary>
    [JsonPropertyName("begin_batch_token")] public PretokenizeToken? BeginBatchToken { get; init; } = PretokenizeToken.Bos;
    /// <summary>Put before every document (unless it starts with it).</summary>
    [JsonPropertyName("begin_sequence_token")] public PretokenizeToken? BeginSequenceToken { get; init; }
    /// <summary>Put between documents that share a row (unless the next starts with it).</summary>
    [JsonPropertyName("sequence_separator_token")] public PretokenizeToken? SequenceSeparatorToken { get; init; } = PretokenizeToken.Bos;
    /// <summary>One row per document, its first tokens; shorter documents are dropped.</summary>
    [JsonPropertyName("disable_concat_sequences")] public bool DisableConcatSequences { get; init; }
    /// <summary>Where the dataset is written (<c>--out</c>).</summary>
    [JsonPropertyName("save_path")] public string? SavePath { get; init; }

    private static readonly JsonSerializerOptions ReadOptions = new() { UnmappedMemberHandling = JsonUnmappedMemberHandling.Skip };

    /// <summary>The keys of a PretokenizeRunnerConfig that SaeSharp reads but that change nothing here (the hub upload).</summary>
    public static readonly IReadOnlyList<string> IgnoredKeys =
        ["dataset_trust_remote_code", "data_dir", "hf_repo_id", "hf_num_shards", "hf_revision", "hf_is_private_repo"];

    /// <summary>What a <c>--config</c> asked for that this run does not do, for the user: a hub upload (<c>hf_repo_id</c>).</summary>
    [JsonIgnore] public IReadOnlyList<string> Notes { get; init; } = [];

    /// <summary>Reads a JSON file of PretokenizeRunnerConfig fields; an unknown key is an error naming it, and so is a
    /// <c>data_dir</c> (a subfolder SAELens's <c>load_dataset</c> reads, which would change the rows); a <c>hf_repo_id</c>
    /// is a note in <see cref="Notes"/> (the dataset is written, not uploaded).</summary>
    public static PretokenizeSettings FromJson(string path)
    {
        if (!File.Exists(path)) throw new SaeSharpException($"--config {path}: no such file");
        using var doc = ParseFile(path);
        if (doc.RootElement.ValueKind != JsonValueKind.Object) throw new SaeSharpException($"{path}: expected a JSON object of PretokenizeRunnerConfig fields");
        var known = typeof(PretokenizeSettings).GetProperties().Select(p => p.GetCustomAttributes(typeof(JsonPropertyNameAttribute), false))
            .SelectMany(a => a.Cast<JsonPropertyNameAttribute>()).Select(a => a.Name).Concat(IgnoredKeys).ToHashSet(StringComparer.Ordinal);
        foreach (var p in doc.RootElement.EnumerateObject())
            if (!known.Contains(p.Name)) throw new SaeSharpException($"{path}: unknown key '{p.Name}' (PretokenizeRunnerConfig's keys: {string.Join(", ", known.Order(StringComparer.Ordinal))})");
        var root = doc.RootElement;
        if (root.TryGetProperty("data_dir", out var dataDir) && dataDir.ValueKind != JsonValueKind.Null)
            throw new SaeSharpException($"{path}: data_dir {dataDir.GetRawText()}: not supported (SAELens's load_dataset reads only that subfolder of the " +
                                        "dataset); give the subfolder's files as dataset_path, or data_dir null");
        var notes = new List<string>();
        if (root.TryGetProperty("hf_repo_id", out var repo) && repo.ValueKind != JsonValueKind.Null)
            notes.Add($"hf_repo_id {repo.GetRawText()}: ignored: SaeSharp does not upload to the hub; the dataset is written to save_path " +
                      "(--format parquet writes SAELens's hub layout, data/*.parquet and sae_lens.json, to upload yourself)");
        try
        {
            return (root.Deserialize<PretokenizeSettings>(ReadOptions) ?? new PretokenizeSettings()) with { Notes = notes };
        }
        catch (Exception e) when (e is JsonException or SaeSharpException or InvalidOperationException)
        {
            throw new SaeSharpException($"{path}: {e.Message}", e);
        }
    }

    private static JsonDocument ParseFile(string path)
    {
        try
        {
            return JsonDocument.Parse(File.ReadAllBytes(path));
        }
        catch (JsonException e)
        {
            throw new SaeSharpException($"{path}: invalid JSON ({e.Message})", e);
        }
    }

    /// <summary>Refuses settings SAELens refuses, or that could not cut a row.</summary>
    public void Validate()
    {
        if (ContextSize <= 0) throw new SaeSharpException($"context_size {ContextSize}: expected a positive number");
        if (NumProc <= 0) throw new SaeSharpException($"num_proc {NumProc}: expected a positive number");
        if (Streaming && NumProc > 1) throw new SaeSharpException("num_proc must be 1 when streaming is true (as SAELens requires)");
        if (Seed < 0) throw new SaeSharpException($"seed {Seed}: expected a non-negative integer (datasets' shuffle seeds NumPy's default_rng, which refuses a negative one)");
    }
}

/// <summary>What <c>Pretokenizer.Run</c> made: the rows (shuffled when asked) and the documents read.</summary>
public sealed record PretokenizeResult(List<int[]> Rows, long Documents)
{
    /// <summary>Tokens in all rows.</summary>
    public long Tokens => Rows.Sum(r => (long)r.Length);
}

/// <summary>How <see cref="Pretokenizer.Save"/> writes the rows.</summary>
public enum PretokenizedFormat
{
    /// <summary><c>datasets</c>' <c>save_to_disk</c> folder (Arrow IPC stream shards, dataset_info.json, state.json), as
    /// SAELens's <c>save_path</c>.</summary>
    Arrow,
    /// <summary><c>data/train-NNNNN-of-NNNNN.parquet</c>, as SAELens's hub upload.</summary>
    Parquet,
}

/// <summary>
/// SAELens's <c>PretokenizeRunner</c> (sae_lens/pretokenize_runner.py, 6.37): documents tokenized as its
/// <c>tokenizer.encode(text)</c> does (Hugging Face's default <c>add_special_tokens=True</c>: a Llama-style tokenizer
/// puts BOS before every document, GPT-2's puts nothing; <see cref="ITextTokenizer.EncodeWithSpecialTokens"/>), cut into
/// rows of <c>context_size</c> tokens by <see cref="TokenWindows.ConcatAndBatch"/> with the configured begin-batch,
/// begin-sequence and separator tokens, then shuffled.
/// <para>As in SAELens, concatenation runs once per map batch: the documents are cut into <see cref="PretokenizeSettings.NumProc"/>
/// contiguous shards (as <c>datasets</c>' <c>map(num_proc=N)</c> shards them), each shard into batches of
/// <see cref="PretokenizeSettings.PretokenizeBatchSize"/> documents, and the partial row at the end of each batch is dropped.
/// With more than one shard the documents are counted first (one extra pass; no text is held).</para>
/// <para>Documents are what <see cref="TextDataset"/> reads, one for each row <c>datasets</c> loads: a <c>.txt</c> file's
/// lines, empty ones included (an empty document is nothing for GPT-2's tokenizer, a lone BOS for a BOS-adding one, and
/// counts toward the map batches either way); jsonl, Parquet and Arrow rows one for one.</para>
/// <para>The shuffle is <c>datasets</c>' <c>shuffle(seed)</c>: NumPy's <c>default_rng(seed).permutation(rows)</c>
/// (<see cref="NumpyRandom"/>), so a seed gives the row order SAELens writes.</para>
/// </summary>
public static class Pretokenizer
{
    /// <summary>The rows in SAELens's order before its shuffle. <paramref name="documents"/> is enumerated once, or twice
    /// when <see cref="PretokenizeSettings.NumProc"/> is above 1 (to count them); documents are tokenized as they are read.</summary>
    public static IEnumerable<long[]> Rows(IEnumerable<string> documents, ITextTokenizer tokenizer, PretokenizeSettings settings)
    {
        ArgumentNullException.ThrowIfNull(documents);
        ArgumentNullException.ThrowIfNull(tokenizer);
        ArgumentNullException.ThrowIfNull(settings);
        settings.Validate();
        long? bb = InVocabulary(settings.BeginBatchToken?.Resolve(tokenizer), tokenizer, "--begin-batch-token (begin_batch_token)");
        long? bs = InVocabulary(settings.BeginSequenceToken?.Resolve(tokenizer), tokenizer, "--begin-sequence-token (begin_sequence_token)");
        long? sep = InVocabulary(settings.SequenceSeparatorToken?.Resolve(tokenizer), tokenizer, "--sequence-separator-token (sequence_separator_token)");
        int shards = settings.Streaming ? 1 : settings.NumProc;
        long count = shards > 1 ? documents.LongCount() : 0;
        var starts = BatchStarts(count, shards, settings.PretokenizeBatchSize);
        return Batches(documents, starts).SelectMany(batch => TokenWindows.ConcatAndBatch(
            batch.Select(d => Array.ConvertAll(tokenizer.EncodeWithSpecialTokens(d), x => (long)x)),
            settings.ContextSize, bb, bs, sep, settings.DisableConcatSequences));
    }

    /// <summary><paramref name="id"/>, or an error naming <paramref name="what"/> when the tokenizer has no such id (rows holding
    /// it would fail in the model's embedding at training time, far from the cause).</summary>
    private static long? InVocabulary(long? id, ITextTokenizer tokenizer, string what) =>
        id is long i && i >= tokenizer.VocabSize
            ? throw new SaeSharpException($"{what} {i}: not a token id of the tokenizer (its vocabulary has {tokenizer.VocabSize} ids, 0 to {tokenizer.VocabSize - 1})")
            : id;

    /// <summary>Rows cut and shuffled as <c>PretokenizeRunner</c> does, as int32 ids (the type SAELens's dataset stores).
    /// The rows are held in memory (4 bytes a token); the text is not. <paramref name="progress"/> counts documents read.</summary>
    public static PretokenizeResult Run(IEnumerable<string> documents, ITextTokenizer tokenizer, PretokenizeSettings settings,
        IProgress<WorkProgress>? progress = null)
    {
        ArgumentNullException.ThrowIfNull(documents);
        var counter = new ProgressCounter(progress, "documents");
        long docs = 0;
        var counted = documents.Select(d =>
        {
            docs++;
            if ((docs & 255) == 0) counter.Add(256);
            return d;
        });
        var rows = new List<int[]>();
        foreach (var r in Rows(new Reenumerable(documents, counted, settings), tokenizer, settings))
            rows.Add(Array.ConvertAll(r, x => checked((int)x)));
        if (settings.Shuffle) new NumpyRandom(settings.Seed ?? Random.Shared.NextInt64()).Shuffle(rows);
        return new PretokenizeResult(rows, docs);
    }

    /// <summary><see cref="Run(IEnumerable{string}, ITextTokenizer, PretokenizeSettings, IProgress{WorkProgress}?)"/> on the
    /// text of a dataset file, folder or hub dataset (read as <see cref="TextDataset.Read"/> reads it, from column
    /// <see cref="PretokenizeSettings.ColumnName"/>); a dataset that is already pre-tokenized is an error.</summary>
    public static PretokenizeResult Run(string datasetPath, ITextTokenizer tokenizer, PretokenizeSettings settings,
        IProgress<WorkProgress>? progress = null)
    {
        ArgumentNullException.ThrowIfNull(settings);
        var files = TextDataset.ExpandFiles(datasetPath);
        var (col, tokenized, _) = TextDataset.ChooseColumn(files, settings.ColumnName);
        if (tokenized) throw new SaeSharpException($"dataset {datasetPath} is already pre-tokenized (column '{col}'); pretokenize reads text");
        return Run(TextDataset.ReadFiles(files, settings.ColumnName), tokenizer, settings, progress);
    }

    /// <summary>The documents for <see cref="Rows"/>: counted on the pass that tokenizes them (the last), not on the pass
    /// that counts the documents to shard them.</summary>
    private sealed class Reenumerable(IEnumerable<string> plain, IEnumerable<string> counted, PretokenizeSettings settings) : IEnumerable<string>
    {
        private int _passes;
        private readonly int _countingPasses = settings.Streaming || settings.NumProc <= 1 ? 0 : 1;

        public IEnumerator<string> GetEnumerator() => (_passes++ < _countingPasses ? plain : counted).GetEnumerator();

        System.Collections.IEnumerator System.Collections.IEnumerable.GetEnumerator() => GetEnumerator();
    }

    /// <summary>
    /// Refuses an output folder <see cref="Save"/> may not write: a file; a folder holding files, unless
    /// <paramref name="force"/> and it is a dataset written before (it has sae_lens.json or state.json, or only
    /// dataset files): <c>--force</c> never deletes a folder of other things (<c>--out .</c>).
    /// </summary>
    public static void CheckOutput(string outDir, bool force)
    {
        ArgumentException.ThrowIfNullOrEmpty(outDir);
        if (File.Exists(outDir)) throw new SaeSharpException($"--out {outDir}: a file; give a folder");
        if (!Directory.Exists(outDir) || !Directory.EnumerateFileSystemEntries(outDir).Any()) return;
        bool dataset = File.Exists(Path.Combine(outDir, PretokenizedMetadata.FileName)) || HfDiskDataset.IsSavedDataset(outDir);
        if (!dataset)
            throw new SaeSharpException($"--out {outDir}: the folder is not empty and not a dataset (one with {PretokenizedMetadata.FileName} or {HfDiskDataset.StateFile}), " +
                "which --force would not replace either; give a new or empty folder");
        if (!force) throw new SaeSharpException($"--out {outDir}: the folder holds a dataset (use --force to replace it)");
    }

    /// <summary>
    /// Writes <paramref name="rows"/> to the folder <paramref name="outDir"/> as SAELens's PretokenizeRunner leaves its
    /// <c>save_path</c> (<see cref="HfDiskDataset.Write"/>, <see cref="PretokenizedFormat.Arrow"/>) or as its hub upload
    /// lays the files out (<see cref="HfDiskDataset.WriteParquet"/>), with <c>sae_lens.json</c>. The folder is written
    /// whole beside the output (<c>.NAME.PID.GUID.tmp</c>) and renamed into place, so an interrupted run leaves no folder
    /// that looks like a dataset; a folder there before is replaced only with <paramref name="force"/>
    /// (<see cref="CheckOutput"/>). Returns the data files written (paths from the folder).
    /// </summary>
    public static IReadOnlyList<string> Save(string outDir, IReadOnlyList<int[]> rows, PretokenizeSettings settings,
        PretokenizedFormat format = PretokenizedFormat.Arrow, bool force = false)
    {
        ArgumentNullException.ThrowIfNull(rows);
        ArgumentNullException.ThrowIfNull(settings);
        CheckOutput(outDir, force);
        if (rows.Count == 0)
            throw new SaeSharpException($"no row of {settings.ContextSize} tokens: the documents are too few or too short for the context size");
        string full = Path.GetFullPath(outDir).TrimEnd(Path.DirectorySeparatorChar);
        string parent = Path.GetDirectoryName(full)!;
        Directory.CreateDirectory(parent);
        RemoveAbandonedFolders(parent);
        string name = Path.GetFileName(full);
        string tmp = Path.Combine(parent, $".{name}.{Environment.ProcessId}.{Guid.NewGuid():N}.tmp");
        string? old = null;
        try
        {
            var files = format == PretokenizedFormat.Parquet
                ? HfDiskDataset.WriteParquet(tmp, rows, settings.ContextSize, settings.Split)
                : HfDiskDataset.Write(tmp, rows, settings.ContextSize, settings.Split);
            File.WriteAllText(Path.Combine(tmp, PretokenizedMetadata.FileName), PretokenizedMetadata.FromSettings(settings).ToJson());
            if (Directory.Exists(full))
            {
                old = Path.Combine(parent, $".{name}.{Environment.ProcessId}.{Guid.NewGuid():N}.tmp");
                Directory.Move(full, old);
            }
            Directory.Move(tmp, full);
            return files;
        }
        catch (Exception e)
        {
            TryDelete(tmp);
            if (old is not null && !Directory.Exists(full)) Directory.Move(old, full);
            old = null;
            if (e is IOException io) throw new SaeSharpException($"{full}: could not write the dataset ({io.Message}); nothing was left in its place", io);
            throw;
        }
        finally
        {
            if (old is not null) TryDelete(old);
        }
    }

    /// <summary>Deletes the <c>.NAME.PID.GUID.tmp</c> folders in <paramref name="dir"/> of processes no longer running
    /// (what a killed <see cref="Save"/> leaves).</summary>
    private static void RemoveAbandonedFolders(string dir)
    {
        foreach (var path in Directory.EnumerateDirectories(dir, ".*.tmp"))
        {
            var parts = Path.GetFileName(path).Split('.');
            if (parts.Length < 5 || parts[^2].Length != 32 || !int.TryParse(parts[^3], out int pid) || pid == Environment.ProcessId) continue;
            bool running;
            try
            {
                using var p = System.Diagnostics.Process.GetProcessById(pid);
                running = !p.HasExited;
            }
            catch (ArgumentException) { running = false; }
            catch (InvalidOperationException) { running = false; }
            if (!running) TryDelete(path);
        }
    }

    private static void TryDelete(string dir)
    {
        try
        {
            if (Directory.Exists(dir)) Directory.Delete(dir, recursive: true);
        }
        catch (IOException) { }
        catch (UnauthorizedAccessException) { }
    }

    /// <summary>The document indices at which SAELens's concatenation restarts: each of <paramref name="shards"/>
    /// contiguous shards of <paramref name="count"/> documents (<c>Dataset.shard(contiguous=True)</c>: the first
    /// count mod shards shards one longer; no more shards than documents), and every <paramref name="batchSize"/>
    /// documents within a shard. With one shard the count is not needed.</summary>
    internal static Func<long, bool> BatchStarts(long count, int shards, int? batchSize)
    {
        long batch = batchSize is int b && b > 0 ? b : long.MaxValue;
        if (shards <= 1) return i => i % batch == 0;
        long n = Math.Min(shards, Math.Max(count, 1));
        long div = count / n, mod = count % n;
        var shardStarts = new long[n];
        for (long r = 0; r < n; r++) shardStarts[r] = div * r + Math.Min(r, mod);
        return i =>
        {
            int r = Array.BinarySearch(shardStarts, i);
            long start = r >= 0 ? i : shardStarts[~r - 1];
            return (i - start) % batch == 0;
        };
    }

    /// <summary>The documents as consecutive batches, a new one starting where <paramref name="starts"/> says; read
    /// lazily (a batch is never held), each batch meant to be read through before the next is asked for.</summary>
    private static IEnumerable<IEnumerable<string>> Batches(IEnumerable<string> documents, Func<long, bool> starts)
    {
        using var e = documents.GetEnumerator();
        long i = 0, groupStart = 0;
        bool has = e.MoveNext();
        while (has)
        {
            groupStart = i;
            yield return Group();
            while (has && (i == groupStart || !starts(i))) { i++; has = e.MoveNext(); } // what the reader left of the batch
        }

        IEnumerable<string> Group()
        {
            while (has && (i == groupStart || !starts(i)))
            {
                yield return e.Current;
                i++;
                has = e.MoveNext();
            }
        }
    }
}
