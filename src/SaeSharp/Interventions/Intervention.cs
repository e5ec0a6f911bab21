using TorchSharp;
using SaeSharp.Hooks;
using SaeSharp.Models;
using SaeSharp.Saes;
using static TorchSharp.torch;

namespace SaeSharp.Interventions;

/// <summary>
/// An edit of a model run defined by an SAE's features, as a reusable hook object: <see cref="ToHook"/> gives the
/// (hook name, function) pair for <see cref="RunOptions.Hooks"/> or <see cref="GenerationOptions.Hooks"/>, and
/// <see cref="HookedSaeTransformer"/> applies lists of them. With x the activation at the SAE's hook, f = encode(x) and
/// W_dec the decoder: <see cref="Steering"/>, <see cref="Clamp"/>, <see cref="Ablation"/>. For a transcoder (reading its
/// hook, replacing its output hook <c>hook_name_out</c>) f = encode(x_in) and the edits act where its output goes: the
/// output hook's activation x_out.
/// </summary>
public abstract class Intervention
{
    /// <param name="sae">The SAE whose features are used (not owned).</param>
    /// <param name="hook">Hook name or alias; null: the SAE's <c>metadata.hook_name</c>.</param>
    protected Intervention(Sae sae, string? hook)
    {
        ArgumentNullException.ThrowIfNull(sae);
        Sae = sae;
        Hook = sae.Cfg.Metadata.HookOr(hook);
    }

    /// <summary>The SAE whose features define the edit (not owned).</summary>
    public Sae Sae { get; }
    /// <summary>The hook the edit acts at, as given (a hook name or an alias).</summary>
    public string Hook { get; }

    /// <summary>The hook function of this intervention on <paramref name="model"/> in a run where <paramref name="saes"/>
    /// are spliced (null: none).</summary>
    public abstract (string Name, Func<Tensor, Tensor?> Fn) ToHook(HookedTransformer model, IReadOnlyList<AttachedSae>? saes = null);

    /// <summary>The SAE spliced at this intervention's hook, or null when none is.</summary>
    private protected AttachedSae? SplicedAt(HookedTransformer model, IReadOnlyList<AttachedSae>? saes, out string hook)
    {
        hook = model.CheckSaeFits(Sae, Hook);
        string h = hook;
        var at = model.ResolveSaes(saes)?.FirstOrDefault(a => a.Hook == h);
        if (at is not null && !ReferenceEquals(at.Sae, Sae))
            throw new SaeSharpException($"{GetType().Name} at '{hook}' uses a different SAE from the one spliced there");
        return at;
    }

    /// <summary>Checks a feature index against d_sae.</summary>
    private protected int CheckFeature(int feature)
    {
        if (feature < 0 || feature >= Sae.Cfg.DSae)
            throw new SaeSharpException($"feature {feature} is out of range for an SAE with d_sae={Sae.Cfg.DSae} (0..{Sae.Cfg.DSae - 1})");
        return feature;
    }

    /// <summary>Checks that <paramref name="value"/> is a finite number (a NaN would turn the whole run into NaN).</summary>
    private protected static double CheckFinite(double value, string what) =>
        double.IsFinite(value) ? value : throw new SaeSharpException($"{what} must be a finite number, got {value}");

    /// <summary>The spliced SAE this intervention needs (clamp and ablate act on f).</summary>
    private protected AttachedSae RequireSpliced(HookedTransformer model, IReadOnlyList<AttachedSae>? saes, out string hook) =>
        SplicedAt(model, saes, out hook)
        ?? throw new SaeSharpException($"{GetType().Name} at '{hook}' acts on the SAE's features: splice the SAE there (AttachedSae / --sae)");
}

/// <summary>
/// Steering (SAELens steering tutorial): x ← x + S·W_dec[F] at every position, or at <see cref="Positions"/>. With the SAE
/// spliced at the hook the vector is added to its output (<c>hook_sae_output</c>); otherwise to the raw activation. For a
/// transcoder both are at its output hook (<c>hook_name_out</c>): W_dec[F] is a direction of x_out.
/// </summary>
public sealed class Steering : Intervention
{
    /// <summary>Steers by <paramref name="scale"/> times the decoder row of <paramref name="feature"/>; an index outside
    /// 0..d_sae − 1 or a scale that is NaN or infinite is a <see cref="SaeSharpException"/>.</summary>
    public Steering(Sae sae, int feature, double scale, string? hook = null) : base(sae, hook)
    {
        Feature = CheckFeature(feature);
        Scale = CheckFinite(scale, "steering scale");
    }

