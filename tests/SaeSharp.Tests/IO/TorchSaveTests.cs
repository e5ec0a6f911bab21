using System.Buffers.Binary;
using System.IO.Compression;
using SaeSharp.Interop;
using SaeSharp.IO;
using TorchSharp;
using static TorchSharp.torch;

namespace SaeSharp.Tests.IO;

/// <summary><see cref="TorchSave"/> against files written by real PyTorch (tests/data/dictionary_learning, torch 1.13)
/// and through <see cref="TorchPickle"/>.</summary>
public sealed class TorchSaveTests : IDisposable
{
    static readonly string Fixtures = Path.Combine(SaeSharp.Tests.Tokenizers.TestPaths.Data(), "dictionary_learning");
    static readonly string CrossCoderFixtures = Path.Combine(SaeSharp.Tests.Tokenizers.TestPaths.Data(), "crosscoder");
    readonly string _dir = Directory.CreateTempSubdirectory("saesharp-torchsave-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    /// <summary>The module prefixes of each fixture's <c>_metadata</c>, as torch 1.13 printed them
    /// (<c>list(torch.load(f)._metadata)</c>).</summary>
    public static TheoryData<string, string[]> FixtureModules => new()
    {
        { "AutoEncoder", ["", "encoder", "decoder"] },
        { "AutoEncoderTopK", ["", "decoder", "encoder"] },
        { "BatchTopKSAE", ["", "decoder", "encoder"] },
        { "GatedAutoEncoder", ["", "encoder", "decoder"] },
        { "JumpReluAutoEncoder", [""] },
    };

    static byte[] Entry(string zipPath, string name)
    {
        using var zip = ZipFile.OpenRead(zipPath);
        var e = zip.GetEntry(name) ?? throw new InvalidOperationException($"{zipPath} has no {name}");
        using var s = e.Open();
        var buffer = new byte[e.Length];
        s.ReadExactly(buffer);
        return buffer;
    }

    static List<string> EntryNames(string zipPath)
    {
        using var zip = ZipFile.OpenRead(zipPath);
        return zip.Entries.Select(e => e.FullName).ToList();
    }

    [Theory]
    [MemberData(nameof(FixtureModules))]
    public void Rewriting_a_PyTorch_file_gives_the_same_bytes_apart_from_the_newer_byteorder_record(string dictClass, string[] modules)
    {
        string original = Path.Combine(Fixtures, dictClass, "ae.pt");
        using var scope = NewDisposeScope();
        using var ckpt = TorchPickle.Load(original);
        var sd = ckpt.Tensors.ToList();

        // As torch 1.13 wrote it (no byteorder record): the whole file, zip headers and padding included.
        string old = Path.Combine(_dir, "old", "ae.pt");
        Directory.CreateDirectory(Path.GetDirectoryName(old)!);
        using (var f = File.Create(old)) TorchSave.Write(f, "ae", sd, modules, byteOrderRecord: false);
        Assert.Equal(File.ReadAllBytes(original), File.ReadAllBytes(old));

        // As torch ≥ 2.1 writes it: the same pickle and storages, plus ae/byteorder = "little".
        string current = Path.Combine(_dir, "new", "ae.pt");
        TorchSave.SaveStateDict(current, sd, modules);
        var names = EntryNames(current);
        Assert.Equal(["ae/data.pkl", "ae/byteorder"], names.Take(2));
        Assert.Equal(EntryNames(original).Where(n => n != "ae/data.pkl"), names.Skip(2));
        Assert.Equal("little"u8.ToArray(), Entry(current, "ae/byteorder"));
        foreach (var name in EntryNames(original)) Assert.Equal(Entry(original, name), Entry(current, name));
    }

    [Fact]
    public void A_plain_dict_of_eleven_tensors_pickles_as_PyTorch_pickled_it()
    {
        // The fixture was saved from a plain dict; eleven entries: storage keys 0..10 are written in torch's string
        // order (0, 1, 10, 2, ...).
        string original = Path.Combine(CrossCoderFixtures, "cc_batchtopk", "ae.pt");
        using var scope = NewDisposeScope();
        using var ckpt = TorchPickle.Load(original);
        string copy = Path.Combine(_dir, "ae.pt");
        using (var f = File.Create(copy)) TorchSave.Write(f, "ae", ckpt.Tensors.ToList(), modulePrefixes: null, byteOrderRecord: false, plainDict: true);
        Assert.Equal(File.ReadAllBytes(original), File.ReadAllBytes(copy));
    }

    public static TheoryData<ScalarType> DTypes => new()
    {
        ScalarType.Float32, ScalarType.Float64, ScalarType.BFloat16, ScalarType.Float16, ScalarType.Int64, ScalarType.Int32,
        ScalarType.Int16, ScalarType.Int8, ScalarType.Byte, ScalarType.Bool,
    };

    [Theory]
    [MemberData(nameof(DTypes))]
    public void Every_dtype_and_shape_reads_back_equal(ScalarType dtype)
    {
        using var scope = NewDisposeScope();
        var g = new Generator(5);
        Tensor Make(params long[] shape) => dtype == ScalarType.Bool
            ? rand(shape, generator: g).gt(0.5)
            : (randn(shape, generator: g) * 50).to(dtype);
        var sd = new List<KeyValuePair<string, Tensor>>
        {
            new("scalar", Make()),
            new("vector", Make(7)),
            new("matrix", Make(3, 5)),
            new("four_d", Make(2, 3, 1, 4)),
            new("empty", Make(0, 3)),
            new("transposed", Make(4, 6).t()), // a non-contiguous view is written contiguous
        };
        string path = Path.Combine(_dir, "all.pt");
        TorchSave.SaveStateDict(path, sd);
        using var ckpt = TorchPickle.Load(path);
        Assert.Equal(sd.Select(kv => kv.Key), ckpt.Entries.Keys);
        foreach (var (key, expected) in sd)
        {
            var actual = ckpt.GetTensor(key);
            Assert.Equal(dtype, actual.dtype);
            Assert.Equal(expected.shape, actual.shape);
            Assert.True(actual.equal(expected).all().item<bool>(), key);
        }
    }

    [Fact]
    public void Many_entries_use_long_memo_indices_and_still_read_back()
    {
        // Over 256 memo slots (five per tensor) switch BINPUT/BINGET to LONG_BINPUT/LONG_BINGET; 1001 items take two
        // SETITEMS batches.
        using var scope = NewDisposeScope();
        var sd = Enumerable.Range(0, 1001).Select(i => new KeyValuePair<string, Tensor>($"t{i}", tensor(new float[] { i, -i }))).ToList();
        string path = Path.Combine(_dir, "many.pt");
        TorchSave.SaveStateDict(path, sd, ["", "a"]);
        using var ckpt = TorchPickle.Load(path);
        Assert.Equal(1001, ckpt.Tensors.Count);
        Assert.Equal(-1000f, ckpt.GetTensor("t1000")[1].item<float>());
    }

    [Fact]
    public void Every_entry_starts_at_a_multiple_of_64_and_the_archive_is_named_after_the_file()
    {
        using var scope = NewDisposeScope();
        string path = Path.Combine(_dir, "my.model.pt");
        TorchSave.SaveStateDict(path, [new("w", ones(3, 3)), new("b", zeros(5, dtype: ScalarType.Int64))]);
        var bytes = File.ReadAllBytes(path);
        int offset = 0, entries = 0;
        while (BinaryPrimitives.ReadUInt32LittleEndian(bytes.AsSpan(offset)) == 0x04034b50)
        {
            int nameLength = BinaryPrimitives.ReadUInt16LittleEndian(bytes.AsSpan(offset + 26));
            int extraLength = BinaryPrimitives.ReadUInt16LittleEndian(bytes.AsSpan(offset + 28));
            string name = System.Text.Encoding.UTF8.GetString(bytes, offset + 30, nameLength);
            Assert.StartsWith("my.model/", name);
            int start = offset + 30 + nameLength + extraLength;
            Assert.Equal(0, start % 64);
            using var zip = new ZipArchive(new MemoryStream(bytes));
            long size = zip.GetEntry(name)!.Length;
            offset = (int)(start + size + 16); // data descriptor: signature, crc, two 32-bit sizes
            entries++;
        }
        Assert.Equal(5, entries); // data.pkl, byteorder, data/0, data/1, version
        Assert.Equal("my.model", TorchSave.ArchiveName(path));
        Assert.Equal("archive", TorchSave.ArchiveName("/x/ünï.pt"));
    }

    [Fact]
    public void Zip64_fields_for_large_entries_read_back()
    {
        // Entries from 4 GiB need zip64 sizes and offsets; the threshold lowered to 0 exercises those fields on a small file.
        using var scope = NewDisposeScope();
        var w = randn(17, 9, generator: new Generator(2));
        string path = Path.Combine(_dir, "ae.pt");
        using (var f = File.Create(path)) TorchSave.Write(f, "ae", [new("w", w), new("k", tensor(3))], null, zip64Threshold: 0);
        using var ckpt = TorchPickle.Load(path);
        Assert.True(ckpt.GetTensor("w").equal(w).all().item<bool>());
        Assert.Equal(3, ckpt.GetTensor("k").item<int>());
    }

    [Fact]
    public void Unsupported_dtypes_are_refused_naming_the_entry_and_nothing_is_written()
    {
        using var scope = NewDisposeScope();
        string path = Path.Combine(_dir, "c.pt");
        var e = Assert.Throws<SaeSharpException>(() => TorchSave.SaveStateDict(path, [new("ok", ones(2)), new("z", ones(2, dtype: ScalarType.ComplexFloat32))]));
        Assert.Contains("'z'", e.Message);
        Assert.False(File.Exists(path));
    }

    [Fact]
    public void Checksums_are_those_of_the_zip_standard()
    {
        // zlib's crc32(b"123456789") = 0xCBF43926, the check value of CRC-32/ISO-HDLC.
        Assert.Equal(0xCBF43926u, Crc32.Compute("123456789"u8));
    }
}
