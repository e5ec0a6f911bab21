using TorchSharp;
using SaeSharp.Hooks;
using SaeSharp.IO;
using SaeSharp.Models;
using SaeSharp.Saes;
using static TorchSharp.torch;

namespace SaeSharp.Interventions;

/// <summary>
/// A scalar of a run's logits to attribute: <c>logit:A</c> (the logit of token A at the last position, summed over the
/// batch), <c>logit-diff:A,B</c> (logit A − logit B at the last position, summed over the batch), <c>loss</c> (mean
/// next-token cross-entropy over all positions).
/// </summary>
public sealed record AttributionMetric(AttributionMetricKind Kind, long A = 0, long B = 0)
{
    /// <summary>The logit of token <paramref name="a"/> at the last position, summed over the batch.</summary>
    public static AttributionMetric Logit(long a) => new(AttributionMetricKind.Logit, a);
    /// <summary>Logit of <paramref name="a"/> minus logit of <paramref name="b"/> at the last position, summed over the batch.</summary>
    public static AttributionMetric LogitDiff(long a, long b) => new(AttributionMetricKind.LogitDiff, a, b);
    /// <summary>Mean next-token cross-entropy over all positions.</summary>
    public static AttributionMetric Loss { get; } = new(AttributionMetricKind.Loss);

    /// <summary>Parses <c>logit:A</c>, <c>logit-diff:A,B</c> or <c>loss</c>; A and B are token ids, or strings that
    /// <paramref name="tokenId"/> maps to one token id each.</summary>
    public static AttributionMetric Parse(string spec, Func<string, long>? tokenId = null)
    {
        spec = (spec ?? "").Trim();
        long Token(string t)
        {
            if (long.TryParse(t, System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out long id)) return id;
            return tokenId is not null ? tokenId(t)
                : throw new SaeSharpException($"metric '{spec}': '{t}' is not a token id (give a model with a tokenizer to use token strings)");
        }
        if (spec == "loss") return Loss;
        if (spec.StartsWith("logit-diff:", StringComparison.Ordinal))
        {
            var parts = spec["logit-diff:".Length..].Split(',');
            if (parts.Length != 2 || parts.Any(p => p.Length == 0))
                throw new SaeSharpException($"metric '{spec}': write logit-diff:A,B with two tokens");
            long a = Token(parts[0]), b = Token(parts[1]);
            RefuseSameToken($"metric '{spec}'", a, b);
            return LogitDiff(a, b);
        }
        if (spec.StartsWith("logit:", StringComparison.Ordinal) && spec.Length > "logit:".Length)
            return Logit(Token(spec["logit:".Length..]));
        throw new SaeSharpException($"unknown metric '{spec}' (use logit:A, logit-diff:A,B or loss)");
    }

    /// <summary>Throws when the two tokens of a logit difference are one token: logit A − logit A is 0 whatever the run,
    /// so the difference (and anything attributed or patched to it) means nothing. <paramref name="what"/> names the
    /// option and value as given.</summary>
    public static void RefuseSameToken(string what, long a, long b)
    {
        if (a == b) throw new SaeSharpException($"{what}: A and B are the same token (id {a}), so logit A − logit B is 0 in every run; give two different tokens");
    }

    /// <summary>The metric of <paramref name="logits"/> [batch, pos, d_vocab] for <paramref name="tokens"/> [batch, pos], a scalar.</summary>
    public Tensor Evaluate(Tensor logits, Tensor tokens)
    {
        long vocab = logits.shape[^1];
        foreach (var t in Kind switch { AttributionMetricKind.Logit => [A], AttributionMetricKind.LogitDiff => new[] { A, B }, _ => [] })
            if (t < 0 || t >= vocab) throw new SaeSharpException($"metric {this}: token {t} is outside the vocabulary 0..{vocab - 1}");
        using var scope = NewDisposeScope();
        var last = logits.select(1, -1);
        var m = Kind switch
        {
            AttributionMetricKind.Logit => last.select(-1, A).sum(),
            AttributionMetricKind.LogitDiff => (last.select(-1, A) - last.select(-1, B)).sum(),
            _ => Loss(),
        };
        return m.MoveToOuterDisposeScope();

        Tensor Loss()
        {
            long s = logits.shape[1];
            if (s < 2) throw new SaeSharpException("the loss metric needs at least 2 tokens");
            var logp = logits.narrow(1, 0, s - 1).log_softmax(-1);
            return -logp.gather(-1, tokens.narrow(1, 1, s - 1).to(ScalarType.Int64).unsqueeze(-1)).mean();
        }
    }