    /// <summary>The feature F whose decoder row W_dec[F] is added.</summary>
    public int Feature { get; }
    /// <summary>The multiple S of W_dec[F] added (in the activation's units; W_dec rows are usually unit norm).</summary>
    public double Scale { get; }
    /// <summary>
    /// Token positions to steer (0-based, counting real tokens; during generation the prompt and the new tokens continue
    /// one numbering); null: every position. A negative position counts back from the end of each row's prompt, as
    /// Python's <c>tokens[-1]</c>: -1 is the last real token of the row's prompt (<see cref="FromPromptEnd"/>), and stays that
    /// token while generation adds new ones; outside generation the prompt is the run's tokens. A negative position before
    /// a row's first token, or a position the run does not reach (≥ the longest row's real tokens, or during generation ≥
    /// that plus the new tokens asked for), is a <see cref="SaeSharpException"/> from the run naming the position and the
    /// length; a row of a padded batch shorter than a non-negative position is left as is, with no error (the position is
    /// reached by a longer row). After generation, <see cref="Models.GenerationRow.Affects"/> on
    /// <see cref="Models.GenerationResult.Rows"/> says per row which (non-negative) positions took effect.
    /// </summary>
    public IReadOnlyCollection<long>? Positions { get; init; }

    /// <summary><paramref name="position"/> as an absolute position of a prompt of <paramref name="promptLength"/> tokens: a
    /// non-negative one as is, a negative one counted back from the prompt's end (-1 its last token, as Python's
    /// <c>tokens[-1]</c>; generated tokens do not move it). One before the prompt's start is a <see cref="SaeSharpException"/>
    /// naming <paramref name="given"/> (default: "position P") and <paramref name="prompt"/>.</summary>
    public static long FromPromptEnd(long position, long promptLength, string? given = null, string prompt = "the prompt")
    {
        if (position >= 0) return position;
        if (promptLength + position < 0)
            throw new SaeSharpException($"{given ?? $"position {position}"}: counts back from the end of {prompt}, which has {promptLength} " +
                $"tokens (negative positions run -{promptLength}..-1)");
        return promptLength + position;
    }

    /// <summary><paramref name="delta"/> [batch, pos, ...] zeroed outside <paramref name="positions"/> (null: returned as is),
    /// by the running forward pass's token positions (<see cref="HookRunner.CurrentPositions"/>; during generation the
    /// prompt and new tokens one numbering); a negative position counts from the end of each row's prompt
    /// (<see cref="HookRunner.PromptLengths"/> during generation, else the row's real tokens). A position the run does not
    /// reach is a <see cref="SaeSharpException"/>.</summary>
    internal static Tensor AtPositions(Tensor delta, long[]? positions)
    {
        if (positions is null) return delta;
        var pos = HookRunner.CurrentPositions
            ?? throw new SaeSharpException("steering at positions needs the model's token positions (run it through the model)");
        long length = pos.max().item<long>() + 1;
        if (HookRunner.GenerationLength is long g && g > length) length = g;
        if (positions.FirstOrDefault(p => p >= length, -1) is var outside && outside >= 0)
            throw new SaeSharpException($"steering position {outside} is outside the sequence: it has {length} token(s) " +
                $"(positions 0..{length - 1}{(HookRunner.GenerationLength is null ? "" : ", counting the new tokens")})");
        Tensor mask;
        if (positions.All(p => p >= 0)) mask = isin(pos, tensor(positions, device: pos.device));
        else
        {
            // Per row: each position resolved against the row's prompt, then compared with the row's token positions.
            long b = pos.shape[0];
            var prompts = HookRunner.PromptLengths ?? pos.amax([1]).cpu().data<long>().Select(p => p + 1).ToArray();
            var table = new long[b * positions.Length];
            for (int r = 0; r < b; r++)
                for (int j = 0; j < positions.Length; j++)
                    table[r * positions.Length + j] = FromPromptEnd(positions[j], prompts[r], $"steering position {positions[j]}",
                        b == 1 ? "the prompt" : $"row {r}'s prompt");
            mask = pos.unsqueeze(-1).eq(tensor(table, [b, 1, positions.Length], device: pos.device)).any(-1);
        }
        mask = mask.to(delta.dtype);
        return delta * mask.view([.. mask.shape, .. Enumerable.Repeat(1L, (int)delta.dim() - 2)]);
    }

    /// <summary>S·W_dec[F], [d_in] (caller disposes).</summary>
    public Tensor Vector()
    {
        using var _ = no_grad();
        using var scope = NewDisposeScope();
        using var scale = Scale.ToScalar();
        return (Sae.WDec[Feature] * scale).detach().MoveToOuterDisposeScope();
    }

