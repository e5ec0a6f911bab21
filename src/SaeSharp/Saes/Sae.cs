using SaeSharp.Kernels;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace SaeSharp.Saes;

/// <summary>
/// A sparse autoencoder with SAELens parameter names and shapes: <c>W_enc</c> [d_in, d_sae], <c>b_enc</c> [d_sae],
/// <c>W_dec</c> [d_sae, d_out], <c>b_dec</c> [d_out]. Subclasses (one file per architecture) add their own
/// parameters (<c>threshold</c>, <c>b_gate</c>, <c>r_mag</c>, <c>b_mag</c>), define <see cref="Encode"/> and the
/// training loss, and call <c>RegisterComponents()</c> at the end of their constructor.
/// <c>forward(x)</c> returns the reconstruction (un-normalised when <see cref="UsesRunTimeNormalization"/>). Gated SAEs have no <c>b_enc</c> (SAELens: <c>b_gate</c>/<c>b_mag</c>).
/// </summary>
public abstract class Sae : nn.Module<Tensor, Tensor>
{
#pragma warning disable IDE1006, CA1051 // fields named after the state_dict keys: TorchSharp registers fields, not properties
    /// <summary>Encoder weights <c>W_enc</c> [d_in, d_sae].</summary>
    protected readonly Parameter W_enc;
    /// <summary>Encoder bias <c>b_enc</c> [d_sae] (null for gated SAEs).</summary>
    protected readonly Parameter? b_enc;
    /// <summary>Decoder weights <c>W_dec</c> [d_sae, d_out]; row j is latent j's direction.</summary>
    protected readonly Parameter W_dec;
    /// <summary>Decoder bias <c>b_dec</c> [d_out] (subtracted from the input too when <c>apply_b_dec_to_input</c>).</summary>
    protected readonly Parameter b_dec;
    /// <summary>The linear skip connection <c>W_skip</c> [d_out, d_in] of SAELens's skip transcoders (null otherwise).</summary>
    protected readonly Parameter? W_skip;
#pragma warning restore IDE1006, CA1051

    /// <summary>Shape and inference behaviour (cfg.json).</summary>
    public SaeConfig Cfg { get; }

    /// <summary>Training hyperparameters used by <see cref="TrainingForward"/>; ignored at inference.</summary>
    public SaeTrainingOptions Training { get; set; } = new();

    /// <summary>log10 of each latent's firing frequency [d_sae], as SAELens's <c>from_pretrained_with_cfg_and_sparsity</c>
    /// returns it: the <c>sparsity</c> tensor of the folder's <c>sparsity.safetensors</c> (a release's, or what
    /// <c>sae train</c> writes), set when <see cref="Interop.SaeLensFormat"/> loads the SAE; null when the folder has none.
    /// A plain array, not a tensor, so it is no part of the state_dict.</summary>
    public IReadOnlyList<float>? LogFeatureSparsity { get; set; }

    /// <param name="cfg">Shape and inference behaviour.</param>
    /// <param name="hasEncoderBias">False for architectures without <c>b_enc</c> (gated).</param>
    /// <param name="hasEncoderWeights">False for an architecture without <c>W_enc</c> (a tied temporal SAE, matching_pursuit:
    /// the encoder is W_decᵀ): <see cref="WEnc"/> then throws and the state_dict has no <c>W_enc</c>.</param>
    /// <param name="hasSkip">True for SAELens's skip transcoders (<c>skip_transcoder</c>, <c>jumprelu_skip_transcoder</c>):
    /// a parameter <c>W_skip</c> [d_out, d_in], zero at initialisation, whose term x·W_skipᵀ on the raw input rows
    /// <see cref="Reconstruct"/> adds to the decoder's output (SAELens <c>SkipTranscoder.forward</c>).</param>
    protected Sae(SaeConfig cfg, bool hasEncoderBias = true, bool hasSkip = false, bool hasEncoderWeights = true) : base(cfg.Architecture)
    {
        cfg.Validate();
        Cfg = cfg;
        W_enc = hasEncoderWeights ? nn.Parameter(zeros(cfg.DIn, cfg.DSae)) : null!;
        b_enc = hasEncoderBias ? nn.Parameter(zeros(cfg.DSae)) : null;
        W_dec = nn.Parameter(zeros(cfg.DSae, cfg.DOutOrIn));
        b_dec = nn.Parameter(zeros(cfg.DOutOrIn));
        W_skip = hasSkip ? nn.Parameter(zeros(cfg.DOutOrIn, cfg.DIn)) : null;
    }

