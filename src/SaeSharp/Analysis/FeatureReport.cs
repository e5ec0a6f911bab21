using System.Globalization;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using SaeSharp.IO;
using SaeSharp.Saes;
using SaeSharp.Tokenizers;

namespace SaeSharp.Analysis;

/// <summary>
/// The output of <c>sae features</c>: per-feature statistics and where they came from. On disk (docs/features.md):
/// <c>features.jsonl</c> (one line per feature, in feature order), <c>summary.json</c> (source, token count, density
/// table) and <c>tokens.json</c> (display strings of the token ids used).
/// </summary>
public sealed class FeatureReport
{
    /// <summary>File name of the per-feature statistics, one JSON line per feature.</summary>
    public const string FeaturesFile = "features.jsonl";
    /// <summary>File name of the source, token count and density table.</summary>
    public const string SummaryFile = "summary.json";
    /// <summary>File name of the display strings of the token ids the report mentions.</summary>
    public const string TokensFile = "tokens.json";
    /// <summary>The files <see cref="Load"/> reads from a report folder.</summary>
    public static IReadOnlyList<string> Files { get; } = [FeaturesFile, SummaryFile, TokensFile];

    /// <summary>Where the activations came from (SAE, model, hook, dataset).</summary>
    public FeatureSource Source { get; set; } = new();
    /// <summary>Counted tokens (excluded positions left out).</summary>
    public long Tokens { get; init; }
    /// <summary>Context windows run through the model.</summary>
    public long Windows { get; init; }
    /// <summary>Statistics of the analysed features, in feature order.</summary>
    public required IReadOnlyList<FeatureStatistics> Features { get; init; }
    /// <summary>Display string of each token id that appears in the report.</summary>
    public Dictionary<int, string> TokenStrings { get; init; } = new();

    /// <summary>Every token id the report mentions (examples, contexts, logits).</summary>
    public IEnumerable<int> TokenIds()
    {
        var ids = new HashSet<int>();
        foreach (var f in Features)
        {
            foreach (var e in f.TopExamples.Concat(f.Intervals.SelectMany(i => i.Samples))) ids.UnionWith(e.ContextTokens);
            foreach (var t in f.TopLogits.Concat(f.BottomLogits)) ids.Add(t.Token);
        }
        return ids.Order();
    }

    /// <summary>Fills <see cref="TokenStrings"/> with each token's <see cref="TokenDisplay.TokenText"/>, so that a line of
    /// tokens reads as text.</summary>
    public void DecodeTokens(ITextTokenizer tokenizer)
    {
        ArgumentNullException.ThrowIfNull(tokenizer);
        foreach (var id in TokenIds()) TokenStrings[id] = tokenizer.TokenText(id);
    }

    /// <summary>A token's display string: the decoded text, or <c>&lt;id&gt;</c> when unknown.</summary>
    public string TokenString(int id) => TokenStrings.TryGetValue(id, out var s) ? s : $"<{id}>";

    /// <summary>Writes features.jsonl, summary.json and tokens.json into <paramref name="dir"/>, replaced together: a
    /// failure part-way (a full disk) leaves the previous three as they were.</summary>
    public void Save(string dir)
    {
        Directory.CreateDirectory(dir);
        using var files = new AtomicFileGroup();
        files.Write(Path.Combine(dir, FeaturesFile), s =>
        {
            foreach (var f in Features)
            {
                using (var w = new Utf8JsonWriter(s)) WriteFeature(w, f);
                s.WriteByte((byte)'\n');
            }
        });
        files.WriteAllText(Path.Combine(dir, TokensFile), new JsonObject(TokenStrings.OrderBy(kv => kv.Key)
            .Select(kv => KeyValuePair.Create(kv.Key.ToString(CultureInfo.InvariantCulture), (JsonNode?)JsonValue.Create(kv.Value)))).ToJsonString(Indented));
        files.WriteAllText(Path.Combine(dir, SummaryFile), SummaryJson().ToJsonString(Indented));
        files.Commit();
    }

    private static readonly JsonSerializerOptions Indented = new() { WriteIndented = true, Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping };

    /// <summary>summary.json: the source, counts and the per-feature density table.</summary>
    public JsonObject SummaryJson() => new()
    {
        ["sae"] = Source.Sae,
        ["architecture"] = Source.Architecture,
        ["d_sae"] = Source.DSae,
        ["model"] = Source.Model,
        ["hook"] = Source.Hook,
        ["hook_head_index"] = Source.HookHeadIndex,
        ["dataset"] = Source.Dataset,
        ["context_size"] = Source.ContextSize,
        ["prepend_bos"] = Source.PrependBos,
        ["neuronpedia_id"] = Source.NeuronpediaId,
        ["folded_w_dec_norm"] = Source.FoldedWDecNorm,
        ["tokens"] = Tokens,
        ["windows"] = Windows,
        ["n_features"] = Features.Count,
        ["dead_features"] = Features.Count(f => f.Firings == 0),
        ["features"] = new JsonArray(Features.Select(f => (JsonNode)new JsonObject
        {
            ["feature"] = f.Feature, ["density"] = f.Density, ["max_activation"] = f.MaxActivation, ["mean_nonzero"] = f.MeanNonzero,
        }).ToArray()),
    };

    private static void WriteFeature(Utf8JsonWriter w, FeatureStatistics f)
    {
        w.WriteStartObject();
        w.WriteNumber("feature", f.Feature);
        w.WriteNumber("density", f.Density);
        w.WriteNumber("max_activation", f.MaxActivation);
        w.WriteNumber("mean_nonzero", f.MeanNonzero);
        w.WriteNumber("firings", f.Firings);
        w.WriteStartArray("top_examples");
        foreach (var e in f.TopExamples) WriteExample(w, e);
        w.WriteEndArray();
        w.WriteStartArray("intervals");
        foreach (var iv in f.Intervals)
        {
            w.WriteStartObject();
            w.WriteNumber("lower", iv.Lower);
            w.WriteNumber("upper", iv.Upper);
            w.WriteNumber("count", iv.Count);
            w.WriteNumber("share", iv.Share);
            w.WriteStartArray("samples");
            foreach (var e in iv.Samples) WriteExample(w, e);
            w.WriteEndArray();
            w.WriteEndObject();
        }
        w.WriteEndArray();
        w.WritePropertyName("histogram");
        WriteHistogram(w, f.Histogram);
        WriteTokenValues(w, "top_logits", f.TopLogits);
        WriteTokenValues(w, "bottom_logits", f.BottomLogits);
        if (f.LogitHistogram is not null)
        {
            w.WritePropertyName("logit_histogram");
            WriteHistogram(w, f.LogitHistogram);
        }
        WriteSimilarities(w, "similar_features", "feature", f.SimilarFeatures);
        WriteSimilarities(w, "aligned_neurons", "neuron", f.AlignedNeurons);
        w.WriteStartArray("neuron_alignment");
        foreach (var a in f.NeuronAlignment)
        {
            w.WriteStartObject();
            w.WriteNumber("neuron", a.Neuron);
            w.WriteNumber("value", a.Value);
            w.WriteNumber("l1", a.L1);
            w.WriteEndObject();
        }
        w.WriteEndArray();
        if (f.RelativeDecoderNorm is { } rn) w.WriteNumber("relative_decoder_norm", rn);
        if (f.DeltaNorm is { } dn) w.WriteNumber("delta_norm", dn);
        w.WriteEndObject();
    }

    private static void WriteExample(Utf8JsonWriter w, ActivationExample e)
    {
        w.WriteStartObject();
        w.WriteNumber("activation", e.Activation);
        w.WriteNumber("token", e.Token);
        w.WriteNumber("index", e.Index);
        w.WriteStartArray("context_tokens");
        foreach (var t in e.ContextTokens) w.WriteNumberValue(t);
        w.WriteEndArray();
        w.WriteStartArray("context_acts");
        foreach (var a in e.ContextActs) w.WriteNumberValue(a);
        w.WriteEndArray();
        w.WriteNumber("window", e.Window);
        w.WriteNumber("position", e.Position);
        w.WriteEndObject();
    }

    private static void WriteHistogram(Utf8JsonWriter w, Histogram h)
    {
        w.WriteStartObject();
        w.WriteStartArray("edges");
        foreach (var e in h.Edges) w.WriteNumberValue(e);
        w.WriteEndArray();
        w.WriteStartArray("counts");
        foreach (var c in h.Counts) w.WriteNumberValue(c);
        w.WriteEndArray();
        w.WriteEndObject();
    }