    /// <summary>The metric of each row of <paramref name="logits"/> [batch, pos, d_vocab] on its own, as <see cref="Evaluate"/>
    /// gives it for that row alone (TransformerLens's <c>logits_to_ave_logit_diff(..., per_prompt=True)</c>, whose
    /// <c>answer_tokens</c> give each prompt its own pair): <paramref name="metrics"/> holds one metric for every row, or
    /// one per row. Their mean is the notebook's average logit difference.</summary>
    public static double[] EvaluateRows(IReadOnlyList<AttributionMetric> metrics, Tensor logits, Tensor tokens)
    {
        ArgumentNullException.ThrowIfNull(metrics);
        ArgumentNullException.ThrowIfNull(logits);
        ArgumentNullException.ThrowIfNull(tokens);
        var rows = new double[logits.shape[0]];
        if (metrics.Count != 1 && metrics.Count != rows.Length)
            throw new SaeSharpException($"{metrics.Count} metrics for {rows.Length} rows: give one for every row or one per row");
        for (int r = 0; r < rows.Length; r++)
        {
            using var scope = NewDisposeScope();
            rows[r] = metrics[metrics.Count == 1 ? 0 : r].Evaluate(logits.narrow(0, r, 1), tokens.narrow(0, r, 1)).to(ScalarType.Float64).item<double>();
        }
        return rows;
    }

    /// <summary>The metric in the form <see cref="Parse"/> reads: <c>logit:A</c>, <c>logit-diff:A,B</c> or <c>loss</c>.</summary>
    public override string ToString() => Kind switch
    {
        AttributionMetricKind.Logit => $"logit:{A}",
        AttributionMetricKind.LogitDiff => $"logit-diff:{A},{B}",
        _ => "loss",
    };
}

/// <summary>Which scalar an <see cref="AttributionMetric"/> takes of the logits.</summary>
public enum AttributionMetricKind
{
    /// <summary><c>logit:A</c>: one token's logit at the last position.</summary>
    Logit,
    /// <summary><c>logit-diff:A,B</c>: the difference of two tokens' logits at the last position.</summary>
    LogitDiff,
    /// <summary><c>loss</c>: mean next-token cross-entropy.</summary>
    Loss,
}

/// <summary>One (SAE, batch row, position, feature) attribution.</summary>
public readonly record struct AttributionEntry(int Sae, int Batch, int Position, int Feature, double Attribution, double Activation);

