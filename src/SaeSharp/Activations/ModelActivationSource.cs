using System.Text.Json.Nodes;
using SaeSharp.Saes;
using SaeSharp.Models;
using TorchSharp;
using static TorchSharp.torch;

namespace SaeSharp.Activations;

/// <summary>Settings of a <see cref="ModelActivationSource"/>.</summary>
public sealed record ModelActivationSourceOptions
{
    /// <summary>Tokens per context window (every window must have exactly this length).</summary>
    public required int ContextSize { get; init; }
    /// <summary>Windows per model run (SAELens <c>store_batch_size_prompts</c>). Part of the replay description:
    /// a saved state must be restored with the same value.</summary>
    public int BatchSizePrompts { get; init; } = 8;
    /// <summary>Capacity of the shuffle buffer in context windows (SAELens <c>n_batches_in_buffer</c>·batch,
    /// dictionary_learning <c>n_ctxs</c>): the buffer is filled, one model run at a time, until it holds at least
    /// BufferContexts × (positions kept per window) rows (or one training batch, if that is more) before a round is served
    /// (<see cref="MixingFraction"/>).</summary>
    public int BufferContexts { get; init; } = 64;
    /// <summary>SAELens 6.37's <c>activations_mixing_fraction</c> (its <c>mixing_buffer</c>'s <c>mix_fraction</c>): once the
    /// buffer is full it is shuffled (unless the fraction is 0), int(B·fraction) rows are kept back for the next round, B
    /// the capacity in rows, and max(1, ⌊(stored − kept) / batch⌋) whole batches are served from the front; then the
    /// buffer is filled again. 0 serves the rows in harvest order (no shuffle); 0.5 (SAELens's default) keeps half the
    /// buffer; higher values mix more old rows into each batch. In [0, 1].</summary>
    public double MixingFraction
    {
        get => _mixingFraction;
        init => _mixingFraction = value is >= 0 and <= 1 ? value : throw new SaeSharpException($"activations_mixing_fraction must be in [0, 1], got {value}");
    }
    private readonly double _mixingFraction = 0.5;
    /// <summary>Token ids whose positions are dropped (BOS, EOS, padding: SAELens <c>exclude_special_tokens</c>,
    /// dictionary_learning <c>remove_bos</c>).</summary>
    public IReadOnlyCollection<long>? ExcludeTokenIds { get; init; }
    /// <summary>Shuffle the buffer after each refill; false keeps harvest order (window, position).</summary>
    public bool Shuffle { get; init; } = true;
    /// <summary>Seed of the buffer shuffle; the same seed gives the same batches.</summary>
    public ulong Seed { get; init; }
    /// <summary>Passes over the dataset's windows (the dataset is read again from its start after the last window):
    /// 1 (default) reads it once, 0 repeats it until the budget is reached (SAELens restarts its dataset silently).
    /// The budget <see cref="MaxContexts"/> counts windows over all passes.</summary>
    public int Epochs
    {
        get => _epochs;
        init => _epochs = value >= 0 ? value : throw new SaeSharpException($"epochs must be 0 (no limit) or positive, got {value}");
    }
    private readonly int _epochs = 1;
    /// <summary>Use at most this many context windows (a token budget N is ⌈N / positions kept per window⌉ windows); null: all.</summary>
    public long? MaxContexts { get; init; }
    /// <summary>The first this many windows of the dataset are never read, in any pass: they are held out for the
    /// end-of-run evaluation (<c>sae train --model</c>). <see cref="MaxContexts"/> and the saved state count the windows
    /// after them. Part of the replay description.</summary>
    public int HeldOutContexts
    {
        get => _heldOut;
        init => _heldOut = value >= 0 ? value : throw new SaeSharpException($"held-out context windows must be 0 or more, got {value}");
    }
    private readonly int _heldOut;
    /// <summary>SAELens's <c>seqpos_slice</c>: the positions of each window harvested; null: all. Part of the replay
    /// description.</summary>
    public Saes.SeqposSlice? SeqposSlice { get; init; }
    /// <summary>Hooks applied on every model run (<see cref="SaeSharp.Models.ProcessedModel.Hooks"/>), before the harvest reads.</summary>
    public IReadOnlyList<(string Name, Func<Tensor, Tensor?> Fn)>? ModelHooks { get; init; }
    /// <summary>Models 1, 2, … of a crosscoder spec (<see cref="HarvestSpec.LayerModels"/>; model diffing), each with its
    /// run hooks, run on the same windows as the source's model.</summary>
    public IReadOnlyList<(HookedTransformer Model, IReadOnlyList<(string Name, Func<Tensor, Tensor?> Fn)>? Hooks)>? OtherModels { get; init; }
}

