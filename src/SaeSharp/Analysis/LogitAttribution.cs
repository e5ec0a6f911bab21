using SaeSharp.Hooks;
using SaeSharp.Models;
using static TorchSharp.torch;

namespace SaeSharp.Analysis;

/// <summary>One residual-stream component (or accumulated stream) and its share of the logit difference.</summary>
public sealed record LogitComponent(string Label, double LogitDiff);

/// <summary>
/// What <see cref="LogitAttribution.Run"/> found, each value averaged over the prompts: the model's own logit difference at
/// the last position, the bias terms no component carries (the final LayerNorm's β and b_U through the answer tokens), and
/// the three stacks of TransformerLens's Exploratory Analysis Demo. <see cref="PerLayer"/> and <see cref="Bias"/> sum to
/// <see cref="LogitDiff"/>, as does the last <see cref="Accumulated"/> entry (<c>final_post</c>) with the bias.
/// <see cref="PerNeuron"/> (<c>L{layer}N{neuron}</c>, TransformerLens <c>stack_neuron_results</c>) and <see cref="MlpBias"/>
/// (<c>L{layer}_b_out</c>) are filled when asked for: a layer's neurons and its b_out sum to its <c>L_mlp_out</c>.
/// </summary>
public sealed record LogitAttributionResult(
    double LogitDiff,
    double Bias,
    IReadOnlyList<LogitComponent> Accumulated,
    IReadOnlyList<LogitComponent> PerLayer,
    IReadOnlyList<LogitComponent> PerHead,
    int Prompts,
    IReadOnlyList<LogitComponent> PerNeuron,
    IReadOnlyList<LogitComponent> MlpBias);

/// <summary>
/// Direct logit attribution as TransformerLens's Exploratory Analysis Demo does it (transformer_lens/ActivationCache.py):
/// <c>cache.accumulated_resid(incl_mid=True)</c> (the logit lens), <c>cache.decompose_resid()</c> and
/// <c>cache.stack_head_results()</c> at the last position, each run through <c>apply_ln_to_stack</c> (centred for a
/// LayerNorm, divided by the cached <c>ln_final.hook_scale</c>) and projected on W_U[:, A] − W_U[:, B] with the final
/// norm's γ folded in (<c>residual_stack_to_logit_diff</c>). A model with a logit soft cap (Gemma 2) is refused: its
/// logits are not linear in the residual stream.
/// </summary>
public static class LogitAttribution
{
    /// <summary>
    /// Attributes logit(A) − logit(B) at the last position of each prompt (tokens [1, pos], run one at a time, so prompts
    /// may differ in length) to the residual stream's components; <paramref name="answers"/> holds one (A, B) per prompt.
    /// <paramref name="hooks"/> (<c>run_with_hooks</c> functions, e.g. <see cref="Interventions.HeadAblation.Hooks"/>) run
    /// during each prompt's cached run: the attribution of the edited run (Exploratory Analysis Demo cells 115–117, the
    /// ablated run's <c>stack_head_results</c>). <paramref name="recomputeLn"/>: the logit lens as
    /// <c>accumulated_resid(apply_ln=True)</c> (<c>apply_ln_to_stack(recompute_ln=True)</c>): each accumulated stream is
    /// normalised by its own √(var + eps) (LayerNorm, centred) or √(mean(x²) + eps) (RMSNorm), as if it were the final
    /// stream, instead of by the final stream's cached <c>ln_final.hook_scale</c>; <c>final_post</c> is the same either
    /// way, and the other two stacks are unchanged. <paramref name="neurons"/>: also every MLP neuron's share,
    /// TransformerLens's <c>stack_neuron_results</c> (transformer_lens/ActivationCache.py): <c>mlp.hook_post</c>[n] times
    /// row n of W_out, through the same <c>apply_ln_to_stack</c> and projection, and each layer's b_out apart (dense MLPs
    /// only: a mixture of experts, or a norm after the MLP output, is refused).
    /// </summary>
    public static LogitAttributionResult Run(HookedTransformer model, IReadOnlyList<Tensor> prompts, IReadOnlyList<(long Correct, long Incorrect)> answers,
        IReadOnlyList<(string Name, Func<Tensor, Tensor?> Fn)>? hooks = null, bool recomputeLn = false, bool neurons = false)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(prompts);
        ArgumentNullException.ThrowIfNull(answers);
        if (prompts.Count == 0) throw new SaeSharpException("logit attribution: no prompt");
        if (answers.Count != prompts.Count)
            throw new SaeSharpException($"logit attribution: {answers.Count} answer pairs for {prompts.Count} prompts (give one pair per prompt)");
        var c = model.Config;
        if (c.OutputLogitsSoftCap is not null)
            throw new SaeSharpException($"{c.ModelName}: its logits are soft-capped (logit_softcap={c.OutputLogitsSoftCap}), so they do not split into residual-stream components");
        foreach (var (a, b) in answers)
            foreach (var t in new[] { a, b })
                if (t < 0 || t >= c.DVocab) throw new SaeSharpException($"logit attribution: token {t} is outside the vocabulary 0..{c.DVocab - 1}");