/// <summary>
/// Attributions of one run: per attached SAE, <see cref="Attribution"/> [batch, pos, d_sae] and
/// <see cref="ErrorAttribution"/> [batch, pos], with the feature activations and the metric of the clean run.
/// </summary>
public sealed class AttributionResult : IDisposable
{
    /// <summary>The attributed metric.</summary>
    public required AttributionMetric MetricSpec { get; init; }
    /// <summary>The metric's value on the clean run (equal to the spliced run with error terms).</summary>
    public required double Metric { get; init; }
    /// <summary>The hooks of the attached SAEs, in attachment order.</summary>
    public required IReadOnlyList<string> Hooks { get; init; }
    /// <summary>Per SAE, f_i·∂m/∂f_i [batch, pos, d_sae].</summary>
    public required IReadOnlyList<Tensor> Attribution { get; init; }
    /// <summary>Per SAE, the error node's attribution Σ_d ε_d·∂m/∂ε_d [batch, pos].</summary>
    public required IReadOnlyList<Tensor> ErrorAttribution { get; init; }
    /// <summary>Feature activations [batch, pos, d_sae] of each SAE on the clean run.</summary>
    public required IReadOnlyList<Tensor> FeatureActs { get; init; }
    /// <summary>0: attribution patching (first-order); N: integrated gradients with N steps.</summary>
    public int IntegratedGradientSteps { get; init; }
    /// <summary>Integrated gradients scaled each SAE's error term along with its features (Marks et al.'s path, from the
    /// SAE's output at b_dec), so <see cref="ErrorAttribution"/> is integrated too; otherwise it is first-order.</summary>
    public bool IntegratedErrors { get; init; }
    /// <summary>A whole cross-layer transcoder's attribution: entry l of every list is its layer l (<see cref="Hooks"/> the
    /// MLP outputs it replaced), and features are named <c>L{layer}/{index}</c>.</summary>
    public bool CrossLayer { get; init; }
    /// <summary>Whether attention patterns and norm scales were constants of the backward (<see cref="Models.RunOptions.FreezeAttentionAndNorms"/>).</summary>
    public bool FrozenAttentionAndNorms { get; init; }

    /// <summary>How feature <paramref name="feature"/> of SAE (or CLT layer) <paramref name="sae"/> is named: <c>L{layer}/{index}</c>
    /// for a cross-layer transcoder (as <c>sae inspect</c> names them), else the index.</summary>
    public string FeatureLabel(int sae, int feature) => CrossLayerTranscoder.FeatureLabel(feature, CrossLayer ? sae : null);

    /// <summary>The <paramref name="n"/> entries of largest |attribution| over every SAE, largest first.</summary>
    public IReadOnlyList<AttributionEntry> Top(int n)
    {
        var all = new List<AttributionEntry>();
        for (int i = 0; i < Attribution.Count; i++)
        {
            using var scope = NewDisposeScope();
            var a = Attribution[i].to(ScalarType.Float64);
            long b = a.shape[0], s = a.shape[1], d = a.shape[2];
            var flat = a.reshape(-1);
            int k = (int)Math.Min(n, flat.shape[0]);
            if (k == 0) continue;
            var idx = flat.abs().topk(k).indexes.data<long>().ToArray();
            var acts = FeatureActs[i].to(ScalarType.Float64).reshape(-1);
            foreach (var j in idx)
                all.Add(new AttributionEntry(i, (int)(j / (s * d)), (int)(j / d % s), (int)(j % d), flat[j].item<double>(), acts[j].item<double>()));
        }
        return all.OrderByDescending(e => Math.Abs(e.Attribution)).Take(n).ToList();
    }

    /// <summary>Writes <c>attribution</c> / <c>error_attribution</c> (<c>.I</c> suffixed for several SAEs, or per layer of a
    /// cross-layer transcoder) and the scalar <c>metric</c> to a safetensors file.</summary>
    public void Save(string path)
    {
        using var scope = NewDisposeScope();
        bool one = Attribution.Count == 1;
        var tensors = new List<KeyValuePair<string, Tensor>>();
        for (int i = 0; i < Attribution.Count; i++)
        {
            string suffix = one ? "" : $".{i}";
            tensors.Add(new("attribution" + suffix, Attribution[i].to(ScalarType.Float32).contiguous()));
            tensors.Add(new("error_attribution" + suffix, ErrorAttribution[i].to(ScalarType.Float32).contiguous()));
        }
        tensors.Add(new("metric", tensor((float)Metric)));
        var meta = new Dictionary<string, string>
        {
            ["metric"] = MetricSpec.ToString(),
            ["hooks"] = string.Join(",", Hooks),
            ["integrated_gradient_steps"] = IntegratedGradientSteps.ToString(System.Globalization.CultureInfo.InvariantCulture),
            ["integrated_errors"] = IntegratedErrors ? "true" : "false",
            ["cross_layer"] = CrossLayer ? "true" : "false",
            ["freeze_attention_and_norms"] = FrozenAttentionAndNorms ? "true" : "false",
        };
        SafeTensors.Save(path, tensors, meta);
    }

