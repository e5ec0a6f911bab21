using SaeSharp.Models;
using SaeSharp.Saes;
using TorchSharp;
using static TorchSharp.torch;

namespace SaeSharp.Analysis;

/// <summary>
/// What a feature does according to the weights alone: its logit effect W_dec[i]·W_U (SAEDashboard's "logit weights":
/// W_U with the final layer norm's scale folded in, as TransformerLens <c>fold_ln</c> does), the features with the most
/// similar decoder rows and, for an MLP hook, the most aligned neurons. Decoder rows of a hook that is not in the residual
/// stream are first mapped into it: <c>mlp.hook_post</c> through W_out, <c>attn.hook_z</c> through W_O.
/// </summary>
public static class FeatureWeights
{
    /// <summary>Features per chunk of the [features, vocab] products (bounds memory).</summary>
    private const int Chunk = 256;

    /// <summary>W_U with the final norm's scale folded in, [d_model, d_vocab] float32: diag(γ)·W_U.</summary>
    public static Tensor FoldedUnembed(HookedTransformer model)
    {
        ArgumentNullException.ThrowIfNull(model);
        var p = model.named_parameters().ToDictionary(kv => kv.name, kv => kv.parameter, StringComparer.Ordinal);
        Tensor Find(string what, params string[] names)
        {
            foreach (var n in names) if (p.TryGetValue(n, out var t)) return t;
            throw new SaeSharpException($"{model.Config.ModelName}: no {what} among the parameters (looked for {string.Join(", ", names)})");
        }
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        var wu = Find("unembedding", "embed_out.weight", "lm_head.weight", "transformer.wte.weight", "model.embed_tokens.weight",
                "model.decoder.embed_tokens.weight", "transformer.word_embeddings.weight")
            .to(ScalarType.Float32);                                                              // [vocab, d]
        var gamma = Find("final layer norm", "gpt_neox.final_layer_norm.weight", "transformer.ln_f.weight", "model.norm.weight",
                "model.decoder.final_layer_norm.weight", "model.final_layernorm.weight")
            .to(ScalarType.Float32);
        if (model.Config.Architecture.StartsWith("gemma", StringComparison.Ordinal)) gamma = gamma.add(TorchScalars.Of(1), TorchScalars.One); // Gemma's RMSNorm scales by 1 + w
        return (wu * gamma.unsqueeze(0)).t().contiguous().MoveToOuterDisposeScope();
    }

    /// <summary>The final norm's bias β [d_model] float32 (a LayerNorm's; TransformerLens <c>fold_ln</c> moves it into b_U),
    /// or null when the norm has none (RMSNorm).</summary>
    public static Tensor? FinalNormBias(HookedTransformer model)
    {
        ArgumentNullException.ThrowIfNull(model);
        foreach (var (name, p) in model.named_parameters())
            if (name is "gpt_neox.final_layer_norm.bias" or "transformer.ln_f.bias" or "model.norm.bias" or "model.decoder.final_layer_norm.bias"
                or "model.final_layernorm.bias")
            {
                using var _ = no_grad();
                return p.detach().to(ScalarType.Float32);
            }
        return null;
    }

