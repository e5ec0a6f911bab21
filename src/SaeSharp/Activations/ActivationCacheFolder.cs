using System.Text.Json;
using System.Text.Json.Nodes;
using System.Text.Json.Serialization;
using SaeSharp.Saes;
using SaeSharp.Data;
using SaeSharp.IO;
using SaeSharp.Models;
using TorchSharp;
using static TorchSharp.torch;

namespace SaeSharp.Activations;

/// <summary>Settings of <see cref="ActivationCacheFolder.Write"/> (<c>sae cache</c>).</summary>
public sealed record ActivationCacheOptions
{
    /// <summary>Tokens per context window.</summary>
    public required int ContextSize { get; init; }
    /// <summary>Windows per model run.</summary>
    public int BatchSizePrompts { get; init; } = 8;
    /// <summary>Context windows per shard (a shard holds whole windows, so it can be resumed at a shard boundary).</summary>
    public int ContextsPerShard { get; init; } = 64;
    /// <summary>Token budget N: ⌈N / positions kept per window⌉ windows are harvested (null: the whole dataset).</summary>
    public long? MaxTokens { get; init; }
    /// <summary>SAELens's <c>seqpos_slice</c>: the positions of each window stored (SAELens's CacheActivationsRunner stores
    /// <c>training_context_size</c> rows a window); null: all.</summary>
    public Saes.SeqposSlice? SeqposSlice { get; init; }
    /// <summary>Recorded in the manifest: SAELens's <c>disable_concat_sequences</c> the windows were cut with.</summary>
    public bool DisableConcatSequences { get; init; }
    /// <summary>Recorded in the manifest: SAELens's <c>sequence_separator_token</c> the windows were cut with.</summary>
    public Data.PretokenizeToken SequenceSeparatorToken { get; init; } = Data.PretokenizeToken.Bos;
    /// <summary>Token ids whose positions are not stored (BOS, EOS, padding).</summary>
    public IReadOnlyCollection<long>? ExcludeTokenIds { get; init; }
    /// <summary>Recorded in the manifest: <see cref="ExcludeTokenIds"/> came from SAELens's exclude_special_tokens as a list
    /// (false: from <c>true</c>, the tokenizer's special tokens).</summary>
    public bool ExcludeTokenIdsListed { get; init; }
    /// <summary>Stored dtype of <c>activations</c>/<c>targets</c>: float32, float16 or bfloat16.</summary>
    public ScalarType Dtype { get; init; } = ScalarType.Float32;
    /// <summary>Recorded in the manifest: the dataset the windows came from.</summary>
    public string? DatasetPath { get; init; }
    /// <summary>Recorded in the manifest: whether the windows start with BOS.</summary>
    public bool PrependBos { get; init; } = true;
    /// <summary>Recorded in the manifest: TransformerLens-style weight processing applied to the model.</summary>
    public IReadOnlyDictionary<string, bool>? ModelFromPretrainedKwargs { get; init; }
    /// <summary>Recorded in the manifest: the model's hub revision when not main (<see cref="Pipelines.ModelDataOptions.Revision"/>).</summary>
    public string? ModelRevision { get; init; }
    /// <summary>Hooks applied on every model run (<see cref="SaeSharp.Models.ProcessedModel.Hooks"/>), before the harvest reads.</summary>
    public IReadOnlyList<(string Name, Func<Tensor, Tensor?> Fn)>? ModelHooks { get; init; }
    /// <summary>Tokens harvested (the positions kept), after each model batch (the total is the budget when there is one).</summary>
    public IProgress<WorkProgress>? Progress { get; init; }
}

/// <summary>One shard of an activation cache.</summary>
public sealed class ActivationCacheShard
{
    /// <summary>Shard file name inside the cache folder (<c>shard_00000.safetensors</c>).</summary>
    [JsonPropertyName("file")] public string File { get; set; } = "";
    /// <summary>Activation rows stored in the shard (excluded token positions are not stored).</summary>
    [JsonPropertyName("rows")] public long Rows { get; set; }
    /// <summary>Context windows the shard's rows came from.</summary>
    [JsonPropertyName("contexts")] public long Contexts { get; set; }
}

