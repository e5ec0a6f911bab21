using SaeSharp.Kernels;
using TorchSharp;
using static TorchSharp.torch;

namespace SaeSharp.Saes;

/// <summary>
/// BatchTopK SAE ("batchtopk", Bussmann et al. 2024). Training keeps the k·N largest ReLU'd pre-activations of the whole
/// batch of N rows (mean L0 = k), as SAELens/dictionary_learning. Inference uses a threshold instead:
/// f = ReLU(pre)·[pre &gt; θ] (dictionary_learning's <c>use_threshold</c> and SAELens's JumpReLU form). θ is the running
/// estimate of dictionary_learning's <c>BatchTopKTrainer</c>: after <see cref="SaeTrainingOptions.ThresholdStartStep"/>,
/// θ ← m on the first update, then θ ← β·θ + (1−β)·m with β = <see cref="SaeTrainingOptions.ThresholdMomentum"/>, m the
/// smallest positive activation of the batch; until then θ = −1 (inference is plain ReLU).
/// It is stored as the persistent buffer <c>threshold</c> [d_sae] (every entry equal), so the state_dict is exactly
/// SAELens's JumpReLU one; <see cref="Sae.ToInferenceSae"/> returns that JumpReLU SAE (SAELens v6 saves BatchTopK SAEs
/// for inference as "jumprelu" with a per-latent threshold).
/// Selection: exact batch top-(k·N), computed from each row's top-min(4k, d_sae) candidates and falling back to a top-k
/// over the whole flattened batch when a row could hold more than its candidates (all of a row's candidates kept).
/// </summary>
public class BatchTopKSae : TopKFamilySae
{
    /// <summary>The registry entry of "batchtopk".</summary>
    public static SaeArchitecture Descriptor { get; } = new() { Name = SaeArchitectures.BatchTopK, Create = c => new BatchTopKSae(c), NeedsK = true };

#pragma warning disable IDE1006 // field name is the state_dict key
    private readonly Tensor threshold;
#pragma warning restore IDE1006

    /// <summary>A BatchTopK SAE of shape <paramref name="cfg"/> (zero weights; <c>k</c> required).</summary>
    public BatchTopKSae(SaeConfig cfg) : base(cfg)
    {
        threshold = full(cfg.DSae, TorchScalars.Of(-1f));
        RegisterComponents();
    }

    /// <summary>The inference threshold θ (−1 until estimated).</summary>
    public Tensor Threshold => threshold;

    /// <inheritdoc/>
    public override Tensor Encode(Tensor x) => EncodeRows(x);

    /// <summary>JumpReLU: ReLU(pre) where pre &gt; θ, else 0.</summary>
    public override Tensor Activate(Tensor pre, Tensor x)
    {
        using var scope = NewDisposeScope();
        return (nn.functional.relu(pre) * pre.gt(threshold)).MoveToOuterDisposeScope();
    }

    /// <summary>Training-time activations: the batch top-(k·N) of ReLU(pre), dense [N, d_sae].</summary>
    public Tensor EncodeBatchTopK(Tensor x)
    {
        using var _ = no_grad();
        using var scope = NewDisposeScope();
        var (code, values) = Select(HiddenPre(x));
        return SparseLatents.ToDense(code, nn.functional.relu(values), Cfg.DSae).MoveToOuterDisposeScope();
    }

    internal override long CandidatesPerRow => 4L * K;

    internal override (SparseCode Code, Tensor PreValues) SelectFromCandidates(Tensor candValues, Tensor candIndices, Func<Tensor> densePre)
    {
        long n = candValues.shape[0], m = candValues.shape[1];
        long total = K * n;
        {
            var (sv, flat) = candValues.reshape(-1).topk((int)total, dim: 0, largest: true, sorted: false);
            using var mScalar = m.ToScalar();
            var rows = flat.div(mScalar, rounding_mode: RoundingMode.floor);
            // Exact when the candidates are whole rows; otherwise a row whose every candidate was kept might hold more of
            // the batch's top entries: recompute densely then.
            if (m >= Cfg.DSae || bincount(rows, minlength: n).max().item<long>() < m)
                return (new SparseCode(rows, candIndices.reshape(-1).index_select(0, flat), n), sv);
        }
        using var pre = densePre();
        long dSae = pre.shape[1];
        var (v, f) = pre.reshape(-1).topk((int)total, dim: 0, largest: true, sorted: false);
        using var dSaeScalar = dSae.ToScalar();
        return (new SparseCode(f.div(dSaeScalar, rounding_mode: RoundingMode.floor), f.remainder(dSaeScalar), n), v);
    }

    internal override void AfterSelection(SparseCode code, Tensor vals, SaeTrainContext ctx)
    {
        if (ctx.Step <= Training.ThresholdStartStep) return;
        using var _ = no_grad();
        using var scope = NewDisposeScope();
        var v = vals.detach();
        var positive = v.masked_select(v.gt(TorchScalars.Of(0)));
        double m = positive.numel() == 0 ? 0.0 : positive.min().item<float>();
        double current = threshold[0].item<float>();
        double beta = Training.ThresholdMomentum;
        double next = current < 0 ? m : beta * current + (1 - beta) * m;
        using var nextScalar = next.ToScalar();
        threshold.fill_(nextScalar);
    }

    /// <inheritdoc/>
    public override Sae ToInferenceSae()
    {
        var cfg = Cfg.Clone();
        cfg.Architecture = SaeArchitectures.JumpReLU;
        cfg.K = null;
        cfg.MatryoshkaWidths = null;
        var sae = new JumpReluSae(cfg);
        using var _ = no_grad();
        sae.WEnc.copy_(W_enc);
        sae.BEnc.copy_(BEnc);
        sae.WDec.copy_(W_dec);
        sae.BDec.copy_(b_dec);
        // Inference is ReLU(pre)·1[pre > θ] (dictionary_learning); as JumpReLU, pre·1[pre > max(θ, 0)] is the same function,
        // also before θ was first estimated (θ = −1).
        using var positive = threshold.clamp_min(TorchScalars.Of(0));
        sae.Threshold.copy_(positive);
        return sae;
    }
}
