using ScottPlot;
using SkiaSharp;

namespace SaeSharp.Plots;

/// <summary>The font of every picture: DejaVu Sans when installed (the font Debian's fonts-dejavu-core provides),
/// registered with ScottPlot once; else ScottPlot's default.</summary>
internal static class PlotFonts
{
    private const string FontName = "DejaVu Sans";
    private static readonly string[] Candidates = ["/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf", "/usr/share/fonts/dejavu/DejaVuSans.ttf"];

    private static readonly Lazy<string?> RegularFile = new(() => Candidates.FirstOrDefault(File.Exists));

    private static readonly Lazy<string?> Registered = new(() =>
    {
        if (RegularFile.Value is not { } path) return null;
        Fonts.AddFontFile(FontName, path);
        string bold = Path.Combine(Path.GetDirectoryName(path)!, "DejaVuSans-Bold.ttf");
        if (File.Exists(bold)) Fonts.AddFontFile(FontName, bold, bold: true);
        return FontName;
    });

    /// <summary>Sets the plot's font to DejaVu Sans when installed.</summary>
    public static void Apply(Plot plot)
    {
        if (Registered.Value is { } f) plot.Font.Set(f);
    }

    private static readonly Lazy<SKTypeface> Regular = new(() => Load(bold: false));
    private static readonly Lazy<SKTypeface> Bold = new(() => Load(bold: true));

    /// <summary>A typeface for text drawn with SkiaSharp directly: DejaVu Sans (bold when asked and installed), else
    /// the system default. Shared: not to be disposed.</summary>
    public static SKTypeface Typeface(bool bold = false) => bold ? Bold.Value : Regular.Value;

    private static SKTypeface Load(bool bold)
    {
        if (RegularFile.Value is { } path)
        {
            string file = bold ? Path.Combine(Path.GetDirectoryName(path)!, "DejaVuSans-Bold.ttf") : path;
            if (SKTypeface.FromFile(File.Exists(file) ? file : path) is { } t) return t;
        }
        return SKTypeface.FromFamilyName(null, bold ? SKFontStyle.Bold : SKFontStyle.Normal);
    }
}
