using SaeSharp.Hooks;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace SaeSharp.Models;

/// <summary>HF <c>GptOssExperts</c> (<c>mlp.experts</c>): every expert's weights in one tensor each, as the checkpoint holds
/// them: <c>gate_up_proj</c> [experts, d_model, 2·d_mlp] with gate and up interleaved (gate = columns 0, 2, 4, ...; up =
/// 1, 3, 5, ...), <c>gate_up_proj_bias</c> [experts, 2·d_mlp], <c>down_proj</c> [experts, d_mlp, d_model], <c>down_proj_bias</c>.</summary>
internal sealed class GptOssExperts : nn.Module
{
    public readonly Parameter gate_up_proj, gate_up_proj_bias, down_proj, down_proj_bias;

    public GptOssExperts(DecoderSettings s, ScalarType dtype) : base("experts")
    {
        gate_up_proj = new Parameter(empty(s.NumExperts, s.Hidden, 2L * s.Intermediate, dtype: dtype), requires_grad: false);
        gate_up_proj_bias = new Parameter(zeros(s.NumExperts, 2L * s.Intermediate, dtype: dtype), requires_grad: false);
        down_proj = new Parameter(empty(s.NumExperts, s.Intermediate, s.Hidden, dtype: dtype), requires_grad: false);
        down_proj_bias = new Parameter(zeros(s.NumExperts, s.Hidden, dtype: dtype), requires_grad: false);
        RegisterComponents();
    }
}

/// <summary>
/// HF <c>GptOssMLP</c> (<c>mlp</c>): the <c>router</c> (a linear layer with bias) scores each token against every expert; the
/// top <c>num_experts_per_tok</c> logits are kept and softmaxed among themselves (HF <c>GptOssTopKRouter</c>); each chosen
/// expert computes gate, up = x·gate_up_proj + bias (interleaved columns), gate clamped above at <c>swiglu_limit</c>, up to
/// ±limit, glu = gate·σ(<c>swiglu_alpha</c>·gate), out = ((up + 1)·glu)·down_proj + bias, and the outputs are summed
/// weighted by the router's weights. Only the chosen experts are computed (transformers' inference path computes every
/// expert with weight 0 for the others: the same sum).
/// <para>Hooks as TransformerLens's <c>GptOssMoE</c>: <c>mlp.hook_expert_weights</c> [batch, pos, experts] (the chosen
/// experts' weights, 0 elsewhere), <c>mlp.hook_expert_indices</c> [batch, pos, k], and per expert
/// <c>mlp.experts.{e}.hook_gate</c> / <c>hook_pre</c> (gate / up before the clamps) and <c>hook_post</c> ((up + 1)·glu),
/// [batch, pos, d_mlp], 0 at the tokens not routed to that expert.</para>
/// </summary>
internal sealed class GptOssMlp : nn.Module<Tensor, ForwardContext, Tensor>
{
    private readonly Linear router;
    private readonly GptOssExperts experts;
    private readonly BlockHookNames _names;
    private readonly int _topK;
    private readonly double _alpha, _limit;

    public GptOssMlp(DecoderSettings s, BlockHookNames names, ScalarType dtype) : base("mlp")
    {
        (_names, _topK, _alpha, _limit) = (names, s.ExpertsPerToken, s.SwigluAlpha, s.SwigluLimit);
        router = new Linear(s.Hidden, s.NumExperts, true, dtype);
        experts = new GptOssExperts(s, dtype);
        RegisterComponents();
    }

    public override Tensor forward(Tensor x, ForwardContext ctx)
    {
        var h = ctx.Hooks;
        long b = x.shape[0], s = x.shape[1], d = x.shape[2], n = b * s;
        long nExperts = experts.gate_up_proj.shape[0], width = experts.down_proj.shape[1];
        var flat = x.reshape(n, d);
        var logits = router.forward(flat);
        var (top, chosen) = logits.topk(_topK, -1);
        var scores = zeros_like(logits).scatter_(1, chosen, top.softmax(1));
        scores = h.Fire(_names.ExpertWeights, scores.view(b, s, nExperts)).reshape(n, nExperts);
        chosen = h.Fire(_names.ExpertIndices, chosen.view(b, s, _topK)).reshape(n, _topK);
        if (h.Wants(_names.ExpertIndices) && chosen.numel() > 0)
        {
            long lo = chosen.min().item<long>(), hi = chosen.max().item<long>();
            if (lo < 0 || hi >= nExperts)
                throw new SaeSharpException($"hook '{_names.ExpertIndices}' gave expert index {(lo < 0 ? lo : hi)}; the experts are 0..{nExperts - 1}");
        }
        using Scalar limit = _limit.ToScalar(), negLimit = (-_limit).ToScalar(), alpha = _alpha.ToScalar();
        var result = zeros(n, d, dtype: x.dtype, device: x.device);
        for (int e = 0; e < nExperts; e++)
        {
            var token = chosen.eq(TorchScalars.Of(e)).nonzero().select(1, 0);   // tokens routed to e
            if (token.numel() == 0) continue;
            var xe = flat.index_select(0, token);
            var gateUp = xe.matmul(experts.gate_up_proj[e]).add(experts.gate_up_proj_bias[e], TorchScalars.One);
            var (gateName, preName, postName) = _names.Experts[e];
            var gate = SparseMoeBlock.Routed(h, gateName, gateUp.slice(1, 0, 2 * width, 2), token, b, s);
            var up = SparseMoeBlock.Routed(h, preName, gateUp.slice(1, 1, 2 * width, 2), token, b, s);
            gate = gate.clamp_max(limit);
            up = up.clamp(negLimit, limit);
            var glu = gate * (gate * alpha).sigmoid();
            var post = SparseMoeBlock.Routed(h, postName, up.add(TorchScalars.Of(1.0), TorchScalars.One) * glu, token, b, s);
            var output = post.matmul(experts.down_proj[e]).add(experts.down_proj_bias[e], TorchScalars.One);
            var w = scores.index_select(0, token).narrow(1, e, 1);   // [tokens, 1]
            result.index_add_(0, token, (output * w).to(x.dtype), TorchScalars.One);
        }
        return result.view(b, s, d);
    }
}