    /// <inheritdoc/>
    public override (string Name, Func<Tensor, Tensor?> Fn) ToHook(HookedTransformer model, IReadOnlyList<AttachedSae>? saes = null)
    {
        var spliced = SplicedAt(model, saes, out var hook);
        // Unspliced, the raw activation the decoder writes to: a transcoder's output hook (whole), else the hook (or its head).
        var site = spliced ?? model.Attach(Sae, Hook);
        int? head = site.IsTranscoder ? null : Sae.Cfg.Metadata.HookHeadIndex;
        var positions = Positions?.ToArray();
        Tensor Add(Tensor x)
        {
            using var scope = NewDisposeScope();
            var vec = Vector().to(x.dtype, x.device);    // made per call, in the scope: a tensor the hook kept would be left to the finalizer
            Tensor delta;
            if (spliced is not null || head is null)
                delta = vec.view([.. Enumerable.Repeat(1L, 2), .. x.shape.Skip(2)]).expand(x.shape); // [.., d_in] over the trailing dims
            else
            {
                var shape = x.shape.ToArray();
                var zero = zeros(shape, x.dtype, x.device);
                zero.select(2, head.Value).add_(vec.view(1, 1, -1), TorchScalars.One);
                delta = zero;
            }
            return x.add(AtPositions(delta, positions), TorchScalars.One).MoveToOuterDisposeScope();
        }
        return (spliced is not null ? spliced.HookName(SaeHookPoints.Output) : site.WriteHook, Add);
    }
}

/// <summary>
/// Clamping: f_F ← V at every position (on <c>hook_sae_acts_post</c>); with the error term the activation becomes
/// x + (V − f_F)·W_dec[F]. Needs the SAE spliced at its hook. For a transcoder f is read at its input hook and x is its
/// output hook's activation.
/// </summary>
public sealed class Clamp : Intervention
{
    /// <summary>Clamps <paramref name="feature"/> to <paramref name="value"/>; an index outside 0..d_sae − 1 or a value that
    /// is NaN or infinite is a <see cref="SaeSharpException"/>.</summary>
    public Clamp(Sae sae, int feature, double value, string? hook = null) : base(sae, hook)
    {
        Feature = CheckFeature(feature);
        Value = CheckFinite(value, "clamp value");
    }

    /// <summary>The clamped feature F.</summary>
    public int Feature { get; }
    /// <summary>The value V the feature's activation is set to.</summary>
    public double Value { get; }

    /// <inheritdoc/>
    public override (string Name, Func<Tensor, Tensor?> Fn) ToHook(HookedTransformer model, IReadOnlyList<AttachedSae>? saes = null)
    {
        var spliced = RequireSpliced(model, saes, out _);
        int feature = Feature;
        double value = Value;
        return (spliced.HookName(SaeHookPoints.ActsPost), f =>
        {
            using var scope = NewDisposeScope();
            using var v = value.ToScalar();
            return f.index_fill(-1, tensor(new long[] { feature }, device: f.device), v).MoveToOuterDisposeScope();
        });
    }
}

/// <summary>
/// Ablation: f_F ← 0 (or its mean m_F) for each listed feature at every position (on <c>hook_sae_acts_post</c>); with
/// the error term the activation becomes x − Σ (f_F − m_F)·W_dec[F]. Needs the SAE spliced at its hook. For a transcoder
/// f is read at its input hook and x is its output hook's activation.
/// </summary>
public sealed class Ablation : Intervention
{
    /// <param name="sae">The SAE whose features are ablated (not owned).</param>
    /// <param name="features">Feature indices.</param>
    /// <param name="means">[d_sae] mean activation of each feature (mean ablation), or null for zero ablation; the mean of
    /// an ablated feature that is NaN or infinite is a <see cref="SaeSharpException"/> naming the feature.</param>
    /// <param name="hook">Hook name or alias; null: the SAE's <c>metadata.hook_name</c>.</param>
    public Ablation(Sae sae, IReadOnlyList<int> features, Tensor? means = null, string? hook = null) : base(sae, hook)
    {
        if (features.Count == 0) throw new SaeSharpException("ablation needs at least one feature");
        Features = features.Select(CheckFeature).Distinct().ToArray();
        if (means is not null && (means.dim() != 1 || means.shape[0] != sae.Cfg.DSae))
            throw new SaeSharpException($"feature means must be [d_sae={sae.Cfg.DSae}], got [{string.Join(", ", means.shape)}]");
        if (means is not null)
        {
            using var scope = NewDisposeScope();
            var values = means.to(ScalarType.Float64).cpu().data<double>();
            foreach (int f in Features)
                if (!double.IsFinite(values[f]))
                    throw new SaeSharpException($"the mean of ablated feature {f} is {values[f]} (means must be finite: a NaN would turn the run into NaN)");
        }
        Means = means;
    }

