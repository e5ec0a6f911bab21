using static System.FormattableString;
using SaeSharp.Plots;
using SaeSharp.Saes;
using TorchSharp;
using static TorchSharp.torch;

namespace SaeSharp.Evaluation;

/// <summary>How the latents of one layer slot j fall into the model-diffing bands of <see cref="CrossCoderDecoderNorms.DeltaNorm"/>.</summary>
/// <param name="Slot">The slot j.</param>
/// <param name="Absent">Δnorm &lt; 0.1: the latent lives in the other slots only ("base only" for j = chat).</param>
/// <param name="Shared">0.4 ≤ Δnorm ≤ 0.6.</param>
/// <param name="Specific">Δnorm &gt; 0.9: the latent lives in slot j only ("chat only").</param>
/// <param name="Other">The rest of the latents with a non-zero decoder.</param>
public sealed record CrossCoderSlotBands(int Slot, long Absent, long Shared, long Specific, long Other);

/// <summary>
/// The decoder-norm numbers of crosscoder model diffing, per latent i and slot j, from n_l = ‖W_dec[l, i]‖:
/// the relative norm n_j / Σ_l n_l (Anthropic's "Sparse Crosscoders" figure; Kissane et al.'s replication), the Δnorm
/// ½((n_j − m) / max(n_j, m) + 1) with m = Σ_l n_l − n_j (Minder, Dumas et al. 2025, and the science-of-finetuning
/// fork's <c>num_specific_latents_l{j}</c>, which counts Δnorm &gt; 0.9), and, for two slots, the cosine between the
/// slots' decoder rows. Latents whose decoder is zero in every slot get NaN and are counted in <see cref="ZeroDecoder"/>.
/// </summary>
/// <param name="RelativeNorm">[L][dict_size] n_j / Σ_l n_l.</param>
/// <param name="DeltaNorm">[L][dict_size] Minder et al.'s Δnorm of slot j.</param>
/// <param name="Cosine">[dict_size] cos(W_dec[0, i], W_dec[1, i]) for two slots (0 where a row is zero); null otherwise.</param>
/// <param name="Bands">Per slot, the counts in Minder et al.'s bands of Δnorm.</param>
/// <param name="ZeroDecoder">Latents with a zero decoder in every slot.</param>
public sealed record CrossCoderDecoderNorms(double[][] RelativeNorm, double[][] DeltaNorm, double[]? Cosine, IReadOnlyList<CrossCoderSlotBands> Bands, long ZeroDecoder)
{
    /// <summary>Minder et al.'s bands: only the other slots below this Δnorm.</summary>
    public const double AbsentBelow = 0.1;
    /// <summary>Shared: Δnorm in [<see cref="SharedFrom"/>, <see cref="SharedTo"/>].</summary>
    public const double SharedFrom = 0.4;
    /// <summary>Upper end of the shared band.</summary>
    public const double SharedTo = 0.6;
    /// <summary>Specific to the slot above this Δnorm.</summary>
    public const double SpecificAbove = 0.9;

