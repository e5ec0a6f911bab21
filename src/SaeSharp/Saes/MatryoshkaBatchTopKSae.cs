using SaeSharp.Kernels;
using TorchSharp;
using static TorchSharp.torch;

namespace SaeSharp.Saes;

/// <summary>
/// Matryoshka BatchTopK SAE ("matryoshka_batchtopk", Bussmann et al. 2025). <c>matryoshka_widths</c> are cumulative prefix
/// sizes ending at d_sae. The activations are the BatchTopK ones over all latents (dictionary_learning's
/// <c>MatryoshkaBatchTopKTrainer</c>; SAELens instead reruns BatchTopK on each prefix); prefix i reconstructs on its own,
/// ŷ_i = b_dec + Σ_{latents &lt; width_i} f·W_dec, and the reconstruction loss is Σ_i w_i·mean_n‖y − ŷ_i‖² with
/// w = <see cref="SaeTrainingOptions.MatryoshkaLossWeights"/> (default 1 for every prefix, SAELens's weighting;
/// dictionary_learning's group_weights g reproduce with w_i = g_i / number of groups). The loss parts are logged as
/// "inner_mse_loss_{width}" for inner prefixes and "mse_loss" for the full width. AuxK uses the full-width residual; with
/// <see cref="SaeTrainingOptions.UseMatryoshkaAuxLoss"/> (SAELens 6.37's <c>use_matryoshka_aux_loss</c>) it is instead the sum
/// over levels i of the AuxK term of level i's dead latents (those in [width_{i−1}, width_i)) on the residual y − ŷ_i of
/// the prefix through level i, each with k_aux = min(d_in/2, the level's dead count), as SAELens's
/// <c>calculate_matryoshka_aux_loss</c>; each term is SaeSharp's AuxK (normalised, ReLU'd, no dead-fraction scale,
/// <see cref="TopKFamilySae"/>), as the single term is.
/// Inference, threshold and saving are those of <see cref="BatchTopKSae"/>.
/// </summary>
public sealed class MatryoshkaBatchTopKSae : BatchTopKSae
{
    /// <summary>The registry entry of "matryoshka_batchtopk" (also read as "matryoshka").</summary>
    public static new SaeArchitecture Descriptor { get; } = new()
    {
        Name = SaeArchitectures.MatryoshkaBatchTopK,
        Aliases = ["matryoshka"],
        Create = c => new MatryoshkaBatchTopKSae(c),
        NeedsK = true,
        Validate = ValidateWidths,
    };

    private static void ValidateWidths(SaeConfig cfg, string source)
    {
        var widths = cfg.MatryoshkaWidths;
        if (widths is null || widths.Length == 0)
            throw new SaeSharpException($"{source}: matryoshka_batchtopk needs matryoshka_widths");
        for (int i = 0; i < widths.Length; i++)
        {
            if (widths[i] <= 0 || (i > 0 && widths[i] <= widths[i - 1]))
                throw new SaeSharpException($"{source}: matryoshka_widths must be positive and strictly increasing, got [{string.Join(", ", widths)}]");
        }
        if (widths[^1] != cfg.DSae)
            throw new SaeSharpException($"{source}: the last matryoshka width must equal d_sae={cfg.DSae}, got {widths[^1]}");
    }

    /// <summary>A Matryoshka BatchTopK SAE of shape <paramref name="cfg"/> (zero weights; <c>k</c> and <c>matryoshka_widths</c> required).</summary>
    public MatryoshkaBatchTopKSae(SaeConfig cfg) : base(cfg)
    {
    }

    /// <summary>Cumulative prefix widths (cfg.json <c>matryoshka_widths</c>); the last is d_sae.</summary>
    public IReadOnlyList<int> Widths => Cfg.MatryoshkaWidths!;

    /// <summary>The prefix reconstructions ŷ_i of the step's <see cref="ReconstructionLoss"/>, for the per-level AuxK.</summary>
    private readonly List<Tensor> _prefixOutputs = [];

    internal override (Tensor SaeOut, Tensor Loss) ReconstructionLoss(SparseCode code, Tensor vals, Tensor target, Dictionary<string, Tensor> losses)
    {
        _prefixOutputs.Clear();
        var widths = Widths;
        var weights = Training.MatryoshkaLossWeights;
        if (weights is not null && weights.Length != widths.Count)
            throw new SaeSharpException($"MatryoshkaLossWeights has {weights.Length} entries, matryoshka_widths has {widths.Count}");
        Tensor y = b_dec.unsqueeze(0);
        Tensor? loss = null;
        long lo = 0;
        for (int i = 0; i < widths.Count; i++)
        {
            long hi = widths[i];
            var sel = InLevel(code.Cols, lo, hi);
            var group = new SparseCode(code.Rows.index_select(0, sel), code.Cols.index_select(0, sel), code.RowCount);
            y = y.add(SparseLatents.Decode(vals.index_select(0, sel), group, W_dec), TorchScalars.One);
            if (Training.UseMatryoshkaAuxLoss) _prefixOutputs.Add(y);
            var mse = MseLoss(y, target);
            losses[i == widths.Count - 1 ? "mse_loss" : $"inner_mse_loss_{hi}"] = mse;
            using var weight = (weights?[i] ?? 1.0).ToScalar();
            var term = mse * weight;
            loss = loss is null ? term : loss.add(term, TorchScalars.One);
            lo = hi;
        }
        return (y, loss!);
    }

    internal override Tensor AuxiliaryLoss(Tensor x, Tensor target, Tensor y, Tensor deadIdx, Tensor? deadPre, Tensor? encT, (Tensor Rows, Tensor Local, Tensor Values)? chosen)
    {
        if (!Training.UseMatryoshkaAuxLoss) return base.AuxiliaryLoss(x, target, y, deadIdx, deadPre, encT, chosen);
        using var scope = NewDisposeScope();
        var widths = Widths;
        if (_prefixOutputs.Count != widths.Count) throw new InvalidOperationException("the per-level AuxK needs the prefix reconstructions of this step");
        Tensor? total = null;
        long lo = 0;
        for (int i = 0; i < widths.Count; i++)
        {
            long hi = widths[i];
            var levelDead = deadIdx.index_select(0, InLevel(deadIdx, lo, hi));
            lo = hi;
            if (levelDead.shape[0] == 0) continue;
            Tensor levelPre;
            using (no_grad())
                levelPre = addmm(BEnc.detach().index_select(0, levelDead), EncoderInput(x), W_enc.detach().index_select(1, levelDead), 1, 1);
            var term = AuxKLoss(x, target, _prefixOutputs[i], levelDead, levelPre);
            total = total is null ? term : total.add(term, TorchScalars.One);
        }
        _prefixOutputs.Clear();
        return (total ?? zeros(1, dtype: x.dtype, device: x.device).squeeze(0)).MoveToOuterDisposeScope();
    }

    /// <summary>Positions of the latent indices <paramref name="latents"/> that lie in the level [lo, hi).</summary>
    private static Tensor InLevel(Tensor latents, long lo, long hi)
    {
        using var loScalar = lo.ToScalar();
        using var hiScalar = hi.ToScalar();
        return latents.ge(loScalar).logical_and_(latents.lt(hiScalar)).nonzero().squeeze(1);
    }
}
