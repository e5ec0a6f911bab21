using SaeSharp.Activations;
using TorchSharp;
using static TorchSharp.torch;

namespace SaeSharp.Analysis;

/// <summary>Settings of a <see cref="FeatureStatisticsCollector"/>.</summary>
public sealed record FeatureStatisticsOptions
{
    /// <summary>Top-activating examples kept per feature (<c>--top</c>).</summary>
    public int TopExamples { get; init; } = 20;
    /// <summary>Tokens shown on each side of an example's token (<c>--context</c>).</summary>
    public int Context { get; init; } = 8;
    /// <summary>Most activation intervals per feature (even). The intervals are equal-width from 0 and the last one holds
    /// the max, so a feature gets between half of this and this many.</summary>
    public int Intervals { get; init; } = 10;
    /// <summary>Examples drawn uniformly from each interval.</summary>
    public int SamplesPerInterval { get; init; } = 5;
    /// <summary>Most bins of the activation histogram (even; between half of this and this many are used).</summary>
    public int HistogramBins { get; init; } = 64;
    /// <summary>Seed of the interval sampling.</summary>
    public ulong Seed { get; init; }

    internal void Validate()
    {
        if (TopExamples < 0) throw new SaeSharpException($"top examples must be non-negative, got {TopExamples}");
        if (Context < 0) throw new SaeSharpException($"context must be non-negative, got {Context}");
        if (Intervals < 2 || Intervals % 2 != 0) throw new SaeSharpException($"intervals must be even and at least 2, got {Intervals}");
        if (HistogramBins < 2 || HistogramBins % 2 != 0) throw new SaeSharpException($"histogram bins must be even and at least 2, got {HistogramBins}");
        if (SamplesPerInterval < 0) throw new SaeSharpException($"samples per interval must be non-negative, got {SamplesPerInterval}");
    }
}

/// <summary>
/// Streams feature activations of context windows and keeps, per selected feature, what a dashboard needs: firing count
/// and density, max, mean of the non-zero activations, the top examples (a bounded heap), SAEDashboard-style interval
/// samples and a histogram of the non-zero activations. Memory is bounded by features × (top + intervals × samples)
/// examples, whatever the number of tokens.
/// <para>Intervals and histogram bins are exact and need no second pass: each feature has a range [0, R) with R the
/// smallest power of two above its max so far; bins are R / bins wide, and when a larger activation arrives R doubles
/// and neighbouring bins merge (counts add, the uniform interval samples are merged into a uniform sample of the union).</para>
/// Feed it with <see cref="Add"/>; deterministic for a given seed and input order.
/// </summary>
public sealed class FeatureStatisticsCollector
{
    private readonly FeatureStatisticsOptions _o;
    private readonly int[] _features;
    private readonly int _f;
    private readonly long[] _count;
    private readonly double[] _sum;
    private readonly float[] _max;
    private readonly int[] _exp;             // R = 2^exp; int.MinValue before the first firing
    private readonly long[] _hist;           // [f, HistogramBins]
    private readonly long[] _ivCount;        // [f, Intervals]
    private readonly List<Slot>?[] _reservoir; // [f, Intervals]
    private readonly List<Slot>[] _top;       // min-heaps: worst example at the root
    private readonly float[] _topMin;        // activation an example must reach to be a candidate
    private readonly SeededRandom _rng;
    private long _tokens;
    private long _windows;

    /// <param name="dSae">Number of SAE features.</param>
    /// <param name="features">The features to collect, in output order (null: all).</param>
    /// <param name="options">Sizes and seed.</param>
    public FeatureStatisticsCollector(int dSae, IReadOnlyList<int>? features = null, FeatureStatisticsOptions? options = null)
    {
        _o = options ?? new FeatureStatisticsOptions();
        _o.Validate();
        _features = features?.ToArray() ?? Enumerable.Range(0, dSae).ToArray();
        foreach (var i in _features)
            if (i < 0 || i >= dSae) throw new SaeSharpException($"feature {i} is outside 0..{dSae - 1}");
        _f = _features.Length;
        _count = new long[_f];
        _sum = new double[_f];
        _max = new float[_f];
        _exp = Enumerable.Repeat(int.MinValue, _f).ToArray();
        _hist = new long[(long)_f * _o.HistogramBins];
        _ivCount = new long[(long)_f * _o.Intervals];
        _reservoir = new List<Slot>?[(long)_f * _o.Intervals];
        _top = Enumerable.Range(0, _f).Select(_ => new List<Slot>(_o.TopExamples)).ToArray();
        _topMin = new float[_f];
        _rng = new SeededRandom(_o.Seed);
    }