/// <summary>
/// Training rows harvested from a language model run on text: the context windows are run through the model in groups
/// of <see cref="ModelActivationSourceOptions.BatchSizePrompts"/> (no gradients, stopping after the hooks' layer), the
/// hook's activations (and targets for <see cref="HarvestMode.InToOut"/>) of the non-excluded positions go into a buffer
/// of many contexts that is served in rounds as SAELens 6.37's <c>mixing_buffer</c> serves it
/// (<see cref="ModelActivationSourceOptions.MixingFraction"/>): fill to capacity one model run at a time, shuffle, keep a
/// fraction back, serve the rest as whole batches. Finite: returns null when the windows are used up and the buffer is
/// empty; the last rows (fewer than a full buffer, after the stream ends) are shuffled too unless the fraction is 0 and
/// served with a short last batch (SAELens's loader never ends: it restarts its dataset).
/// <para>State (<see cref="SaveState"/>): windows consumed, generator state and the ids (window, position) of the rows
/// in the buffer; <see cref="LoadState"/> re-runs the model on the windows those rows came from, in the same groups,
/// so the restored buffer holds bit-identical rows in the same order.</para>
/// </summary>
public sealed class ModelActivationSource : IActivationSource
{
    private readonly Func<IEnumerable<long[]>> _windows;
    private readonly ModelActivationSourceOptions _o;
    private readonly ModelActivationHarvester _harvester;
    private IEnumerator<long[]>? _enum;
    private long _consumed;      // windows taken from the stream (over all passes)
    private long _pass;          // passes over the windows begun
    private long _delivered;     // rows handed out
    private long _firstPassRows; // rows harvested from the windows of the first pass
    private bool _firstPassDone; // the first pass has ended (so _firstPassRows is the rows of one pass)
    private bool _exhausted;
    private SeededRandom _rng;
    private Tensor? _bufIn, _bufOut;
    private long[] _ids = [];
    private int _head;           // first unread row of the buffer
    private int _serveEnd;       // end of the rows served in this round; the rows after it are kept for the next round
    private bool _disposed;

    /// <summary>Disposed with the source (the model when the source loaded it).</summary>
    internal IDisposable? Owned { get; set; }

