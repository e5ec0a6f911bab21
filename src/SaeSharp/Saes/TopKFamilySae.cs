using static TorchSharp.torch;

namespace SaeSharp.Saes;

/// <summary>
/// Shared training machinery of the TopK family (TopK, BatchTopK, Matryoshka BatchTopK), following dictionary_learning's
/// <c>TopKTrainer</c>/<c>BatchTopKTrainer</c> (Gao et al. 2024):
/// <list type="bullet">
/// <item>A dense no-grad encoder pass selects the active latents; the loss is then built on the sparse code
/// (<see cref="SparseLatents"/>), so decoding and the backward pass touch only the active latents.</item>
/// <item>AuxK, exactly as dictionary_learning's <c>get_auxiliary_loss</c>: with e = (target − ŷ) detached, take per row the
/// top-k_aux ReLU'd pre-activations among dead latents (k_aux = min(<see cref="SaeTrainingOptions.KAux"/> ?? d_in/2, n_dead)),
/// ê = their decoding without b_dec, aux = mean_n‖e − ê‖² / mean_n‖e − mean(e)‖² (OpenAI's normalisation), NaN → 0,
/// added as <see cref="SaeTrainingOptions.AuxKCoefficient"/>·aux. No dead-fraction scale (sparsify and SAELens scale by
/// min(n_dead/k_aux, 1); dictionary_learning does not). Its gradient reaches W_enc, b_enc, b_dec and W_dec.</item>
/// <item>Decoder rows held at unit norm, with the gradient component parallel to each row removed before the step.</item>
/// <item>Initialisation: unit-norm random decoder rows, W_enc = W_decᵀ, zero biases.</item>
/// <item>Adam (0.9, 0.999) with lr 2e-4/sqrt(d_sae/2^14).</item>
/// </list>
/// </summary>
public abstract class TopKFamilySae : Sae
{
    protected TopKFamilySae(SaeConfig cfg) : base(cfg)
    {
    }

    /// <summary>Active latents per row (per row on average for BatchTopK).</summary>
    public int K => Cfg.K ?? throw new SaeSharpException($"architecture '{Cfg.Architecture}' needs k in cfg.json");

    public override double DefaultLearningRate() => ScaledTopKLearningRate(Cfg.DSae);

    /// <summary>Selects the active latents from the dense pre-activations (no gradient): the code and the pre-activation
    /// values at its entries.</summary>
    internal abstract (SparseCode Code, Tensor PreValues) Select(Tensor pre);

    public override SaeTrainOutput TrainingForward(Tensor x, Tensor target, SaeTrainContext ctx)
    {
        using var scope = NewDisposeScope();
        Tensor pre;
        SparseCode code;
        Tensor preValues;
        using (no_grad())
        {
            pre = HiddenPre(x);
            (code, preValues) = Select(pre);
        }
        var vals = nn.functional.relu(EncodeCode(x, code, preValues));
        var losses = new Dictionary<string, Tensor>();
        var (y, reconLoss) = ReconstructionLoss(code, vals, target, losses);
        var loss = reconLoss;
        var aux = AuxKLoss(x, target, y, pre, ctx);
        if (aux is not null)
        {
            loss = loss + aux * Training.AuxKCoefficient;
            losses["auxiliary_reconstruction_loss"] = aux.detach();
        }
        AfterSelection(code, vals, ctx);
        var output = new SaeTrainOutput
        {
            Loss = loss.MoveToOuterDisposeScope(),
            SaeOut = y.MoveToOuterDisposeScope(),
            FeatureActs = SparseLatents.ToDense(code, vals, Cfg.DSae).MoveToOuterDisposeScope(),
            FiredMask = SparseLatents.FiredMask(code, vals, Cfg.DSae).MoveToOuterDisposeScope(),
            Losses = losses.ToDictionary(kv => kv.Key, kv => kv.Value.detach().MoveToOuterDisposeScope()),
        };
        return output;
    }

    /// <summary>Pre-activations at the code's entries, differentiable w.r.t. the encoder parameters and b_dec.</summary>
    internal Tensor EncodeCode(Tensor x, SparseCode code, Tensor preValues) =>
        SparseLatents.EncoderValues(x, Cfg.ApplyBDecToInput ? b_dec : null, W_enc, BEnc, code, preValues);

    /// <summary>Reconstruction ŷ = decode(code) + b_dec and the loss on it (sum over features, mean over rows).
    /// Matryoshka overrides it with the nested prefix losses.</summary>
    internal virtual (Tensor SaeOut, Tensor Loss) ReconstructionLoss(SparseCode code, Tensor vals, Tensor target, Dictionary<string, Tensor> losses)
    {
        var y = SparseLatents.Decode(vals, code, W_dec) + b_dec;
        var mse = (y - target).pow(2).sum(-1).mean();
        losses["mse_loss"] = mse;
        return (y, mse);
    }

    /// <summary>Hook after the active latents are chosen (BatchTopK updates its threshold estimate here).</summary>
    internal virtual void AfterSelection(SparseCode code, Tensor vals, SaeTrainContext ctx) { }

    /// <summary>The normalised AuxK loss (see the class comment), or null when there is no dead latent or it is switched off.</summary>
    internal Tensor? AuxKLoss(Tensor x, Tensor target, Tensor y, Tensor pre, SaeTrainContext ctx)
    {
        if (ctx.DeadMask is not { } dead || Training.AuxKCoefficient <= 0) return null;
        if (dead.shape.Length != 1 || dead.shape[0] != Cfg.DSae)
            throw new SaeSharpException($"dead mask must have shape [{Cfg.DSae}], got [{string.Join(", ", dead.shape)}]");
        using var scope = NewDisposeScope();
        var deadIdx = dead.to(ScalarType.Bool).nonzero().squeeze(1);
        long nDead = deadIdx.shape[0];
        if (nDead == 0) return null;
        long kAux = Math.Min(Training.KAux ?? Cfg.DIn / 2, nDead);
        if (kAux <= 0) return null;
        SparseCode code;
        Tensor preValues;
        using (no_grad())
        {
            var deadPre = pre.index_select(1, deadIdx);
            var (_, local) = nn.functional.relu(deadPre).topk((int)kAux, dim: 1, largest: true, sorted: false);
            preValues = deadPre.gather(1, local).reshape(-1);
            var latent = deadIdx.index_select(0, local.reshape(-1)).reshape(local.shape);
            code = SparseLatents.FromRowIndices(latent);
        }
        var auxVals = nn.functional.relu(EncodeCode(x, code, preValues));
        var eHat = SparseLatents.Decode(auxVals, code, W_dec);
        var e = (target - y).detach();
        var l2 = (e - eHat).pow(2).sum(-1).mean();
        var denom = (e - e.mean([0], keepdim: true)).pow(2).sum(-1).mean();
        return (l2 / denom).nan_to_num(0.0).MoveToOuterDisposeScope();
    }

    public override void InitializeWeights(Generator? generator = null, double decoderNorm = 0.1) =>
        base.InitializeWeights(generator, 1.0);

    public override void BeforeOptimizerStep(SaeTrainContext ctx) => RemoveGradientParallelToDecoderRows();

    public override void AfterOptimizerStep(SaeTrainContext ctx) => NormalizeDecoderRows();
}
