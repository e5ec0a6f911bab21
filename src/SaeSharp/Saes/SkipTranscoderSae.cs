using TorchSharp;
using static TorchSharp.torch;

namespace SaeSharp.Saes;

/// <summary>
/// SAELens's <c>skip_transcoder</c>: a ReLU transcoder with a learned linear skip connection <c>W_skip</c> [d_out, d_in]
/// (zeros at initialisation; the skip connection itself is <see cref="Sae"/>'s, shared with the JumpReLU
/// <c>jumprelu_skip_transcoder</c> of <see cref="JumpReluSae"/>). f = ReLU(x·W_enc + b_enc) (SAELens never subtracts
/// b_dec from a transcoder's input; SaeSharp does only when <c>apply_b_dec_to_input</c> is set, which SAELens refuses for
/// transcoders), decode f·W_dec + b_dec, and the output <c>forward</c>/<see cref="Sae.Run"/>/<see cref="Sae.Reconstruct"/>
/// give is f·W_dec + b_dec + x·W_skipᵀ with x the raw input row. Trained densely with <see cref="StandardSae"/>'s penalties
/// (<see cref="SaeTrainingOptions.Penalty"/>) and no decoder-norm constraint.
/// </summary>
public sealed class SkipTranscoderSae : Sae
{
    internal override bool WeighsSparsityPenalty => true;

    /// <summary>The registry entry of "skip_transcoder" (SAELens's name).</summary>
    public static SaeArchitecture Descriptor { get; } = new()
    {
        Name = SaeArchitectures.SkipTranscoder,
        Create = c => new SkipTranscoderSae(c),
        TrainsAs = SaeArchitectures.Standard,
        TranscoderOnly = true,
    };

    /// <summary>A skip transcoder of shape <paramref name="cfg"/> (zero weights).</summary>
    public SkipTranscoderSae(SaeConfig cfg) : base(cfg, hasSkip: true) => RegisterComponents();

    /// <inheritdoc/>
    public override Tensor HiddenPre(Tensor x) => EncoderMatmul(x, BEnc, W_enc);

    /// <inheritdoc/>
    public override Tensor Encode(Tensor x) => EncodeRows(x);

    /// <summary>ReLU(pre).</summary>
    public override Tensor Activate(Tensor pre, Tensor x) => nn.functional.relu(pre);

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
        y = WithSkip(y, x);
        var mse = MseLoss(y, target);
        var loss = mse.add(WeightedSparsity(sparsity, ctx), TorchScalars.One);
        return f.ToOutput(loss, y, new() { ["mse_loss"] = mse, ["l1_loss"] = sparsity });
    }
}
