using static TorchSharp.torch;

namespace SaeSharp.Hooks;

/// <summary>
/// What <c>run_with_cache</c> returns (<see cref="Models.HookedTransformer.RunWithCache(Tensor, IEnumerable{string}?, int?, Tensor?)"/>,
/// <see cref="Interventions.HookedSaeTransformer.RunWithCache"/>): the logits and the <see cref="ActivationCache"/>, both
/// owned by it. Dispose it to free both, or deconstruct it as TransformerLens's <c>logits, cache = ...</c>:
/// <code>
/// using var run = model.RunWithCache(tokens, ["blocks.0.hook_resid_post"]);
/// var (logits, cache) = run;   // freed with run
/// </code>
/// </summary>
public sealed class CachedRun(Tensor? logits, ActivationCache cache) : IDisposable
{
    /// <summary>Logits [batch, pos, d_vocab]; null when the run stopped at a layer (<c>stop_at_layer</c>).</summary>
    public Tensor? Logits { get; } = logits;
    /// <summary>The cached activations, keyed by TransformerLens hook name.</summary>
    public ActivationCache Cache { get; } = cache ?? throw new ArgumentNullException(nameof(cache));

    /// <summary>TransformerLens's <c>logits, cache = model.run_with_cache(...)</c>: <c>var (logits, cache) = run;</c>. The
    /// two stay owned by this run (dispose it, or dispose both yourself).</summary>
    public void Deconstruct(out Tensor? logits, out ActivationCache cache) => (logits, cache) = (Logits, Cache);

    /// <summary>Frees the logits and every cached tensor.</summary>
    public void Dispose()
    {
        Logits?.Dispose();
        Cache.Dispose();
    }
}
