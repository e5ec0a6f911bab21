using System.Diagnostics;
using System.Text;
using CsCheck;
using Parquet;
using Parquet.Schema;
using SaeSharp.Data;
using SaeSharp.Hub;
using SaeSharp.Interop;
using SaeSharp.IO;
using SaeSharp.Models;
using SaeSharp.Saes;
using SaeSharp.Tests.Interop;
using SaeSharp.Tests.IO;
using SaeSharp.Tokenizers;
using static TorchSharp.torch;

namespace SaeSharp.Tests.Fuzzing;

/// <summary>
/// Property-based fuzzing (CsCheck, with shrinking) of every reader of outside bytes, over structured mutations of a
/// valid file: bit flips, "interesting" bytes and integers written over length fields, truncation, deletion,
/// duplication of slices, and inserted snippets (deep nesting, huge numbers, lone surrogates). The contract: each input
/// either loads or fails with a <see cref="SaeSharpException"/>; any other exception, a case slower than
/// <see cref="MaxCaseTime"/> or more than <see cref="MaxManagedBytes"/> of managed allocation fails the property and
/// CsCheck shrinks it to a minimal mutation list. SAESHARP_FUZZ_ITER sets the iterations per reader (default 25 in
/// the suite; scripts/fuzz.sh runs many more). Results are recorded in docs/fuzzing.md.
/// </summary>
public sealed partial class FuzzTests : IDisposable
{
    static readonly TimeSpan MaxCaseTime = TimeSpan.FromSeconds(20);
    const long MaxManagedBytes = 256L << 20;

    const long DefaultIterations = 25;

    /// <summary>The suite runs a fixed list of cases drawn from this PCG stream and seed, so that it is deterministic;
    /// scripts/fuzz.sh (SAESHARP_FUZZ_ITER) draws fresh cases with CsCheck and shrinks a failure.</summary>
    const uint SuiteStream = 7;
    const ulong SuiteSeed = 20261202;

    /// <summary>A case still running after this long is reported as a hang (the suite goes on).</summary>
    static readonly TimeSpan HangTime = TimeSpan.FromSeconds(60);

    static long Iterations => long.TryParse(Environment.GetEnvironmentVariable("SAESHARP_FUZZ_ITER"), out long n) && n > 0 ? n : DefaultIterations;

    /// <summary>SAESHARP_FUZZ_SECONDS: run each reader for this long instead of a number of iterations (scripts/fuzz.sh
    /// on a shared machine); -1: off.</summary>
    static int Seconds => int.TryParse(Environment.GetEnvironmentVariable("SAESHARP_FUZZ_SECONDS"), out int s) && s > 0 ? s : -1;

    readonly string _dir = Directory.CreateTempSubdirectory("saesharp-fuzz-").FullName;
    public void Dispose() => Directory.Delete(_dir, recursive: true);

    /// <summary>One mutation: kind, position (taken modulo the length), value, length.</summary>
    public readonly record struct Mutation(int Kind, int Pos, int Value, int Len)
    {
        public override string ToString() => $"{Kind}@{Pos}:{Value}x{Len}";
    }

    static readonly byte[] InterestingBytes = [0, 0xFF, 0x7F, 0x80, (byte)'"', (byte)'{', (byte)'[', (byte)']', (byte)':', (byte)',', (byte)'9', (byte)'-', (byte)'\n', (byte)'\\'];
    static readonly long[] InterestingInts = [0, -1, 1, int.MaxValue, int.MinValue, 1L << 31, 1L << 40, long.MaxValue, 255, 65536];
    static readonly string[] Snippets =
    [
        new string('[', 5000) + new string(']', 5000), "1e309", "-1", "null", "\"\\ud800\"", "99999999999999999999999",
        "{\"a\":", "\"\"", "true", "[1,2,3]", "-9223372036854775809", "0.5", "\"\u0000\"", "{}",
    ];

    static readonly Gen<Mutation[]> Mutations =
        Gen.Select(Gen.Int[0, 7], Gen.Int[0, int.MaxValue], Gen.Int, Gen.Int[1, 64], (k, p, v, l) => new Mutation(k, p, v, l)).Array[1, 6];

