using System.Globalization;
using System.Numerics;
using System.Text;
using System.Text.Json;
using System.Text.RegularExpressions;
using SaeSharp.Data;
using SaeSharp.IO;
using SaeSharp.Saes;
using SaeSharp.Tokenizers;

namespace SaeSharp.Analysis;

/// <summary>Where the exported features belong on Neuronpedia and how they are split into batch files.</summary>
public sealed record NeuronpediaExportOptions
{
    /// <summary>Neuronpedia model id (<c>gpt2-small</c>); default: the <c>neuronpedia_id</c>'s MODEL, else summary.json's <c>model</c>.</summary>
    public string? ModelId { get; init; }
    /// <summary>Layer; default: the <c>neuronpedia_id</c>'s LAYER, else the N of the hook's <c>blocks.N.</c>.</summary>
    public int? Layer { get; init; }
    /// <summary>Neuronpedia SAE set written in the batch files (SAEDashboard's <c>np_set_name</c>, e.g. <c>res-jb</c>);
    /// default: the <c>neuronpedia_id</c>'s SET.</summary>
    public string? NpSetName { get; init; }
    /// <summary>The runner's <c>sae_set</c> (the SAELens release it loaded), naming the output subfolder and written in
    /// skipped_indexes.json; default: the release of summary.json's <c>sae</c> when that is <c>RELEASE/SAE_ID</c>, else
    /// <see cref="NpSetName"/>.</summary>
    public string? SaeSet { get; init; }
    /// <summary>The runner's <c>sparsity_threshold</c>, written as skipped_indexes.json's <c>log_sparsity</c> (its default −6).</summary>
    public int SparsityThreshold { get; init; } = -6;
    /// <summary>The <c>dataset</c> of every feature; default: summary.json's <c>dataset</c> (a hub dataset as its repo id).</summary>
    public string? DatasetPath { get; init; }
    /// <summary>SAEDashboard's <c>n_features_at_a_time</c>: the features are split into ⌈n / this⌉ batches of near-equal size.</summary>
    public int FeaturesPerBatch { get; init; } = 128;
    /// <summary>The model's tokenizer: token strings are its vocabulary strings as the runner's <c>vocab_dict</c> holds
    /// them. Without it, tokens.json's display strings are used.</summary>
    public ITextTokenizer? Tokenizer { get; init; }
}

/// <summary>
/// Writes a <c>sae features</c> folder in the layout SAEDashboard's <c>NeuronpediaRunner</c> gives Neuronpedia:
/// <c>OUT/&lt;model_id&gt;_&lt;sae_set&gt;_&lt;hook&gt;_&lt;d_sae&gt;/batch-N.json</c> (a <c>NeuronpediaDashboardBatch</c> each),
/// <c>skipped_indexes.json</c> and <c>run_settings.json</c>. Values are converted as its <c>NeuronpediaConverter</c>
/// converts them (docs/features.md).
/// </summary>
public static class NeuronpediaExport
{
    /// <summary>The runner's string for a token id beyond the vocabulary.</summary>
    public const string OutOfRangeToken = "<|outofrange|>";
    /// <summary>The runner's run-settings file name.</summary>
    public const string RunSettingsFile = "run_settings.json";
    /// <summary>The runner's list of the features it did not write.</summary>
    public const string SkippedIndexesFile = "skipped_indexes.json";

    /// <summary>For a <c>sae features</c> folder whose SAE SAEDashboard's NeuronpediaRunner would fold (standard, gated,
    /// JumpReLU and the skip transcoders: everything SAELens's <c>fold_W_dec_norm</c> accepts) and whose summary.json does
    /// not say it was folded (<c>--fold-w-dec-norm</c>): what that means for the export; null otherwise.</summary>
    public static string? UnfoldedNote(FeatureSource source)
    {
        ArgumentNullException.ThrowIfNull(source);
        if (source.FoldedWDecNorm || source.Architecture is not (SaeArchitectures.Standard or SaeArchitectures.Gated or SaeArchitectures.JumpReLU
                or SaeArchitectures.SkipTranscoder or SaeArchitectures.JumpReluSkipTranscoder)) return null;
        return $"the features were computed without --fold-w-dec-norm (summary.json: no \"folded_w_dec_norm\": true); SAEDashboard's " +
               $"NeuronpediaRunner folds a {source.Architecture} SAE's decoder norms first, so these activations are on the SAE's own scale, " +
               "not Neuronpedia's (each feature's ×‖W_dec[i]‖); for that scale run sae features again with --fold-w-dec-norm";
    }

