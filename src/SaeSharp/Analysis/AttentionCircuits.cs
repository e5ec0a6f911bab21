using SaeSharp.Models;
using static TorchSharp.torch;

namespace SaeSharp.Analysis;

/// <summary>
/// A loaded model's attention weights per head, float32, as TransformerLens's stacked properties
/// (transformer_lens/HookedTransformer.py <c>W_Q</c>, <c>W_K</c>, <c>W_V</c> [n_layers, n_heads, d_model, d_head] and
/// <c>W_O</c> [n_layers, n_heads, d_head, d_model]). A grouped-query model's W_K and W_V give each query head the key/value
/// head it reads (TransformerLens's <c>repeat_interleave</c> of <c>_W_K</c>). The tensors belong to the caller's dispose scope.
/// </summary>
public sealed record AttentionWeights(Tensor WQ, Tensor WK, Tensor WV, Tensor WO);

/// <summary>Each head's copying scores, [layer, head] each (Main Demo cells 110–118), row i for layer <see cref="Layers"/>[i].</summary>
/// <param name="OvCopying">sum(λ).real / sum(|λ|) of the eigenvalues λ of the OV circuit W_V·W_O: 1 when every eigenvalue is
/// positive real (the head copies what it reads), −1 when every one is negative.</param>
/// <param name="FullOvCopying">The same of the full OV circuit W_E·W_V·W_O·W_U (token to logit).</param>
/// <param name="Top1">Share of the <see cref="Tokens"/> sampled tokens whose own logit is the largest of their row of the full
/// OV circuit restricted to those tokens (rows and columns).</param>
/// <param name="Tokens">The token ids of the <see cref="Top1"/> sample, evenly spaced over the vocabulary.</param>
/// <param name="Layers">The layers scored, in row order.</param>
public sealed record OvCircuitScores(double[,] OvCopying, double[,] FullOvCopying, double[,] Top1, IReadOnlyList<long> Tokens, IReadOnlyList<int> Layers);

/// <summary>
/// The QK and OV circuits of a loaded model as TransformerLens's <c>model.QK</c> = FactoredMatrix(W_Q, W_Kᵀ) and
/// <c>model.OV</c> = FactoredMatrix(W_V, W_O) (transformer_lens/HookedTransformer.py), and the Main Demo's copying scores.
/// Biases, rotary embeddings, q/k norms and attention logit scaling are left out, as TransformerLens's properties leave
/// them; the weights are used as loaded (TransformerLens's <c>from_pretrained</c> would have folded the layer norms into
/// them: <see cref="WeightProcessing.Apply"/> first does that for GPT-2 and GPT-NeoX). W_E is the embedding as stored and
/// W_U the unembedding with the final norm's scale folded in (<see cref="FeatureWeights.FoldedUnembed"/>).
/// </summary>
public static class AttentionCircuits
{
    /// <summary>Rows of the full OV circuit formed at once for the top-1 accuracy (bounds memory to heads × rows × tokens).</summary>
    private const long RowChunk = 512;