/// <summary>
/// MXFP4 expert weights of a gpt-oss hub checkpoint (<c>*.mlp.experts.gate_up_proj_blocks</c> / <c>_scales</c>,
/// <c>down_proj_blocks</c> / <c>_scales</c>), dequantised on reading as transformers'
/// <c>integrations/mxfp4.py</c> <c>convert_moe_packed_tensors</c> does: each byte of a block holds two FP4 (E2M1) codes, low
/// nibble first, looked up in {±0, ±0.5, ±1, ±1.5, ±2, ±3, ±4, ±6}; each group of 32 values shares the scale
/// 2^(scale − 127); the rows come out transposed to the float layout ([experts, d_model, 2·d_mlp] and [experts, d_mlp, d_model]).
/// </summary>
internal static class Mxfp4
{
    private static readonly float[] Fp4Values = [0f, 0.5f, 1f, 1.5f, 2f, 3f, 4f, 6f, -0f, -0.5f, -1f, -1.5f, -2f, -3f, -4f, -6f];

    /// <summary>Replaces every <c>X_blocks</c> / <c>X_scales</c> pair of <paramref name="ckpt"/> by a key <c>X</c> read as its
    /// dequantisation; a block without its scales (or the reverse) or mismatched shapes are errors.</summary>
    public static void DequantizeOnRead(Checkpoint ckpt)
    {
        foreach (var blocksKey in ckpt.Keys.Where(k => k.EndsWith("_blocks", StringComparison.Ordinal)).ToList())
        {
            string baseKey = blocksKey[..^"_blocks".Length], scalesKey = baseKey + "_scales";
            if (!ckpt.Contains(scalesKey)) throw new SaeSharpException($"{ckpt.Folder}: MXFP4 weight '{blocksKey}' has no '{scalesKey}'");
            var (file, blocks) = ckpt.Info(blocksKey);
            var (_, scales) = ckpt.Info(scalesKey);
            if (blocks.Length < 3 || blocks[^1] != 16 || !blocks.AsSpan(0, blocks.Length - 1).SequenceEqual(scales))
                throw new SaeSharpException($"{file}: MXFP4 weight '{blocksKey}' [{string.Join(", ", blocks)}] and '{scalesKey}' [{string.Join(", ", scales)}] " +
                                            "must be [..., rows, groups, 16] and [..., rows, groups]");
            long[] shape = [.. blocks[..^3], blocks[^2] * 32, blocks[^3]];
            Func<ScalarType, Tensor> readBlocks = ckpt.Reader(blocksKey), readScales = ckpt.Reader(scalesKey);
            ckpt.Derive(baseKey, file, shape, [blocksKey, scalesKey], dtype =>
            {
                using var scope = NewDisposeScope();
                using var packed = readBlocks(ScalarType.Byte);
                using var exps = readScales(ScalarType.Byte);
                return Dequantize(packed, exps, dtype).MoveToOuterDisposeScope();
            });
        }
        foreach (var k in ckpt.Keys.Where(k => k.EndsWith("_scales", StringComparison.Ordinal) && !ckpt.Contains(k[..^"_scales".Length])).ToList())
            throw new SaeSharpException($"{ckpt.Folder}: MXFP4 weight '{k}' has no '{k[..^"_scales".Length]}_blocks'");
    }

    /// <summary>blocks uint8 [..., rows, groups, 16], scales uint8 [..., rows, groups] → [..., groups·32, rows] in
    /// <paramref name="dtype"/> (computed in float32, where every value is exact, then cast).</summary>
    public static Tensor Dequantize(Tensor blocks, Tensor scales, ScalarType dtype)
    {
        using var scope = NewDisposeScope();
        var lut = tensor(Fp4Values, device: blocks.device);
        var b = blocks.to(ScalarType.Int64);
        var lo = lut.index_select(0, b.remainder(TorchScalars.Of(16L)).reshape(-1)).view(b.shape);   // low nibble first
        var hi = lut.index_select(0, b.floor_divide(TorchScalars.Of(16L)).reshape(-1)).view(b.shape);
        var values = stack([lo, hi], -1).flatten(-2);                                  // [..., rows, groups, 32]
        var scale = pow(tensor(2f, device: blocks.device), (scales.to(ScalarType.Int32) - TorchScalars.Of(127L)).to(ScalarType.Float32));
        values = values * scale.unsqueeze(-1);
        var shape = blocks.shape;
        var rows = values.reshape([.. shape[..^2], shape[^2] * 32]);                 // [..., rows, cols]
        return rows.transpose(-1, -2).contiguous().to(dtype).MoveToOuterDisposeScope();
    }
}
