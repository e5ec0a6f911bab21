using System.Globalization;
using System.Runtime.InteropServices;
using System.Security.Cryptography;
using System.Text.Json;
using System.Text.Json.Nodes;
using Apache.Arrow;
using Apache.Arrow.Ipc;
using Apache.Arrow.Types;
using SaeSharp.Saes;
using SaeSharp.Data;
using SaeSharp.IO;
using SaeSharp.Models;
using static TorchSharp.torch;
using Field = Apache.Arrow.Field;

namespace SaeSharp.Activations;

/// <summary>An activation column of a SAELens cache: <c>datasets</c>' <c>Array2D(shape=(context_size, d_in), dtype)</c>
/// named after its hook.</summary>
public sealed record SaeLensCacheColumn(string Name, int ContextSize, int DIn, string Dtype)
{
    /// <summary>Bytes of one stored value (4 for float32, 2 for float16, 8 for float64).</summary>
    public int ItemSize => Dtype switch { "float16" => 2, "float64" => 8, _ => 4 };
}

/// <summary>
/// SAELens's activation cache (<c>CacheActivationsRunner</c>, read back with <c>use_cached_activations</c>): a
/// <c>datasets</c> <c>save_to_disk</c> folder whose rows are context windows, one <c>Array2D(shape=(context_size, d_in))</c>
/// column per hook and a <c>token_ids</c> column (<c>Sequence(Value("int32"), length=context_size)</c>). Each window is
/// <c>context_size</c> activation rows, in dataset order. The Arrow storage of an Array2D value is
/// <c>list&lt;list&lt;T&gt;&gt;</c> (variable-size lists in every <c>datasets</c> version), the field tagged with the
/// extension type <see cref="Array2DExtensionName"/>.
/// </summary>
public sealed class SaeLensActivationCache
{
    /// <summary>The runner config SAELens uploads beside a cache pushed to the hub (<c>asdict(cfg)</c>).</summary>
    public const string ConfigFile = "cache_activations_runner_cfg.json";
    /// <summary>The token id column.</summary>
    public const string TokenIdsColumn = "token_ids";
    /// <summary><c>ARROW:extension:name</c> of an Array2D field (<c>datasets.features.features.Array2DExtensionType</c>).</summary>
    public const string Array2DExtensionName = "datasets.features.features.Array2DExtensionType";
    /// <summary>The value types datasets' Array2D takes that SaeSharp reads (pyarrow has no bfloat16, so datasets cannot
    /// store SAELens's <c>dtype="bfloat16"</c>).</summary>
    public static readonly IReadOnlyList<string> Dtypes = ["float32", "float16", "float64"];

    private SaeLensActivationCache(string dir, IReadOnlyList<SaeLensCacheColumn> columns, bool hasTokenIds, JsonObject? config)
    {
        Directory = dir;
        Columns = columns;
        HasTokenIds = hasTokenIds;
        Config = config;
    }

    /// <summary>The cache folder.</summary>
    public string Directory { get; }
    /// <summary>The activation columns, in dataset_info.json's order.</summary>
    public IReadOnlyList<SaeLensCacheColumn> Columns { get; }
    /// <summary>True when the cache has the <c>token_ids</c> column.</summary>
    public bool HasTokenIds { get; }
    /// <summary><see cref="ConfigFile"/>, when the folder has one (a cache downloaded from the hub), else null.</summary>
    public JsonObject? Config { get; }