    /// <summary>The SAE feature index of each collected column, in output order.</summary>
    public IReadOnlyList<int> Features => _features;
    /// <summary>Tokens counted so far (excluded positions are not counted).</summary>
    public long Tokens => _tokens;
    /// <summary>Context windows seen so far.</summary>
    public long Windows => _windows;

    /// <summary>
    /// Adds a group of context windows. <paramref name="acts"/> is [windows, pos, features] float32: the activations of
    /// the selected features (columns in <see cref="Features"/> order) at every position of <paramref name="windows"/>.
    /// <paramref name="keep"/> ([windows, pos] bool, optional) marks the counted positions (false: BOS or another excluded
    /// token, shown in contexts but not counted). Windows get consecutive indices from 0 in the order they are added.
    /// </summary>
    public void Add(IReadOnlyList<long[]> windows, Tensor acts, Tensor? keep = null)
    {
        ArgumentNullException.ThrowIfNull(windows);
        ArgumentNullException.ThrowIfNull(acts);
        int b = windows.Count;
        if (b == 0) return;
        int s = windows[0].Length;
        if (acts.dim() != 3 || acts.shape[0] != b || acts.shape[1] != s || acts.shape[2] != _f)
            throw new SaeSharpException($"feature activations have shape [{string.Join(", ", acts.shape)}], expected [{b}, {s}, {_f}]");
        using var scope = NewDisposeScope();
        var a = acts.to(ScalarType.Float32).cpu().contiguous();
        bool[]? keepRows = null;
        if (keep is not null)
        {
            if (keep.dim() != 2 || keep.shape[0] != b || keep.shape[1] != s)
                throw new SaeSharpException($"keep mask has shape [{string.Join(", ", keep.shape)}], expected [{b}, {s}]");
            keepRows = keep.to(ScalarType.Bool).cpu().contiguous().data<bool>().ToArray();
        }
        long n = (long)b * s * _f;
        // The span reads a's memory: a is held (read again) until the span is done with, on every way out.
        try
        {
            ReadOnlySpan<float> span = System.Runtime.InteropServices.MemoryMarshal.Cast<byte, float>(a.bytes);
            if (span.Length != n) throw new InvalidOperationException("feature activations are not contiguous");
            int hb = _o.HistogramBins, ib = _o.Intervals;
            for (int w = 0; w < b; w++)
            {
                if (windows[w].Length != s) throw new SaeSharpException($"context window {_windows + w} has {windows[w].Length} tokens, expected {s}");
                for (int p = 0; p < s; p++)
                {
                    int row = w * s + p;
                    if (keepRows is not null && !keepRows[row]) continue;
                    _tokens++;
                    var r = span.Slice(row * _f, _f);
                    for (int j = 0; j < r.Length; j++)
                    {
                        float v = r[j];
                        if (!(v > 0))
                        {
                            if (float.IsNaN(v)) throw new SaeSharpException($"feature {_features[j]} has a NaN activation in window {_windows + w}, position {p}");
                            continue;
                        }
                        if (float.IsInfinity(v)) throw new SaeSharpException($"feature {_features[j]} has an infinite activation in window {_windows + w}, position {p}");
                        _count[j]++;
                        _sum[j] += v;
                        if (v > _max[j]) _max[j] = v;
                        if (_exp[j] == int.MinValue) _exp[j] = Math.ILogB(v) + 1;
                        else if (v >= Math.ScaleB(1.0, _exp[j])) Grow(j, Math.ILogB(v) + 1);
                        double unit = Math.ScaleB(v, -_exp[j]);
                        _hist[(long)j * hb + Math.Min((int)(unit * hb), hb - 1)]++;
                        int bin = Math.Min((int)(unit * ib), ib - 1);
                        long slot = (long)j * ib + bin;
                        long c = ++_ivCount[slot];
                        int k = _o.SamplesPerInterval;
                        if (c <= k)
                        {
                            (_reservoir[slot] ??= new List<Slot>(k)).Add(new Slot(v, _windows + w, p, null));
                        }
                        else
                        {
                            long pick = _rng.NextLong(c);
                            if (pick < k) _reservoir[slot]![(int)pick] = new Slot(v, _windows + w, p, null);
                        }
                        if (_o.TopExamples > 0 && (_top[j].Count < _o.TopExamples || v > _topMin[j]))
                            PushTop(j, new Slot(v, _windows + w, p, null));
                    }
                }
            }
            Materialize(windows, span, s);
        }
        finally
        {
            GC.KeepAlive(a);
        }
        _windows += b;
    }