        using var _ = no_grad();
        using var outer = NewDisposeScope();
        var hp = model.HookPoints;
        var names = new HashSet<string>(model.HookNames, StringComparer.Ordinal);
        if (!names.Contains(HookPoints.LnFinalScale))
            throw new SaeSharpException($"{c.ModelName}: logit attribution divides by ln_final.hook_scale, and the model has no final norm " +
                                        "(do_layer_norm_before=false, as facebook/opt-350m: its residual stream reaches the logits through post-norm layers)");
        bool posEmbed = names.Contains(HookPoints.PosEmbed), mid = names.Contains(hp.Blocks[0].ResidMid);
        var wanted = new List<string> { HookPoints.Embed, HookPoints.LnFinalScale, hp.Blocks[c.NLayers - 1].ResidPost };
        if (posEmbed) wanted.Add(HookPoints.PosEmbed);
        foreach (var blk in hp.Blocks.Take(c.NLayers))
        {
            wanted.AddRange([blk.ResidPre, blk.AttnOut, blk.MlpOut, blk.Result]);
            if (mid) wanted.Add(blk.ResidMid);
        }
        if (neurons && model.named_parameters().Any(kv => kv.name.Contains("post_feedforward_layernorm", StringComparison.Ordinal)))
            throw new SaeSharpException($"{c.ModelName}: a norm follows each MLP's output, so hook_mlp_out is not a sum over neurons (no neuron attribution)");
        var wOut = neurons ? Enumerable.Range(0, c.NLayers).Select(l => FeatureWeights.MlpOut(model, l)).ToList() : [];   // [d_mlp, d_model] each
        var bOut = neurons ? Enumerable.Range(0, c.NLayers).Select(l => MlpOutBias(model, l)).ToList() : [];
        if (neurons) wanted.AddRange(hp.Blocks.Take(c.NLayers).Select(b => b.MlpPost));
        var wu = FeatureWeights.FoldedUnembed(model);                                        // [d_model, vocab]
        var beta = FeatureWeights.FinalNormBias(model) ?? zeros(c.DModel, ScalarType.Float32);
        using var biasLogits = model.LogitsOf(beta.to(c.Dtype).unsqueeze(0)).to(ScalarType.Float64); // β·W_U + b_U
        bool center = c.NormalizationType == "LN";
        var eps = TorchScalars.Of(c.LayerNormEps);

        var accLabels = new List<string>();
        for (int l = 0; l < c.NLayers; l++)
        {
            accLabels.Add($"{l}_pre");
            if (mid) accLabels.Add($"{l}_mid");
        }
        accLabels.Add("final_post");
        var layerLabels = new List<string> { "embed" };
        if (posEmbed) layerLabels.Add("pos_embed");
        for (int l = 0; l < c.NLayers; l++) layerLabels.AddRange([$"{l}_attn_out", $"{l}_mlp_out"]);
        var headLabels = Enumerable.Range(0, c.NLayers).SelectMany(l => Enumerable.Range(0, c.NHeads).Select(h => $"L{l}H{h}")).ToList();
        var neuronLabels = wOut.SelectMany((w, l) => Enumerable.Range(0, (int)w.shape[0]).Select(n => $"L{l}N{n}")).ToList();
        var biasLabels = bOut.Select((_, l) => $"L{l}_b_out").ToList();
        var perNeuron = new double[neuronLabels.Count];
        var mlpBias = new double[biasLabels.Count];