    private static void WriteTokenValues(Utf8JsonWriter w, string name, IReadOnlyList<TokenValue> xs)
    {
        w.WriteStartArray(name);
        foreach (var t in xs)
        {
            w.WriteStartObject();
            w.WriteNumber("token", t.Token);
            w.WriteNumber("value", t.Value);
            w.WriteEndObject();
        }
        w.WriteEndArray();
    }

    private static void WriteSimilarities(Utf8JsonWriter w, string name, string key, IReadOnlyList<Similarity> xs)
    {
        w.WriteStartArray(name);
        foreach (var s in xs)
        {
            w.WriteStartObject();
            w.WriteNumber(key, s.Index);
            w.WriteNumber("cosine", s.Cosine);
            w.WriteEndObject();
        }
        w.WriteEndArray();
    }

    /// <summary>The <c>max_activation</c> of <paramref name="feature"/> in a <c>sae features</c> output: its
    /// <see cref="FeaturesFile"/> or the folder holding it (SAELens's steering tutorial's <c>max_act</c>, by which it multiplies
    /// the steering coefficient). A feature the file does not list is an error naming the file, and so is a report that
    /// records another SAE than <paramref name="cfg"/> at <paramref name="hook"/> (<see cref="FeatureSource.RefuseOtherSae"/>).</summary>
    public static float MaxActivation(string featuresPath, int feature, SaeConfig cfg, string hook)
    {
        string dir = Directory.Exists(featuresPath) ? featuresPath : Path.GetDirectoryName(Path.GetFullPath(featuresPath))!;
        if (!Directory.Exists(featuresPath) && !File.Exists(featuresPath))
            throw new SaeSharpException($"{featuresPath}: not found (give the features.jsonl of `sae features` or its --out folder)");
        if (!Directory.Exists(featuresPath) && Path.GetFileName(featuresPath) != FeaturesFile)
            throw new SaeSharpException($"{featuresPath}: expected `sae features` output, {FeaturesFile} or its folder");
        var report = Load(dir);
        report.Source.RefuseOtherSae(cfg, hook, "its max activations");
        var f = report.Features.FirstOrDefault(x => x.Feature == feature)
            ?? throw new SaeSharpException($"{Path.Combine(dir, FeaturesFile)}: no line for feature {feature} (it lists {report.Features.Count} feature(s)" +
                (report.Features.Count == 0 ? "" : $": {string.Join(", ", report.Features.Take(10).Select(x => x.Feature))}{(report.Features.Count > 10 ? ", ..." : "")}") + ")");
        return f.MaxActivation;
    }

