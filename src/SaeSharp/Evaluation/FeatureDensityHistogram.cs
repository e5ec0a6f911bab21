using SaeSharp.IO;

namespace SaeSharp.Evaluation;

/// <summary>
/// Histogram of log10 feature firing frequency (SAELens's "log feature density" plot) rendered as a PNG: blue bars of
/// live features in bins of 0.1 decade from log10(1/N) (rounded down) to 0, a red bar at the far left counting dead
/// features (never fired), a tick and label under every decade, and the tallest bar's count printed at the top left.
/// </summary>
public static class FeatureDensityHistogram
{
    public const int Width = 640;
    public const int Height = 360;
    /// <summary>Bins per decade of frequency.</summary>
    public const int BinsPerDecade = 10;

    private const int PlotLeft = 70, PlotRight = Width - 20, PlotTop = 30, PlotBottom = Height - 40;
    private const int DeadLeft = 20, DeadRight = 50;

    /// <summary>The histogram's counts: dead features and live features per bin, with the lowest decade shown.</summary>
    public sealed record Counts(long Dead, long[] Bins, int LowestDecade);

    /// <summary>Bins <paramref name="frequency"/> (per-feature firing fractions over <paramref name="rows"/> rows).
    /// Bin i covers log10 f in [lowest + i/10, lowest + (i+1)/10); f = 1 falls in the last bin.</summary>
    public static Counts Bin(IReadOnlyList<double> frequency, long rows)
    {
        if (rows <= 0) throw new ArgumentOutOfRangeException(nameof(rows), rows, "must be positive");
        int lowest = Math.Min(-1, (int)Math.Floor(Math.Log10(1.0 / rows) + 1e-9));
        var bins = new long[-lowest * BinsPerDecade];
        long dead = 0;
        foreach (var f in frequency)
        {
            if (!(f > 0)) { dead++; continue; }
            int i = (int)Math.Floor((Math.Log10(f) - lowest) * BinsPerDecade + 1e-9);
            bins[Math.Clamp(i, 0, bins.Length - 1)]++;
        }
        return new Counts(dead, bins, lowest);
    }

    /// <summary>Renders the histogram as PNG bytes.</summary>
    public static byte[] Render(IReadOnlyList<double> frequency, long rows)
    {
        var counts = Bin(frequency, rows);
        var img = new Canvas(Width, Height);
        img.Fill(0, 0, Width, Height, 255, 255, 255);
        long max = Math.Max(1, Math.Max(counts.Dead, counts.Bins.Max()));
        int plotH = PlotBottom - PlotTop;

        int BarTop(long c) => PlotBottom - (int)Math.Round(plotH * (double)c / max);
        if (counts.Dead > 0) img.Fill(DeadLeft, BarTop(counts.Dead), DeadRight, PlotBottom, 214, 39, 40);

        int nb = counts.Bins.Length;
        double binW = (PlotRight - PlotLeft) / (double)nb;
        for (int i = 0; i < nb; i++)
        {
            if (counts.Bins[i] == 0) continue;
            int x0 = PlotLeft + (int)Math.Round(i * binW), x1 = PlotLeft + (int)Math.Round((i + 1) * binW) - 1;
            img.Fill(x0, BarTop(counts.Bins[i]), Math.Max(x0 + 1, x1), PlotBottom, 31, 119, 180);
        }

        // Axes, decade ticks and labels.
        img.Fill(PlotLeft, PlotBottom, PlotRight, PlotBottom + 1, 0, 0, 0);
        img.Fill(DeadLeft, PlotBottom, DeadRight, PlotBottom + 1, 0, 0, 0);
        img.Fill(PlotLeft - 1, PlotTop, PlotLeft, PlotBottom + 1, 0, 0, 0);
        for (int dec = counts.LowestDecade; dec <= 0; dec++)
        {
            int x = PlotLeft + (int)Math.Round((dec - counts.LowestDecade) * BinsPerDecade * binW);
            x = Math.Min(x, PlotRight - 1);
            img.Fill(x, PlotBottom + 1, x + 1, PlotBottom + 6, 0, 0, 0);
            img.Text(dec.ToString(System.Globalization.CultureInfo.InvariantCulture), x, PlotBottom + 10, 2, center: true);
        }
        img.Text(max.ToString(System.Globalization.CultureInfo.InvariantCulture), PlotLeft + 4, PlotTop - 20, 2, center: false);
        return PngWriter.Encode(Width, Height, img.Pixels);
    }

    /// <summary>Writes the histogram PNG to <paramref name="path"/> (atomically).</summary>
    public static void Save(string path, IReadOnlyList<double> frequency, long rows)
    {
        var bytes = Render(frequency, rows);
        AtomicFile.Write(path, s => s.Write(bytes));
    }

    /// <summary>An RGB pixel buffer with filled rectangles and a 3×5 pixel font of digits and minus.</summary>
    private sealed class Canvas(int width, int height)
    {
        public byte[] Pixels { get; } = new byte[width * height * 3];

        /// <summary>Fills [x0, x1) × [y0, y1), clipped to the image.</summary>
        public void Fill(int x0, int y0, int x1, int y1, byte r, byte g, byte b)
        {
            x0 = Math.Max(0, x0); y0 = Math.Max(0, y0);
            x1 = Math.Min(width, x1); y1 = Math.Min(height, y1);
            for (int y = y0; y < y1; y++)
                for (int x = x0; x < x1; x++)
                {
                    int p = (y * width + x) * 3;
                    Pixels[p] = r; Pixels[p + 1] = g; Pixels[p + 2] = b;
                }
        }

        private static readonly Dictionary<char, string[]> Glyphs = new()
        {
            ['0'] = ["111", "101", "101", "101", "111"],
            ['1'] = ["010", "110", "010", "010", "111"],
            ['2'] = ["111", "001", "111", "100", "111"],
            ['3'] = ["111", "001", "111", "001", "111"],
            ['4'] = ["101", "101", "111", "001", "001"],
            ['5'] = ["111", "100", "111", "001", "111"],
            ['6'] = ["111", "100", "111", "101", "111"],
            ['7'] = ["111", "001", "001", "001", "001"],
            ['8'] = ["111", "101", "111", "101", "111"],
            ['9'] = ["111", "101", "111", "001", "111"],
            ['-'] = ["000", "000", "111", "000", "000"],
        };

        public void Text(string s, int x, int y, int scale, bool center)
        {
            int advance = 4 * scale;
            if (center) x -= (s.Length * advance - scale) / 2;
            foreach (char c in s)
            {
                if (Glyphs.TryGetValue(c, out var g))
                    for (int row = 0; row < 5; row++)
                        for (int col = 0; col < 3; col++)
                            if (g[row][col] == '1')
                                Fill(x + col * scale, y + row * scale, x + (col + 1) * scale, y + (row + 1) * scale, 0, 0, 0);
                x += advance;
            }
        }
    }
}
