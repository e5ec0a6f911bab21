using System.Globalization;
using System.Net;
using System.Text;
using SaeSharp.IO;
using SaeSharp.Tokenizers;
using static TorchSharp.torch;

namespace SaeSharp.Interventions;

/// <summary>
/// A self-contained HTML view of an attribution: for each prompt, the tokens, then one row per top feature (and per
/// SAE error node) with its attribution at every token, blue for positive and red for negative, the colour scaled by
/// the largest |attribution| shown; hovering a cell shows the value and the feature's activation.
/// </summary>
public static class AttributionHtml
{
    /// <param name="path">Output .html file (written atomically).</param>
    /// <param name="result">The attribution.</param>
    /// <param name="tokens">Per batch row, the text of each token.</param>
    /// <param name="top">Features shown per prompt (the largest |attribution| anywhere in it).</param>
    /// <param name="metricLabel">How to name the metric (e.g. with token texts); default its spec.</param>
    public static void Write(string path, AttributionResult result, IReadOnlyList<IReadOnlyList<string>> tokens, int top = 10, string? metricLabel = null)
    {
        var sb = new StringBuilder();
        sb.Append("<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>SaeSharp attribution</title><style>")
          .Append("body{font-family:system-ui,sans-serif;margin:24px;color:#222}h1{font-size:20px}h2{font-size:16px;margin-top:28px}")
          .Append("table{border-collapse:collapse;font-size:13px}td,th{padding:4px 6px;border:1px solid #ddd;text-align:center;white-space:pre}")
          .Append("th.label,td.label{text-align:left;font-family:monospace;background:#fafafa}tr.tokens td{font-weight:600;background:#f0f0f0}")
          .Append(".note{color:#666;font-size:13px}</style></head><body>");
        sb.Append("<h1>Attribution of <code>").Append(Enc(metricLabel ?? result.MetricSpec.ToString())).Append("</code> = ")
          .Append(result.Metric.ToString("G6", CultureInfo.InvariantCulture)).Append("</h1>");
        sb.Append("<p class=\"note\">attribution = f·∂m/∂f per feature and token ")
          .Append(result.IntegratedGradientSteps > 0 ? $"(integrated gradients, {result.IntegratedGradientSteps} steps)" : "(attribution patching)")
          .Append(result.IntegratedErrors ? "; error rows: Σ ε·∂m/∂ε integrated along the same path (error term scaled with the features)" : "; error rows: Σ ε·∂m/∂ε")
          .Append(result.FrozenAttentionAndNorms ? "; attention patterns and norm scales frozen" : "")
          .Append(result.CrossLayer ? ". Cross-layer transcoder replacing: " : ". SAEs at: ")
          .Append(Enc(string.Join(", ", result.Hooks.Select((h, i) => $"{i}: {h}")))).Append("</p>");
        long batch = result.Attribution[0].shape[0];
        for (int b = 0; b < batch; b++)
        {
            using var scope = NewDisposeScope();
            var toks = b < tokens.Count ? tokens[b] : [];
            int s = (int)result.Attribution[0].shape[1];
            var rows = new List<(string Label, double[] Values, double[]? Acts)>();
            var candidates = new List<(int Sae, int Feature, double Max)>();
            for (int i = 0; i < result.Attribution.Count; i++)
            {
                var a = result.Attribution[i][b].to(ScalarType.Float64); // [s, d_sae]
                var maxAbs = a.abs().amax(0);
                int k = (int)Math.Min(top, maxAbs.shape[0]);
                var (vals, idx) = maxAbs.topk(k);
                var v = vals.data<double>().ToArray();
                var ix = idx.data<long>().ToArray();
                for (int j = 0; j < k; j++) if (v[j] > 0) candidates.Add((i, (int)ix[j], v[j]));
            }
            foreach (var (sae, feature, _) in candidates.OrderByDescending(c => c.Max).Take(top))
            {
                var vals = result.Attribution[sae][b].select(-1, feature).to(ScalarType.Float64).data<double>().ToArray();
                var acts = result.FeatureActs[sae][b].select(-1, feature).to(ScalarType.Float64).data<double>().ToArray();
                rows.Add((result.CrossLayer ? $"feature {result.FeatureLabel(sae, feature)}" : $"SAE {sae} feature {feature}", vals, acts));
            }
            for (int i = 0; i < result.ErrorAttribution.Count; i++)
                rows.Add(($"{(result.CrossLayer ? "layer" : "SAE")} {i} error", result.ErrorAttribution[i][b].to(ScalarType.Float64).data<double>().ToArray(), null));
            double scale = rows.Count == 0 ? 1 : Math.Max(1e-12, rows.Max(r => r.Values.Max(Math.Abs)));

            sb.Append("<h2>Prompt ").Append(b).Append("</h2><table><tr class=\"tokens\"><td class=\"label\">token</td>");
            for (int p = 0; p < s; p++)
                sb.Append("<td title=\"position ").Append(p).Append("\">").Append(Enc(p < toks.Count ? Visible(toks[p]) : p.ToString(CultureInfo.InvariantCulture))).Append("</td>");
            sb.Append("</tr>");
            foreach (var (label, values, acts) in rows)
            {
                sb.Append("<tr><td class=\"label\">").Append(Enc(label)).Append("</td>");
                for (int p = 0; p < s; p++)
                {
                    double v = values[p];
                    string title = $"position {p}: attribution {v.ToString("G4", CultureInfo.InvariantCulture)}" +
                                   (acts is null ? "" : $", activation {acts[p].ToString("G4", CultureInfo.InvariantCulture)}");
                    sb.Append("<td style=\"").Append(CellStyle(v / scale)).Append("\" title=\"").Append(Enc(title)).Append("\">")
                      .Append(Cell(v)).Append("</td>");
                }
                sb.Append("</tr>");
            }
            sb.Append("</table>");
        }
        sb.Append("</body></html>");
        AtomicFile.WriteAllText(path, sb.ToString());
    }

    private static string Enc(string s) => WebUtility.HtmlEncode(s);

    private static string Cell(double v)
    {
        if (v == 0) return "";
        var s = v.ToString("0.###", CultureInfo.InvariantCulture);
        return s == "-0" ? "0" : s;
    }

    /// <summary>A column heading: the token as shown on its own (<see cref="TokenDisplay.Visible"/>), its spaces as · too
    /// (a heading cell does not keep a leading space).</summary>
    private static string Visible(string t) => TokenDisplay.Visible(t).Replace(" ", "·", StringComparison.Ordinal);

    /// <summary>A cell's background, white to blue for t in (0, 1], white to red for t in [−1, 0), and on the darker blues
    /// a text colour that keeps WCAG's 4.5:1 contrast, which the page's #222 loses there: black for t in (0.66, 0.83],
    /// white above.</summary>
    private static string CellStyle(double t)
    {
        t = Math.Clamp(t, -1, 1);
        int fade = (int)Math.Round(255 * (1 - Math.Abs(t) * 0.75));
        return t >= 0 ? $"background:rgb({fade},{fade},255)" + (t > 0.83 ? ";color:#fff" : t > 0.66 ? ";color:#000" : "") : $"background:rgb(255,{fade},{fade})";
    }
}
