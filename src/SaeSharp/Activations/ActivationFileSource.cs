using System.Text.Json.Nodes;
using SaeSharp.Kernels;
using TorchSharp;
using static TorchSharp.torch;

namespace SaeSharp.Activations;

/// <summary>
/// Activation rows from <c>.safetensors</c> files (f32, f16 or bf16; a single tensor or one named <c>activations</c>,
/// optionally with a target tensor for transcoders) and <c>.npy</c> files (f32 or f16) of shape [N, d_in]; several files or a folder of
/// shards treated as one dataset. Files are read a chunk at a time, never whole, so datasets larger than memory work.
/// With shuffling, each pass reads the chunks of all shards in a random order into a buffer whenever it is less than
/// half full and draws rows from the buffer uniformly at random without replacement (the SAELens / dictionary_learning
/// mixing-buffer pattern), so every pass emits each row exactly once. Each chunk is checked for NaN/Inf as it is read.
/// The position (pass, chunk order, generator state and which rows sit in the buffer) is saved and restored exactly.
/// With <see cref="ActivationFileSourceOptions.ExcludeTokenIds"/> the rows whose token id is excluded are dropped as they
/// are read (SAELens's <c>_filter_buffer_acts</c> on a cache's token_ids): row numbers, chunks, the row range, the buffer
/// and <see cref="Rows"/> count only the rows kept, so a pass is the same as over files written without those rows.
/// </summary>
public sealed class ActivationFileSource : IActivationSource
{
    private const int MaxOpenFiles = 16;

    private readonly record struct FileInfo(string Path, long Rows);
    /// <summary>A chunk: <see cref="Count"/> kept rows at <see cref="GlobalStart"/> (in the numbering of kept rows), lying in
    /// the file's rows [FileStart, FileStart + RawCount) (the same span without token exclusion).</summary>
    private readonly record struct Chunk(int File, long FileStart, int Count, long GlobalStart, long RawCount);

    private readonly ActivationFileSourceOptions _options;
    private readonly FileInfo[] _files;
    private readonly Chunk[] _chunks;
    private readonly int _capacity;
    private readonly bool _hasTarget;
    private readonly HashSet<long>? _exclude;
    private readonly long[] _keptPerFile;
    private readonly List<(int File, ActivationRowFile Handle)> _open = new();

    private Tensor _bufIn;
    private Tensor? _bufOut;
    private readonly long[] _ids;
    private int _head;   // first live row (sequential mode; always 0 when shuffling)
    private int _count;  // end of live rows
    private long _epoch;
    private int[] _chunkOrder;
    private int _chunkCursor;
    private SeededRandom _rng;
    private bool _disposed;

    /// <summary>The files, in dataset order (folders expanded).</summary>
    public IReadOnlyList<string> Files { get; }
    /// <inheritdoc/>
    public int DIn { get; }
    /// <inheritdoc/>
    public int DOut { get; }
    /// <inheritdoc/>
    public long? Rows { get; }
    /// <summary>The options the source was opened with (tensor names, row range, shuffling).</summary>
    public ActivationFileSourceOptions Options => _options;
    /// <summary>Number of completed passes over the data (passes start at 0).</summary>
    public long Epoch => _epoch;
    /// <inheritdoc/>
    public long RowsDelivered => _epoch * Rows!.Value + _chunkOrder.Take(_chunkCursor).Sum(i => (long)_chunks[i].Count) - Available;
    /// <inheritdoc/>
    public int MaxDataPasses => _options.Epochs;
    /// <summary>cfg.json metadata of the rows (<see cref="IActivationSource.Metadata"/>): a single <c>sae cache</c> folder's
    /// model, hook and windows (<see cref="CacheFolderMetadata"/>); null for other files unless set.</summary>
    public Saes.SaeMetadata? Metadata { get; set; }

