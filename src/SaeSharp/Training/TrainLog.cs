using System.Text;
using System.Text.Json.Nodes;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace SaeSharp.Training;

/// <summary>Writes <c>train_log.jsonl</c> (one JSON object per SAE per logged step: step, tokens, sae, lr, sparsity_scale,
/// sparsity_coefficient where the architecture has one, losses{...}, l0, dead_fraction, explained_variance,
/// rows_per_second, metrics{...} where the architecture has its own; non-finite numbers as the strings "NaN", "Infinity",
/// "-Infinity"; event lines {step, sae, event, count}) and, optionally, TensorBoard scalars under <c>tensorboard/</c>. On
/// resume, lines of steps after the checkpoint are dropped first, so the file continues as one run
/// (<see cref="TrainLogFile.Read"/> reads it back).</summary>
internal sealed class TrainLog : IDisposable
{
    public const string FileName = "train_log.jsonl";
    private readonly StreamWriter _writer;
    private readonly SummaryWriter? _tensorBoard;

    public TrainLog(string folder, bool tensorBoard, long? resumeStep)
    {
        Directory.CreateDirectory(folder);
        Path = System.IO.Path.Combine(folder, FileName);
        if (resumeStep is long s && File.Exists(Path)) DropLinesAfter(Path, s);
        else if (resumeStep is null && File.Exists(Path)) File.Delete(Path);
        _writer = new StreamWriter(new FileStream(Path, FileMode.Append, FileAccess.Write, FileShare.Read), new UTF8Encoding(false));
        if (tensorBoard)
            _tensorBoard = utils.tensorboard.SummaryWriter(System.IO.Path.Combine(folder, "tensorboard"), "", false);
    }

    public string Path { get; }

    public void Write(TrainingProgress p)
    {
        foreach (var s in p.Saes)
        {
            var losses = new JsonObject();
            foreach (var (k, v) in s.Losses) losses[k] = Finite(v);
            var line = new JsonObject
            {
                ["step"] = p.Step,
                ["tokens"] = p.Tokens,
                ["sae"] = s.Name,
                ["lr"] = s.Lr,
                ["sparsity_scale"] = s.SparsityScale,
                ["losses"] = losses,
                ["l0"] = Finite(s.L0),
                ["dead_fraction"] = s.DeadFraction,
                ["explained_variance"] = Finite(s.ExplainedVariance),
                ["rows_per_second"] = Math.Round(p.RowsPerSecond, 1),
            };
            if (s.SparsityCoefficient is double lambda) line["sparsity_coefficient"] = Finite(lambda);
            if (s.Metrics.Count > 0)
            {
                var metrics = new JsonObject();
                foreach (var (k, v) in s.Metrics) metrics[k] = Finite(v);
                line["metrics"] = metrics;
            }
            _writer.WriteLine(line.ToJsonString());
            if (_tensorBoard is not null)
            {
                int step = (int)Math.Min(int.MaxValue, p.Step);
                foreach (var (k, v) in s.Losses) _tensorBoard.add_scalar($"{s.Name}/losses/{k}", (float)v, step);
                _tensorBoard.add_scalar($"{s.Name}/metrics/l0", (float)s.L0, step);
                _tensorBoard.add_scalar($"{s.Name}/metrics/explained_variance", (float)s.ExplainedVariance, step);
                foreach (var (k, v) in s.Metrics) _tensorBoard.add_scalar($"{s.Name}/metrics/{k}", (float)v, step);
                _tensorBoard.add_scalar($"{s.Name}/sparsity/dead_fraction", (float)s.DeadFraction, step);
                _tensorBoard.add_scalar($"{s.Name}/details/lr", (float)s.Lr, step);
                if (s.SparsityCoefficient is double l) _tensorBoard.add_scalar($"{s.Name}/details/sparsity_coefficient", (float)l, step);
            }
        }
        _writer.Flush();
    }

    /// <summary>An event line (e.g. resampling) for one SAE.</summary>
    public void Event(long step, string sae, string name, long count)
    {
        _writer.WriteLine(new JsonObject { ["step"] = step, ["sae"] = sae, ["event"] = name, ["count"] = count }.ToJsonString());
        _writer.Flush();
    }

    private static JsonValue Finite(double v) => double.IsFinite(v) ? JsonValue.Create(v) : JsonValue.Create(v.ToString(System.Globalization.CultureInfo.InvariantCulture));

    private static void DropLinesAfter(string path, long step)
    {
        var kept = new List<string>();
        foreach (var line in File.ReadLines(path))
        {
            if (string.IsNullOrWhiteSpace(line)) continue;
            try
            {
                if (JsonNode.Parse(line)?["step"]?.GetValue<long>() is long s && s > step) continue;
            }
            catch (System.Text.Json.JsonException) { continue; } // a torn last line of an interrupted run
            kept.Add(line);
        }
        IO.AtomicFile.WriteAllText(path, kept.Count == 0 ? "" : string.Join("\n", kept) + "\n");
    }

    public void Dispose() => _writer.Dispose();
}