    /// <summary>Disposes the attribution and activation tensors.</summary>
    public void Dispose()
    {
        foreach (var t in Attribution.Concat(ErrorAttribution).Concat(FeatureActs)) t.Dispose();
    }
}

/// <summary>
/// Attribution patching to SAE features (Syed et al.; Marks et al., sparse feature circuits). Every attached SAE is
/// spliced with its error term, so the forward equals the clean model; for a scalar metric m,
/// attribution[b, pos, i] = f_i·∂m/∂f_i at each SAE, and the error node's attribution is Σ_d ε_d·∂m/∂ε_d. Gradients
/// reach upstream nodes as through the clean model. With N integrated-gradient steps, an SAE's feature attribution is
/// f_i times the mean of ∂m/∂f_i at α·f (α = (k − ½)/N, k = 1..N: from the zero-ablated features to the clean ones,
/// the other SAEs running normally); the error attribution stays first-order. For a transcoder the feature node is f read
/// at its input hook and the error node ε = x_out − x̂ at its output hook (<see cref="Hooks.AttachedSae.OutputHook"/>).
/// </summary>
public static class FeatureAttribution
{
    /// <summary>Attributes <paramref name="metric"/> of a run on <paramref name="tokens"/> [batch, pos] to the features of every SAE attached to <paramref name="model"/> (each spliced with its error term); <paramref name="integratedGradientSteps"/> 0 is attribution patching, N &gt; 0 integrated gradients with N steps; <paramref name="progress"/> counts the tokens of every pass.</summary>
    public static AttributionResult Run(HookedSaeTransformer model, Tensor tokens, AttributionMetric metric, int integratedGradientSteps = 0,
        IProgress<WorkProgress>? progress = null) => Run(model, tokens, metric, integratedGradientSteps, freezeAttentionAndNorms: false, progress);

    /// <summary><see cref="Run(HookedSaeTransformer, Tensor, AttributionMetric, int, IProgress{WorkProgress}?)"/>, with
    /// <paramref name="freezeAttentionAndNorms"/>: attention patterns and norm scales constants of the backward (<see cref="RunOptions.FreezeAttentionAndNorms"/>).</summary>
    public static AttributionResult Run(HookedSaeTransformer model, Tensor tokens, AttributionMetric metric, int integratedGradientSteps,
        bool freezeAttentionAndNorms, IProgress<WorkProgress>? progress = null) =>
        Run(model, tokens, metric, integratedGradientSteps, freezeAttentionAndNorms, integrateErrors: false, progress);

