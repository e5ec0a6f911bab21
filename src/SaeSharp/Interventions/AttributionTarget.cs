using System.Globalization;

namespace SaeSharp.Interventions;

/// <summary>What an <see cref="AttributionTarget"/> is.</summary>
public enum AttributionTargetKind
{
    /// <summary>A vocabulary token's centred logit.</summary>
    Token,
    /// <summary>logit(A) − logit(B) of two vocabulary tokens.</summary>
    LogitDifference,
    /// <summary>A direction of the caller's, read at the final norm's output at the last position.</summary>
    Custom,
}

/// <summary>
/// One logit node of an <see cref="AttributionGraph"/>, as an element of circuit-tracer's
/// <c>attribute(..., attribution_targets=...)</c>:
/// <see cref="Token"/> is a token string's or id's target (its probability at the last position, its unembedding row
/// minus the mean row); <see cref="Custom"/> is circuit-tracer's <c>CustomTarget(token_str, prob, vec)</c> (the vector
/// used as given, the probability as the weight of the node in pruning); <see cref="LogitDifference"/> is the custom
/// target circuit-tracer's tests build for logit(A) − logit(B): vector W_U[A] − W_U[B], weight |p(A) − p(B)| (0.5 when
/// that is below 1e-6), label <c>logit(A)-logit(B)</c>. A custom or difference target's node carries the virtual index
/// d_vocab + (its place in the target list), as circuit-tracer's.
/// </summary>
public sealed record AttributionTarget
{
    private AttributionTarget(AttributionTargetKind kind) => Kind = kind;

    /// <summary>Token, logit difference or custom direction.</summary>
    public AttributionTargetKind Kind { get; }
    /// <summary>The token (<see cref="AttributionTargetKind.Token"/>) or A of A − B.</summary>
    public long TokenId { get; private init; }
    /// <summary>B of A − B.</summary>
    public long OtherTokenId { get; private init; }
    /// <summary>The node's label (circuit-tracer's <c>token_str</c>) for a custom or difference target; null: the token's text.</summary>
    public string? Label { get; private init; }
    /// <summary>A custom target's weight (circuit-tracer's <c>prob</c>).</summary>
    public double Probability { get; private init; }
    /// <summary>A custom target's direction [d_model].</summary>
    public IReadOnlyList<double>? Vector { get; private init; }

    /// <summary>The centred logit of token <paramref name="id"/>.</summary>
    public static AttributionTarget Token(long id) => new(AttributionTargetKind.Token) { TokenId = id };

    /// <summary>logit(<paramref name="a"/>) − logit(<paramref name="b"/>); <paramref name="label"/> defaults to
    /// <c>logit(a)-logit(b)</c> with the ids (the CLI writes the token strings, as circuit-tracer's tests do).</summary>
    public static AttributionTarget LogitDifference(long a, long b, string? label = null)
    {
        label ??= FormattableString.Invariant($"logit({a})-logit({b})");
        if (a == b) throw new SaeSharpException($"attribution target '{label}': A and B are the same token ({a}), so the difference is 0 everywhere");
        return new(AttributionTargetKind.LogitDifference) { TokenId = a, OtherTokenId = b, Label = label };
    }

    /// <summary>circuit-tracer's <c>CustomTarget(token_str, prob, vec)</c>: <paramref name="vector"/> [d_model] read at
    /// the final norm's output at the last position, weighted by <paramref name="probability"/> (≥ 0) in pruning; a zero
    /// vector is an error.</summary>
    public static AttributionTarget Custom(string label, double probability, IReadOnlyList<double> vector)
    {
        ArgumentNullException.ThrowIfNull(label);
        ArgumentNullException.ThrowIfNull(vector);
        if (!double.IsFinite(probability) || probability < 0)
            throw new SaeSharpException($"attribution target '{label}': the probability (weight) must be a finite number ≥ 0, got {probability}");
        if (vector.Count == 0 || vector.Any(v => !double.IsFinite(v)))
            throw new SaeSharpException($"attribution target '{label}': the vector must be non-empty and finite");
        if (vector.All(v => v == 0))
            throw new SaeSharpException($"attribution target '{label}': the vector is zero, so nothing can be attributed to it");
        return new(AttributionTargetKind.Custom) { Label = label, Probability = probability, Vector = vector.ToArray() };
    }

