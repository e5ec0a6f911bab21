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

/// <summary>The eigenvalues of each head's OV circuit W_V·W_O (the d_head nonzero ones, from the small W_O·W_V), row i for
/// layer <see cref="Layers"/>[i]: <see cref="Values"/>[i][head] holds d_head complex numbers, in no particular order.</summary>
public sealed record OvCircuitEigenvalues(System.Numerics.Complex[][][] Values, IReadOnlyList<int> Layers);

/// <summary>Each head's QK circuit scores, [layer, head] each (<see cref="AttentionCircuits.QkScores"/>), row i for layer <see cref="Layers"/>[i].</summary>
/// <param name="PreviousToken">Mean sub-diagonal of the positional pattern softmax(mask(W_pos·QK·W_posᵀ / √d_head)) over the
/// first <see cref="Positions"/> positions: 1 for a head that attends to the previous position only; null without learned positions.</param>
/// <param name="Positions">Positions of the positional pattern (0 without learned positions).</param>
/// <param name="SameToken">Share of the <see cref="Tokens"/> sampled query tokens whose own key scores highest in the full QK
/// circuit W_E·QK·W_Eᵀ restricted to those tokens.</param>
/// <param name="Tokens">The token ids of the <see cref="SameToken"/> sample, evenly spaced over the vocabulary.</param>
/// <param name="Layers">The layers scored, in row order.</param>
public sealed record QkCircuitScores(double[,]? PreviousToken, int Positions, double[,] SameToken, IReadOnlyList<long> Tokens, IReadOnlyList<int> Layers);

