using SaeSharp.Hooks;
using TorchSharp;
using SaeSharp.Models;
using SaeSharp.Saes;
using static TorchSharp.torch;

namespace SaeSharp.Interventions;

/// <summary>
/// One CLT feature set to a value: circuit-tracer's intervention tuple <c>(layer, position, feature_idx, value)</c>.
/// <see cref="Onward"/> makes the position an open-ended slice <c>slice(Position, None)</c>: every position from
/// <see cref="Position"/> on, and in generation every new token too.
/// </summary>
public readonly record struct CltFeatureIntervention(int Layer, int Position, int Feature, double Value, bool Onward = false)
{
    /// <summary>The feature set at every position, new tokens included (circuit-tracer's <c>slice(None)</c>).</summary>
    public static CltFeatureIntervention AllPositions(int layer, int feature, double value) => new(layer, 0, feature, value, true);

    /// <summary>The feature set at each of <paramref name="positions"/> (circuit-tracer's tensor of positions in one tuple):
    /// one intervention per position, the value at position i <paramref name="values"/>(i).</summary>
    public static List<CltFeatureIntervention> AtPositions(int layer, int feature, IEnumerable<int> positions, Func<int, double> values)
    {
        ArgumentNullException.ThrowIfNull(positions);
        ArgumentNullException.ThrowIfNull(values);
        return positions.Select(p => new CltFeatureIntervention(layer, p, feature, values(p))).ToList();
    }
}

/// <summary>Options of <see cref="CltInterventions.FeatureIntervention"/> (circuit-tracer's <c>feature_intervention</c> arguments).</summary>
public sealed record CltInterventionOptions
{
    /// <summary>Attention patterns fixed at the clean run's (circuit-tracer <c>freeze_attention</c>, default true). In
    /// generation only the prompt's pass is frozen, as in circuit-tracer.</summary>
    public bool FreezeAttention { get; init; } = true;
    /// <summary>Layers [Start, End) whose MLP outputs are frozen at the clean run's and which alone receive the
    /// interventions' decoder writes, the deltas computed from the clean activations (circuit-tracer <c>constrained_layers</c>);
    /// null: effects propagate through the MLPs (iterative patching). Covering every layer also freezes the norm scales.</summary>
    public (int Start, int End)? ConstrainedLayers { get; init; }
    /// <summary>Shorthand for <see cref="ConstrainedLayers"/> = every layer: direct effects only, patterns, norm scales and
    /// MLP outputs frozen, so changes are linear in the values set (the attribution graph's edges).</summary>
    public bool DirectEffects { get; init; }
    /// <summary>Returned activations after the activation function (default); false: pre-activations, what the
    /// attribution graph's feature rows predict (circuit-tracer <c>apply_activation_function</c>).</summary>
    public bool ApplyActivationFunction { get; init; } = true;
    /// <summary>Position 0's recorded activations are zero (circuit-tracer's <c>zero_positions</c> for a BOS token): setting
    /// a feature there adds value·W_dec whatever its activation was.</summary>
    public bool ZeroBos { get; init; }
}

/// <summary>Logits and CLT feature activations of an intervened run (<see cref="CltInterventions"/>).</summary>
public sealed class CltInterventionResult : IDisposable
{
    internal CltInterventionResult(Tensor logits, Tensor activations, Tensor? tokens, GenerationRow? row = null)
    {
        Logits = logits;
        Activations = activations;
        Tokens = tokens;
        Row = row;
    }

    /// <summary><see cref="CltInterventions.FeatureIntervention"/>: [1, pos, d_vocab]; generation: the logits each new token
    /// was sampled from, [new tokens, d_vocab].</summary>
    public Tensor Logits { get; }
    /// <summary>Feature activations of the intervened run [n_layers, pos, d_transcoder] (generation: prompt positions then one
    /// per new token but the last, as circuit-tracer returns them).</summary>
    public Tensor Activations { get; }
    /// <summary>Generation: the prompt and its continuation [1, pos + new]; else null.</summary>
    public Tensor? Tokens { get; }
    /// <summary>Generation: how many new tokens and why it stopped (EOS or the maximum); else null.</summary>
    public GenerationRow? Row { get; }

    /// <summary>Frees the tensors.</summary>
    public void Dispose()
    {
        Logits.Dispose();
        Activations.Dispose();
        Tokens?.Dispose();
    }
}

