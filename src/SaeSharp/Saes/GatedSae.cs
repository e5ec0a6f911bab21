using SaeSharp.Kernels;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace SaeSharp.Saes;

/// <summary>
/// Gated SAE ("gated", Rajamanoharan et al. 2024), matching SAELens's <c>GatedSAE</c>/<c>GatedTrainingSAE</c>: parameters
/// W_enc, b_gate, r_mag, b_mag, W_dec, b_dec (no b_enc). With x̃ = x − b_dec:
/// π_gate = x̃·W_enc + b_gate, π_mag = x̃·(W_enc ⊙ exp(r_mag)) + b_mag, f = [π_gate &gt; 0]·ReLU(π_mag).
/// Training loss (SAELens): mean_n‖y − ŷ‖² + λ·s·mean_n Σ_j ReLU(π_gate)_j·‖W_dec[j]‖
/// + mean_n‖y − (ReLU(π_gate)·W_dec + b_dec)‖². SAELens keeps the decoder's gradient in that auxiliary reconstruction;
/// the paper and dictionary_learning stop it (W_dec, b_dec detached): <see cref="SaeTrainingOptions.GatedAuxDetachDecoder"/>.
/// No decoder-norm constraint (the L1 is weighted by the row norms). Adam β = (0, 0.999), lr 5e-5 (dictionary_learning's
/// Gated trainer, after the paper). <see cref="SaeTrainingOptions.Autocast"/> trains with bfloat16 matmuls, ReLUs and gate.
/// </summary>
public sealed class GatedSae : Sae
{
    internal override bool WeighsSparsityPenalty => true;

    /// <summary>The registry entry of "gated".</summary>
    public static SaeArchitecture Descriptor { get; } = new() { Name = SaeArchitectures.Gated, Create = c => new GatedSae(c) };

#pragma warning disable IDE1006 // field names are the state_dict keys
    private readonly Parameter b_gate;
    private readonly Parameter r_mag;
    private readonly Parameter b_mag;
#pragma warning restore IDE1006

    /// <summary>A gated SAE of shape <paramref name="cfg"/> (zero weights).</summary>
    public GatedSae(SaeConfig cfg) : base(cfg, hasEncoderBias: false)
    {
        b_gate = nn.Parameter(zeros(cfg.DSae));
        r_mag = nn.Parameter(zeros(cfg.DSae));
        b_mag = nn.Parameter(zeros(cfg.DSae));
        RegisterComponents();
    }

    /// <summary><c>b_gate</c> [d_sae]: the gate path's bias.</summary>
    public Parameter BGate => b_gate;
    /// <summary><c>r_mag</c> [d_sae]: log-scale of the magnitude path's encoder columns (W_enc ⊙ exp(r_mag)).</summary>
    public Parameter RMag => r_mag;
    /// <summary><c>b_mag</c> [d_sae]: the magnitude path's bias.</summary>
    public Parameter BMag => b_mag;

    /// <inheritdoc/>
    /// <remarks>r_mag is not scaled: the magnitude path's W_enc·exp(r_mag) scales with W_enc (SAELens).</remarks>
    protected override IEnumerable<Parameter> LatentScaledParameters() => [b_gate, b_mag];

    /// <inheritdoc/>
    public override (double Beta1, double Beta2) DefaultAdamBetas => (0.0, 0.999);

    /// <inheritdoc/>
    public override double DefaultLearningRate() => 5e-5;

    /// <summary>Gate pre-activations π_gate [N, d_sae].</summary>
    public Tensor GatePre(Tensor x)
    {
        using var scope = NewDisposeScope();
        return EncoderMatmul(x, b_gate, W_enc).MoveToOuterDisposeScope();
    }

    /// <summary>Magnitude pre-activations π_mag [N, d_sae] (SAELens's hidden_pre for gated SAEs).</summary>
    public override Tensor HiddenPre(Tensor x)
    {
        using var scope = NewDisposeScope();
        return EncoderMatmul(x, b_mag, W_enc * r_mag.exp()).MoveToOuterDisposeScope();
    }

