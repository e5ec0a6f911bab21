using static TorchSharp.torch;

namespace SaeSharp.Saes;

/// <summary>
/// ReLU SAE ("standard"): f = ReLU((x − b_dec)·W_enc + b_enc). Trained with an L1 penalty, either the Towards
/// Monosemanticity recipe (unit-norm decoder rows, parallel gradient removed; the trainer resamples dead latents)
/// or the April 2024 update (L1 weighted by decoder-row norms, no norm constraint), chosen by
/// <see cref="SaeTrainingOptions.Penalty"/>. Adam (0.9, 0.999), lr 5e-5 (the April 2024 update's values).
/// </summary>
public sealed class StandardSae : Sae
{
    public StandardSae(SaeConfig cfg) : base(cfg)
    {
        RegisterComponents();
    }

    public override Tensor Encode(Tensor x)
    {
        using var scope = NewDisposeScope();
        return nn.functional.relu(HiddenPre(x)).MoveToOuterDisposeScope();
    }

    /// <summary>Whether the decoder rows are held at unit norm (the Towards Monosemanticity recipe).</summary>
    public bool ConstrainsDecoderNorm => Training.Penalty != SparsityPenalty.L1DecoderNorm;

    public override SaeTrainOutput TrainingForward(Tensor x, Tensor target, SaeTrainContext ctx)
    {
        using var scope = NewDisposeScope();
        var f = Encode(x);
        var y = Decode(f);
        var mse = (y - target).pow(2).sum(-1).mean();
        var sparsity = SparsityLoss(f, W_dec);
        var loss = mse + sparsity * (Training.SparsityCoefficient * ctx.SparsityScale);
        var output = new SaeTrainOutput
        {
            Loss = loss.MoveToOuterDisposeScope(),
            SaeOut = y.MoveToOuterDisposeScope(),
            FeatureActs = f.MoveToOuterDisposeScope(),
            Losses =
            {
                ["mse_loss"] = mse.detach().MoveToOuterDisposeScope(),
                ["l1_loss"] = sparsity.detach().MoveToOuterDisposeScope(),
            },
        };
        return output;
    }

    /// <summary>The sparsity term before its coefficient, averaged over the batch.</summary>
    internal Tensor SparsityLoss(Tensor f, Tensor wDec)
    {
        using var scope = NewDisposeScope();
        Tensor s = Training.Penalty switch
        {
            SparsityPenalty.L1 => f.abs().sum(-1).mean(),
            SparsityPenalty.L1DecoderNorm => (f.abs() * wDec.norm(1)).sum(-1).mean(),
            SparsityPenalty.Entropy => Entropy(f),
            _ => throw new SaeSharpException($"unknown sparsity penalty {Training.Penalty}"),
        };
        return s.MoveToOuterDisposeScope();
    }

    /// <summary>Mean over rows of the entropy of p = |f| / Σ|f| (rows with no activity contribute 0).</summary>
    private static Tensor Entropy(Tensor f)
    {
        var a = f.abs();
        var p = a / a.sum(-1, keepdim: true).clamp_min(1e-12);
        return -(p * (p + 1e-12).log()).sum(-1).mean();
    }

    public override void BeforeOptimizerStep(SaeTrainContext ctx)
    {
        if (ConstrainsDecoderNorm) RemoveGradientParallelToDecoderRows();
    }

    public override void AfterOptimizerStep(SaeTrainContext ctx)
    {
        if (ConstrainsDecoderNorm) NormalizeDecoderRows();
    }
}