    /// <summary>Reads W_Q, W_K, W_V, W_O of every layer: GPT-2 (Conv1D <c>c_attn</c> [d, 3·d] and <c>c_proj</c>), GPT-NeoX
    /// (per-head interleaved <c>query_key_value</c>, <c>dense</c>) and the Llama family (<c>q_proj</c>, <c>k_proj</c>,
    /// <c>v_proj</c>, <c>o_proj</c>); DeepSeek's latent attention has no per-head W_K (an error).</summary>
    public static AttentionWeights Weights(HookedTransformer model)
    {
        ArgumentNullException.ThrowIfNull(model);
        var c = model.Config;
        if (c.Architecture.StartsWith("deepseek", StringComparison.Ordinal))
            throw new SaeSharpException($"{c.ModelName} ({c.Architecture}): multi-head latent attention has no per-head W_K and W_V to form QK / OV circuits from");
        using var _ = no_grad();
        using var scope = NewDisposeScope();
        int h = c.NHeads, kv = c.NKvHeads, hd = c.DHead, d = c.DModel;
        // Query head i reads key/value head i / (h / kv) (Hugging Face's repeat_kv, TransformerLens's repeat_interleave).
        var group = TorchScalars.Arange(h).div(TorchScalars.Of((long)(h / kv)), rounding_mode: RoundingMode.floor);
        var q = new List<Tensor>(); var k = new List<Tensor>(); var v = new List<Tensor>(); var o = new List<Tensor>();
        static Tensor Heads(Tensor inOut, long heads, long hd) => inOut.reshape(inOut.shape[0], heads, hd).permute(1, 0, 2); // [heads, d, hd]
        for (int l = 0; l < c.NLayers; l++)
        {
            Tensor wo;
            if (c.Architecture == "gpt2")
            {
                var w = FeatureWeights.Weight(model, ($"transformer.h.{l}.attn.c_attn.weight", false));      // [d, 3·h·hd]: q, k, v
                q.Add(Heads(w.narrow(1, 0, (long)h * hd), h, hd));
                k.Add(Heads(w.narrow(1, (long)h * hd, (long)h * hd), h, hd));
                v.Add(Heads(w.narrow(1, 2L * h * hd, (long)h * hd), h, hd));
                wo = FeatureWeights.Weight(model, ($"transformer.h.{l}.attn.c_proj.weight", false));
            }
            else if (c.Architecture == "gpt_neo")
            {
                string b = $"transformer.h.{l}.attn.attention.";
                q.Add(Heads(FeatureWeights.Weight(model, (b + "q_proj.weight", true)), h, hd));
                k.Add(Heads(FeatureWeights.Weight(model, (b + "k_proj.weight", true)), h, hd));
                v.Add(Heads(FeatureWeights.Weight(model, (b + "v_proj.weight", true)), h, hd));
                wo = FeatureWeights.Weight(model, (b + "out_proj.weight", true));
            }
            else if (c.Architecture == "gpt_neox")
            {
                var w = FeatureWeights.Weight(model, ($"gpt_neox.layers.{l}.attention.query_key_value.weight", true)).reshape(d, h, 3, hd);
                q.Add(w.select(2, 0).permute(1, 0, 2));
                k.Add(w.select(2, 1).permute(1, 0, 2));
                v.Add(w.select(2, 2).permute(1, 0, 2));
                wo = FeatureWeights.Weight(model, ($"gpt_neox.layers.{l}.attention.dense.weight", true));
            }
            else
            {
                string b = $"model.layers.{l}.self_attn.";
                q.Add(Heads(FeatureWeights.Weight(model, (b + "q_proj.weight", true)), h, hd));
                k.Add(Heads(FeatureWeights.Weight(model, (b + "k_proj.weight", true)), kv, hd).index_select(0, group));
                v.Add(Heads(FeatureWeights.Weight(model, (b + "v_proj.weight", true)), kv, hd).index_select(0, group));
                wo = FeatureWeights.Weight(model, (b + "o_proj.weight", true));
            }
            o.Add(wo.reshape(h, hd, wo.shape[1]));                                                      // [h·hd, d] → [h, hd, d]
        }
        Tensor Stack(List<Tensor> xs) => stack(xs).contiguous().MoveToOuterDisposeScope();
        return new AttentionWeights(Stack(q), Stack(k), Stack(v), Stack(o));
    }

    /// <summary>TransformerLens's <c>model.OV</c>: FactoredMatrix(W_V, W_O), [n_layers, n_heads, d_model, d_model] of rank d_head.</summary>
    public static FactoredMatrix OV(HookedTransformer model)
    {
        var w = Weights(model);
        return new FactoredMatrix(w.WV, w.WO);
    }

    /// <summary>TransformerLens's <c>model.QK</c>: FactoredMatrix(W_Q, W_Kᵀ), [n_layers, n_heads, d_model (query), d_model (key)].</summary>
    public static FactoredMatrix QK(HookedTransformer model)
    {
        var w = Weights(model);
        return new FactoredMatrix(w.WQ, w.WK.transpose(-2, -1));
    }

    /// <summary>The token embedding W_E [d_vocab, d_model] float32, as stored.</summary>
    public static Tensor Embedding(HookedTransformer model) =>
        FeatureWeights.Weight(model, ("transformer.wte.weight", false), ("gpt_neox.embed_in.weight", false), ("model.embed_tokens.weight", false));