/// <summary>The <c>manifest.json</c> of an activation cache folder.</summary>
public sealed class ActivationCacheManifest
{
    /// <summary>cfg.json metadata of SAEs trained on this cache: its model, hook, context size, BOS, dataset,
    /// special-token exclusion, window fields (seqpos_slice, disable_concat_sequences, sequence_separator_token) and weight
    /// processing (and, for a transcoder cache, <c>hook_name_out</c> = its target hook).</summary>
    public SaeMetadata ToSaeMetadata()
    {
        var metadata = new SaeMetadata
        {
            ModelName = Model, HookName = Hook, ContextSize = ContextSize, PrependBos = PrependBos,
            DatasetPath = DatasetPath is null ? null : Data.HubDataset.RecordedPath(DatasetPath), ExcludeSpecialTokens = ExcludeTokenIdsListed ? null : ExcludeTokenIds.Length > 0,
            ExcludeTokenIds = ExcludeTokenIdsListed ? ExcludeTokenIds : null,
            ModelFromPretrainedKwargs = SaeMetadata.FromPretrainedKwargs(ModelFromPretrainedKwargs, ModelDtype, ModelRevision),
        };
        metadata.SetWindowFields(Saes.SeqposSlice.FromJson(SeqposSlice, "manifest seqpos_slice"), DisableConcatSequences,
            SequenceSeparatorToken is { } sep ? Data.PretokenizeToken.Parse(sep, "manifest sequence_separator_token") ?? Data.PretokenizeToken.None : null);
        return metadata.WithOutputHook(TargetHook);
    }