    /// <summary>The SAE's decoder rows of <paramref name="features"/> written into the residual stream, [n, d_model].</summary>
    public static Tensor ResidualDirections(HookedTransformer model, Sae sae, string hook, IReadOnlyList<int> features)
    {
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        var rows = sae.WDec.detach().index_select(0, tensor(features.Select(i => (long)i).ToArray())).to(ScalarType.Float32);
        hook = model.HookPoints.Resolve(hook);
        var c = model.Config;
        Tensor result;
        bool mlpPost = IsMlpPost(hook), attnZ = hook.EndsWith("attn.hook_z", StringComparison.Ordinal);
        // Inside attention only hook_z (through W_O) and hook_result (a head's output, already d_model wide) write into
        // the residual stream; hook_q/k/v, scores and pattern do not, whatever their width. hook_z is tested by name before
        // width: n_heads·d_head usually equals d_model (GPT-2, Pythia, Llama), where its rows were taken as residual ones.
        bool attnInternal = hook.Contains(".attn.hook_", StringComparison.Ordinal) && !attnZ && !hook.EndsWith("attn.hook_result", StringComparison.Ordinal);
        // A block's LayerNorm output (ln1/ln2.hook_normalized) is d_model wide too, but feeds attention or the MLP, never the
        // residual stream; ln_final.hook_normalized feeds the unembedding, whose folded W_U gives its logits exactly. A
        // transcoder reading it (hook_name_out set) writes its rows into its output hook: d_model rows of the stream.
        bool blockNorm = sae.Cfg.Metadata.HookNameOut is null && hook.StartsWith("blocks.", StringComparison.Ordinal) && hook.Contains(".ln", StringComparison.Ordinal)
                         && (hook.EndsWith(".hook_normalized", StringComparison.Ordinal) || hook.EndsWith(".hook_scale", StringComparison.Ordinal));
        // BLOOM's embed.ln.hook_normalized is the LayerNorm's pure normalisation: its weight and bias stand between it and hook_embed.
        bool embedNorm = hook.StartsWith("embed.ln.", StringComparison.Ordinal);
        if (rows.shape[1] == c.DModel && !mlpPost && !attnZ && !attnInternal && !blockNorm && !embedNorm
            && !hook.EndsWith("hook_pre", StringComparison.Ordinal) && !hook.EndsWith("hook_gate", StringComparison.Ordinal))
            result = rows;
        else if (mlpPost)
        {
            var wOut = MlpOut(model, hook);                                                     // [d_mlp of that MLP, d_model]
            result = rows.shape[1] == wOut.shape[0] ? rows.matmul(wOut)
                : throw new SaeSharpException($"decoder rows of width {rows.shape[1]} do not fit hook '{hook}' (its MLP has {wOut.shape[0]} neurons)");
        }
        else if (attnZ)
        {
            var wo = AttnOut(model, model.HookPoints.LayerOf(hook));                             // [h·d_head, d_model]
            if (rows.shape[1] == wo.shape[0]) result = rows.matmul(wo);
            else if (sae.Cfg.Metadata.HookHeadIndex is int h && rows.shape[1] == c.DHead)
                result = rows.matmul(wo.narrow(0, (long)h * c.DHead, c.DHead));
            else throw new SaeSharpException($"decoder rows of width {rows.shape[1]} do not fit hook '{hook}'");
        }
        else throw new SaeSharpException($"hook '{hook}': decoder rows of width {rows.shape[1]} cannot be written into the residual stream (" +
            (blockNorm ? "a block's LayerNorm output feeds attention or the MLP, not the stream; " : "") +
            (embedNorm ? "embed.ln's normalisation reaches the stream through the LayerNorm's weight and bias, as hook_embed; " : "") +
            "logit effects need a residual-stream, attn/mlp output, mlp.hook_post or attn.hook_z hook)");
        return result.MoveToOuterDisposeScope();
    }

    /// <summary><c>mlp.hook_post</c>, or a mixture of experts' <c>mlp.experts.{e}.hook_post</c>: an MLP's neurons.</summary>
    private static bool IsMlpPost(string hook) => hook.EndsWith("mlp.hook_post", StringComparison.Ordinal)
        || ((hook.Contains(".mlp.experts.", StringComparison.Ordinal) || hook.Contains(".mlp.shared_expert.", StringComparison.Ordinal))
            && hook.EndsWith(".hook_post", StringComparison.Ordinal));

    /// <summary>The output weights [d_mlp, d_model] of the MLP whose neurons <paramref name="hook"/> holds: the layer's
    /// dense MLP, a shared expert's down_proj (Qwen2-MoE's <c>shared_expert</c>, DeepSeek's <c>shared_experts</c>), or for
    /// <c>mlp.experts.{e}.hook_post</c> that expert's w2 / down_proj (before its routing weight; gpt-oss's fused
    /// <c>experts.down_proj</c> [experts, d_mlp, d_model] at e).</summary>
    private static Tensor MlpOut(HookedTransformer model, string hook)
    {
        int layer = model.HookPoints.LayerOf(hook);
        const string experts = ".mlp.experts.";
        int at = hook.IndexOf(experts, StringComparison.Ordinal);
        if (hook.Contains(".mlp.shared_expert.", StringComparison.Ordinal))
            return Weight(model, ($"model.layers.{layer}.mlp.shared_expert.down_proj.weight", true), ($"model.layers.{layer}.mlp.shared_experts.down_proj.weight", true));
        if (at < 0) return MlpOut(model, layer);
        int e = int.Parse(hook[(at + experts.Length)..hook.LastIndexOf('.')], System.Globalization.CultureInfo.InvariantCulture);
        if (model.Config.Architecture == "gpt_oss")
        {
            using var scope = NewDisposeScope();
            return Weight(model, ($"model.layers.{layer}.mlp.experts.down_proj", false))[e].contiguous().MoveToOuterDisposeScope();
        }
        return Weight(model, (model.Config.Architecture == "mixtral" ? $"model.layers.{layer}.block_sparse_moe.experts.{e}.w2.weight"
            : $"model.layers.{layer}.mlp.experts.{e}.down_proj.weight", true));
    }