    /// <summary>TransformerLens's copying score sum(λ).real / sum(|λ|) over the last dimension of complex eigenvalues
    /// (Main Demo cell 112), as float64.</summary>
    public static Tensor CopyingScore(Tensor eigenvalues)
    {
        ArgumentNullException.ThrowIfNull(eigenvalues);
        return eigenvalues.sum(-1).real.to(ScalarType.Float64) / eigenvalues.abs().sum(-1).to(ScalarType.Float64);
    }

    /// <summary>
    /// The Main Demo's copying scores of every head (cells 110–118) and the full OV circuit's top-1 accuracy on
    /// <paramref name="tokens"/> token ids evenly spaced over the vocabulary (all of it when null or larger). The full OV
    /// circuit's eigenvalues are those of the d_model-sized OV·(W_U·W_E) (a cyclic permutation of W_E·OV·W_U: the same
    /// nonzero eigenvalues), so the whole vocabulary counts without a [vocab, vocab] matrix. <paramref name="layers"/>: the
    /// layers scored (null: all).
    /// </summary>
    public static OvCircuitScores Scores(HookedTransformer model, int? tokens = null, IReadOnlyList<int>? layers = null)
    {
        ArgumentNullException.ThrowIfNull(model);
        var c = model.Config;
        if (tokens is <= 0) throw new SaeSharpException($"OV circuit scores: {tokens} tokens (give at least 1)");
        layers ??= Enumerable.Range(0, c.NLayers).ToList();
        foreach (int bad in layers.Where(l => l < 0 || l >= c.NLayers))
            throw new SaeSharpException($"OV circuit scores: layer {bad} is outside 0..{c.NLayers - 1} ({c.ModelName} has {c.NLayers} layers)");
        using var _ = no_grad();
        using var outer = NewDisposeScope();
        var w = Weights(model);
        var we = Embedding(model);                                                       // [vocab, d]
        var wu = FeatureWeights.FoldedUnembed(model);                                    // [d, vocab']
        long vocab = Math.Min(we.shape[0], wu.shape[1]);
        if (we.shape[0] != wu.shape[1]) (we, wu) = (we.narrow(0, 0, vocab), wu.narrow(1, 0, vocab));
        int n = (int)Math.Min(tokens ?? vocab, vocab);
        var ids = Enumerable.Range(0, n).Select(i => (long)Math.Floor((double)i * vocab / n)).ToArray();
        var idx = tensor(ids);
        var weSub = we.index_select(0, idx);                                             // [n, d]
        var wuSub = wu.index_select(1, idx);                                             // [d, n]
        var wuWe = wu.matmul(we);                                                        // [d, d]
        var diagonal = TorchScalars.Arange(n);
        var ov = new double[layers.Count, c.NHeads];
        var full = new double[layers.Count, c.NHeads];
        var top1 = new double[layers.Count, c.NHeads];
        for (int row = 0; row < layers.Count; row++)
        {
            int l = layers[row];
            using var scope = NewDisposeScope();
            var layer = new FactoredMatrix(w.WV[l], w.WO[l]);                           // [heads, d, d]
            var ovScore = CopyingScore(layer.Eigenvalues()).data<double>().ToArray();
            var fullScore = CopyingScore(layer.MatMul(wuWe).Eigenvalues()).data<double>().ToArray();
            var sub = layer.LeftMatMul(weSub).MatMul(wuSub);                              // [heads, n, n] kept factored
            var hits = zeros(c.NHeads, ScalarType.Float64);
            for (long r = 0; r < n; r += RowChunk)                                         // [heads, rows, n] at a time
            {
                using var rows = NewDisposeScope();
                long len = Math.Min(RowChunk, n - r);
                var best = sub.A.narrow(1, r, len).matmul(sub.B).argmax(-1);               // [heads, rows]
                hits.add_(best.eq(diagonal.narrow(0, r, len)).to(ScalarType.Float64).sum([-1]), TorchScalars.One);
            }
            var hit = hits.data<double>().ToArray();
            for (int head = 0; head < c.NHeads; head++)
                (ov[row, head], full[row, head], top1[row, head]) = (ovScore[head], fullScore[head], hit[head] / n);
        }
        return new OvCircuitScores(ov, full, top1, ids, layers);
    }
}
