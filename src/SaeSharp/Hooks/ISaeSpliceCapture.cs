using static TorchSharp.torch;

namespace SaeSharp.Hooks;

/// <summary>
/// Sees the latents and the error term of every SAE spliced into a run and may replace them (same shape) before the SAE
/// decodes: the attribution pass (<c>Interventions/FeatureAttribution</c>) makes them autograd leaves. Hooks/ declares it so
/// that the splice needs nothing from the folders above.
/// </summary>
internal interface ISaeSpliceCapture
{
    /// <summary>The latents [batch, pos, d_sae] that <paramref name="sae"/> decodes, given its <c>hook_sae_acts_post</c> output.</summary>
    Tensor Features(AttachedSae sae, Tensor features);

    /// <summary>The error term [batch, pos, d_in] added back, given <c>hook_sae_error</c>'s output.</summary>
    Tensor Error(AttachedSae sae, Tensor error);
}
