using SaeSharp.Hooks;
using TorchSharp;
using static TorchSharp.torch;

namespace SaeSharp.Models;

/// <summary>Scaled dot-product attention shared by the architectures, with the pattern and z hooks.</summary>
internal static class AttentionCore
{
    /// <summary>
    /// The attention of every family after its projections: q, k, v [batch, pos, head, d_head] at hook_q, hook_k, hook_v;
    /// per-head norms of q and k (Qwen3 <c>q_norm</c>, <c>k_norm</c>) when given; rotary on the first
    /// <paramref name="rotaryDim"/> dims of q and k (hook_rot_q, hook_rot_k) when the pass has rotary cos/sin (with
    /// <paramref name="localRotary"/>, the sliding layers' tables where the pass has them: Gemma 3); then
    /// <see cref="Attend"/>. Returns z [batch, pos, head·d_head] for the output projection.
    /// <para><paramref name="normOverHeads"/>: the norms take each position's heads together, [head·d_head] wide (OLMo-2,
    /// OLMoE). <paramref name="clip"/>: q and k after their norms, and v, clamped to [−clip, clip] (OLMoE <c>clip_qkv</c>).
    /// hook_q/k/v are the projections before either. <paramref name="interleavedRotary"/>: GPT-J's adjacent-pair rotary
    /// (<see cref="Rotary.Apply"/>). <paramref name="alibiSlopes"/>: ALiBi biases on the scores (<see cref="Attend"/>).</para>
    /// </summary>
    public static Tensor AttendHeads(Tensor q, Tensor k, Tensor v, int layer, double scale, ForwardContext ctx, BlockHookNames names,
        int rotaryDim = 0, nn.Module<Tensor, Tensor>? qNorm = null, nn.Module<Tensor, Tensor>? kNorm = null,
        double? softCap = null, int? slidingWindow = null, bool localRotary = false, bool normOverHeads = false, double? clip = null,
        Tensor? sinks = null, bool interleavedRotary = false, double[]? alibiSlopes = null)
    {
        var h = ctx.Hooks;
        q = h.Fire(names.Q, q);
        k = h.Fire(names.K, k);
        v = h.Fire(names.V, v);
        if (qNorm is not null && kNorm is not null)
        {
            q = normOverHeads ? qNorm.forward(q.flatten(2)).view(q.shape) : qNorm.forward(q);
            k = normOverHeads ? kNorm.forward(k.flatten(2)).view(k.shape) : kNorm.forward(k);
        }
        if (clip is double c)
        {
            using Scalar lo = (-c).ToScalar(), hi = c.ToScalar();
            (q, k, v) = (q.clamp(lo, hi), k.clamp(lo, hi), v.clamp(lo, hi));
        }
        var (cos, sin) = localRotary && ctx.LocalRotary is { } local ? local : (ctx.RotaryCos, ctx.RotarySin);
        if (rotaryDim > 0 && cos is not null && sin is not null)
        {
            q = h.Fire(names.RotQ, Rotary.Apply(q, cos, sin, rotaryDim, interleavedRotary));
            k = h.Fire(names.RotK, Rotary.Apply(k, cos, sin, rotaryDim, interleavedRotary));
        }
        return Attend(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), layer, scale, ctx, names, softCap, slidingWindow, sinks, alibiSlopes);
    }

    /// <summary>
    /// q, k, v: [batch, head, pos, d_head] (k, v for the new tokens only). Returns z flattened to [batch, pos, head·d_head].
    /// <para>Grouped-query attention: k and v may have fewer heads than q (a divisor); each kv head serves
    /// n_heads / n_kv_heads consecutive query heads (HF <c>repeat_kv</c>). The cache keeps the unrepeated heads.
    /// <paramref name="softCap"/>: scores become cap·tanh(scores/cap) before masking (Gemma 2).
    /// <paramref name="slidingWindow"/>: a query sees only the keys less than that many positions back, counted in
    /// sequence (cache) positions, padding included (Gemma 2/3 local layers); such a layer's cache keeps only the last
    /// window − 1 positions, so its keys may be the last positions of the sequence rather than all of them.
    /// <paramref name="sinks"/>: gpt-oss's learned per-head logit [head], an extra key column of every query's softmax
    /// whose probability is dropped (HF <c>eager_attention_forward</c> with <c>module.sinks</c>): the pattern's rows then sum
    /// to less than 1, and a query with every key masked attends to nothing (its z is 0). For a bf16 or float16 model that
    /// softmax is in the model's dtype, as transformers' gpt-oss computes it; float32 and float64 models keep their own.
    /// hook_attn_scores fires on what the softmax reads: the scaled, soft-capped, masked scores (float32 but as just said),
    /// masked entries at the dtype's minimum.</para>
    /// <para><paramref name="alibiSlopes"/> (BLOOM; one per head, <see cref="AlibiSlopes"/>): ALiBi, slope_h · (key position −
    /// query position) added to the scaled scores, as TransformerLens's <c>positional_embedding_type="alibi"</c> adds it; the
    /// positions count the real tokens of the attention mask (cache included), so left padding shifts nothing.
    /// transformers' BLOOM adds slope_h · key position instead: the same softmax (a per-query constant), so the same
    /// pattern, with hook_attn_scores slope_h · query position lower than HF's scores. A bf16 or float16 model adds the
    /// ALiBi as transformers' BloomAttention does: build_alibi_tensor's slope_h · key position (float32, cast to the model's
    /// dtype) inside <c>baddbmm</c>, alibi + scale·q·kᵀ rounded once to that dtype; hook_attn_scores then holds HF's scores
    /// (in float32), slope_h · key position included.</para>
    /// </summary>
    public static Tensor Attend(Tensor q, Tensor k, Tensor v, int layer, double scale, ForwardContext ctx, BlockHookNames names,
        double? softCap = null, int? slidingWindow = null, Tensor? sinks = null, double[]? alibiSlopes = null)
    {
        if (ctx.Kv is { } kv) (k, v) = kv.Append(layer, k, v, slidingWindow is int sw ? sw - 1 : null);
        long groups = q.shape[1] / k.shape[1];
        if (groups > 1)
        {
            k = k.repeat_interleave(groups, 1);
            v = v.repeat_interleave(groups, 1);
        }
        var dtype = q.dtype;
        var allowed = ctx.Allowed;
        // ALiBi in a bf16 / float16 model: transformers' BloomAttention adds build_alibi_tensor's alibi, cast to the model's
        // dtype, inside baddbmm (alibi + α·q·kᵀ, one rounding to that dtype), with HF's slope_h · key position.
        bool alibiInModelDtype = alibiSlopes is not null && dtype is ScalarType.BFloat16 or ScalarType.Float16;
        Tensor scores;
        if (alibiInModelDtype)
        {
            CheckAlibi(alibiSlopes!, q.shape[1], slidingWindow);
            long b = q.shape[0], h = q.shape[1], nq = q.shape[2], nk = k.shape[2], d = q.shape[3];
            var slopes = tensor(alibiSlopes!, dtype: ScalarType.Float32, device: q.device).view(1, -1, 1);
            var alibi = (slopes * AlibiKeyPositions(allowed).to(ScalarType.Float32)).to(dtype);       // [b, head, key]
            // TorchSharp 0.107 binds Tensor.baddbmm with the tensor as batch1: batch1.baddbmm(batch2, input) is torch's
            // baddbmm(input, batch1, batch2) = β·input + α·batch1·batch2.
            var batch1 = q.reshape(b * h, nq, d);
            scores = batch1.baddbmm(k.transpose(-1, -2).reshape(b * h, d, nk), alibi.reshape(b * h, 1, nk), 1, (float)scale).view(b, h, nq, nk);
        }
        else
        {
            using var scaleScalar = scale.ToScalar();
            scores = matmul(q, k.transpose(-1, -2)) * scaleScalar;
        }
        // Softmax in float32 (float64 models keep float64); masked scores get float32's minimum (as HF), so a fully
        // masked row stays finite. gpt-oss (sinks) in bf16/f16: in the model's dtype, as HF's gpt-oss eager attention.
        bool inModelDtype = sinks is not null && dtype is ScalarType.BFloat16 or ScalarType.Float16;
        var s32 = dtype == ScalarType.Float64 || inModelDtype ? scores : scores.to(ScalarType.Float32);
        if (softCap is double cap)
        {
            using var capScalar = cap.ToScalar();
            s32 = (s32 / capScalar).tanh() * capScalar;
        }
        if (alibiSlopes is not null && !alibiInModelDtype)
        {
            CheckAlibi(alibiSlopes, s32.shape[1], slidingWindow);
            var distance = AlibiKeyPositions(allowed).unsqueeze(2) - ctx.Positions.unsqueeze(1).unsqueeze(-1);                     // [b, 1, query, key]
            var slopes = tensor(alibiSlopes, dtype: s32.dtype, device: s32.device).view(1, -1, 1, 1);
            s32 = s32.add(distance.to(s32.dtype) * slopes, TorchScalars.One);
        }
        if (slidingWindow is int w)
        {
            long nq = allowed.shape[^2], nk = allowed.shape[^1];
            using Scalar nqScalar = nq.ToScalar(), nkScalar = nk.ToScalar(), offset = (nk - nq).ToScalar(), window = w.ToScalar();
            var qi = TorchScalars.Arange(nqScalar, device: allowed.device).add(offset, TorchScalars.One).unsqueeze(1);
            allowed = allowed.logical_and((qi - TorchScalars.Arange(nkScalar, device: allowed.device).unsqueeze(0)).lt(window));
            long kept = k.shape[2];
            if (kept < nk) allowed = allowed.narrow(-1, nk - kept, kept); // the cache dropped keys no query here can see
        }
        Tensor pattern;
        if (inModelDtype)
        {
            // HF gpt-oss eager_attention_forward: the masked scores (the dtype's minimum added), the sink column, minus
            // the row max and the softmax all in the model's dtype (F.softmax(..., dtype=combined_logits.dtype)).
            var lowest = TorchScalars.Of(dtype == ScalarType.BFloat16 ? -3.3895313892515355e38 : -65504.0);   // torch.finfo(dtype).min
            pattern = SinkSoftmax(ctx.Hooks.Fire(names.AttnScores, s32.masked_fill(allowed.logical_not(), lowest)), sinks!);
        }
        else
        {
            s32 = ctx.Hooks.Fire(names.AttnScores, s32.masked_fill(allowed.logical_not(), TorchScalars.Of(float.MinValue)));
            pattern = (sinks is null ? s32.softmax(-1) : SinkSoftmax(s32, sinks, subtractMax: false)).to(dtype);
        }
        pattern = ctx.Hooks.Fire(names.Pattern, pattern);
        var z = matmul(pattern, v).transpose(1, 2); // [batch, pos, head, d_head]
        z = ctx.Hooks.Fire(names.Z, z);
        return z.reshape(z.shape[0], z.shape[1], -1);
    }

    /// <summary>q, k, v [batch, pos, head, head_dim] of separate projections <c>q_proj</c>, <c>k_proj</c>, <c>v_proj</c> (k and v
    /// with <paramref name="kvHeads"/> heads), from <paramref name="x"/> or, with split inputs
    /// (<see cref="ForwardContext.SplitInputs"/>), each head (key-value head) projected from its own input.</summary>
    internal static (Tensor Q, Tensor K, Tensor V) SeparateQkv(Linear qProj, Linear kProj, Linear vProj, int heads, int kvHeads, int hd,
        Tensor x, ForwardContext ctx)
    {
        if (ctx.SplitInputs is { } split)
            return (SplitAttentionInputs.Project(split.Q, qProj.InOut.WeightInOut, qProj.InOut.Bias),
                SplitAttentionInputs.Project(split.K, kProj.InOut.WeightInOut, kProj.InOut.Bias),
                SplitAttentionInputs.Project(split.V, vProj.InOut.WeightInOut, vProj.InOut.Bias));
        long b = x.shape[0], s = x.shape[1];
        return (qProj.forward(x).view(b, s, heads, hd), kProj.forward(x).view(b, s, kvHeads, hd), vProj.forward(x).view(b, s, kvHeads, hd));
    }

    private static void CheckAlibi(double[] slopes, long heads, int? slidingWindow)
    {
        if (slidingWindow is not null || slopes.Length != heads)
            throw new SaeSharpException($"ALiBi needs one slope per head ({heads}, got {slopes.Length}) and no sliding window");
    }

    /// <summary>Each key's position counting the real tokens of the attention mask [batch, 1, key] int64 (0 at padding
    /// before the first real token): the last query sees every real key, cached ones included, so its row of the mask is
    /// the keys' attention mask.</summary>
    private static Tensor AlibiKeyPositions(Tensor allowed) =>
        allowed.select(2, -1).to(ScalarType.Int64).cumsum(-1).sub(TorchScalars.One).clamp_min(TorchScalars.Of(0));

    /// <summary>q, k, v [batch, pos, head, head_dim] of a fused projection whose output is laid out per head as q, k, v blocks
    /// of <paramref name="hd"/> (GPT-NeoX's and BLOOM's <c>query_key_value</c>), from <paramref name="x"/> or, with split
    /// inputs (<see cref="ForwardContext.SplitInputs"/>), each head's own input through its rows of the fused weight.</summary>
    internal static (Tensor Q, Tensor K, Tensor V) PerHeadQkv(Linear qkvLayer, int heads, int hd, Tensor x, ForwardContext ctx)
    {
        if (ctx.SplitInputs is { } split)
        {
            var (w, bias) = qkvLayer.InOut;                           // [d_model, head, (q, k, v), head_dim]
            var w4 = w.reshape(w.shape[0], heads, 3, hd);
            var b3 = bias?.reshape(heads, 3, hd);
            Tensor Part(Tensor input, int i) => SplitAttentionInputs.Project(input, w4.select(2, i), b3?.select(1, i));
            return (Part(split.Q, 0), Part(split.K, 1), Part(split.V, 2));
        }
        var qkv = qkvLayer.forward(x).view(x.shape[0], x.shape[1], heads, 3 * hd);
        return (qkv.narrow(3, 0, hd), qkv.narrow(3, hd, hd), qkv.narrow(3, 2 * hd, hd));
    }

    /// <summary>
    /// The output projection of z [batch, pos, head·d_head] by <paramref name="proj"/> (W_O [head·d_head, d_model], b_O), with
    /// TransformerLens's <c>attn.hook_result</c> [batch, pos, head, d_model]: each head's z_h·W_O[h], without b_O. The result
    /// is built only when something reads that hook; when a hook function or SAE may replace it, the output is its sum over
    /// the heads plus b_O (equal to the projection up to rounding), otherwise, caching included, the projection itself.
    /// </summary>
    public static Tensor Project(Tensor z, long heads, (Tensor WeightInOut, Tensor? Bias) proj, Func<Tensor, Tensor> forward,
        ForwardContext ctx, BlockHookNames names)
    {
        var h = ctx.Hooks;
        if (!h.Wants(names.Result)) return forward(z);
        var (w, bias) = proj;
        var result = h.Fire(names.Result, einsum("bphd,hdm->bphm", z.reshape(z.shape[0], z.shape[1], heads, -1), w.reshape(heads, -1, w.shape[1])));
        if (!h.MayReplace(names.Result)) return forward(z);
        var sum = result.sum([2L], type: result.dtype);
        return bias is null ? sum : sum.add(bias, TorchScalars.One);
    }

    /// <summary>
    /// ALiBi's slope of each of <paramref name="heads"/> heads, as transformers' <c>build_alibi_tensor</c> (BLOOM): with p the
    /// largest power of two ≤ heads, 2^(−8i/p) for i = 1..p, then for the remaining heads 2^(−4j/p) for the odd j = 1, 3, 5, …
    /// (the slopes of 2p heads the first p did not take). TransformerLens's <c>create_alibi_multipliers</c> agrees when heads
    /// is a power of two.
    /// </summary>
    public static double[] AlibiSlopes(int heads)
    {
        if (heads <= 0) throw new ArgumentOutOfRangeException(nameof(heads), heads, "at least one head");
        int p = 1 << (int)Math.Floor(Math.Log2(heads));
        var slopes = Enumerable.Range(1, p).Select(i => Math.Pow(2, -8.0 * i / p));
        int remaining = Math.Min(p, heads - p);
        return [.. slopes, .. Enumerable.Range(0, remaining).Select(j => Math.Pow(2, -4.0 * (2 * j + 1) / p))];
    }

    /// <summary>Softmax of [scores, sink] over the keys, in the scores' dtype, with the sink's column dropped:
    /// [batch, head, query, key]. With <paramref name="subtractMax"/>, the row max is subtracted first in that dtype, as
    /// HF gpt-oss does (a rounding step of its own in bf16/f16; the softmax subtracts it again internally).</summary>
    private static Tensor SinkSoftmax(Tensor scores, Tensor sinks, bool subtractMax = true)
    {
        long nKeys = scores.shape[^1];
        var column = sinks.to(scores.dtype).view(1, -1, 1, 1).expand(scores.shape[0], -1, scores.shape[2], 1);
        var combined = cat([scores, column], -1);
        if (subtractMax) combined = combined - combined.max(-1, keepdim: true).values;
        return combined.softmax(-1).narrow(-1, 0, nKeys);
    }
}
