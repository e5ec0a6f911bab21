using System.Diagnostics;
using System.Text.Json;
using SaeSharp.Corpus;
using SaeSharp.LanguageModels;

namespace SaeSharp.Bench;

/// <summary>
/// <c>lm-memory</c>: <c>sae lm train</c>'s up-front memory bound (<see cref="LmTrainer.PeakMemoryBytes"/>) against the
/// measured peak of a short run. Each shape runs in a process of its own (a freed heap would hide the next one's
/// allocations): the peak resident memory (VmHWM) of <see cref="LmTrainer.Train"/>, from the RSS just before it, for
/// <c>--steps</c> steps and the validation after them, after a tiny run that pays libtorch's one-time costs. The
/// validation stories are the corpus's first 50 that fit the smallest context (<c>sae lm train</c> refuses stories a
/// window would cut). Usage: <c>bench lm-memory [--shapes ctx:batch:d_model:heads:layers:d_mlp,...] [--steps 3]</c>.
/// </summary>
internal static class LmMemoryBench
{
    private static readonly string[] DefaultShapes =
    [
        "256:16:128:4:4:512", "64:16:128:4:4:512", "512:16:128:4:4:512", "1024:8:128:4:4:512", "256:32:128:4:4:512",
        "256:16:256:8:4:1024", "256:16:128:4:8:512", "1024:16:128:8:2:512", "128:64:384:6:6:1536",
    ];

    public static int Run(string[] args)
    {
        var a = BenchArgs.For("lm-memory", args);
        int steps = a.Int("--steps", 3);
        if (a.Value("--one", "") is { Length: > 0 } one) return RunOne(one, a.Value("--corpus", ""), a.Value("--validation", ""), steps);
        string dir = Directory.CreateTempSubdirectory("bench-lm-memory-").FullName;
        try
        {
            string corpus = Path.Combine(dir, "corpus.jsonl");
            LabelledCorpus.Write(corpus, 1, 3000);
            var shapes = a.List("--shapes", DefaultShapes);
            string validation = Path.Combine(dir, "validation.jsonl");
            WriteStoriesThatFit(corpus, validation, shapes.Min(s => int.Parse(s.Split(':')[0])) - 1);
            Console.WriteLine($"sae lm train, {steps} steps and validation; MemAvailable {HostMemory.Format(HostMemory.AvailableBytes())}");
            Console.WriteLine($"{"ctx",5} {"batch",5} {"d_model",7} {"heads",5} {"layers",6} {"d_mlp",5} | {"estimate",9} {"measured",9} {"est/meas",8}");
            foreach (var shape in shapes)
            {
                var psi = new ProcessStartInfo(Environment.ProcessPath!) { RedirectStandardOutput = true, UseShellExecute = false };
                if (Path.GetFileNameWithoutExtension(psi.FileName) == "dotnet") psi.ArgumentList.Add(typeof(LmMemoryBench).Assembly.Location);
                foreach (var arg in (string[])["lm-memory", "--one", shape, "--corpus", corpus, "--validation", validation, "--steps", steps.ToString()])
                    psi.ArgumentList.Add(arg);
                using var p = Process.Start(psi)!;
                string line = p.StandardOutput.ReadToEnd().TrimEnd();
                p.WaitForExit();
                Console.WriteLine(p.ExitCode == 0 ? line : $"{shape}: exit {p.ExitCode} {line}");
            }
        }
        finally { Directory.Delete(dir, recursive: true); }
        return 0;
    }

    /// <summary>Writes the first 50 stories of <paramref name="corpus"/> of at most <paramref name="tokens"/> words (the
    /// built-in tokenizer's tokens) to <paramref name="path"/>.</summary>
    private static void WriteStoriesThatFit(string corpus, string path, int tokens)
    {
        var fit = File.ReadLines(corpus).Where(line =>
        {
            using var story = JsonDocument.Parse(line);
            return story.RootElement.GetProperty("words").GetArrayLength() <= tokens;
        }).Take(50).ToList();
        if (fit.Count == 0) throw new BenchUsageException($"no story of the corpus fits a context of {tokens + 1} tokens");
        File.WriteAllLines(path, fit);
    }

    private static int RunOne(string shape, string corpus, string validation, int steps)
    {
        var v = shape.Split(':').Select(int.Parse).ToArray();
        if (v.Length != 6) throw new BenchUsageException($"shape {shape}: expected ctx:batch:d_model:heads:layers:d_mlp");
        string dir = Directory.CreateTempSubdirectory("bench-lm-memory-run-").FullName;
        try
        {
            var o = new LmTrainingOptions
            {
                CorpusPath = corpus, OutDir = Path.Combine(dir, "model"), ContextSize = v[0], BatchSize = v[1], DModel = v[2], NHeads = v[3],
                NLayers = v[4], DMlp = v[5], Steps = steps, WarmUpSteps = 1, ValidationCorpusPath = validation, CheckpointEverySteps = 0,
            };
            double estimate = LmTrainer.PeakMemoryBytes(o, LabelledCorpus.Vocabulary.Count);
            // libtorch's and MKL's one-time costs (code pages, thread pools) before the peak is reset: a tiny run first.
            LmTrainer.Train(o with { OutDir = Path.Combine(dir, "warm"), BatchSize = 1, DModel = 8, NHeads = 1, NLayers = 1, DMlp = 8, Steps = 1 });
            GC.Collect();
            ProcessMemory.ResetPeak();
            long before = ProcessMemory.RssKb();
            LmTrainer.Train(o);
            double measured = (ProcessMemory.PeakRssKb() - before) * 1024.0;
            Console.WriteLine($"{v[0],5} {v[1],5} {v[2],7} {v[3],5} {v[4],6} {v[5],5} | {HostMemory.Format(estimate),9} {HostMemory.Format(measured),9} {estimate / measured,8:F2}");
        }
        finally { Directory.Delete(dir, recursive: true); }
        return 0;
    }
}