    /// <summary>Exports the <c>sae features</c> folder <paramref name="featuresDir"/> into a subfolder of
    /// <paramref name="outDir"/>; returns that subfolder.</summary>
    public static string Write(string featuresDir, string outDir, NeuronpediaExportOptions? options = null) =>
        Write(featuresDir, outDir, options, out _);

    /// <summary>As <see cref="Write(string, string, NeuronpediaExportOptions?)"/>; <paramref name="note"/> is
    /// <see cref="UnfoldedNote"/> of the folder's SAE (null when there is nothing to say).</summary>
    public static string Write(string featuresDir, string outDir, NeuronpediaExportOptions? options, out string? note)
    {
        ArgumentNullException.ThrowIfNull(featuresDir);
        ArgumentNullException.ThrowIfNull(outDir);
        options ??= new NeuronpediaExportOptions();
        if (options.FeaturesPerBatch <= 0) throw new SaeSharpException($"features per batch: {options.FeaturesPerBatch} (a positive number)");
        var report = FeatureReport.Load(featuresDir);
        string summaryPath = Path.Combine(featuresDir, FeatureReport.SummaryFile);
        if (!File.Exists(summaryPath)) throw new SaeSharpException($"{summaryPath}: missing (the export needs the SAE's hook, d_sae and the run's windows)");
        var src = report.Source;
        note = UnfoldedNote(src);
        if (string.IsNullOrEmpty(src.Hook)) throw new SaeSharpException($"{summaryPath}: no \"hook\"");
        var target = Resolve(src, options, summaryPath);
        var tokenString = TokenStrings(report, featuresDir, options.Tokenizer);
        for (int i = 0; i < report.Features.Count; i++)                        // a missing string fails before any file is written
        {
            var f = report.Features[i];
            foreach (var id in f.BottomLogits.Concat(f.TopLogits).Select(l => l.Token)
                         .Concat(f.TopExamples.Concat(f.Intervals.SelectMany(iv => iv.Samples)).SelectMany(e => e.ContextTokens)))
                tokenString(id, i);
        }

        if (options.ModelId is null && target.ModelId.Contains('/'))
            throw new SaeSharpException($"{summaryPath}: the model \"{target.ModelId}\" is a Hugging Face path, not a Neuronpedia model id; " +
                                        $"give --model-id (Neuronpedia's id, such as \"{target.ModelId[(target.ModelId.LastIndexOf('/') + 1)..]}\")");
        string dir = Path.Combine(outDir, FolderName($"{target.ModelId}_{target.SaeSet}_{src.Hook}_{src.DSae}", summaryPath));
        Directory.CreateDirectory(dir);
        var batches = FeatureBatches(report.Features.Count, options.FeaturesPerBatch);
        int start = 0;
        for (int b = 0; b < batches.Count; b++)
        {
            int first = start, count = batches[b];
            start += count;
            AtomicFile.Write(Path.Combine(dir, $"batch-{b}.json"), s =>
            {
                using var w = new Utf8JsonWriter(s, JsonOptions);
                WriteBatch(w, first, count, report, target, tokenString);
            });
        }
        RemoveStaleBatches(dir, batches.Count);
        var exported = report.Features.Select(f => f.Feature).ToHashSet();
        AtomicFile.Write(Path.Combine(dir, SkippedIndexesFile), s =>
        {
            using var w = new Utf8JsonWriter(s, JsonOptions);
            w.WriteStartObject();
            w.WriteString("model_id", target.ModelId);
            w.WriteString("layer", target.Layer.ToString(CultureInfo.InvariantCulture));
            w.WriteString("sae_set", target.SaeSet);
            w.WriteNumber("log_sparsity", options.SparsityThreshold);
            w.WriteStartArray("skipped_indexes");
            for (int i = 0; i < src.DSae; i++) if (!exported.Contains(i)) w.WriteNumberValue(i);
            w.WriteEndArray();
            w.WriteEndObject();
        });
        AtomicFile.Write(Path.Combine(dir, RunSettingsFile), s =>
        {
            using var w = new Utf8JsonWriter(s, new JsonWriterOptions { Indented = true, Encoder = JsonOptions.Encoder });
            w.WriteStartObject();
            w.WriteString("sae_set", target.SaeSet);
            w.WriteString("sae_path", target.SaePath);
            w.WriteString("outputs_dir", dir);
            w.WriteBoolean("from_local_sae", target.SaePath == src.Sae);
            w.WriteString("np_set_name", target.NpSetName);
            w.WriteString("huggingface_dataset_path", target.Dataset);
            w.WriteNumber("n_prompts_total", report.Windows);
            w.WriteNumber("n_tokens_in_prompt", src.ContextSize);
            w.WriteNumber("n_features_at_a_time", options.FeaturesPerBatch);
            w.WriteNumber("sparsity_threshold", options.SparsityThreshold);
            w.WriteString("model_id", target.ModelId);
            w.WriteNumber("layer", target.Layer);
            if (src.HookHeadIndex is int head) w.WriteNumber("hook_head_index", head);
            w.WriteBoolean("prepend_bos", src.PrependBos);
            w.WriteEndObject();
        });
        return dir;
    }

