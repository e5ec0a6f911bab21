using SaeSharp.Kernels;
using TorchSharp;
using static TorchSharp.torch;

namespace SaeSharp.Saes;

/// <summary>
/// The execution seam of the training passes: the feature activations f [N, d_sae] of one batch in the form the pass
/// runs on, with the few products a loss needs. An architecture's <see cref="Sae.TrainingForward"/> first builds its
/// latents on one execution path (dense float32, sparse, bfloat16) and then writes its loss once over them, the way
/// SAELens's trainer runs the same <c>training_forward_pass</c> with or without autocast:
/// <code>
/// var f = ...;                                   // the path: DenseTrainingLatents, Bf16TrainingLatents, SparseTrainingLatents
/// var (y, l1) = f.DecodeWithL1(W_dec, b_dec, w); // ŷ = f·W_dec + b_dec and mean_n Σ_j f_nj·w_j
/// var mse = MseLoss(y, target);
/// return f.ToOutput(mse + WeightedSparsity(l1, ctx), y, losses);
/// </code>
/// A new execution path is a new subclass, returned where the architecture chooses its path
/// (<see cref="StandardSae"/>'s <c>TrainingLatentsOf</c>, <see cref="GatedSae"/>'s and <see cref="JumpReluSae"/>'s
/// <c>TrainingForward</c>); the losses do not change. Every implementation holds ReLU-type activations (f ≥ 0).
/// Methods are called inside the training pass's dispose scope; <see cref="ToOutput"/> moves what the output keeps out of it.
/// </summary>
internal abstract class TrainingLatents
{
    /// <summary>Rows N of the batch.</summary>
    public abstract long Rows { get; }

    /// <summary>The reconstruction f·<paramref name="wDec"/> + <paramref name="bDec"/>, [N, d_out] float32.</summary>
    public abstract Tensor Decode(Tensor wDec, Tensor bDec);

    /// <summary>The reconstruction f·<paramref name="wDec"/> + <paramref name="bDec"/> and the L1 term
    /// mean_n Σ_j |f_nj|·w_j, with w = <paramref name="l1Weights"/> [d_sae] (e.g. the decoder-row norms) or 1 when null.
    /// The bfloat16 path computes the L1 term as an extra output column of the decoder matmul.</summary>
    public abstract (Tensor Y, Tensor L1) DecodeWithL1(Tensor wDec, Tensor bDec, Tensor? l1Weights);

    /// <summary>mean_n of the entropy of p = |f_n| / Σ_j |f_nj| (rows with no activity contribute 0).</summary>
    public abstract Tensor Entropy();

    /// <summary>The training output: <paramref name="loss"/>, the reconstruction, the named loss parts (detached here),
    /// the feature activations (dense, or built on first read) and the per-latent active counts where the path has them.</summary>
    public abstract SaeTrainOutput ToOutput(Tensor loss, Tensor saeOut, Dictionary<string, Tensor> losses);

    /// <summary><see cref="Entropy"/> of a dense [N, d_sae] matrix.</summary>
    protected static Tensor DenseEntropy(Tensor f)
    {
        var a = f.abs();
        var p = a / a.sum(-1, keepdim: true).clamp_min(TorchScalars.Of(1e-12));
        return -(p * p.add(TorchScalars.Of(1e-12), TorchScalars.One).log()).sum(-1).mean();
    }

    /// <summary>The loss parts detached and moved out of the training pass's dispose scope.</summary>
    protected static Dictionary<string, Tensor> Detached(Dictionary<string, Tensor> losses) =>
        losses.ToDictionary(kv => kv.Key, kv => kv.Value.detach().MoveToOuterDisposeScope());
}

/// <summary>Dense float32 activations [N, d_sae] with autograd through torch's matmuls.</summary>
internal sealed class DenseTrainingLatents(Tensor f) : TrainingLatents
{
    public override long Rows => f.shape[0];

    public override Tensor Decode(Tensor wDec, Tensor bDec) => addmm(bDec, f, wDec, 1, 1);

    public override (Tensor Y, Tensor L1) DecodeWithL1(Tensor wDec, Tensor bDec, Tensor? l1Weights)
    {
        // f ≥ 0, so |f| = f and the [N, d_sae] abs and its backward are skipped.
        using var rows = f.shape[0].ToScalar();
        var l1 = l1Weights is null ? f.sum() / rows : f.matmul(l1Weights).mean();
        return (Decode(wDec, bDec), l1);
    }

    public override Tensor Entropy() => DenseEntropy(f);

    public override SaeTrainOutput ToOutput(Tensor loss, Tensor saeOut, Dictionary<string, Tensor> losses) => new()
    {
        Loss = loss.MoveToOuterDisposeScope(),
        SaeOut = saeOut.MoveToOuterDisposeScope(),
        FeatureActs = f.MoveToOuterDisposeScope(),
        Losses = Detached(losses),
    };
}

/// <summary>Dense float32 ReLU activations from <see cref="DenseRelu.Encode"/> (CPU, custom kernels on): decoding and the L1
/// term run in one autograd function whose backward makes one pass over [N, d_sae] (<see cref="DenseRelu"/>). The
/// encoder's parameters enter here because that backward also produces their gradients. L1 penalties only.</summary>
internal sealed class FusedReluTrainingLatents(DenseReluCode code, Tensor wEnc, Tensor bEnc, bool centred) : TrainingLatents
{
    public override long Rows => code.F.shape[0];