/// <summary>
/// Interventions on the features of a whole CLT or transcoder set, as circuit-tracer's <c>feature_intervention</c> and
/// <c>feature_intervention_generate</c>: each feature set to a value adds (value − its activation)·W_dec at the output hook
/// (<c>blocks.l.{FeatureOutputHook}</c>) of every layer it writes (l..L−1 for a CLT, l alone for a transcoder set), on top of
/// the model's own MLP output. The model still runs its MLPs; the CLT only reads activations and writes these deltas.
/// </summary>
public static class CltInterventions
{
    /// <summary>
    /// The run of <paramref name="tokens"/> (one prompt, [pos] or [1, pos]) with <paramref name="interventions"/>: logits
    /// [1, pos, d_vocab] and the features of the intervened run [L, pos, d_transcoder]. Freezing (attention patterns, and with
    /// constrained layers their MLP outputs, with every layer the norm scales) takes a clean run first; without constrained
    /// layers each delta is value minus the feature's activation in this run (upstream interventions included), with them
    /// minus its clean activation. <paramref name="modelHooks"/> run first at their hooks (weight processing's).
    /// </summary>
    public static CltInterventionResult FeatureIntervention(HookedTransformer model, CrossLayerTranscoder clt, Tensor tokens,
        IReadOnlyList<CltFeatureIntervention> interventions, CltInterventionOptions? options = null,
        IReadOnlyList<(string Name, Func<Tensor, Tensor?> Fn)>? modelHooks = null)
    {
        using var session = new Session(model, clt, tokens, interventions, options ?? new CltInterventionOptions(), modelHooks);
        return session.Run();
    }

    /// <summary>
    /// circuit-tracer's <c>feature_intervention_generate</c>: <paramref name="maxNewTokens"/> new tokens with a KV cache. The
    /// prompt's pass is <see cref="FeatureIntervention"/>'s with the same options (every intervention; frozen patterns, and
    /// with constrained layers or direct effects their frozen MLP outputs and norm scales), so the first new token's logits
    /// are that run's last row; each later one-token pass applies only the open-ended interventions
    /// (<see cref="CltFeatureIntervention.Onward"/>), unfrozen and unconstrained, from its own activations, as circuit-tracer
    /// does. Sampling options come from <paramref name="generation"/> (greedy by default; a <c>Seed</c> gives this call its own
    /// generator, so a plain <see cref="HookedTransformer.Generate"/> with the same options draws the same random numbers).
    /// SAEs spliced (<c>generation.Saes</c>) are refused, as <see cref="FeatureIntervention"/> splices none. Returns the
    /// tokens, the logits of each new token and the activations.
    /// </summary>
    public static CltInterventionResult FeatureInterventionGenerate(HookedTransformer model, CrossLayerTranscoder clt, Tensor tokens,
        IReadOnlyList<CltFeatureIntervention> interventions, int maxNewTokens, CltInterventionOptions? options = null,
        GenerationOptions? generation = null, IReadOnlyList<(string Name, Func<Tensor, Tensor?> Fn)>? modelHooks = null)
    {
        options ??= new CltInterventionOptions();
        if (maxNewTokens < 1) throw new SaeSharpException($"CLT intervention: max new tokens must be at least 1, got {maxNewTokens}");
        if (generation is { Saes: not null }) throw new SaeSharpException("CLT intervention: generation with SAEs spliced is not supported");
        using var session = new Session(model, clt, tokens, interventions, options, modelHooks);
        return session.Generate(maxNewTokens, generation ?? new GenerationOptions());
    }

    private sealed class Session : IDisposable
    {
        private readonly HookedTransformer _model;
        private readonly CrossLayerTranscoder _clt;
        private readonly Tensor _tokens;
        private readonly IReadOnlyList<CltFeatureIntervention> _interventions;
        private readonly CltInterventionOptions _o;
        private readonly IReadOnlyList<(string Name, Func<Tensor, Tensor?> Fn)> _modelHooks;
        private readonly IReadOnlyList<string> _inputs, _outputs;
        private readonly int _l, _p;
        private readonly (int Start, int End)? _constrained;
        private readonly List<IDisposable> _owned = [];

        // Clean run (when freezing).
        private readonly Dictionary<string, Tensor> _patterns = new(StringComparer.Ordinal);
        private FrozenValues? _frozen;
        private Tensor?[] _cleanIn = [], _cleanOut = [], _original = [];