    /// <summary>As <see cref="Run(HookedSaeTransformer, Tensor, AttributionMetric, int, bool, IProgress{WorkProgress}?)"/>;
    /// with <paramref name="integrateErrors"/> (integrated gradients only) each step scales the SAE's error term by α as
    /// well as its features, as Marks et al.'s <c>_pe_ig</c> does with a zero patch: the path runs from the SAE's output at
    /// b_dec (no features, no error) to the clean activation, the error attribution is ε·mean ∂m/∂ε, and the features'
    /// and error's attributions of one SAE sum to m(clean) − m(that hook's activation replaced by b_dec).</summary>
    public static AttributionResult Run(HookedSaeTransformer model, Tensor tokens, AttributionMetric metric, int integratedGradientSteps,
        bool freezeAttentionAndNorms, bool integrateErrors, IProgress<WorkProgress>? progress = null)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(metric);
        if (model.Saes.Count == 0) throw new SaeSharpException("attribution needs at least one attached SAE");
        if (integratedGradientSteps < 0) throw new SaeSharpException($"integrated-gradient steps must be >= 0, got {integratedGradientSteps}");
        if (integrateErrors && integratedGradientSteps == 0)
            throw new SaeSharpException("integrating the error terms is part of integrated gradients: give integrated-gradient steps > 0");
        var hooks = model.Saes.Select(a => a.Hook).ToList();
        if (freezeAttentionAndNorms && hooks.FirstOrDefault(h => PatternOnlyHooks.Any(s => h.EndsWith(s, StringComparison.Ordinal))) is { } patternOnly)
            throw new SaeSharpException($"SAE at hook '{patternOnly}': it reaches the output only through the attention pattern, which freezing " +
                                        "attention and norms holds constant (every attribution would be zero); attribute it without freezing, " +
                                        "or put the SAE on the value side (hook_v_input, hook_attn_in, attn.hook_v)");
        var counter = new ProgressCounter(progress, "tokens", tokens.numel() * (1 + (long)hooks.Count * integratedGradientSteps));
        var attr = new List<Tensor>();
        var errAttr = new List<Tensor>();
        var acts = new List<Tensor>();
        var errors = new List<Tensor>();
        double value;
        // Frozen integrated gradients: every step's patterns and norm scales are the clean run's, so the path is linear.
        using var frozenValues = freezeAttentionAndNorms && integratedGradientSteps > 0 ? new FrozenValues() : null;
        using (var scope = NewDisposeScope())
        {
            using var capture = new AttributionCapture();
            value = Backward(model, tokens, metric, capture, freezeAttentionAndNorms, frozenValues);
            frozenValues?.Replay();
            counter.Add(tokens.numel());
            foreach (var h in hooks)
            {
                var f = capture.FeatureLeaf(h);
                var e = capture.ErrorLeaf(h);
                acts.Add(f.detach().clone().DetachFromDisposeScope());
                if (integrateErrors) errors.Add(e.detach().clone().DetachFromDisposeScope());
                attr.Add((f.detach() * GradOf(f)).DetachFromDisposeScope());
                errAttr.Add((e.detach() * GradOf(e)).sum(-1).DetachFromDisposeScope());
            }
        }
        for (int i = 0; i < hooks.Count && integratedGradientSteps > 0; i++)
        {
            using var scope = NewDisposeScope();
            var sum = zeros_like(acts[i]);
            var errorSum = integrateErrors ? zeros_like(errors[i]) : null;
            for (int k = 1; k <= integratedGradientSteps; k++)
            {
                using var step = NewDisposeScope();
                using var capture = new AttributionCapture { ScaledHook = hooks[i], Alpha = (k - 0.5) / integratedGradientSteps, ScaleErrors = integrateErrors };
                frozenValues?.Replay();
                Backward(model, tokens, metric, capture, freezeAttentionAndNorms, frozenValues);
                counter.Add(tokens.numel());
                sum.add_(GradOf(capture.FeatureLeaf(hooks[i])), TorchScalars.One);
                errorSum?.add_(GradOf(capture.ErrorLeaf(hooks[i])), TorchScalars.One);
            }
            attr[i].Dispose();
            using var steps = integratedGradientSteps.ToScalar();
            attr[i] = (acts[i] * sum / steps).DetachFromDisposeScope();
            if (errorSum is not null)
            {
                errAttr[i].Dispose();
                errAttr[i] = (errors[i] * errorSum / steps).sum(-1).DetachFromDisposeScope();
            }
        }
        foreach (var e in errors) e.Dispose();
        return new AttributionResult
        {
            MetricSpec = metric, Metric = value, Hooks = hooks, Attribution = attr, ErrorAttribution = errAttr,
            FeatureActs = acts, IntegratedGradientSteps = integratedGradientSteps, FrozenAttentionAndNorms = freezeAttentionAndNorms,
            IntegratedErrors = integrateErrors,
        };
    }

    /// <summary>
    /// Attributes <paramref name="metric"/> of a run on <paramref name="tokens"/> to every feature of the whole cross-layer
    /// transcoder <paramref name="clt"/> spliced into <paramref name="model"/> as circuit-tracer's replacement model: layer l's
    /// features f_l are read at its input hook (leaves: no gradient through the encoder), its MLP output y_l is replaced by
    /// ŷ_l + ε_l, ŷ_l = Σ_{i ≤ l} f_i·W_dec[i][:, l − i] + b_dec[l] (+ x_l·W_skip[l]) and the error node ε_l = y_l − ŷ_l a leaf,
    /// so the forward is the clean run. The gradient at a replaced output reaches upstream only through the skip connection
    /// (the MLP is replaced, as in circuit-tracer). Result entry l is layer l: f·∂m/∂f [batch, pos, d_transcoder] (f_i's
    /// effect through every layer it writes to) and Σ_d ε_d·∂m/∂ε_d [batch, pos]. <paramref name="modelHooks"/> run first
    /// (weight processing's); <paramref name="freezeAttentionAndNorms"/> as <see cref="RunOptions.FreezeAttentionAndNorms"/>.
    /// </summary>
    public static AttributionResult Run(HookedTransformer model, CrossLayerTranscoder clt, Tensor tokens, AttributionMetric metric,
        bool freezeAttentionAndNorms = false, IReadOnlyList<(string Name, Func<Tensor, Tensor?> Fn)>? modelHooks = null,
        IProgress<WorkProgress>? progress = null) =>
        Run(model, clt, tokens, metric, 0, freezeAttentionAndNorms, modelHooks, progress);

    /// <summary>
    /// <see cref="Run(HookedTransformer, CrossLayerTranscoder, Tensor, AttributionMetric, bool, IReadOnlyList{ValueTuple{string, Func{Tensor, Tensor}}}?, IProgress{WorkProgress}?)"/>
    /// with <paramref name="integratedGradientSteps"/> N &gt; 0: integrated gradients, the features of every layer scaled
    /// together. A feature's attribution is f times the mean of ∂m/∂f at α·f (α = (k − ½)/N, k = 1..N), the clean run's
    /// features of all layers scaled by α (leaves, not re-encoded along the path) and the error nodes held at their clean
    /// values, so the feature attributions add up to m(clean) − m(every feature zero, errors clean) up to the midpoint rule's
    /// error; the error attributions stay first-order (as the SAE path's). In a bfloat16/float16 run the backward runs in
    /// the model's dtype (as for an SAE beside such a model) and the results are float32.
    /// </summary>
    public static AttributionResult Run(HookedTransformer model, CrossLayerTranscoder clt, Tensor tokens, AttributionMetric metric,
        int integratedGradientSteps, bool freezeAttentionAndNorms = false, IReadOnlyList<(string Name, Func<Tensor, Tensor?> Fn)>? modelHooks = null,
        IProgress<WorkProgress>? progress = null)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(clt);
        ArgumentNullException.ThrowIfNull(tokens);
        ArgumentNullException.ThrowIfNull(metric);
        if (integratedGradientSteps < 0) throw new SaeSharpException($"integrated-gradient steps must be >= 0, got {integratedGradientSteps}");
        int n = clt.Cfg.NLayers;
        var (inputs, outputs) = clt.Hooks(model);
        var counter = new ProgressCounter(progress, "tokens", tokens.numel() * (1 + (long)integratedGradientSteps));
        var features = new Tensor?[n];
        var layerInput = new Tensor?[n];
        var errors = new Tensor?[n];
        var cleanFeatures = new Tensor?[n];
        var cleanErrors = new Tensor?[n];
        var attr = new List<Tensor>();
        var errAttr = new List<Tensor>();
        var acts = new List<Tensor>();
        // Frozen integrated gradients: every step's patterns and norm scales are the clean run's, so the path is linear.
        using var frozenValues = freezeAttentionAndNorms && integratedGradientSteps > 0 ? new FrozenValues() : null;
        try
        {
            double value = Pass(null);
            for (int l = 0; l < n; l++)
            {
                using var scope = NewDisposeScope();
                var f = features[l] ?? throw new SaeSharpException($"cross-layer transcoder layer {l}: its input hook '{inputs[l]}' did not fire");
                var e = errors[l] ?? throw new SaeSharpException($"cross-layer transcoder layer {l}: its output hook '{outputs[l]}' did not fire");
                var wide = Wide(f.dtype);
                acts.Add(f.detach().to(wide).clone().DetachFromDisposeScope());
                attr.Add((f.detach().to(wide) * GradOf(f).to(wide)).DetachFromDisposeScope());
                errAttr.Add((e.detach().to(wide) * GradOf(e).to(wide)).sum(-1).DetachFromDisposeScope());
                if (integratedGradientSteps > 0)
                {
                    cleanFeatures[l] = f.detach().clone().DetachFromDisposeScope();
                    cleanErrors[l] = e.detach().clone().DetachFromDisposeScope();
                }
            }
            if (integratedGradientSteps > 0)
            {
                using var scope = NewDisposeScope();
                var sums = acts.Select(a => zeros_like(a)).ToList();
                for (int k = 1; k <= integratedGradientSteps; k++)
                {
                    frozenValues?.Replay();
                    Pass((k - 0.5) / integratedGradientSteps);
                    for (int l = 0; l < n; l++)
                    {
                        using var step = NewDisposeScope();
                        sums[l].add_(GradOf(features[l]!).to(sums[l].dtype), TorchScalars.One);
                    }
                }
                using var steps = integratedGradientSteps.ToScalar();
                for (int l = 0; l < n; l++)
                {
                    attr[l].Dispose();
                    attr[l] = (acts[l] * sums[l] / steps).DetachFromDisposeScope();
                }
            }
            return new AttributionResult
            {
                MetricSpec = metric, Metric = value, Hooks = outputs, Attribution = attr, ErrorAttribution = errAttr, FeatureActs = acts,
                IntegratedGradientSteps = integratedGradientSteps, CrossLayer = true, FrozenAttentionAndNorms = freezeAttentionAndNorms,
            };
        }
        catch
        {
            foreach (var t in attr.Concat(errAttr).Concat(acts)) t.Dispose();
            throw;
        }
        finally
        {
            foreach (var t in features.Concat(layerInput).Concat(errors).Concat(cleanFeatures).Concat(cleanErrors)) t?.Dispose();
        }

        // One forward and backward of the replacement run. alpha null: the clean pass (features encoded from the run, error
        // nodes leaves); else the features are alpha times the clean ones and the error nodes the clean ones, constants.
        double Pass(double? alpha)
        {
            using var a = (alpha ?? 1).ToScalar();
            var hooks = new List<(string, Func<Tensor, Tensor?>)>(modelHooks ?? []);
            for (int l = 0; l < n; l++)
            {
                int layer = l;
                hooks.Add((inputs[l], x =>
                {
                    var f = alpha is null ? clt.EncodeLayer(x.detach(), layer) : cleanFeatures[layer]! * a;
                    Keep(features, layer, f.detach().requires_grad_(true));
                    Keep(layerInput, layer, x);
                    return null;
                }));
                hooks.Add((outputs[l], y =>
                {
                    var f = features.Take(layer + 1).Select((t, i) => t ?? throw new SaeSharpException(
                        $"cross-layer transcoder: '{outputs[layer]}' fired before layer {i}'s input hook '{inputs[i]}'")).ToList();
                    var recon = clt.DecodeLayer(f, layer, layerInput[layer]);
                    Tensor error;
                    if (alpha is null)
                    {
                        error = (y.detach().reshape(recon.shape).to(recon.dtype) - recon.detach()).requires_grad_(true);
                        Keep(errors, layer, error);
                    }
                    else error = cleanErrors[layer]!;
                    return recon.add(error, TorchScalars.One).to(y.dtype).view(y.shape);
                }));
            }
            double v;
            using (var scope = NewDisposeScope())
            {
                var logits = model.Run(tokens, new RunOptions
                {
                    Grad = true, Hooks = hooks, FreezeAttentionAndNorms = freezeAttentionAndNorms, FrozenValues = frozenValues,
                }).Logits!;
                v = BackwardOf(logits, tokens, metric);
            }
            counter.Add(tokens.numel());
            return v;
        }

        // A tensor that outlives the block that made it (later layers decode the features): out of the run's scopes, freed above.
        static void Keep(Tensor?[] store, int layer, Tensor t)
        {
            store[layer]?.Dispose();
            store[layer] = t.alias().DetachFromDisposeScope();
        }

        // Results of a half-precision CLT in float32 (the products and sums of its gradients, not rounded again to 8 bits).
        static ScalarType Wide(ScalarType t) => t is ScalarType.BFloat16 or ScalarType.Float16 ? ScalarType.Float32 : t;
    }

    private static double Backward(HookedSaeTransformer model, Tensor tokens, AttributionMetric metric, AttributionCapture capture, bool freeze,
        FrozenValues? frozenValues)
    {
        using var scope = NewDisposeScope();
        var logits = model.Run(tokens, new RunOptions { Grad = true, Capture = capture, FreezeAttentionAndNorms = freeze, FrozenValues = frozenValues }).Logits!;
        return BackwardOf(logits, tokens, metric);
    }

    /// <summary>The metric of <paramref name="logits"/>, after its backward pass.</summary>
    private static double BackwardOf(Tensor logits, Tensor tokens, AttributionMetric metric)
    {
        using var scope = NewDisposeScope();
        using var _ = enable_grad();
        var m = metric.Evaluate(logits, tokens);
        double v = m.to(ScalarType.Float64).item<double>();
        if (!double.IsFinite(v)) throw new SaeSharpException($"metric {metric} is {v} on this input");
        m.backward();
        return v;
    }

    /// <summary>Hooks on the query and key side of attention: their only path to the output is the pattern.</summary>
    private static readonly string[] PatternOnlyHooks =
        [".hook_q_input", ".hook_k_input", ".attn.hook_q", ".attn.hook_k", ".attn.hook_rot_q", ".attn.hook_rot_k", ".attn.hook_attn_scores", ".attn.hook_pattern"];

    private static Tensor GradOf(Tensor leaf) => leaf.grad is { } g ? g.detach() : zeros_like(leaf);
}

