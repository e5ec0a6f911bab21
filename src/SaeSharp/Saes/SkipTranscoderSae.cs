using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace SaeSharp.Saes;

/// <summary>
/// SAELens's <c>skip_transcoder</c>: a ReLU transcoder with a learned linear skip connection <c>W_skip</c> [d_out, d_in]
/// (zeros at initialisation). f = ReLU(x·W_enc + b_enc) (SAELens never subtracts b_dec from a transcoder's input;
/// SaeSharp does only when <c>apply_b_dec_to_input</c> is set, which SAELens refuses for transcoders), decode
/// f·W_dec + b_dec, and the output <c>forward</c>/<see cref="Sae.Run"/>/<see cref="Reconstruct"/> give is
/// f·W_dec + b_dec + x·W_skipᵀ with x the raw input row. Trained densely with <see cref="StandardSae"/>'s penalties
/// (<see cref="SaeTrainingOptions.Penalty"/>) and no decoder-norm constraint.
/// </summary>
public sealed class SkipTranscoderSae : Sae
{
    /// <summary>The registry entry of "skip_transcoder" (SAELens's name).</summary>
    public static SaeArchitecture Descriptor { get; } = new() { Name = SaeArchitectures.SkipTranscoder, Create = c => new SkipTranscoderSae(c) };

#pragma warning disable IDE1006, CA1051 // named after the state_dict key
    /// <summary>The skip connection <c>W_skip</c> [d_out, d_in].</summary>
    private readonly Parameter W_skip;
#pragma warning restore IDE1006, CA1051

    /// <summary>A skip transcoder of shape <paramref name="cfg"/> (zero weights).</summary>
    public SkipTranscoderSae(SaeConfig cfg) : base(cfg)
    {
        W_skip = nn.Parameter(zeros(cfg.DOutOrIn, cfg.DIn));
        RegisterComponents();
    }

    /// <summary><c>W_skip</c> [d_out, d_in]: the SAE's own parameter, not a copy.</summary>
    public Parameter WSkip => W_skip;

    /// <inheritdoc/>
    public override Tensor HiddenPre(Tensor x) => EncoderMatmul(x, BEnc, W_enc);

    /// <inheritdoc/>
    public override Tensor Encode(Tensor x) => EncodeRows(x);

    /// <summary>ReLU(pre).</summary>
    public override Tensor Activate(Tensor pre, Tensor x) => nn.functional.relu(pre);

    /// <summary>f·W_dec + b_dec + x·W_skipᵀ (SAELens <c>SkipTranscoder.forward</c>), x the raw rows [N, d_in].</summary>
    public override Tensor Reconstruct(Tensor featureActs, Tensor x)
    {
        using var scope = NewDisposeScope();
        var y = base.Reconstruct(featureActs, x);
        var rows = x.dim() == 2 ? x : x.reshape(-1, Cfg.DIn);
        var skip = rows.to(W_skip.dtype).matmul(W_skip.t());
        return y.add(skip.reshape(y.shape), TorchScalars.One).MoveToOuterDisposeScope();
    }

    /// <summary>The loss of <see cref="StandardSae"/> with the skip term in the reconstruction: mean_n‖y − ŷ‖² + λ·s·P,
    /// ŷ = f·W_dec + b_dec + x·W_skipᵀ, on the dense float32 path.</summary>
    public override SaeTrainOutput TrainingForward(Tensor x, Tensor target, SaeTrainContext ctx)
    {
        using var scope = NewDisposeScope();
        var f = new DenseTrainingLatents(nn.functional.relu(HiddenPre(x)));
        var (y, sparsity) = Training.Penalty switch
        {
            SparsityPenalty.L1 => f.DecodeWithL1(W_dec, b_dec, null),
            SparsityPenalty.L1DecoderNorm => f.DecodeWithL1(W_dec, b_dec, W_dec.norm(1)),
            SparsityPenalty.Entropy => (f.Decode(W_dec, b_dec), f.Entropy()),
            _ => throw new SaeSharpException($"unknown sparsity penalty {Training.Penalty}"),
        };
        y = y.add(x.matmul(W_skip.t()), TorchScalars.One);
        var mse = MseLoss(y, target);
        var loss = mse.add(WeightedSparsity(sparsity, ctx), TorchScalars.One);
        return f.ToOutput(loss, y, new() { ["mse_loss"] = mse, ["l1_loss"] = sparsity });
    }

    /// <summary>As <see cref="Sae.FoldActivationScale"/>, and W_skip ← W_skip·s_in/s_out (the skip term maps the scaled input
    /// to the scaled target).</summary>
    public override void FoldActivationScale(double scaleIn, double scaleOut)
    {
        base.FoldActivationScale(scaleIn, scaleOut);
        using var _ = no_grad();
        using var ratio = (scaleIn / scaleOut).ToScalar();
        W_skip.mul_(ratio);
    }

    /// <summary>As <see cref="Sae.InitializeWeights"/>, with W_skip zero (SAELens's initialisation).</summary>
    public override void InitializeWeights(Generator? generator = null, double decoderNorm = 0.1)
    {
        base.InitializeWeights(generator, decoderNorm);
        using var _ = no_grad();
        W_skip.fill_(TorchScalars.Of(0));
    }
}