    /// <summary>Opens the files (headers only) and checks their shapes, dtypes and widths.</summary>
    /// <param name="paths">Files and/or folders; a folder contributes its <c>.safetensors</c> and <c>.npy</c> files sorted by name.</param>
    /// <param name="options">Tensor names, expected widths, chunk and buffer sizes, shuffling, looping, seed, row range.</param>
    public ActivationFileSource(IEnumerable<string> paths, ActivationFileSourceOptions? options = null)
    {
        _options = options ?? new ActivationFileSourceOptions();
        if (_options.ChunkRows <= 0) throw new SaeSharpException($"chunk size must be positive, got {_options.ChunkRows}");
        if (_options.BufferRows <= 0) throw new SaeSharpException($"buffer size must be positive, got {_options.BufferRows}");
        var given = paths.ToList();
        Files = ExpandPaths(given);
        Metadata = CacheFolderMetadata(given);
        _exclude = ExcludedSet(_options);

        var files = new List<FileInfo>();
        int? dIn = null, dOut = null;
        string? firstPath = null;
        foreach (var path in Files)
        {
            using var f = ActivationRowFile.Open(path, _options.InputName, _options.TargetName, _options.HookName);
            if (_options.ExpectedDIn is int e && f.InputWidth != e)
                throw new SaeSharpException($"{f.Describe(f.InputName)} has width {f.InputWidth}, expected d_in = {e}");
            if (_options.ExpectedDOut is int eo && f.TargetWidth is int tw && tw != eo)
                throw new SaeSharpException($"{f.Describe(f.TargetName!)} has width {tw}, expected d_out = {eo}");
            if (dIn is int d && f.InputWidth != d)
                throw new SaeSharpException($"{f.Describe(f.InputName)} has width {f.InputWidth}, but {firstPath} has width {d}");
            if (dOut is int dd && f.TargetWidth is int tw2 && tw2 != dd)
                throw new SaeSharpException($"{f.Describe(f.TargetName!)} has width {tw2}, but {firstPath} has width {dd}");
            dIn ??= f.InputWidth;
            dOut ??= f.TargetWidth;
            firstPath ??= path;
            files.Add(new FileInfo(path, f.Rows));
        }
        _files = files.ToArray();
        _keptPerFile = _files.Select(f => KeptRows(f.Path, _options, _exclude)).ToArray();
        _hasTarget = _options.TargetName is not null;
        DIn = dIn!.Value;
        DOut = _hasTarget ? dOut!.Value : DIn;

        long total = _keptPerFile.Sum();
        long start = _options.RowStart;
        long count = _options.RowCount ?? total - start;
        string held = _exclude is null ? $"{total} rows" : $"{total} rows whose token is not excluded ({DescribeExcluded(_exclude)})";
        if (start < 0 || count < 0 || start + count > total)
            throw new SaeSharpException($"rows [{start}, {start + count}) are out of range: the files hold {held}");
        if (count == 0) throw new SaeSharpException(_exclude is not null && total == 0
            ? $"no rows of {string.Join(", ", Files)} are left: every row's token is excluded ({DescribeExcluded(_exclude)})"
            : $"no rows selected from {string.Join(", ", Files)}");
        Rows = count;
        _chunks = MakeChunks(start, count);

        _capacity = Math.Max(_options.BufferRows, _options.ChunkRows);
        // The buffers belong to the source (its Dispose frees them), not to a dispose scope the caller may have open.
        _bufIn = torch.empty(_capacity, DIn, ScalarType.Float32).DetachFromDisposeScope();
        _bufOut = _hasTarget ? torch.empty(_capacity, DOut, ScalarType.Float32).DetachFromDisposeScope() : null;
        _ids = new long[_capacity];
        _rng = new SeededRandom(_options.Seed);
        _chunkOrder = NewChunkOrder();
    }

    /// <summary>Opens one file or folder; see the constructor over several paths.</summary>
    public ActivationFileSource(string path, ActivationFileSourceOptions? options = null) : this([path], options) { }

    /// <summary>The cfg.json metadata of rows read from <paramref name="paths"/> when they are one <c>sae cache</c> folder
    /// (<see cref="ActivationCacheManifest.ToSaeMetadata"/>: its model, hook, context size, dataset);
    /// null for anything else.</summary>
    public static Saes.SaeMetadata? CacheFolderMetadata(IReadOnlyList<string> paths)
    {
        ArgumentNullException.ThrowIfNull(paths);
        return paths.Count == 1 && File.Exists(Path.Combine(paths[0], ActivationCacheFolder.ManifestName))
            ? ActivationCacheManifest.Read(paths[0]).ToSaeMetadata() : null;
    }