    /// <summary>The ablated feature indices, without repeats.</summary>
    public IReadOnlyList<int> Features { get; }
    /// <summary>[d_sae] means for mean ablation (not owned), or null for zero ablation.</summary>
    public Tensor? Means { get; }
    /// <summary>Token positions ablated (as <see cref="Steering.Positions"/>: 0-based, negative ones from the prompt's end);
    /// null: every position (SAELens tutorial's <c>sae_acts[:, pos, feature_id] = 0.0</c> with <c>pos</c> given or None).</summary>
    public IReadOnlyCollection<long>? Positions { get; init; }

    /// <inheritdoc/>
    public override (string Name, Func<Tensor, Tensor?> Fn) ToHook(HookedTransformer model, IReadOnlyList<AttachedSae>? saes = null)
    {
        var spliced = RequireSpliced(model, saes, out _);
        var features = Features.Select(i => (long)i).ToArray();
        var means = Means;
        var positions = Positions?.ToArray();
        return (spliced.HookName(SaeHookPoints.ActsPost), f =>
        {
            using var scope = NewDisposeScope();
            var i = tensor(features, device: f.device);
            Tensor ablated;
            if (means is null) ablated = f.index_fill(-1, i, TorchScalars.Of(0.0));
            else
            {
                var m = means.to(f.dtype, f.device).index_select(0, i).expand([.. f.shape.SkipLast(1), i.shape[0]]);
                ablated = f.index_copy(-1, i, m.contiguous());
            }
            if (positions is not null) ablated = f.add(Steering.AtPositions(ablated - f, positions), TorchScalars.One);
            return ablated.MoveToOuterDisposeScope();
        });
    }

    /// <summary>
    /// Mean activation of every feature [d_sae] over the real tokens of <paramref name="batches"/> (token ids [batch, pos],
    /// with an optional attention mask), for mean ablation; <paramref name="modelHooks"/> are run with the model (the weight
    /// processing's hooks, <see cref="ProcessedModel.Hooks"/>).
    /// </summary>
    public static Tensor FeatureMeans(HookedTransformer model, Sae sae, IEnumerable<Tensor> batches, string? hook = null,
        IReadOnlyList<(string Name, Func<Tensor, Tensor?> Fn)>? modelHooks = null)
    {
        var attached = model.Attach(sae, hook);
        string post = attached.HookName(SaeHookPoints.ActsPost);
        int? stop = model.HookPoints.StopAtLayerFor([attached.Hook]);
        using var _ = no_grad();
        using var outer = NewDisposeScope();
        var sum = zeros(sae.Cfg.DSae, ScalarType.Float64);
        long n = 0;
        foreach (var tokens in batches)
        {
            using var scope = NewDisposeScope();
            var (_, cache) = model.Run(tokens, new RunOptions { Saes = [attached], CacheNames = [post], StopAtLayer = stop, Hooks = modelHooks });
            using (cache)
            {
                var f = cache![post].to(ScalarType.Float64);
                sum.add_(f.sum([0, 1]), TorchScalars.One);
                n += f.shape[0] * f.shape[1];
            }
        }
        if (n == 0) throw new SaeSharpException("no tokens to take feature means over");
        using var count = n.ToScalar();
        return (sum / count).to(sae.WDec.dtype).MoveToOuterDisposeScope();
    }
}

/// <summary>
/// Error-node ablation (SAELens tutorial's <c>hook_sae_error</c> set to 0): the SAE's error term x − SAE(x) zeroed at every
/// position, or at <see cref="Positions"/>, so the activation there is the reconstruction alone. Needs the SAE spliced with
/// its error term (<c>useErrorTerm</c>, <c>--error-term</c>); without it there is no error node to ablate.
/// </summary>
public sealed class ErrorAblation(Sae sae, string? hook = null) : Intervention(sae, hook)
{
    /// <summary>Token positions whose error term is zeroed (as <see cref="Steering.Positions"/>); null: every position.</summary>
    public IReadOnlyCollection<long>? Positions { get; init; }

    /// <inheritdoc/>
    public override (string Name, Func<Tensor, Tensor?> Fn) ToHook(HookedTransformer model, IReadOnlyList<AttachedSae>? saes = null)
    {
        var spliced = RequireSpliced(model, saes, out var hook);
        if (!spliced.UseErrorTerm)
            throw new SaeSharpException($"ablating the error node at '{hook}' needs the SAE spliced with its error term (useErrorTerm / --error-term): " +
                "without it the activation is already the reconstruction alone");
        var positions = Positions?.ToArray();
        return (spliced.HookName(SaeHookPoints.Error), e =>
        {
            using var scope = NewDisposeScope();
            return (e - Steering.AtPositions(e, positions)).MoveToOuterDisposeScope();
        });
    }
}