    /// <summary>MLP output weights of a layer as [d_mlp, d_model] (rows: each neuron's write direction); a mixture of
    /// experts has no single one (an error), but a dense layer of an MoE model (DeepSeek's first
    /// <c>first_k_dense_replace</c>, Qwen-MoE's <c>mlp_only_layers</c>) has.</summary>
    public static Tensor MlpOut(HookedTransformer model, int layer)
    {
        ArgumentNullException.ThrowIfNull(model);
        var c = model.Config;
        if (c.NumExperts > 0)
            return HasDenseMlp(model, layer)
                ? Weight(model, ($"model.layers.{layer}.mlp.down_proj.weight", true))
                : throw new SaeSharpException($"{c.ModelName}: layer {layer}'s MLP is a mixture of {c.NumExperts} experts; each expert has its own output weights");
        return Weight(model, c.Architecture == "gpt2"
            ? ($"transformer.h.{layer}.mlp.c_proj.weight", false)
            : c.Architecture == "gpt_neox" ? ($"gpt_neox.layers.{layer}.mlp.dense_4h_to_h.weight", true)
            : c.Architecture == "gpt_neo" ? ($"transformer.h.{layer}.mlp.c_proj.weight", true)
            : c.Architecture == "phi" ? ($"model.layers.{layer}.mlp.fc2.weight", true)
            : c.Architecture == "gptj" ? ($"transformer.h.{layer}.mlp.fc_out.weight", true)
            : c.Architecture == "opt" ? ($"model.decoder.layers.{layer}.fc2.weight", true)
            : c.Architecture == "bloom" ? ($"transformer.h.{layer}.mlp.dense_4h_to_h.weight", true)
            : ($"model.layers.{layer}.mlp.down_proj.weight", true));
    }

    private static Tensor AttnOut(HookedTransformer model, int layer) => Weight(model, model.Config.Architecture == "gpt2"
        ? ($"transformer.h.{layer}.attn.c_proj.weight", false)
        : model.Config.Architecture == "gpt_neox" ? ($"gpt_neox.layers.{layer}.attention.dense.weight", true)
        : model.Config.Architecture == "gpt_neo" ? ($"transformer.h.{layer}.attn.attention.out_proj.weight", true)
        : model.Config.Architecture == "phi" ? ($"model.layers.{layer}.self_attn.dense.weight", true)
        : model.Config.Architecture == "gptj" ? ($"transformer.h.{layer}.attn.out_proj.weight", true)
        : model.Config.Architecture == "opt" ? ($"model.decoder.layers.{layer}.self_attn.out_proj.weight", true)
        : model.Config.Architecture == "bloom" ? ($"transformer.h.{layer}.self_attention.dense.weight", true)
        : ($"model.layers.{layer}.self_attn.o_proj.weight", true));

    /// <summary>Whether layer <paramref name="layer"/> of a mixture-of-experts model is a dense MLP (DeepSeek's first
    /// <c>first_k_dense_replace</c> layers, Qwen-MoE's <c>mlp_only_layers</c>).</summary>
    private static bool HasDenseMlp(HookedTransformer model, int layer) =>
        model.named_parameters().Any(kv => kv.name == $"model.layers.{layer}.mlp.down_proj.weight");

    /// <summary>The first of <paramref name="names"/> the model has, as [in, out] float32 (Linear weights [out, in] are
    /// transposed).</summary>
    internal static Tensor Weight(HookedTransformer model, params (string Name, bool Linear)[] names)
    {
        var p = model.named_parameters().ToDictionary(kv => kv.name, kv => kv.parameter, StringComparer.Ordinal);
        foreach (var w in names)
        {
            if (!p.TryGetValue(w.Name, out var t)) continue;
            using var scope = NewDisposeScope();
            var f = t.detach().to(ScalarType.Float32);
            return (w.Linear ? f.t() : f).MoveToOuterDisposeScope();
        }
        throw new SaeSharpException($"{model.Config.ModelName}: no parameter {string.Join(" or ", names.Select(n => $"'{n.Name}'"))}");
    }