    /// <summary>Files in dataset order: each file as given, an activation cache folder's shards as its manifest lists them
    /// (<see cref="ActivationCacheFolder.ShardFiles"/>), a SAELens activation cache's <c>.arrow</c> shards as its state.json
    /// lists them (<see cref="SaeLensActivationCache"/>), each other folder's <c>.safetensors</c> and <c>.npy</c> files
    /// sorted by name.</summary>
    public static IReadOnlyList<string> ExpandPaths(IEnumerable<string> paths)
    {
        var result = new List<string>();
        foreach (var p in paths)
        {
            if (File.Exists(Path.Combine(p, ActivationCacheFolder.ManifestName)))
                result.AddRange(ActivationCacheFolder.ShardFiles(p, ActivationCacheManifest.Read(p)));
            else if (SaeLensActivationCache.IsCache(p))
                result.AddRange(SaeLensActivationCache.Open(p).DataFiles());
            else if (Directory.Exists(p))
            {
                var inDir = Directory.GetFiles(p)
                    .Where(f => f.EndsWith(".safetensors", StringComparison.OrdinalIgnoreCase) || f.EndsWith(".npy", StringComparison.OrdinalIgnoreCase))
                    .OrderBy(f => f, StringComparer.Ordinal).ToList();
                if (inDir.Count == 0) throw new SaeSharpException($"{p}: folder holds no .safetensors or .npy activation files");
                result.AddRange(inDir);
            }
            else if (File.Exists(p)) result.Add(p);
            else throw new SaeSharpException($"{p}: no such file or folder");
        }
        if (result.Count == 0) throw new SaeSharpException("no activation files given");
        return result;
    }

    /// <summary>Total rows in the files (all of them, ignoring any row range); with
    /// <see cref="ActivationFileSourceOptions.ExcludeTokenIds"/>, the rows whose token is not excluded.</summary>
    public static long CountRows(IEnumerable<string> paths, ActivationFileSourceOptions? options = null)
    {
        var exclude = ExcludedSet(options);
        return ExpandPaths(paths).Sum(path => KeptRows(path, options, exclude));
    }

    /// <summary>True when every file stores a token id per row (a SaeSharp or SAELens cache with token_ids), so that
    /// <see cref="ActivationFileSourceOptions.ExcludeTokenIds"/> can drop rows of them.</summary>
    public static bool StoresTokenIds(IEnumerable<string> paths, ActivationFileSourceOptions? options = null) =>
        ExpandPaths(paths).All(path =>
        {
            using var f = ActivationRowFile.Open(path, options?.InputName, options?.TargetName, options?.HookName);
            return f.HasTokenIds;
        });

    /// <summary>Token ids read at a time when rows are counted or chunked by their tokens.</summary>
    private const int TokenBlock = 1 << 20;

    private static HashSet<long>? ExcludedSet(ActivationFileSourceOptions? options) =>
        options?.ExcludeTokenIds is { Count: > 0 } ids ? [.. ids] : null;

    /// <summary>"token ids 0, 50256" for messages.</summary>
    private static string DescribeExcluded(IEnumerable<long> ids) => $"token ids {string.Join(", ", ids.Order())}";

    /// <summary>The rows of one file, or those whose token id is not in <paramref name="exclude"/> (a file without token ids
    /// is then an error naming it).</summary>
    private static long KeptRows(string path, ActivationFileSourceOptions? options, HashSet<long>? exclude)
    {
        using var f = ActivationRowFile.Open(path, options?.InputName, options?.TargetName, options?.HookName);
        if (exclude is null) return f.Rows;
        RequireTokenIds(f, exclude);
        long kept = 0;
        for (long r = 0; r < f.Rows; r += TokenBlock)
            foreach (long id in f.ReadTokenIds(r, Math.Min(TokenBlock, f.Rows - r)))
                if (!exclude.Contains(id)) kept++;
        return kept;
    }

    private static void RequireTokenIds(ActivationRowFile f, HashSet<long> exclude)
    {
        if (!f.HasTokenIds)
            throw new SaeSharpException($"{f.Path}: stores no token id per row, so the rows of {DescribeExcluded(exclude)} (exclude_special_tokens) cannot be dropped; " +
                                        "rows are dropped by token in a SaeSharp cache (sae cache) or a SAELens activation cache with a token_ids column, " +
                                        "or a .safetensors file with a 'token_ids' tensor [N]: give exclude_special_tokens false, or harvest with the exclusion");
    }

