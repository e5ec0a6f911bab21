using System.Text.Json;
using System.Text.Json.Serialization;

namespace SaeSharp.Saes;

/// <summary>Sparsity penalty of ReLU-type SAEs.</summary>
public enum SparsityPenalty
{
    /// <summary>λ·Σ|f| (Towards Monosemanticity, with unit-norm decoder rows).</summary>
    L1,
    /// <summary>λ·Σ|f|·‖W_dec row‖ (Anthropic's April 2024 update, no norm constraint).</summary>
    L1DecoderNorm,
    /// <summary>λ·entropy of the normalised feature activations (dictionary_learning's experiment).</summary>
    Entropy,
}

/// <summary>JumpReLU sparsity loss.</summary>
public enum JumpReluPenalty
{
    /// <summary>λ·L0 (Rajamanoharan et al. 2024).</summary>
    L0,
    /// <summary>λ·(L0/target − 1)² (dictionary_learning's JumpReluTrainer).</summary>
    TargetL0,
}

/// <summary>Training hyperparameters of the architectures' training forms. Defaults follow the papers and peers. In
/// checkpoints (<see cref="JsonOptions"/>) the fields are snake_case, under SAELens's names where SAELens has the field.</summary>
public sealed class SaeTrainingOptions
{
    /// <summary>snake_case field names, enum values as strings.</summary>
    public static readonly JsonSerializerOptions JsonOptions = new()
    {
        PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower,
        Converters = { new JsonStringEnumConverter() },
    };

