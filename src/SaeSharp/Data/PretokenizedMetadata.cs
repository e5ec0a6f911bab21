using System.Numerics;
using System.Text.Json;
using System.Text.Json.Serialization;
using SaeSharp.Tokenizers;

namespace SaeSharp.Data;

/// <summary>
/// <c>sae_lens.json</c>: SAELens's <c>PretokenizedDatasetMetadata</c> (sae_lens/pretokenize_runner.py), written beside a
/// pretokenized dataset with the same keys. <see cref="SaeLensVersion"/> is the SAELens version whose format SaeSharp
/// follows (<see cref="FormatVersion"/>); <see cref="WrittenBy"/>, a key SAELens does not write (it reads only
/// <c>tokenizer_name</c>), says that SaeSharp wrote it.
/// </summary>
public sealed record PretokenizedMetadata
{
    /// <summary>The file name.</summary>
    public const string FileName = "sae_lens.json";

    /// <summary>The SAELens release whose PretokenizeRunner output SaeSharp writes.</summary>
    public const string FormatVersion = Saes.SaeMetadata.SaeLensFormatVersion;

    /// <summary><c>sae_lens_version</c>.</summary>
    [JsonPropertyName("sae_lens_version")] public string? SaeLensVersion { get; init; }
    /// <summary><c>tokenizer_name</c>.</summary>
    [JsonPropertyName("tokenizer_name")] public string? TokenizerName { get; init; }
    /// <summary><c>original_dataset</c>.</summary>
    [JsonPropertyName("original_dataset")] public string? OriginalDataset { get; init; }
    /// <summary><c>original_dataset_name</c>.</summary>
    [JsonPropertyName("original_dataset_name")] public string? OriginalDatasetName { get; init; }
    /// <summary><c>original_split</c>.</summary>
    [JsonPropertyName("original_split")] public string? OriginalSplit { get; init; }
    /// <summary><c>original_data_files</c>.</summary>
    [JsonPropertyName("original_data_files")] public IReadOnlyList<string>? OriginalDataFiles { get; init; }
    /// <summary><c>original_column_name</c>.</summary>
    [JsonPropertyName("original_column_name")] public string? OriginalColumnName { get; init; }
    /// <summary><c>context_size</c>: tokens per row.</summary>
    [JsonPropertyName("context_size")] public int? ContextSize { get; init; }
    /// <summary><c>shuffled</c>.</summary>
    [JsonPropertyName("shuffled")] public bool? Shuffled { get; init; }
    /// <summary><c>seed</c>.</summary>
    [JsonPropertyName("seed"), JsonConverter(typeof(SeedConverter))] public BigInteger? Seed { get; init; }
    /// <summary><c>begin_batch_token</c>.</summary>
    [JsonPropertyName("begin_batch_token")] public PretokenizeToken? BeginBatchToken { get; init; }
    /// <summary><c>begin_sequence_token</c>.</summary>
    [JsonPropertyName("begin_sequence_token")] public PretokenizeToken? BeginSequenceToken { get; init; }
    /// <summary><c>sequence_separator_token</c>.</summary>
    [JsonPropertyName("sequence_separator_token")] public PretokenizeToken? SequenceSeparatorToken { get; init; }
    /// <summary><c>disable_concat_sequences</c>.</summary>
    [JsonPropertyName("disable_concat_sequences")] public bool? DisableConcatSequences { get; init; }
    /// <summary>SaeSharp's own key, written only when not main: the hub revision of <see cref="TokenizerName"/>
    /// (<c>sae pretokenize --revision</c>).</summary>
    [JsonPropertyName("tokenizer_revision"), JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)] public string? TokenizerRevision { get; init; }
    /// <summary>SaeSharp's own key: the program that wrote the dataset (<c>SaeSharp VERSION</c>).</summary>
    [JsonPropertyName("written_by")] public string? WrittenBy { get; init; }

    /// <summary>SAELens's <c>metadata_from_config</c>.</summary>
    public static PretokenizedMetadata FromSettings(PretokenizeSettings s)
    {
        ArgumentNullException.ThrowIfNull(s);
        var v = typeof(PretokenizedMetadata).Assembly.GetName().Version;
        return new()
        {
            SaeLensVersion = FormatVersion,
            TokenizerName = s.TokenizerName,
            OriginalDataset = s.DatasetPath,
            OriginalDatasetName = s.DatasetName,
            OriginalSplit = s.Split,
            OriginalDataFiles = s.DataFiles,
            OriginalColumnName = s.ColumnName,
            ContextSize = s.ContextSize,
            Shuffled = s.Shuffle,
            Seed = s.Seed,
            BeginBatchToken = s.BeginBatchToken,
            BeginSequenceToken = s.BeginSequenceToken,
            SequenceSeparatorToken = s.SequenceSeparatorToken,
            DisableConcatSequences = s.DisableConcatSequences,
            TokenizerRevision = s.TokenizerRevision is null or "main" ? null : s.TokenizerRevision,
            WrittenBy = $"SaeSharp {v?.ToString(3) ?? "?"}",
        };
    }

    private static readonly JsonSerializerOptions Options = new() { WriteIndented = true, UnmappedMemberHandling = JsonUnmappedMemberHandling.Skip };

    /// <summary>The JSON SAELens writes (<c>json.dump(metadata.__dict__, indent=2)</c>, every key, nulls included).</summary>
    public string ToJson() => JsonSerializer.Serialize(this, Options);

    /// <summary>Reads a sae_lens.json; an unreadable one is an error naming it.</summary>
    public static PretokenizedMetadata Read(string path)
    {
        try
        {
            return JsonSerializer.Deserialize<PretokenizedMetadata>(File.ReadAllBytes(path), Options)
                   ?? throw new SaeSharpException($"{path}: expected a JSON object");
        }
        catch (Exception e) when (e is JsonException or InvalidOperationException)
        {
            throw new SaeSharpException($"{path}: not a readable SAELens metadata file ({e.Message})", e);
        }
    }

    /// <summary>The sae_lens.json that describes the dataset at <paramref name="path"/>: in the folder, or beside the
    /// file (a shard of a save_to_disk folder), or one folder up (a shard under <c>data/</c>); null when there is none.</summary>
    public static string? Find(string path)
    {
        if (Directory.Exists(path))
            return File.Exists(Path.Combine(path, FileName)) ? Path.Combine(path, FileName) : null;
        if (!File.Exists(path)) return null;
        var dir = Path.GetDirectoryName(Path.GetFullPath(path));
        for (int up = 0; up < 2 && dir is not null; up++, dir = Path.GetDirectoryName(dir))
            if (File.Exists(Path.Combine(dir, FileName))) return Path.Combine(dir, FileName);
        return null;
    }

    /// <summary>
    /// Checks a pretokenized dataset against the run reading it, as SAELens's ActivationsStore checks one: rows shorter
    /// than the run's context size are an error; longer rows are cut, with a warning (SAELens: "Some data will be
    /// discarded"). Beyond SAELens, the begin-batch token is compared with the run's prepend_bos (a warning each way) and
    /// the recorded tokenizer's BOS, when it is an id, with the tokenizer's. Returns the warnings, one line each, naming
    /// <paramref name="file"/>.
    /// </summary>
    public IReadOnlyList<string> Check(string file, int contextSize, bool prependBos, ITextTokenizer tokenizer)
    {
        ArgumentNullException.ThrowIfNull(tokenizer);
        var warnings = new List<string>();
        if (ContextSize is int n)
        {
            if (n < contextSize)
                throw new SaeSharpException($"{file}: the dataset's rows have context_size {n}, fewer than the run's {contextSize}: give --context-size {n} or less, or pretokenize again with --context-size {contextSize}");
            if (n > contextSize)
                warnings.Add($"{file}: context_size {n} > the run's {contextSize}: rows cut to their first {contextSize} tokens");
        }
        if (BeginBatchToken is null && prependBos && tokenizer.BosTokenId is not null)
            warnings.Add($"{file}: begin_batch_token is null, so the rows do not start with BOS, but the run prepends BOS (pretokenize with --begin-batch-token bos, or run with --no-prepend-bos)");
        else if (BeginBatchToken is not null && !prependBos)
            warnings.Add($"{file}: every row starts with begin_batch_token {BeginBatchToken}, but the run is --no-prepend-bos (the rows are read as they are)");
        else if (BeginBatchToken is { Id: long id } && prependBos && tokenizer.BosTokenId is int bos && id != bos)
            warnings.Add($"{file}: begin_batch_token is {id}, the model's BOS is {bos}: the rows do not start with this model's BOS");
        return warnings;
    }
}

/// <summary>Where the data readers report a warning about a dataset (a pretokenized dataset made for other settings):
/// <c>sae</c> prints each once on stderr; a library user may set <see cref="Handler"/>. Unset, warnings are dropped.</summary>
public static class DatasetWarnings
{
    private static readonly AsyncLocal<Action<string>?> Current = new();

    /// <summary>Receives each warning line of the code that set it and of the tasks and threads it starts afterwards
    /// (an async-local value: two runs in one process, such as two commands run side by side, each get their own).</summary>
    public static Action<string>? Handler { get => Current.Value; set => Current.Value = value; }

    internal static void Report(string warning) => Handler?.Invoke(warning);
}
