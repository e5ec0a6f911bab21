using System.Buffers.Binary;
using System.IO.Compression;
using System.Text;
using SaeSharp.Evaluation;

namespace SaeSharp.Tests.Evaluation;

public class FeatureDensityHistogramTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("png-").FullName;
    public void Dispose() => Directory.Delete(_dir, true);

    /// <summary>Bit-by-bit CRC-32 (no table), independent of the encoder's table-driven one.</summary>
    private static uint BitwiseCrc32(byte[] data)
    {
        uint crc = 0xFFFFFFFF;
        foreach (byte b in data)
        {
            crc ^= b;
            for (int k = 0; k < 8; k++) crc = (crc >> 1) ^ (0xEDB88320u & (uint)-(int)(crc & 1));
        }
        return ~crc;
    }

    private sealed record Png(int Width, int Height, byte BitDepth, byte ColorType, byte[] Pixels, List<string> Chunks);

    private static Png Decode(byte[] file)
    {
        Assert.Equal(new byte[] { 0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A }, file[..8]);
        int pos = 8, w = 0, h = 0;
        byte depth = 0, color = 0;
        var idat = new MemoryStream();
        var chunks = new List<string>();
        while (pos < file.Length)
        {
            int len = (int)BinaryPrimitives.ReadUInt32BigEndian(file.AsSpan(pos));
            string type = Encoding.ASCII.GetString(file, pos + 4, 4);
            var typeAndData = file[(pos + 4)..(pos + 8 + len)];
            uint crc = BinaryPrimitives.ReadUInt32BigEndian(file.AsSpan(pos + 8 + len));
            Assert.Equal(BitwiseCrc32(typeAndData), crc);
            var data = typeAndData[4..];
            chunks.Add(type);
            if (type == "IHDR")
            {
                w = (int)BinaryPrimitives.ReadUInt32BigEndian(data);
                h = (int)BinaryPrimitives.ReadUInt32BigEndian(data.AsSpan(4));
                depth = data[8];
                color = data[9];
            }
            else if (type == "IDAT") idat.Write(data);
            pos += 12 + len;
        }
        idat.Position = 0;
        using var z = new ZLibStream(idat, CompressionMode.Decompress);
        var raw = new MemoryStream();
        z.CopyTo(raw);
        var bytes = raw.ToArray();
        Assert.Equal(h * (1 + 3 * w), bytes.Length);
        var pixels = new byte[w * h * 3];
        for (int y = 0; y < h; y++)
        {
            Assert.Equal(0, bytes[y * (1 + 3 * w)]); // filter type none
            Array.Copy(bytes, y * (1 + 3 * w) + 1, pixels, y * w * 3, w * 3);
        }
        return new Png(w, h, depth, color, pixels, chunks);
    }

    [Fact]
    public void KnownCrcOfIend()
    {
        // The IEND chunk's CRC is AE 42 60 82 in every PNG file.
        Assert.Equal(0xAE426082u, PngWriter.Crc32.Compute("IEND"u8));
        Assert.Equal(0xCBF43926u, PngWriter.Crc32.Compute("123456789"u8)); // CRC-32 check value
    }

    [Fact]
    public void EncodedImageDecodesToTheSamePixels()
    {
        var rgb = new byte[5 * 3 * 3];
        for (int i = 0; i < rgb.Length; i++) rgb[i] = (byte)(i * 7);
        var png = Decode(PngWriter.Encode(5, 3, rgb));
        Assert.Equal((5, 3, (byte)8, (byte)2), (png.Width, png.Height, png.BitDepth, png.ColorType));
        Assert.Equal(new[] { "IHDR", "IDAT", "IEND" }, png.Chunks);
        Assert.Equal(rgb, png.Pixels);
    }

    [Fact]
    public void BinsLog10Frequencies()
    {
        // 1000 rows: lowest decade −3. Bins of 0.1 decade from −3 to 0 (30 bins).
        var c = FeatureDensityHistogram.Bin([0, 0, 1e-3, 0.5, 1.0, 0.01, 0.0105], 1000);
        Assert.Equal(-3, c.LowestDecade);
        Assert.Equal(30, c.Bins.Length);
        Assert.Equal(2, c.Dead);
        Assert.Equal(1, c.Bins[0]);   // 1e-3
        Assert.Equal(2, c.Bins[10]);  // 0.01 and 0.0105 (log10 = −1.98)
        Assert.Equal(1, c.Bins[26]);  // 0.5 (log10 = −0.30)
        Assert.Equal(1, c.Bins[29]);  // 1.0 in the last bin
        Assert.Equal(7, c.Dead + c.Bins.Sum());
    }

    [Fact]
    public void SavedHistogramIsAValidPngWithBars()
    {
        var path = Path.Combine(_dir, "density.png");
        var freq = Enumerable.Repeat(0.0, 3).Concat(Enumerable.Repeat(0.01, 10)).ToArray();
        FeatureDensityHistogram.Save(path, freq, 1000);
        var png = Decode(File.ReadAllBytes(path));
        Assert.Equal(FeatureDensityHistogram.Width, png.Width);
        Assert.Equal(FeatureDensityHistogram.Height, png.Height);
        (byte, byte, byte) Px(int x, int y) { int p = (y * png.Width + x) * 3; return (png.Pixels[p], png.Pixels[p + 1], png.Pixels[p + 2]); }
        // The dead bar (red) is 3/10 of the tallest bar; the live bar (blue) at log10 = −2 reaches the top of the plot.
        Assert.Equal((214, 39, 40), Px(35, png.Height - 45));
        Assert.Equal((255, 255, 255), Px(35, 100));
        // Bin 10 of 30 over the plot x range [70, 620): x from 253 to 271.
        Assert.Equal((31, 119, 180), Px(262, 35));
        Assert.Equal((31, 119, 180), Px(262, png.Height - 45));
        Assert.Equal((255, 255, 255), Px(400, 200));
    }
}
