using static TorchSharp.torch;

namespace SaeSharp.Hooks;

/// <summary>The forward of an attached SAE inside a model run, firing its SAELens hook points (used by every model run
/// with <c>RunOptions.Saes</c>, and by the downstream evaluator).</summary>
internal static class SaeSplice
{
    public static Tensor Run(AttachedSae a, Tensor x, HookRunner runner)
    {
        var (y, features) = Splice(a, x, runner);
        features.Dispose();
        return y;
    }

    /// <summary>
    /// The activation that replaces <paramref name="x"/> (shaped as x) and the SAE's unedited latents [batch·pos, d_sae]
    /// (what <c>hook_sae_acts_post</c> receives).
    /// </summary>
    public static (Tensor Output, Tensor Features) Splice(AttachedSae a, Tensor x, HookRunner runner)
    {
        using var scope = NewDisposeScope();
        var sae = a.Sae;
        int dIn = sae.Cfg.DIn, dSae = sae.Cfg.DSae;
        if (sae.Cfg.DOutOrIn != dIn)
            throw new SaeSharpException($"SAE at '{a.Hook}' has d_out={sae.Cfg.DOutOrIn} != d_in={dIn}: a transcoder cannot be spliced at one hook");
        long b = x.shape[0], s = x.shape[1];
        Tensor site = x;
        if (a.HeadIndex is int h)
        {
            if (x.dim() != 4 || h < 0 || h >= x.shape[2])
                throw new SaeSharpException($"SAE at '{a.Hook}' reads head {h}, but the hook has shape [{string.Join(", ", x.shape)}]");
            site = x.select(2, h);
        }
        long perToken = site.numel() / (b * s);
        if (perToken != dIn)
            throw new SaeSharpException($"SAE at '{a.Hook}' has d_in={dIn} but the hook gives {perToken} values per token (shape [{string.Join(", ", x.shape)}])");

        var dtype = sae.WDec.dtype;
        var capture = runner.Capture;
        bool errorTerm = a.UseErrorTerm || capture is not null;
        var x0 = site.reshape(b, s, dIn).to(dtype);
        var input = runner.Fire(a.HookName(SaeHookPoints.Input), x0);
        var rows = input.reshape(b * s, dIn);
        var preRaw = sae.HiddenPre(rows).view(b, s, dSae);
        var pre = runner.Fire(a.HookName(SaeHookPoints.ActsPre), preRaw);
        var clean = sae.Activate(pre.reshape(b * s, dSae), rows).view(b, s, dSae);
        var feats = runner.Fire(a.HookName(SaeHookPoints.ActsPost), clean);
        if (capture is not null) feats = capture.Features(a, feats);
        var reconsRaw = sae.Reconstruct(feats.reshape(b * s, dSae), rows).view(b, s, dIn);
        var recons = runner.Fire(a.HookName(SaeHookPoints.Recons), reconsRaw);
        var output = recons;
        if (errorTerm)
        {
            // The error of the unedited SAE (SAELens: x − decode(encode(x)) with the SAE's hooks disabled), so edits of
            // hook_sae_input and hook_sae_acts_pre reach the output too.
            Tensor cleanRecons;
            if (ReferenceEquals(input, x0) && ReferenceEquals(pre, preRaw))
                cleanRecons = ReferenceEquals(feats, clean) ? reconsRaw : sae.Reconstruct(clean.reshape(b * s, dSae), rows).view(b, s, dIn);
            else
            {
                var xRows = x0.reshape(b * s, dIn);
                cleanRecons = sae.Reconstruct(sae.Activate(sae.HiddenPre(xRows), xRows), xRows).view(b, s, dIn);
            }
            var error = runner.Fire(a.HookName(SaeHookPoints.Error), x0 - cleanRecons);
            if (capture is not null) error = capture.Error(a, error);
            output = recons.add(error, TorchScalars.One);
        }
        output = runner.Fire(a.HookName(SaeHookPoints.Output), output);

        var y = output.to(x.dtype).view(site.shape);
        // Attribution: the gradient reaches upstream nodes as through the clean model (x̂ + ε = x).
        if (capture is not null && site.requires_grad) y = y.add(site - site.detach(), TorchScalars.One);
        if (a.HeadIndex is int hh)
        {
            var heads = x.unbind(2).ToArray();
            heads[hh] = y;
            y = stack(heads, 2);
        }
        return (y.MoveToOuterDisposeScope(), clean.reshape(b * s, dSae).MoveToOuterDisposeScope());
    }
}