    /// <summary>A <see cref="Custom"/> target whose direction is read from <paramref name="path"/>: a <c>.npy</c> file or a
    /// <c>.safetensors</c> file holding one tensor, of d_model values (shape [d_model] or [1, d_model], any float type);
    /// labelled with the file name without its extension.</summary>
    public static AttributionTarget FromFile(string path, double probability = 1.0)
    {
        ArgumentNullException.ThrowIfNull(path);
        if (!File.Exists(path)) throw new SaeSharpException($"attribution target vector '{path}': no such file");
        using var scope = TorchSharp.torch.NewDisposeScope();
        TorchSharp.torch.Tensor v;
        if (path.EndsWith(".npy", StringComparison.OrdinalIgnoreCase)) v = IO.Npy.Load(path);
        else if (path.EndsWith(".safetensors", StringComparison.OrdinalIgnoreCase))
        {
            var all = IO.SafeTensors.Load(path);
            if (all.Count != 1)
                throw new SaeSharpException($"attribution target vector '{path}': holds {all.Count} tensors ({string.Join(", ", all.Keys)}); give a file with one");
            v = all.Values.Single();
        }
        else throw new SaeSharpException($"attribution target vector '{path}': give a .npy or .safetensors file");
        if (!v.is_floating_point())
            throw new SaeSharpException($"attribution target vector '{path}': {v.dtype} values; the direction must be floating point");
        if (v.dim() == 2 && v.shape[0] == 1) v = v[0];
        if (v.dim() != 1)
            throw new SaeSharpException($"attribution target vector '{path}': shape [{string.Join(", ", v.shape)}]; give one vector of d_model values");
        return Custom(Path.GetFileNameWithoutExtension(path), probability, v.to(TorchSharp.torch.ScalarType.Float64).data<double>().ToArray());
    }

    /// <summary>
    /// Parses a CLI target: <c>logit-diff:A,B</c> (a difference), <c>logit:A</c> (a token),
    /// <c>vector:PATH[@WEIGHT]</c> (a <see cref="FromFile"/> direction, weight 1 unless given), or any other text: a token
    /// string (circuit-tracer's <c>Sequence[str]</c>, one token each). A and B are token ids or strings that
    /// <paramref name="tokenId"/> maps to one token id each (as <see cref="AttributionMetric.Parse"/>); a bare string is
    /// always a string, never an id. A difference's label is <c>logit(A)-logit(B)</c> with A and B as written.
    /// </summary>
    public static AttributionTarget Parse(string spec, Func<string, long>? tokenId = null)
    {
        ArgumentNullException.ThrowIfNull(spec);
        if (spec.Length == 0) throw new SaeSharpException("attribution target: empty (give a token string, logit:A, logit-diff:A,B or vector:PATH)");
        long Id(string t, bool numeric)
        {
            if (numeric && long.TryParse(t, NumberStyles.None, CultureInfo.InvariantCulture, out long id)) return id;
            return tokenId is not null ? tokenId(t)
                : throw new SaeSharpException($"attribution target '{spec}': '{t}' is not a token id (give a model with a tokenizer to use token strings)");
        }
        if (spec.StartsWith("logit-diff:", StringComparison.Ordinal))
        {
            var parts = spec["logit-diff:".Length..].Split(',');
            if (parts.Length != 2 || parts.Any(p => p.Length == 0))
                throw new SaeSharpException($"attribution target '{spec}': write logit-diff:A,B with two tokens");
            return LogitDifference(Id(parts[0], true), Id(parts[1], true), $"logit({parts[0]})-logit({parts[1]})");
        }
        if (spec.StartsWith("vector:", StringComparison.Ordinal) && spec.Length > "vector:".Length)
        {
            string file = spec["vector:".Length..];
            double weight = 1;
            int at = file.LastIndexOf('@');
            if (at > 0 && !File.Exists(file))
            {
                if (!double.TryParse(file[(at + 1)..], NumberStyles.Float, CultureInfo.InvariantCulture, out weight))
                    throw new SaeSharpException($"attribution target '{spec}': '{file[(at + 1)..]}' after @ is not a number (write vector:PATH@WEIGHT)");
                file = file[..at];
            }
            return FromFile(file, weight);
        }
        if (spec.StartsWith("logit:", StringComparison.Ordinal) && spec.Length > "logit:".Length) return Token(Id(spec["logit:".Length..], true));
        return Token(Id(spec, false));
    }
}
