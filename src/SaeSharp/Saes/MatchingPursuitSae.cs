using TorchSharp;
using static TorchSharp.torch;

namespace SaeSharp.Saes;

/// <summary>
/// SAELens 6.37's <c>matching_pursuit</c> SAE (Costa et al. 2025, "From flat to hierarchical: extracting sparse
/// representations with matching pursuit"): the encoder is tied to the decoder (W_decᵀ), so the weights are <c>W_dec</c>
/// [d_sae, d_in] and <c>b_dec</c> [d_in] only (SAELens's state_dict has no W_enc and no b_enc). Encoding is SAELens's
/// <c>_encode_matching_pursuit</c>: from the centred input r = x − b_dec (after the run-time normalisation), each
/// iteration picks j = argmax_j ReLU(r·W_dec[j]), adds v = ReLU(r·W_dec[j]) to latent j (a latent picked again
/// accumulates), and sets r ← r − v·W_dec[j]; a row is done once an iteration leaves its set of active latents unchanged
/// (<c>stop_on_duplicate_support</c>) or ‖r‖ &lt; <c>residual_threshold</c> (when positive), and done rows add nothing
/// more; the loop stops when every row is done or after <c>max_iterations</c> (null: d_in). Decoding is f·W_dec, plus b_dec
/// only when <c>apply_b_dec_to_input</c> (SAELens: a tied SAE adds b_dec back only if it took it off).
/// <para>Training is SAELens's <c>MatchingPursuitTrainingSAE</c>: the loss is the MSE alone (no sparsity coefficient),
/// gradients reach W_dec through the selected rows and values and b_dec through the centred input (the argmax products
/// carry none); decoder rows start at norm 1 whatever <c>decoder_init_norm</c> says (SAELens forces 1.0) and are not
/// constrained afterwards. The training output adds SAELens's metrics <c>max_l0</c>, <c>min_l0</c>,
/// <c>residual_norm</c> and <c>residual_threshold_converged_portion</c>.</para>
/// <para>There are no pre-activations: <see cref="HiddenPre"/> is zeros, as SAELens's <c>encode_with_hidden_pre</c>
/// returns, so an edit of <c>hook_sae_acts_pre</c> changes nothing; <c>hook_sae_acts_post</c> (the latents) can be edited
/// as for every SAE. <see cref="FoldWDecNorm"/> is refused as SAELens refuses it.</para>
/// </summary>
public sealed class MatchingPursuitSae : Sae
{
    /// <summary>SAELens's default <c>residual_threshold</c>.</summary>
    public const double DefaultResidualThreshold = 1e-2;

    /// <summary>The registry entry of "matching_pursuit".</summary>
    public static SaeArchitecture Descriptor { get; } = new()
    {
        Name = SaeArchitectures.MatchingPursuit,
        Create = c => new MatchingPursuitSae(c),
        HasEncoderWeights = _ => false,
        Validate = (c, source) =>
        {
            if (c.DOut is int dOut && dOut != c.DIn)
                throw new SaeSharpException($"{source}: architecture 'matching_pursuit' encodes with W_decᵀ, so d_out must equal d_in (got d_in={c.DIn}, d_out={dOut}); it cannot be a transcoder");
            if (c.ResidualThreshold is double t && !double.IsFinite(t))
                throw new SaeSharpException($"{source}: residual_threshold {t}: expected a finite number (0 or less: no residual stop)");
            if (c.MaxIterations is < 1)
                throw new SaeSharpException($"{source}: max_iterations {c.MaxIterations}: expected at least 1, or null (d_in)");
        },
    };

    /// <summary>A matching-pursuit SAE of shape <paramref name="cfg"/> (zero weights). SAELens's defaults of
    /// <c>residual_threshold</c> (1e-2) and <c>stop_on_duplicate_support</c> (true) are written into the config when absent,
    /// so that its cfg.json states them.</summary>
    public MatchingPursuitSae(SaeConfig cfg) : base(cfg, hasEncoderBias: false, hasEncoderWeights: false)
    {
        cfg.ResidualThreshold ??= DefaultResidualThreshold;
        cfg.StopOnDuplicateSupport ??= true;
        RegisterComponents();
    }

    /// <summary>The residual norm below which a row stops (<c>residual_threshold</c>; 0 or less: no such stop).</summary>
    public double ResidualThreshold => Cfg.ResidualThreshold ?? DefaultResidualThreshold;
    /// <summary>The most iterations, and so latent selections, per row (<c>max_iterations</c>, else d_in).</summary>
    public int MaxIterations => Cfg.MaxIterations ?? Cfg.DIn;
    /// <summary>Whether a row stops once an iteration leaves its active latents unchanged (<c>stop_on_duplicate_support</c>).</summary>
    public bool StopOnDuplicateSupport => Cfg.StopOnDuplicateSupport ?? true;