        public Session(HookedTransformer model, CrossLayerTranscoder clt, Tensor tokens, IReadOnlyList<CltFeatureIntervention> interventions,
            CltInterventionOptions o, IReadOnlyList<(string Name, Func<Tensor, Tensor?> Fn)>? modelHooks)
        {
            ArgumentNullException.ThrowIfNull(model);
            ArgumentNullException.ThrowIfNull(clt);
            ArgumentNullException.ThrowIfNull(tokens);
            ArgumentNullException.ThrowIfNull(interventions);
            if (!(tokens.dim() == 1 || (tokens.dim() == 2 && tokens.shape[0] == 1)) || tokens.numel() == 0)
                throw new SaeSharpException($"CLT intervention: one prompt's tokens, [pos] or [1, pos], expected; got [{string.Join(", ", tokens.shape)}]");
            if (clt.Cfg.NLayers != model.Config.NLayers)
                throw new SaeSharpException($"CLT intervention: the transcoders span {clt.Cfg.NLayers} layers but the model has {model.Config.NLayers}");
            _model = model;
            _clt = clt;
            _o = o;
            _modelHooks = modelHooks ?? [];
            (_inputs, _outputs) = clt.Hooks(model);
            _l = clt.Cfg.NLayers;
            using (var scope = NewDisposeScope()) _tokens = tokens.reshape(1, -1).to(ScalarType.Int64).to(model.Device).clone().DetachFromDisposeScope();
            _owned.Add(_tokens);
            _p = (int)_tokens.shape[1];
            if (o.DirectEffects && o.ConstrainedLayers is not null)
                throw new SaeSharpException("CLT intervention: direct effects constrain every layer; give it or constrained layers, not both");
            _constrained = o.DirectEffects ? (0, _l) : o.ConstrainedLayers;
            if (_constrained is { } c && (c.Start < 0 || c.End > _l || c.Start >= c.End))
                throw new SaeSharpException($"CLT intervention: constrained layers {c.Start}..{c.End - 1} are not a non-empty range within 0..{_l - 1}");
            foreach (var i in interventions)
            {
                if (i.Layer < 0 || i.Layer >= _l) throw new SaeSharpException($"CLT intervention {Describe(i)}: layer {i.Layer} is outside 0..{_l - 1}");
                if (i.Feature < 0 || i.Feature >= clt.Cfg.DTranscoder)
                    throw new SaeSharpException($"CLT intervention {Describe(i)}: feature {i.Feature} is outside 0..{clt.Cfg.DTranscoder - 1}");
                if (i.Position < 0 || (!i.Onward && i.Position >= _p))
                    throw new SaeSharpException($"CLT intervention {Describe(i)}: position {i.Position} is outside the prompt's 0..{_p - 1}");
                if (!double.IsFinite(i.Value)) throw new SaeSharpException($"CLT intervention {Describe(i)}: the value is not finite");
            }
            _interventions = interventions;
        }

        /// <summary>L:F:V as <c>sae intervene --set</c> writes it: no @ for every position (onward from 0).</summary>
        private static string Describe(CltFeatureIntervention i) => FormattableString.Invariant(
            $"{i.Layer}:{i.Feature}:{i.Value}{(i.Onward && i.Position == 0 ? "" : $"@{i.Position}{(i.Onward ? "-" : "")}")}");

        private bool Freezing => (_o.FreezeAttention || _constrained is not null) && _interventions.Count > 0;
        private bool FreezesNorms => _constrained is { Start: 0 } c && c.End == _l;
        private bool InRange(int layer) => _constrained is not { } c || (layer >= c.Start && layer < c.End);

        private Tensor Keep(Tensor t)
        {
            var kept = t.detach().clone().DetachFromDisposeScope();
            _owned.Add(kept);
            return kept;
        }