    /// <summary>Always <c>saesharp-activation-cache</c>; another value is rejected on read.</summary>
    [JsonPropertyName("format")] public string Format { get; set; } = "saesharp-activation-cache";
    /// <summary>Version of this manifest layout (1).</summary>
    [JsonPropertyName("format_version")] public int FormatVersion { get; set; } = 1;
    /// <summary>The model the activations were harvested from (name or folder).</summary>
    [JsonPropertyName("model")] public string Model { get; set; } = "";
    /// <summary>TransformerLens hook name of the <c>activations</c> tensor, e.g. <c>blocks.3.hook_resid_post</c>.</summary>
    [JsonPropertyName("hook")] public string Hook { get; set; } = "";
    /// <summary>Hook of the <c>targets</c> tensor (in_to_out caches), else null.</summary>
    [JsonPropertyName("target_hook")] public string? TargetHook { get; set; }
    /// <summary>Stored dtype of the shards' tensors: float32, float16 or bfloat16.</summary>
    [JsonPropertyName("dtype")] public string Dtype { get; set; } = "float32";
    /// <summary>Width of the <c>activations</c> tensor.</summary>
    [JsonPropertyName("d_in")] public int DIn { get; set; }
    /// <summary>Width of the <c>targets</c> tensor (equal to <see cref="DIn"/> without targets).</summary>
    [JsonPropertyName("d_out")] public int DOut { get; set; }
    /// <summary>Nominal rows per shard (contexts per shard · positions kept per window); shards with excluded tokens hold fewer.</summary>
    [JsonPropertyName("rows_per_shard")] public long RowsPerShard { get; set; }
    /// <summary>Context windows per shard.</summary>
    [JsonPropertyName("contexts_per_shard")] public int ContextsPerShard { get; set; }
    /// <summary>Rows over all shards.</summary>
    [JsonPropertyName("total_rows")] public long TotalRows { get; set; }
    /// <summary>Context windows over all shards.</summary>
    [JsonPropertyName("total_contexts")] public long TotalContexts { get; set; }
    /// <summary>Tokens per context window (SAELens <c>context_size</c>).</summary>
    [JsonPropertyName("context_size")] public int ContextSize { get; set; }
    /// <summary>SAELens's <c>seqpos_slice</c>: the positions of each window stored, as its JSON list; null (caches written
    /// before it was recorded): all.</summary>
    [JsonPropertyName("seqpos_slice")] public JsonArray? SeqposSlice { get; set; }
    /// <summary>SAELens's <c>disable_concat_sequences</c>: one window per document.</summary>
    [JsonPropertyName("disable_concat_sequences")] public bool DisableConcatSequences { get; set; }
    /// <summary>SAELens's <c>sequence_separator_token</c> between packed documents: "bos", "eos", "sep", an id, or "none";
    /// null (caches written before it was recorded): "bos".</summary>
    [JsonPropertyName("sequence_separator_token")] public string? SequenceSeparatorToken { get; set; }
    /// <summary>Windows per model run (SAELens <c>store_batch_size_prompts</c>).</summary>
    [JsonPropertyName("batch_size_prompts")] public int BatchSizePrompts { get; set; }
    /// <summary>Whether the windows start with BOS (SAELens <c>prepend_bos</c>).</summary>
    [JsonPropertyName("prepend_bos")] public bool PrependBos { get; set; }
    /// <summary>The dataset the windows came from (SAELens <c>dataset_path</c>), if known.</summary>
    [JsonPropertyName("dataset_path")] public string? DatasetPath { get; set; }
    /// <summary>Token ids whose positions were not stored (BOS, EOS, padding).</summary>
    [JsonPropertyName("exclude_token_ids")] public long[] ExcludeTokenIds { get; set; } = [];
    /// <summary>True when <see cref="ExcludeTokenIds"/> is SAELens's exclude_special_tokens given as a list (a trained SAE's
    /// metadata writes the list); false or absent: exclude_special_tokens true (or nothing excluded).</summary>
    [JsonPropertyName("exclude_token_ids_listed")] public bool ExcludeTokenIdsListed { get; set; }
    /// <summary>TransformerLens weight processing applied to the model (<c>fold_ln</c>, <c>center_writing_weights</c>, ...).</summary>
    [JsonPropertyName("model_from_pretrained_kwargs")] public Dictionary<string, bool> ModelFromPretrainedKwargs { get; set; } = new();
    /// <summary>The dtype the model ran in (<c>--dtype</c>), when not float32; null: float32.</summary>
    [JsonPropertyName("model_dtype")] public string? ModelDtype { get; set; }
    /// <summary>The model's hub revision (branch, tag or commit) when not main; null: main (or a local folder).</summary>
    [JsonPropertyName("model_revision")] [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)] public string? ModelRevision { get; set; }
    /// <summary>Context budget the writer was asked for (null: whole dataset).</summary>
    [JsonPropertyName("max_contexts")] public long? MaxContexts { get; set; }
    /// <summary>True when the budget was reached or the dataset ended.</summary>
    [JsonPropertyName("complete")] public bool Complete { get; set; }
    /// <summary>True when the dataset ended before the budget (nothing more can be appended).</summary>
    [JsonPropertyName("dataset_exhausted")] public bool DatasetExhausted { get; set; }
    /// <summary>The shards in row order.</summary>
    [JsonPropertyName("shards")] public List<ActivationCacheShard> Shards { get; set; } = new();

    internal static readonly JsonSerializerOptions Json = new() { WriteIndented = true };

    /// <summary>Reads <c>manifest.json</c> of the cache folder <paramref name="dir"/>; a missing or invalid manifest is a <see cref="SaeSharpException"/>.</summary>
    public static ActivationCacheManifest Read(string dir)
    {
        string path = Path.Combine(dir, ActivationCacheFolder.ManifestName);
        if (!File.Exists(path)) throw new SaeSharpException($"{dir}: not an activation cache (no {ActivationCacheFolder.ManifestName})");
        try
        {
            var m = JsonSerializer.Deserialize<ActivationCacheManifest>(File.ReadAllText(path), Json)
                    ?? throw new SaeSharpException($"{path}: empty manifest");
            if (m.Format != "saesharp-activation-cache") throw new SaeSharpException($"{path}: format '{m.Format}' is not saesharp-activation-cache");
            return m;
        }
        catch (JsonException e)
        {
            throw new SaeSharpException($"{path}: invalid manifest ({e.Message})");
        }
    }

    internal void Save(string dir) =>
        AtomicFile.WriteAllText(Path.Combine(dir, ActivationCacheFolder.ManifestName), JsonSerializer.Serialize(this, Json));
}

/// <summary>
/// An on-disk activation cache (<c>sae cache</c>): shards <c>shard_00000.safetensors</c> holding <c>activations</c>
/// [rows, d_in] (+ <c>targets</c> [rows, d_out] for in_to_out) and <c>token_ids</c> [rows], described by
/// <c>manifest.json</c>. <see cref="Write"/> writes each shard atomically and updates the manifest after it, so an
/// interrupted run resumes at the next shard. As an <see cref="IActivationSource"/> the folder shuffles rows across
/// shards (seeded, exact save/restore) through <see cref="ActivationFileSource"/>.
/// </summary>
public sealed class ActivationCacheFolder : IActivationSource
{
    /// <summary>File name of the manifest inside a cache folder.</summary>
    public const string ManifestName = "manifest.json";
    private readonly ActivationFileSource _source;