    private static readonly JsonWriterOptions JsonOptions = new() { Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping };

    /// <summary>SaeSet: the runner's <c>sae_set</c> (folder, skipped_indexes.json); NpSetName: its <c>np_set_name</c>
    /// (batch files); SaePath: its <c>sae_path</c> (a release's SAE id, else summary.json's <c>sae</c>).</summary>
    private sealed record Target(string ModelId, int Layer, string SaeSet, string NpSetName, string? SaePath, string Dataset);

    private static Target Resolve(FeatureSource src, NeuronpediaExportOptions o, string summaryPath)
    {
        var np = src.NeuronpediaId is { } id ? SplitNeuronpediaId(id) : null;
        string modelId = o.ModelId ?? np?.ModelId ?? src.Model
            ?? throw new SaeSharpException($"{summaryPath}: no \"model\" and no \"neuronpedia_id\"; give the Neuronpedia model id (--model-id)");
        int layer = o.Layer ?? np?.Layer ?? LayerOfHook(src.Hook!)
            ?? throw new SaeSharpException($"{summaryPath}: hook \"{src.Hook}\" has no blocks.N. and there is no \"neuronpedia_id\"; give the layer (--layer-num)");
        string npSetName = o.NpSetName ?? np?.SaeSet
            ?? throw new SaeSharpException($"{summaryPath}: no \"neuronpedia_id\" of the form MODEL/LAYER-SET; give the Neuronpedia SAE set (--np-set-name, e.g. res-jb)");
        var release = src.Sae is { } spec ? SplitRelease(spec) : null;
        string dataset = o.DatasetPath ?? (src.Dataset is { } d ? HubDataset.RecordedPath(d) : "");
        return new Target(modelId, layer, o.SaeSet ?? release?.Release ?? npSetName, npSetName, release?.SaeId ?? src.Sae, dataset);
    }

    /// <summary>summary.json's <c>sae</c> as the runner's <c>sae_set</c> and <c>sae_path</c> when it is
    /// <c>RELEASE/SAE_ID</c> of a known release (<see cref="Hub.SaeReleases"/>) and no local file or folder.</summary>
    private static (string Release, string SaeId)? SplitRelease(string spec)
    {
        int slash = spec.IndexOf('/');
        if (slash <= 0 || File.Exists(spec) || Directory.Exists(spec) || Hub.SaeReleases.Find(spec[..slash]) is null) return null;
        return (spec[..slash], spec[(slash + 1)..]);
    }

    /// <summary>SAELens's <c>neuronpedia_id</c> <c>MODEL/LAYER-SET</c> (<c>gpt2-small/0-res-jb</c>) as its three parts, or
    /// null when it is not of that form.</summary>
    public static (string ModelId, int Layer, string SaeSet)? SplitNeuronpediaId(string neuronpediaId)
    {
        ArgumentNullException.ThrowIfNull(neuronpediaId);
        var m = Regex.Match(neuronpediaId, @"^([^/]+)/(\d+)-(.+)$");
        return m.Success && int.TryParse(m.Groups[2].Value, NumberStyles.None, CultureInfo.InvariantCulture, out int layer)
            ? (m.Groups[1].Value, layer, m.Groups[3].Value) : null;
    }

