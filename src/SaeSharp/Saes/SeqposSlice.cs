using System.Globalization;
using System.Text.Json;
using System.Text.Json.Nodes;
using System.Text.Json.Serialization;
using TorchSharp;
using static TorchSharp.torch;

namespace SaeSharp.Saes;

/// <summary>
/// SAELens's <c>seqpos_slice</c>: the positions of each context window that are trained on, <c>slice(*seqpos_slice)</c>
/// of the window as Python slices it (<c>[1, null]</c> skips position 0, <c>[null, -1]</c> the last, <c>[5, -5, 2]</c>
/// every other position but the first and last five). The tuple keeps the elements as given: a single element is
/// Python's <c>slice(stop)</c>. On the command line it is slice text (<c>1:</c>, <c>:-1</c>, <c>2:100</c>, <c>::2</c>).
/// </summary>
[JsonConverter(typeof(SeqposSliceConverter))]
public sealed class SeqposSlice : IEquatable<SeqposSlice>
{
    private readonly int?[] _elements;

    private SeqposSlice(int?[] elements, string what)
    {
        if (elements.Length is < 1 or > 3)
            throw new SaeSharpException($"{what} {Describe(elements)}: expected 1 to 3 elements (start, stop, step), as SAELens's tuple");
        _elements = elements;
        if (Step is <= 0)
            throw new SaeSharpException($"{what} {this}: the step must be at least 1 (as SAELens requires)");
    }

    /// <summary>SAELens's default <c>(None,)</c>: every position.</summary>
    public static SeqposSlice All { get; } = new([null], "seqpos_slice");

    /// <summary>The tuple as given (SAELens's JSON list).</summary>
    public IReadOnlyList<int?> Elements => _elements;

    /// <summary>First position (negative: from the end); null: 0.</summary>
    public int? Start => _elements.Length >= 2 ? _elements[0] : null;

    /// <summary>End position, exclusive (negative: from the end); null: the window's end.</summary>
    public int? Stop => _elements.Length >= 2 ? _elements[1] : _elements[0];

    /// <summary>Step; null: 1.</summary>
    public int? Step => _elements.Length == 3 ? _elements[2] : null;

    /// <summary>True when the slice keeps every position of any window (<c>[null]</c>, <c>[null, null]</c>, <c>::1</c>).</summary>
    public bool IsAll => Start is null or 0 && Stop is null && Step is null or 1;

    /// <summary>Parses Python slice text: <c>START:STOP</c> or <c>START:STOP:STEP</c>, each part an integer or empty.</summary>
    public static SeqposSlice Parse(string text, string what = "--seqpos-slice")
    {
        ArgumentNullException.ThrowIfNull(text);
        var parts = text.Trim().Split(':');
        if (parts.Length is < 2 or > 3)
            throw new SaeSharpException($"{what} {text}: expected Python slice text START:STOP[:STEP] (e.g. 1: to skip position 0, :-1, 2:100)");
        var elements = new int?[parts.Length];
        for (int i = 0; i < parts.Length; i++)
        {
            string p = parts[i].Trim();
            if (p.Length == 0) continue;
            if (!int.TryParse(p, NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out int v))
                throw new SaeSharpException($"{what} {text}: '{p}' is not an integer; expected START:STOP[:STEP] (e.g. 1:, :-1, 2:100)");
            elements[i] = v;
        }
        return new SeqposSlice(elements, what);
    }

    /// <summary>Reads SAELens's JSON form: a list of 1 to 3 integers or nulls; null is <see cref="All"/>.</summary>
    public static SeqposSlice FromJson(JsonNode? node, string what = "seqpos_slice")
    {
        if (node is null) return All;
        if (node is not JsonArray a)
            throw new SaeSharpException($"{what} {node.ToJsonString()}: expected a list such as [1, null] (SAELens's tuple of start, stop, step)");
        var elements = new int?[a.Count];
        for (int i = 0; i < a.Count; i++)
        {
            if (a[i] is null) continue;
            if (a[i]!.GetValueKind() != JsonValueKind.Number || !int.TryParse(a[i]!.ToJsonString(), NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out int v))
                throw new SaeSharpException($"{what} {node.ToJsonString()}: element {i} is not an integer or null");
            elements[i] = v;
        }
        return new SeqposSlice(elements, what);
    }

    /// <summary>The <c>seqpos_slice</c> of an SAE's cfg.json metadata; null when absent (SAELens's <c>from_sae</c> then uses
    /// every position). A malformed value is an error naming it. (<c>SaeMetadataWindows.SeqposSlice()</c> reads it so.)</summary>
    public static SeqposSlice? Of(SaeMetadata metadata)
    {
        ArgumentNullException.ThrowIfNull(metadata);
        if (metadata.Extra?.TryGetValue("seqpos_slice", out var v) != true) return null;
        return FromJson(v.ValueKind == JsonValueKind.Null ? null : JsonNode.Parse(v.GetRawText()), "cfg.json metadata seqpos_slice");
    }