        /// <summary>circuit-tracer's <c>setup_intervention_with_freeze</c>: the clean run's patterns (and norm scales), the
        /// constrained layers' outputs (and inputs with a skip connection), and its activations.</summary>
        private void CleanRun()
        {
            _cleanIn = new Tensor?[_l];
            _cleanOut = new Tensor?[_l];
            _original = new Tensor?[_l];
            var hooks = new List<(string, Func<Tensor, Tensor?>)>(_modelHooks);
            for (int l = 0; l < _l; l++)
            {
                int layer = l;
                hooks.Add((_inputs[l], x => { _cleanIn[layer] = Keep(x); return null; }));
                if (_constrained is not null && InRange(l)) hooks.Add((_outputs[l], y => { _cleanOut[layer] = Keep(y); return null; }));
            }
            if (FreezesNorms)
            {
                _frozen = new FrozenValues();
                _owned.Add(_frozen);
            }
            else
            {
                foreach (var name in _model.HookPoints.Names.Where(n => n.EndsWith(".attn.hook_pattern", StringComparison.Ordinal)))
                    hooks.Add((name, p => { _patterns[name] = Keep(p); return null; }));
            }
            using var scope = NewDisposeScope();
            var (logits, cache) = _model.Run(_tokens, new RunOptions { Hooks = hooks, FreezeAttentionAndNorms = FreezesNorms, FrozenValues = _frozen });
            cache?.Dispose();
            _frozen?.Replay();
            for (int l = 0; l < _l; l++)
            {
                var x = _cleanIn[l] ?? throw new SaeSharpException($"CLT intervention: hook '{_inputs[l]}' did not fire");
                var f = _clt.EncodeLayer(x[0], l);
                if (_o.ZeroBos) f[0].fill_(TorchScalars.Of(0.0));
                _original[l] = Keep(f);
            }
        }

        /// <summary>The hooks of one pass over <paramref name="nPos"/> positions: circuit-tracer's freeze hooks (when
        /// <paramref name="freeze"/>), activation hooks (into <paramref name="acts"/>), delta hooks and intervention hooks.</summary>
        private List<(string, Func<Tensor, Tensor?>)> PassHooks(IReadOnlyList<CltFeatureIntervention> interventions, int nPos, bool freeze,
            bool generating, List<Tensor>[] acts)
        {
            var deltas = new Tensor?[_l];
            var skipDiff = new Tensor?[_l];
            bool constrained = freeze && _constrained is not null;
            var byLayer = interventions.GroupBy(i => i.Layer).ToDictionary(g => g.Key, g => g.ToList());
            var hooks = new List<(string, Func<Tensor, Tensor?>)>();
            if (freeze && !FreezesNorms)
                foreach (var (name, pattern) in _patterns) hooks.Add((name, _ => pattern.alias()));
            for (int l = 0; l < _l; l++)
            {
                int layer = l;
                hooks.Add((_inputs[l], x =>
                {
                    if (constrained && InRange(layer) && _clt.Skip(x, layer) is { } now)
                    {
                        skipDiff[layer]?.Dispose();
                        skipDiff[layer] = now.sub(_clt.Skip(_cleanIn[layer]!, layer)!).DetachFromDisposeScope();
                    }
                    var f = _clt.EncodeLayer(x[0], layer, _o.ApplyActivationFunction);
                    if (_o.ZeroBos && !generating) f[0].fill_(TorchScalars.Of(0.0));
                    acts[layer].Add(f.DetachFromDisposeScope());
                    return null;
                }));
                hooks.Add((_outputs[l], y =>
                {
                    var result = y;
                    if (constrained && InRange(layer))
                    {
                        result = _cleanOut[layer]!.alias();
                        if (skipDiff[layer] is { } d) result = result.add(d.to(result.dtype), TorchScalars.One);
                    }
                    if (byLayer.TryGetValue(layer, out var mine)) AddDeltas(layer, mine, nPos, constrained, acts[layer][^1], deltas);
                    if (InRange(layer) || !constrained)
                        if (deltas[layer] is { } delta) result = result.add(delta.to(result.dtype).view(result.shape), TorchScalars.One);
                    deltas[layer]?.Dispose();
                    deltas[layer] = null;
                    return ReferenceEquals(result, y) ? null : result;
                }));
            }
            _owned.Add(new Disposer(() => { foreach (var t in deltas.Concat(skipDiff)) t?.Dispose(); }));
            return hooks;
        }