    /// <inheritdoc/>
    public override IReadOnlyList<(string Name, string Value)> ArchitectureFields =>
    [
        ("residual_threshold", ResidualThreshold.ToString("R", System.Globalization.CultureInfo.InvariantCulture)),
        ("max_iterations", MaxIterations.ToString(System.Globalization.CultureInfo.InvariantCulture)),
        ("stop_on_duplicate_support", StopOnDuplicateSupport ? "true" : "false"),
    ];

    /// <summary>Zeros [N, d_sae]: matching pursuit has no single pre-activation (SAELens's <c>encode_with_hidden_pre</c>
    /// returns zeros); <see cref="Activate"/> encodes the rows themselves.</summary>
    public override Tensor HiddenPre(Tensor x)
    {
        ArgumentNullException.ThrowIfNull(x);
        return zeros(x.dim() == 2 ? x.shape[0] : x.numel() / Cfg.DIn, Cfg.DSae, dtype: W_dec.dtype, device: W_dec.device);
    }

    /// <summary>The matching-pursuit latents of the rows <paramref name="x"/>; <paramref name="pre"/> (zeros, see
    /// <see cref="HiddenPre"/>) is not used.</summary>
    public override Tensor Activate(Tensor pre, Tensor x) => Encode(x);

    /// <inheritdoc/>
    public override Tensor Encode(Tensor x)
    {
        using var scope = NewDisposeScope();
        var rows = CheckedRows(x, nameof(Encode), Cfg.DIn, "d_in");
        var f = Pursuit(EncoderInput(rows), W_dec, ResidualThreshold, MaxIterations, StopOnDuplicateSupport);
        return (x.dim() == 2 ? f : f.reshape([.. x.shape[..^1], Cfg.DSae])).MoveToOuterDisposeScope();
    }