    /// <summary>SAELens's JSON form (the tuple as a list).</summary>
    public JsonArray ToJson() => new(_elements.Select(e => e is int v ? (JsonNode)JsonValue.Create(v) : null).ToArray());

    /// <summary>The positions kept of a window of <paramref name="contextSize"/> tokens,
    /// <c>list(range(context_size))[slice(*seqpos_slice)]</c>; a slice that keeps none is an error naming it (SAELens's
    /// <c>_validate_seqpos</c>).</summary>
    public int[] Positions(int contextSize)
    {
        if (contextSize <= 0) throw new SaeSharpException($"context size must be positive, got {contextSize}");
        int step = Step ?? 1;
        int start = Clamp(Start ?? 0, contextSize), stop = Stop is int s ? Clamp(s, contextSize) : contextSize;
        var positions = new List<int>();
        for (int p = start; p < stop; p += step) positions.Add(p);
        if (positions.Count == 0)
            throw new SaeSharpException($"seqpos_slice {this} ({Describe(_elements)}) selects no position of a {contextSize}-token context window; " +
                                        "give a slice that keeps at least one (e.g. 1: skips position 0)");
        return positions.ToArray();
    }

    /// <summary>True when a bound counts from the end (<c>:-1</c>, <c>-5:</c>): which positions it keeps depends on the length.</summary>
    public bool CountsFromEnd => Start < 0 || Stop < 0;

    /// <summary>
    /// [batch, pos] bool: true where <paramref name="positions"/> [batch, pos] (each token's position in its row, from 0) is
    /// a position this slice keeps of <c>range(length)</c>, the row's length given by <paramref name="lengths"/> [batch]
    /// (<see cref="Positions"/> for each row, as a mask; a row it keeps nothing of is all false, not an error).
    /// </summary>
    internal Tensor Mask(Tensor positions, Tensor lengths)
    {
        using var scope = NewDisposeScope();
        var len = lengths.to(ScalarType.Int64).view(-1, 1);
        Tensor Bound(int? bound, bool start)
        {
            if (bound is not int i) return start ? zeros_like(len) : len;
            using var v = ((long)i).ToScalar();
            return i < 0 ? len.add(v, TorchScalars.One).clamp_min(TorchScalars.Of(0L)) : len.clamp_max(v);
        }
        var first = Bound(Start, true);
        var keep = positions.ge(first).logical_and(positions.lt(Bound(Stop, false)));
        if (Step is int step and > 1)
        {
            using var st = ((long)step).ToScalar();
            keep = keep.logical_and((positions - first).remainder(st).eq(TorchScalars.Of(0L)));
        }
        return keep.MoveToOuterDisposeScope();
    }

    /// <summary>Python's clamping of a slice bound to a sequence of <paramref name="length"/> (step &gt; 0).</summary>
    private static int Clamp(int i, int length) => i < 0 ? Math.Max(0, length + i) : Math.Min(i, length);

    /// <summary>Python slice text (<c>1:</c>, <c>:-1</c>, <c>2:100:2</c>; <c>:</c> for <see cref="All"/>).</summary>
    public override string ToString()
    {
        static string F(int? v) => v?.ToString(CultureInfo.InvariantCulture) ?? "";
        return Step is int step ? $"{F(Start)}:{F(Stop)}:{step}" : $"{F(Start)}:{F(Stop)}";
    }

    private static string Describe(int?[] elements) => "[" + string.Join(", ", elements.Select(e => e?.ToString(CultureInfo.InvariantCulture) ?? "null")) + "]";

    /// <inheritdoc/>
    public bool Equals(SeqposSlice? other) => other is not null && _elements.SequenceEqual(other._elements);
    /// <inheritdoc/>
    public override bool Equals(object? obj) => Equals(obj as SeqposSlice);
    /// <inheritdoc/>
    public override int GetHashCode() => _elements.Aggregate(17, (h, e) => h * 31 + (e ?? int.MinValue));
}

/// <summary>JSON form of <see cref="SeqposSlice"/>: SAELens's list of start, stop, step.</summary>
internal sealed class SeqposSliceConverter : JsonConverter<SeqposSlice>
{
    public override SeqposSlice? Read(ref Utf8JsonReader reader, Type typeToConvert, JsonSerializerOptions options)
    {
        try
        {
            return SeqposSlice.FromJson(JsonNode.Parse(ref reader));
        }
        catch (SaeSharpException e)
        {
            throw new JsonException(e.Message);
        }
    }

    public override void Write(Utf8JsonWriter writer, SeqposSlice value, JsonSerializerOptions options) => value.ToJson().WriteTo(writer);
}