    internal static byte[] Apply(byte[] seed, Mutation[] mutations)
    {
        var b = new List<byte>(seed);
        foreach (var m in mutations)
        {
            if (b.Count == 0) b.Add(0);
            int pos = m.Pos % b.Count;
            switch (m.Kind)
            {
                case 0: b[pos] ^= (byte)(1 << (m.Value & 7)); break;
                case 1: b[pos] = InterestingBytes[(m.Value & int.MaxValue) % InterestingBytes.Length]; break;
                case 2: b.RemoveRange(pos, b.Count - pos); break;
                case 3: b.InsertRange(pos, Enumerable.Range(0, m.Len).Select(i => (byte)(m.Value >> (i % 4 * 8)))); break;
                case 4: b.RemoveRange(pos, Math.Min(m.Len, b.Count - pos)); break;
                case 5:
                    {
                        long v = InterestingInts[(m.Value & int.MaxValue) % InterestingInts.Length];
                        var bytes = (m.Len & 1) == 0 ? BitConverter.GetBytes((int)v) : BitConverter.GetBytes(v);
                        for (int i = 0; i < bytes.Length && pos + i < b.Count; i++) b[pos + i] = bytes[i];
                        break;
                    }
                case 6:
                    {
                        int len = Math.Min(m.Len, b.Count - pos);
                        var slice = b.GetRange(pos, len);
                        b.InsertRange((m.Value & int.MaxValue) % b.Count, slice);
                        break;
                    }
                default: b.InsertRange(pos, Encoding.UTF8.GetBytes(Snippets[(m.Value & int.MaxValue) % Snippets.Length])); break;
            }
        }
        return b.ToArray();
    }

    /// <summary>Runs the property for one reader: <paramref name="setup"/> writes a valid sample into a fresh folder and
    /// returns the file to mutate; <paramref name="read"/> reads the folder or file;
    /// <paramref name="mutate"/> (default: the mutations over the whole file) makes a case from the sample's bytes.</summary>
    void Fuzz(string name, Func<string, string> setup, Action<string> read, Func<byte[], Mutation[], byte[]>? mutate = null)
    {
        mutate ??= Apply;
        string seedDir = Path.Combine(_dir, name + "-seed");
        Directory.CreateDirectory(seedDir);
        string seedFile = setup(seedDir);
        string relative = Path.GetRelativePath(seedDir, seedFile);
        byte[] seed = File.ReadAllBytes(seedFile);
        read(seedFile); // the unmutated sample must load

        int counter = 0;
        var total = Stopwatch.StartNew();
        void Case(Mutation[] ms)
        {
            string caseDir = Path.Combine(_dir, $"{name}-{counter++}");
            CopyFolder(seedDir, caseDir);
            string file = Path.Combine(caseDir, relative);
            File.WriteAllBytes(file, mutate(seed, ms));
            var clock = Stopwatch.StartNew();
            Exception? failure = null;
            long used = 0;
            // The read runs on its own thread so that a reader that never returns fails the property instead of
            // hanging the suite (the thread is left behind; the run is failing anyway).
            var thread = new Thread(() =>
            {
                long allocated = GC.GetAllocatedBytesForCurrentThread();
                try
                {
                    using var scope = NewDisposeScope();
                    read(file);
                }
                catch (SaeSharpException e)
                {
                    if (e.Message.Contains('\n')) failure = new Exception($"{name}: error message spans several lines: {e.Message}");
                }
                catch (Exception e)
                {
                    failure = new Exception($"{name}: {e.GetType().Name} instead of a SaeSharpException: {e.Message}", e);
                }
                used = GC.GetAllocatedBytesForCurrentThread() - allocated;
            }, maxStackSize: 16 << 20) { IsBackground = true };
            thread.Start();
            bool finished = thread.Join(HangTime);
            try { Directory.Delete(caseDir, recursive: true); } catch (IOException) { } catch (UnauthorizedAccessException) { }
            if (!finished) throw new Exception($"{name}: one input did not finish within {HangTime.TotalSeconds:F0} s (a hang): {string.Join(" ", ms)}");
            if (failure is not null) throw failure;
            if (clock.Elapsed > MaxCaseTime) throw new Exception($"{name}: one input took {clock.Elapsed.TotalSeconds:F1} s");
            if (used > MaxManagedBytes) throw new Exception($"{name}: one input allocated {used >> 20} MiB");
        }

        string? seedText = Environment.GetEnvironmentVariable("SAESHARP_FUZZ_SEED");
        if (seedText is null && Iterations == DefaultIterations && Seconds < 0)
        {
            // The suite: a fixed list of cases, the same on every run (CsCheck's seed fixes only its first iteration).
            var pcg = new PCG(SuiteStream, SuiteSeed);
            for (int i = 0; i < DefaultIterations; i++)
            {
                var ms = Mutations.Generate(pcg, null!, out _);
                try { Case(ms); }
                catch (Exception e) { throw new Exception($"case {i} ({string.Join(" ", ms)}): {e.Message}", e); }
            }
        }
        else
        {
            Mutations.Sample(Case, iter: Iterations, time: Seconds, threads: 1, seed: seedText, print: ms => string.Join(" ", ms));
        }
        // scripts/fuzz.sh collects the iterations each reader ran (SAESHARP_FUZZ_REPORT names the file).
        if (Environment.GetEnvironmentVariable("SAESHARP_FUZZ_REPORT") is { Length: > 0 } report)
            lock (ReportLock) File.AppendAllText(report, $"{name}\t{counter}\t{total.Elapsed.TotalSeconds:F0}\n");
    }