    /// <summary><c>W_skip</c> [d_out, d_in] of a skip transcoder (the SAE's own parameter, not a copy); throws for
    /// architectures that have none (<see cref="HasSkip"/>).</summary>
    public Parameter WSkip => W_skip ?? throw new SaeSharpException($"architecture '{Cfg.Architecture}' has no W_skip");
    /// <summary>Whether the SAE has a skip connection <c>W_skip</c> (skip_transcoder, jumprelu_skip_transcoder).</summary>
    public bool HasSkip => W_skip is not null;

    /// <summary><paramref name="y"/> [N, d_out] plus the skip term x·W_skipᵀ of the raw input rows <paramref name="x"/>
    /// [N, d_in] (SAELens adds it to the decoder's output, unnormalised, without b_dec subtraction); y itself when the SAE
    /// has no skip connection.</summary>
    private protected Tensor WithSkip(Tensor y, Tensor x)
    {
        if (W_skip is null) return y;
        using var scope = NewDisposeScope();
        var rows = x.dim() == 2 ? x : x.reshape(-1, Cfg.DIn);
        var skip = rows.to(W_skip.dtype).matmul(W_skip.t());
        return y.add(skip.reshape(y.shape).to(y.dtype), TorchScalars.One).MoveToOuterDisposeScope();
    }

    /// <summary><c>W_enc</c> [d_in, d_sae] (SAELens <c>sae.W_enc</c>): the SAE's own parameter, not a copy; the SAE disposes it.</summary>
    public Parameter WEnc
    {
        get
        {
            RequireEncoderWeights();
            return W_enc;
        }
    }
    private void RequireEncoderWeights()
    {
        if (!HasEncoderWeights) throw new SaeSharpException($"this {Cfg.Architecture} SAE has no W_enc (its encoder is W_decᵀ)");
    }

    /// <summary>Whether the SAE has <c>W_enc</c> (all but a tied temporal SAE and matching_pursuit).</summary>
    public bool HasEncoderWeights => (Parameter?)W_enc is not null;
    /// <summary>Whether a token's encoding reads the earlier tokens of its sequence (temporal SAEs): inputs must then be
    /// ordered sequences [batch, pos, d_in], not rows.</summary>
    public virtual bool ReadsContext => false;

    /// <summary>The architecture's own cfg.json fields with the values in effect (defaults filled in), SAELens's names, for
    /// a summary such as <c>sae info</c>: e.g. matching_pursuit's <c>max_iterations</c>, temporal's <c>kval_topk</c>.</summary>
    public virtual IReadOnlyList<(string Name, string Value)> ArchitectureFields => [];
    /// <summary>The encoder bias; throws for architectures that have none (gated: see <c>b_gate</c>, <c>b_mag</c>).</summary>
    public Parameter BEnc => b_enc ?? throw new SaeSharpException($"architecture '{Cfg.Architecture}' has no b_enc");
    /// <summary>Whether the architecture has <c>b_enc</c> (all but gated).</summary>
    public bool HasEncoderBias => b_enc is not null;
    /// <summary><c>W_dec</c> [d_sae, d_out] (SAELens <c>sae.W_dec</c>; row j is latent j's direction): the SAE's own
    /// parameter, not a copy; the SAE disposes it.</summary>
    public Parameter WDec => W_dec;
    /// <summary><c>b_dec</c> [d_out]: the SAE's own parameter; the SAE disposes it.</summary>
    public Parameter BDec => b_dec;

    /// <summary>The input to the encoder matmul: x (layer-normed when <c>normalize_activations</c> is "layer_norm",
    /// rescaled when "constant_norm_rescale"), minus b_dec when <c>apply_b_dec_to_input</c>.</summary>
    protected Tensor EncoderInput(Tensor x)
    {
        if (!UsesRunTimeNormalization) return Cfg.ApplyBDecToInput ? x - b_dec : x.alias();
        using var scope = NewDisposeScope();
        var xn = NormalizeRows(x);
        return (Cfg.ApplyBDecToInput ? xn - b_dec : xn).MoveToOuterDisposeScope();
    }