    /// <summary>The config's <c>model_name</c>, if known.</summary>
    public string? ModelName => Config?["model_name"] is JsonValue v && v.TryGetValue(out string? s) ? s : null;
    /// <summary>The config's <c>dataset_path</c>, if known.</summary>
    public string? DatasetPath => Config?["dataset_path"] is JsonValue v && v.TryGetValue(out string? s) ? s : null;
    /// <summary>The config's <c>model_from_pretrained_kwargs</c> that are flags (<c>fold_ln</c>, ...); empty when unknown.</summary>
    public Dictionary<string, bool> ModelFromPretrainedKwargs =>
        (Config?["model_from_pretrained_kwargs"] as JsonObject ?? [])
            .Where(kv => kv.Value?.GetValueKind() is JsonValueKind.True or JsonValueKind.False)
            .ToDictionary(kv => kv.Key, kv => kv.Value!.GetValue<bool>());
    /// <summary>The model's dtype in the config's <c>model_from_pretrained_kwargs</c> (TransformerLens's <c>dtype</c>), if any.</summary>
    public string? ModelDtype => Config?["model_from_pretrained_kwargs"]?["dtype"] is JsonValue v && v.TryGetValue(out string? s) ? s : null;
    /// <summary>The model's hub revision in the config's <c>model_from_pretrained_kwargs</c> (<c>revision</c>), if any.</summary>
    public string? ModelRevision => Config?["model_from_pretrained_kwargs"]?[SaeMetadata.RevisionKey] is JsonValue v && v.TryGetValue(out string? s) ? s : null;
    /// <summary>The config's <c>seqpos_slice</c>: the positions of each <c>context_size</c> window the cache holds
    /// (<see cref="Saes.SeqposSlice.All"/> when unknown).</summary>
    public Saes.SeqposSlice SeqposSlice => Saes.SeqposSlice.FromJson(Config?["seqpos_slice"], $"{Path.Combine(Directory, ConfigFile)} seqpos_slice");
    /// <summary>The config's <c>context_size</c> (the windows before <see cref="SeqposSlice"/>), if known.</summary>
    public int? ContextSize => Config?["context_size"] is JsonValue v && v.TryGetValue(out int n) ? n : null;
    /// <summary>The config's <c>prepend_bos</c> (SAELens's default true when unknown).</summary>
    public bool PrependBos => Config?["prepend_bos"] is not JsonValue v || !v.TryGetValue(out bool b) || b;

    /// <summary>True when <paramref name="dir"/> is a <c>datasets</c> folder (state.json and dataset_info.json).</summary>
    public static bool IsCache(string dir) =>
        HfDiskDataset.IsSavedDataset(dir) && File.Exists(Path.Combine(dir, HfDiskDataset.InfoFile));

    /// <summary>Reads dataset_info.json's features (and <see cref="ConfigFile"/> when present); a folder with no Array2D
    /// column is an error naming its features.</summary>
    public static SaeLensActivationCache Open(string dir)
    {
        string infoPath = Path.Combine(dir, HfDiskDataset.InfoFile);
        if (!File.Exists(infoPath)) throw new SaeSharpException($"{dir}: no {HfDiskDataset.InfoFile}: not a datasets save_to_disk folder");
        var features = ReadJson(infoPath)["features"] as JsonObject
                       ?? throw new SaeSharpException($"{infoPath}: no 'features' object");
        var columns = new List<SaeLensCacheColumn>();
        foreach (var (name, node) in features)
        {
            if (node is not JsonObject f || f["_type"]?.GetValueKind() != JsonValueKind.String || f["_type"]!.GetValue<string>() != "Array2D") continue;
            string dtype = f["dtype"] is JsonValue d && d.TryGetValue(out string? ds) ? ds : "";
            if (f["shape"] is not JsonArray { Count: 2 } shape || !TryInt(shape[0], out int ctx) || !TryInt(shape[1], out int dIn) || ctx <= 0 || dIn <= 0)
                throw new SaeSharpException($"{infoPath}: feature '{name}' has shape {f["shape"]?.ToJsonString() ?? "null"}; expected [context_size, d_in], both positive");
            if (!Dtypes.Contains(dtype))
                throw new SaeSharpException($"{infoPath}: feature '{name}' has dtype '{dtype}'; SaeSharp reads Array2D of {string.Join(", ", Dtypes)}");
            columns.Add(new SaeLensCacheColumn(name, ctx, dIn, dtype));
        }
        if (columns.Count == 0)
            throw new SaeSharpException($"{infoPath}: no Array2D activation column (features: {string.Join(", ", features.Select(kv => kv.Key))}); " +
                                        "a SAELens activation cache (CacheActivationsRunner) has one per hook");
        string cfgPath = Path.Combine(dir, ConfigFile);
        var config = File.Exists(cfgPath) ? ReadJson(cfgPath) : null;
        return new SaeLensActivationCache(dir, columns, features.ContainsKey(TokenIdsColumn), config);
    }