    private static int? LayerOfHook(string hook)
    {
        var m = Regex.Match(hook, @"blocks\.(\d+)\.");
        return m.Success ? int.Parse(m.Groups[1].Value, CultureInfo.InvariantCulture) : null;
    }

    /// <summary>The runner's split of n features into batches (<c>np.array_split</c> into ⌈n / perBatch⌉ parts): the
    /// size of each batch, the first n mod parts one larger.</summary>
    public static IReadOnlyList<int> FeatureBatches(int n, int perBatch)
    {
        if (n == 0) return [];
        int parts = (n + perBatch - 1) / perBatch;
        return Enumerable.Range(0, parts).Select(i => n / parts + (i < n % parts ? 1 : 0)).ToList();
    }

    /// <summary>The runner's <c>vocab_dict[id]</c>: the vocabulary string with its <c>HTML_ANOMALIES</c> replaced
    /// (<see cref="TokenDisplay.VocabularyText"/>: <c>"Ġthe"</c> → <c>" the"</c>), or <see cref="OutOfRangeToken"/> for an
    /// id outside the vocabulary.</summary>
    public static string VocabString(ITextTokenizer tokenizer, int id) => tokenizer.VocabularyText(id) ?? OutOfRangeToken;

    private static Func<int, int, string> TokenStrings(FeatureReport report, string featuresDir, ITextTokenizer? tokenizer)
    {
        if (tokenizer is not null) return (id, _) => VocabString(tokenizer, id);
        string tokensPath = Path.Combine(featuresDir, FeatureReport.TokensFile);
        if (!File.Exists(tokensPath)) throw new SaeSharpException($"{tokensPath}: missing (give the model, --model, for its vocabulary strings)");
        string featuresPath = Path.Combine(featuresDir, FeatureReport.FeaturesFile);
        return (id, featureIndex) => report.TokenStrings.TryGetValue(id, out var s) ? s
            : throw new SaeSharpException($"{featuresPath}:{FeatureLine(featuresPath, featureIndex)}: token {id} of feature {report.Features[featureIndex].Feature} is not in {tokensPath}");
    }

    /// <summary>The line of features.jsonl holding the <paramref name="index"/>-th feature (blank lines skipped, as Load skips them).</summary>
    private static int FeatureLine(string featuresPath, int index)
    {
        int line = 0, seen = -1;
        foreach (var text in File.ReadLines(featuresPath, Encoding.UTF8))
        {
            line++;
            if (!string.IsNullOrWhiteSpace(text) && ++seen == index) return line;
        }
        return line;
    }

    private static void WriteBatch(Utf8JsonWriter w, int first, int count, FeatureReport report, Target t, Func<int, int, string> tokenString)
    {
        w.WriteStartObject();
        w.WriteString("model_id", t.ModelId);
        w.WriteNumber("layer", t.Layer);
        w.WriteString("sae_set", t.NpSetName);
        w.WriteNull("sae_id_suffix");
        w.WriteStartArray("features");
        for (int i = first; i < first + count; i++)
        {
            int index = i;
            WriteFeature(w, report.Features[i], report, t, id => tokenString(id, index));
        }
        w.WriteEndArray();
        w.WriteEndObject();
    }

