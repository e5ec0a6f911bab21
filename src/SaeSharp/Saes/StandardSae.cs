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
/// <see cref="Bf16Autograd"/>) and the sparse pass selects its entries from bfloat16 pre-activations. The loss is written
/// once (<see cref="TrainingForward"/>) over the latents of the chosen path (<see cref="TrainingLatents"/>).
/// </summary>
public sealed class StandardSae : Sae
{
    internal override bool WeighsSparsityPenalty => true;

    /// <summary>The registry entry of "standard" (ReLU; <c>sae train --arch relu</c> and <c>relu-april</c> are its recipes).</summary>
    public static SaeArchitecture Descriptor { get; } = new() { Name = SaeArchitectures.Standard, Create = c => new StandardSae(c) };

    /// <summary>A ReLU SAE of shape <paramref name="cfg"/> (zero weights).</summary>
    public StandardSae(SaeConfig cfg) : base(cfg)
    {
        RegisterComponents();
    }

    /// <inheritdoc/>
    public override Tensor HiddenPre(Tensor x) => EncoderMatmul(x, BEnc, W_enc);

    /// <inheritdoc/>
    public override bool SupportsResampling => true;

    /// <inheritdoc/>
    public override Tensor Encode(Tensor x) => EncodeRows(x);

    /// <summary>ReLU(pre).</summary>
    public override Tensor Activate(Tensor pre, Tensor x) => nn.functional.relu(pre);

    /// <summary>Whether the decoder rows are held at unit norm (the Towards Monosemanticity recipe).</summary>
    public bool ConstrainsDecoderNorm => Training.Penalty != SparsityPenalty.L1DecoderNorm;

    internal override bool TrainsUnitNormDecoderRows => ConstrainsDecoderNorm;

    /// <summary>
    /// When the training pass switches to the sparse code (past which decoding and the backward pass run over the active
    /// entries only, <see cref="SparseLatents"/>: exact, and cheaper than the dense products once features are sparse).
    /// NaN (the default): per step, from the measured cost of both passes at the run's shape (<see cref="SparsePassSwitch"/>).
    /// A number: the largest fraction of positive pre-activations at which the sparse pass runs (0: always dense, 1: always sparse).
    /// </summary>
    public double SparseTrainingDensity
    {
        get => Training.SparsePassDensity ?? double.NaN;
        set => Training.SparsePassDensity = double.IsNaN(value) ? null : value;
    }

    private readonly SparsePassSwitch _switch = new();

    /// <summary>Whether a step with <paramref name="positive"/> of <paramref name="entries"/> pre-activations positive takes
    /// the sparse pass (<see cref="SparseTrainingDensity"/>).</summary>
    private bool UseSparsePass(long positive, long entries)
    {
        if (!double.IsNaN(SparseTrainingDensity)) return SparseTrainingDensity > 0 && positive <= (long)(SparseTrainingDensity * entries);
        return _switch.Choose(positive, entries);
    }

    /// <summary>After a sparse step, the next one lists the positive entries straight from the encoder products plus
    /// b_enc (<see cref="SparseKernels.PositiveCounts"/>, <see cref="SparseKernels.ListPositive"/>) instead of writing
    /// the activations first: the same entries and values, one pass over [N, d_sae] fewer (off:
    /// <c>SAESHARP_LIST_FROM_PRODUCTS=0</c>, and the tests' comparison).</summary>
    internal static bool ListFromProducts { get; set; } = Environment.GetEnvironmentVariable("SAESHARP_LIST_FROM_PRODUCTS") != "0";

    /// <summary>Whether the last training pass ran on the sparse code (for the benches' per-phase timing).</summary>
    internal bool LastTrainingPassSparse { get; private set; }

    /// <inheritdoc/>
    /// <remarks>Once the last pass was sparse: the step's products then run in <see cref="Blas"/> and the sparse kernels.</remarks>
    internal override bool SmallTorchSteps => LastTrainingPassSparse && !Training.Autocast && CpuKernels.On(W_enc);

