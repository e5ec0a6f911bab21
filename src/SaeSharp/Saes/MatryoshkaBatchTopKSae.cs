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
/// "inner_mse_loss_{width}" for inner prefixes and "mse_loss" for the full width. AuxK uses the full-width residual.
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

    internal override (Tensor SaeOut, Tensor Loss) ReconstructionLoss(SparseCode code, Tensor vals, Tensor target, Dictionary<string, Tensor> losses)
    {
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
            using var loScalar = lo.ToScalar();
            using var hiScalar = hi.ToScalar();
            var sel = code.Cols.ge(loScalar).logical_and_(code.Cols.lt(hiScalar)).nonzero().squeeze(1);
            var group = new SparseCode(code.Rows.index_select(0, sel), code.Cols.index_select(0, sel), code.RowCount);
            y = y.add(SparseLatents.Decode(vals.index_select(0, sel), group, W_dec), TorchScalars.One);
            var mse = MseLoss(y, target);
            losses[i == widths.Count - 1 ? "mse_loss" : $"inner_mse_loss_{hi}"] = mse;
            using var weight = (weights?[i] ?? 1.0).ToScalar();
            var term = mse * weight;
            loss = loss is null ? term : loss.add(term, TorchScalars.One);
            lo = hi;
        }
        return (y, loss!);
    }
}
