using SaeSharp.Saes;

namespace SaeSharp.Hooks;

/// <summary>
/// An SAE spliced into a model at a hook (SAELens <c>HookedSAETransformer.add_sae</c>). The run replaces the hook's
/// activation x by the reconstruction x̂ = decode(encode(x)), or with <see cref="UseErrorTerm"/> by x̂ + (x − x̂),
/// which equals the clean run while exposing the SAE hook points (<see cref="SaeHookPoints"/>). With
/// <c>hook_head_index</c> in the SAE's metadata only that head of a [batch, pos, head, d_head] hook is replaced;
/// otherwise the trailing dimensions of the hook are flattened to d_in (<c>hook_z</c> SAEs).
/// </summary>
public sealed record AttachedSae
{
    /// <param name="sae">The SAE (not owned: the caller disposes it).</param>
    /// <param name="hook">Hook name or alias; null: the SAE's <c>metadata.hook_name</c>.</param>
    /// <param name="useErrorTerm">Add the error term back (SAELens <c>use_error_term</c>).</param>
    public AttachedSae(Sae sae, string? hook = null, bool useErrorTerm = false)
    {
        ArgumentNullException.ThrowIfNull(sae);
        Sae = sae;
        Hook = hook ?? sae.Cfg.Metadata.HookName
            ?? throw new SaeSharpException("the SAE has no metadata.hook_name: give the hook to attach it at");
        UseErrorTerm = useErrorTerm;
    }

    /// <summary>The spliced SAE (not owned).</summary>
    public Sae Sae { get; }
    /// <summary>The model hook (a TransformerLens name once attached to a model).</summary>
    public string Hook { get; init; }
    /// <summary>True: the run adds the error term x − x̂ back, so the model's output equals the clean run (SAELens <c>use_error_term</c>).</summary>
    public bool UseErrorTerm { get; init; }
    /// <summary>The head this SAE reads and writes (<c>hook_head_index</c>), or null for the whole activation.</summary>
    public int? HeadIndex => Sae.Cfg.Metadata.HookHeadIndex;

    /// <summary>This SAE's hook point <c>&lt;hook&gt;.&lt;suffix&gt;</c> (a <see cref="SaeHookPoints"/> constant).</summary>
    public string HookName(string suffix) => SaeHookPoints.Name(Hook, suffix);

    internal AttachedSae ResolvedFor(HookPoints points) => points.Contains(Hook) ? this : this with { Hook = points.Resolve(Hook) };
}