    /// <summary>The column of <paramref name="hook"/>; null: the only activation column (several are an error listing them).</summary>
    public SaeLensCacheColumn Column(string? hook)
    {
        if (hook is not null)
            return Columns.FirstOrDefault(c => c.Name == hook)
                   ?? throw new SaeSharpException($"{Directory}: no activations of hook '{hook}' (columns: {string.Join(", ", Columns.Select(c => c.Name))})");
        if (Columns.Count > 1)
            throw new SaeSharpException($"{Directory}: holds the activations of {Columns.Count} hooks ({string.Join(", ", Columns.Select(c => c.Name))}); name one with hook_name");
        return Columns[0];
    }

    /// <summary>The shard files in state.json's order.</summary>
    public IReadOnlyList<string> DataFiles() => HfDiskDataset.DataFiles(Directory);

    private static JsonObject ReadJson(string path)
    {
        try
        {
            return JsonNode.Parse(File.ReadAllText(path)) as JsonObject ?? throw new SaeSharpException($"{path}: not a JSON object");
        }
        catch (JsonException e)
        {
            throw new SaeSharpException($"{path}: invalid JSON ({e.Message})", e);
        }
    }

    private static bool TryInt(JsonNode? n, out int value)
    {
        value = 0;
        return n is JsonValue v && v.TryGetValue(out value);
    }

    /// <summary>
    /// Harvests <paramref name="spec"/>'s activations of <paramref name="model"/> over <paramref name="windows"/> into the
    /// empty or new folder <paramref name="dir"/> as SAELens's <c>CacheActivationsRunner.run</c> lays them out: one shard
    /// per buffer of <see cref="WindowsPerShard"/> windows, written to <c>.tmp_shards/</c> and moved to
    /// <c>data-NNNNN-of-NNNNN.arrow</c> once all are written, then dataset_info.json, <see cref="ConfigFile"/> and, last,
    /// state.json (what makes the folder loadable). The windows are ⌈max tokens / context size⌉ (all without a budget),
    /// in order, as <see cref="ActivationCacheFolder.Write"/> harvests them.
    /// </summary>
    public static SaeLensActivationCache Write(string dir, HookedTransformer model, HarvestSpec spec, IEnumerable<long[]> windows, SaeLensCacheOptions options)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(spec);
        ArgumentNullException.ThrowIfNull(windows);
        var o = options ?? throw new ArgumentNullException(nameof(options));
        if (spec.TargetHook is not null)
            throw new SaeSharpException($"a SAELens activation cache holds one hook's activations; the target hook '{spec.TargetHook}' (in_to_out) needs the SaeSharp cache format");
        if (model.HookPoints.ExpertRouting(spec.InputHook) is not null)
            throw new SaeSharpException($"'{spec.InputHook}' is an expert's hook: only the tokens routed to the expert are rows, a different number " +
                                        "in each window, and a SAELens activation cache stores whole windows ([context_size, d_in] each); use the SaeSharp cache format");
        if (o.Dtype is not (ScalarType.Float32 or ScalarType.Float16))
            throw new SaeSharpException($"a SAELens activation cache stores float32 or float16 (datasets' Array2D has no bfloat16: pyarrow has no such type), got {o.Dtype}");
        if (o.BatchSizePrompts <= 0) throw new SaeSharpException($"batch size in prompts must be positive, got {o.BatchSizePrompts}");
        if (o.MaxTokens is <= 0) throw new SaeSharpException($"token budget must be positive, got {o.MaxTokens}");
        RefuseNonEmpty(dir);
        var slice = o.SeqposSlice ?? Saes.SeqposSlice.All;
        // As CacheActivationsRunner: each row holds the positions seqpos_slice keeps of a window (its sliced context size).
        int kept = slice.Positions(o.ContextSize).Length;
        var harvester = new ModelActivationHarvester(model, spec, o.ContextSize, null, o.ModelHooks, slice.IsAll ? null : slice);
        var column = new SaeLensCacheColumn(spec.InputHook, kept, harvester.DIn, o.Dtype == ScalarType.Float16 ? "float16" : "float32");
        long perShard = WindowsPerShard(o.BufferSizeGb, column, o.BatchSizePrompts);
        long? maxWindows = o.MaxTokens is long n ? (n + kept - 1) / kept : null;
        var progress = new ProgressCounter(o.Progress, "tokens", maxWindows * kept);