    private Chunk[] MakeChunks(long start, long count)
    {
        var chunks = new List<Chunk>();
        long fileOffset = 0, global = 0, end = start + count;
        for (int i = 0; i < _files.Length; i++)
        {
            long lo = Math.Max(start, fileOffset), hi = Math.Min(end, fileOffset + _keptPerFile[i]);
            if (_exclude is null)
            {
                for (long r = lo; r < hi; r += _options.ChunkRows)
                {
                    int n = (int)Math.Min(_options.ChunkRows, hi - r);
                    chunks.Add(new Chunk(i, r - fileOffset, n, global, n));
                    global += n;
                }
            }
            else if (lo < hi) global = ChunkKeptRows(i, lo - fileOffset, hi - fileOffset, global, chunks);
            fileOffset += _keptPerFile[i];
        }
        return chunks.ToArray();
    }

    /// <summary>Cuts the kept rows [<paramref name="from"/>, <paramref name="to"/>) of file <paramref name="file"/> (numbered
    /// among its kept rows) into chunks of <see cref="ActivationFileSourceOptions.ChunkRows"/> kept rows, each spanning the
    /// file's rows from its first kept row to its last; returns the global number after the last.</summary>
    private long ChunkKeptRows(int file, long from, long to, long global, List<Chunk> chunks)
    {
        using var f = ActivationRowFile.Open(_files[file].Path, _options.InputName, _options.TargetName, _options.HookName);
        long k = 0, first = 0, last = 0;
        int inChunk = 0;
        for (long r = 0; r < f.Rows && k < to; r += TokenBlock)
        {
            var ids = f.ReadTokenIds(r, Math.Min(TokenBlock, f.Rows - r));
            for (int j = 0; j < ids.Length && k < to; j++)
            {
                if (_exclude!.Contains(ids[j])) continue;
                if (k++ < from) continue;
                if (inChunk == 0) first = r + j;
                last = r + j;
                if (++inChunk == _options.ChunkRows)
                {
                    chunks.Add(new Chunk(file, first, inChunk, global, last + 1 - first));
                    global += inChunk;
                    inChunk = 0;
                }
            }
        }
        if (inChunk > 0)
        {
            chunks.Add(new Chunk(file, first, inChunk, global, last + 1 - first));
            global += inChunk;
        }
        return global;
    }

    private int[] NewChunkOrder()
    {
        if (!_options.Shuffle) return Enumerable.Range(0, _chunks.Length).ToArray();
        return _rng.Permutation(_chunks.Length).Select(i => (int)i).ToArray();
    }

    private ActivationRowFile Handle(int file)
    {
        for (int i = 0; i < _open.Count; i++)
        {
            if (_open[i].File != file) continue;
            var hit = _open[i];
            _open.RemoveAt(i);
            _open.Add(hit);
            return hit.Handle;
        }
        if (_open.Count >= MaxOpenFiles)
        {
            _open[0].Handle.Dispose();
            _open.RemoveAt(0);
        }
        var h = ActivationRowFile.Open(_files[file].Path, _options.InputName, _options.TargetName, _options.HookName);
        if (h.Rows != _files[file].Rows || h.InputWidth != DIn)
        {
            h.Dispose();
            throw new SaeSharpException($"{_files[file].Path}: file changed while being read");
        }
        _open.Add((file, h));
        return h;
    }

    /// <summary>Reads <paramref name="count"/> rows of a chunk starting <paramref name="offset"/> rows into it (kept rows:
    /// with token exclusion the chunk's whole span is read and its excluded rows dropped).</summary>
    private (Tensor In, Tensor? Out) ReadChunkRows(Chunk c, int offset, int count)
    {
        if (_exclude is not null) return ReadKeptRows(c, offset, count);
        LargestRead = Math.Max(LargestRead, count);
        var h = Handle(c.File);
        var x = h.ReadInput(c.FileStart + offset, count);
        if (!_hasTarget) return (x, null);
        try
        {
            return (x, h.ReadTarget(c.FileStart + offset, count));
        }
        catch
        {
            x.Dispose();
            throw;
        }
    }

