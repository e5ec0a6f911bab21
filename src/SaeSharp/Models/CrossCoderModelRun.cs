using static TorchSharp.torch;

namespace SaeSharp.Models;

/// <summary>One model a crosscoder reads (its slots' hooks), for evaluation and interventions: the model, the hooks every
/// run of it applies (<see cref="ProcessedModel.Hooks"/>) and a display name (default: the model's config name).</summary>
public sealed record CrossCoderModelRun(HookedTransformer Model, IReadOnlyList<(string Name, Func<Tensor, Tensor?> Fn)>? Hooks = null, string? Name = null);
