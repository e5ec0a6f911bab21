using SaeSharp.Kernels;
using static TorchSharp.torch;

namespace SaeSharp.Saes;

/// <summary>
/// ReLU SAE ("standard"): f = ReLU((x − b_dec)·W_enc + b_enc). Trained with an L1 penalty, either the Towards
/// Monosemanticity recipe (unit-norm decoder rows, parallel gradient removed; the trainer resamples dead latents)
/// or the April 2024 update (L1 weighted by decoder-row norms, no norm constraint), chosen by
/// <see cref="SaeTrainingOptions.Penalty"/>. Adam (0.9, 0.999), lr 5e-5 (the April 2024 update's values).
/// Once features are sparse (<see cref="SparseTrainingDensity"/>), training decodes and back-propagates over the active
/// entries only. With <see cref="SaeTrainingOptions.Autocast"/> the dense matmuls run in bfloat16 (see
/// <see cref="Bf16Autograd"/>) and the sparse pass selects its entries from bfloat16 pre-activations.
/// </summary>
public sealed class StandardSae : Sae
{
    public StandardSae(SaeConfig cfg) : base(cfg)
    {
        RegisterComponents();
    }

    /// <inheritdoc/>
    public override Tensor HiddenPre(Tensor x) => EncoderMatmul(x, BEnc, W_enc);

    /// <inheritdoc/>
    public override bool SupportsResampling => true;

    public override Tensor Encode(Tensor x)
    {
        using var scope = NewDisposeScope();
        return Activate(HiddenPre(x), x).MoveToOuterDisposeScope();
    }

    /// <summary>ReLU(pre).</summary>
    public override Tensor Activate(Tensor pre, Tensor x) => nn.functional.relu(pre);

    /// <summary>Whether the decoder rows are held at unit norm (the Towards Monosemanticity recipe).</summary>
    public bool ConstrainsDecoderNorm => Training.Penalty != SparsityPenalty.L1DecoderNorm;

    /// <summary>
    /// Largest fraction of positive pre-activations at which the training pass switches to the sparse code: past it,
    /// decoding and the backward pass run over the active entries only (<see cref="SparseLatents"/>), which is exact and
    /// cheaper than the dense products once features are sparse. 0 always trains densely.
    /// </summary>
    public double SparseTrainingDensity { get; set; } = 0.05;