        var acc = new double[accLabels.Count];
        var perLayer = new double[layerLabels.Count];
        var perHead = new double[headLabels.Count];
        double logitDiff = 0, bias = 0;
        for (int p = 0; p < prompts.Count; p++)
        {
            using var scope = NewDisposeScope();
            var tokens = prompts[p];
            if (tokens.dim() != 2 || tokens.shape[0] != 1 || tokens.shape[1] == 0)
                throw new SaeSharpException($"logit attribution: prompt {p} has token shape [{string.Join(", ", tokens.shape)}], not [1, pos] with pos ≥ 1");
            var (a, b) = answers[p];
            using var run = model.RunWithCache(tokens, new RunOptions { CacheNames = wanted, Hooks = hooks });
            var (logits, cache) = run;
            var last = logits!.select(0, 0).select(0, -1).to(ScalarType.Float64);
            logitDiff += last[a].item<double>() - last[b].item<double>();
            bias += biasLogits[0, a].item<double>() - biasLogits[0, b].item<double>();
            var direction = wu.select(1, a) - wu.select(1, b);                              // [d_model]
            var scale = cache[HookPoints.LnFinalScale].select(0, 0).select(0, -1).to(ScalarType.Float32); // [1]
            Tensor At(string name) => cache[name].select(0, 0).select(0, -1).to(ScalarType.Float32);   // last position
            // apply_ln_to_stack + residual_stack_to_logit_diff for a stack [n, d_model]; with recompute, each row's own scale.
            double[] Project(Tensor stack, bool recompute = false)
            {
                if (center) stack = stack - stack.mean([-1], keepdim: true);
                var divisor = recompute ? stack.mul(stack).mean([-1], keepdim: true).add(eps, TorchScalars.One).sqrt() : scale;
                return (stack / divisor).matmul(direction).to(ScalarType.Float64).data<double>().ToArray();
            }
            void Add(double[] into, double[] values) { for (int i = 0; i < into.Length; i++) into[i] += values[i]; }

            var accStack = new List<Tensor>();
            var layerStack = new List<Tensor> { At(HookPoints.Embed) };
            if (posEmbed) layerStack.Add(At(HookPoints.PosEmbed));
            var heads = new List<Tensor>();
            for (int l = 0; l < c.NLayers; l++)
            {
                var blk = hp.Blocks[l];
                accStack.Add(At(blk.ResidPre));
                if (mid) accStack.Add(At(blk.ResidMid));
                layerStack.Add(At(blk.AttnOut));
                layerStack.Add(At(blk.MlpOut));
                heads.Add(cache[blk.Result].select(0, 0).select(0, -1).to(ScalarType.Float32)); // [heads, d_model]
            }
            accStack.Add(At(hp.Blocks[c.NLayers - 1].ResidPost));
            Add(acc, Project(stack(accStack), recomputeLn));
            Add(perLayer, Project(stack(layerStack)));
            Add(perHead, Project(cat(heads, 0)));
            if (neurons)
            {
                // stack_neuron_results: post[n]·W_out[n], projected; the centring of apply_ln_to_stack moves onto the direction.
                var dir = center ? direction - direction.mean() : direction;
                var perLayerNeurons = wOut.Select((w, l) => At(hp.Blocks[l].MlpPost) * w.matmul(dir)).ToList();   // [d_mlp] each
                Add(perNeuron, (cat(perLayerNeurons, 0) / scale).to(ScalarType.Float64).data<double>().ToArray());
                Add(mlpBias, Project(stack(bOut)));
            }
        }
        int n = prompts.Count;
        static List<LogitComponent> Mean(List<string> labels, double[] sums, int n) =>
            labels.Select((label, i) => new LogitComponent(label, sums[i] / n)).ToList();
        return new LogitAttributionResult(logitDiff / n, bias / n, Mean(accLabels, acc, n), Mean(layerLabels, perLayer, n),
            Mean(headLabels, perHead, n), n, Mean(neuronLabels, perNeuron, n), Mean(biasLabels, mlpBias, n));
    }

    /// <summary>A dense MLP's output bias b_out [d_model] float32 (zeros when it has none, as the Llama family).</summary>
    private static Tensor MlpOutBias(HookedTransformer model, int layer)
    {
        string name = model.Config.Architecture switch
        {
            "gpt2" => $"transformer.h.{layer}.mlp.c_proj.bias",
            "gpt_neox" => $"gpt_neox.layers.{layer}.mlp.dense_4h_to_h.bias",
            "phi" => $"model.layers.{layer}.mlp.fc2.bias",
            "gptj" => $"transformer.h.{layer}.mlp.fc_out.bias",
            "opt" => $"model.decoder.layers.{layer}.fc2.bias",
            "bloom" => $"transformer.h.{layer}.mlp.dense_4h_to_h.bias",
            _ => $"model.layers.{layer}.mlp.down_proj.bias",
        };
        var bias = model.named_parameters().FirstOrDefault(kv => kv.name == name).parameter;
        return bias is null ? zeros(model.Config.DModel, ScalarType.Float32) : bias.detach().to(ScalarType.Float32);
    }
}