    /// <summary>Opens a complete or partial cache; <paramref name="options"/> sets buffer, chunk, seed, loop, row range
    /// (tensor names and widths come from the manifest).</summary>
    public ActivationCacheFolder(string dir, ActivationFileSourceOptions? options = null)
    {
        Directory = dir;
        Manifest = ActivationCacheManifest.Read(dir);
        var files = ShardFiles(dir, Manifest);
        var o = (options ?? new ActivationFileSourceOptions()) with
        {
            InputName = "activations",
            TargetName = Manifest.TargetHook is null ? null : "targets",
            ExpectedDIn = Manifest.DIn,
            ExpectedDOut = Manifest.TargetHook is null ? null : Manifest.DOut,
        };
        _source = new ActivationFileSource(files, o);
    }

    /// <summary>The cache folder.</summary>
    public string Directory { get; }
    /// <summary>The cache's manifest as read when the folder was opened.</summary>
    public ActivationCacheManifest Manifest { get; }
    /// <inheritdoc/>
    public int DIn => _source.DIn;
    /// <inheritdoc/>
    public int DOut => _source.DOut;
    /// <inheritdoc/>
    public long? Rows => _source.Rows;
    /// <inheritdoc/>
    public long RowsDelivered => _source.RowsDelivered;
    /// <inheritdoc/>
    public int MaxDataPasses => _source.MaxDataPasses;
    /// <summary>cfg.json metadata of the cache's rows: its model, hook, context size and dataset (<see cref="ActivationCacheManifest.ToSaeMetadata"/>).</summary>
    public Saes.SaeMetadata? Metadata => Manifest.ToSaeMetadata();
    /// <inheritdoc/>
    public ActivationBatch? Next(int batchSize) => _source.Next(batchSize);
    /// <inheritdoc/>
    public JsonNode SaveState() => _source.SaveState();
    /// <inheritdoc/>
    public void LoadState(JsonNode state) => _source.LoadState(state);
    /// <summary>Closes the shard files.</summary>
    public void Dispose() => _source.Dispose();

    /// <summary>The shards <paramref name="manifest"/> lists in the cache folder <paramref name="dir"/>, in row order, each
    /// checked against it: present, with the rows and width it records (a shard truncated, replaced or lost since the
    /// cache was written is an error naming it). Files the manifest does not list are not part of the cache.</summary>
    public static IReadOnlyList<string> ShardFiles(string dir, ActivationCacheManifest manifest)
    {
        ArgumentNullException.ThrowIfNull(manifest);
        if (manifest.Shards.Count == 0) throw new SaeSharpException($"{dir}: the cache has no shards yet");
        var files = new List<string>();
        foreach (var shard in manifest.Shards)
        {
            var f = Path.Combine(dir, shard.File);
            if (!File.Exists(f)) throw new SaeSharpException($"{f}: shard listed in {ManifestName} is missing");
            using (var rows = ActivationRowFile.Open(f, "activations", null))
            {
                if (rows.Rows != shard.Rows)
                    throw new SaeSharpException($"{f}: holds {rows.Rows} rows, but {ManifestName} records {shard.Rows}; the shard was changed after the cache was written");
                if (rows.InputWidth != manifest.DIn)
                    throw new SaeSharpException($"{f}: activations have width {rows.InputWidth}, but {ManifestName} records d_in {manifest.DIn}");
            }
            files.Add(f);
        }
        return files;
    }

    /// <summary>Shard file name of shard <paramref name="index"/>.</summary>
    public static string ShardName(int index) => $"shard_{index:D5}.safetensors";

