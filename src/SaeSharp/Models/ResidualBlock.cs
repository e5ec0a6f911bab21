using SaeSharp.Hooks;
using static TorchSharp.torch;

namespace SaeSharp.Models;

/// <summary>The residual wiring shared by the families' blocks, with TransformerLens's hooks at every step.</summary>
internal static class ResidualBlock
{
    /// <summary>
    /// A block in sequence: hook_resid_pre → hook_attn_in, hook_q/k/v_input (<see cref="SplitAttentionInputs"/>) → ln1 (ln1.hook_normalized) → attention (hook_attn_out) →
    /// hook_resid_mid = resid_pre + attn_out → hook_mlp_in (resid_mid as the MLP reads it: an edit there changes the MLP's
    /// input only, as TransformerLens's <c>use_hook_mlp_in</c>) → ln2 (ln2.hook_normalized) → MLP (hook_mlp_out) →
    /// hook_resid_post = resid_mid + mlp_out. Gemma's post-norms are part of its <paramref name="attn"/> and <paramref name="mlp"/>.
    /// </summary>
    public static Tensor Sequential(Tensor resid, ForwardContext ctx, BlockHookNames n, SplitAttentionInputs.Heads heads,
        HookedNorm ln1, Func<Tensor, Tensor> attn, HookedNorm ln2, Func<Tensor, Tensor> mlp)
    {
        var h = ctx.Hooks;
        resid = h.Fire(n.ResidPre, resid);
        var split = SplitAttentionInputs.Fire(resid, h, n, heads, ln1);
        var x1 = h.Fire(n.Ln1, ln1.Forward(resid, h, n.Ln1Scale));
        var attnOut = h.Fire(n.AttnOut, SplitAttentionInputs.Run(ctx, split, attn, x1));
        var mid = h.Fire(n.ResidMid, resid.add(attnOut, TorchScalars.One));
        var x2 = h.Fire(n.Ln2, ln2.Forward(h.Fire(n.MlpIn, mid), h, n.Ln2Scale));
        var mlpOut = h.Fire(n.MlpOut, mlp(x2));
        return h.Fire(n.ResidPost, mid.add(mlpOut, TorchScalars.One));
    }

    /// <summary>
    /// A parallel block (GPT-J, Phi: one LayerNorm read by both the attention and the MLP), hooked as TransformerLens's
    /// parallel_attn_mlp block with ln2 tied to ln1 (its convert_gptj_weights / convert_phi_weights): hook_resid_pre →
    /// hook_attn_in, hook_q/k/v_input → ln1 (ln1.hook_normalized, the attention's input) → attention (hook_attn_out);
    /// hook_mlp_in (the MLP's copy of resid_pre) → the same <paramref name="ln"/> (ln2.hook_normalized) → MLP (hook_mlp_out);
    /// hook_resid_post = attn_out + mlp_out + resid_pre. There is no hook_resid_mid.
    /// </summary>
    public static Tensor Parallel(Tensor resid, ForwardContext ctx, BlockHookNames n, SplitAttentionInputs.Heads heads,
        HookedNorm ln, Func<Tensor, Tensor> attn, Func<Tensor, Tensor> mlp)
    {
        var h = ctx.Hooks;
        resid = h.Fire(n.ResidPre, resid);
        var split = SplitAttentionInputs.Fire(resid, h, n, heads, ln);
        var x1 = h.Fire(n.Ln1, ln.Forward(resid, h, n.Ln1Scale));
        var attnOut = h.Fire(n.AttnOut, SplitAttentionInputs.Run(ctx, split, attn, x1));
        var x2 = h.Fire(n.Ln2, ln.Forward(h.Fire(n.MlpIn, resid), h, n.Ln2Scale));
        var mlpOut = h.Fire(n.MlpOut, mlp(x2));
        return h.Fire(n.ResidPost, attnOut.add(mlpOut, TorchScalars.One).add(resid, TorchScalars.One));
    }

    /// <summary>
    /// OLMo-2's block, as TransformerLens wires it: hook_resid_pre → hook_attn_in, hook_q/k/v_input (read by the attention
    /// without a norm) → attention (hook_attn_out, before its post-norm) →
    /// ln1 = post_attention_layernorm (ln1.hook_normalized: what is added) → hook_resid_mid = resid_pre + that →
    /// hook_mlp_in (the MLP's copy of resid_mid) → MLP
    /// (hook_mlp_out, before its post-norm) → ln2 = post_feedforward_layernorm (ln2.hook_normalized) →
    /// hook_resid_post = resid_mid + that. There is no pre-norm: attention and MLP read the residual stream itself.
    /// </summary>
    public static Tensor PostNormOnly(Tensor resid, ForwardContext ctx, BlockHookNames n, SplitAttentionInputs.Heads heads,
        Func<Tensor, Tensor> attn, HookedNorm ln1, Func<Tensor, Tensor> mlp, HookedNorm ln2)
    {
        var h = ctx.Hooks;
        resid = h.Fire(n.ResidPre, resid);
        var split = SplitAttentionInputs.Fire(resid, h, n, heads, null);
        var attnOut = h.Fire(n.AttnOut, SplitAttentionInputs.Run(ctx, split, attn, resid));
        var mid = h.Fire(n.ResidMid, resid.add(h.Fire(n.Ln1, ln1.Forward(attnOut, h, n.Ln1Scale)), TorchScalars.One));
        var mlpOut = h.Fire(n.MlpOut, mlp(h.Fire(n.MlpIn, mid)));
        return h.Fire(n.ResidPost, mid.add(h.Fire(n.Ln2, ln2.Forward(mlpOut, h, n.Ln2Scale)), TorchScalars.One));
    }

    /// <summary>A two-layer MLP: <paramref name="fcIn"/> (hook_pre) → <paramref name="act"/> (hook_post) → <paramref name="fcOut"/>.</summary>
    public static Tensor Mlp(Tensor x, ForwardContext ctx, BlockHookNames n, nn.Module<Tensor, Tensor> fcIn, Func<Tensor, Tensor> act, nn.Module<Tensor, Tensor> fcOut)
    {
        var pre = ctx.Hooks.Fire(n.MlpPre, fcIn.forward(x));
        var post = ctx.Hooks.Fire(n.MlpPost, act(pre));
        return fcOut.forward(post);
    }
}