    /// <summary>The loss, written once for every execution path: mean_n‖y − ŷ‖² + λ·s·P with P the L1 term
    /// (<see cref="SparsityPenalty.L1"/>: mean_n Σ_j f_j; <see cref="SparsityPenalty.L1DecoderNorm"/>: mean_n Σ_j f_j·‖W_dec[j]‖)
    /// or the entropy of the normalised activations. The path is chosen by <see cref="TrainingLatentsOf"/>. With
    /// <see cref="SaeTrainingOptions.LpNorm"/> p ≠ 1, P is SAELens's mean_n (Σ_j (f_j·w_j)^p)^(1/p) over the same weights
    /// w (the decoder-row norms, or 1), computed on the plain float32 torch path.</summary>
    public override SaeTrainOutput TrainingForward(Tensor x, Tensor target, SaeTrainContext ctx)
    {
        using var scope = NewDisposeScope();
        if (Training.LpNorm != 1 && Training.Penalty != SparsityPenalty.Entropy) return LpNormTrainingForward(x, target, ctx);
        var f = TrainingLatentsOf(x);
        LastTrainingPassSparse = f is SparseTrainingLatents;
        var (y, sparsity) = Training.Penalty switch
        {
            SparsityPenalty.L1 => f.DecodeWithL1(W_dec, b_dec, null),
            SparsityPenalty.L1DecoderNorm => f.DecodeWithL1(W_dec, b_dec, W_dec.norm(1)),
            SparsityPenalty.Entropy => (f.Decode(W_dec, b_dec), f.Entropy()),
            _ => throw new SaeSharpException($"unknown sparsity penalty {Training.Penalty}"),
        };
        var mse = MseLoss(y, target);
        var loss = mse.add(WeightedSparsity(sparsity, ctx), TorchScalars.One);
        return f.ToOutput(loss, y, new() { ["mse_loss"] = mse, ["l1_loss"] = sparsity });
    }

    /// <summary>The loss with SAELens's p-norm sparsity term (standard_sae.py's <c>calculate_aux_loss</c>):
    /// λ·s·mean_n ‖f_n ⊙ w‖_p with torch's vector norm and its gradient (zero at a row without active latents). Dense
    /// float32 torch operations: the fused kernels, the sparse pass and autocast compute the L1 term only. Called inside
    /// <see cref="TrainingForward"/>'s dispose scope.</summary>
    private SaeTrainOutput LpNormTrainingForward(Tensor x, Tensor target, SaeTrainContext ctx)
    {
        LastTrainingPassSparse = false;
        var f = nn.functional.relu(HiddenPre(x));
        var weighted = Training.Penalty == SparsityPenalty.L1DecoderNorm ? f * W_dec.norm(1) : f;
        var sparsity = TorchScalars.VectorNorm(weighted, Training.LpNorm, [1]).mean();
        var y = addmm(b_dec, f, W_dec, 1, 1);
        var mse = MseLoss(y, target);
        var loss = mse.add(WeightedSparsity(sparsity, ctx), TorchScalars.One);
        return new DenseTrainingLatents(f).ToOutput(loss, y, new() { ["mse_loss"] = mse, ["l1_loss"] = sparsity });
    }

