using SaeSharp.Saes;

namespace SaeSharp.Training;

/// <summary>
/// The training recipes behind <c>sae train --arch</c>: an architecture plus the training options its paper uses.
/// <list type="bullet">
/// <item><c>relu</c>: ReLU + L1, Towards Monosemanticity (unit-norm decoder rows, parallel gradient removed, dead latents resampled).</item>
/// <item><c>relu-april</c>: ReLU + L1 weighted by decoder-row norms, no norm constraint (Anthropic, April 2024).</item>
/// <item><c>topk</c>, <c>batchtopk</c>, <c>matryoshka</c>: k active latents (per row, per batch, nested prefixes) with AuxK.</item>
/// <item><c>gated</c>, <c>jumprelu</c>: Rajamanoharan et al. 2024.</item>
/// </list>
/// </summary>
public static class SaeRecipes
{
    public static readonly IReadOnlyList<string> Names = ["relu", "relu-april", "standard", "topk", "batchtopk", "gated", "jumprelu", "matryoshka"];

    /// <summary>The cfg.json architecture of a recipe.</summary>
    public static string Architecture(string recipe) => recipe switch
    {
        "relu" or "relu-april" or "standard" => SaeArchitectures.Standard,
        "topk" => SaeArchitectures.TopK,
        "batchtopk" => SaeArchitectures.BatchTopK,
        "gated" => SaeArchitectures.Gated,
        "jumprelu" => SaeArchitectures.JumpReLU,
        "matryoshka" or "matryoshka_batchtopk" => SaeArchitectures.MatryoshkaBatchTopK,
        _ => throw new SaeSharpException($"unknown architecture '{recipe}' (choose from {string.Join(", ", Names)})"),
    };

    /// <summary>Default sparsity coefficient λ of a recipe, for inputs normalised to E‖x‖ = √d_in.</summary>
    public static double DefaultSparsityCoefficient(string recipe) => recipe switch
    {
        "relu" or "standard" => 5.0,
        "relu-april" => 5.0,
        "gated" => 5.0,
        "jumprelu" => 0.5,
        _ => 0.0,
    };

    /// <summary>Matryoshka prefix widths: d_sae/16, d_sae/8, d_sae/4, d_sae/2, d_sae (cumulative).</summary>
    public static int[] DefaultMatryoshkaWidths(int dSae)
    {
        var widths = new List<int>();
        for (int div = 16; div >= 1; div /= 2)
            if (dSae / div > 0 && (widths.Count == 0 || widths[^1] != dSae / div)) widths.Add(dSae / div);
        return widths.ToArray();
    }

    /// <summary>Creates an SAE (zero weights; the trainer initialises them) with the recipe's training options.</summary>
    public static Sae Create(string recipe, int dIn, int dSae, int? k = null, double? sparsityCoefficient = null,
        int? dOut = null, SaeMetadata? metadata = null, long? totalSteps = null)
    {
        string arch = Architecture(recipe);
        bool topKFamily = arch is SaeArchitectures.TopK or SaeArchitectures.BatchTopK or SaeArchitectures.MatryoshkaBatchTopK;
        if (topKFamily && k is null) throw new SaeSharpException($"architecture '{recipe}' needs --k");
        bool transcoder = dOut is not null && dOut != dIn;
        var cfg = new SaeConfig
        {
            Architecture = arch,
            DIn = dIn,
            DSae = dSae,
            DOut = transcoder ? dOut : null,
            K = topKFamily ? k : null,
            ApplyBDecToInput = !transcoder,
            MatryoshkaWidths = arch == SaeArchitectures.MatryoshkaBatchTopK ? DefaultMatryoshkaWidths(dSae) : null,
            Metadata = metadata ?? new SaeMetadata(),
        };
        var sae = SaeFactory.Create(cfg);
        sae.Training.SparsityCoefficient = sparsityCoefficient ?? DefaultSparsityCoefficient(recipe);
        sae.Training.Penalty = recipe == "relu-april" ? SparsityPenalty.L1DecoderNorm : SparsityPenalty.L1;
        // BatchTopK estimates its inference threshold from step 1000 with momentum 0.999 (dictionary_learning), an average
        // over about 1000 steps. Short runs start at a quarter and average over a fifth of the remaining steps, so that the
        // estimate follows the activations of the end of training rather than of the step where it started.
        if (totalSteps is long steps)
        {
            sae.Training.ThresholdStartStep = Math.Min(sae.Training.ThresholdStartStep, steps / 4);
            long estimated = steps - sae.Training.ThresholdStartStep;
            if (estimated > 0) sae.Training.ThresholdMomentum = Math.Min(sae.Training.ThresholdMomentum, Math.Max(0, 1 - 5.0 / estimated));
        }
        return sae;
    }
}