    /// <summary>Reads a folder written by <see cref="Save"/>.</summary>
    public static FeatureReport Load(string dir)
    {
        string featuresPath = Path.Combine(dir, FeaturesFile), summaryPath = Path.Combine(dir, SummaryFile);
        if (!File.Exists(featuresPath)) throw new SaeSharpException($"{dir}: no {FeaturesFile} (write it with `sae features`)");
        var features = new List<FeatureStatistics>();
        var featureLines = new List<int>();
        int lineNo = 0;
        foreach (var line in File.ReadLines(featuresPath, Encoding.UTF8))
        {
            lineNo++;
            if (string.IsNullOrWhiteSpace(line)) continue;
            try
            {
                using var doc = JsonDocument.Parse(line);
                features.Add(ReadFeature(doc.RootElement));
                featureLines.Add(lineNo);
            }
            catch (Exception e) when (e is JsonException or KeyNotFoundException or InvalidOperationException or FormatException)
            {
                throw new SaeSharpException($"{featuresPath}:{lineNo}: not a feature line ({e.Message})");
            }
        }
        var tokens = new Dictionary<int, string>();
        string tokensPath = Path.Combine(dir, TokensFile);
        if (File.Exists(tokensPath))
        {
            using var doc = ParseFile(tokensPath);
            if (doc.RootElement.ValueKind != JsonValueKind.Object)
                throw new SaeSharpException($"{tokensPath}: expected a JSON object of token id → display string");
            foreach (var p in doc.RootElement.EnumerateObject())
            {
                if (!int.TryParse(p.Name, NumberStyles.None, CultureInfo.InvariantCulture, out int id))
                    throw new SaeSharpException($"{tokensPath}: key \"{p.Name}\" is not a token id (a non-negative integer)");
                if (p.Value.ValueKind != JsonValueKind.String)
                    throw new SaeSharpException($"{tokensPath}: token {p.Name} is a JSON {p.Value.ValueKind}, expected its display string");
                tokens[id] = p.Value.GetString()!;
            }
        }
        var report = new FeatureReport { Features = features, TokenStrings = tokens };
        if (!File.Exists(summaryPath))
        {
            CheckIndexes(features, featureLines, featuresPath, dSae: 0, summaryPath);
            return report;
        }
        using (var doc = ParseFile(summaryPath))
        {
            var r = doc.RootElement;
            if (r.ValueKind != JsonValueKind.Object) throw new SaeSharpException($"{summaryPath}: expected a JSON object");
            string? S(string k) => r.TryGetProperty(k, out var v) && v.ValueKind == JsonValueKind.String ? v.GetString() : null;
            long L(string k, long max = long.MaxValue) => !r.TryGetProperty(k, out var v) || v.ValueKind != JsonValueKind.Number ? 0
                : v.TryGetInt64(out long n) && n >= 0 && n <= max ? n
                : throw new SaeSharpException($"{summaryPath}: \"{k}\" is {v.GetRawText()}, expected a count from 0 to {max}");
            int dSae = (int)L("d_sae", int.MaxValue);
            CheckIndexes(features, featureLines, featuresPath, dSae, summaryPath);
            return new FeatureReport
            {
                Features = features, TokenStrings = tokens, Tokens = L("tokens"), Windows = L("windows"),
                Source = new FeatureSource
                {
                    Sae = S("sae"), Architecture = S("architecture"), DSae = dSae, Model = S("model"), Hook = S("hook"),
                    Dataset = S("dataset"), ContextSize = (int)L("context_size", int.MaxValue),
                    PrependBos = r.TryGetProperty("prepend_bos", out var pb) && pb.ValueKind == JsonValueKind.True,
                    NeuronpediaId = S("neuronpedia_id"),
                    HookHeadIndex = r.TryGetProperty("hook_head_index", out var hh) && hh.ValueKind == JsonValueKind.Number && hh.TryGetInt32(out int head) ? head : null,
                    FoldedWDecNorm = r.TryGetProperty("folded_w_dec_norm", out var fw) && fw.ValueKind == JsonValueKind.True,
                },
            };
        }
    }

    /// <summary>Each feature index once and, when summary.json gives d_sae, below it: the dashboard names a page by the
    /// index and the Neuronpedia export writes it as <c>feature_index</c> (and lists the others as skipped).</summary>
    private static void CheckIndexes(List<FeatureStatistics> features, List<int> lines, string featuresPath, int dSae, string summaryPath)
    {
        var seen = new Dictionary<int, int>();
        for (int i = 0; i < features.Count; i++)
        {
            int f = features[i].Feature;
            if (f < 0 || (dSae > 0 && f >= dSae))
                throw new SaeSharpException($"{featuresPath}:{lines[i]}: feature {f} is not an index of the SAE's " +
                                            (dSae > 0 ? $"{dSae} features (d_sae in {summaryPath}); a features folder of another SAE?" : "features"));
            if (!seen.TryAdd(f, lines[i]))
                throw new SaeSharpException($"{featuresPath}:{lines[i]}: feature {f} again (first on line {seen[f]})");
        }
    }

    private static JsonDocument ParseFile(string path)
    {
        try
        {
            return JsonDocument.Parse(File.ReadAllText(path));
        }
        catch (JsonException e)
        {
            throw new SaeSharpException($"{path}: invalid JSON ({e.Message})");
        }
    }