    /// <summary>Sparsity coefficient λ (L1, L0 or entropy, by architecture).</summary>
    [JsonPropertyName("l1_coefficient")] public double SparsityCoefficient { get; set; } = 5.0;
    /// <summary>Sparsity penalty of the ReLU SAE (relu: L1; relu-april: L1 weighted by decoder norms).</summary>
    public SparsityPenalty Penalty { get; set; } = SparsityPenalty.L1;
    /// <summary>SAELens's <c>lp_norm</c> p of the ReLU SAE's sparsity term: mean_n ‖f_n ⊙ w‖_p (w the decoder-row norms
    /// for <see cref="SparsityPenalty.L1DecoderNorm"/>, else 1); 1 (default) is the L1 term of <see cref="Penalty"/>.</summary>
    [JsonPropertyName("lp_norm")] public double LpNorm { get; set; } = 1;
    /// <summary>AuxK coefficient for TopK-family SAEs (Gao et al.: 1/32).</summary>
    [JsonPropertyName("aux_loss_coefficient")] public double AuxKCoefficient { get; set; } = 1.0 / 32;
    /// <summary>Dead latents used by AuxK; null means d_in/2.</summary>
    public int? KAux { get; set; }
    /// <summary>JumpReLU straight-through bandwidth ε.</summary>
    [JsonPropertyName("jumprelu_bandwidth")] public double Bandwidth { get; set; } = 0.001;
    /// <summary>JumpReLU initial threshold.</summary>
    [JsonPropertyName("jumprelu_init_threshold")] public double InitialThreshold { get; set; } = 0.001;
    /// <summary>JumpReLU: coefficient of Anthropic's pre-activation loss on dead latents (SAELens's
    /// <c>pre_act_loss_coefficient</c>; null: off, as SAELens's default).</summary>
    public double? PreActLossCoefficient { get; set; }
    /// <summary>JumpReLU sparsity loss (L0, or dictionary_learning's target-L0 form).</summary>
    public JumpReluPenalty JumpReluPenalty { get; set; } = JumpReluPenalty.L0;
    /// <summary>Target L0 for <see cref="JumpReluPenalty.TargetL0"/> and for <see cref="AdaptToTargetL0"/>.</summary>
    public double TargetL0 { get; set; } = 20;
    /// <summary>Adapt <see cref="SparsityCoefficient"/> during training so that the L0 ends near <see cref="TargetL0"/>
    /// (<c>--target-l0</c>; the trainer's controller, see SaeSharp.Training.TargetL0Control).</summary>
    public bool AdaptToTargetL0 { get; set; }
    /// <summary>State of the <c>--target-l0</c> controller: the smoothed log(L0 + ½) (null before its first step) and
    /// its smoothed per-step change (SaeSharp.Training.TargetL0Control).</summary>
    public double? TargetL0LogL0 { get; set; }
    /// <summary>See <see cref="TargetL0LogL0"/>.</summary>
    public double TargetL0LogL0Change { get; set; }
    /// <summary>Momentum β of the running BatchTopK inference-threshold estimate (dictionary_learning: 0.999).</summary>
    public double ThresholdMomentum { get; set; } = 0.999;
    /// <summary>Steps before the BatchTopK threshold starts being estimated.</summary>
    public long ThresholdStartStep { get; set; } = 1000;
    /// <summary>Gated: stop the decoder's gradient in the auxiliary reconstruction (the paper, dictionary_learning);
    /// false keeps it (SAELens).</summary>
    public bool GatedAuxDetachDecoder { get; set; }
    /// <summary>Matryoshka: weight of each prefix group's reconstruction loss; null means weight 1 for every prefix.</summary>
    public double[]? MatryoshkaLossWeights { get; set; }
    /// <summary>Matryoshka: SAELens 6.37's <c>use_matryoshka_aux_loss</c>. False (default, as SAELens): one AuxK term on the
    /// full width's residual over all dead latents. True: one AuxK term per matryoshka level, summed, in which the dead
    /// latents of that level alone reconstruct the residual of the prefix through that level (target − ŷ_level); a level
    /// without dead latents adds nothing (<see cref="MatryoshkaBatchTopKSae"/>).</summary>
    [JsonPropertyName("use_matryoshka_aux_loss")] public bool UseMatryoshkaAuxLoss { get; set; }
    /// <summary>TopK family: SAELens's <c>rescale_acts_by_decoder_norm</c>. True (default, SAELens's training default): the
    /// decoder rows are held at unit norm (parallel gradient removed, rows renormalised after each step), which is SAELens's
    /// rescaled TopK with its norms folded. False: plain TopK with free decoder rows, started at the run's
    /// <c>decoder_init_norm</c>, as SAELens trains it with false.</summary>
    [JsonPropertyName("rescale_acts_by_decoder_norm")] public bool RescaleActsByDecoderNorm { get; set; } = true;
    /// <summary>Run the training pass's dense matmuls in bfloat16 (SAELens's <c>autocast</c>): the weights, Adam state,
    /// gradients and losses stay float32 and the products accumulate in float32; only the matmul operands are rounded
    /// to bfloat16. Fast on CPUs with AVX512-BF16 or AMX (<see cref="Kernels.CpuFeatures.Bf16MatMul"/>); inference and
    /// evaluation always run in the weights' dtype. The accuracy cost is measured in BENCHMARKS.md.</summary>
    public bool Autocast { get; set; }
    /// <summary>TopK family: how the active latents are chosen. <see cref="Kernels.CandidatePass.Auto"/> (default) ranks
    /// them with the exact candidate pass (<see cref="Kernels.CandidateEncoder"/>: low-precision products with a proven
    /// error bound, the candidates recomputed in float32, the float32 selection) where it runs faster training steps than
    /// the plain encoder, as timed on this machine during the first steps of the run (<see cref="CandidatePassSwitch"/>);
    /// <see cref="Kernels.CandidatePass.On"/> always where a path exists;
    /// <see cref="Kernels.CandidatePass.Off"/> selects on plain float32 pre-activations (or, with <see cref="Autocast"/>,
    /// on bfloat16 ones, where near-ties can be chosen differently).</summary>
    public Kernels.CandidatePass CandidatePass { get; set; } = Kernels.CandidatePass.Auto;
    /// <summary>ReLU SAEs: the largest fraction of positive pre-activations at which a training step takes the sparse pass
    /// (0: always dense, 1: always sparse); null (default): chosen per step from measured costs
    /// (<see cref="StandardSae.SparseTrainingDensity"/>). Saved with checkpoints, so a resumed run keeps it.</summary>
    public double? SparsePassDensity { get; set; }
}