    /// <summary>
    /// Fills <see cref="FeatureStatistics.TopLogits"/>, <see cref="FeatureStatistics.BottomLogits"/>,
    /// <see cref="FeatureStatistics.LogitHistogram"/>, <see cref="FeatureStatistics.SimilarFeatures"/> and (MLP hooks)
    /// <see cref="FeatureStatistics.AlignedNeurons"/> of <paramref name="stats"/>.
    /// </summary>
    /// <remarks><paramref name="vocabSize"/>: logit columns to consider (the tokenizer's vocabulary; Pythia pads W_U
    /// beyond it), null for all.</remarks>
    public static void Fill(IReadOnlyList<FeatureStatistics> stats, HookedTransformer model, Sae sae, string hook,
        int topLogits = 10, int similar = 5, int neurons = 5, int? vocabSize = null, int logitBins = DashboardHistogram.Bins)
    {
        ArgumentNullException.ThrowIfNull(stats);
        using var _ = no_grad();
        using var outer = NewDisposeScope();
        hook = model.HookPoints.Resolve(hook);
        var wu = FoldedUnembed(model);
        int vocab = Math.Min(vocabSize ?? (int)wu.shape[1], (int)wu.shape[1]);
        var decNorm = NormalizedRows(sae.WDec.detach().to(ScalarType.Float32));
        // A mixture of experts' hook_mlp_out has no neurons of its own to align with (a dense layer of an MoE model has).
        bool mlpOut = hook.EndsWith("hook_mlp_out", StringComparison.Ordinal)
                      && (model.Config.NumExperts == 0 || HasDenseMlp(model, model.HookPoints.LayerOf(hook)));
        bool mlpPost = IsMlpPost(hook);
        var neuronDirs = mlpOut ? NormalizedRows(MlpOut(model, model.HookPoints.LayerOf(hook))) : null;
        for (int start = 0; start < stats.Count; start += Chunk)
        {
            using var scope = NewDisposeScope();
            var part = stats.Skip(start).Take(Chunk).ToList();
            var ids = part.Select(s => s.Feature).ToList();
            var logits = ResidualDirections(model, sae, hook, ids).matmul(wu).narrow(1, 0, vocab).contiguous(); // [n, vocab]
            int k = Math.Max(0, Math.Min(topLogits, vocab));
            float[] tv = [], bv = [];
            long[] ti = [], bi = [];
            if (k > 0) // TorchSharp's data<T>() refuses the empty results of topk(0)
            {
                var (topV, topI) = logits.topk(k, 1, largest: true, sorted: true);
                var (botV, botI) = logits.topk(k, 1, largest: false, sorted: true);
                (tv, ti, bv, bi) = (topV.data<float>().ToArray(), topI.data<long>().ToArray(), botV.data<float>().ToArray(), botI.data<long>().ToArray());
            }

            var idx = tensor(ids.Select(i => (long)i).ToArray());
            var rows = decNorm.index_select(0, idx);
            int ks = Math.Max(0, Math.Min(similar, (int)decNorm.shape[0] - 1));
            float[] svA = [];
            long[] siA = [];
            if (ks > 0)
            {
                var cos = rows.matmul(decNorm.t());                                               // [n, d_sae]
                using var n = ids.Count.ToScalar();
                cos.index_put_(tensor(float.NegativeInfinity), TorchScalars.Arange(n), idx);                  // not itself
                var (sv, si) = cos.topk(ks, 1);
                (svA, siA) = (sv.data<float>().ToArray(), si.data<long>().ToArray());
            }

            float[]? nvA = null; long[]? niA = null;
            int kn = 0;
            if ((mlpOut || mlpPost) && neurons > 0)
            {
                var align = mlpOut ? rows.matmul(neuronDirs!.t()) : rows;                          // [n, d_mlp]
                kn = Math.Min(neurons, (int)align.shape[1]);
                var (nv, ni) = align.topk(kn, 1);
                (nvA, niA) = (nv.data<float>().ToArray(), ni.data<long>().ToArray());
            }
            for (int r = 0; r < part.Count; r++)
            {
                var s = part[r];
                s.TopLogits = Enumerable.Range(0, k).Select(c => new TokenValue((int)ti[r * k + c], tv[r * k + c])).ToList();
                s.BottomLogits = Enumerable.Range(0, k).Select(c => new TokenValue((int)bi[r * k + c], bv[r * k + c])).ToList();
                using (var row = logits[r]) s.LogitHistogram = DashboardHistogram.FromData(row, logitBins);
                s.SimilarFeatures = Enumerable.Range(0, ks).Select(c => new Similarity((int)siA[r * ks + c], svA[r * ks + c])).ToList();
                if (nvA is not null)
                    s.AlignedNeurons = Enumerable.Range(0, kn).Select(c => new Similarity((int)niA![r * kn + c], nvA[r * kn + c])).ToList();
            }
        }
    }