    public override SaeTrainOutput TrainingForward(Tensor x, Tensor target, SaeTrainContext ctx)
    {
        using var scope = NewDisposeScope();
        if (Training.Autocast) return AutocastTrainingForward(x, target, ctx).MoveToOuter();
        var pre = HiddenPre(x);
        long n = pre.shape[0];
        if (SparseTrainingDensity > 0)
        {
            SparseCode? code = null;
            Tensor? preValues = null;
            using (no_grad())
            {
                var detached = pre.detach();
                long maxCount = (long)(SparseTrainingDensity * pre.numel());
                if (detached.dtype == ScalarType.Float32 && detached.is_contiguous() && detached.dim() == 2)
                {
                    if (SparseKernels.PositiveEntries(detached, maxCount) is { } entries)
                        (code, preValues) = (new SparseCode(entries.Rows, entries.Cols, n), entries.Values);
                }
                else
                {
                    var active = detached.gt(0);
                    if (active.sum().item<long>() <= maxCount)
                    {
                        var idx = active.nonzero();
                        (code, preValues) = (new SparseCode(idx[.., 0], idx[.., 1], n), detached.masked_select(active));
                    }
                }
            }
            if (code is not null) return SparseTrainingForward(x, target, ctx, code, preValues!).MoveToOuter();
        }
        var f = nn.functional.relu(pre);
        var y = Decode(f);
        var mse = (y - target).pow(2).sum(-1).mean();
        var sparsity = SparsityLoss(f, W_dec, nonNegative: true);
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

    /// <summary>
    /// The training pass with <see cref="SaeTrainingOptions.Autocast"/>: bfloat16 pre-activations; past
    /// <see cref="SparseTrainingDensity"/> the sparse pass on their positive entries, with the values recomputed in
    /// float32; otherwise a dense pass with bfloat16 matmuls (<see cref="Bf16Autograd.Encoder"/>, <see cref="Bf16Autograd.Decoder"/>)
    /// and ReLU output in bfloat16, the L1 term computed by the decoder matmul as an extra output column f·w
    /// (w = 1, or the decoder row norms).
    /// </summary>
    private DenseOrSparse AutocastTrainingForward(Tensor x, Tensor target, SaeTrainContext ctx)
    {
        var (f, counts) = ReluEncoderBf16(x, BEnc, W_enc);
        long n = f.shape[0];
        if (SparseTrainingDensity > 0)
        {
            SparseCode? code = null;
            Tensor? preValues = null;
            using (no_grad())
            {
                if (counts.sum().item<long>() <= (long)(SparseTrainingDensity * f.numel()))
                {
                    var (rows, cols, _) = SparseKernels.PositiveEntries(f.detach(), values: false)!.Value;
                    code = new SparseCode(rows, cols, n);
                    preValues = ExactHiddenPre(x, code);
                }
            }
            if (code is not null) return new DenseOrSparse(null, SparseTrainingForward(x, target, ctx, code, preValues!));
        }
        long dOut = Cfg.DOutOrIn;
        Tensor y, sparsity;
        if (Training.Penalty == SparsityPenalty.Entropy)
        {
            y = Bf16Autograd.Decoder(f, W_dec, b_dec);
            sparsity = Entropy(f.to(ScalarType.Float32));
        }
        else
        {
            var column = Training.Penalty == SparsityPenalty.L1DecoderNorm ? W_dec.norm(1) : ones(Cfg.DSae, dtype: W_dec.dtype);
            var yExt = Bf16Autograd.Decoder(f, cat([W_dec, column.unsqueeze(1)], 1), cat([b_dec, zeros(1, dtype: b_dec.dtype)], 0));
            y = yExt.narrow(1, 0, dOut);
            sparsity = yExt.select(1, dOut).mean();
        }
        var mse = (y - target).pow(2).sum(-1).mean();
        var loss = mse + sparsity * (Training.SparsityCoefficient * ctx.SparsityScale);
        var fd = f.detach().MoveToOuterDisposeScope();
        return new DenseOrSparse(new SaeTrainOutput
        {
            Loss = loss.MoveToOuterDisposeScope(),
            SaeOut = y.MoveToOuterDisposeScope(),
            FeatureActsFactory = () => fd.to(ScalarType.Float32),
            ActiveCounts = counts.MoveToOuterDisposeScope(),
            Losses =
            {
                ["mse_loss"] = mse.detach().MoveToOuterDisposeScope(),
                ["l1_loss"] = sparsity.detach().MoveToOuterDisposeScope(),
            },
        }, null);
    }

    /// <summary>Float32 pre-activations (x − b_dec)·W_enc[:, col] + b_enc[col] at the entries of the code (no gradient).</summary>
    private Tensor ExactHiddenPre(Tensor x, SparseCode code)
    {
        using var _ = no_grad();
        using var scope = NewDisposeScope();
        var xc = EncoderInput(x).contiguous();
        var wT = W_enc.detach().t().contiguous();
        return SparseKernels.RowDots(xc, code.Rows, wT, code.Cols).add_(BEnc.detach().index_select(0, code.Cols)).MoveToOuterDisposeScope();
    }

    /// <summary>A dense output or a sparse one still to be moved out of the forward's dispose scope.</summary>
    private sealed record DenseOrSparse(SaeTrainOutput? Dense, SparseOutput? Sparse)
    {
        public SaeTrainOutput MoveToOuter() => Dense ?? Sparse!.MoveToOuter();
    }

    /// <summary>The training pass on the active entries (the same loss and gradients as the dense pass).</summary>
    private SparseOutput SparseTrainingForward(Tensor x, Tensor target, SaeTrainContext ctx, SparseCode code, Tensor preValues)
    {
        var vals = nn.functional.relu(SparseLatents.EncoderValues(x, Cfg.ApplyBDecToInput ? b_dec : null, W_enc, BEnc, code, preValues));
        var y = SparseLatents.Decode(vals, code, W_dec) + b_dec;
        var mse = (y - target).pow(2).sum(-1).mean();
        double n = code.RowCount;
        var a = vals.abs();
        Tensor sparsity = Training.Penalty switch
        {
            SparsityPenalty.L1 => a.sum() / n,
            SparsityPenalty.L1DecoderNorm => (a * W_dec.norm(1).index_select(0, code.Cols)).sum() / n,
            SparsityPenalty.Entropy => SparseEntropy(code, a),
            _ => throw new SaeSharpException($"unknown sparsity penalty {Training.Penalty}"),
        };
        var loss = mse + sparsity * (Training.SparsityCoefficient * ctx.SparsityScale);
        return new SparseOutput(loss, y, mse, sparsity, code, vals.detach(), Cfg.DSae);
    }

    /// <summary><see cref="Entropy"/> on the sparse code: rows' |f| normalised by their sums.</summary>
    private static Tensor SparseEntropy(SparseCode code, Tensor a)
    {
        var rowSums = zeros(code.RowCount, dtype: a.dtype).index_add(0, code.Rows, a, 1);
        var p = a / rowSums.index_select(0, code.Rows).clamp_min(1e-12);
        return -(p * (p + 1e-12).log()).sum() / code.RowCount;
    }

    /// <summary>Tensors of the sparse pass, moved out of the forward's dispose scope together.</summary>
    private sealed record SparseOutput(Tensor Loss, Tensor Y, Tensor Mse, Tensor Sparsity, SparseCode Code, Tensor Vals, long DSae)
    {
        public SaeTrainOutput MoveToOuter()
        {
            var code = new SparseCode(Code.Rows.MoveToOuterDisposeScope(), Code.Cols.MoveToOuterDisposeScope(), Code.RowCount);
            var vals = Vals.MoveToOuterDisposeScope();
            long dSae = DSae;
            return new SaeTrainOutput
            {
                Loss = Loss.MoveToOuterDisposeScope(),
                SaeOut = Y.MoveToOuterDisposeScope(),
                FeatureActsFactory = () => SparseLatents.ToDense(code, vals, dSae),
                ActiveCounts = SparseLatents.ActiveCounts(code, vals, dSae).MoveToOuterDisposeScope(),
                Losses =
                {
                    ["mse_loss"] = Mse.detach().MoveToOuterDisposeScope(),
                    ["l1_loss"] = Sparsity.detach().MoveToOuterDisposeScope(),
                },
            };
        }
    }

    /// <summary>The sparsity term before its coefficient, averaged over the batch. <paramref name="nonNegative"/>: f ≥ 0
    /// (ReLU output), so |f| = f and the [N, d_sae] abs and its backward are skipped.</summary>
    internal Tensor SparsityLoss(Tensor f, Tensor wDec, bool nonNegative = false)
    {
        using var scope = NewDisposeScope();
        var a = nonNegative ? f : f.abs();
        Tensor s = Training.Penalty switch
        {
            SparsityPenalty.L1 => a.sum() / f.shape[0],
            SparsityPenalty.L1DecoderNorm => a.matmul(wDec.norm(1)).mean(),
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
