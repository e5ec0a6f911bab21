using SaeSharp.Kernels;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace SaeSharp.Saes;

/// <summary>
/// JumpReLU SAE ("jumprelu", Rajamanoharan et al. 2024): f = ReLU(pre)·[pre &gt; θ] with a learnable per-latent
/// <c>threshold</c> θ [d_sae] (SAELens's inference form and state_dict key).
/// Training (dictionary_learning's <c>JumpReluTrainer</c>, which trains θ itself rather than SAELens's log θ): the step's
/// straight-through estimator with the rectangle kernel K(u) = [|u| &lt; ½] of bandwidth ε
/// (<see cref="SaeTrainingOptions.Bandwidth"/>) gives ∂f/∂θ = −(θ/ε)·K((pre−θ)/ε) and ∂[pre&gt;θ]/∂θ = −(1/ε)·K((pre−θ)/ε),
/// ∂f/∂pre = [pre &gt; θ]. It is built with the detach trick — value + (θ − sg(θ))·sg(pseudo-derivative) — so autograd
/// produces exactly these gradients. Loss = mean_n‖y − ŷ‖² + λ·s·P with L0 = mean_n Σ_j [pre_j &gt; θ_j] (on the
/// pre-activations, as the paper and SAELens; dictionary_learning applies its step to f, see docs/recipes.md) and
/// P = L0 (paper) or (L0/target − 1)² (dictionary_learning), chosen by
/// <see cref="SaeTrainingOptions.JumpReluPenalty"/>. Decoder rows unit norm with parallel-gradient removal
/// (dictionary_learning). Adam β = (0, 0.999), lr 7e-5 (the paper; dictionary_learning).
/// <see cref="SaeTrainingOptions.Autocast"/> trains with bfloat16 matmuls and JumpReLU (<see cref="Bf16Autograd.JumpRelu"/>).
/// <para>Registered twice: "jumprelu" (with <c>d_out</c> also SAELens's <c>jumprelu_transcoder</c>) and
/// "jumprelu_skip_transcoder" (SAELens 6.37's <c>JumpReLUSkipTranscoder</c>, Gemma Scope 2's affine transcoders): the same
/// encoder with <see cref="Sae"/>'s skip connection <c>W_skip</c> [d_out, d_in], output f·W_dec + b_dec + x·W_skipᵀ on the
/// raw input x (SAELens's <c>SkipTranscoder.forward</c>, inherited by <c>JumpReLUSkipTranscoder</c>).</para>
/// </summary>
public sealed class JumpReluSae : Sae
{
    internal override bool WeighsSparsityPenalty => true;

    internal override bool TrainsUnitNormDecoderRows => true;

    /// <summary>The registry entry of "jumprelu".</summary>
    public static SaeArchitecture Descriptor { get; } = new() { Name = SaeArchitectures.JumpReLU, Create = c => new JumpReluSae(c) };

    /// <summary>The registry entry of "jumprelu_skip_transcoder" (SAELens's name): JumpReLU with <c>W_skip</c>.</summary>
    public static SaeArchitecture SkipTranscoderDescriptor { get; } = new()
    {
        Name = SaeArchitectures.JumpReluSkipTranscoder,
        Create = c => new JumpReluSae(c),
        TrainsAs = SaeArchitectures.JumpReLU,
        TranscoderOnly = true,
    };

#pragma warning disable IDE1006 // field name is the state_dict key
    private readonly Parameter threshold;
#pragma warning restore IDE1006

    /// <summary>A JumpReLU SAE of shape <paramref name="cfg"/> (zero weights and threshold), with <c>W_skip</c> when its
    /// architecture is "jumprelu_skip_transcoder".</summary>
    public JumpReluSae(SaeConfig cfg) : base(cfg, hasSkip: IsSkipTranscoder(cfg))
    {
        threshold = nn.Parameter(zeros(cfg.DSae));
        RegisterComponents();
    }

    private static bool IsSkipTranscoder(SaeConfig cfg)
    {
        ArgumentNullException.ThrowIfNull(cfg);
        return cfg.Architecture == SaeArchitectures.JumpReluSkipTranscoder;
    }

    /// <summary><c>threshold</c> θ [d_sae]: a latent fires where its pre-activation exceeds it.</summary>
    public Parameter Threshold => threshold;

    /// <inheritdoc/>
    protected override IEnumerable<Parameter> LatentScaledParameters() => [.. base.LatentScaledParameters(), threshold];

    /// <inheritdoc/>
    public override (double Beta1, double Beta2) DefaultAdamBetas => (0.0, 0.999);

    /// <inheritdoc/>
    public override double DefaultLearningRate() => 7e-5;

    /// <inheritdoc/>
    public override Tensor HiddenPre(Tensor x) => EncoderMatmul(x, BEnc, W_enc);

    /// <inheritdoc/>
    public override Tensor Encode(Tensor x) => EncodeRows(x);