    static readonly object ReportLock = new();

    static void CopyFolder(string from, string to)
    {
        Directory.CreateDirectory(to);
        foreach (var f in Directory.GetFiles(from, "*", SearchOption.AllDirectories))
        {
            string target = Path.Combine(to, Path.GetRelativePath(from, f));
            Directory.CreateDirectory(Path.GetDirectoryName(target)!);
            File.Copy(f, target);
        }
    }

    static Tensor Small(int rows, int cols, int seed) => randn(rows, cols, generator: new TorchSharp.torch.Generator((ulong)seed));

    [Fact]
    public void Safetensors() => Fuzz("safetensors", dir =>
    {
        string p = Path.Combine(dir, "a.safetensors");
        SafeTensors.Save(p, new Dictionary<string, Tensor> { ["w"] = Small(3, 4, 1), ["b"] = Small(1, 4, 2).to(ScalarType.BFloat16) },
            new Dictionary<string, string> { ["format"] = "pt" });
        return p;
    }, p => { foreach (var t in SafeTensors.Load(p).Values) t.Dispose(); });

    [Fact]
    public void Npy_files() => Fuzz("npy", dir =>
    {
        string p = Path.Combine(dir, "a.npy");
        Npy.Save(p, Small(5, 3, 3));
        return p;
    }, p => { Npy.Load(p).Dispose(); Npy.ReadRows(p, 1, 2).Dispose(); });

    [Fact]
    public void Npz_archives() => Fuzz("npz", dir =>
    {
        string p = Path.Combine(dir, "params.npz");
        GemmaScopeTests.WriteNpz(p, new Dictionary<string, Tensor> { ["W_enc"] = Small(3, 4, 4), ["threshold"] = Small(1, 4, 5) });
        return p;
    }, p => { foreach (var t in Npy.LoadNpz(p).Values) t.Dispose(); });

    [Fact]
    public void Torch_pickle_zips() => Fuzz("pt", dir =>
    {
        var pickle = new PickleWriter().Proto(2).EmptyDict().Mark()
            .Str("w").Tensor("FloatStorage", "0", 12, 1, [2, 3], [1, 2])
            .Str("s").Tensor("FloatStorage", "0", 12, 11, [], [])
            .Str("k").IntTuple(1, 2, 3)
            .SetItems().Stop().ToArray();
        string p = Path.Combine(dir, "ae.pt");
        PickleWriter.WriteCheckpoint(p, pickle, new Dictionary<string, byte[]> { ["0"] = Enumerable.Range(0, 12).SelectMany(i => BitConverter.GetBytes((float)i)).ToArray() });
        return p;
    }, p => TorchPickle.Load(p).Dispose());

    [Fact]
    public void Saelens_cfg_json() => Fuzz("cfg", dir =>
    {
        var cfg = new SaeConfig { Architecture = SaeArchitectures.JumpReLU, DIn = 4, DSae = 6 };
        cfg.Metadata.HookName = "blocks.0.hook_resid_pre";
        using var sae = SaeFactory.Create(cfg);
        SaeLensFormat.Save(sae, dir);
        return Path.Combine(dir, "cfg.json");
    }, p => SaeLoader.Load(Path.GetDirectoryName(p)!).Dispose());

    [Fact]
    public void Saelens_weights() => Fuzz("sae-weights", dir =>
    {
        var cfg = new SaeConfig { Architecture = SaeArchitectures.TopK, DIn = 4, DSae = 6, K = 2 };
        using var sae = SaeFactory.Create(cfg);
        SaeLensFormat.Save(sae, dir);
        return Path.Combine(dir, "sae_weights.safetensors");
    }, p => SaeLoader.Load(Path.GetDirectoryName(p)!).Dispose());

    /// <summary>A config declaring a huge model is refused against the weights' shapes before the model is built, so
    /// each case is cheap and the property runs in the suite too.</summary>
    [Fact]
    public void Model_config_json() => Model_config_json_cases();

    void Model_config_json_cases() => Fuzz("model-config", dir =>
    {
        TinyModels.WriteGpt2(dir, seed: 1, nLayer: 1, nEmbd: 8, nHead: 2, vocab: 16);
        return Path.Combine(dir, "config.json");
    }, p => ModelLoader.FromPretrained(Path.GetDirectoryName(p)!).Dispose());

    [Fact]
    public void Tokenizer_json() => Fuzz("tokenizer", dir =>
    {
        string p = Path.Combine(dir, "tokenizer.json");
        File.WriteAllText(p, SaeSharp.Tests.Tokenizers.TokenizerJsonTests.TinyTokenizerJson);
        return p;
    }, p => Tokenizer.FromTokenizerJson(p).Encode("ab abc<|endoftext|> cc<m>"));