    /// <summary>A kept example: value and place; its context is copied (<see cref="Materialize"/>) only if it is still kept
    /// at the end of the batch it came from, so examples displaced within a batch cost no allocation.</summary>
    private readonly record struct Slot(float Activation, long Window, int Position, ActivationExample? Example);

    /// <summary>Builds the context of every kept example that came from the batch being added.</summary>
    private void Materialize(IReadOnlyList<long[]> windows, ReadOnlySpan<float> acts, int s)
    {
        int ib = _o.Intervals;
        for (int j = 0; j < _f; j++)
        {
            Fill(_top[j], windows, acts, s, j);
            for (int i = 0; i < ib; i++)
                if (_reservoir[(long)j * ib + i] is { } r) Fill(r, windows, acts, s, j);
        }
    }

    private void Fill(List<Slot> slots, IReadOnlyList<long[]> windows, ReadOnlySpan<float> acts, int s, int j)
    {
        for (int i = 0; i < slots.Count; i++)
        {
            var x = slots[i];
            if (x.Example is null)
                slots[i] = x with { Example = Example(windows, acts, (int)(x.Window - _windows), x.Position, s, j, x.Activation) };
        }
    }

    private ActivationExample Example(IReadOnlyList<long[]> windows, ReadOnlySpan<float> acts, int w, int p, int s, int j, float v)
    {
        int lo = Math.Max(0, p - _o.Context), hi = Math.Min(s - 1, p + _o.Context);
        var tokens = new int[hi - lo + 1];
        var values = new float[hi - lo + 1];
        for (int q = lo; q <= hi; q++)
        {
            tokens[q - lo] = (int)windows[w][q];
            values[q - lo] = acts[(w * s + q) * _f + j];
        }
        return new ActivationExample(v, (int)windows[w][p], p - lo, tokens, values, _windows + w, p);
    }

    /// <summary>True when <paramref name="x"/> ranks above <paramref name="y"/>: larger activation, then earlier in the corpus.</summary>
    private static bool Better(Slot x, Slot y) =>
        x.Activation > y.Activation || (x.Activation == y.Activation && (x.Window, x.Position).CompareTo((y.Window, y.Position)) < 0);

    private void PushTop(int j, Slot e)
    {
        var h = _top[j];
        if (h.Count < _o.TopExamples)
        {
            h.Add(e);
            int i = h.Count - 1;
            while (i > 0)
            {
                int parent = (i - 1) / 2;
                if (!Better(h[parent], h[i])) break;
                (h[parent], h[i]) = (h[i], h[parent]);
                i = parent;
            }
        }
        else
        {
            if (!Better(e, h[0])) return;
            h[0] = e;
            int i = 0;
            while (true)
            {
                int l = 2 * i + 1, r = l + 1, worst = i;
                if (l < h.Count && Better(h[worst], h[l])) worst = l;
                if (r < h.Count && Better(h[worst], h[r])) worst = r;
                if (worst == i) break;
                (h[worst], h[i]) = (h[i], h[worst]);
                i = worst;
            }
        }
        if (h.Count == _o.TopExamples) _topMin[j] = h[0].Activation;
    }