    /// <summary>x in the SAE's input space: layer-normed (<see cref="UsesLayerNorm"/>) or each row scaled to norm √d_in
    /// (<see cref="UsesConstantNormRescale"/>), else x itself (an alias).</summary>
    private Tensor NormalizeRows(Tensor x)
    {
        using var scope = NewDisposeScope();
        if (UsesLayerNorm)
        {
            var (mu, std) = LayerNormStats(x);
            return ((x - mu) / std.add(TorchScalars.Of(LayerNormEps), TorchScalars.One)).MoveToOuterDisposeScope();
        }
        if (UsesConstantNormRescale) return (x * ConstantNormCoefficient(x)).MoveToOuterDisposeScope();
        return x.alias().MoveToOuterDisposeScope();
    }

    /// <summary>SAELens's <c>x_norm_coeff</c> of "constant_norm_rescale": √d_in / ‖x‖ per row, [N, 1].</summary>
    private Tensor ConstantNormCoefficient(Tensor x)
    {
        using var scope = NewDisposeScope();
        using var sqrtDIn = Math.Sqrt(Cfg.DIn).ToScalar();
        return (sqrtDIn / x.norm(-1, keepdim: true)).MoveToOuterDisposeScope();
    }

    /// <summary>True when <c>normalize_activations</c> is "constant_norm_rescale" (SAELens, Anthropic's February update):
    /// each input row is scaled by c = √d_in / ‖x‖ before encoding and the reconstruction divided by c.</summary>
    public bool UsesConstantNormRescale => Cfg.NormalizeActivations == "constant_norm_rescale";

    /// <summary>True when the input is normalised per row at run time: <see cref="UsesLayerNorm"/> or
    /// <see cref="UsesConstantNormRescale"/>.</summary>
    public bool UsesRunTimeNormalization => UsesLayerNorm || UsesConstantNormRescale;

    /// <summary>ε of SAELens's (and OpenAI sparse_autoencoder's) per-row layer norm.</summary>
    public const double LayerNormEps = 1e-5;

    /// <summary>True when <c>normalize_activations</c> is "layer_norm" (SAELens's run-time normalisation, used by OpenAI's
    /// TopK SAEs): each input row becomes (x − μ)/(σ + 1e-5) with μ its mean and σ its unbiased (n − 1) standard deviation;
    /// <see cref="Encode"/> applies it, and <c>forward</c>/<see cref="Run"/> map the reconstruction back as ŷ·σ + μ.
    /// <see cref="Decode"/> alone returns the normalised-space reconstruction.</summary>
    public bool UsesLayerNorm => Cfg.NormalizeActivations == "layer_norm";

    /// <summary>Per-row mean μ and unbiased standard deviation σ of the centred row, each [N, 1] (torch's <c>x.std(-1)</c>).</summary>
    public static (Tensor Mu, Tensor Std) LayerNormStats(Tensor x)
    {
        using var scope = NewDisposeScope();
        var mu = x.mean([-1], keepdim: true);
        var std = (x - mu).std(-1, unbiased: true, keepdim: true);
        return (mu.MoveToOuterDisposeScope(), std.MoveToOuterDisposeScope());
    }

    /// <summary>Maps a reconstruction made from normalised input back to the scale of <paramref name="x"/> (ŷ·σ + μ after
    /// a layer norm, ŷ / c after a constant-norm rescale); a no-op (alias) unless <see cref="UsesRunTimeNormalization"/>.</summary>
    protected Tensor UndoInputNormalization(Tensor y, Tensor x)
    {
        if (!UsesRunTimeNormalization) return y.alias();
        using var scope = NewDisposeScope();
        if (UsesConstantNormRescale) return (y / ConstantNormCoefficient(x)).MoveToOuterDisposeScope();
        var (mu, std) = LayerNormStats(x);
        return (y * std).add(mu, TorchScalars.One).MoveToOuterDisposeScope();
    }

