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
#pragma warning disable IDE1006 // field names are the state_dict keys
    private readonly Parameter b_gate;
    private readonly Parameter r_mag;
    private readonly Parameter b_mag;
#pragma warning restore IDE1006

    public GatedSae(SaeConfig cfg) : base(cfg, hasEncoderBias: false)
    {
        b_gate = nn.Parameter(zeros(cfg.DSae));
        r_mag = nn.Parameter(zeros(cfg.DSae));
        b_mag = nn.Parameter(zeros(cfg.DSae));
        RegisterComponents();
    }

    public Parameter BGate => b_gate;
    public Parameter RMag => r_mag;
    public Parameter BMag => b_mag;

    public override (double Beta1, double Beta2) DefaultAdamBetas => (0.0, 0.999);

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

    public override Tensor Encode(Tensor x)
    {
        using var scope = NewDisposeScope();
        return Activate(HiddenPre(x), x).MoveToOuterDisposeScope();
    }

    /// <summary>ReLU of the magnitude pre-activations where the gate pre-activation of x is positive.</summary>
    public override Tensor Activate(Tensor pre, Tensor x)
    {
        using var scope = NewDisposeScope();
        var active = GatePre(x).gt(0).to(pre.dtype);
        return (active * nn.functional.relu(pre)).MoveToOuterDisposeScope();
    }

    public override SaeTrainOutput TrainingForward(Tensor x, Tensor target, SaeTrainContext ctx)
    {
        using var scope = NewDisposeScope();
        if (Training.Autocast) return AutocastTrainingForward(x, target, ctx);
        var piGate = GatePre(x);
        var f = nn.functional.relu(HiddenPre(x)) * piGate.gt(0);
        var y = Decode(f);
        var mse = (y - target).pow(2).sum(-1).mean();
        var gateAct = nn.functional.relu(piGate);
        var l1 = gateAct.matmul(W_dec.norm(1)).mean();
        var wDec = Training.GatedAuxDetachDecoder ? W_dec.detach() : (Tensor)W_dec;
        var bDec = Training.GatedAuxDetachDecoder ? b_dec.detach() : (Tensor)b_dec;
        var viaGate = addmm(bDec, gateAct, wDec, 1, 1);
        var aux = (viaGate - target).pow(2).sum(-1).mean();
        var loss = mse + l1 * (Training.SparsityCoefficient * ctx.SparsityScale) + aux;
        return new SaeTrainOutput
        {
            Loss = loss.MoveToOuterDisposeScope(),
            SaeOut = y.MoveToOuterDisposeScope(),
            FeatureActs = f.MoveToOuterDisposeScope(),
            Losses =
            {
                ["mse_loss"] = mse.detach().MoveToOuterDisposeScope(),
                ["l1_loss"] = l1.detach().MoveToOuterDisposeScope(),
                ["auxiliary_reconstruction_loss"] = aux.detach().MoveToOuterDisposeScope(),
            },
        };
    }

    /// <summary>The training pass with <see cref="SaeTrainingOptions.Autocast"/>: one bfloat16 encoder product for both
    /// paths, fused affine ReLUs, gate and decoders (<see cref="Bf16Autograd"/>); the L1 term is the auxiliary decoder's extra
    /// output column ReLU(π_gate)·‖W_dec‖.
    /// Called inside <see cref="TrainingForward"/>'s dispose scope.</summary>
    private SaeTrainOutput AutocastTrainingForward(Tensor x, Tensor target, SaeTrainContext ctx)
    {
        // One encoder product P = x̃·W_enc serves both paths: π_mag = x̃·(W_enc ⊙ exp(r_mag)) + b_mag = P·exp(r_mag) + b_mag.
        var p = EncoderMatmulBf16(x, zeros(Cfg.DSae, dtype: W_enc.dtype), W_enc);
        var gateAct = Bf16Autograd.AffineRelu(p, ones(Cfg.DSae, dtype: W_enc.dtype), b_gate);
        var magAct = Bf16Autograd.AffineRelu(p, r_mag.exp(), b_mag);
        var f = Bf16Autograd.Gate(magAct, gateAct);
        var y = Bf16Autograd.Decoder(f, W_dec, b_dec);
        var mse = (y - target).pow(2).sum(-1).mean();
        var wDec = Training.GatedAuxDetachDecoder ? W_dec.detach() : (Tensor)W_dec;
        var bDec = Training.GatedAuxDetachDecoder ? b_dec.detach() : (Tensor)b_dec;
        long dOut = Cfg.DOutOrIn;
        var ext = Bf16Autograd.Decoder(gateAct, cat([wDec, W_dec.norm(1).unsqueeze(1)], 1), cat([bDec, zeros(1, dtype: bDec.dtype)], 0));
        var l1 = ext.select(1, dOut).mean();
        var aux = (ext.narrow(1, 0, dOut) - target).pow(2).sum(-1).mean();
        var loss = mse + l1 * (Training.SparsityCoefficient * ctx.SparsityScale) + aux;
        var fd = f.detach().MoveToOuterDisposeScope();
        return new SaeTrainOutput
        {
            Loss = loss.MoveToOuterDisposeScope(),
            SaeOut = y.MoveToOuterDisposeScope(),
            FeatureActsFactory = () => fd.to(ScalarType.Float32),
            ActiveCounts = Bf16Kernels.PositiveCounts(fd).MoveToOuterDisposeScope(),
            Losses =
            {
                ["mse_loss"] = mse.detach().MoveToOuterDisposeScope(),
                ["l1_loss"] = l1.detach().MoveToOuterDisposeScope(),
                ["auxiliary_reconstruction_loss"] = aux.detach().MoveToOuterDisposeScope(),
            },
        };
    }

    /// <summary>Base initialisation (decoder rows of norm <paramref name="decoderNorm"/>, W_enc = W_decᵀ) with b_gate, r_mag, b_mag zero.</summary>
    public override void InitializeWeights(Generator? generator = null, double decoderNorm = 0.1)
    {
        base.InitializeWeights(generator, decoderNorm);
        using var _ = no_grad();
        b_gate.zero_();
        r_mag.zero_();
        b_mag.zero_();
    }
}