    /// <summary>The numbers of <paramref name="cc"/>'s decoder (weights only; no activations needed).</summary>
    public static CrossCoderDecoderNorms Of(CrossCoder cc)
    {
        ArgumentNullException.ThrowIfNull(cc);
        cc.CheckReconstructsInput("crosscoder decoder norms");
        using var _ = no_grad();
        using var scope = NewDisposeScope();
        var w = cc.Decoder.Weight.detach().to(ScalarType.Float64); // [L, dict_size, d]
        var n = TorchScalars.VectorNorm(w, 2, [-1]); // [L, dict_size]
        var norms = Rows(n);
        int layers = norms.Length, dict = norms[0].Length;
        var relative = new double[layers][];
        var delta = new double[layers][];
        var bands = new List<CrossCoderSlotBands>();
        long zero = 0;
        for (int i = 0; i < dict; i++)
        {
            double s = 0;
            for (int l = 0; l < layers; l++) s += norms[l][i];
            if (s == 0) zero++;
        }
        for (int j = 0; j < layers; j++)
        {
            relative[j] = new double[dict];
            delta[j] = new double[dict];
            long absent = 0, shared = 0, specific = 0, other = 0;
            for (int i = 0; i < dict; i++)
            {
                double s = 0;
                for (int l = 0; l < layers; l++) s += norms[l][i];
                if (s == 0)
                {
                    relative[j][i] = delta[j][i] = double.NaN;
                    continue;
                }
                double nj = norms[j][i], m = s - nj;
                relative[j][i] = nj / s;
                double dn = delta[j][i] = 0.5 * ((nj - m) / Math.Max(nj, m) + 1);
                if (dn < AbsentBelow) absent++;
                else if (dn >= SharedFrom && dn <= SharedTo) shared++;
                else if (dn > SpecificAbove) specific++;
                else other++;
            }
            bands.Add(new CrossCoderSlotBands(j, absent, shared, specific, other));
        }
        double[]? cosine = null;
        if (layers == 2)
        {
            var dot = (w[0] * w[1]).sum(-1);
            var denom = n[0] * n[1];
            cosine = Rows(where(denom.gt(TorchScalars.Of(0)), dot / denom, zeros_like(dot)).unsqueeze(0))[0];
        }
        return new CrossCoderDecoderNorms(relative, delta, cosine, bands, zero);
    }

    private static double[][] Rows(Tensor t)
    {
        var flat = t.contiguous().data<double>().ToArray();
        int rows = (int)t.shape[0], cols = (int)t.shape[1];
        return Enumerable.Range(0, rows).Select(r => flat.AsSpan(r * cols, cols).ToArray()).ToArray();
    }

    /// <summary>Histogram counts of slot <paramref name="slot"/>'s relative norm over [0, 1] in <paramref name="bins"/>
    /// equal bins (1 in the last; NaN left out).</summary>
    public long[] RelativeNormHistogram(int slot, int bins = 50)
    {
        var counts = new long[bins];
        foreach (var r in RelativeNorm[slot])
            if (!double.IsNaN(r)) counts[Math.Min(bins - 1, (int)(r * bins))]++;
        return counts;
    }

    /// <summary>Δnorm as a function of the relative norm r = n_j / (n_j + m): r / (2(1 − r)) up to ½, then 1 − (1 − r) / (2r).
    /// So the bands' edges 0.1, 0.4, 0.6, 0.9 of Δnorm are r = 1/6, 4/9, 5/9, 5/6.</summary>
    public static double DeltaOfRelative(double r) => r <= 0.5 ? r / (2 * (1 - r)) : 1 - (1 - r) / (2 * r);

    /// <summary>A PNG of slot <paramref name="slot"/>'s relative-norm histogram (Anthropic's figure), each bar coloured by the
    /// Δnorm band of its midpoint (<see cref="DeltaOfRelative"/>): blue only the other slots, grey shared, orange only this
    /// slot, olive the rest.</summary>
    public byte[] RenderHistogram(int slot, string slotName, string otherName, int bins = 50)
    {
        var counts = RelativeNormHistogram(slot, bins);
        var bars = new List<HistogramBar>();
        for (int b = 0; b < bins; b++)
        {
            double lo = (double)b / bins, hi = (double)(b + 1) / bins, mid = (lo + hi) / 2;
            double dn = DeltaOfRelative(mid);
            string color = dn < AbsentBelow ? "#1f77b4" : dn > SpecificAbove ? "#ff7f0e" : dn >= SharedFrom && dn <= SharedTo ? "#7f7f7f" : "#bcbd22";
            bars.Add(new HistogramBar(lo, hi, counts[b], color));
        }
        return HistogramPlot.Render(bars, $"Relative decoder norm of {slotName}",
            $"0: only {otherName} · ½: shared · 1: only {slotName}", "latents (log scale)", logY: true, width: 800,
            legend: [(Invariant($"only {otherName} (Δnorm < {AbsentBelow})"), "#1f77b4"),
                     (Invariant($"shared ({SharedFrom} ≤ Δnorm ≤ {SharedTo})"), "#7f7f7f"),
                     (Invariant($"only {slotName} (Δnorm > {SpecificAbove})"), "#ff7f0e"), ("other", "#bcbd22")]);
    }
}
