using SaeSharp.Hooks;
using static TorchSharp.torch;

namespace SaeSharp.Models;

/// <summary>
/// TransformerLens's per-head attention inputs (<c>use_attn_in</c>, <c>use_split_qkv_input</c>): <c>blocks.{i}.hook_attn_in</c>
/// [batch, pos, head, d_model], each query head's copy of resid_pre before ln1, then <c>hook_q_input</c> (query heads) and
/// <c>hook_k_input</c> / <c>hook_v_input</c> (key-value heads under grouped-query attention, as TransformerLens without
/// <c>ungroup_grouped_query_attention</c>), copies of hook_attn_in as its hooks left it, so an edit there reaches q, k and v as
/// with TransformerLens's use_attn_in alone (TransformerLens copies resid_pre for the split inputs, dropping an attn_in edit
/// when both options are on; here both are always on). Built only when something reads
/// them, as expanded views (caching them leaves the model's own path: logits bit-identical). When a hook function or SAE may
/// replace one, it gets its own copy, ln1 is applied to each copy and head h's query (key, value) is projected from its own
/// copy; rotary, norms, soft caps and masks follow as usual. ln1's own hooks keep firing on ln1(resid_pre), the input of an
/// unedited head; an edit of them together with an edit here is refused (TransformerLens would fire them per copy).
/// </summary>
internal static class SplitAttentionInputs
{
    /// <summary>A block's query heads and key-value heads, and why an edit of its split inputs is not defined (null when it is).</summary>
    internal readonly record struct Heads(long Query, long KeyValue, string? NoEdit = null);

    /// <summary>Fires the four hooks of block <paramref name="n"/> on copies of <paramref name="resid"/> when anything reads them.
    /// Returns null when none may be replaced (the attention then reads ln1(resid_pre) as usual), otherwise ln1 (none for
    /// OLMo-2's post-norm-only blocks) of each head's query, key and value input, [batch, pos, head, d_model].</summary>
    public static (Tensor Q, Tensor K, Tensor V)? Fire(Tensor resid, HookRunner h, BlockHookNames n, Heads heads, HookedNorm? ln1)
    {
        if (!h.Wants(n.AttnIn) && !h.Wants(n.QInput) && !h.Wants(n.KInput) && !h.Wants(n.VInput)) return null;
        string? edited = new[] { n.AttnIn, n.QInput, n.KInput, n.VInput }.FirstOrDefault(h.MayReplace);
        if (edited is not null)
        {
            if (heads.NoEdit is { } why)
                throw new SaeSharpException($"hook '{edited}' may be edited here, but {why}; cache it, or edit {n.ResidPre} or attn.hook_q/k/v");
            if (ln1 is not null && (h.MayReplace(n.Ln1) || h.MayReplace(n.Ln1Scale)))
                throw new SaeSharpException($"hooks '{edited}' and '{(h.MayReplace(n.Ln1) ? n.Ln1 : n.Ln1Scale)}' both edit the attention's input; " +
                    "edit one of them (with the per-head inputs edited, ln1 normalises each head's copy)");
            if (h.MayReplace(n.AttnIn) && heads.KeyValue != heads.Query)
                throw new SaeSharpException($"hook '{n.AttnIn}' may be edited here, but under grouped-query attention ({heads.Query} query heads, " +
                    $"{heads.KeyValue} key-value heads) a key-value head reads several query heads' copies (TransformerLens fails there too); " +
                    $"edit {n.QInput}, {n.KInput} and {n.VInput} instead");
        }
        long b = resid.shape[0], s = resid.shape[1], d = resid.shape[2];
        // A copy of its own for a hook that may edit it (in place, too); an expanded view for one that only reads it.
        Tensor Copies(Tensor x, long count, string hook) =>
            h.MayReplace(hook) ? x.unsqueeze(2).expand(b, s, count, d).clone() : x.unsqueeze(2).expand(b, s, count, d);
        Tensor attnIn = h.Wants(n.AttnIn) ? h.Fire(n.AttnIn, Copies(resid, heads.Query, n.AttnIn)) : resid.unsqueeze(2).expand(b, s, heads.Query, d);
        bool fromAttnIn = h.MayReplace(n.AttnIn);
        Tensor Input(string hook, long count)
        {
            var x = fromAttnIn
                ? h.MayReplace(hook) ? attnIn.clone() : attnIn
                : Copies(resid, count, hook);
            return h.Wants(hook) ? h.Fire(hook, x) : x;
        }
        var q = Input(n.QInput, heads.Query);
        var k = Input(n.KInput, heads.KeyValue);
        var v = Input(n.VInput, heads.KeyValue);
        if (edited is null) return null;
        return ln1 is null ? (q, k, v) : (ln1.Forward(q, HookRunner.None, null), ln1.Forward(k, HookRunner.None, null), ln1.Forward(v, HookRunner.None, null));
    }

    /// <summary>Runs <paramref name="attn"/> on <paramref name="x"/> with <see cref="ForwardContext.SplitInputs"/> set to
    /// <paramref name="split"/> (when not null) for its duration.</summary>
    public static Tensor Run(ForwardContext ctx, (Tensor Q, Tensor K, Tensor V)? split, Func<Tensor, Tensor> attn, Tensor x)
    {
        if (split is null) return attn(x);
        ctx.SplitInputs = split;
        try
        {
            return attn(x);
        }
        finally
        {
            ctx.SplitInputs = null;
        }
    }

    /// <summary>Each head's projection of its own input: head h of <paramref name="x"/> [batch, pos, head, d_model] times
    /// W[:, h] of <paramref name="weight"/> ([d_model, head·d_head] head-major, or [d_model, head, d_head]) plus
    /// <paramref name="bias"/>[h] ([head·d_head]): [batch, pos, head, d_head].</summary>
    public static Tensor Project(Tensor x, Tensor weight, Tensor? bias)
    {
        long heads = x.shape[2];
        var y = einsum("bphm,mhd->bphd", x, weight.reshape(weight.shape[0], heads, -1));
        return bias is null ? y : y.add(bias.reshape(heads, -1), TorchScalars.One);
    }
}