    static string WriteTextParquet(string dir)
    {
        string p = Path.Combine(dir, "d.parquet");
        var text = new DataField<string>("text");
        Task.Run(async () =>
        {
            await using var stream = File.Create(p);
            await using var writer = await ParquetWriter.CreateAsync(new ParquetSchema(text), stream);
            using var g = writer.CreateRowGroup();
            await g.WriteAsync(text, new[] { "Hello world", "héllo 日本", "third" });
        }).GetAwaiter().GetResult();
        return p;
    }

    [Fact]
    public void Parquet_text() => Fuzz("parquet", WriteTextParquet, p => _ = TextDataset.Read(p).ToList());

    /// <summary>Mutations of the footer's Thrift bytes only, with the footer length rewritten to match, so that cases
    /// reach the metadata walk (ParquetFooter) instead of stopping at the footer-length check.</summary>
    [Fact]
    public void Parquet_footer() => Fuzz("parquet-footer", WriteTextParquet, p => _ = TextDataset.Read(p).ToList(), (file, ms) =>
    {
        int length = BitConverter.ToInt32(file, file.Length - 8), start = file.Length - 8 - length;
        byte[] footer = Apply(file[start..(start + length)], ms);
        return [.. file.AsSpan(0, start), .. footer, .. BitConverter.GetBytes(footer.Length), .. "PAR1"u8];
    });

    /// <summary>Mutations of the data pages only (the bytes between the leading magic and the footer), keeping the file's
    /// length and footer, so that cases reach the page-header walk and Parquet.Net's page reader.</summary>
    [Fact]
    public void Parquet_pages() => Fuzz("parquet-pages", WriteTextParquet, p => _ = TextDataset.Read(p).ToList(), (file, ms) =>
    {
        int length = BitConverter.ToInt32(file, file.Length - 8), start = file.Length - 8 - length;
        byte[] pages = Apply(file[4..start], ms);
        byte[] fitted = new byte[start - 4];
        pages.AsSpan(0, Math.Min(pages.Length, fitted.Length)).CopyTo(fitted);
        return [.. file.AsSpan(0, 4), .. fitted, .. file.AsSpan(start)];
    });

    [Fact]
    public void Jsonl_text() => Fuzz("jsonl", dir =>
    {
        string p = Path.Combine(dir, "d.jsonl");
        File.WriteAllText(p, "{\"text\": \"Hello world\"}\n{\"text\": \"héllo\", \"id\": 3}\n");
        return p;
    }, p => _ = TextDataset.Read(p).ToList());

    [Fact]
    public void Tokenized_jsonl() => Fuzz("tokens-jsonl", dir =>
    {
        string p = Path.Combine(dir, "t.jsonl");
        File.WriteAllText(p, "{\"input_ids\": [1, 2, 3]}\n{\"input_ids\": [4, 5]}\n");
        return p;
    }, p => _ = TextDataset.ReadTokenizedJsonl(p).ToList());

    [Fact]
    public void Hub_safetensors_index_json() => Fuzz("hub-index", dir =>
    {
        string p = Path.Combine(dir, "model.safetensors.index.json");
        File.WriteAllText(p, """{"metadata": {"total_size": 10}, "weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}}""");
        return p;
    }, p => _ = HfHubClient.ShardsOf(p));

    [Fact]
    public void Hub_tree_listing_json() => Fuzz("hub-tree", dir =>
    {
        string p = Path.Combine(dir, "tree.json");
        File.WriteAllText(p, """[{"type":"directory","oid":"0","size":0,"path":"sub"},{"type":"file","oid":"ab","size":12,"path":"sub/cfg.json"},{"type":"file","oid":"cd","size":3,"path":"config.json"}]""");
        return p;
    }, p => HfHubClient.ParseTree(File.ReadAllText(p), [], "org/x (revision main)"));

    [Fact]
    public void Gzipped_jsonl_text() => Fuzz("jsonl-gz", dir =>
    {
        string p = Path.Combine(dir, "d.jsonl.gz");
        using (var gz = new System.IO.Compression.GZipStream(File.Create(p), System.IO.Compression.CompressionLevel.Optimal))
            gz.Write("{\"text\": \"Hello world\"}\n{\"text\": \"héllo\", \"id\": 3}\n"u8);
        return p;
    }, p => _ = TextDataset.Read(p).ToList());

    [Fact]
    public void Txt_text() => Fuzz("txt", dir =>
    {
        string p = Path.Combine(dir, "d.txt");
        File.WriteAllText(p, "Hello world\r\nhéllo 日本\n\nthird");
        return p;
    }, p => { _ = TextDataset.Read(p).ToList(); _ = TextDataset.ReadTxt(p, TxtMode.WholeFile).ToList(); });
}