        /// <summary>circuit-tracer's <c>calculate_delta_hook</c>: (value − activation)·W_dec of each set feature into the
        /// pending deltas of every layer it writes.</summary>
        private void AddDeltas(int layer, List<CltFeatureIntervention> mine, int nPos, bool constrained, Tensor current, Tensor?[] deltas)
        {
            using var scope = NewDisposeScope();
            var acts = constrained ? _original[layer]! : _o.ApplyActivationFunction ? current : _clt.ApplyActivationFunction(current, layer);
            var delta = zeros_like(acts);
            foreach (var i in mine)
            {
                int start = Math.Min(i.Position, nPos);
                int count = i.Onward ? nPos - start : 1;
                if (count <= 0) continue;
                var old = acts.narrow(0, start, count).select(1, i.Feature);
                using var v = i.Value.ToScalar();
                delta.narrow(0, start, count).select(1, i.Feature).copy_(full_like(old, v) - old);
            }
            var feats = tensor(mine.Select(i => (long)i.Feature).Distinct().ToArray(), device: delta.device);
            var sub = delta.index_select(1, feats);
            for (int j = layer; j <= _clt.LastOutputLayer(layer); j++)
            {
                var write = matmul(sub, _clt.DecoderRows(layer, j, feats));
                var sum = deltas[j] is { } d ? d.add(write, TorchScalars.One) : write;
                deltas[j]?.Dispose();
                deltas[j] = sum.DetachFromDisposeScope();
            }
        }

        public CltInterventionResult Run()
        {
            using var _ = no_grad();
            bool freeze = Freezing;
            if (freeze) CleanRun();
            var acts = NewActs();
            var hooks = new List<(string, Func<Tensor, Tensor?>)>(_modelHooks);
            hooks.AddRange(PassHooks(_interventions, _p, freeze, false, acts));
            using var scope = NewDisposeScope();
            var (logits, cache) = _model.Run(_tokens, new RunOptions { Hooks = hooks, FreezeAttentionAndNorms = freeze && FreezesNorms, FrozenValues = _frozen });
            cache?.Dispose();
            var stacked = stack(acts.Select(a => a.Single()), 0);
            return new CltInterventionResult(logits!.MoveToOuterDisposeScope(), stacked.MoveToOuterDisposeScope(), null);
        }

        public CltInterventionResult Generate(int maxNewTokens, GenerationOptions generation)
        {
            using var _ = no_grad();
            bool freeze = Freezing;
            if (freeze) CleanRun();
            var acts = NewActs();
            int pass = 0;
            var first = PassHooks(_interventions, _p, freeze, false, acts);
            // circuit-tracer's _convert_open_ended_interventions: open-ended ones at the single new position.
            var onward = _interventions.Where(i => i.Onward).Select(i => i with { Position = 0 }).ToList();
            var later = PassHooks(onward, 1, false, true, acts);
            var hooks = new List<(string, Func<Tensor, Tensor?>)>(generation.Hooks ?? []);
            hooks.AddRange(_modelHooks);
            hooks.AddRange(first.Select(h => (h.Item1, (Func<Tensor, Tensor?>)(t => pass == 0 ? h.Item2(t) : null))));
            hooks.AddRange(later.Select(h => (h.Item1, (Func<Tensor, Tensor?>)(t => pass > 0 ? h.Item2(t) : null))));
            hooks.Add((_outputs[^1], _ => { pass++; return null; }));
            using var scope = NewDisposeScope();
            // The prompt's pass replays the clean run's patterns and norm scales when every layer is constrained.
            using var result = Generation.Run(_model, _tokens, maxNewTokens, generation with
            {
                Hooks = hooks, ReturnLogits = true, UseKvCache = true, FreezeFirstStep = freeze && FreezesNorms ? _frozen : null,
            });
            var stacked = stack(acts.Select(a => cat(a, 0)), 0);
            return new CltInterventionResult(result.Logits![0].clone().MoveToOuterDisposeScope(), stacked.MoveToOuterDisposeScope(),
                result.Tokens.clone().MoveToOuterDisposeScope(), result.Rows[0]);
        }

        private List<Tensor>[] NewActs()
        {
            var acts = Enumerable.Range(0, _l).Select(_ => new List<Tensor>()).ToArray();
            _owned.Add(new Disposer(() => { foreach (var t in acts.SelectMany(a => a)) t.Dispose(); }));
            return acts;
        }

        public void Dispose()
        {
            foreach (var d in _owned) d.Dispose();
            _owned.Clear();
        }
    }

    private sealed class Disposer(Action action) : IDisposable
    {
        public void Dispose() => action();
    }
}