    private (Tensor In, Tensor? Out) ReadKeptRows(Chunk c, int offset, int count)
    {
        LargestRead = Math.Max(LargestRead, (int)c.RawCount);
        var h = Handle(c.File);
        var ids = h.ReadTokenIds(c.FileStart, c.RawCount);
        var keep = new List<long>(c.Count);
        for (int j = 0; j < ids.Length; j++)
            if (!_exclude!.Contains(ids[j])) keep.Add(j);
        if (keep.Count != c.Count) throw new SaeSharpException($"{_files[c.File].Path}: file changed while being read (token ids)");
        using var scope = NewDisposeScope();
        var index = torch.tensor(keep.GetRange(offset, count).ToArray());
        var x = h.ReadInput(c.FileStart, c.RawCount).index_select(0, index);
        var y = _hasTarget ? h.ReadTarget(c.FileStart, c.RawCount).index_select(0, index) : null;
        return (x.MoveToOuterDisposeScope(), y?.MoveToOuterDisposeScope());
    }

    private int Available => _count - _head;

    /// <summary>The most rows read from a file in one call so far (at most the chunk size).</summary>
    internal int LargestRead { get; private set; }

    /// <summary>Moves live rows to the front of the buffer and reads chunks while they fit.</summary>
    private void Refill()
    {
        using var scope = NewDisposeScope();
        if (_head > 0)
        {
            int n = Available;
            if (n > 0)
            {
                using var moved = _bufIn.narrow(0, _head, n).clone();
                _bufIn.narrow(0, 0, n).copy_(moved);
                if (_bufOut is not null)
                {
                    using var movedOut = _bufOut.narrow(0, _head, n).clone();
                    _bufOut.narrow(0, 0, n).copy_(movedOut);
                }
                Array.Copy(_ids, _head, _ids, 0, n);
            }
            _head = 0;
            _count = n;
        }
        while (_chunkCursor < _chunkOrder.Length && _count + _chunks[_chunkOrder[_chunkCursor]].Count <= _capacity)
        {
            var c = _chunks[_chunkOrder[_chunkCursor]];
            var (x, y) = ReadChunkRows(c, 0, c.Count);
            using (x)
            using (y)
            {
                _bufIn.narrow(0, _count, c.Count).copy_(x);
                _bufOut?.narrow(0, _count, c.Count).copy_(y!);
            }
            for (int i = 0; i < c.Count; i++) _ids[_count + i] = c.GlobalStart + i;
            _count += c.Count;
            _chunkCursor++;
        }
    }