    public override Tensor Decode(Tensor wDec, Tensor bDec) => DecodeWithL1(wDec, bDec, null).Y;

    public override (Tensor Y, Tensor L1) DecodeWithL1(Tensor wDec, Tensor bDec, Tensor? l1Weights) =>
        DenseRelu.DecodeWithL1(code, bDec, wEnc, bEnc, wDec, l1Weights, centred);

    public override Tensor Entropy() => throw new InvalidOperationException("the fused ReLU pass has the L1 penalties only");

    public override SaeTrainOutput ToOutput(Tensor loss, Tensor saeOut, Dictionary<string, Tensor> losses) => new()
    {
        Loss = loss.MoveToOuterDisposeScope(),
        SaeOut = saeOut.MoveToOuterDisposeScope(),
        FeatureActs = code.F.MoveToOuterDisposeScope(),
        ActiveCounts = code.Counts.MoveToOuterDisposeScope(),
        Losses = Detached(losses),
    };
}

/// <summary>bfloat16 activations [N, d_sae] from the <see cref="Bf16Autograd"/> encoders (<see cref="SaeTrainingOptions.Autocast"/>):
/// decoding runs in <see cref="Bf16Autograd.Decoder"/> (bfloat16 operands, float32 accumulation and output).
/// <paramref name="activeCounts"/>: [d_sae] int64 positive entries per latent when the encoder counted them, else counted here.</summary>
internal sealed class Bf16TrainingLatents(Tensor f, Tensor? activeCounts = null) : TrainingLatents
{
    public override long Rows => f.shape[0];

    public override Tensor Decode(Tensor wDec, Tensor bDec) => Bf16Autograd.Decoder(f, wDec, bDec);

    public override (Tensor Y, Tensor L1) DecodeWithL1(Tensor wDec, Tensor bDec, Tensor? l1Weights)
    {
        long dOut = wDec.shape[1];
        var column = l1Weights ?? ones(f.shape[1], dtype: wDec.dtype, device: wDec.device);
        var yExt = Bf16Autograd.Decoder(f, cat([wDec, column.unsqueeze(1)], 1), cat([bDec, zeros(1, dtype: bDec.dtype, device: bDec.device)], 0));
        return (yExt.narrow(1, 0, dOut), yExt.select(1, dOut).mean());
    }

    public override Tensor Entropy() => DenseEntropy(f.to(ScalarType.Float32));

    public override SaeTrainOutput ToOutput(Tensor loss, Tensor saeOut, Dictionary<string, Tensor> losses)
    {
        var fd = f.detach().MoveToOuterDisposeScope();
        return new SaeTrainOutput
        {
            Loss = loss.MoveToOuterDisposeScope(),
            SaeOut = saeOut.MoveToOuterDisposeScope(),
            FeatureActsFactory = () => fd.to(ScalarType.Float32),
            ActiveCounts = (activeCounts ?? Bf16Kernels.PositiveCounts(fd)).MoveToOuterDisposeScope(),
            Losses = Detached(losses),
        };
    }
}

/// <summary>Activations on a sparse code: <paramref name="values"/> [nnz] at the entries of <paramref name="code"/>
/// (<see cref="SparseLatents"/>), so that decoding and the backward pass cost O(nnz·d); the dense [N, d_sae] matrix is
/// built only when <see cref="SaeTrainOutput.FeatureActs"/> is read.</summary>
internal sealed class SparseTrainingLatents(SparseCode code, Tensor values, long dSae) : TrainingLatents
{
    public override long Rows => code.RowCount;

    public override Tensor Decode(Tensor wDec, Tensor bDec) => SparseLatents.Decode(values, code, wDec).add(bDec, TorchScalars.One);

    public override (Tensor Y, Tensor L1) DecodeWithL1(Tensor wDec, Tensor bDec, Tensor? l1Weights)
    {
        var y = Decode(wDec, bDec);
        var a = values.abs();
        using var rowCount = code.RowCount.ToScalar();
        var l1 = l1Weights is null ? a.sum() / rowCount : (a * l1Weights.index_select(0, code.Cols)).sum() / rowCount;
        return (y, l1);
    }

    public override Tensor Entropy()
    {
        var a = values.abs();
        var rowSums = zeros(code.RowCount, dtype: a.dtype, device: a.device).index_add(0, code.Rows, a, TorchScalars.Of(1));
        var p = a / rowSums.index_select(0, code.Rows).clamp_min(TorchScalars.Of(1e-12));
        using var rowCount = code.RowCount.ToScalar();
        return -(p * p.add(TorchScalars.Of(1e-12), TorchScalars.One).log()).sum() / rowCount;
    }

    public override SaeTrainOutput ToOutput(Tensor loss, Tensor saeOut, Dictionary<string, Tensor> losses)
    {
        var outCode = new SparseCode(code.Rows.MoveToOuterDisposeScope(), code.Cols.MoveToOuterDisposeScope(), code.RowCount);
        var outValues = values.detach().MoveToOuterDisposeScope();
        long width = dSae;
        return new SaeTrainOutput
        {
            Loss = loss.MoveToOuterDisposeScope(),
            SaeOut = saeOut.MoveToOuterDisposeScope(),
            FeatureActsFactory = () => SparseLatents.ToDense(outCode, outValues, width),
            ActiveCounts = SparseLatents.ActiveCounts(outCode, outValues, width).MoveToOuterDisposeScope(),
            Losses = Detached(losses),
        };
    }
}