    /// <summary>JumpReLU: ReLU(pre) where pre &gt; θ, else 0.</summary>
    public override Tensor Activate(Tensor pre, Tensor x)
    {
        using var scope = NewDisposeScope();
        return (nn.functional.relu(pre) * pre.gt(threshold)).MoveToOuterDisposeScope();
    }

    /// <summary>JumpReLU with the straight-through threshold gradient −(θ/ε)·K((pre−θ)/ε).</summary>
    internal static Tensor JumpReluSte(Tensor pre, Tensor theta, double bandwidth)
    {
        using var scope = NewDisposeScope();
        var mask = pre.gt(theta).to(pre.dtype);
        using var bandwidthScalar = bandwidth.ToScalar();
        using var negInvBandwidth = (-1.0 / bandwidth).ToScalar();
        var pseudo = (Rectangle((pre - theta) / bandwidthScalar) * theta * negInvBandwidth).detach();
        var value = pre * mask.detach();
        return value.add((theta - theta.detach()) * pseudo, TorchScalars.One).MoveToOuterDisposeScope();
    }

    /// <summary>Heaviside step [pre &gt; θ] with the straight-through threshold gradient −(1/ε)·K((pre−θ)/ε) and no gradient to pre.</summary>
    internal static Tensor StepSte(Tensor pre, Tensor theta, double bandwidth)
    {
        using var scope = NewDisposeScope();
        var step = pre.gt(theta).to(pre.dtype).detach();
        using var bandwidthScalar = bandwidth.ToScalar();
        using var negInvBandwidth = (-1.0 / bandwidth).ToScalar();
        var pseudo = (Rectangle((pre - theta) / bandwidthScalar) * negInvBandwidth).detach();
        return step.add((theta - theta.detach()) * pseudo, TorchScalars.One).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// <see cref="JumpReluSte"/>(pre, θ) and L0 = mean_n Σ_j <see cref="StepSte"/>(pre, θ) with the same values and
    /// gradients, sharing one kernel pass: the L0's threshold gradient −(1/ε)·mean_n K is formed on [d_sae] rather than
    /// through an [N, d_sae] straight-through term.
    /// </summary>
    internal static (Tensor F, Tensor L0) JumpReluAndL0(Tensor pre, Tensor theta, double bandwidth)
    {
        using var scope = NewDisposeScope();
        long n = pre.shape[0];
        Tensor mask, kernel, count, kernelMean;
        using var bandwidthScalar = bandwidth.ToScalar();
        using var negInvBandwidth = (-1.0 / bandwidth).ToScalar();
        using var kernelMeanScale = (-1.0 / (bandwidth * n)).ToScalar();
        using (no_grad())
        {
            var u = pre.detach() - theta.detach();
            mask = u.gt(TorchScalars.Of(0));                             // [pre > θ], bool
            kernel = u.div_(bandwidthScalar).abs_().lt(TorchScalars.Of(0.5)); // K((pre − θ)/ε), bool
            kernelMean = kernel.sum(0L).to(pre.dtype).mul_(kernelMeanScale);
            count = mask.sum(-1).to(pre.dtype).mean();
        }
        // (θ − sg(θ)) is zero in value and carries θ's gradient; scaled by −θ/ε it is the JumpReLU's pseudo-derivative.
        var dTheta = theta - theta.detach();
        var f = (pre * mask).add(dTheta * (theta.detach() * negInvBandwidth) * kernel, TorchScalars.One);
        var l0 = count.add((dTheta * kernelMean).sum(), TorchScalars.One);
        return (f.MoveToOuterDisposeScope(), l0.MoveToOuterDisposeScope());
    }

    private static Tensor Rectangle(Tensor u) => u.gt(TorchScalars.Of(-0.5)).logical_and_(u.lt(TorchScalars.Of(0.5))).to(u.dtype);

    /// <summary>The loss of the class comment, written once over the activations of the execution path: dense float32
    /// (<see cref="JumpReluAndL0"/>), or with <see cref="SaeTrainingOptions.Autocast"/> a bfloat16 encoder, JumpReLU and
    /// decoder with the L0's straight-through threshold gradient formed on [d_sae].</summary>
    public override SaeTrainOutput TrainingForward(Tensor x, Tensor target, SaeTrainContext ctx)
    {
        using var scope = NewDisposeScope();
        var (f, l0, pre) = TrainingLatentsOf(x);
        var y = WithSkip(f.Decode(W_dec, b_dec), x);
        var mse = MseLoss(y, target);
        using var targetL0 = Training.TargetL0.ToScalar();
        var penalty = Training.JumpReluPenalty switch
        {
            JumpReluPenalty.L0 => l0,
            JumpReluPenalty.TargetL0 => (l0 / targetL0 - TorchScalars.Of(1)).pow(TorchScalars.Of(2)),
            _ => throw new SaeSharpException($"unknown JumpReLU penalty {Training.JumpReluPenalty}"),
        };
        var loss = mse.add(WeightedSparsity(penalty, ctx), TorchScalars.One);
        var losses = new Dictionary<string, Tensor> { ["mse_loss"] = mse, ["l0_loss"] = penalty };
        if (PreActLoss(pre, ctx.DeadMask) is { } preAct)
        {
            loss = loss.add(preAct, TorchScalars.One);
            losses["pre_act_loss"] = preAct;
        }
        return f.ToOutput(loss, y, losses);
    }

    /// <summary>
    /// Anthropic's pre-activation loss on dead latents as SAELens computes it (<c>calculate_pre_act_loss</c>):
    /// c·mean_n Σ_{j dead} ReLU(θ_j − pre_nj)·‖W_dec[j]‖, c = <see cref="SaeTrainingOptions.PreActLossCoefficient"/>. A dead
    /// latent gets no other gradient (the JumpReLU passes none below θ); this one raises its pre-activations towards θ
    /// (and lowers θ) until it fires again. Null when off or when no latent is dead.
    /// </summary>
    private Tensor? PreActLoss(Tensor pre, Tensor? deadMask)
    {
        if (Training.PreActLossCoefficient is not double c || c <= 0 || deadMask is null) return null;
        Tensor idx;
        using (no_grad()) idx = deadMask.nonzero().squeeze(1);
        if (idx.shape[0] == 0) return null;
        var gap = (threshold.index_select(0, idx) - pre.index_select(1, idx).to(threshold.dtype)).relu();
        using var cScalar = c.ToScalar();
        return (gap * W_dec.index_select(0, idx).norm(1)).sum(-1).mean() * cScalar;
    }

    /// <summary>The execution path (see <see cref="TrainingLatents"/>): the activations, L0 = mean_n Σ_j [pre_j &gt; θ_j]
    /// with its straight-through threshold gradient, and the pre-activations.</summary>
    private (TrainingLatents F, Tensor L0, Tensor Pre) TrainingLatentsOf(Tensor x)
    {
        if (!AutocastKernels)
        {
            var pre = HiddenPre(x);
            var (f, l0) = JumpReluAndL0(pre, threshold, Training.Bandwidth);
            return (new DenseTrainingLatents(f), l0, pre);
        }
        var pre16 = EncoderMatmulBf16(x, BEnc, W_enc);
        double n = pre16.shape[0];
        var (fb, activeCounts, kernelCounts) = Bf16Autograd.JumpRelu(pre16, threshold, Training.Bandwidth);
        using var kernelMeanScale = (-1.0 / (Training.Bandwidth * n)).ToScalar();
        using var nScalar = n.ToScalar();
        var kernelMean = kernelCounts.to(threshold.dtype).mul_(kernelMeanScale);
        var l0b = activeCounts.sum().to(threshold.dtype).div_(nScalar).add(((threshold - threshold.detach()) * kernelMean).sum(), TorchScalars.One);
        return (new Bf16TrainingLatents(fb, activeCounts), l0b, pre16);
    }

    /// <summary>Base initialisation with unit-norm decoder rows (W_enc = W_decᵀ) and θ = <see cref="SaeTrainingOptions.InitialThreshold"/>.</summary>
    public override void InitializeWeights(Generator? generator = null, double decoderNorm = 0.1)
    {
        base.InitializeWeights(generator, 1.0);
        using var _ = no_grad();
        using var initialThreshold = Training.InitialThreshold.ToScalar();
        threshold.fill_(initialThreshold);
    }

    /// <summary>Scale of the encoder at the start of a <c>--target-l0</c> run, relative to its initialisation.</summary>
    public const double TargetL0EncoderScale = 0.5;

    /// <summary>
    /// The start of a <c>--target-l0</c> run (docs/recipes.md "JumpReLU"): W_enc scaled by
    /// <see cref="TargetL0EncoderScale"/>, then each θ_j set to the (1 − l0/d_sae) quantile of latent j's
    /// pre-activations on the <paramref name="sample"/> rows, so that every latent fires on a share l0/d_sae of them and
    /// the code starts at L0 ≈ <paramref name="l0"/>. With the full encoder the latents that start firing (at values ≥ θ,
    /// on random decoder rows) overshoot the reconstruction so far that the encoder silences most of them within the
    /// lr warm-up, and those never come back.
    /// </summary>
    public void InitializeForTargetL0(Tensor sample, double l0)
    {
        using var _ = no_grad();
        using var scope = NewDisposeScope();
        W_enc.mul_(TorchScalars.Of(TargetL0EncoderScale));
        var pre = HiddenPre(sample);
        double q = Math.Clamp(1 - l0 / Cfg.DSae, 0, 1);
        using var initialThreshold = Training.InitialThreshold.ToScalar();
        threshold.copy_(pre.quantile(tensor(q, dtype: pre.dtype, device: pre.device), 0L).clamp_min(initialThreshold));
    }

    /// <inheritdoc/>
    public override void BeforeOptimizerStep(SaeTrainContext ctx) => RemoveGradientParallelToDecoderRows();

    /// <inheritdoc/>
    public override void AfterOptimizerStep(SaeTrainContext ctx) => NormalizeDecoderRows();
}
