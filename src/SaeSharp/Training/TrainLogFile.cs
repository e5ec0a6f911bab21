using System.Globalization;
using System.Text.Json;

namespace SaeSharp.Training;

/// <summary>One quantity of one SAE over a run, as read from <c>train_log.jsonl</c>: the logged steps that carried a
/// finite value of it, with their token counts (NaN where a line had none) and values.</summary>
public sealed record TrainLogSeries(string Sae, string Quantity, IReadOnlyList<long> Steps, IReadOnlyList<double> Tokens, IReadOnlyList<double> Values);

/// <summary>An event line of <c>train_log.jsonl</c> (<c>{"step", "sae", "event", "count"}</c>, e.g.
/// <c>resampled_dead_latents</c>), with the training tokens at its step (proportional to the step, from the SAE's
/// nearest step line at or after it; NaN when that line has no tokens).</summary>
public sealed record TrainLogEvent(string Sae, long Step, double Tokens, string Name, long Count);

/// <summary>
/// A <c>train_log.jsonl</c> read back, streamed line by line (a long run's log holds one line per SAE per logged step).
/// Every number of a step line is a quantity: the top-level ones by their key (<c>l0</c>, <c>lr</c>, <c>dead_fraction</c>,
/// <c>explained_variance</c>, <c>sparsity_coefficient</c>, ...) and those of its objects as <c>object/key</c>
/// (<c>losses/mse_loss</c>, <c>metrics/max_l0</c>); <c>step</c>, <c>tokens</c> and <c>sae</c> place them. The strings
/// "NaN", "Infinity" and "-Infinity" (how the log writes them) are read and left out of the series, as is a key a line
/// lacks (architectures log different losses). Event lines (resampling) are read into <see cref="Events"/>.
/// <para>A log that a resumed run continued: per SAE, a line whose step is not after that SAE's previous line starts
/// again from that step, replacing the earlier lines of the same or later steps (the resumed run continues from its
/// checkpoint, so its lines are the ones the final weights came from; the trainer itself drops those lines when it
/// resumes, this covers logs joined by hand or written before it did).</para>
/// <para>A last line cut short without its newline (a run killed while writing it) is skipped and counted in
/// <see cref="TornLines"/>; any other line that is not a JSON object with a numeric <c>step</c> is an error naming the
/// file and the line, and so is a log with no step lines.</para>
/// </summary>
public sealed class TrainLogFile
{
    /// <summary>The log's file name in a run's output folder.</summary>
    public const string FileName = TrainLog.FileName;

    private readonly Dictionary<(string Sae, string Quantity), Points> _series;

    private TrainLogFile(string path, List<string> saes, List<string> quantities, Dictionary<(string, string), Points> series, bool allTokens, int lines, int torn,
        List<TrainLogEvent> events)
    {
        Path = path;
        Events = events;
        Saes = saes;
        Quantities = quantities;
        _series = series;
        EveryLineHasTokens = allTokens;
        StepLines = lines;
        TornLines = torn;
    }

    /// <summary>The file read.</summary>
    public string Path { get; }
    /// <summary>The SAEs (the lines' <c>sae</c>; "" where a line has none), in order of first appearance.</summary>
    public IReadOnlyList<string> Saes { get; }
    /// <summary>Every quantity some line carried, in order of first appearance.</summary>
    public IReadOnlyList<string> Quantities { get; }
    /// <summary>Whether every step line has <c>tokens</c> (else a plot's x axis is the step).</summary>
    public bool EveryLineHasTokens { get; }
    /// <summary>Step lines read (replaced ones included).</summary>
    public int StepLines { get; }
    /// <summary>A cut-short last line skipped (0 or 1).</summary>
    public int TornLines { get; }
    /// <summary>The event lines, in file order (those a resumed run replaced left out, as for the step lines).</summary>
    public IReadOnlyList<TrainLogEvent> Events { get; }

    /// <summary>The points of <paramref name="quantity"/> for <paramref name="sae"/>; null when no line carried a finite
    /// value of it.</summary>
    public TrainLogSeries? Series(string sae, string quantity) =>
        _series.TryGetValue((sae, quantity), out var p) && p.Steps.Count > 0 ? new TrainLogSeries(sae, quantity, p.Steps, p.Tokens, p.Values) : null;