    /// <summary>f·W_dec, plus b_dec only when <c>apply_b_dec_to_input</c> (SAELens's tied decode).</summary>
    public override Tensor Decode(Tensor featureActs)
    {
        using var scope = NewDisposeScope();
        var rows = CheckedRows(featureActs, nameof(Decode), Cfg.DSae, "d_sae");
        var y = Cfg.ApplyBDecToInput ? addmm(b_dec, rows, W_dec, 1, 1) : rows.matmul(W_dec);
        return (featureActs.dim() == 2 ? y : y.reshape([.. featureActs.shape[..^1], Cfg.DOutOrIn])).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// SAELens's <c>_encode_matching_pursuit</c> on centred rows <paramref name="centred"/> [N, d_in] with dictionary
    /// <paramref name="wDec"/> [d_sae, d_in]: the latents [N, d_sae]. The argmax products run without gradient; the values
    /// and the residual updates carry gradients to <paramref name="wDec"/> and <paramref name="centred"/> when grad mode
    /// is on. Each iteration runs in its own dispose scope; the residuals of earlier iterations are freed as the loop goes
    /// (autograd keeps what the backward pass needs).
    /// </summary>
    internal static Tensor Pursuit(Tensor centred, Tensor wDec, double residualThreshold, int maxIterations, bool stopOnDuplicateSupport)
    {
        using var scope = NewDisposeScope();
        long n = centred.shape[0], dSae = wDec.shape[0];
        bool stopOnThreshold = residualThreshold > 0;
        using var threshold = residualThreshold.ToScalar();
        var acts = zeros(n, dSae, dtype: centred.dtype, device: wDec.device);
        Tensor residual = centred.alias();
        Tensor done = zeros(n, dtype: ScalarType.Bool, device: wDec.device);
        Tensor prevSupport = zeros(n, dSae, dtype: ScalarType.Bool, device: wDec.device);
        var wDecT = wDec.detach().t();
        for (int iteration = 0; iteration < maxIterations; iteration++)
        {
            using var step = NewDisposeScope();
            Tensor indices;
            using (no_grad())
                indices = residual.detach().matmul(wDecT).relu_().max(1, keepdim: true).indexes;   // relu in place: one [N, d_sae] buffer
            var selected = wDec.index_select(0, indices.squeeze(1));
            var values = nn.functional.relu((residual * selected).sum(-1, keepdim: true));
            var masked = values * done.logical_not().unsqueeze(1).to(values.dtype);
            acts.scatter_add_(1, indices, masked);
            var next = residual - masked * selected;
            residual.Dispose();
            residual = next.MoveToOuterDisposeScope();
            if (!stopOnDuplicateSupport && !stopOnThreshold) continue;
            using (no_grad())
            {
                var nowDone = done;
                if (stopOnDuplicateSupport)
                {
                    var support = acts.ne(TorchScalars.Of(0));
                    nowDone = nowDone.logical_or(support.eq(prevSupport).all(1));
                    prevSupport.Dispose();
                    prevSupport = support.MoveToOuterDisposeScope();
                }
                if (stopOnThreshold) nowDone = nowDone.logical_or(residual.detach().norm(1).lt(threshold));
                if (!ReferenceEquals(nowDone, done))
                {
                    done.Dispose();
                    done = nowDone.MoveToOuterDisposeScope();
                }
                if (done.all().item<bool>()) break;
            }
        }
        return acts.MoveToOuterDisposeScope();
    }

    /// <summary>SAELens's <c>MatchingPursuitTrainingSAE.training_forward_pass</c>: loss = mean_n ‖y − ŷ‖² (its
    /// <c>get_coefficients</c> is empty, its aux loss none), ŷ = f·W_dec (+ b_dec when <c>apply_b_dec_to_input</c>; mapped
    /// back from a run-time normalisation as SAELens's decode does), with
    /// the metrics <c>max_l0</c>, <c>min_l0</c> (active latents per row), <c>residual_norm</c> (mean ‖x − ŷ‖) and
    /// <c>residual_threshold_converged_portion</c> (fraction of rows with ‖x − ŷ‖ below <c>residual_threshold</c>).</summary>
    public override SaeTrainOutput TrainingForward(Tensor x, Tensor target, SaeTrainContext ctx)
    {
        ArgumentNullException.ThrowIfNull(x);
        ArgumentNullException.ThrowIfNull(target);
        using var scope = NewDisposeScope();
        var f = Pursuit(EncoderInput(x), W_dec, ResidualThreshold, MaxIterations, StopOnDuplicateSupport);
        // SAELens's training decode maps a run-time normalisation back (run_time_activation_norm_fn_out) before the MSE.
        var y = UndoInputNormalization(Cfg.ApplyBDecToInput ? addmm(b_dec, f, W_dec, 1, 1) : f.matmul(W_dec), x);
        var mse = MseLoss(y, target);
        Dictionary<string, Tensor> metrics;
        using (no_grad())
        {
            var l0 = f.ne(TorchScalars.Of(0)).sum(-1).to(ScalarType.Float32);
            var residualNorm = (x - y).norm(1);
            using var threshold = ResidualThreshold.ToScalar();
            metrics = new()
            {
                ["max_l0"] = l0.max().MoveToOuterDisposeScope(),
                ["min_l0"] = l0.min().MoveToOuterDisposeScope(),
                ["residual_norm"] = residualNorm.mean().MoveToOuterDisposeScope(),
                ["residual_threshold_converged_portion"] = residualNorm.lt(threshold).to(ScalarType.Float32).mean().MoveToOuterDisposeScope(),
            };
        }
        return new SaeTrainOutput
        {
            Loss = mse.MoveToOuterDisposeScope(),
            SaeOut = y.MoveToOuterDisposeScope(),
            FeatureActs = f.MoveToOuterDisposeScope(),
            Losses = new() { ["mse_loss"] = mse.detach().MoveToOuterDisposeScope() },
            Metrics = metrics,
        };
    }

    /// <summary>Decoder rows in random directions at norm 1 whatever <paramref name="decoderNorm"/> is (SAELens's
    /// <c>MatchingPursuitTrainingSAEConfig</c> sets <c>decoder_init_norm</c> to 1.0, with a warning), b_dec zero.</summary>
    public override void InitializeWeights(TorchSharp.torch.Generator? generator = null, double decoderNorm = 0.1) =>
        base.InitializeWeights(generator, 1.0);

    /// <summary>Refused, as SAELens refuses it: scaling the decoder rows changes which latents matching pursuit selects.</summary>
    public override void FoldWDecNorm() =>
        throw new SaeSharpException("fold_W_dec_norm: folding W_dec_norm is not safe for MatchingPursuit SAEs (architecture 'matching_pursuit'), as this may change the resulting activations (SAELens refuses it too)");

    /// <summary>
    /// Folds an input scale s into the SAE: the SAE trained on s·x becomes one on raw x. The encoder is W_decᵀ, so W_dec
    /// stays (SAELens's base method, applied to this tied SAE, multiplies W_dec through its W_encᵀ view and divides it back:
    /// the same); b_dec ← b_dec/s; and <c>residual_threshold</c> ← threshold/s, which SAELens leaves, so that each row stops at
    /// the iteration it stopped at on s·x. Matching pursuit is then exactly rescaled: the reconstruction is the trained
    /// SAE's divided by s, and so are the feature activations (no tied weights can keep them unchanged). Needs the same
    /// scale for input and target (an autoencoder's).
    /// </summary>
    public override void FoldActivationScale(double scaleIn, double scaleOut)
    {
        if (Math.Abs(scaleIn - scaleOut) > 1e-12 * Math.Abs(scaleIn))
            throw new SaeSharpException($"matching_pursuit reconstructs its input: the input and target scales must be equal (got {scaleIn} and {scaleOut})");
        if (!(scaleIn > 0 && double.IsFinite(scaleIn)))
            throw new SaeSharpException($"matching_pursuit: an activation scale must be positive and finite, got {scaleIn}");
        using var _ = no_grad();
        using var s = scaleIn.ToScalar();
        b_dec.div_(s);
        if (ResidualThreshold > 0) Cfg.ResidualThreshold = ResidualThreshold / scaleIn;
    }

    /// <summary>SAELens's default learning rate (<c>LanguageModelSAERunnerConfig.lr</c>, 3e-4).</summary>
    public override double DefaultLearningRate() => 3e-4;
}