    /// <inheritdoc/>
    public ActivationBatch? Next(int batchSize)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        if (batchSize <= 0) throw new ArgumentOutOfRangeException(nameof(batchSize), batchSize, "must be positive");
        var partsIn = new List<Tensor>();
        var partsOut = new List<Tensor>();
        int need = batchSize;
        try
        {
            while (need > 0)
            {
                if ((Available < _capacity / 2 || Available < need) && _chunkCursor < _chunkOrder.Length) Refill();
                if (Available == 0)
                {
                    if (_chunkCursor < _chunkOrder.Length) continue;
                    if (_options.Epochs != 0 && _epoch + 1 >= _options.Epochs) break;
                    _epoch++;
                    _chunkOrder = NewChunkOrder();
                    _chunkCursor = 0;
                    _head = _count = 0;
                    continue;
                }
                int m = Math.Min(need, Available);
                var (pin, pout) = Take(m);
                partsIn.Add(pin);
                if (pout is not null) partsOut.Add(pout);
                need -= m;
            }
            if (partsIn.Count == 0) return null;
            var input = partsIn.Count == 1 ? partsIn[0] : torch.cat(partsIn, 0);
            Tensor? target = !_hasTarget ? null : partsOut.Count == 1 ? partsOut[0] : torch.cat(partsOut, 0);
            if (partsIn.Count > 1) { foreach (var p in partsIn) p.Dispose(); foreach (var p in partsOut) p.Dispose(); }
            return new ActivationBatch(input, target);
        }
        catch
        {
            foreach (var p in partsIn) p.Dispose();
            foreach (var p in partsOut) p.Dispose();
            throw;
        }
    }

    /// <summary>Removes <paramref name="m"/> rows from the buffer: the first ones in sequential mode, uniformly random
    /// ones (a partial Fisher–Yates shuffle from the end, the holes filled from the tail) when shuffling.</summary>
    private (Tensor In, Tensor? Out) Take(int m)
    {
        if (!_options.Shuffle)
        {
            using var seqScope = NewDisposeScope();
            var seqIn = _bufIn.narrow(0, _head, m).clone();
            var seqOut = _bufOut?.narrow(0, _head, m).clone();
            _head += m;
            return (seqIn.MoveToOuterDisposeScope(), seqOut?.MoveToOuterDisposeScope());
        }

        int n = _count;
        var moved = new Dictionary<int, int>(m);
        int Get(int i) => moved.TryGetValue(i, out int v) ? v : i;
        var chosen = new long[m];
        for (int j = 0; j < m; j++)
        {
            int last = n - 1 - j;
            int r = (int)_rng.NextLong(last + 1);
            chosen[j] = Get(r);
            moved[r] = Get(last);
        }
        // Slots below n-m that now hold a tail row: fill them from the tail (sources and destinations are disjoint).
        var dst = new List<long>();
        var src = new List<long>();
        foreach (var (slot, from) in moved)
            if (slot < n - m && slot != from) { dst.Add(slot); src.Add(from); }

        using var scope = NewDisposeScope();
        var outIn = torch.empty(m, DIn, ScalarType.Float32);
        SparseKernels.CopyRows(_bufIn, chosen, outIn, null);
        Tensor? outOut = null;
        if (_bufOut is not null)
        {
            outOut = torch.empty(m, DOut, ScalarType.Float32);
            SparseKernels.CopyRows(_bufOut, chosen, outOut, null);
        }
        if (dst.Count > 0)
        {
            long[] dstRows = dst.ToArray(), srcRows = src.ToArray();
            SparseKernels.CopyRows(_bufIn, srcRows, _bufIn, dstRows);
            if (_bufOut is not null) SparseKernels.CopyRows(_bufOut, srcRows, _bufOut, dstRows);
            for (int i = 0; i < dst.Count; i++) _ids[dst[i]] = _ids[src[i]];
        }
        _count = n - m;
        return (outIn.MoveToOuterDisposeScope(), outOut?.MoveToOuterDisposeScope());
    }

    /// <summary>Global row numbers (within the selected rows) currently in the buffer, in buffer order.</summary>
    internal long[] BufferedRowIds() => _ids[_head.._count];

    /// <inheritdoc/>
    public JsonNode SaveState()
    {
        var state = new JsonObject
        {
            ["kind"] = nameof(ActivationFileSource),
            ["rows"] = Rows,
            ["chunks"] = _chunks.Length,
            ["epoch"] = _epoch,
            ["chunk_cursor"] = _chunkCursor,
            ["chunk_order"] = new JsonArray(_chunkOrder.Select(i => (JsonNode)JsonValue.Create(i)).ToArray()),
            ["rng"] = new JsonArray(_rng.GetState().Select(s => (JsonNode)JsonValue.Create(s.ToString(System.Globalization.CultureInfo.InvariantCulture))).ToArray()),
            ["buffer_rows"] = _capacity,
            ["buffer"] = new JsonArray(BufferedRowIds().Select(i => (JsonNode)JsonValue.Create(i)).ToArray()),
        };
        if (_exclude is not null) state["exclude_token_ids"] = new JsonArray(_exclude.Order().Select(i => (JsonNode)JsonValue.Create(i)).ToArray());
        return state;
    }

    /// <inheritdoc/>
    public void LoadState(JsonNode state)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        try
        {
            if (state["kind"]?.GetValue<string>() != nameof(ActivationFileSource))
                throw new SaeSharpException($"activation source state is not an {nameof(ActivationFileSource)} state");
            var excluded = state["exclude_token_ids"]?.AsArray().Select(n => n!.GetValue<long>()).Order().ToArray() ?? [];
            var now = _exclude?.Order().ToArray() ?? [];
            if (!excluded.SequenceEqual(now))
                throw new SaeSharpException($"activation source state was saved by a run that dropped the rows of {(excluded.Length == 0 ? "no token" : DescribeExcluded(excluded))} " +
                                            $"(exclude_special_tokens), but this source drops those of {(now.Length == 0 ? "no token" : DescribeExcluded(now))}: resume with the run's exclude_special_tokens");
            long rows = state["rows"]!.GetValue<long>();
            int chunks = state["chunks"]!.GetValue<int>();
            if (rows != Rows || chunks != _chunks.Length)
                throw new SaeSharpException($"activation source state is for {rows} rows in {chunks} chunks, but this source has {Rows} rows in {_chunks.Length} chunks (different files or options)");
            var order = state["chunk_order"]!.AsArray().Select(n => n!.GetValue<int>()).ToArray();
            if (order.Length != _chunks.Length || order.Any(i => i < 0 || i >= _chunks.Length))
                throw new SaeSharpException("activation source state has an invalid chunk order");
            int cursor = state["chunk_cursor"]!.GetValue<int>();
            if (cursor < 0 || cursor > order.Length) throw new SaeSharpException($"activation source state has an invalid chunk cursor {cursor}");
            var rng = state["rng"]!.AsArray().Select(n => ulong.Parse(n!.GetValue<string>(), System.Globalization.CultureInfo.InvariantCulture)).ToArray();
            if (state["buffer_rows"]?.GetValue<int>() is int saved && saved != _capacity)
                throw new SaeSharpException($"activation source state has a shuffle buffer of {saved} rows but this source has {_capacity} (buffer_rows): resume with the run's buffer");
            var ids = state["buffer"]!.AsArray().Select(n => n!.GetValue<long>()).ToArray();
            if (ids.Length > _capacity) throw new SaeSharpException($"activation source state holds {ids.Length} buffered rows, more than this source's buffer of {_capacity}");
            if (ids.Any(i => i < 0 || i >= Rows)) throw new SaeSharpException("activation source state refers to rows outside the data");

            _epoch = state["epoch"]!.GetValue<long>();
            _chunkOrder = order;
            _chunkCursor = cursor;
            _rng = SeededRandom.FromState(rng);
            RestoreBuffer(ids);
        }
        catch (Exception e) when (e is InvalidOperationException or FormatException or NullReferenceException or System.Text.Json.JsonException)
        {
            throw new SaeSharpException($"activation source state is malformed ({e.Message})");
        }
    }

    /// <summary>Re-reads the rows with the given ids into buffer slots 0..ids.Length-1, one read per chunk involved.</summary>
    private void RestoreBuffer(long[] ids)
    {
        _head = 0;
        _count = 0;
        var byChunk = ids.Select((id, slot) => (id, slot)).GroupBy(p => ChunkOf(p.id));
        foreach (var g in byChunk)
        {
            var c = _chunks[g.Key];
            int lo = (int)(g.Min(p => p.id) - c.GlobalStart), hi = (int)(g.Max(p => p.id) - c.GlobalStart);
            var (x, y) = ReadChunkRows(c, lo, hi - lo + 1);
            using var scope = NewDisposeScope();
            using (x)
            using (y)
            {
                var rowsT = torch.tensor(g.Select(p => p.id - c.GlobalStart - lo).ToArray());
                var slotsT = torch.tensor(g.Select(p => (long)p.slot).ToArray());
                _bufIn.index_copy_(0, slotsT, x.index_select(0, rowsT));
                _bufOut?.index_copy_(0, slotsT, y!.index_select(0, rowsT));
            }
        }
        Array.Copy(ids, _ids, ids.Length);
        _count = ids.Length;
    }

    private int ChunkOf(long globalRow)
    {
        int lo = 0, hi = _chunks.Length - 1;
        while (lo < hi)
        {
            int mid = (lo + hi + 1) / 2;
            if (_chunks[mid].GlobalStart <= globalRow) lo = mid; else hi = mid - 1;
        }
        return lo;
    }

    /// <summary>Closes the open files and frees the shuffle buffer.</summary>
    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        foreach (var (_, h) in _open) h.Dispose();
        _open.Clear();
        _bufIn.Dispose();
        _bufOut?.Dispose();
    }
}