    /// <summary>
    /// The execution path of a training pass (the seam where a new path plugs in, see <see cref="TrainingLatents"/>):
    /// <list type="bullet">
    /// <item>float32 on the CPU with the custom kernels on (<see cref="DenseRelu.Applies"/>): the fused encoder pass
    /// (GEMM, then ReLU + bias + per-latent sums and counts in one pass); when the sparse pass is chosen
    /// (<see cref="SparseTrainingDensity"/>), the sparse code of its positive entries (<see cref="SparseTrainingLatents"/>;
    /// after a sparse step counted and listed from the GEMM's products plus b_enc, <see cref="ListFromProducts"/>),
    /// else the fused dense decoder and L1 (<see cref="FusedReluTrainingLatents"/>).</item>
    /// <item>float32 elsewhere (other devices, <c>SAESHARP_KERNELS=torch</c>, the entropy penalty): the same choice with
    /// torch operations (<see cref="DenseTrainingLatents"/>).</item>
    /// <item><see cref="SaeTrainingOptions.Autocast"/>: the fused bfloat16 ReLU encoder (<see cref="Bf16Autograd.ReluEncoder"/>);
    /// past the same density the sparse code of its positive entries with the values recomputed exactly in float32, else
    /// the bfloat16 activations (<see cref="Bf16TrainingLatents"/>).</item>
    /// </list>
    /// </summary>
    private TrainingLatents TrainingLatentsOf(Tensor x)
    {
        if (AutocastKernels)
        {
            var (fb, counts) = ReluEncoderBf16(x, BEnc, W_enc);
            if (SparseTrainingDensity is not 0)
            {
                SparseCode? code = null;
                Tensor? preValues = null;
                using (no_grad())
                {
                    if (UseSparsePass(counts.sum().item<long>(), fb.numel()))
                    {
                        var (rows, cols, _) = SparseKernels.PositiveEntries(fb.detach(), values: false)!.Value;
                        code = new SparseCode(rows, cols, fb.shape[0]);
                        preValues = ExactHiddenPre(x, code);
                    }
                }
                if (code is not null) return SparseLatentsOf(x, code, preValues!);
            }
            return new Bf16TrainingLatents(fb, counts);
        }
        if (!x.requires_grad && Training.Penalty != SparsityPenalty.Entropy && DenseRelu.Applies(x, W_enc))
        {
            DenseReluCode? dense = null;
            (Tensor Rows, Tensor Cols, Tensor? Values)? entries = null;
            using (no_grad())
            {
                var xc = EncoderInput(x).contiguous();
                var p = Blas.Mm(xc, W_enc.detach());
                if (ListFromProducts && LastTrainingPassSparse)
                {
                    // The last step was sparse: count and list the positive entries of p + b_enc without writing the
                    // activations (the dense pass, if chosen, writes them after all).
                    var counts = SparseKernels.PositiveCounts(p, BEnc);
                    if (UseSparsePass(counts.Sum(), p.numel())) entries = SparseKernels.ListPositive(p, counts, BEnc);
                    else dense = DenseRelu.FromProducts(xc, p, BEnc);
                }
                else
                {
                    dense = DenseRelu.FromProducts(xc, p, BEnc);
                    if (UseSparsePass(dense.Positive, dense.F.numel())) (entries, dense) = (SparseKernels.PositiveEntries(dense.F), null);
                }
            }
            if (dense is not null) return new FusedReluTrainingLatents(dense, W_enc, BEnc, Cfg.ApplyBDecToInput);
            var (rows, cols, values) = entries!.Value;
            return SparseLatentsOf(x, new SparseCode(rows, cols, x.shape[0]), values!);
        }
        // Torch operations (other devices, SAESHARP_KERNELS=torch, an input that needs a gradient, the entropy penalty).
        var pre = HiddenPre(x);
        if (SparseTrainingDensity is not 0)
        {
            long n = pre.shape[0];
            SparseCode? code = null;
            Tensor? preValues = null;
            using (no_grad())
            {
                var detached = pre.detach();
                var active = detached.gt(TorchScalars.Of(0));
                if (UseSparsePass(active.sum().item<long>(), pre.numel()))
                {
                    var idx = active.nonzero();
                    (code, preValues) = (new SparseCode(idx[.., 0], idx[.., 1], n), detached.masked_select(active));
                }
            }
            if (code is not null) return SparseLatentsOf(x, code, preValues!);
        }
        return new DenseTrainingLatents(nn.functional.relu(pre));
    }

    /// <summary>ReLU of the pre-activations at the code's entries, differentiable w.r.t. W_enc, b_enc and b_dec
    /// (<paramref name="preValues"/> their values, from the pass that chose the entries).</summary>
    private SparseTrainingLatents SparseLatentsOf(Tensor x, SparseCode code, Tensor preValues) =>
        new(code, nn.functional.relu(SparseLatents.EncoderValues(x, Cfg.ApplyBDecToInput ? b_dec : null, W_enc, BEnc, code, preValues)), Cfg.DSae);

    /// <summary>Float32 pre-activations (x − b_dec)·W_enc[:, col] + b_enc[col] at the entries of the code (no gradient).</summary>
    private Tensor ExactHiddenPre(Tensor x, SparseCode code)
    {
        using var _ = no_grad();
        using var scope = NewDisposeScope();
        var xc = EncoderInput(x).contiguous();
        var wT = W_enc.detach().t().contiguous();
        return SparseKernels.RowDots(xc, code.Rows, wT, code.Cols).add_(BEnc.detach().index_select(0, code.Cols), TorchScalars.One).MoveToOuterDisposeScope();
    }

    /// <inheritdoc/>
    public override void BeforeOptimizerStep(SaeTrainContext ctx)
    {
        _switch.Stop();
        if (ConstrainsDecoderNorm) RemoveGradientParallelToDecoderRows();
    }

    /// <inheritdoc/>
    public override void AfterOptimizerStep(SaeTrainContext ctx)
    {
        if (ConstrainsDecoderNorm) NormalizeDecoderRows();
    }
}