    private static void WriteFeature(Utf8JsonWriter w, FeatureStatistics f, FeatureReport report, Target t, Func<int, string> tokenString)
    {
        w.WriteStartObject();
        w.WriteNumber("feature_index", f.Feature);
        Integers(w, "neuron_alignment_indices", f.NeuronAlignment.Select(a => (long)a.Neuron));
        Numbers(w, "neuron_alignment_values", f.NeuronAlignment.Select(a => NpRound(a.Value, 5)));
        Numbers(w, "neuron_alignment_l1", f.NeuronAlignment.Select(a => NpRound(a.L1, 5)));
        // Activation correlations: not computed here, written as the runner's empty defaults.
        foreach (var key in new[]
                 {
                     "correlated_neurons_indices", "correlated_neurons_l1", "correlated_neurons_pearson", "correlated_features_indices",
                     "correlated_features_l1", "correlated_features_pearson",
                 })
        {
            w.WriteStartArray(key);
            w.WriteEndArray();
        }
        Strings(w, "neg_str", f.BottomLogits.Select(l => tokenString(l.Token)));
        Numbers(w, "neg_values", f.BottomLogits.Select(l => NpRound(l.Value, 5)));
        Strings(w, "pos_str", f.TopLogits.Select(l => tokenString(l.Token)));
        Numbers(w, "pos_values", f.TopLogits.Select(l => NpRound(l.Value, 5)));
        bool fired = f.Firings > 0;
        // SAEDashboard reads frac_nonzero back from its histogram title "DENSITY = {frac:.3%}".
        w.WriteNumber("frac_nonzero", fired ? ParseFixed(PyFixed(f.Density * 100, 3)) / 100 : 0);
        Numbers(w, "freq_hist_data_bar_values", BarValues(f.Histogram));
        Integers(w, "freq_hist_data_bar_heights", f.Histogram.Counts);
        var logits = f.LogitHistogram ?? new Histogram([], []);
        Integers(w, "logits_hist_data_bar_heights", logits.Counts);
        Numbers(w, "logits_hist_data_bar_values", BarValues(logits));
        w.WriteNumber("n_prompts_total", report.Windows);
        w.WriteNumber("n_tokens_in_prompt", report.Source.ContextSize);
        w.WriteString("dataset", t.Dataset);
        w.WriteStartArray("decoder_weights_dist");
        w.WriteEndArray();
        w.WriteStartArray("activations");
        // The top group's title is "MAX = {max:.3f}"; an interval's "INTERVAL {lower:.3f} - {upper:.3f}<br>CONTAINS {pct:.3%}",
        // highest interval first.
        double topMax = ParseFixed(PyFixed(f.MaxActivation, 3));
        foreach (var e in f.TopExamples) WriteActivation(w, e, -1, topMax, -1, tokenString);
        foreach (var iv in f.Intervals.Reverse())
        {
            double lo = ParseFixed(PyFixed(iv.Lower, 3)), hi = ParseFixed(PyFixed(iv.Upper, 3));
            double contains = ParseFixed(PyFixed(report.Tokens > 0 ? (double)iv.Count / report.Tokens * 100 : 0, 3)) / 100;
            foreach (var e in iv.Samples) WriteActivation(w, e, lo, hi, contains, tokenString);
        }
        w.WriteEndArray();
        w.WriteStartArray("vector");
        w.WriteEndArray();
        w.WriteEndObject();
    }

    /// <summary>One example as the runner writes a sequence: its tokens and values, without window position 0 (the
    /// runner's sequences start at position 1).</summary>
    private static void WriteActivation(Utf8JsonWriter w, ActivationExample e, double binMin, double binMax, double binContains, Func<int, string> tokenString)
    {
        int start = e.Position - e.Index == 0 && e.Index > 0 ? 1 : 0;
        w.WriteStartObject();
        w.WriteNumber("bin_min", binMin);
        w.WriteNumber("bin_max", binMax);
        w.WriteNumber("bin_contains", binContains);
        Strings(w, "tokens", e.ContextTokens.Skip(start).Select(tokenString));
        Numbers(w, "values", e.ContextActs.Skip(start).Select(a => NpRound(PyRound(a, 4), 5)));
        w.WriteNumber("qualifying_token_index", e.Index - start);
        w.WriteEndObject();
    }

    /// <summary><paramref name="name"/> (the runner's <c>{model_id}_{sae_set}_{hook}_{d_sae}</c>, from the features
    /// folder's summary.json and the options) when it is one folder name: no separators, not <c>.</c> or <c>..</c>, no
    /// control characters, at most 255 bytes; else an error, so that a summary cannot send the export elsewhere.</summary>
    private static string FolderName(string name, string summaryPath)
    {
        bool ok = name is not ("." or "..") && name.IndexOfAny(['/', '\\']) < 0 && !name.Any(char.IsControl)
                  && System.Text.Encoding.UTF8.GetByteCount(name) <= 255;
        return ok ? name : throw new SaeSharpException(
            $"{summaryPath}: the export folder name \"{(name.Length > 80 ? name[..80] + "…" : name)}\" (model id, SAE set, hook and d_sae) " +
            "is not a single folder name of at most 255 bytes without / or \\; give --model-id and --sae-set, or fix \"hook\"");
    }

