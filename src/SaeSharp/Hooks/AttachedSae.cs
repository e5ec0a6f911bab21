using SaeSharp.Saes;

namespace SaeSharp.Hooks;

/// <summary>
/// An SAE spliced into a model at a hook (SAELens <c>HookedSAETransformer.add_sae</c>). The run replaces the hook's
/// activation x by the reconstruction x̂ = decode(encode(x)), or with <see cref="UseErrorTerm"/> by x̂ + (x − x̂),
/// which equals the clean run while exposing the SAE hook points (<see cref="SaeHookPoints"/>). With
/// <c>hook_head_index</c> in the SAE's metadata only that head of a [batch, pos, head, d_head] hook is read and replaced;
/// otherwise the trailing dimensions of the hook are flattened to d_in (<c>hook_z</c> SAEs).
/// A transcoder (<see cref="OutputHook"/> set and different from <see cref="Hook"/>) is spliced across two hooks, as
/// <c>sae eval --model</c> does: at <see cref="Hook"/> it encodes x_in (the run continues there unchanged); at
/// <see cref="OutputHook"/> the activation x_out is replaced by x̂ = decode(f) (plus x_in·W_skipᵀ for a skip transcoder),
/// or with the error term by x̂ + (x_out − x̂). With <c>hook_head_index</c> h it reads head h of its input hook (SAELens's
/// meaning: the SAE's input is that head's slice of <c>hook_name</c>) and replaces the whole output hook; SAELens's
/// <c>hook_head_index_out</c> (one head of the output hook) is refused. Its hook points keep the input hook's name
/// (<c>&lt;hook&gt;.hook_sae_acts_post</c>); <c>hook_sae_recons</c>, <c>hook_sae_error</c> and <c>hook_sae_output</c>
/// fire when the output hook does.
/// </summary>
public sealed record AttachedSae
{
    /// <param name="sae">The SAE (not owned: the caller disposes it).</param>
    /// <param name="hook">Hook name or alias; null: the SAE's <c>metadata.hook_name</c>.</param>
    /// <param name="useErrorTerm">Add the error term back (SAELens <c>use_error_term</c>).</param>
    /// <param name="outputHook">A transcoder's output hook (name or alias); null: the SAE's <c>metadata.hook_name_out</c>,
    /// if any.</param>
    public AttachedSae(Sae sae, string? hook = null, bool useErrorTerm = false, string? outputHook = null)
    {
        ArgumentNullException.ThrowIfNull(sae);
        Sae = sae;
        Hook = sae.Cfg.Metadata.HookOr(hook);
        UseErrorTerm = useErrorTerm;
        OutputHook = outputHook ?? sae.Cfg.Metadata.HookNameOut;
        SeqposSlice = SeqposSlice.Of(sae.Cfg.Metadata) ?? SeqposSlice.All;
        if (OutputHook is not null && OutputHook != Hook && sae.Cfg.Metadata.HookHeadIndexOut is int headOut)
            throw new SaeSharpException($"transcoder reading '{Hook}' has hook_head_index_out {headOut}: replacing one head of its output hook " +
                $"'{OutputHook}' is not supported (SaeSharp replaces the whole output hook; hook_head_index picks the head a transcoder reads)");
    }