/// <summary>
/// The QK and OV circuits of a loaded model as TransformerLens's <c>model.QK</c> = FactoredMatrix(W_Q, W_Kᵀ) and
/// <c>model.OV</c> = FactoredMatrix(W_V, W_O) (transformer_lens/HookedTransformer.py), and the Main Demo's copying scores.
/// Biases, rotary embeddings, q/k norms and attention logit scaling are left out, as TransformerLens's properties leave
/// them; the weights are used as loaded (TransformerLens's <c>from_pretrained</c> would have folded the layer norms into
/// them: <see cref="WeightProcessing.Apply"/> first does that). W_E is the embedding as stored and
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
            else if (c.Architecture is "gpt_neo" or "gptj")
            {
                string b = c.Architecture == "gptj" ? $"transformer.h.{l}.attn." : $"transformer.h.{l}.attn.attention.";
                q.Add(Heads(FeatureWeights.Weight(model, (b + "q_proj.weight", true)), h, hd));
                k.Add(Heads(FeatureWeights.Weight(model, (b + "k_proj.weight", true)), h, hd));
                v.Add(Heads(FeatureWeights.Weight(model, (b + "v_proj.weight", true)), h, hd));
                wo = FeatureWeights.Weight(model, (b + "out_proj.weight", true));
            }
            else if (c.Architecture == "opt")
            {
                string b = $"model.decoder.layers.{l}.self_attn.";
                q.Add(Heads(FeatureWeights.Weight(model, (b + "q_proj.weight", true)), h, hd));
                k.Add(Heads(FeatureWeights.Weight(model, (b + "k_proj.weight", true)), h, hd));
                v.Add(Heads(FeatureWeights.Weight(model, (b + "v_proj.weight", true)), h, hd));
                wo = FeatureWeights.Weight(model, (b + "out_proj.weight", true));
            }
            else if (c.Architecture is "gpt_neox" or "bloom")
            {
                // Both fuse q, k, v per head: [d, head, (q, k, v), hd].
                string b = c.Architecture == "bloom" ? $"transformer.h.{l}.self_attention." : $"gpt_neox.layers.{l}.attention.";
                var w = FeatureWeights.Weight(model, (b + "query_key_value.weight", true)).reshape(d, h, 3, hd);
                q.Add(w.select(2, 0).permute(1, 0, 2));
                k.Add(w.select(2, 1).permute(1, 0, 2));
                v.Add(w.select(2, 2).permute(1, 0, 2));
                wo = FeatureWeights.Weight(model, (b + "dense.weight", true));
            }
            else
            {
                string b = $"model.layers.{l}.self_attn.";
                q.Add(Heads(FeatureWeights.Weight(model, (b + "q_proj.weight", true)), h, hd));
                k.Add(Heads(FeatureWeights.Weight(model, (b + "k_proj.weight", true)), kv, hd).index_select(0, group));
                v.Add(Heads(FeatureWeights.Weight(model, (b + "v_proj.weight", true)), kv, hd).index_select(0, group));
                wo = FeatureWeights.Weight(model, (b + (c.Architecture == "phi" ? "dense.weight" : "o_proj.weight"), true));
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

    /// <summary>
    /// TransformerLens's <c>refactor_factored_attn_matrices</c> (transformer_lens/weight_processing.py), in place on a
    /// GPT-2: each head's QK bilinear form, biases included (W_Q and b_Q, W_K and b_K stacked as a d_model+1 input whose
    /// last coordinate is 1), is refactored evenly (<see cref="FactoredMatrix.MakeEven"/>: W_Q = U·√S, W_K = V·√S), b_V
    /// is moved into b_O, and the OV circuit is refactored as W_V = U·S, W_O = Vᵀ (a rotation: z and the head's result
    /// have the same norm). W_Q·W_Kᵀ, W_V·W_O, the attention patterns and the logits are unchanged. Rotary models are
    /// refused, as TransformerLens refuses them (their QK form depends on the positions); GPT-Neo, OPT and BLOOM, which
    /// TransformerLens refactors, are refused here (not written yet).
    /// </summary>
    public static void RefactorFactoredAttnMatrices(HookedTransformer model)
    {
        ArgumentNullException.ThrowIfNull(model);
        var c = model.Config;
        if (c.RotaryDim > 0 || c.Architecture.StartsWith("deepseek", StringComparison.Ordinal))
            throw new SaeSharpException($"refactor_factored_attn_matrices: {c.ModelName} ({c.Architecture}) has rotary positions; TransformerLens refuses " +
                                        "them too: the QK circuit of a rotary model depends on the positions of the query and the key");
        if (c.Architecture != "gpt2")
            throw new SaeSharpException($"refactor_factored_attn_matrices: {c.ModelName} ({c.Architecture}) is not supported here: GPT-2 only " +
                                        "(TransformerLens also refactors GPT-Neo, OPT and BLOOM)");
        using var _ = no_grad();
        using var scope = NewDisposeScope();
        var p = model.named_parameters().ToDictionary(kv => kv.name, kv => kv.parameter, StringComparer.Ordinal);
        var w = Weights(model);
        int h = c.NHeads, hd = c.DHead, d = c.DModel;
        for (int l = 0; l < c.NLayers; l++)
        {
            using var layerScope = NewDisposeScope();
            string b = $"transformer.h.{l}.attn.";
            var (cAttn, cAttnBias, cProj, cProjBias) = (p[b + "c_attn.weight"], p[b + "c_attn.bias"], p[b + "c_proj.weight"], p[b + "c_proj.bias"]);
            var bias = cAttnBias.detach().to(ScalarType.Float32).view(3, h, 1, hd);               // q, k, v biases per head
            var qEff = cat([w.WQ[l], bias[0]], 1);                                              // [h, d+1, hd]
            var kEff = cat([w.WK[l], bias[1]], 1);
            var (q, kT) = new FactoredMatrix(qEff, kEff.transpose(-2, -1)).MakeEven().Pair;
            var k = kT.transpose(-2, -1);
            var bO = cProjBias.detach().to(ScalarType.Float32).add(bias[2].matmul(w.WO[l]).sum([0, 1]), TorchScalars.One); // + Σ_h b_V[h]·W_O[h]
            var (u, sv, v) = new FactoredMatrix(w.WV[l], w.WO[l]).Svd();
            var wv = u * sv.unsqueeze(-2);                                                       // U·diag(S) [h, d, hd]
            var wo = v.transpose(-2, -1);                                                        // Vᵀ [h, hd, d]
            static Tensor Columns(Tensor perHead) => perHead.permute(1, 0, 2).reshape(perHead.shape[1], -1); // [h, d, hd] → [d, h·hd]
            cAttn.narrow(1, 0, d).copy_(Columns(q.narrow(1, 0, d)));
            cAttn.narrow(1, d, d).copy_(Columns(k.narrow(1, 0, d)));
            cAttn.narrow(1, 2 * d, d).copy_(Columns(wv));
            cAttnBias.narrow(0, 0, d).copy_(q.select(1, d).reshape(-1));
            cAttnBias.narrow(0, d, d).copy_(k.select(1, d).reshape(-1));
            cAttnBias.narrow(0, 2 * d, d).fill_(TorchScalars.Of(0));
            cProj.copy_(wo.reshape(h * hd, d));
            cProjBias.copy_(bO);
        }
    }

    /// <summary>The eigenvalues of every head's OV circuit W_V·W_O (TransformerLens's <c>model.OV.eigenvalues</c>), of the
    /// weights as the model holds them (<see cref="WeightProcessing.Apply"/> first for TransformerLens's processed model).</summary>
    public static OvCircuitEigenvalues OvEigenvalues(HookedTransformer model, IReadOnlyList<int>? layers = null)
    {
        layers = CheckLayers(model, "OV eigenvalues", null, layers);
        using var _ = no_grad();
        using var outer = NewDisposeScope();
        var w = Weights(model);
        var values = new System.Numerics.Complex[layers.Count][][];
        for (int row = 0; row < layers.Count; row++)
        {
            using var scope = NewDisposeScope();
            var ev = view_as_real(new FactoredMatrix(w.WV[layers[row]], w.WO[layers[row]]).Eigenvalues()).to(ScalarType.Float64);   // [heads, d_head, 2]
            var flat = ev.data<double>().ToArray();
            long heads = ev.shape[0], k = ev.shape[1];
            values[row] = new System.Numerics.Complex[heads][];
            for (long h = 0; h < heads; h++)
                values[row][h] = Enumerable.Range(0, (int)k).Select(i => new System.Numerics.Complex(flat[(h * k + i) * 2], flat[(h * k + i) * 2 + 1])).ToArray();
        }
        return new OvCircuitEigenvalues(values, layers);
    }

    /// <summary>Pixels of a panel of <see cref="OvEigenvaluePng"/> (its width; its height is that less 20).</summary>
    public const int EigenvaluePanelPixels = 380;

    /// <summary>The width and height of <see cref="OvEigenvaluePng"/>'s picture of <paramref name="layers"/> layers of
    /// <paramref name="heads"/> heads: up to 4 panels a row, <see cref="EigenvaluePanelPixels"/> each, a title line and a
    /// legend line per 8 heads above them.</summary>
    public static (int Width, int Height) OvEigenvaluePngSize(int layers, int heads)
    {
        int columns = Math.Clamp(layers, 1, 4), rows = (layers + columns - 1) / columns;
        return (12 + columns * EigenvaluePanelPixels, 40 + 24 * ((heads + 7) / 8) + rows * (EigenvaluePanelPixels - 20));
    }

    /// <summary>
    /// The eigenvalues of every head's OV circuit in the complex plane (PNG): a panel per layer, a colour per head, the
    /// panel's axes symmetric about 0 with the same range on both (a copying head's points lie right of the imaginary
    /// axis, a negating head's left), sized by <see cref="OvEigenvaluePngSize"/>.
    /// </summary>
    public static byte[] OvEigenvaluePng(OvCircuitEigenvalues eigenvalues, string modelName)
    {
        ArgumentNullException.ThrowIfNull(eigenvalues);
        int heads = eigenvalues.Values.Length == 0 ? 0 : eigenvalues.Values[0].Length;
        ScottPlot.IPalette palette = heads <= 10 ? new ScottPlot.Palettes.Category10() : new ScottPlot.Palettes.Category20();
        var panels = new List<Plots.ScatterPanel>();
        for (int row = 0; row < eigenvalues.Layers.Count; row++)
        {
            var perHead = eigenvalues.Values[row];
            double r = perHead.SelectMany(v => v).Select(z => Math.Max(Math.Abs(z.Real), Math.Abs(z.Imaginary))).Where(double.IsFinite).DefaultIfEmpty(0).Max();
            r = r > 0 ? r * 1.1 : 1;
            var groups = perHead.Select((v, h) => new Plots.ScatterGroup($"H{h}", heads <= 20 ? palette.GetColor(h).ToHex() : palette.GetColor(h % 20).ToHex(),
                v.Select(z => z.Real).ToArray(), v.Select(z => z.Imaginary).ToArray())).ToList();
            panels.Add(new Plots.ScatterPanel($"layer {eigenvalues.Layers[row]}", groups) { Limits = (-r, r, -r, r), ZeroLines = true, SquareUnits = true });
        }
        var (width, height) = OvEigenvaluePngSize(eigenvalues.Layers.Count, heads);
        return Plots.ScatterPlot.RenderPanels(panels, $"Eigenvalues of each head's OV circuit W_V·W_O, {modelName}", "real", "imaginary",
            width, height, Math.Clamp(eigenvalues.Layers.Count, 1, 4), markerSize: 5);
    }

    /// <summary>The token embedding W_E [d_vocab, d_model] float32, as stored; with <paramref name="processed"/> (the
    /// processing <see cref="WeightProcessing.Apply"/> gave the model) as TransformerLens's processed model has it: centred
    /// over d_model by <c>center_writing_weights</c> (GPT-2's tied W_E is centred by a hook, so it is centred here).</summary>
    public static Tensor Embedding(HookedTransformer model, WeightProcessingOptions? processed = null)
    {
        var we = FeatureWeights.Weight(model, ("transformer.wte.weight", false), ("gpt_neox.embed_in.weight", false), ("model.embed_tokens.weight", false),
            ("model.decoder.embed_tokens.weight", false), ("transformer.word_embeddings.weight", false));
        return processed?.CenterWritingWeights == true ? CenterOver(we, 1) : we;
    }

    /// <summary>The learned position embedding W_pos [n_ctx, d_model] float32 (GPT-2's and GPT-Neo's <c>wpe</c>; OPT's
    /// <c>embed_positions</c> without its two offset rows, as TransformerLens's W_pos; centred in place by
    /// <c>center_writing_weights</c>), or null for a model with rotary positions.</summary>
    public static Tensor? PositionEmbedding(HookedTransformer model)
    {
        var names = model.named_parameters().Select(kv => kv.name).ToHashSet(StringComparer.Ordinal);
        if (names.Contains("transformer.wpe.weight")) return FeatureWeights.Weight(model, ("transformer.wpe.weight", false));
        if (!names.Contains("model.decoder.embed_positions.weight")) return null;
        var w = FeatureWeights.Weight(model, ("model.decoder.embed_positions.weight", false));
        return w.narrow(0, OptSettings.PositionOffset, w.shape[0] - OptSettings.PositionOffset);
    }

    /// <summary>
    /// The unembedding W_U [d_model, d_vocab] float32 with the final norm's scale folded in
    /// (<see cref="FeatureWeights.FoldedUnembed"/>); with <paramref name="processed"/> as TransformerLens's processed model
    /// has it (transformer_lens/weight_processing.py <c>_fold_unembed_layer_norm</c>, <c>center_unembed</c>): centred over
    /// d_model when <c>fold_ln</c> on a LayerNorm model (its <c>center_weights</c>), over the vocabulary when <c>center_unembed</c>. Neither
    /// centring changes a logit difference: the final norm's output has mean 0 over d_model, and a vocabulary-wide
    /// constant drops out of every difference and softmax. The final norm's bias β (<c>b_U</c> after <c>fold_ln</c>) is not in it.
    /// </summary>
    public static Tensor Unembed(HookedTransformer model, WeightProcessingOptions? processed = null)
    {
        var wu = FeatureWeights.FoldedUnembed(model);
        if (processed?.FoldLn == true && model.Config.NormalizationType == "LN") wu = CenterOver(wu, 0);   // RMSNorm: no centring
        if (processed?.CenterUnembed == true) wu = CenterOver(wu, 1);
        return wu;
    }

    private static Tensor CenterOver(Tensor x, long dim) => x - x.mean([dim], keepdim: true);

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
    /// layers scored (null: all). <paramref name="processed"/>: the processing <see cref="WeightProcessing.Apply"/> gave
    /// the model, so W_E and W_U are taken as TransformerLens's processed model has them (<see cref="Embedding"/>,
    /// <see cref="Unembed"/>); null: as loaded.
    /// </summary>
    public static OvCircuitScores Scores(HookedTransformer model, int? tokens = null, IReadOnlyList<int>? layers = null,
                                         WeightProcessingOptions? processed = null)
    {
        layers = CheckLayers(model, "OV circuit scores", tokens, layers);
        var c = model.Config;
        using var _ = no_grad();
        using var outer = NewDisposeScope();
        var w = Weights(model);
        var we = Embedding(model, processed);                                            // [vocab, d]
        var wu = Unembed(model, processed);                                              // [d, vocab']
        long vocab = Math.Min(we.shape[0], wu.shape[1]);
        if (we.shape[0] != wu.shape[1]) (we, wu) = (we.narrow(0, 0, vocab), wu.narrow(1, 0, vocab));
        var ids = SampleTokens(vocab, tokens);
        var idx = tensor(ids);
        var weSub = we.index_select(0, idx);                                             // [n, d]
        var wuSub = wu.index_select(1, idx);                                             // [d, n]
        var wuWe = wu.matmul(we);                                                        // [d, d]
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
            var hit = DiagonalTop1(layer.LeftMatMul(weSub).MatMul(wuSub));              // [heads, n, n] kept factored
            for (int head = 0; head < c.NHeads; head++)
                (ov[row, head], full[row, head], top1[row, head]) = (ovScore[head], fullScore[head], hit[head]);
        }
        return new OvCircuitScores(ov, full, top1, ids, layers);
    }

    /// <summary>
    /// Each head's QK circuit scored two ways, as ARENA's induction-head chapter (1.2, "Reverse-engineering induction
    /// circuits") and the Main Demo's <c>model.QK</c> suggest:
    /// <list type="bullet">
    /// <item>positional: the attention pattern of the positional QK circuit alone,
    /// softmax(causal mask(W_pos·W_Q·W_Kᵀ·W_posᵀ / √d_head)) over the first <paramref name="positions"/> positions, and its
    /// previous-token score, the mean of the pattern's sub-diagonal (ARENA's <c>pos_by_pos_pattern.diag(-1).mean()</c>);
    /// null for a model without learned positions (rotary); <paramref name="positions"/> beyond W_pos's rows, or given for
    /// a model without W_pos, is refused;</item>
    /// <item>token: the full QK circuit W_E·W_Q·W_Kᵀ·W_Eᵀ (query token × key token) restricted to <paramref name="tokens"/>
    /// token ids evenly spaced over the vocabulary, and the share of query tokens whose own key scores highest (a
    /// same-token, duplicate-token head scores near 1).</item>
    /// </list>
    /// Biases and the layer norms are left out, as in <c>model.QK</c>; <paramref name="processed"/> as in <see cref="Scores"/>.
    /// </summary>
    public static QkCircuitScores QkScores(HookedTransformer model, int? tokens = null, IReadOnlyList<int>? layers = null,
                                           int? positions = null, WeightProcessingOptions? processed = null)
    {
        layers = CheckLayers(model, "QK circuit scores", tokens, layers);
        if (positions is <= 1) throw new SaeSharpException($"QK circuit scores: {positions} positions (give at least 2)");
        var c = model.Config;
        using var _ = no_grad();
        using var outer = NewDisposeScope();
        var w = Weights(model);
        var we = Embedding(model, processed);
        var ids = SampleTokens(we.shape[0], tokens);
        var weSub = we.index_select(0, tensor(ids));                                     // [n, d]
        var wpos = PositionEmbedding(model);
        if (positions is int asked && (wpos is null || asked > wpos.shape[0]))
            throw new SaeSharpException(wpos is null
                ? $"QK circuit scores: positions {asked}: {c.ModelName} has no learned position embedding W_pos (rotary positions), so no positional QK pattern"
                : $"QK circuit scores: positions {asked}: more than the {wpos.shape[0]} rows of W_pos (n_ctx) of {c.ModelName}");
        int nPos = wpos is null ? 0 : (int)(positions ?? wpos.shape[0]);
        Tensor? mask = null, scale = null;
        if (wpos is not null)
        {
            wpos = wpos.narrow(0, 0, nPos);
            mask = ones(nPos, nPos, ScalarType.Bool).triu(1);                             // key after query
            scale = tensor(Math.Sqrt(c.DHead), ScalarType.Float32);
        }
        var minusInf = TorchScalars.Of(double.NegativeInfinity);
        var prev = wpos is null ? null : new double[layers.Count, c.NHeads];
        var same = new double[layers.Count, c.NHeads];
        for (int row = 0; row < layers.Count; row++)
        {
            int l = layers[row];
            using var scope = NewDisposeScope();
            var qk = new FactoredMatrix(w.WQ[l], w.WK[l].transpose(-2, -1));             // [heads, d, d]
            var hit = DiagonalTop1(qk.LeftMatMul(weSub).MatMul(weSub.t()));
            double[]? pt = null;
            if (wpos is not null)
            {
                var pattern = qk.LeftMatMul(wpos).MatMul(wpos.t()).AB.div(scale!).masked_fill(mask!, minusInf).softmax(-1);
                pt = pattern.diagonal(-1, -2, -1).mean([-1]).to(ScalarType.Float64).data<double>().ToArray();
            }
            for (int head = 0; head < c.NHeads; head++)
            {
                same[row, head] = hit[head];
                if (prev is not null) prev[row, head] = pt![head];
            }
        }
        return new QkCircuitScores(prev, nPos, same, ids, layers);
    }

    private static IReadOnlyList<int> CheckLayers(HookedTransformer model, string what, int? tokens, IReadOnlyList<int>? layers)
    {
        ArgumentNullException.ThrowIfNull(model);
        var c = model.Config;
        if (tokens is <= 0) throw new SaeSharpException($"{what}: {tokens} tokens (give at least 1)");
        layers ??= Enumerable.Range(0, c.NLayers).ToList();
        foreach (int bad in layers.Where(l => l < 0 || l >= c.NLayers))
            throw new SaeSharpException($"{what}: layer {bad} is outside 0..{c.NLayers - 1} ({c.ModelName} has {c.NLayers} layers)");
        return layers;
    }

    /// <summary><paramref name="tokens"/> ids evenly spaced over a vocabulary of <paramref name="vocab"/> (all when null or larger).</summary>
    private static long[] SampleTokens(long vocab, int? tokens)
    {
        int n = (int)Math.Min(tokens ?? vocab, vocab);
        return Enumerable.Range(0, n).Select(i => (long)Math.Floor((double)i * vocab / n)).ToArray();
    }

    /// <summary>Per head, the share of rows of a square [heads, n, n] factored matrix whose largest entry is on the diagonal,
    /// formed <see cref="RowChunk"/> rows at a time.</summary>
    private static double[] DiagonalTop1(FactoredMatrix m)
    {
        long n = m.LDim;
        var diagonal = TorchScalars.Arange(n);
        var hits = zeros(m.Shape[0], ScalarType.Float64);
        for (long r = 0; r < n; r += RowChunk)                                             // [heads, rows, n] at a time
        {
            using var rows = NewDisposeScope();
            long len = Math.Min(RowChunk, n - r);
            var best = m.A.narrow(1, r, len).matmul(m.B).argmax(-1);                       // [heads, rows]
            hits.add_(best.eq(diagonal.narrow(0, r, len)).to(ScalarType.Float64).sum([-1]), TorchScalars.One);
        }
        return hits.data<double>().Select(h => h / n).ToArray();
    }
}