    /// <summary>Pre-activations (x − b_dec?)·W_enc + b_enc, [N, d_sae].</summary>
    public virtual Tensor HiddenPre(Tensor x)
    {
        using var scope = NewDisposeScope();
        return torch.addmm(BEnc, EncoderInput(x), W_enc, 1, 1).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// <c>addmm(bias, EncoderInput(x), w)</c> with the same value and gradients, minus one matmul in the backward pass:
    /// when x needs no gradient, b_dec's gradient through the centred input, −w·Σ_n ∂L/∂pre_n, is routed through the
    /// bias as <c>sg(b_dec·sg(w)) − b_dec·sg(w)</c> (exactly zero in value) instead of autograd's [N, d_in] input
    /// gradient ∂L/∂pre·wᵀ.
    /// </summary>
    protected Tensor EncoderMatmul(Tensor x, Tensor bias, Tensor w)
    {
        using var scope = NewDisposeScope();
        if (x.requires_grad || !Cfg.ApplyBDecToInput || !torch.is_grad_enabled() || !b_dec.requires_grad)
            return torch.addmm(bias, EncoderInput(x), w, 1, 1).MoveToOuterDisposeScope();
        Tensor xc;
        using (torch.no_grad()) xc = EncoderInput(x);
        var a = b_dec.matmul(w.detach());
        return torch.addmm(bias.add(a.detach() - a, TorchScalars.One), xc, w, 1, 1).MoveToOuterDisposeScope();
    }

    /// <summary>Whether a training pass runs the bfloat16 kernels of <see cref="SaeTrainingOptions.Autocast"/>: autocast is on
    /// and the weights are where the custom CPU kernels run (<see cref="CpuKernels.On"/>); elsewhere the pass runs in float32
    /// with torch operations.</summary>
    private protected bool AutocastKernels => Training.Autocast && W_enc.dtype == ScalarType.Float32 && CpuKernels.On(W_enc);

    /// <summary>
    /// <see cref="EncoderMatmul"/> in bfloat16 for <see cref="SaeTrainingOptions.Autocast"/> training passes
    /// (<see cref="Bf16Autograd.Encoder"/>): [N, d_sae] bfloat16 with float32 gradients to <paramref name="w"/>,
    /// <paramref name="bias"/> and b_dec. An input that requires a gradient takes the float32 product, rounded.
    /// </summary>
    protected Tensor EncoderMatmulBf16(Tensor x, Tensor bias, Tensor w)
    {
        using var scope = NewDisposeScope();
        if (x.requires_grad) return EncoderMatmul(x, bias, w).to(ScalarType.BFloat16).MoveToOuterDisposeScope();
        return Bf16Autograd.Encoder(NormalizedInput(x), Cfg.ApplyBDecToInput ? b_dec : null, w, bias).MoveToOuterDisposeScope();
    }

    /// <summary>ReLU(<see cref="EncoderMatmulBf16"/>) with the ReLU fused into the bfloat16 encoder
    /// (<see cref="Bf16Autograd.ReluEncoder"/>), and the per-latent counts of positive entries [d_sae] int64.</summary>
    protected (Tensor F, Tensor ActiveCounts) ReluEncoderBf16(Tensor x, Tensor bias, Tensor w)
    {
        using var scope = NewDisposeScope();
        if (x.requires_grad)
        {
            var f = nn.functional.relu(EncoderMatmulBf16(x, bias, w));
            return (f.MoveToOuterDisposeScope(), Bf16Kernels.PositiveCounts(f.detach()).MoveToOuterDisposeScope());
        }
        var (fb, counts) = Bf16Autograd.ReluEncoder(NormalizedInput(x), Cfg.ApplyBDecToInput ? b_dec : null, w, bias);
        return (fb.MoveToOuterDisposeScope(), counts.MoveToOuterDisposeScope());
    }

    /// <summary>x, normalised when <see cref="UsesRunTimeNormalization"/> (no gradient).</summary>
    private Tensor NormalizedInput(Tensor x)
    {
        if (!UsesRunTimeNormalization) return x.alias();
        using var _ = no_grad();
        return NormalizeRows(x);
    }

    /// <summary>
    /// Feature activations of the inference form (SAELens <c>sae.encode</c>): rows <paramref name="x"/> [N, d_in], or any
    /// leading dimensions ([batch, pos, d_in] from a hook), give [..., d_sae] in the weights' dtype (x is converted, as
    /// SAELens does). Another width, a non-floating dtype or another device is a <see cref="SaeSharpException"/>. The
    /// result is a new tensor the caller disposes.
    /// </summary>
    public abstract Tensor Encode(Tensor x);

    /// <summary><see cref="Encode"/> of the built-in architectures: <see cref="Activate"/>(<see cref="HiddenPre"/>) over the
    /// rows of <paramref name="x"/>, checked and flattened by <see cref="CheckedRows"/>, reshaped back to x's leading dimensions.</summary>
    private protected Tensor EncodeRows(Tensor x)
    {
        using var scope = NewDisposeScope();
        var rows = CheckedRows(x, nameof(Encode), Cfg.DIn, "d_in");
        var f = Activate(HiddenPre(rows), rows);
        return (x.dim() == 2 ? f : f.reshape(LeadingShape(x, Cfg.DSae))).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// The activation function of the inference form: feature activations from pre-activations <paramref name="pre"/>
    /// (<see cref="HiddenPre"/> of the rows <paramref name="x"/>), so that <c>Encode(x) == Activate(HiddenPre(x), x)</c>.
    /// SAELens's <c>hook_sae_acts_pre</c> → <c>hook_sae_acts_post</c> step: an edit of the pre-activations reaches the features.
    /// Every built-in architecture overrides it; the fallback recomputes <c>Encode(x)</c> and so ignores such an edit.
    /// </summary>
    public virtual Tensor Activate(Tensor pre, Tensor x) => Encode(x);

    /// <summary>The reconstruction of rows <paramref name="x"/> from (possibly edited) features: <see cref="Decode"/>, mapped
    /// back to x's scale for layer-norm SAEs, plus a skip transcoder's x·W_skipᵀ. <c>Reconstruct(Encode(x), x)</c> is
    /// <c>forward(x)</c>.</summary>
    public virtual Tensor Reconstruct(Tensor featureActs, Tensor x)
    {
        using var scope = NewDisposeScope();
        return WithSkip(UndoInputNormalization(Decode(featureActs), x), x).MoveToOuterDisposeScope();
    }

    /// <summary>Reconstruction f·W_dec + b_dec (SAELens <c>sae.decode</c>): [N, d_sae], or any leading dimensions, give
    /// [..., d_out], in the SAE's normalised input space (<see cref="Reconstruct"/> maps it back for layer-norm SAEs).
    /// Another width, a non-floating dtype or another device is a <see cref="SaeSharpException"/>; the result is a new
    /// tensor the caller disposes.</summary>
    public virtual Tensor Decode(Tensor featureActs)
    {
        using var scope = NewDisposeScope();
        var rows = CheckedRows(featureActs, nameof(Decode), Cfg.DSae, "d_sae");
        var y = torch.addmm(b_dec, rows, W_dec, 1, 1);
        return (featureActs.dim() == 2 ? y : y.reshape(LeadingShape(featureActs, Cfg.DOutOrIn))).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// <paramref name="x"/> [..., <paramref name="width"/>] as rows [N, width] in the weights' dtype (SAELens's
    /// <c>process_sae_in</c> converts too; an alias when already 2-D in that dtype): a <see cref="SaeSharpException"/>
    /// naming <paramref name="method"/> when its last dimension is not the SAE's <paramref name="widthName"/>, when it is
    /// not floating-point, or when it is on another device than the weights.
    /// </summary>
    private protected Tensor CheckedRows(Tensor x, string method, int width, string widthName)
    {
        ArgumentNullException.ThrowIfNull(x);
        CheckLive(x, method);
        if (x.dim() == 0 || x.shape[^1] != width)
            throw new SaeSharpException($"{method}: input has shape [{string.Join(", ", x.shape)}]; its last dimension must be {widthName}={width}");
        if (!x.is_floating_point())
            throw new SaeSharpException($"{method}: input has dtype {x.dtype}; expected floating-point activations");
        if (x.device_type != W_dec.device_type || x.device_index != W_dec.device_index)
            throw new SaeSharpException($"{method}: input is on {x.device} but the SAE's weights are on {W_dec.device}");
        var rows = x.dim() == 2 ? x.alias() : x.reshape(-1, width);
        return rows.dtype == W_dec.dtype ? rows : rows.to(W_dec.dtype);
    }

    /// <summary>The reconstruction of <paramref name="x"/> [..., d_in] as [..., d_out] (in x's scale for layer-norm SAEs).</summary>
    public override Tensor forward(Tensor x)
    {
        using var scope = NewDisposeScope();
        var rows = AsRows(x);
        var y = Reconstruct(Encode(rows), rows);
        return y.reshape(LeadingShape(x, Cfg.DOutOrIn)).MoveToOuterDisposeScope();
    }

    /// <summary>Reconstruction and feature activations in one pass. Any leading dimensions ([batch, pos, d_in] from a
    /// hook) are kept: the results are [..., d_out] and [..., d_sae].</summary>
    public virtual (Tensor SaeOut, Tensor FeatureActs) Run(Tensor x)
    {
        using var scope = NewDisposeScope();
        var rows = AsRows(x);
        var f = Encode(rows);
        var y = Reconstruct(f, rows);
        return (y.reshape(LeadingShape(x, Cfg.DOutOrIn)).MoveToOuterDisposeScope(),
                f.reshape(LeadingShape(x, Cfg.DSae)).MoveToOuterDisposeScope());
    }

    /// <summary>A disposed input or a disposed SAE named as such (TorchSharp says only "Tensor invalid -- empty handle").</summary>
    private void CheckLive(Tensor x, string method)
    {
        ThrowIfDisposed();
        if (x.IsInvalid) throw new SaeSharpException($"{method}: the input tensor has been disposed");
    }

    /// <summary>An <see cref="ObjectDisposedException"/> naming the architecture once the SAE has been disposed (its weights freed).</summary>
    internal void ThrowIfDisposed() => ObjectDisposedException.ThrowIf(W_dec.IsInvalid, this);

    private Tensor AsRows(Tensor x)
    {
        ArgumentNullException.ThrowIfNull(x);
        CheckLive(x, "SAE forward");
        if (x.dim() == 0 || x.shape[^1] != Cfg.DIn)
            throw new SaeSharpException($"SAE input has shape [{string.Join(", ", x.shape)}]; its last dimension must be d_in={Cfg.DIn}");
        return x.dim() == 2 ? x.alias() : x.reshape(-1, Cfg.DIn);
    }

    private static long[] LeadingShape(Tensor x, long last) => [.. x.shape[..^1], last];

    /// <summary>Training form: loss (with its named parts), reconstruction and feature activations. Architectures build
    /// their latents on an execution path (dense float32, sparse, bfloat16: <see cref="TrainingLatents"/>) and write their
    /// loss once over them with <see cref="MseLoss"/> and <see cref="WeightedSparsity"/>.</summary>
    public abstract SaeTrainOutput TrainingForward(Tensor x, Tensor target, SaeTrainContext ctx);

    /// <summary>Whether the last <see cref="TrainingForward"/> built large torch operations into the loss's graph, whose
    /// backward the trainer then runs with torch's full thread count (<see cref="Kernels.RowRanges.ParallelTorch"/>).</summary>
    internal virtual bool TorchHeavyBackward => false;

    /// <summary>Whether a training step's large work runs in SaeSharp's CPU kernels and its own torch operations are
    /// small, so that the step can run under <see cref="Kernels.RowRanges.SerialTorch"/> (the TopK family without
    /// autocast, on the CPU; a ReLU SAE once its sparse pass has taken over).</summary>
    internal virtual bool SmallTorchSteps => false;

    /// <summary>Whether the training loss weighs a sparsity penalty by λ = <see cref="SaeTrainingOptions.SparsityCoefficient"/>
    /// (<see cref="WeightedSparsity"/>): the trainer logs λ·s as <c>sparsity_coefficient</c> (SAELens's
    /// <c>details/current_l1_coefficient</c>) for these architectures only.</summary>
    internal virtual bool WeighsSparsityPenalty => false;

    /// <summary>SAELens's <c>mse_loss</c>: ‖ŷ − y‖² summed over d_out, averaged over rows.</summary>
    private protected static Tensor MseLoss(Tensor saeOut, Tensor target) => (saeOut - target).pow(TorchScalars.Of(2)).sum(-1).mean();

    /// <summary>A sparsity penalty as it enters the loss: penalty·(λ·s), with λ = <see cref="SaeTrainingOptions.SparsityCoefficient"/>
    /// and s = <see cref="SaeTrainContext.SparsityScale"/> (the trainer's λ warm-up).</summary>
    private protected Tensor WeightedSparsity(Tensor penalty, SaeTrainContext ctx)
    {
        using var weight = (Training.SparsityCoefficient * ctx.SparsityScale).ToScalar();
        return penalty * weight;
    }

    /// <summary>Called after backward, before the optimizer step (e.g. removing the gradient parallel to decoder rows).</summary>
    public virtual void BeforeOptimizerStep(SaeTrainContext ctx) { }

    /// <summary>Called after the optimizer step (e.g. renormalising decoder rows, updating a threshold estimate).</summary>
    public virtual void AfterOptimizerStep(SaeTrainContext ctx) { }

    /// <summary>
    /// Random initialisation: decoder rows in random directions with norm <paramref name="decoderNorm"/>,
    /// <c>W_enc = W_decᵀ</c> (none for a tied architecture), biases zero. Architectures with more parameters extend it. The draws are made on the CPU
    /// (where <paramref name="generator"/> lives) and copied to the SAE's device, so a seed gives the same SAE on every device.
    /// </summary>
    public virtual void InitializeWeights(Generator? generator = null, double decoderNorm = 0.1)
    {
        using var _ = no_grad();
        using var scope = NewDisposeScope();
        var w = randn(Cfg.DSae, Cfg.DOutOrIn, generator: generator, device: CPU);
        using var decoderNormScalar = decoderNorm.ToScalar();
        w = w / w.norm(1, keepdim: true) * decoderNormScalar;
        W_dec.copy_(w);
        // A tied architecture (matching_pursuit) has no encoder weights of its own: its encoder is W_decᵀ.
        if (HasEncoderWeights)
        {
            if (Cfg.DOutOrIn == Cfg.DIn) W_enc.copy_(w.t());
            else InitializeEncoderIndependently(generator, decoderNorm);
        }
        b_enc?.fill_(TorchScalars.Of(0));
        b_dec.fill_(TorchScalars.Of(0));
        W_skip?.fill_(TorchScalars.Of(0));
    }

    /// <summary>W_enc columns in random directions with norm <paramref name="norm"/>, drawn from
    /// <paramref name="generator"/> (instead of <c>W_enc = W_decᵀ</c>).</summary>
    public void InitializeEncoderIndependently(Generator? generator, double norm)
    {
        RequireEncoderWeights();
        using var _ = no_grad();
        using var scope = NewDisposeScope();
        var e = randn(Cfg.DIn, Cfg.DSae, generator: generator, device: CPU);
        using var normScalar = norm.ToScalar();
        W_enc.copy_(e / e.norm(0, keepdim: true) * normScalar);
    }

    /// <summary>
    /// Folds an input scale into the weights: the SAE trained on s_in·x (reconstructing s_out·y) becomes one that
    /// works on raw x and reconstructs raw y. W_enc ← s_in·W_enc, W_dec ← W_dec/s_out, b_dec ← b_dec/s_out
    /// (b_dec is subtracted from the scaled input, so it scales with it: SAELens #354 forgot it).
    /// Pre-activations, and so thresholds and feature activations, are unchanged. A skip transcoder's W_skip ← W_skip·s_in/s_out
    /// (the skip term maps the scaled input to the scaled target).
    /// </summary>
    public virtual void FoldActivationScale(double scaleIn, double scaleOut)
    {
        if (Cfg.ApplyBDecToInput && Math.Abs(scaleIn - scaleOut) > 1e-12 * Math.Abs(scaleIn))
            throw new SaeSharpException("apply_b_dec_to_input needs the same scale for input and target");
        using var _ = no_grad();
        using var scaleInScalar = scaleIn.ToScalar();
        using var scaleOutScalar = scaleOut.ToScalar();
        W_enc.mul_(scaleInScalar);
        W_dec.div_(scaleOutScalar);
        b_dec.div_(scaleOutScalar);
        if (W_skip is not null)
        {
            using var ratio = (scaleIn / scaleOut).ToScalar();
            W_skip.mul_(ratio);
        }
    }

    /// <summary>Scales decoder rows to unit norm, scaling encoder columns by the inverse so the SAE's function is unchanged
    /// for ReLU-type encoders. With <paramref name="compensateEncoder"/> false, only W_dec is normalised.</summary>
    public void NormalizeDecoderRows(bool compensateEncoder = false)
    {
        using var _ = no_grad();
        using var scope = NewDisposeScope();
        var norms = W_dec.norm(1, keepdim: true).clamp_min(TorchScalars.Of(1e-8));
        if (compensateEncoder) RequireEncoderWeights();     // before anything changes
        W_dec.div_(norms);
        if (compensateEncoder)
        {
            W_enc.mul_(norms.t());
            b_enc?.mul_(norms.squeeze(1));
        }
    }

    /// <summary>
    /// SAELens's <c>fold_W_dec_norm</c>: each decoder row is scaled to unit norm and its latent's encoder column and
    /// per-latent encoder parameters (<see cref="LatentScaledParameters"/>: b_enc; also threshold for JumpReLU; b_gate and
    /// b_mag for gated) are multiplied by the row's former norm. Reconstructions are unchanged and feature j's activation is
    /// multiplied by ‖W_dec[j]‖, so activations compare across latents. TopK-family SAEs refuse it, as SAELens does: scaling
    /// the pre-activations by different norms changes which latents are selected. A zero decoder row stays zero.
    /// </summary>
    public virtual void FoldWDecNorm() => FoldDecoderNorms();

    /// <summary>Whether the training form holds the decoder rows at unit norm after every optimiser step (relu's, the TopK
    /// family's unless rescale_acts_by_decoder_norm is false, and JumpReLU's), so that a saved SAE it starts from first has its decoder norms folded
    /// (<see cref="FoldDecoderNorms"/>).</summary>
    internal virtual bool TrainsUnitNormDecoderRows => false;

    /// <summary>The fold of <see cref="FoldWDecNorm"/>, also for the TopK family, where it keeps the function only when every
    /// decoder row has the same norm (a saved SAE whose activation scale was folded in).</summary>
    internal void FoldDecoderNorms()
    {
        using var _ = no_grad();
        using var scope = NewDisposeScope();
        var norms = W_dec.norm(1);
        var safe = norms.clamp_min(TorchScalars.Of(1e-30));
        W_dec.div_(safe.unsqueeze(1));
        W_enc.mul_(norms.unsqueeze(0));
        foreach (var p in LatentScaledParameters()) p.mul_(norms);
    }

    /// <summary>The [d_sae] parameters <see cref="FoldWDecNorm"/> scales with the encoder columns: those the pre-activation
    /// or its comparison threshold carries per latent.</summary>
    protected virtual IEnumerable<Parameter> LatentScaledParameters() => b_enc is null ? [] : [b_enc];

    /// <summary>Removes from W_dec's gradient the component parallel to each decoder row (Towards Monosemanticity).</summary>
    public void RemoveGradientParallelToDecoderRows()
    {
        using var scope = NewDisposeScope();  // grad is a new wrapper at each read
        var g = W_dec.grad;
        if (g is null) return;
        using var _ = no_grad();
        if (SparseKernels.RemoveParallelRows(g, W_dec)) return;
        var unit = W_dec / W_dec.norm(1, keepdim: true).clamp_min(TorchScalars.Of(1e-8));
        var parallel = (g * unit).sum(1, keepdim: true) * unit;
        g.sub_(parallel);
    }

    /// <summary>Adam (β1, β2) the architecture's reference trainer uses (see each architecture's doc comment).</summary>
    public virtual (double Beta1, double Beta2) DefaultAdamBetas => (0.9, 0.999);

    /// <summary>Learning rate the architecture's reference trainer uses for <see cref="Cfg"/>.</summary>
    public virtual double DefaultLearningRate() => 5e-5;

    /// <summary>Whether the Towards Monosemanticity dead-latent resampling applies (a ReLU encoder with b_enc).</summary>
    public virtual bool SupportsResampling => false;

    /// <summary>Gao et al. (2024) learning-rate scaling used by dictionary_learning's TopK-family trainers:
    /// 2e-4 / sqrt(d_sae / 2^14).</summary>
    public static double ScaledTopKLearningRate(int dSae) => 2e-4 / Math.Sqrt(dSae / 16384.0);

    /// <summary>
    /// The SAE to save for inference. Most architectures return themselves; BatchTopK-family SAEs return a JumpReLU SAE
    /// with a per-latent <c>threshold</c>, as SAELens v6 saves them.
    /// </summary>
    public virtual Sae ToInferenceSae() => this;

    /// <summary>The learnable tensors and persistent buffers by SAELens name.</summary>
    public Dictionary<string, Tensor> WeightsByName() =>
        state_dict().ToDictionary(kv => kv.Key, kv => kv.Value, StringComparer.Ordinal);
}