    /// <summary>SAEDashboard's neuron alignment table has this many rows (the NeuronpediaRunner's <c>FeatureTablesConfig(n_rows=3)</c>).</summary>
    public const int NeuronAlignmentRows = 3;

    /// <summary>True when SAEDashboard's NeuronpediaRunner scales the decoder rows to unit norm (SAELens
    /// <c>fold_W_dec_norm</c>) before its tables: every architecture but <c>topk</c> and <c>temporal</c>.</summary>
    public static bool RunnerFoldsDecoderNorm(string? architecture) => architecture is not ("topk" or "temporal");

    /// <summary>Fills <see cref="FeatureStatistics.NeuronAlignment"/> from the SAE's decoder, as the NeuronpediaRunner
    /// computes it (<see cref="NeuronAlignments"/>, rows unit-norm unless <see cref="RunnerFoldsDecoderNorm"/> says not).</summary>
    public static void FillNeuronAlignment(IReadOnlyList<FeatureStatistics> stats, Sae sae)
    {
        ArgumentNullException.ThrowIfNull(stats);
        ArgumentNullException.ThrowIfNull(sae);
        var tables = NeuronAlignments(sae.WDec, stats.Select(s => s.Feature).ToList(), RunnerFoldsDecoderNorm(sae.Cfg.Architecture));
        for (int i = 0; i < stats.Count; i++) stats[i].NeuronAlignment = tables[i];
    }

    /// <summary>
    /// SAEDashboard's <c>add_neuron_alignment_data</c>: for each of <paramref name="features"/>, the
    /// <paramref name="rows"/> largest entries (signed: the most negative ones are not listed) of its decoder row
    /// <c>W_dec[i]</c> in float32, largest first, each with |entry| / the row's L1 norm. With
    /// <paramref name="unitNormRows"/> the row is first divided by its L2 norm (clamped at 1e-8), as SAELens's
    /// <c>fold_W_dec_norm</c> does; the L1 shares are the same either way. An all-zero row gets shares 0 (SAEDashboard's
    /// 0/0 is NaN, which JSON cannot hold).
    /// </summary>
    public static IReadOnlyList<IReadOnlyList<NeuronAlignment>> NeuronAlignments(Tensor wDec, IReadOnlyList<int> features, bool unitNormRows, int rows = NeuronAlignmentRows)
    {
        ArgumentNullException.ThrowIfNull(wDec);
        ArgumentNullException.ThrowIfNull(features);
        if (features.Count == 0) return [];
        using var _ = no_grad();
        using var scope = NewDisposeScope();
        var w = wDec.detach().to(ScalarType.Float32).index_select(0, tensor(features.Select(i => (long)i).ToArray()));
        if (unitNormRows) w = w / w.norm(1, keepdim: true).clamp_min(TorchScalars.Of(1e-8));
        int k = Math.Min(rows, (int)w.shape[1]);
        if (k <= 0) return features.Select(_ => (IReadOnlyList<NeuronAlignment>)[]).ToList();
        var (values, indices) = w.topk(k, 1, largest: true, sorted: true);
        var l1 = w.abs().sum(1, keepdim: true);
        var shares = values.abs() / l1;
        var v = values.data<float>().ToArray();
        var ix = indices.data<long>().ToArray();
        var sh = shares.data<float>().ToArray();
        return Enumerable.Range(0, features.Count)
            .Select(r => (IReadOnlyList<NeuronAlignment>)Enumerable.Range(0, k)
                .Select(c => new NeuronAlignment((int)ix[r * k + c], v[r * k + c], float.IsNaN(sh[r * k + c]) ? 0 : sh[r * k + c])).ToList())
            .ToList();
    }

    private static Tensor NormalizedRows(Tensor w)
    {
        using var scope = NewDisposeScope();
        return (w / w.norm(1, keepdim: true).clamp_min(TorchScalars.Of(1e-12))).MoveToOuterDisposeScope();
    }
}