    private static FeatureStatistics ReadFeature(JsonElement e)
    {
        // JSON has no NaN or infinity, but a literal beyond the type's range (1e309) reads as infinity: refused, as no
        // report holds one (Save cannot write them) and the pages' scales and bar positions would be infinite.
        // A missing field is named (JsonElement.GetProperty's KeyNotFoundException does not say which).
        static JsonElement P(JsonElement x, string name) => x.TryGetProperty(name, out var v) ? v : throw new FormatException($"no \"{name}\"");
        static double D(JsonElement x) => x.GetDouble() is var v && double.IsFinite(v) ? v : throw new FormatException($"{x.GetRawText()} is not a finite number");
        static float F(JsonElement x) => x.GetSingle() is var v && float.IsFinite(v) ? v : throw new FormatException($"{x.GetRawText()} is not a finite number");
        // What the dashboard and the Neuronpedia export index by is checked here, so that a damaged line is one error
        // naming it rather than an index out of range while pages are written.
        static ActivationExample Ex(JsonElement x)
        {
            var example = new ActivationExample(
                F(P(x, "activation")), P(x, "token").GetInt32(), P(x, "index").GetInt32(),
                P(x, "context_tokens").EnumerateArray().Select(t => t.GetInt32()).ToArray(),
                P(x, "context_acts").EnumerateArray().Select(t => F(t)).ToArray(),
                P(x, "window").GetInt64(), P(x, "position").GetInt32());
            if (example.ContextActs.Length != example.ContextTokens.Length)
                throw new FormatException($"an example has {example.ContextTokens.Length} context_tokens but {example.ContextActs.Length} context_acts");
            if (example.Index < 0 || example.Index >= example.ContextTokens.Length)
                throw new FormatException($"an example's index {example.Index} is not a position of its {example.ContextTokens.Length} context tokens");
            return example;
        }
        static Histogram H(JsonElement x)
        {
            var h = new Histogram(
                P(x, "edges").EnumerateArray().Select(t => D(t)).ToArray(),
                P(x, "counts").EnumerateArray().Select(t => t.GetInt64()).ToArray());
            if (h.Edges.Length != (h.Counts.Length == 0 ? 0 : h.Counts.Length + 1))
                throw new FormatException($"a histogram has {h.Counts.Length} counts but {h.Edges.Length} edges (one more than counts expected)");
            return h;
        }
        static List<TokenValue> Tv(JsonElement e, string k) => e.TryGetProperty(k, out var a)
            ? a.EnumerateArray().Select(t => new TokenValue(P(t, "token").GetInt32(), F(P(t, "value")))).ToList() : [];
        static List<Similarity> Sim(JsonElement e, string k, string key) => e.TryGetProperty(k, out var a)
            ? a.EnumerateArray().Select(t => new Similarity(P(t, key).GetInt32(), F(P(t, "cosine")))).ToList() : [];
        return new FeatureStatistics
        {
            Feature = P(e, "feature").GetInt32(),
            Density = D(P(e, "density")) is var density && density is >= 0 and <= 1 ? density
                : throw new FormatException($"density {P(e, "density").GetRawText()} is not a fraction from 0 to 1"),
            MaxActivation = F(P(e, "max_activation")),
            MeanNonzero = D(P(e, "mean_nonzero")),
            Firings = e.TryGetProperty("firings", out var fi) ? fi.GetInt64() : 0,
            TopExamples = P(e, "top_examples").EnumerateArray().Select(Ex).ToList(),
            Intervals = e.TryGetProperty("intervals", out var ivs)
                ? ivs.EnumerateArray().Select(iv => new ActivationInterval(D(P(iv, "lower")), D(P(iv, "upper")),
                    P(iv, "count").GetInt64(), D(P(iv, "share")), P(iv, "samples").EnumerateArray().Select(Ex).ToList())).ToList()
                : [],
            Histogram = e.TryGetProperty("histogram", out var h) ? H(h) : new Histogram([], []),
            TopLogits = Tv(e, "top_logits"),
            BottomLogits = Tv(e, "bottom_logits"),
            LogitHistogram = e.TryGetProperty("logit_histogram", out var lh) ? H(lh) : null,
            SimilarFeatures = Sim(e, "similar_features", "feature"),
            AlignedNeurons = Sim(e, "aligned_neurons", "neuron"),
            NeuronAlignment = e.TryGetProperty("neuron_alignment", out var na)
                ? na.EnumerateArray().Select(a => new NeuronAlignment(P(a, "neuron").GetInt32(), F(P(a, "value")), F(P(a, "l1")))).ToList()
                : [],
            RelativeDecoderNorm = e.TryGetProperty("relative_decoder_norm", out var rn) ? Fraction(rn, "relative_decoder_norm") : null,
            DeltaNorm = e.TryGetProperty("delta_norm", out var dn) ? Fraction(dn, "delta_norm") : null,
        };
        double Fraction(JsonElement x, string name) => D(x) is var v && v is >= 0 and <= 1 ? v
            : throw new FormatException($"{name} {x.GetRawText()} is not a fraction from 0 to 1");
    }
}