    /// <param name="model">The language model (its runs are inference runs).</param>
    /// <param name="spec">Hooks to read (see <see cref="HarvestSpec.Resolve"/>).</param>
    /// <param name="windows">Creates the stream of context windows from its start (called again by <see cref="LoadState"/>);
    /// it must yield the same windows every time.</param>
    /// <param name="options">Context size, buffer, exclusion, seed, budget.</param>
    public ModelActivationSource(HookedTransformer model, HarvestSpec spec, Func<IEnumerable<long[]>> windows, ModelActivationSourceOptions options)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(windows);
        _o = options ?? throw new ArgumentNullException(nameof(options));
        if (_o.BatchSizePrompts <= 0) throw new SaeSharpException($"batch size in prompts must be positive, got {_o.BatchSizePrompts}");
        if (_o.BufferContexts < _o.BatchSizePrompts)
            throw new SaeSharpException($"buffer of {_o.BufferContexts} contexts is smaller than one model batch of {_o.BatchSizePrompts} prompts");
        if (_o.MaxContexts is <= 0) throw new SaeSharpException($"the context budget must be positive, got {_o.MaxContexts}");
        _windows = windows;
        _harvester = new ModelActivationHarvester(model, spec, _o.ContextSize, _o.ExcludeTokenIds, _o.ModelHooks, _o.SeqposSlice, _o.OtherModels);
        _rng = new SeededRandom(_o.Seed);
    }

    /// <summary>The hooks read (input and, for transcoders, target) and their widths.</summary>
    public HarvestSpec Spec => _harvester.Spec;
    /// <summary>The model's hook names, to resolve another name of a hook the same way <see cref="Spec"/>'s were.</summary>
    internal Hooks.HookPoints HookPoints => _harvester.HookPoints;
    /// <summary>Width d of one layer slot of a crosscoder harvest (its rows are [L·d]: view a batch as [batch, L, d]);
    /// <see cref="DIn"/> otherwise.</summary>
    public int SlotWidth => _harvester.SlotWidth;
    /// <inheritdoc/>
    public int DIn => _harvester.DIn;
    /// <inheritdoc/>
    public int DOut => _harvester.DOut;
    /// <summary>Unknown in advance (streamed text).</summary>
    public long? Rows => null;
    /// <summary>The pass over the dataset the source is reading (1 in the first; the buffer reads ahead of the rows handed out).</summary>
    public long DataPass => Math.Max(_pass, 1);
    /// <inheritdoc/>
    public long RowsDelivered => _delivered;
    /// <inheritdoc/>
    public long? RowsPerPass => _firstPassDone ? _firstPassRows : null;
    /// <inheritdoc/>
    public int MaxDataPasses => _o.Epochs;
    /// <summary>cfg.json metadata of the rows (<see cref="IActivationSource.Metadata"/>): set by <c>ModelPipeline.OpenSource</c>
    /// to the model, hook, context size and dataset it runs; null when the source is built directly, unless set.</summary>
    public Saes.SaeMetadata? Metadata { get; set; }
    /// <summary>Context windows taken from the stream so far (over all passes).</summary>
    public long ContextsConsumed => _consumed;
    /// <summary>Capacity of the shuffle buffer in context windows (<see cref="ModelActivationSourceOptions.BufferContexts"/>).</summary>
    public int BufferContexts => _o.BufferContexts;
    /// <summary>Rows in the buffer not yet handed out.</summary>
    public int Buffered => _ids.Length - _head;

    /// <summary>SAELens's buffer size in rows: windows × <c>training_context_size</c> (the positions the slice keeps).</summary>
    private long CapacityRows => (long)_o.BufferContexts * _harvester.TrainingContextSize;

    /// <summary>Rows of the current round not yet handed out (the rest of <see cref="Buffered"/> is kept for the next round).</summary>
    public int ServingRows => _serveEnd - _head;

    /// <summary>
    /// SAELens 6.37.6's round of <c>mixing_buffer</c> (sae_lens/training/mixing_buffer.py): of <paramref name="storedRows"/>
    /// rows in a buffer of <paramref name="bufferRows"/>, keep int(bufferRows · <paramref name="mixingFraction"/>) and serve
    /// max(1, ⌊(stored − kept) / batch⌋) whole batches. Returns the rows served.
    /// </summary>
    public static long ServedRows(long storedRows, long bufferRows, int batchSize, double mixingFraction)
    {
        long keep = (long)(bufferRows * mixingFraction);
        long batches = Math.Max(1, (storedRows - keep) / batchSize);
        return batches * batchSize;
    }

    /// <inheritdoc/>
    public ActivationBatch? Next(int batchSize)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        if (batchSize <= 0) throw new ArgumentOutOfRangeException(nameof(batchSize), batchSize, "must be positive");
        if (ServingRows <= 0) StartRound(batchSize);
        if (ServingRows <= 0) return null;
        int n = Math.Min(batchSize, ServingRows);
        Tensor input;
        using (var view = _bufIn!.narrow(0, _head, n)) input = view.clone();
        Tensor? targetOrNull = null;
        if (_bufOut is not null)
            using (var view = _bufOut.narrow(0, _head, n)) targetOrNull = view.clone();
        _head += n;
        _delivered += n;
        return new ActivationBatch(input, targetOrNull);
    }

    /// <summary>A new round: fill the buffer to capacity (at least one batch), shuffle it unless the mixing fraction is 0,
    /// and serve <see cref="ServedRows"/> of it; after the stream's end, serve everything left.</summary>
    private void StartRound(int batchSize)
    {
        long capacity = Math.Max(CapacityRows, batchSize);
        if (!_exhausted) Refill(capacity);
        bool mix = _o.Shuffle && _o.MixingFraction > 0;
        if (Buffered >= capacity)
        {
            if (mix) Rebuild([], shuffle: true);
            _serveEnd = _head + (int)Math.Min(Buffered, ServedRows(Buffered, CapacityRows, batchSize, _o.MixingFraction));
        }
        else
        {
            if (mix && Buffered > 0) Rebuild([], shuffle: true);
            _serveEnd = _ids.Length;
        }
    }

    /// <summary>Harvests groups of windows (one model run each) until the buffer holds <paramref name="targetRows"/>
    /// (or the stream ends) and appends them after the rows kept from the last round.</summary>
    private void Refill(long targetRows)
    {
        var parts = new List<HarvestedRows>();
        try
        {
            long rows = Buffered;
            while (rows < targetRows)
            {
                var group = NextGroup(out long first);
                if (group.Count == 0) break;
                var h = _harvester.Harvest(group, first);
                parts.Add(h);
                if (!_firstPassDone) _firstPassRows += h.Ids.Length;
                else if (first < _firstPassWindows) _firstPassRows += FirstPassRows(h.Ids); // a group straddling the first pass's end
                rows += h.Rows;
            }
            if (parts.Count == 0) return;
            Rebuild(parts, shuffle: false);
        }
        finally
        {
            foreach (var p in parts) p.Dispose();
        }
    }

    /// <summary>The next <see cref="ModelActivationSourceOptions.BatchSizePrompts"/> windows (fewer at the end of the stream / budget).</summary>
    private List<long[]> NextGroup(out long first)
    {
        first = _consumed;
        var group = new List<long[]>(_o.BatchSizePrompts);
        _enum ??= Passes().GetEnumerator();
        while (group.Count < _o.BatchSizePrompts && !_exhausted)
        {
            if (_o.MaxContexts is long max && _consumed >= max) { _exhausted = true; break; }
            if (!_enum.MoveNext()) { _exhausted = true; break; }
            group.Add(_enum.Current);
            _consumed++;
        }
        return group;
    }

    /// <summary>The windows of <see cref="ModelActivationSourceOptions.Epochs"/> passes over the dataset, one after
    /// the other, each pass without the <see cref="ModelActivationSourceOptions.HeldOutContexts"/> first windows (a dataset
    /// without windows after them ends the stream).</summary>
    private IEnumerable<long[]> Passes()
    {
        for (long p = 1; _o.Epochs == 0 || p <= _o.Epochs; p++)
        {
            _pass = p;
            bool any = false;
            foreach (var w in _windows().Skip(_o.HeldOutContexts))
            {
                any = true;
                yield return w;
            }
            if (!any) yield break;
            if (p == 1)
            {
                _firstPassDone = true;
                _firstPassWindows = _consumed;
            }
        }
    }

    private long _firstPassWindows = long.MaxValue; // windows in the first pass, once it has ended

    /// <summary>How many of the harvested row ids (window · context size + position) come from first-pass windows.</summary>
    private long FirstPassRows(long[] ids)
    {
        long limit = _firstPassWindows * _o.ContextSize;
        long n = 0;
        foreach (var id in ids) if (id < limit) n++;
        return n;
    }

    /// <summary>Unread rows + new rows, in that order, shuffled with <paramref name="shuffle"/> (one permutation per round
    /// from the saved generator).</summary>
    private void Rebuild(List<HarvestedRows> parts, bool shuffle)
    {
        using var scope = NewDisposeScope();
        var ins = new List<Tensor>();
        var outs = new List<Tensor>();
        var ids = new List<long>();
        if (Buffered > 0)
        {
            ins.Add(_bufIn!.narrow(0, _head, Buffered));
            if (_bufOut is not null) outs.Add(_bufOut.narrow(0, _head, Buffered));
            ids.AddRange(_ids.AsSpan(_head).ToArray());
        }
        foreach (var p in parts)
        {
            ins.Add(p.Input);
            if (p.Target is not null) outs.Add(p.Target);
            ids.AddRange(p.Ids);
        }
        var allIds = ids.ToArray();
        Tensor newIn = ins.Count == 0 ? empty(0, DIn) : cat(ins, 0);
        Tensor? newOut = _harvester.Spec.TargetHook is null ? null : outs.Count == 0 ? empty(0, DOut) : cat(outs, 0);
        if (shuffle && allIds.Length > 1)
        {
            var perm = _rng.Permutation(allIds.Length);
            var pt = tensor(perm);
            newIn = newIn.index_select(0, pt);
            newOut = newOut?.index_select(0, pt);
            var shuffled = new long[allIds.Length];
            for (int i = 0; i < perm.Length; i++) shuffled[i] = allIds[perm[i]];
            allIds = shuffled;
        }
        SetBuffer(newIn.contiguous().DetachFromDisposeScope(), newOut?.contiguous().DetachFromDisposeScope(), allIds);
    }

    private void SetBuffer(Tensor input, Tensor? output, long[] ids)
    {
        _bufIn?.Dispose();
        _bufOut?.Dispose();
        _bufIn = input;
        _bufOut = output;
        _ids = ids;
        _head = 0;
        _serveEnd = 0;
    }

    /// <inheritdoc/>
    public JsonNode SaveState()
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        var unread = _ids.AsSpan(_head).ToArray();
        var bytes = new byte[unread.Length * sizeof(long)];
        Buffer.BlockCopy(unread, 0, bytes, 0, bytes.Length);
        return new JsonObject
        {
            ["kind"] = "model",
            ["hook"] = Spec.InputHook,
            ["target_hook"] = Spec.TargetHook,
            ["layer_hooks"] = Spec.LayerHooks is { } lh ? string.Join(",", lh.Select((h, i) => $"{Spec.LayerModels?[i] ?? 0}:{h}")) : null,
            ["context_size"] = _o.ContextSize,
            ["seqpos_slice"] = (_o.SeqposSlice ?? Saes.SeqposSlice.All).ToString(),
            ["held_out_contexts"] = _o.HeldOutContexts,
            ["batch_size_prompts"] = _o.BatchSizePrompts,
            ["buffer_contexts"] = _o.BufferContexts,
            ["mixing_fraction"] = _o.MixingFraction,
            ["serving_rows"] = ServingRows,
            ["contexts_consumed"] = _consumed,
            ["exhausted"] = _exhausted,
            ["rows_delivered"] = _delivered,
            ["first_pass_rows"] = _firstPassRows,
            ["first_pass_done"] = _firstPassDone,
            ["rng"] = new JsonArray(_rng.GetState().Select(s => (JsonNode)JsonValue.Create(s.ToString(System.Globalization.CultureInfo.InvariantCulture))).ToArray()),
            ["buffer_row_ids"] = Convert.ToBase64String(bytes),
        };
    }

    /// <inheritdoc/>
    public void LoadState(JsonNode state)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        try
        {
            if ((string?)state["kind"] != "model") throw new SaeSharpException("state is not a model activation source state (kind != 'model')");
            Check("hook", (string?)state["hook"], Spec.InputHook);
            Check("target_hook", (string?)state["target_hook"], Spec.TargetHook);
            Check("layer_hooks", (string?)state["layer_hooks"], Spec.LayerHooks is { } lh ? string.Join(",", lh.Select((h, i) => $"{Spec.LayerModels?[i] ?? 0}:{h}")) : null);
            Check("context_size", (int?)state["context_size"], _o.ContextSize);
            // States written before seqpos_slice existed harvested every position.
            Check("seqpos_slice", (string?)state["seqpos_slice"] ?? ":", (_o.SeqposSlice ?? Saes.SeqposSlice.All).ToString());
            // Another hold-out would shift every window the saved counts point at (states written before it held none out).
            if (((int?)state["held_out_contexts"] ?? 0) is var heldOut && heldOut != _o.HeldOutContexts)
                throw new SaeSharpException($"saved state skipped the first {heldOut} context windows (held out for evaluation) but this source skips {_o.HeldOutContexts}: " +
                                            "resume with the run's --eval-rows and --context-size");
            Check("batch_size_prompts", (int?)state["batch_size_prompts"], _o.BatchSizePrompts);
            // Another buffer size would shuffle the rest of the run differently from the run that saved the state.
            if ((int?)state["buffer_contexts"] is int saved && saved != _o.BufferContexts)
                throw new SaeSharpException($"saved state has a shuffle buffer of {saved} context windows but this source has {_o.BufferContexts} " +
                                            "(SAELens's n_batches_in_buffer × store_batch_size_prompts): resume with the run's --buffer-batches, or none if it had none");
            if ((double?)state["mixing_fraction"] is double savedFraction && savedFraction != _o.MixingFraction)
                throw new SaeSharpException($"saved state has activations_mixing_fraction {savedFraction} but this source has {_o.MixingFraction}: resume with the run's fraction");
            long consumed = (long)state["contexts_consumed"]!;
            bool exhausted = (bool)state["exhausted"]!;
            var rng = ((JsonArray)state["rng"]!).Select(n => ulong.Parse((string)n!, System.Globalization.CultureInfo.InvariantCulture)).ToArray();
            var bytes = Convert.FromBase64String((string)state["buffer_row_ids"]!);
            var ids = new long[bytes.Length / sizeof(long)];
            Buffer.BlockCopy(bytes, 0, ids, 0, bytes.Length);
            Restore(consumed, exhausted, SeededRandom.FromState(rng), ids);
            // States written before rounds existed serve what their buffer holds, then start a round.
            _serveEnd = Math.Min(_ids.Length, (int?)state["serving_rows"] ?? _ids.Length);
            // States written before these counters existed restore them as zero.
            _delivered = (long?)state["rows_delivered"] ?? 0;
            _firstPassRows = (long?)state["first_pass_rows"] ?? 0;
            _firstPassDone = (bool?)state["first_pass_done"] ?? false;
        }
        catch (Exception e) when (e is NullReferenceException or InvalidCastException or FormatException or InvalidOperationException)
        {
            throw new SaeSharpException($"invalid model activation source state: {e.Message}");
        }
    }

    private static void Check<T>(string key, T saved, T mine)
    {
        if (!EqualityComparer<T>.Default.Equals(saved, mine))
            throw new SaeSharpException($"saved state has {key} = {saved?.ToString() ?? "null"} but this source has {mine?.ToString() ?? "null"}");
    }

    /// <summary>Re-reads the stream up to <paramref name="consumed"/>, re-harvesting the groups the buffer rows came from.</summary>
    private void Restore(long consumed, bool exhausted, SeededRandom rng, long[] ids)
    {
        int s = _o.ContextSize, g = _o.BatchSizePrompts;
        var neededGroups = new HashSet<long>(ids.Select(id => id / s / g));
        var wanted = new HashSet<long>(ids);
        var rowOf = new Dictionary<long, long>(ids.Length);
        var ins = new List<Tensor>();
        var outs = new List<Tensor>();
        long gathered = 0;
        using var scope = NewDisposeScope();
        _enum?.Dispose();
        _pass = 0;
        _enum = Passes().GetEnumerator();
        long w = 0;
        var group = new List<long[]>(g);
        while (w < consumed)
        {
            if (!_enum.MoveNext())
                throw new SaeSharpException($"saved state consumed {consumed} context windows but the dataset yields only {w}");
            long gi = w / g;
            if (neededGroups.Contains(gi)) group.Add(_enum.Current);
            w++;
            bool groupEnd = w % g == 0 || w == consumed;
            if (groupEnd && group.Count > 0)
            {
                using var h = _harvester.Harvest(group, gi * g);
                var take = new List<long>();
                for (int i = 0; i < h.Ids.Length; i++)
                {
                    if (!wanted.Contains(h.Ids[i])) continue;
                    rowOf[h.Ids[i]] = gathered + take.Count;
                    take.Add(i);
                }
                var ti = tensor(take.ToArray());
                ins.Add(h.Input.index_select(0, ti));
                if (h.Target is not null) outs.Add(h.Target.index_select(0, ti));
                gathered += take.Count;
                group.Clear();
            }
        }
        var order = new long[ids.Length];
        for (int i = 0; i < ids.Length; i++)
        {
            if (!rowOf.TryGetValue(ids[i], out order[i]))
                throw new SaeSharpException($"saved buffer row (window {ids[i] / s}, position {ids[i] % s}) is not produced by the dataset (different data or exclusions?)");
        }
        var oi = tensor(order);
        var bufIn = ins.Count == 0 ? empty(0, DIn) : cat(ins, 0).index_select(0, oi);
        var bufOut = Spec.TargetHook is null ? null : outs.Count == 0 ? empty(0, DOut) : cat(outs, 0).index_select(0, oi);
        SetBuffer(bufIn.contiguous().DetachFromDisposeScope(), bufOut?.contiguous().DetachFromDisposeScope(), ids);
        _consumed = consumed;
        _exhausted = exhausted;
        _rng = rng;
    }

    /// <summary>Frees the buffer (and the model when the source loaded it).</summary>
    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        _enum?.Dispose();
        _bufIn?.Dispose();
        _bufOut?.Dispose();
        Owned?.Dispose();
    }
}