        IEnumerable<(Tensor Window, long[] Tokens)> Harvest()
        {
            using var e = windows.GetEnumerator();
            long total = 0;
            bool ended = false;
            while (!ended && (maxWindows is null || total < maxWindows))
            {
                var group = new List<long[]>();
                while (group.Count < o.BatchSizePrompts && (maxWindows is null || total + group.Count < maxWindows))
                {
                    if (!e.MoveNext()) { ended = true; break; }
                    group.Add(e.Current);
                }
                if (group.Count == 0) yield break;
                using var rows = harvester.Harvest(group, total);
                using var acts = rows.Input.to(o.Dtype).contiguous();
                var tokens = rows.TokenIds.data<long>().ToArray();
                for (int w = 0; w < group.Count; w++)
                    yield return (acts.narrow(0, (long)w * kept, kept), tokens[(w * kept)..((w + 1) * kept)]);
                total += group.Count;
                progress.Add((long)group.Count * kept);
            }
        }

        WriteFolder(dir, column, perShard, Harvest(), written => RunnerConfig(dir, model, column, o, written));
        return Open(dir);
    }

    private static void RefuseNonEmpty(string dir)
    {
        if (System.IO.Directory.Exists(dir) && System.IO.Directory.EnumerateFileSystemEntries(dir).Any())
            throw new SaeSharpException($"{dir}: folder is not empty (an interrupted run leaves .tmp_shards); a SAELens activation cache is written to an empty or new folder, as CacheActivationsRunner requires");
    }

    /// <summary>Writes <paramref name="windows"/> (each [context_size, d_in] in the column's dtype, disposed here, and its
    /// token ids) into the empty or new folder <paramref name="dir"/> in shards of <paramref name="windowsPerShard"/>
    /// windows, then dataset_info.json, the config of <paramref name="config"/> (given the windows written) when not null,
    /// and state.json. Returns the windows written.</summary>
    internal static long WriteFolder(string dir, SaeLensCacheColumn column, long windowsPerShard, IEnumerable<(Tensor Window, long[] Tokens)> windows,
        Func<long, JsonObject>? config)
    {
        ArgumentNullException.ThrowIfNull(column);
        ArgumentNullException.ThrowIfNull(windows);
        if (windowsPerShard <= 0) throw new SaeSharpException($"windows per shard must be positive, got {windowsPerShard}");
        RefuseNonEmpty(dir);
        System.IO.Directory.CreateDirectory(dir);
        string tmp = Path.Combine(dir, ".tmp_shards");
        System.IO.Directory.CreateDirectory(tmp);
        var shards = new List<string>();
        using var hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        long total = 0;
        ShardWriter? shard = null;
        try
        {
            foreach (var (window, tokens) in windows)
            {
                using (window)
                {
                    if (window.shape.Length != 2 || window.shape[0] != column.ContextSize || window.shape[1] != column.DIn || tokens.Length != column.ContextSize)
                        throw new SaeSharpException($"a window of [{string.Join(", ", window.shape)}] activations and {tokens.Length} tokens does not match the column's [{column.ContextSize}, {column.DIn}]");
                    if (shard is null)
                    {
                        string file = Path.Combine(tmp, $"shard_{shards.Count:D5}.arrow");
                        shards.Add(file);
                        shard = new ShardWriter(file, column, hash);
                    }
                    shard.Add(window, tokens);
                }
                total++;
                if (shard.Windows == windowsPerShard)
                {
                    shard.Dispose();
                    shard = null;
                }
            }
            shard?.Dispose();
            shard = null;
        }
        catch
        {
            shard?.Abandon();
            throw;
        }
        if (total == 0)
            throw new SaeSharpException($"{dir}: the dataset gave no context window of {column.ContextSize} tokens (it is empty, holds only whitespace, " +
                                        "or has fewer tokens than one window); nothing was written");

        var names = HfDiskDataset.ShardNames(shards.Count);
        for (int i = 0; i < shards.Count; i++) File.Move(shards[i], Path.Combine(dir, names[i]));
        System.IO.Directory.Delete(tmp);
        AtomicFile.WriteAllText(Path.Combine(dir, HfDiskDataset.InfoFile), new JsonObject
        {
            ["citation"] = "", ["description"] = "", ["features"] = Features(column), ["homepage"] = "", ["license"] = "",
        }.ToJsonString(Indented));
        if (config is not null) AtomicFile.WriteAllText(Path.Combine(dir, ConfigFile), config(total).ToJsonString(Indented));
        AtomicFile.WriteAllText(Path.Combine(dir, HfDiskDataset.StateFile), new JsonObject
        {
            ["_data_files"] = new JsonArray(names.Select(f => (JsonNode)new JsonObject { ["filename"] = f }).ToArray()),
            ["_fingerprint"] = Convert.ToHexStringLower(hash.GetHashAndReset())[..16],
            ["_format_columns"] = null,
            ["_format_kwargs"] = new JsonObject(),
            ["_format_type"] = null,
            ["_output_all_columns"] = false,
            ["_split"] = null,
        }.ToJsonString(Indented));
        return total;
    }

    /// <summary>Windows per shard, SAELens's <c>n_seq_in_buffer</c>: <c>buffer_size_gb</c>·10⁹ bytes of activations
    /// (d_in · item size per token), rounded down to whole model batches (<c>model_batch_size</c> windows).</summary>
    public static long WindowsPerShard(double bufferSizeGb, SaeLensCacheColumn column, int batchSizePrompts)
    {
        ArgumentNullException.ThrowIfNull(column);
        long tokensPerBuffer = (long)(bufferSizeGb * 1e9) / ((long)column.DIn * column.ItemSize);
        long batchTokens = (long)batchSizePrompts * column.ContextSize;
        long tokens = tokensPerBuffer - tokensPerBuffer % batchTokens;
        if (!(bufferSizeGb > 0) || tokens <= 0)
            throw new SaeSharpException($"buffer_size_gb {bufferSizeGb.ToString("R", CultureInfo.InvariantCulture)} holds no model batch of {batchSizePrompts} windows × " +
                                        $"{column.ContextSize} tokens × d_in {column.DIn} × {column.ItemSize} bytes; give more");
        return tokens / column.ContextSize;
    }

    /// <summary>dataset_info.json's features as <c>asdict</c> gives them (the token column in datasets 3's
    /// <c>"Sequence"</c> form, which datasets 4 and 5 read as a List).</summary>
    private static JsonObject Features(SaeLensCacheColumn c) => new()
    {
        [c.Name] = new JsonObject { ["shape"] = new JsonArray(c.ContextSize, c.DIn), ["dtype"] = c.Dtype, ["_type"] = "Array2D" },
        [TokenIdsColumn] = new JsonObject
        {
            ["feature"] = new JsonObject { ["dtype"] = "int32", ["_type"] = "Value" }, ["length"] = c.ContextSize, ["_type"] = "Sequence",
        },
    };

    /// <summary><see cref="ConfigFile"/>: SAELens's <c>asdict(CacheActivationsRunnerConfig)</c> for this run.</summary>
    private static JsonObject RunnerConfig(string dir, HookedTransformer model, SaeLensCacheColumn c, SaeLensCacheOptions o, long windows) => new()
    {
        ["dataset_path"] = o.DatasetPath,
        ["model_name"] = model.Config.ModelName,
        ["model_batch_size"] = o.BatchSizePrompts,
        ["hook_name"] = c.Name,
        ["d_in"] = c.DIn,
        ["training_tokens"] = windows * c.ContextSize,
        ["context_size"] = o.ContextSize,
        ["model_class_name"] = "HookedTransformer",
        ["new_cached_activations_path"] = dir,
        ["shuffle"] = false,
        ["seed"] = 42,
        ["dtype"] = c.Dtype,
        ["device"] = "cpu",
        ["buffer_size_gb"] = o.BufferSizeGb,
        ["hf_repo_id"] = null,
        ["hf_num_shards"] = null,
        ["hf_revision"] = "main",
        ["hf_is_private_repo"] = false,
        ["model_kwargs"] = new JsonObject(),
        ["model_from_pretrained_kwargs"] = new JsonObject((o.ModelFromPretrainedKwargs ?? new Dictionary<string, bool>())
            .Select(kv => KeyValuePair.Create(kv.Key, (JsonNode?)JsonValue.Create(kv.Value)))
            .Concat(model.Config.Dtype == ScalarType.Float32 ? []
                : [KeyValuePair.Create("dtype", (JsonNode?)JsonValue.Create(SaeConfig.DtypeName(model.Config.Dtype)))])
            .Concat(o.ModelRevision is null ? [] : [KeyValuePair.Create(SaeMetadata.RevisionKey, (JsonNode?)JsonValue.Create(o.ModelRevision))])),
        ["compile_llm"] = false,
        ["llm_compilation_mode"] = null,
        ["prepend_bos"] = o.PrependBos,
        ["seqpos_slice"] = (o.SeqposSlice ?? Saes.SeqposSlice.All).ToJson(),
        ["streaming"] = true,
        ["autocast_lm"] = false,
        ["dataset_trust_remote_code"] = null,
    };

    private static readonly JsonSerializerOptions Indented = new() { WriteIndented = true };

    /// <summary>Python's <c>json.dumps</c> of a JSON value (its <c>", "</c> and <c>": "</c> separators).</summary>
    internal static string PythonJson(JsonNode? node) => node switch
    {
        JsonObject o => "{" + string.Join(", ", o.Select(kv => JsonSerializer.Serialize(kv.Key) + ": " + PythonJson(kv.Value))) + "}",
        JsonArray a => "[" + string.Join(", ", a.Select(PythonJson)) + "]",
        null => "null",
        _ => node.ToJsonString(),
    };

    /// <summary>One shard: an Arrow IPC stream with the schema <c>datasets</c>' ArrowWriter gives the features (the hook
    /// column <c>list&lt;list&lt;T&gt;&gt;</c> tagged as Array2D, <c>token_ids</c> <c>fixed_size_list&lt;int32&gt;[context_size]</c>,
    /// the <c>huggingface</c> schema metadata) and record batches of up to 1,000 windows (<c>DEFAULT_MAX_BATCH_SIZE</c>).</summary>
    private sealed class ShardWriter : IDisposable
    {
        private readonly string _path;
        private readonly SaeLensCacheColumn _column;
        private readonly IncrementalHash _hash;
        private readonly FileStream _file;
        private readonly ArrowStreamWriter _writer;
        private readonly Schema _schema;
        private readonly ListType _outer, _inner;
        private readonly FixedSizeListType _tokens;
        private readonly int _batchWindows;
        private readonly MemoryStream _values = new();
        private readonly List<int> _tokenIds = [];
        private int _pending;
        private bool _done;

        public ShardWriter(string path, SaeLensCacheColumn column, IncrementalHash hash)
        {
            _path = path;
            _column = column;
            _hash = hash;
            IArrowType leaf = column.Dtype == "float16" ? HalfFloatType.Default : FloatType.Default;
            _inner = new ListType(new Field("item", leaf, true));
            _outer = new ListType(new Field("item", _inner, true));
            _tokens = new FixedSizeListType(new Field("item", Int32Type.Default, true), column.ContextSize);
            var extension = new Dictionary<string, string>
            {
                ["ARROW:extension:name"] = Array2DExtensionName,
                ["ARROW:extension:metadata"] = PythonJson(new JsonArray(new JsonArray(column.ContextSize, column.DIn), column.Dtype)),
            };
            _schema = new Schema.Builder()
                .Field(new Field(column.Name, _outer, true, extension))
                .Field(new Field(TokenIdsColumn, _tokens, true))
                .Metadata("huggingface", PythonJson(new JsonObject { ["info"] = new JsonObject { ["features"] = Features(column) } }))
                .Build();
            // A record batch's values stay below 2 GiB (one managed buffer) and its inner offsets within int32.
            long windowBytes = (long)column.ContextSize * column.DIn * column.ItemSize;
            _batchWindows = (int)Math.Clamp(Math.Min(System.Array.MaxLength / windowBytes, int.MaxValue / ((long)column.ContextSize * column.DIn)), 1, HfDiskDataset.RecordBatchRows);
            _file = new FileStream(path, FileMode.CreateNew, FileAccess.Write, FileShare.None, 1 << 20);
            _writer = new ArrowStreamWriter(_file, _schema, leaveOpen: true);
        }

        public long Windows { get; private set; }

        /// <summary>Appends one window: activations [context_size, d_in] (contiguous, the column's dtype) and its tokens.</summary>
        public void Add(Tensor window, long[] tokens)
        {
            NativeBytes.Visit(window, span =>
            {
                _values.Write(span);
                _hash.AppendData(span);
            });
            foreach (long t in tokens) _tokenIds.Add(checked((int)t));
            _pending++;
            Windows++;
            if (_pending == _batchWindows) Flush();
        }

        private void Flush()
        {
            if (_pending == 0) return;
            int n = _pending, rows = n * _column.ContextSize;
            // The pending bytes as they are (no copy); the buffer is reused only after the batch is written.
            var values = new ArrowBuffer(new ReadOnlyMemory<byte>(_values.GetBuffer(), 0, checked((int)_values.Length)));
            IArrowArray leaf = _column.Dtype == "float16"
                ? new HalfFloatArray(values, ArrowBuffer.Empty, rows * _column.DIn, 0, 0)
                : new FloatArray(values, ArrowBuffer.Empty, rows * _column.DIn, 0, 0);
            var inner = new ListArray(_inner, rows, Offsets(rows, _column.DIn), leaf, ArrowBuffer.Empty, 0, 0);
            var outer = new ListArray(_outer, n, Offsets(n, _column.ContextSize), inner, ArrowBuffer.Empty, 0, 0);
            var ids = new Int32Array(new ArrowBuffer(MemoryMarshal.AsBytes(CollectionsMarshal.AsSpan(_tokenIds)).ToArray()), ArrowBuffer.Empty, rows, 0, 0);
            var tokens = new FixedSizeListArray(new ArrayData(_tokens, n, 0, 0, [ArrowBuffer.Empty], [ids.Data]));
            using (var batch = new RecordBatch(_schema, [outer, tokens], n)) _writer.WriteRecordBatch(batch);
            _values.SetLength(0);
            _tokenIds.Clear();
            _pending = 0;
        }

        private static ArrowBuffer Offsets(int count, int step)
        {
            var offsets = new int[count + 1];
            for (int i = 0; i <= count; i++) offsets[i] = i * step;
            return new ArrowBuffer(MemoryMarshal.AsBytes(offsets.AsSpan()).ToArray());
        }

        /// <summary>Writes the pending windows and the end-of-stream marker and closes the file.</summary>
        public void Dispose()
        {
            if (_done) return;
            _done = true;
            try
            {
                Flush();
                _writer.WriteEnd();
                _file.Flush(flushToDisk: true);
            }
            finally
            {
                _writer.Dispose();
                _file.Dispose();
            }
        }

        /// <summary>Closes the file of a failed run without finishing it.</summary>
        public void Abandon()
        {
            if (_done) return;
            _done = true;
            _writer.Dispose();
            _file.Dispose();
            File.Delete(_path);
        }
    }
}

