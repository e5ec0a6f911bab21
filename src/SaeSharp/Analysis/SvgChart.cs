using System.Globalization;
using System.Text;

namespace SaeSharp.Analysis;

/// <summary>Small inline SVG bar charts for the dashboard pages (no scripts, no external assets).</summary>
internal static class SvgChart
{
    private static string F(double v) => v.ToString("0.##", CultureInfo.InvariantCulture);

    /// <summary>A number for an axis label: 3 significant digits, no exponent for ordinary magnitudes.</summary>
    public static string Num(double v)
    {
        if (v == 0) return "0";
        double a = Math.Abs(v);
        if (a >= 1e5 || a < 1e-3) return v.ToString("0.##e0", CultureInfo.InvariantCulture);
        return v.ToString(a >= 100 ? "0" : a >= 10 ? "0.#" : a >= 1 ? "0.##" : "0.###", CultureInfo.InvariantCulture);
    }

    /// <summary>
    /// A histogram: one bar per bin, x from the first to the last edge, y linear or log10(count)
    /// (<paramref name="logY"/>). <paramref name="colorOf"/> picks a bar's colour from the bin centre.
    /// </summary>
    public static string Histogram(IReadOnlyList<double> edges, IReadOnlyList<long> counts, string title, string xLabel, bool logY,
        Func<double, string> colorOf, string cssClass, int width = 420, int height = 200)
    {
        const int left = 46, right = 22, top = 26, bottom = 38;
        int pw = width - left - right, ph = height - top - bottom;
        var sb = new StringBuilder();
        sb.Append(CultureInfo.InvariantCulture, $"<svg class=\"chart {cssClass}\" viewBox=\"0 0 {width} {height}\" width=\"{width}\" height=\"{height}\" role=\"img\" aria-label=\"{Esc(title)}\">");
        sb.Append(CultureInfo.InvariantCulture, $"<text class=\"chart-title\" x=\"{left}\" y=\"16\">{Esc(title)}</text>");
        if (counts.Count == 0)
        {
            sb.Append(CultureInfo.InvariantCulture, $"<text class=\"chart-empty\" x=\"{left + pw / 2}\" y=\"{top + ph / 2}\" text-anchor=\"middle\">no data</text></svg>");
            return sb.ToString();
        }
        double x0 = edges[0], x1 = edges[^1];
        if (x1 <= x0) x1 = x0 + 1;
        // Log axis: log10(count) with bars starting at a count of ½ (so a count of 1 stays visible).
        const double logBase = -0.30103;
        double Y(long c) => logY ? Math.Log10(c) - logBase : c;
        double ymax = Math.Max(1e-9, counts.Max(c => Y(c)));
        double Px(double x) => left + (x - x0) / (x1 - x0) * pw;
        double Py(double y) => top + ph - y / ymax * ph;
        // Grid and y ticks.
        var yTicks = logY
            ? Enumerable.Range(0, (int)Math.Floor(ymax + logBase) + 1).Select(p => (Value: p - logBase, Label: Num(Math.Pow(10, p))))
            : NiceTicks(0, ymax, 4).Where(v => v == Math.Round(v) || ymax < 4).Select(v => (Value: v, Label: Num(v)));
        foreach (var (v, label) in yTicks)
        {
            double y = Py(v);
            sb.Append(CultureInfo.InvariantCulture, $"<line class=\"grid\" x1=\"{left}\" x2=\"{left + pw}\" y1=\"{F(y)}\" y2=\"{F(y)}\"/>");
            sb.Append(CultureInfo.InvariantCulture, $"<text class=\"tick\" x=\"{left - 5}\" y=\"{F(y + 3.5)}\" text-anchor=\"end\">{label}</text>");
        }
        for (int i = 0; i < counts.Count; i++)
        {
            if (counts[i] == 0) continue;
            double bx0 = Px(edges[i]), bx1 = Px(edges[i + 1]), y = Py(Y(counts[i]));
            double c = (edges[i] + edges[i + 1]) / 2;
            sb.Append(CultureInfo.InvariantCulture,
                $"<rect class=\"bar\" x=\"{F(bx0)}\" y=\"{F(y)}\" width=\"{F(Math.Max(0.8, bx1 - bx0 - 0.6))}\" height=\"{F(top + ph - y)}\" fill=\"{colorOf(c)}\"><title>{Num(edges[i])} – {Num(edges[i + 1])}: {counts[i].ToString("N0", CultureInfo.InvariantCulture)}</title></rect>");
        }
        // Axes and x ticks.
        sb.Append(CultureInfo.InvariantCulture, $"<line class=\"axis\" x1=\"{left}\" x2=\"{left + pw}\" y1=\"{top + ph}\" y2=\"{top + ph}\"/>");
        foreach (var v in NiceTicks(x0, x1, 5))
        {
            double x = Px(v);
            sb.Append(CultureInfo.InvariantCulture, $"<line class=\"axis\" x1=\"{F(x)}\" x2=\"{F(x)}\" y1=\"{top + ph}\" y2=\"{top + ph + 4}\"/>");
            sb.Append(CultureInfo.InvariantCulture, $"<text class=\"tick\" x=\"{F(x)}\" y=\"{top + ph + 15}\" text-anchor=\"middle\">{Num(v)}</text>");
        }
        sb.Append(CultureInfo.InvariantCulture, $"<text class=\"axis-label\" x=\"{left + pw / 2}\" y=\"{height - 4}\" text-anchor=\"middle\">{Esc(xLabel)}</text>");
        sb.Append("</svg>");
        return sb.ToString();
    }

    /// <summary>Round tick values (1, 2, 2.5 or 5 × 10^k steps) covering [lo, hi], about <paramref name="count"/> of them.</summary>
    public static List<double> NiceTicks(double lo, double hi, int count)
    {
        double span = hi - lo;
        if (!(span > 0)) return [lo];
        double raw = span / count, mag = Math.Pow(10, Math.Floor(Math.Log10(raw)));
        double step = new[] { 1, 2, 2.5, 5, 10 }.Select(m => m * mag).First(s => s >= raw);
        var ticks = new List<double>();
        for (double t = Math.Ceiling(lo / step) * step; t <= hi + step * 1e-9; t += step) ticks.Add(Math.Abs(t) < step * 1e-9 ? 0 : t);
        return ticks;
    }

    public static string Esc(string s) => System.Net.WebUtility.HtmlEncode(s);
}