/// <summary>The feature and error nodes of an attribution pass: the SAE splices make them leaves and hand them here.</summary>
internal sealed class AttributionCapture : ISaeSpliceCapture, IDisposable
{
    private readonly Dictionary<string, Tensor> _features = new(StringComparer.Ordinal);
    private readonly Dictionary<string, Tensor> _errors = new(StringComparer.Ordinal);

    /// <summary>The SAE whose features are scaled by <see cref="Alpha"/> (integrated gradients), or null.</summary>
    public string? ScaledHook { get; init; }
    public double Alpha { get; init; } = 1;
    /// <summary>Scale <see cref="ScaledHook"/>'s error term by <see cref="Alpha"/> too (Marks et al.'s path).</summary>
    public bool ScaleErrors { get; init; }

    private Scalar? _alpha;

    public Tensor Features(AttachedSae a, Tensor f) => Leaf(_features, a.Hook, a.Hook == ScaledHook ? f * (_alpha ??= Alpha.ToScalar()) : f);

    public Tensor Error(AttachedSae a, Tensor e) => Leaf(_errors, a.Hook, ScaleErrors && a.Hook == ScaledHook ? e * (_alpha ??= Alpha.ToScalar()) : e);

    public Tensor FeatureLeaf(string hook) => _features.TryGetValue(hook, out var t) ? t
        : throw new SaeSharpException($"the SAE at '{hook}' did not run (does the metric's forward pass reach it?)");

    public Tensor ErrorLeaf(string hook) => _errors[hook];

    private static Tensor Leaf(Dictionary<string, Tensor> store, string hook, Tensor t)
    {
        var leaf = t.detach().requires_grad_(true);
        if (store.Remove(hook, out var old)) old.Dispose();
        store[hook] = leaf.alias().DetachFromDisposeScope();
        return leaf;
    }

    public void Dispose()
    {
        foreach (var t in _features.Values.Concat(_errors.Values)) t.Dispose();
        _alpha?.Dispose();
        _features.Clear();
        _errors.Clear();
    }
}