    /// <summary>The spliced SAE (not owned).</summary>
    public Sae Sae { get; }
    /// <summary>The model hook the SAE reads (a TransformerLens name once attached to a model); its hook points are named after it.</summary>
    public string Hook { get; init; }
    /// <summary>A transcoder's output hook, whose activation the SAE's output replaces (<c>hook_name_out</c>; a
    /// TransformerLens name once attached to a model); null, or equal to <see cref="Hook"/>, for an SAE.</summary>
    public string? OutputHook { get; init; }
    /// <summary>True: the run adds the error term x − x̂ back, so the model's output equals the clean run (SAELens <c>use_error_term</c>).</summary>
    public bool UseErrorTerm { get; init; }
    /// <summary>
    /// The positions the SAE's output replaces the hook's activation at (SAELens's <c>seqpos_slice</c>; by default the
    /// cfg.json metadata's, as <c>sae eval --model</c> splices it): elsewhere the activation stays as it was, so the SAE's
    /// edits (clamping, ablation) have no effect there, while steering, added to <c>hook_sae_output</c>, still applies at
    /// every position. Positions count each row's real tokens from 0 (the prompt and generated tokens one numbering); a
    /// bound from the end (<c>:-1</c>) counts from the end of the tokens the forward pass sees, and generation then runs
    /// without the KV cache. <see cref="SeqposSlice.All"/> splices every position, as SAELens's <c>HookedSAETransformer</c>
    /// does (it ignores the slice).
    /// </summary>
    public SeqposSlice SeqposSlice { get; init; }
    /// <summary>True when every step of a generation must see the whole sequence (no KV cache): the SAE reads each token's
    /// context (<see cref="Sae.ReadsContext"/>), or its <see cref="SeqposSlice"/> counts from the end.</summary>
    internal bool NeedsWholeSequence => Sae.ReadsContext || SeqposSlice.CountsFromEnd;
    /// <summary>The head this SAE reads and writes (<c>hook_head_index</c>), or null for the whole activation. A transcoder
    /// reads only that head and replaces its whole output hook.</summary>
    public int? HeadIndex => Sae.Cfg.Metadata.HookHeadIndex;
    /// <summary>True when the SAE reads <see cref="Hook"/> and replaces another hook, <see cref="OutputHook"/>.</summary>
    public bool IsTranscoder => OutputHook is not null && OutputHook != Hook;
    /// <summary>The hook whose activation the SAE's output replaces: <see cref="OutputHook"/> for a transcoder, else <see cref="Hook"/>.</summary>
    public string WriteHook => IsTranscoder ? OutputHook! : Hook;

    /// <summary>This SAE's hook point <c>&lt;hook&gt;.&lt;suffix&gt;</c> (a <see cref="SaeHookPoints"/> constant).</summary>
    public string HookName(string suffix) => SaeHookPoints.Name(Hook, suffix);

    /// <summary>The hook where the hook point <paramref name="suffix"/> fires: the output hook for a transcoder's
    /// <c>hook_sae_recons</c>, <c>hook_sae_error</c> and <c>hook_sae_output</c>, else <see cref="Hook"/>.</summary>
    public string FiresAt(string suffix) =>
        IsTranscoder && suffix is SaeHookPoints.Recons or SaeHookPoints.Error or SaeHookPoints.Output ? OutputHook! : Hook;

    /// <summary>The hooks as TransformerLens names of <paramref name="points"/>; a transcoder whose output hook the model lacks,
    /// or which fires before its input hook, is a <see cref="SaeSharpException"/> naming both hooks.</summary>
    internal AttachedSae ResolvedFor(HookPoints points)
    {
        var r = points.Contains(Hook) ? this : this with { Hook = points.Resolve(Hook) };
        if (OutputHook is null || points.Contains(OutputHook) && OutputHook == r.Hook) return r;
        string output;
        try { output = points.Resolve(OutputHook); }
        catch (SaeSharpException e)
        {
            throw new SaeSharpException($"transcoder reading '{r.Hook}': its output hook '{OutputHook}' (hook_name_out) is not a hook of this model: {e.Message}");
        }
        if (output != r.Hook && IndexOf(points, output) < IndexOf(points, r.Hook))
            throw new SaeSharpException($"transcoder reading '{r.Hook}' and replacing '{output}': '{output}' fires before '{r.Hook}' " +
                "(a transcoder's output hook, hook_name_out, must fire after its input hook, hook_name)");
        return output == OutputHook ? r : r with { OutputHook = output };
    }

    private static int IndexOf(HookPoints points, string name)
    {
        var names = points.Names;
        for (int i = 0; i < names.Count; i++) if (names[i] == name) return i;
        return -1;
    }
}
