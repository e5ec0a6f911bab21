using SaeSharp.Saes;

namespace SaeSharp.Training;

/// <summary>
/// One training recipe of <c>sae train --arch</c>: an architecture (cfg.json <c>architecture</c>) plus the defaults its
/// paper or reference trainer uses. The recipes are data in <see cref="SaeRecipes"/>; the rules that turn them into a
/// run's config (warm-ups, decay, short-run learning rates) are in <see cref="SaeRecipes.RunConfig"/>, with their sources
/// in docs/recipes.md.
/// </summary>
/// <param name="Name">The name <c>--arch</c> takes, e.g. <c>relu-april</c>.</param>
/// <param name="Architecture">The architecture registered in <see cref="SaeArchitectures"/>.</param>
public sealed record SaeRecipe(string Name, string Architecture)
{
    /// <summary>Other names <c>--arch</c> accepts for this recipe (e.g. SAELens's <c>standard</c> for <c>relu</c>).</summary>
    public IReadOnlyList<string> Aliases { get; init; } = [];

    /// <summary>The sparsity penalty of the ReLU family (L1, or L1 weighted by decoder-row norms).</summary>
    public SparsityPenalty Penalty { get; init; } = SparsityPenalty.L1;

    /// <summary>Default sparsity coefficient λ as a function of d_in (for inputs normalised to E‖x‖ = √d_in); null for
    /// the recipes without one (the k-sparse family), which <c>--target-l0</c> and <c>--l1</c> then do not apply to.</summary>
    public Func<int, double>? SparsityCoefficient { get; init; }

    /// <summary>The learning rate of the paper or reference trainer; null: Gao et al.'s 2e-4/√(d_sae/2¹⁴)
    /// (<see cref="Sae.ScaledTopKLearningRate"/>).</summary>
    public double? PaperLearningRate { get; init; }

    /// <summary>How b_dec starts (<c>b_dec_init_method</c>): the geometric median of a sample, or zeros where that was
    /// measured to match the reference trainer better (relu-april: docs/recipes.md).</summary>
    public string BDecInitMethod { get; init; } = "geometric_median";

    /// <summary>Norm of the decoder rows at initialisation (<c>decoder_init_norm</c>, W_enc = W_decᵀ); null: the run's
    /// (0.1, dictionary_learning's <c>AutoEncoder</c> and Anthropic's April 2024 recipe). Gated: 1, as dictionary_learning's
    /// <c>GatedAutoEncoder</c> (measured: docs/recipes.md).</summary>
    public double? DecoderInitNorm { get; init; }

    /// <summary>Whether runs of at least 1,000 steps resample dead latents at T/4, T/2 and 3T/4 (Towards Monosemanticity).</summary>
    public bool ResamplesDeadLatents { get; init; }

    /// <summary>The architecture whose training behaviour the recipe's shares (<see cref="SaeArchitectures.TrainsAs"/>):
    /// <c>jumprelu</c> for <c>jumprelu_skip_transcoder</c>, <c>standard</c> for <c>skip_transcoder</c>, else
    /// <see cref="Architecture"/>.</summary>
    public string TrainsAs => SaeArchitectures.TrainsAs(Architecture);

    /// <summary>Whether the recipe trains transcoders only (<see cref="SaeArchitecture.TranscoderOnly"/>: a skip
    /// transcoder's W_skip maps the input to the targets).</summary>
    public bool TranscoderOnly => SaeArchitectures.Get(Architecture, "recipe").TranscoderOnly;

    /// <summary>Whether the architecture keeps k latents per row or batch (and so needs <c>--k</c>).</summary>
    public bool IsKSparse => Architecture is SaeArchitectures.TopK or SaeArchitectures.BatchTopK or SaeArchitectures.MatryoshkaBatchTopK;
}
