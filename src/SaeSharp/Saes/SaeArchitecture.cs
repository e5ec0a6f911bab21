namespace SaeSharp.Saes;

/// <summary>
/// One SAE architecture as data: the <c>architecture</c> name written into cfg.json, its constructor, and what its config
/// must hold beyond the fields every architecture checks (<see cref="SaeConfig.Validate"/>). Each architecture's file
/// declares one (<c>Descriptor</c>) and <see cref="SaeArchitectures"/> registers it; adding an architecture touches its
/// own file and that registration.
/// </summary>
public sealed class SaeArchitecture
{
    /// <summary>The cfg.json name (SAELens's where SAELens has the architecture).</summary>
    public required string Name { get; init; }
    /// <summary>Creates the module with zero weights from a validated config.</summary>
    public required Func<SaeConfig, Sae> Create { get; init; }
    /// <summary>Other names read as this architecture (in cfg.json and by <c>sae train --arch</c>).</summary>
    public IReadOnlyList<string> Aliases { get; init; } = [];
    /// <summary>Whether the config needs a positive <c>k</c> (the TopK family).</summary>
    public bool NeedsK { get; init; }
    /// <summary>The architecture whose training behaviour this one shares (its recipe fields, sparsity coefficient and
    /// target-L0 control; <see cref="SaeArchitectures.TrainsAs"/>); null: its own. A skip transcoder trains as the SAE of
    /// its encoder (<c>skip_transcoder</c> as <c>standard</c>, <c>jumprelu_skip_transcoder</c> as <c>jumprelu</c>) and is
    /// saved under its own name.</summary>
    public string? TrainsAs { get; init; }
    /// <summary>Whether the architecture maps an input to other targets only (a skip transcoder: <c>W_skip</c> maps the
    /// input to the output space), so that training needs targets (<c>d_out</c>).</summary>
    public bool TranscoderOnly { get; init; }
    /// <summary>Whether the architecture has no training form (SAELens's <c>temporal</c>): <c>sae train</c> refuses it.</summary>
    public bool InferenceOnly { get; init; }
    /// <summary><c>normalize_activations</c> values this architecture accepts beyond the common ones (temporal:
    /// "constant_scalar_rescale").</summary>
    public IReadOnlyList<string> OtherNormalizations { get; init; } = [];
    /// <summary>Whether a config of this architecture has <c>W_enc</c> [d_in, d_sae] (null: always; a tied temporal SAE has none).</summary>
    public Func<SaeConfig, bool>? HasEncoderWeights { get; init; }
    /// <summary>Further checks of a config (throw a <see cref="SaeSharpException"/> naming the source and the field).</summary>
    public Action<SaeConfig, string>? Validate { get; init; }
}