    /// <summary>The log of a run: <paramref name="runOrLog"/> is the log file or the run's output folder (its
    /// <see cref="FileName"/>).</summary>
    public static string Locate(string runOrLog)
    {
        if (File.Exists(runOrLog)) return runOrLog;
        if (!Directory.Exists(runOrLog)) throw new SaeSharpException($"{runOrLog}: no such file or folder");
        var path = System.IO.Path.Combine(runOrLog, FileName);
        if (File.Exists(path)) return path;
        var parent = System.IO.Path.GetDirectoryName(System.IO.Path.GetFullPath(runOrLog).TrimEnd(System.IO.Path.DirectorySeparatorChar));
        string hint = parent is not null && File.Exists(System.IO.Path.Combine(parent, FileName))
            ? $" (a run of several SAEs keeps one log in the run's folder: {System.IO.Path.Combine(parent, FileName)})" : "";
        throw new SaeSharpException($"{runOrLog}: no {FileName} in this folder{hint}");
    }

    /// <summary>Reads a log (see the class summary for what it takes and refuses).</summary>
    public static TrainLogFile Read(string path)
    {
        var saes = new List<string>();
        var quantities = new List<string>();
        var known = new HashSet<string>(StringComparer.Ordinal);
        var series = new Dictionary<(string, string), Points>();
        var bySae = new Dictionary<string, (long LastStep, List<Points> Series)>(StringComparer.Ordinal);
        // Per SAE: every step line's (step, tokens), for placing events; and the events as read.
        var stepTokens = new Dictionary<string, Points>(StringComparer.Ordinal);
        var rawEvents = new List<(string Sae, long Step, string Name, long Count)>();
        bool allTokens = true;
        int lineNo = 0, stepLines = 0, torn = 0;
        // A running trainer has the log open for writing: read beside it (its line in progress is a torn last line).
        using var reader = new StreamReader(new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite | FileShare.Delete));
        foreach (var (line, terminated) in Lines(reader))
        {
            lineNo++;
            if (string.IsNullOrWhiteSpace(line)) continue;
            JsonDocument doc;
            try
            {
                doc = JsonDocument.Parse(line);
            }
            catch (JsonException e)
            {
                if (!terminated) { torn++; continue; } // only the last line can lack its newline
                throw new SaeSharpException($"{path} line {lineNo}: not JSON ({e.Message.Split('.')[0]})");
            }
            using (doc)
            {
                var root = doc.RootElement;
                if (root.ValueKind != JsonValueKind.Object) throw new SaeSharpException($"{path} line {lineNo}: not a JSON object");
                if (!root.TryGetProperty("step", out var stepEl) || stepEl.ValueKind != JsonValueKind.Number || !stepEl.TryGetInt64(out long step))
                    throw new SaeSharpException($"{path} line {lineNo}: no integer \"step\"");
                string sae = root.TryGetProperty("sae", out var saeEl) && saeEl.ValueKind == JsonValueKind.String ? saeEl.GetString()! : "";
                if (root.TryGetProperty("event", out var eventEl))
                {
                    if (eventEl.ValueKind != JsonValueKind.String) throw new SaeSharpException($"{path} line {lineNo}: \"event\" is not a string");
                    long count = root.TryGetProperty("count", out var countEl) && countEl.ValueKind == JsonValueKind.Number && countEl.TryGetInt64(out long c) ? c : 0;
                    rawEvents.Add((sae, step, eventEl.GetString()!, count));
                    continue;
                }
                double tokens = double.NaN;
                if (root.TryGetProperty("tokens", out var tokEl))
                    tokens = tokEl.ValueKind == JsonValueKind.Number ? tokEl.GetDouble() : throw new SaeSharpException($"{path} line {lineNo}: \"tokens\" is not a number");
                else allTokens = false;
                stepLines++;

                if (!bySae.TryGetValue(sae, out var state))
                {
                    saes.Add(sae);
                    state = (long.MinValue, new List<Points>());
                }
                if (!stepTokens.TryGetValue(sae, out var placed)) stepTokens[sae] = placed = new Points();
                if (step <= state.LastStep)
                {
                    foreach (var p in state.Series) p.DropFrom(step);
                    placed.DropFrom(step);
                    rawEvents.RemoveAll(e => e.Sae == sae && e.Step >= step);
                }
                state.LastStep = step;
                placed.Add(step, tokens, 0);

                void Add(string quantity, double value)
                {
                    if (known.Add(quantity)) quantities.Add(quantity);
                    if (!series.TryGetValue((sae, quantity), out var p))
                    {
                        series[(sae, quantity)] = p = new Points();
                        state.Series.Add(p);
                    }
                    if (double.IsFinite(value)) p.Add(step, tokens, value);
                }

                foreach (var prop in root.EnumerateObject())
                {
                    if (prop.Name is "step" or "tokens" or "sae") continue;
                    if (prop.Value.ValueKind == JsonValueKind.Object)
                    {
                        foreach (var inner in prop.Value.EnumerateObject())
                            if (Number(inner.Value) is double v) Add(prop.Name + "/" + inner.Name, v);
                            else if (inner.Value.ValueKind != JsonValueKind.Null)
                                throw new SaeSharpException($"{path} line {lineNo}: \"{prop.Name}\".\"{inner.Name}\" is not a number");
                    }
                    else if (Number(prop.Value) is double v) Add(prop.Name, v);
                }
                bySae[sae] = state;
            }
        }
        if (stepLines == 0)
            throw new SaeSharpException(lineNo == 0 ? $"{path}: empty: no logged steps" : $"{path}: no logged steps in its {lineNo} lines");
        var events = rawEvents.Select(e => new TrainLogEvent(e.Sae, e.Step, EventTokens(stepTokens.GetValueOrDefault(e.Sae), e.Step), e.Name, e.Count)).ToList();
        return new TrainLogFile(path, saes, quantities, series, allTokens, stepLines, torn, events);
    }

    /// <summary>The tokens at <paramref name="step"/>: the SAE's first step line at or after it (else its last), scaled by
    /// step (tokens grow by one batch a step).</summary>
    private static double EventTokens(Points? lines, long step)
    {
        if (lines is null || lines.Steps.Count == 0) return double.NaN;
        int i = 0;
        while (i < lines.Steps.Count - 1 && lines.Steps[i] < step) i++;
        long s = lines.Steps[i];
        return s == step ? lines.Tokens[i] : s > 0 ? lines.Tokens[i] * step / s : double.NaN;
    }

    /// <summary>A JSON number, or one of the strings the log writes for non-finite values; else null.</summary>
    private static double? Number(JsonElement e) => e.ValueKind switch
    {
        JsonValueKind.Number => e.GetDouble(),
        JsonValueKind.String when double.TryParse(e.GetString(), NumberStyles.Float, CultureInfo.InvariantCulture, out var v) && !double.IsFinite(v) => v,
        _ => null,
    };

    /// <summary>The lines of <paramref name="reader"/>, each with whether a newline ended it (all but perhaps the last).</summary>
    private static IEnumerable<(string Line, bool Terminated)> Lines(TextReader reader)
    {
        var buffer = new char[1 << 16];
        var line = new System.Text.StringBuilder();
        int n;
        while ((n = reader.Read(buffer, 0, buffer.Length)) > 0)
        {
            int start = 0;
            for (int i = 0; i < n; i++)
            {
                if (buffer[i] != '\n') continue;
                line.Append(buffer, start, i - start);
                if (line.Length > 0 && line[^1] == '\r') line.Length--;
                yield return (line.ToString(), true);
                line.Clear();
                start = i + 1;
            }
            line.Append(buffer, start, n - start);
        }
        if (line.Length > 0) yield return (line.ToString(), false);
    }

    private sealed class Points
    {
        public readonly List<long> Steps = new();
        public readonly List<double> Tokens = new();
        public readonly List<double> Values = new();

        public void Add(long step, double tokens, double value)
        {
            Steps.Add(step);
            Tokens.Add(tokens);
            Values.Add(value);
        }

        /// <summary>Removes the points of <paramref name="step"/> and later.</summary>
        public void DropFrom(long step)
        {
            int n = Steps.Count;
            while (n > 0 && Steps[n - 1] >= step) n--;
            if (n == Steps.Count) return;
            Steps.RemoveRange(n, Steps.Count - n);
            Tokens.RemoveRange(n, Tokens.Count - n);
            Values.RemoveRange(n, Values.Count - n);
        }
    }
}