    /// <summary>Doubles feature <paramref name="j"/>'s range until it is 2^<paramref name="exp"/>, merging neighbouring bins.</summary>
    private void Grow(int j, int exp)
    {
        int factorLog = exp - _exp[j];
        _exp[j] = exp;
        MergeCounts(_hist.AsSpan().Slice(j * _o.HistogramBins, _o.HistogramBins), factorLog);
        int ib = _o.Intervals;
        var counts = _ivCount.AsSpan().Slice(j * ib, ib);
        for (int step = 0; step < factorLog; step++)
        {
            for (int i = 0; i < ib; i++)
            {
                long a = j * (long)ib + i;
                if (i < ib / 2)
                {
                    long x = j * (long)ib + 2 * i, y = x + 1;
                    _reservoir[a] = MergeSamples(_reservoir[x], counts[2 * i], _reservoir[y], counts[2 * i + 1]);
                    counts[i] = counts[2 * i] + counts[2 * i + 1];
                }
                else
                {
                    _reservoir[a] = null;
                    counts[i] = 0;
                }
            }
        }
    }

    private static void MergeCounts(Span<long> bins, int factorLog)
    {
        for (int step = 0; step < factorLog; step++)
        {
            int n = bins.Length;
            for (int i = 0; i < n / 2; i++) bins[i] = bins[2 * i] + bins[2 * i + 1];
            bins[(n / 2)..].Clear();
        }
    }

    /// <summary>A uniform sample of the union of two populations from uniform samples of each: the number taken from the
    /// first is drawn as from a hypergeometric law (sequential draws without replacement), the members at random.</summary>
    private List<Slot>? MergeSamples(List<Slot>? a, long na, List<Slot>? b, long nb)
    {
        if (nb == 0 || b is null) return a;
        if (na == 0 || a is null) return b;
        int k = _o.SamplesPerInterval;
        int take = (int)Math.Min(k, na + nb);
        long ra = na, rb = nb;
        int fromA = 0;
        for (int t = 0; t < take; t++)
        {
            if (_rng.NextLong(ra + rb) < ra) { fromA++; ra--; }
            else rb--;
        }
        var merged = new List<Slot>(k);
        merged.AddRange(Shuffled(a).Take(fromA));
        merged.AddRange(Shuffled(b).Take(take - fromA));
        return merged;
    }

    private List<Slot> Shuffled(List<Slot> xs)
    {
        var copy = new List<Slot>(xs);
        for (int i = copy.Count - 1; i > 0; i--)
        {
            int r = (int)_rng.NextLong(i + 1);
            (copy[i], copy[r]) = (copy[r], copy[i]);
        }
        return copy;
    }

    /// <summary>The statistics of every selected feature so far (weight effects left empty), in <see cref="Features"/> order.</summary>
    public IReadOnlyList<FeatureStatistics> Result()
    {
        var result = new FeatureStatistics[_f];
        int hb = _o.HistogramBins, ib = _o.Intervals;
        for (int j = 0; j < _f; j++)
        {
            long c = _count[j];
            var topSlots = _top[j].ToList();
            topSlots.Sort((x, y) => Better(x, y) ? -1 : Better(y, x) ? 1 : 0);
            var top = topSlots.Select(x => x.Example!).ToList();
            Histogram hist = new([], []);
            var intervals = new List<ActivationInterval>();
            if (c > 0)
            {
                double range = Math.ScaleB(1.0, _exp[j]);
                double unit = _max[j] / range;
                int nh = Math.Min((int)(unit * hb), hb - 1) + 1;
                hist = new Histogram(Enumerable.Range(0, nh + 1).Select(i => range * i / hb).ToArray(),
                    _hist.AsSpan().Slice(j * hb, nh).ToArray());
                int ni = Math.Min((int)(unit * ib), ib - 1) + 1;
                for (int i = 0; i < ni; i++)
                {
                    long slot = (long)j * ib + i;
                    var sampleSlots = (_reservoir[slot] ?? []).ToList();
                    sampleSlots.Sort((x, y) => Better(x, y) ? -1 : Better(y, x) ? 1 : 0);
                    var samples = sampleSlots.Select(x => x.Example!).ToList();
                    intervals.Add(new ActivationInterval(range * i / ib, range * (i + 1) / ib, _ivCount[slot], (double)_ivCount[slot] / c, samples));
                }
            }
            result[j] = new FeatureStatistics
            {
                Feature = _features[j],
                Density = _tokens == 0 ? 0 : (double)c / _tokens,
                MaxActivation = _max[j],
                MeanNonzero = c == 0 ? 0 : _sum[j] / c,
                Firings = c,
                TopExamples = top,
                Intervals = intervals,
                Histogram = hist,
            };
        }
        return result;
    }
}
