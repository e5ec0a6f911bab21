using TorchSharp;
using SaeSharp.Saes;
using static TorchSharp.torch;

namespace SaeSharp.Hooks;

/// <summary>The forward of an attached SAE inside a model run, firing its SAELens hook points (used by every model run
/// with <c>RunOptions.Saes</c>, and by the downstream evaluator). One implementation in two halves: the encoder
/// (<c>hook_sae_input</c> → <c>hook_sae_acts_post</c>) and the decoder (<c>hook_sae_recons</c>, <c>hook_sae_error</c>,
/// <c>hook_sae_output</c>). An SAE runs both at its hook; a transcoder runs the encoder at its input hook
/// (<see cref="Begin"/>, the state held by the <see cref="HookRunner"/>) and the decoder at its output hook (<see cref="Finish"/>).</summary>
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
    /// (what <c>hook_sae_acts_post</c> receives). <paramref name="rows"/> [batch, pos] (null: those of the hook firing now,
    /// <see cref="HookRunner.CurrentRows"/>) are the positions that are rows of the hook, the only context a temporal SAE reads.
    /// </summary>
    public static (Tensor Output, Tensor Features) Splice(AttachedSae a, Tensor x, HookRunner runner, Tensor? rows = null)
    {
        using var scope = NewDisposeScope();
        var sae = a.Sae;
        if (sae.Cfg.DOutOrIn != sae.Cfg.DIn)
            throw new SaeSharpException($"SAE at '{a.Hook}' has d_out={sae.Cfg.DOutOrIn} != d_in={sae.Cfg.DIn} but no output hook: " +
                "a transcoder is spliced from its input hook to its output hook (metadata.hook_name_out, or AttachedSae's outputHook)");
        var e = Encode(a, x, runner, rows);
        var output = Decode(a, e, e.X0, runner);
        var site = e.Site!;
        var y = output.to(x.dtype).view(site.shape);
        // Attribution: the gradient reaches upstream nodes as through the clean model (x̂ + ε = x).
        if (runner.Capture is not null && site.requires_grad) y = y.add(site - site.detach(), TorchScalars.One);
        if (a.HeadIndex is int hh)
        {
            var heads = x.unbind(2).ToArray();
            heads[hh] = y;
            y = stack(heads, 2);
        }
        return (y.MoveToOuterDisposeScope(), e.Clean.reshape(e.B * e.S, sae.Cfg.DSae).MoveToOuterDisposeScope());
    }

    /// <summary>What an SAE of one head reads of a per-head hook's activation <paramref name="x"/> [batch, pos, head, d]: head
    /// <paramref name="head"/>'s slice [batch, pos, d] (SAELens's <c>x[:, :, hook_head_index]</c>); without a head, or at a hook
    /// that is not per-head, all of it.</summary>
    public static Tensor HeadSlice(Tensor x, int? head) => head is int h && x.dim() == 4 ? x.select(2, h) : x;

    /// <summary>A transcoder at its input hook: fires the encoder's hook points on <paramref name="x"/> (x_in, left
    /// unchanged in the run) and returns what the decoder needs at the output hook, owned by the caller
    /// (<paramref name="rows"/> as in <see cref="Splice"/>).</summary>
    public static Encoding Begin(AttachedSae a, Tensor x, HookRunner runner, Tensor? rows = null)
    {
        using var scope = NewDisposeScope();
        return Encode(a, x, runner, rows).Owned();
    }

    /// <summary>A transcoder at its output hook: the activation that replaces <paramref name="xOut"/> (shaped as it), the
    /// reconstruction from <paramref name="e"/> (<see cref="Begin"/>), plus x_out − x̂ with the error term.</summary>
    public static Tensor Finish(AttachedSae a, Encoding e, Tensor xOut, HookRunner runner)
    {
        using var scope = NewDisposeScope();
        var sae = a.Sae;
        int dOut = sae.Cfg.DOutOrIn;
        if (xOut.dim() < 2 || xOut.shape[0] != e.B || xOut.shape[1] != e.S || xOut.numel() != e.B * e.S * dOut)
            throw new SaeSharpException($"transcoder '{a.Hook}' → '{a.OutputHook}' has d_out={dOut}, but the output hook has shape " +
                $"[{string.Join(", ", xOut.shape)}] ({e.B}×{e.S} tokens at the input hook)");
        var target = xOut.reshape(e.B, e.S, dOut).to(sae.WDec.dtype);
        var output = Decode(a, e, target, runner);
        var y = output.to(xOut.dtype).view(xOut.shape);
        // Attribution: the gradient reaches the MLP (or whatever wrote x_out) as through the clean model (x̂ + ε = x_out).
        if (runner.Capture is not null && xOut.requires_grad) y = y.add(xOut - xOut.detach(), TorchScalars.One);
        return y.MoveToOuterDisposeScope();
    }

    /// <summary>The encoder half: fires <c>hook_sae_input</c>, <c>hook_sae_acts_pre</c>, <c>hook_sae_acts_post</c>
    /// (tensors in the caller's scope).</summary>
    private static Encoding Encode(AttachedSae a, Tensor x, HookRunner runner, Tensor? rows)
    {
        var sae = a.Sae;
        int dIn = sae.Cfg.DIn, dSae = sae.Cfg.DSae;
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
        var x0 = site.reshape(b, s, dIn).to(dtype);
        var input = runner.Fire(a.HookName(SaeHookPoints.Input), x0);
        var inputRows = input.reshape(b * s, dIn);
        Tensor preRaw;
        Tensor? zPred = null, mask = null;
        if (sae is TemporalSae t)
        {
            // The sequence as it is, [batch, pos, d_in]: a token's codes read the tokens before it (padding, and at an
            // expert's hook the tokens routed elsewhere, masked out).
            mask = SequenceMask(a, b, s, rows);
            (preRaw, zPred) = t.NovelPreactivations(input, mask);
        }
        else preRaw = sae.HiddenPre(inputRows).view(b, s, dSae);
        var pre = runner.Fire(a.HookName(SaeHookPoints.ActsPre), preRaw);
        var clean = sae.Activate(pre.reshape(b * s, dSae), inputRows).view(b, s, dSae);
        var feats = runner.Fire(a.HookName(SaeHookPoints.ActsPost), clean);
        bool featsEdited = !ReferenceEquals(feats, clean);
        if (capture is not null) feats = capture.Features(a, feats);
        return new Encoding(b, s, site, x0, inputRows, clean, feats,
            InputEdited: !ReferenceEquals(input, x0) || !ReferenceEquals(pre, preRaw), FeaturesEdited: featsEdited || capture is not null)
        { ZPred = zPred, Mask = mask, Spliced = SlicedPositions(a, b, s, x.device) };
    }

    /// <summary>The tokens a temporal SAE reads as context, [batch, pos] (null: all): the real tokens of the forward pass
    /// running on this thread (when its mask matches the spliced activation) that are rows of the hook, <paramref name="rows"/>
    /// or else <see cref="HookRunner.CurrentRows"/> (an expert's routed tokens: TransformerLens fires the hook with those rows
    /// only). A KV-cached pass, which shows the SAE only the new tokens, is refused.</summary>
    private static Tensor? SequenceMask(AttachedSae a, long b, long s, Tensor? rows)
    {
        if (HookRunner.CurrentPast is > 0)
            throw new SaeSharpException($"temporal SAE at '{a.Hook}': a KV-cached pass shows it only the new tokens, but it encodes each token " +
                "from the earlier ones; run without a KV cache (generation does so when a temporal SAE is attached)");
        static Tensor? Matching(Tensor? m, long b, long s) => m is not null && m.dim() == 2 && m.shape[0] == b && m.shape[1] == s ? m : null;
        var real = Matching(HookRunner.CurrentMask, b, s);
        var routed = rows is not null
            ? Matching(rows, b, s) ?? throw new SaeSharpException($"temporal SAE at '{a.Hook}': the rows mask has shape [{string.Join(", ", rows.shape)}] but the activation is [{b}, {s}, ...]")
            : Matching(HookRunner.CurrentRows, b, s);
        if (real is null || routed is null) return real ?? routed;
        return real.ne(TorchScalars.Of(0L)).logical_and(routed.to(real.device).ne(TorchScalars.Of(0L)));
    }

    /// <summary>[batch, pos] bool, the positions the SAE's output replaces the activation at (<see cref="AttachedSae.SeqposSlice"/>
    /// of each row's positions, <see cref="HookRunner.CurrentPositions"/> in a forward pass, else 0..pos − 1); null: every position.</summary>
    private static Tensor? SlicedPositions(AttachedSae a, long b, long s, Device device)
    {
        if (a.SeqposSlice.IsAll) return null;
        using var length = s.ToScalar();
        var pos = HookRunner.CurrentPositions is { } p && p.dim() == 2 && p.shape[0] == b && p.shape[1] == s
            ? p.to(device)
            : TorchScalars.Arange(length, dtype: ScalarType.Int64, device: device).unsqueeze(0).expand(b, s);
        return a.SeqposSlice.Mask(pos, pos.amax([1]).add(TorchScalars.One, TorchScalars.One));
    }

    /// <summary>The reconstruction [batch, pos, d_out] of features [batch, pos, d_sae]: ((f + z_pred)·W_dec + b_dec)/factor
    /// for a temporal SAE (its predicted codes added back), else <see cref="Sae.Reconstruct"/> of the rows.</summary>
    private static Tensor Reconstruct(Sae sae, Encoding e, Tensor features)
    {
        int dSae = sae.Cfg.DSae, dOut = sae.Cfg.DOutOrIn;
        if (sae is TemporalSae t) return t.ReconstructWithPredictions(features.reshape(e.B, e.S, dSae), e.ZPred!);
        return sae.Reconstruct(features.reshape(e.B * e.S, dSae), e.Rows).view(e.B, e.S, dOut);
    }

    /// <summary>The decoder half: fires <c>hook_sae_recons</c>, <c>hook_sae_error</c> (error term: <paramref name="target"/>
    /// − the unedited SAE's reconstruction) and <c>hook_sae_output</c>; returns the output [batch, pos, d_out] in the SAE's dtype.</summary>
    private static Tensor Decode(AttachedSae a, Encoding e, Tensor target, HookRunner runner)
    {
        var sae = a.Sae;
        int dIn = sae.Cfg.DIn, dSae = sae.Cfg.DSae, dOut = sae.Cfg.DOutOrIn;
        long b = e.B, s = e.S;
        var capture = runner.Capture;
        bool errorTerm = a.UseErrorTerm || capture is not null;
        var reconsRaw = Reconstruct(sae, e, e.Features);
        var recons = runner.Fire(a.HookName(SaeHookPoints.Recons), reconsRaw);
        var output = recons;
        if (errorTerm)
        {
            // The error of the unedited SAE (SAELens: x − decode(encode(x)) with the SAE's hooks disabled), so edits of
            // hook_sae_input and hook_sae_acts_pre reach the output too.
            Tensor cleanRecons;
            if (!e.InputEdited)
                cleanRecons = !e.FeaturesEdited ? reconsRaw : Reconstruct(sae, e, e.Clean);
            else if (sae is TemporalSae t)
            {
                var (pre0, zPred0) = t.NovelPreactivations(e.X0, e.Mask);
                cleanRecons = t.ReconstructWithPredictions(t.Activate(pre0, e.X0), zPred0);
            }
            else
            {
                var xRows = e.X0.reshape(b * s, dIn);
                cleanRecons = sae.Reconstruct(sae.Activate(sae.HiddenPre(xRows), xRows), xRows).view(b, s, dOut);
            }
            var error = runner.Fire(a.HookName(SaeHookPoints.Error), target - cleanRecons);
            if (capture is not null) error = capture.Error(a, error);
            output = recons.add(error, TorchScalars.One);
        }
        // Outside the SAE's seqpos_slice the activation stays as it was (steering on hook_sae_output still reaches it).
        if (e.Spliced is { } kept) output = where(kept.view(b, s, 1), output, target.to(output.dtype));
        return runner.Fire(a.HookName(SaeHookPoints.Output), output);
    }

    /// <summary>
    /// The encoder half's results: x0 the SAE's input [batch, pos, d_in] before <c>hook_sae_input</c> (in the SAE's dtype),
    /// the rows the SAE encoded (after it), the unedited latents and the latents it decodes [batch, pos, d_sae].
    /// <see cref="Owned"/> makes a copy of handles that outlives the encoder's scope (a transcoder's, held until its
    /// output hook); disposing it frees those handles.
    /// </summary>
    internal sealed record Encoding(long B, long S, Tensor? Site, Tensor X0, Tensor Rows, Tensor Clean, Tensor Features,
        bool InputEdited, bool FeaturesEdited) : IDisposable
    {
        private bool _owned;

        /// <summary>A temporal SAE's predicted codes [batch, pos, d_sae] (null for other SAEs).</summary>
        public Tensor? ZPred { get; init; }
        /// <summary>The context mask the temporal SAE encoded with (null: every token, or another SAE).</summary>
        public Tensor? Mask { get; init; }
        /// <summary>[batch, pos] the positions of the SAE's <c>seqpos_slice</c>, where its output replaces the activation (null: all).</summary>
        public Tensor? Spliced { get; init; }

        /// <summary>New handles of the tensors the decoder needs, out of every dispose scope (<see cref="Dispose"/> frees them).</summary>
        public Encoding Owned() => new(B, S, null, Keep(X0), Keep(Rows), Keep(Clean), Keep(Features), InputEdited, FeaturesEdited)
        {
            _owned = true,
            ZPred = ZPred is null ? null : Keep(ZPred),
            Mask = Mask is null ? null : Keep(Mask),
            Spliced = Spliced is null ? null : Keep(Spliced),
        };

        private static Tensor Keep(Tensor t) => t.alias().DetachFromDisposeScope();

        public void Dispose()
        {
            if (!_owned) return;
            _owned = false;
            X0.Dispose();
            Rows.Dispose();
            Clean.Dispose();
            Features.Dispose();
            ZPred?.Dispose();
            Mask?.Dispose();
            Spliced?.Dispose();
        }
    }
}