    /// <summary>
    /// Harvests <paramref name="spec"/>'s activations of <paramref name="model"/> over <paramref name="windows"/> into
    /// <paramref name="dir"/>. An existing manifest with the same settings is resumed (its windows are skipped);
    /// one with other settings is an error. Returns the final manifest.
    /// </summary>
    public static ActivationCacheManifest Write(string dir, HookedTransformer model, HarvestSpec spec, IEnumerable<long[]> windows,
        ActivationCacheOptions options, Action<ActivationCacheManifest>? onShard = null)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(windows);
        var o = options ?? throw new ArgumentNullException(nameof(options));
        if (o.ContextsPerShard <= 0) throw new SaeSharpException($"contexts per shard must be positive, got {o.ContextsPerShard}");
        if (o.BatchSizePrompts <= 0) throw new SaeSharpException($"batch size in prompts must be positive, got {o.BatchSizePrompts}");
        if (o.MaxTokens is <= 0) throw new SaeSharpException($"token budget must be positive, got {o.MaxTokens}");
        if (o.Dtype is not (ScalarType.Float32 or ScalarType.Float16 or ScalarType.BFloat16))
            throw new SaeSharpException($"cache dtype must be float32, float16 or bfloat16, got {o.Dtype}");
        var harvester = new ModelActivationHarvester(model, spec, o.ContextSize, o.ExcludeTokenIds, o.ModelHooks, o.SeqposSlice);
        int positions = harvester.TrainingContextSize;
        long? maxContexts = o.MaxTokens is long n ? (n + positions - 1) / positions : null;

        var fresh = new ActivationCacheManifest
        {
            Model = model.Config.ModelName, Hook = spec.InputHook, TargetHook = spec.TargetHook,
            Dtype = o.Dtype switch { ScalarType.Float16 => "float16", ScalarType.BFloat16 => "bfloat16", _ => "float32" }, DIn = harvester.DIn, DOut = harvester.DOut,
            ContextsPerShard = o.ContextsPerShard, RowsPerShard = (long)o.ContextsPerShard * positions,
            ContextSize = o.ContextSize, SeqposSlice = (o.SeqposSlice ?? Saes.SeqposSlice.All).ToJson(), DisableConcatSequences = o.DisableConcatSequences,
            SequenceSeparatorToken = o.SequenceSeparatorToken.ToString(), BatchSizePrompts = o.BatchSizePrompts, PrependBos = o.PrependBos, DatasetPath = o.DatasetPath,
            ExcludeTokenIds = (o.ExcludeTokenIds ?? []).Distinct().Order().ToArray(), ExcludeTokenIdsListed = o.ExcludeTokenIdsListed,
            ModelFromPretrainedKwargs = o.ModelFromPretrainedKwargs?.ToDictionary(kv => kv.Key, kv => kv.Value) ?? new(),
            ModelDtype = model.Config.Dtype == ScalarType.Float32 ? null : SaeConfig.DtypeName(model.Config.Dtype),
            ModelRevision = o.ModelRevision,
            MaxContexts = maxContexts,
        };
        var m = fresh;
        // A run killed while writing a shard leaves its temporary file: not a reason to refuse the folder, nor to keep it.
        AtomicFile.RemoveAbandonedTemporaries(dir);
        if (File.Exists(Path.Combine(dir, ManifestName)))
        {
            m = ActivationCacheManifest.Read(dir);
            CheckSameSettings(dir, m, fresh);
            m.MaxContexts = maxContexts;
            // The same ids given the other way (a list, or exclude_special_tokens true): the rows are the same, and an SAE
            // trained on the cache records them the way this run gave them.
            m.ExcludeTokenIdsListed = fresh.ExcludeTokenIdsListed;
            if (m.DatasetExhausted || (maxContexts is not null && m.TotalContexts >= maxContexts))
            {
                m.Complete = true;
                m.Save(dir);
                return m;
            }
            m.Complete = false;
        }
        else
        {
            if (System.IO.Directory.Exists(dir) && System.IO.Directory.EnumerateFileSystemEntries(dir).Any())
                throw new SaeSharpException($"{dir}: folder is not empty and has no {ManifestName}; choose an empty or new folder");
            System.IO.Directory.CreateDirectory(dir);
        }

        using var e = windows.GetEnumerator();
        for (long i = 0; i < m.TotalContexts; i++)
            if (!e.MoveNext())
                throw new SaeSharpException($"{dir}: the manifest records {m.TotalContexts} contexts but the dataset yields only {i}; it is not the dataset the cache was started with");