/// <summary>Settings of <see cref="SaeLensActivationCache.Write"/> (<c>sae cache --format saelens</c>), named after
/// SAELens's <c>CacheActivationsRunnerConfig</c>.</summary>
public sealed record SaeLensCacheOptions
{
    /// <summary><c>context_size</c>: tokens per window.</summary>
    public required int ContextSize { get; init; }
    /// <summary><c>model_batch_size</c>: windows per model run; a shard holds whole batches.</summary>
    public int BatchSizePrompts { get; init; } = 8;
    /// <summary><c>training_tokens</c>: ⌈N / context size⌉ windows are harvested (null: the whole dataset).</summary>
    public long? MaxTokens { get; init; }
    /// <summary><c>buffer_size_gb</c>: activation bytes per shard (SAELens's default 2 GB).</summary>
    public double BufferSizeGb { get; init; } = 2.0;
    /// <summary><c>dtype</c>: float32 or float16.</summary>
    public ScalarType Dtype { get; init; } = ScalarType.Float32;
    /// <summary><c>dataset_path</c>, recorded in the config.</summary>
    public string? DatasetPath { get; init; }
    /// <summary><c>prepend_bos</c>, recorded in the config.</summary>
    public bool PrependBos { get; init; } = true;
    /// <summary>SAELens's <c>seqpos_slice</c>: the positions of each window stored (null: all).</summary>
    public Saes.SeqposSlice? SeqposSlice { get; init; }
    /// <summary><c>model_from_pretrained_kwargs</c>: weight processing applied to the model, recorded in the config.</summary>
    public IReadOnlyDictionary<string, bool>? ModelFromPretrainedKwargs { get; init; }
    /// <summary>The model's hub revision when not main, recorded in the config's <c>model_from_pretrained_kwargs</c>.</summary>
    public string? ModelRevision { get; init; }
    /// <summary>Hooks applied on every model run (<see cref="ProcessedModel.Hooks"/>).</summary>
    public IReadOnlyList<(string Name, Func<Tensor, Tensor?> Fn)>? ModelHooks { get; init; }
    /// <summary>Tokens harvested, after each model batch.</summary>
    public IProgress<WorkProgress>? Progress { get; init; }
}