    /// <inheritdoc/>
    public override Tensor Encode(Tensor x) => EncodeRows(x);

    /// <summary>ReLU of the magnitude pre-activations where the gate pre-activation of x is positive.</summary>
    public override Tensor Activate(Tensor pre, Tensor x)
    {
        using var scope = NewDisposeScope();
        var active = GatePre(x).gt(TorchScalars.Of(0)).to(pre.dtype);
        return (active * nn.functional.relu(pre)).MoveToOuterDisposeScope();
    }

    /// <summary>The loss of the class comment, written once: the activations f and ReLU(π_gate) come from the execution
    /// path (<see cref="TrainingLatentsOf"/>).</summary>
    public override SaeTrainOutput TrainingForward(Tensor x, Tensor target, SaeTrainContext ctx)
    {
        using var scope = NewDisposeScope();
        var (f, gateAct) = TrainingLatentsOf(x);
        var y = f.Decode(W_dec, b_dec);
        var mse = MseLoss(y, target);
        var wDec = Training.GatedAuxDetachDecoder ? W_dec.detach() : (Tensor)W_dec;
        var bDec = Training.GatedAuxDetachDecoder ? b_dec.detach() : (Tensor)b_dec;
        var (viaGate, l1) = gateAct.DecodeWithL1(wDec, bDec, W_dec.norm(1));
        var aux = MseLoss(viaGate, target);
        var loss = mse.add(WeightedSparsity(l1, ctx), TorchScalars.One).add(aux, TorchScalars.One);
        return f.ToOutput(loss, y, new() { ["mse_loss"] = mse, ["l1_loss"] = l1, ["auxiliary_reconstruction_loss"] = aux });
    }

    /// <summary>The execution path (see <see cref="TrainingLatents"/>): the feature activations f and the gate's ReLU(π_gate),
    /// dense float32, or with <see cref="SaeTrainingOptions.Autocast"/> from one bfloat16 encoder product for both paths
    /// with fused affine ReLUs and gate (<see cref="Bf16Autograd"/>).</summary>
    private (TrainingLatents F, TrainingLatents GateAct) TrainingLatentsOf(Tensor x)
    {
        if (!AutocastKernels)
        {
            var piGate = GatePre(x);
            var f = nn.functional.relu(HiddenPre(x)) * piGate.gt(TorchScalars.Of(0));
            return (new DenseTrainingLatents(f), new DenseTrainingLatents(nn.functional.relu(piGate)));
        }
        // One encoder product P = x̃·W_enc serves both paths: π_mag = x̃·(W_enc ⊙ exp(r_mag)) + b_mag = P·exp(r_mag) + b_mag.
        var p = EncoderMatmulBf16(x, zeros(Cfg.DSae, dtype: W_enc.dtype, device: W_enc.device), W_enc);
        var gateAct = Bf16Autograd.AffineRelu(p, ones(Cfg.DSae, dtype: W_enc.dtype, device: W_enc.device), b_gate);
        var magAct = Bf16Autograd.AffineRelu(p, r_mag.exp(), b_mag);
        return (new Bf16TrainingLatents(Bf16Autograd.Gate(magAct, gateAct)), new Bf16TrainingLatents(gateAct));
    }

    /// <summary>Base initialisation (decoder rows of norm <paramref name="decoderNorm"/>, W_enc = W_decᵀ) with b_gate, r_mag, b_mag zero.</summary>
    public override void InitializeWeights(Generator? generator = null, double decoderNorm = 0.1)
    {
        base.InitializeWeights(generator, decoderNorm);
        using var _ = no_grad();
        b_gate.fill_(TorchScalars.Of(0));
        r_mag.fill_(TorchScalars.Of(0));
        b_mag.fill_(TorchScalars.Of(0));
    }
}