    /// <summary>SAEDashboard's bar positions: <c>round(x, 5)</c> of <c>bin_edges[:-1] + bin_size / 2</c> (a float32
    /// tensor plus a Python float: float32 arithmetic), then <c>np.round(·, 5)</c>.</summary>
    internal static IEnumerable<double> BarValues(Histogram h)
    {
        int n = h.Counts.Length;
        if (n == 0) yield break;
        double binSize = (h.Edges[n] - h.Edges[0]) / n;
        float half = (float)(binSize / 2);
        for (int i = 0; i < n; i++) yield return NpRound(PyRound((float)h.Edges[i] + half, 5), 5);
    }

    private static void Numbers(Utf8JsonWriter w, string name, IEnumerable<double> xs)
    {
        w.WriteStartArray(name);
        foreach (var x in xs) w.WriteNumberValue(x);
        w.WriteEndArray();
    }

    private static void Integers(Utf8JsonWriter w, string name, IEnumerable<long> xs)
    {
        w.WriteStartArray(name);
        foreach (var x in xs) w.WriteNumberValue(x);
        w.WriteEndArray();
    }

    private static void Strings(Utf8JsonWriter w, string name, IEnumerable<string> xs)
    {
        w.WriteStartArray(name);
        foreach (var x in xs) w.WriteStringValue(x);
        w.WriteEndArray();
    }

    private static void RemoveStaleBatches(string dir, int batches)
    {
        foreach (var path in Directory.EnumerateFiles(dir, "batch-*.json"))
        {
            string n = Path.GetFileNameWithoutExtension(path)["batch-".Length..];
            if (int.TryParse(n, NumberStyles.None, CultureInfo.InvariantCulture, out int b) && b.ToString(CultureInfo.InvariantCulture) == n && b >= batches)
                File.Delete(path);
        }
    }

    /// <summary>numpy's <c>np.round(x, decimals)</c>: <c>rint(x · 10^d) / 10^d</c> in double.</summary>
    internal static double NpRound(double x, int decimals)
    {
        double scale = Math.Pow(10, decimals);
        return Math.Round(x * scale, MidpointRounding.ToEven) / scale;
    }

    /// <summary>Python's <c>round(x, decimals)</c>: the exact value of x rounded half to even at that decimal.</summary>
    internal static double PyRound(double x, int decimals) => ParseFixed(PyFixed(x, decimals));

    private static double ParseFixed(string s) => double.Parse(s, NumberStyles.Float, CultureInfo.InvariantCulture);

    /// <summary>Python's <c>format(x, f".{decimals}f")</c>: x's exact binary value rounded half to even, with a <c>-</c>
    /// for negative values (also when they round to zero).</summary>
    internal static string PyFixed(double x, int decimals)
    {
        if (!double.IsFinite(x)) throw new ArgumentOutOfRangeException(nameof(x), x, "not finite");
        long bits = BitConverter.DoubleToInt64Bits(x);
        bool negative = bits < 0;
        int exp = (int)((bits >> 52) & 0x7FF);
        long frac = bits & 0xFFFFFFFFFFFFFL;
        BigInteger mantissa = exp == 0 ? frac : frac | (1L << 52);
        int e2 = (exp == 0 ? 1 : exp) - 1075;                       // x = mantissa · 2^e2
        BigInteger scaled = mantissa * BigInteger.Pow(10, decimals), q;
        if (e2 >= 0) q = scaled << e2;
        else
        {
            BigInteger den = BigInteger.One << -e2;
            q = BigInteger.DivRem(scaled, den, out var r);
            int c = (r << 1).CompareTo(den);
            if (c > 0 || (c == 0 && !q.IsEven)) q += 1;
        }
        string digits = q.ToString(CultureInfo.InvariantCulture).PadLeft(decimals + 1, '0');
        string text = decimals == 0 ? digits : digits[..^decimals] + "." + digits[^decimals..];
        return negative ? "-" + text : text;
    }
}