        bool ended = false;
        var progress = new ProgressCounter(o.Progress, "tokens", maxContexts * positions);
        while (!ended && (maxContexts is null || m.TotalContexts < maxContexts))
        {
            long want = o.ContextsPerShard;
            if (maxContexts is long mc) want = Math.Min(want, mc - m.TotalContexts);
            var parts = new List<HarvestedRows>();
            long contexts = 0;
            try
            {
                while (contexts < want && !ended)
                {
                    var group = new List<long[]>();
                    while (group.Count < o.BatchSizePrompts && contexts + group.Count < want)
                    {
                        if (!e.MoveNext()) { ended = true; break; }
                        group.Add(e.Current);
                    }
                    if (group.Count == 0) break;
                    parts.Add(harvester.Harvest(group, m.TotalContexts + contexts));
                    contexts += group.Count;
                    progress.Add((long)group.Count * positions);
                }
                if (contexts == 0) break;
                WriteShard(dir, m, parts, contexts, o.Dtype);
            }
            finally
            {
                foreach (var p in parts) p.Dispose();
            }
            onShard?.Invoke(m);
        }
        if (m.Shards.Count == 0)
            throw new SaeSharpException($"{dir}: the dataset gave no context window of {o.ContextSize} tokens (it is empty, " +
                                        (o.DisableConcatSequences
                                            ? "or, with disable_concat_sequences, every document is shorter than a window and dropped); nothing was written"
                                            : "holds only whitespace, or has fewer tokens than one window); nothing was written"));
        m.Complete = true;
        m.DatasetExhausted = ended;
        m.Save(dir);
        return m;
    }

    private static void WriteShard(string dir, ActivationCacheManifest m, List<HarvestedRows> parts, long contexts, ScalarType dtype)
    {
        using var scope = NewDisposeScope();
        var input = cat(parts.Select(p => p.Input).ToList(), 0).to(dtype);
        var tokens = cat(parts.Select(p => p.TokenIds).ToList(), 0);
        var tensors = new List<KeyValuePair<string, Tensor>> { new("activations", input) };
        if (m.TargetHook is not null) tensors.Add(new("targets", cat(parts.Select(p => p.Target!).ToList(), 0).to(dtype)));
        tensors.Add(new("token_ids", tokens));
        string name = ShardName(m.Shards.Count);
        SafeTensors.Save(Path.Combine(dir, name), tensors, new Dictionary<string, string>
        {
            ["hook"] = m.Hook, ["model"] = m.Model, ["first_context"] = m.TotalContexts.ToString(System.Globalization.CultureInfo.InvariantCulture),
        });
        long rows = input.shape[0];
        m.Shards.Add(new ActivationCacheShard { File = name, Rows = rows, Contexts = contexts });
        m.TotalRows += rows;
        m.TotalContexts += contexts;
        m.Save(dir);
    }

    private static void CheckSameSettings(string dir, ActivationCacheManifest old, ActivationCacheManifest now)
    {
        void Same<T>(string key, T a, T b)
        {
            if (!EqualityComparer<T>.Default.Equals(a, b))
                throw new SaeSharpException($"{dir}: existing cache has {key} = {a?.ToString() ?? "null"}, this run asks for {b?.ToString() ?? "null"}; use another folder to write a different cache");
        }
        Same("model", old.Model, now.Model);
        Same("hook", old.Hook, now.Hook);
        Same("target_hook", old.TargetHook, now.TargetHook);
        Same("dtype", old.Dtype, now.Dtype);
        Same("context_size", old.ContextSize, now.ContextSize);
        Same("contexts_per_shard", old.ContextsPerShard, now.ContextsPerShard);
        Same("seqpos_slice", (old.SeqposSlice ?? Saes.SeqposSlice.All.ToJson()).ToJsonString(), now.SeqposSlice!.ToJsonString());
        Same("disable_concat_sequences", old.DisableConcatSequences, now.DisableConcatSequences);
        Same("sequence_separator_token", old.SequenceSeparatorToken ?? "bos", now.SequenceSeparatorToken);
        Same("prepend_bos", old.PrependBos, now.PrependBos);
        Same("dataset_path", old.DatasetPath, now.DatasetPath);
        Same("exclude_token_ids", string.Join(",", old.ExcludeTokenIds), string.Join(",", now.ExcludeTokenIds));
        Same("model_from_pretrained_kwargs", string.Join(",", old.ModelFromPretrainedKwargs.OrderBy(k => k.Key)), string.Join(",", now.ModelFromPretrainedKwargs.OrderBy(k => k.Key)));
        Same("model_dtype", old.ModelDtype ?? "float32", now.ModelDtype ?? "float32");
        Same("model_revision", old.ModelRevision ?? "main", now.ModelRevision ?? "main");
    }
}
