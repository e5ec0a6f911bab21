using System.Globalization;
using System.Text.RegularExpressions;
using SaeSharp.Hub;
using SaeSharp.IO;
using SaeSharp.Saes;
using static TorchSharp.torch;

namespace SaeSharp.Interop;

/// <summary>How <see cref="CrossLayerTranscoderLoader"/> loads a CLT or transcoder set: dtype, and which weights stay in the
/// files and are read on demand (circuit-tracer's <c>lazy_decoder</c>, default true, and <c>lazy_encoder</c>, default false).</summary>
public sealed record CrossLayerTranscoderLoadOptions
{
    /// <summary>The weights' dtype (float32, or bfloat16 / float16 beside a model run in that dtype; see
    /// <see cref="CrossLayerTranscoderLoader.ForModel"/>).</summary>
    public ScalarType Dtype { get; init; } = ScalarType.Float32;
    /// <summary>Decoders stay in the files: a reconstruction reads only the rows of the features active in its batch (all other
    /// rows zero, so the product equals the eager one exactly), an attribution only the active features' rows, at most one
    /// layer's [d_transcoder, d_model] decoder in memory at a time. Default true, as circuit-tracer's <c>load_clt</c>.
    /// Needs the files to stay unchanged while the CLT is used (a change is an error).</summary>
    public bool LazyDecoder { get; init; } = true;
    /// <summary>Encoders stay in the files: each encoding reads its layer's [d_transcoder, d_model] encoder, an attribution
    /// the active features' encoder rows. Default false, as circuit-tracer's.</summary>
    public bool LazyEncoder { get; init; }
    /// <summary>Both weights in memory (circuit-tracer's <c>lazy_decoder=False</c>).</summary>
    public static CrossLayerTranscoderLoadOptions Eager(ScalarType dtype = ScalarType.Float32) => new() { Dtype = dtype, LazyDecoder = false };
}

/// <summary>
/// Loads a whole <see cref="CrossLayerTranscoder"/> from its per-layer files: circuit-tracer's format
/// (<c>W_enc_L.safetensors</c> + <c>W_dec_L.safetensors</c>, as <c>load_clt</c> reads them and mntss's CLTs are published)
/// or Gemma Scope 2's <c>clt/</c> sets (<c>params_layer_L.safetensors</c>, as circuit-tracer's <c>load_gemma_scope_2_clt</c>
/// reads them). The single-layer loaders (<see cref="SaeLensConversions.LoadMntssCltLayer"/>, <see cref="GemmaScope.LoadScope2"/>)
/// stay for feature activations: they sum a layer's decoders, which is wrong for reconstruction.
/// </summary>
public static class CrossLayerTranscoderLoader
{
    /// <summary>circuit-tracer's default input hook of a CLT (<c>load_clt</c>'s <c>feature_input_hook</c>).</summary>
    public const string DefaultInputHook = "hook_resid_mid";
    /// <summary>circuit-tracer's default output hook of a CLT (<c>feature_output_hook</c>).</summary>
    public const string DefaultOutputHook = "hook_mlp_out";

    /// <summary>The dtype a CLT's weights are loaded in beside a model run in <paramref name="modelDtype"/>: bfloat16 or
    /// float16 when the model runs in it (half the memory), else float32.</summary>
    public static ScalarType ForModel(ScalarType? modelDtype) =>
        modelDtype is ScalarType.BFloat16 or ScalarType.Float16 ? modelDtype.Value : ScalarType.Float32;

    /// <summary>The error for a whole CLT at <paramref name="where"/> given where one SAE is expected (<see cref="SaeLoader"/>).</summary>
    internal static SaeSharpException NotASingleSae(string where) =>
        new($"{where}: a whole cross-layer transcoder, not a single SAE: load it with CrossLayerTranscoderLoader.Load, " +
            "evaluate it with `sae eval --model M --dataset D --sae`; its features with `sae features` and `sae inspect` (one layer as a single SAE: " +
            "a SAELens release entry such as mntss_clt_layer_transcoder's, or CrossLayerTranscoder.LayerTranscoder)");

    /// <summary>A Gemma Scope 2 CLT layer file's name: prefix (<c>params_layer_</c> or <c>layer_</c>) in group 1, layer in group 2.</summary>
    private static readonly Regex GemmaScope2LayerName = new(@"^((?:params_)?layer_)(\d+)\.safetensors$", RegexOptions.CultureInvariant);

    /// <summary>circuit-tracer's <c>model_kind</c> of a transcoder set (config.yaml).</summary>
    public const string TranscoderSetKind = "transcoder_set";

    /// <summary>Whether <paramref name="path"/> is a local folder holding a whole CLT in either format, or a transcoder set
    /// (a <c>config.yaml</c> with <c>model_kind: transcoder_set</c>).</summary>
    public static bool IsCrossLayerTranscoder(string path) =>
        Directory.Exists(path) && (IsTranscoderSet(path) || FilesOf(Directory.EnumerateFiles(path).Select(f => Path.GetFileName(f))
            .Where(n => n != SaeLensConversions.CircuitTracerConfigFile)).Count > 0);

    /// <summary>Whether the folder <paramref name="folder"/> holds circuit-tracer's config.yaml of a transcoder set
    /// (<c>model_kind: transcoder_set</c>).</summary>
    public static bool IsTranscoderSet(string folder)
    {
        string config = Path.Combine(folder, SaeLensConversions.CircuitTracerConfigFile);
        return File.Exists(config) && YamlFields.Str(YamlFields.Load(config), config, "model_kind") == TranscoderSetKind;
    }

    /// <summary>
    /// Whether <paramref name="spec"/> names a whole CLT: a local folder of either format, or an <c>hf:ORG/REPO[@REVISION][/PATH]</c>
    /// folder whose hub listing holds one directly (and no single SAE's files; listed, not downloaded). A file, or a
    /// <c>RELEASE/SAE_ID</c> (SAELens's <c>mntss_clt_layer_transcoder</c> and Gemma Scope 2's <c>clt</c> entries are one layer
    /// each), is not.
    /// </summary>
    public static bool IsCrossLayerTranscoder(string spec, HfHubOptions? hub)
    {
        ArgumentNullException.ThrowIfNull(spec);
        if (File.Exists(spec) || Directory.Exists(spec)) return IsCrossLayerTranscoder(spec);
        return spec.StartsWith(SaeSource.HubPrefix, StringComparison.Ordinal) && SaeSource.HubCrossLayerTranscoderFiles(spec, hub) is { Count: > 0 };
    }

    /// <summary>
    /// The file names, among <paramref name="names"/> (the files directly in one folder), that make a whole CLT:
    /// circuit-tracer's <c>W_enc_L.safetensors</c> and <c>W_dec_L.safetensors</c> (with <c>config.yaml</c> when present) when
    /// <c>W_enc_0.safetensors</c> is one of them, else Gemma Scope 2's <c>params_layer_L.safetensors</c> / <c>layer_L.safetensors</c>;
    /// empty when neither. A <c>config.yaml</c> without <c>W_enc_0.safetensors</c> is taken too, as a transcoder set's
    /// (circuit-tracer's; its <c>transcoders:</c> list names the per-layer files, else they are <c>layer_L.safetensors</c>
    /// beside it): its content decides when loaded. What <see cref="Load(string, HfHubOptions?, ScalarType)"/> reads, and all
    /// that an <c>hf:</c> spec downloads (the files of a set's list are downloaded when it is loaded).
    /// </summary>
    public static IReadOnlyList<string> FilesOf(IEnumerable<string> names)
    {
        ArgumentNullException.ThrowIfNull(names);
        var all = names.ToList();
        if (all.Contains("W_enc_0.safetensors"))
            return all.Where(n => Regex.IsMatch(n, @"^W_(?:enc|dec)_\d+\.safetensors$") || n == SaeLensConversions.CircuitTracerConfigFile)
                .Order(StringComparer.Ordinal).ToList();
        return all.Where(n => GemmaScope2LayerName.IsMatch(n) || n == SaeLensConversions.CircuitTracerConfigFile).Order(StringComparer.Ordinal).ToList();
    }

    /// <summary>A CLT from a folder of either format (circuit-tracer's when it holds <c>W_enc_0.safetensors</c>, else Gemma
    /// Scope 2's <c>params_layer_L.safetensors</c> / <c>layer_L.safetensors</c>), or from the hub: <c>hf:ORG/REPO[@REVISION][/PATH]</c>
    /// naming such a folder (the repo root when no PATH) downloads only the CLT's files (<see cref="FilesOf"/>) into the
    /// Hugging Face cache through <see cref="HfHubClient"/> (<paramref name="hub"/>: endpoint, cache, token; null: from the
    /// environment). A <c>RELEASE/SAE_ID</c> is refused: SAELens's CLT entries are one layer with its decoders summed.</summary>
    /// <remarks><paramref name="dtype"/>: the weights' dtype (float32, or bfloat16 / float16 beside a model run in that
    /// dtype: read straight into it, half the memory of float32; see <see cref="ForModel"/>).</remarks>
    public static CrossLayerTranscoder Load(string path, HfHubOptions? hub = null, ScalarType dtype = ScalarType.Float32) =>
        Load(path, new CrossLayerTranscoderLoadOptions { Dtype = dtype }, hub);

    /// <summary><see cref="Load(string, HfHubOptions?, ScalarType)"/> with <paramref name="options"/>: dtype, and whether the
    /// decoders (default) and encoders are read on demand from the files.</summary>
    public static CrossLayerTranscoder Load(string path, CrossLayerTranscoderLoadOptions options, HfHubOptions? hub = null)
    {
        ArgumentNullException.ThrowIfNull(path);
        ArgumentNullException.ThrowIfNull(options);
        if (SaeSource.IsRemote(path))
        {
            if (!path.StartsWith(SaeSource.HubPrefix, StringComparison.Ordinal))
                throw new SaeSharpException($"{path}: a SAELens release entry is one layer of a cross-layer transcoder (its decoders summed, for feature " +
                    "activations); a whole CLT is given as its folder: a local one, or hf:ORG/REPO[/PATH] (e.g. hf:mntss/clt-gemma-2-2b-426k, " +
                    "a Gemma Scope 2 hf:google/gemma-scope-2-…/clt/width_… folder of params_layer_L.safetensors)");
            path = SaeSource.ResolveCrossLayerTranscoder(path, hub);
        }
        if (!Directory.Exists(path)) throw new SaeSharpException($"{path}: not a folder (a cross-layer transcoder is a folder of per-layer .safetensors files)");
        if (File.Exists(Path.Combine(path, "W_enc_0.safetensors"))) return LoadCircuitTracer(path, options);
        if (IsTranscoderSet(path)) return LoadTranscoderSet(path, options, hub);
        string config = Path.Combine(path, SaeLensConversions.CircuitTracerConfigFile);
        string? kind = File.Exists(config) ? YamlFields.Str(YamlFields.Load(config), config, "model_kind") : null;
        if (kind is not (null or "cross_layer_transcoder") || File.Exists(config) && GemmaScope2LayerFiles(path).Count == 0)
            throw new SaeSharpException($"{config}: model_kind is '{kind}', expected '{TranscoderSetKind}' (a circuit-tracer transcoder set) " +
                "or 'cross_layer_transcoder' beside circuit-tracer's W_enc_0.safetensors, … or Gemma Scope 2's params_layer_0.safetensors, …");
        if (GemmaScope2LayerFiles(path).Count > 0) return LoadGemmaScope2(path, options);
        throw new SaeSharpException($"{path}: no cross-layer transcoder here: expected circuit-tracer's W_enc_0.safetensors, W_dec_0.safetensors, … " +
            "or Gemma Scope 2's params_layer_0.safetensors, …, or a transcoder set's config.yaml (model_kind: transcoder_set)");
    }

    /// <summary>
    /// circuit-tracer's format (<c>CrossLayerTranscoder.to_safetensors</c> / <c>load_clt</c>), L = the number of
    /// <c>W_enc_*.safetensors</c>: for each layer i, <c>W_enc_i.safetensors</c> holds <c>W_enc_i</c> [d_transcoder, d_model],
    /// <c>b_enc_i</c> [d_transcoder], <c>b_dec_i</c> [d_model] and, in every layer or none, <c>threshold_i</c>
    /// [d_transcoder] (JumpReLU; else ReLU) and <c>W_skip_i</c> [d_model, d_model]; <c>W_dec_i.safetensors</c> holds
    /// <c>W_dec_i</c> [d_transcoder, L − i, d_model]. The folder's <c>config.yaml</c>, when present, gives
    /// <c>model_name</c>, <c>feature_input_hook</c> and <c>feature_output_hook</c> (default hook_resid_mid → hook_mlp_out,
    /// circuit-tracer's). Weights are read as <paramref name="dtype"/> (float32 unless given).
    /// </summary>
    public static CrossLayerTranscoder LoadCircuitTracer(string folder, ScalarType dtype = ScalarType.Float32) =>
        LoadCircuitTracer(folder, new CrossLayerTranscoderLoadOptions { Dtype = dtype });

    /// <summary><see cref="LoadCircuitTracer(string, ScalarType)"/> with <paramref name="options"/> (lazy decoders and encoders:
    /// <c>W_dec_i</c> and <c>W_enc_i</c> are read from their files on demand).</summary>
    public static CrossLayerTranscoder LoadCircuitTracer(string folder, CrossLayerTranscoderLoadOptions options)
    {
        ArgumentNullException.ThrowIfNull(folder);
        ArgumentNullException.ThrowIfNull(options);
        var dtype = options.Dtype;
        var decoders = new List<CrossLayerTranscoderFiles.Source>();
        var encoders = new List<CrossLayerTranscoderFiles.Source>();
        var layers = LayerFiles(folder, @"^W_enc_(\d+)\.safetensors$", "W_enc_{0}.safetensors");
        int n = layers.Count;
        // A missing last encoder file would otherwise make a CLT of fewer layers: W_dec_n's presence names it.
        if (File.Exists(Path.Combine(folder, $"W_dec_{n}.safetensors")))
            throw new SaeSharpException($"{Path.Combine(folder, $"W_enc_{n}.safetensors")}: file not found (the encoder of CLT layer {n}; " +
                                        $"{Path.Combine(folder, $"W_dec_{n}.safetensors")} exists)");
        string configPath = Path.Combine(folder, SaeLensConversions.CircuitTracerConfigFile);
        string? model = null, input = null, output = null;
        if (File.Exists(configPath))
        {
            var yaml = YamlFields.Load(configPath);
            model = YamlFields.Str(yaml, configPath, "model_name");
            input = YamlFields.Str(yaml, configPath, "feature_input_hook");
            output = YamlFields.Str(yaml, configPath, "feature_output_hook");
        }
        var state = new Dictionary<string, Tensor>(StringComparer.Ordinal);
        try
        {
            using var scope = NewDisposeScope();
            int dSae = 0, dModel = 0;
            bool? threshold = null, skip = null;
            var thresholds = new List<Tensor>();
            var skips = new List<Tensor>();
            var wEnc = new List<Tensor>();
            var bEnc = new List<Tensor>();
            var bDec = new List<Tensor>();
            for (int i = 0; i < n; i++)
            {
                string encFile = layers[i];
                string decFile = Path.Combine(folder, $"W_dec_{i}.safetensors");
                if (!File.Exists(decFile)) throw new SaeSharpException($"{decFile}: file not found (the decoders of CLT layer {i}; {encFile} exists)");
                var enc = ReadExcept(encFile, dtype, options.LazyEncoder ? $"W_enc_{i}" : null);
                Keep(state, enc);
                var w = options.LazyEncoder ? HeaderShape(encFile, $"W_enc_{i}", 2) : SaeLensConversions.Need(enc, $"W_enc_{i}", encFile, 2).shape;
                if (i == 0) (dSae, dModel) = ((int)w[0], (int)w[1]);
                if (options.LazyEncoder)
                {
                    ShapedHeader(w, $"W_enc_{i}", encFile, dSae, dModel);
                    encoders.Add(new(encFile, $"W_enc_{i}"));
                }
                else wEnc.Add(Shaped(enc[$"W_enc_{i}"], $"W_enc_{i}", encFile, dSae, dModel));
                bEnc.Add(Shaped(SaeLensConversions.Need(enc, $"b_enc_{i}", encFile, 1), $"b_enc_{i}", encFile, dSae));
                bDec.Add(Shaped(SaeLensConversions.Need(enc, $"b_dec_{i}", encFile, 1), $"b_dec_{i}", encFile, dModel));
                bool hasThreshold = enc.ContainsKey($"threshold_{i}"), hasSkip = enc.ContainsKey($"W_skip_{i}");
                if ((threshold ??= hasThreshold) != hasThreshold)
                    throw new SaeSharpException($"{encFile}: {(hasThreshold ? "has" : "lacks")} 'threshold_{i}' but layer 0 {(hasThreshold ? "lacks" : "has")} one: every layer of a CLT has a threshold or none");
                if ((skip ??= hasSkip) != hasSkip)
                    throw new SaeSharpException($"{encFile}: {(hasSkip ? "has" : "lacks")} 'W_skip_{i}' but layer 0 {(hasSkip ? "lacks" : "has")} one: every layer of a CLT has skip weights or none");
                if (hasThreshold) thresholds.Add(Shaped(enc[$"threshold_{i}"], $"threshold_{i}", encFile, dSae));
                if (hasSkip) skips.Add(Shaped(enc[$"W_skip_{i}"], $"W_skip_{i}", encFile, dModel, dModel));
                if (i == 0 && HeaderShape(decFile, "W_dec_0", 3)[1] is long written && written != n)
                    throw new SaeSharpException($"{decFile}: 'W_dec_0' writes {written} layers, but the folder has encoder files " +
                                                $"W_enc_0..W_enc_{n - 1}.safetensors for {n}: every layer 0..{written - 1} needs its W_enc and W_dec file");
                if (options.LazyDecoder)
                {
                    ShapedHeader(HeaderShape(decFile, $"W_dec_{i}", 3), $"W_dec_{i}", decFile, dSae, n - i, dModel);
                    decoders.Add(new(decFile, $"W_dec_{i}", FirstOutput: i));
                    continue;
                }
                var dec = SafeTensors.Load(decFile, dtype);
                Keep(state, dec);
                state[$"W_dec.{i}"] = Shaped(SaeLensConversions.Need(dec, $"W_dec_{i}", decFile, 3), $"W_dec_{i}", decFile, dSae, n - i, dModel);
            }
            return Build(new CrossLayerTranscoderConfig
            {
                NLayers = n, DTranscoder = dSae, DModel = dModel, JumpRelu = threshold == true, SkipConnection = skip == true,
                FeatureInputHook = input ?? DefaultInputHook, FeatureOutputHook = output ?? DefaultOutputHook, ModelName = model,
                Format = "circuit-tracer", Dtype = dtype,
            }, state, wEnc, bEnc, bDec, thresholds, skips, folder, options, decoders, encoders);
        }
        finally
        {
            foreach (var t in state.Values) t.Dispose();
        }
    }

    /// <summary>
    /// Gemma Scope 2's cross-layer transcoders (<c>google/gemma-scope-2-…/clt/width_…/params_layer_L.safetensors</c>; the
    /// names <c>layer_L.safetensors</c> of circuit-tracer's tests load too): one file per layer i, L files, each holding
    /// <c>w_enc</c> [d_model, d_transcoder], <c>b_enc</c>, <c>threshold</c> [d_transcoder], <c>b_dec</c> [d_model],
    /// <c>w_dec</c> [d_transcoder, L, d_model] (of which, as circuit-tracer's <c>load_gemma_scope_2_clt</c> takes it,
    /// the output layers i..L−1) and, in every layer or none, <c>affine_skip_connection</c> [d_model, d_model] (applied as
    /// x·W_skip, Gemma Scope 2's and circuit-tracer's convention). JumpReLU; hooks <c>ln2.hook_normalized</c> (the
    /// pre-feedforward norm's output, SAELens's gemma_3 rule for a transcoder) → <c>hook_mlp_out</c>; the model from a
    /// <c>gemma-scope-2-…</c> folder of the path, as <see cref="GemmaScope.LoadScope2"/> infers it.
    /// </summary>
    public static CrossLayerTranscoder LoadGemmaScope2(string folder, ScalarType dtype = ScalarType.Float32) =>
        LoadGemmaScope2(folder, new CrossLayerTranscoderLoadOptions { Dtype = dtype });

    /// <summary><see cref="LoadGemmaScope2(string, ScalarType)"/> with <paramref name="options"/> (lazy decoders and encoders:
    /// <c>w_dec</c> and <c>w_enc</c> are read from each layer's file on demand).</summary>
    public static CrossLayerTranscoder LoadGemmaScope2(string folder, CrossLayerTranscoderLoadOptions options)
    {
        ArgumentNullException.ThrowIfNull(folder);
        ArgumentNullException.ThrowIfNull(options);
        var dtype = options.Dtype;
        var decoders = new List<CrossLayerTranscoderFiles.Source>();
        var encoders = new List<CrossLayerTranscoderFiles.Source>();
        var files = GemmaScope2LayerFiles(folder);
        if (files.Count == 0) throw new SaeSharpException($"{folder}: no params_layer_<L>.safetensors (a Gemma Scope 2 cross-layer transcoder's files)");
        if (files.Select(f => f.Prefix).Distinct().Count() > 1)
            throw new SaeSharpException($"{folder}: both params_layer_<L>.safetensors and layer_<L>.safetensors: which are the CLT's layers is ambiguous");
        var layers = Contiguous(files.Select(f => (f.Layer, f.Path)).ToList(), folder, files[0].Prefix + "{0}.safetensors");
        int n = layers.Count;
        var (input, output) = GemmaScope.TranscoderHooks(0);
        var state = new Dictionary<string, Tensor>(StringComparer.Ordinal);
        try
        {
            using var scope = NewDisposeScope();
            int dSae = 0, dModel = 0;
            bool? skip = null;
            var wEnc = new List<Tensor>();
            var bEnc = new List<Tensor>();
            var bDec = new List<Tensor>();
            var thresholds = new List<Tensor>();
            var skips = new List<Tensor>();
            for (int i = 0; i < n; i++)
            {
                string file = layers[i];
                var p = ReadExcept(file, dtype, options.LazyEncoder ? "w_enc" : null, options.LazyDecoder ? "w_dec" : null);
                Keep(state, p);
                var w = options.LazyEncoder ? HeaderShape(file, "w_enc", 2) : SaeLensConversions.Need(p, "w_enc", file, 2).shape;
                if (i == 0) (dModel, dSae) = ((int)w[0], (int)w[1]);
                if (options.LazyEncoder)
                {
                    ShapedHeader(w, "w_enc", file, dModel, dSae);
                    encoders.Add(new(file, "w_enc", Transposed: true));
                }
                else wEnc.Add(Shaped(p["w_enc"], "w_enc", file, dModel, dSae).t());
                bEnc.Add(Shaped(SaeLensConversions.Need(p, "b_enc", file, 1), "b_enc", file, dSae));
                bDec.Add(Shaped(SaeLensConversions.Need(p, "b_dec", file, 1), "b_dec", file, dModel));
                thresholds.Add(Shaped(SaeLensConversions.Need(p, "threshold", file, 1), "threshold", file, dSae));
                if (options.LazyDecoder)
                {
                    ShapedHeader(HeaderShape(file, "w_dec", 3), "w_dec", file, dSae, n, dModel);
                    decoders.Add(new(file, "w_dec"));
                }
                else
                {
                    var wDec = Shaped(SaeLensConversions.Need(p, "w_dec", file, 3), "w_dec", file, dSae, n, dModel);
                    state[$"W_dec.{i}"] = wDec.narrow(1, i, n - i);
                }
                bool hasSkip = p.ContainsKey("affine_skip_connection");
                if ((skip ??= hasSkip) != hasSkip)
                    throw new SaeSharpException($"{file}: {(hasSkip ? "has" : "lacks")} 'affine_skip_connection' but layer 0 {(hasSkip ? "lacks" : "has")} one: every layer of a CLT has skip weights or none");
                if (hasSkip) skips.Add(Shaped(p["affine_skip_connection"], "affine_skip_connection", file, dModel, dModel));
            }
            string? repo = GemmaScope.Scope2RepoId(folder);
            return Build(new CrossLayerTranscoderConfig
            {
                NLayers = n, DTranscoder = dSae, DModel = dModel, JumpRelu = true, SkipConnection = skip == true,
                FeatureInputHook = input["blocks.0.".Length..], FeatureOutputHook = output["blocks.0.".Length..],
                ModelName = repo is null ? null : GemmaScope.Scope2ModelName(repo.Replace("gemma-scope-2", "gemma-3", StringComparison.Ordinal)),
                Format = "gemma-scope-2", Dtype = dtype,
            }, state, wEnc, bEnc, bDec, thresholds, skips, folder, options, decoders, encoders);
        }
        finally
        {
            foreach (var t in state.Values) t.Dispose();
        }
    }

    /// <summary>
    /// A transcoder set (circuit-tracer's <c>load_transcoder_set</c>): the folder's <c>config.yaml</c> has
    /// <c>model_kind: transcoder_set</c>, <c>feature_input_hook</c>, <c>feature_output_hook</c>, optional <c>model_name</c>,
    /// optional <c>activation</c> (<c>relu</c> ignores any thresholds; <c>topk</c>: circuit-tracer's TopK, k from the config's
    /// <c>k</c> or layer 0's file's <c>k</c> tensor) and optional
    /// <c>transcoders:</c>, the per-layer files in layer order (entry l is layer l): <c>hf://ORG/REPO/PATH[?revision=R]</c>
    /// (downloaded through <see cref="HfHubClient"/> with <paramref name="hub"/>), absolute, or relative to the folder
    /// (circuit-tracer: relative to the working directory). Without the list the layers are the folder's
    /// <c>layer_L.safetensors</c> (<c>TranscoderSet.to_safetensors</c>). A layer file is circuit-tracer's
    /// (<c>.safetensors</c>: <c>W_enc</c> [d_transcoder, d_model], <c>W_dec</c> [d_transcoder, d_model], <c>b_enc</c>,
    /// <c>b_dec</c>, optional <c>activation_function.threshold</c> and <c>W_skip</c>, applied as x·W_skipᵀ), Gemma Scope's
    /// (<c>.npz</c>: <c>W_enc</c> [d_model, d_transcoder], <c>W_dec</c>, <c>b_enc</c>, <c>b_dec</c>, <c>threshold</c>), a single
    /// SAE's folder (SaeSharp's own: a SAELens transcoder folder, or an <c>hf:ORG/REPO/PATH</c> spec naming one) or
    /// Gemma Scope 2's (<c>.safetensors</c> with <c>w_enc</c> [d_model, d_transcoder], <c>w_dec</c>, <c>b_enc</c>,
    /// <c>b_dec</c>, <c>threshold</c>, optional <c>affine_skip_connection</c>, applied as x·W). Every layer has a threshold
    /// or none, skip weights or none. Loaded as a <see cref="CrossLayerTranscoder"/> whose layer l writes only layer l
    /// (<see cref="CrossLayerTranscoderConfig.PerLayer"/>).
    /// </summary>
    public static CrossLayerTranscoder LoadTranscoderSet(string folder, HfHubOptions? hub = null, ScalarType dtype = ScalarType.Float32) =>
        LoadTranscoderSet(folder, new CrossLayerTranscoderLoadOptions { Dtype = dtype }, hub);

    /// <summary><see cref="LoadTranscoderSet(string, HfHubOptions?, ScalarType)"/> with <paramref name="options"/>: lazy decoders
    /// and encoders are read on demand from the layers' <c>.safetensors</c> files (a set with any <c>.npz</c> or folder layer
    /// is loaded eagerly).</summary>
    public static CrossLayerTranscoder LoadTranscoderSet(string folder, CrossLayerTranscoderLoadOptions options, HfHubOptions? hub = null)
    {
        ArgumentNullException.ThrowIfNull(folder);
        ArgumentNullException.ThrowIfNull(options);
        var dtype = options.Dtype;
        var decoders = new List<CrossLayerTranscoderFiles.Source>();
        var encoders = new List<CrossLayerTranscoderFiles.Source>();
        string configPath = Path.Combine(folder, SaeLensConversions.CircuitTracerConfigFile);
        var yaml = YamlFields.Load(configPath);
        string kind = YamlFields.RequiredStr(yaml, configPath, "model_kind");
        if (kind != TranscoderSetKind)
            throw new SaeSharpException($"{configPath}: model_kind is '{kind}', expected '{TranscoderSetKind}'");
        string input = YamlFields.RequiredStr(yaml, configPath, "feature_input_hook");
        string output = YamlFields.RequiredStr(yaml, configPath, "feature_output_hook");
        string? model = YamlFields.Str(yaml, configPath, "model_name");
        string? activation = YamlFields.Str(yaml, configPath, "activation");
        if (activation is not (null or "relu" or "jump_relu" or "jumprelu" or "topk"))
            throw new SaeSharpException($"{configPath}: activation '{activation}' is not supported (relu, topk, or none: JumpReLU when the files hold thresholds, else ReLU)");
        var layers = TranscoderSetFiles(yaml, configPath, folder, hub);
        int n = layers.Count;
        int? topK = activation == "topk" ? TopKOf(yaml, configPath, layers[0]) : null;
        bool files = layers.All(f => File.Exists(f) && f.EndsWith(".safetensors", StringComparison.OrdinalIgnoreCase));
        bool lazyEncoder = options.LazyEncoder && files, lazyDecoder = options.LazyDecoder && files;
        var state = new Dictionary<string, Tensor>(StringComparer.Ordinal);
        try
        {
            using var scope = NewDisposeScope();
            int dSae = 0, dModel = 0;
            bool? threshold = null, skip = null;
            var (wEnc, bEnc, bDec, thresholds, skips) = (new List<Tensor>(), new List<Tensor>(), new List<Tensor>(), new List<Tensor>(), new List<Tensor>());
            for (int i = 0; i < n; i++)
            {
                string file = layers[i];
                if (!File.Exists(file) && !Directory.Exists(file)) throw new SaeSharpException($"{file}: file not found (transcoder set layer {i}, {configPath})");
                var (w, wDec, be, bd, th, sk, encKey, decKey) = ReadLayerTranscoder(file, dtype, state, lazyEncoder, lazyDecoder,
                    ($"blocks.{i}.{input}", $"blocks.{i}.{output}", configPath));
                if (i == 0) (dSae, dModel) = ((int)be.shape[0], (int)bd.shape[0]);
                if (w is null) encoders.Add(new(file, encKey!, Transposed: encKey == "w_enc"));
                else wEnc.Add(Shaped(w, "W_enc", file, dSae, dModel));
                bEnc.Add(Shaped(be, "b_enc", file, dSae));
                bDec.Add(Shaped(bd, "b_dec", file, dModel));
                if (wDec is null) decoders.Add(new(file, decKey!, FirstOutput: i));
                else state[$"W_dec.{i}"] = Shaped(wDec, "W_dec", file, dSae, dModel).unsqueeze(1);
                bool hasThreshold = th is not null && activation is not ("relu" or "topk"), hasSkip = sk is not null;
                if ((threshold ??= hasThreshold) != hasThreshold)
                    throw new SaeSharpException($"{file}: {(hasThreshold ? "has" : "lacks")} a JumpReLU threshold but layer 0 {(hasThreshold ? "lacks" : "has")} one: every layer of a transcoder set has a threshold or none");
                if ((skip ??= hasSkip) != hasSkip)
                    throw new SaeSharpException($"{file}: {(hasSkip ? "has" : "lacks")} skip weights but layer 0 {(hasSkip ? "lacks" : "has")} them: every layer of a transcoder set has skip weights or none");
                if (hasThreshold) thresholds.Add(Shaped(th!, "threshold", file, dSae));
                if (hasSkip) skips.Add(Shaped(sk!, "W_skip", file, dModel, dModel));
            }
            return Build(new CrossLayerTranscoderConfig
            {
                NLayers = n, DTranscoder = dSae, DModel = dModel, JumpRelu = threshold == true, TopK = topK, SkipConnection = skip == true, PerLayer = true,
                FeatureInputHook = input, FeatureOutputHook = output, ModelName = model, Format = "circuit-tracer transcoder set", Dtype = dtype,
            }, state, wEnc, bEnc, bDec, thresholds, skips, folder, options, decoders, encoders);
        }
        finally
        {
            foreach (var t in state.Values) t.Dispose();
        }
    }

    /// <summary>A top-k set's k: the config's <c>k</c>, else the <c>k</c> tensor of layer 0's safetensors file (circuit-tracer's
    /// <c>SingleLayerTranscoder.to_safetensors</c> writes it).</summary>
    private static int TopKOf(YamlDotNet.RepresentationModel.YamlMappingNode yaml, string configPath, string layer0)
    {
        if (YamlFields.Str(yaml, configPath, "k") is not null) return YamlFields.RequiredInt(yaml, configPath, "k");
        if (File.Exists(layer0) && layer0.EndsWith(".safetensors", StringComparison.OrdinalIgnoreCase))
        {
            using var f = SafeTensorsFile.Open(layer0);
            if (f.Contains("k"))
            {
                using var k = f.Read("k", ScalarType.Int64);
                return k.numel() == 1 ? (int)k.reshape(-1)[0].item<long>() : throw new SaeSharpException($"{layer0}: tensor 'k' should hold one number, the top-k activation's k");
            }
        }
        throw new SaeSharpException($"{configPath}: activation 'topk' needs k: a 'k' entry, or a 'k' tensor in layer 0's file {layer0}");
    }

    /// <summary>The local per-layer files of a transcoder set, by layer: its config's <c>transcoders:</c> list (hf:// entries
    /// downloaded), else the folder's <c>layer_L.safetensors</c>. A file listed twice, or a <c>layer_N</c> path given for
    /// another layer or twice, is an error naming it.</summary>
    private static List<string> TranscoderSetFiles(YamlDotNet.RepresentationModel.YamlMappingNode yaml, string configPath, string folder, HfHubOptions? hub)
    {
        if (!yaml.Children.TryGetValue(new YamlDotNet.RepresentationModel.YamlScalarNode("transcoders"), out var node))
            return LayerFiles(folder, @"^layer_(\d+)\.safetensors$", "layer_{0}.safetensors");
        if (node is not YamlDotNet.RepresentationModel.YamlSequenceNode list || list.Children.Count == 0
            || list.Children.Any(c => c is not YamlDotNet.RepresentationModel.YamlScalarNode { Value.Length: > 0 }))
            throw new SaeSharpException($"{configPath}: 'transcoders' should be a non-empty list of per-layer file paths (entry L is layer L)");
        var entries = list.Children.Select(c => ((YamlDotNet.RepresentationModel.YamlScalarNode)c).Value!).ToList();
        var seen = new Dictionary<string, int>(StringComparer.Ordinal);
        var named = new Dictionary<int, int>();
        for (int i = 0; i < entries.Count; i++)
        {
            if (seen.TryGetValue(entries[i], out int first))
                throw new SaeSharpException($"{configPath}: transcoders lists '{entries[i]}' twice (layers {first} and {i}); entry L is layer L's file");
            seen[entries[i]] = i;
            string noQuery = entries[i].Split('?')[0];
            if (GemmaScope.FolderLayer(GemmaScope.FolderParts(noQuery)) is int layer
                || Regex.Match(Path.GetFileName(noQuery), @"^layer_(\d+)\.") is { Success: true } m && (layer = int.Parse(m.Groups[1].Value, CultureInfo.InvariantCulture)) >= 0)
            {
                if (named.TryGetValue(layer, out int other))
                    throw new SaeSharpException($"{configPath}: transcoders names layer {layer} twice (entries {other} and {i}: '{entries[other]}', '{entries[i]}')");
                if (layer != i)
                    throw new SaeSharpException($"{configPath}: transcoders entry {i} is '{entries[i]}', a layer {layer} file; entry L must be layer L's file");
                named[layer] = i;
            }
        }
        using var client = entries.Any(e => e.StartsWith("hf://", StringComparison.Ordinal)) ? new HfHubClient(hub ?? HfHubOptions.FromEnvironment()) : null;
        return entries.Select(e =>
        {
            if (e.StartsWith(SaeSource.HubPrefix, StringComparison.Ordinal) && !e.StartsWith("hf://", StringComparison.Ordinal))
                return SaeSource.Resolve(e, hub).Path;   // SaeSharp's hf:ORG/REPO[/PATH] of a single SAE (a SAELens transcoder folder)
            if (!e.StartsWith("hf://", StringComparison.Ordinal)) return Path.IsPathRooted(e) ? e : Path.Combine(folder, e);
            var uri = new Uri(e);
            var parts = uri.AbsolutePath.TrimStart('/').Split('/', 2);
            if (parts.Length != 2 || parts[1].Length == 0) throw new SaeSharpException($"{configPath}: '{e}' is not hf://ORG/REPO/PATH");
            var q = System.Web.HttpUtility.ParseQueryString(uri.Query)["revision"];
            return client!.DownloadFile($"{uri.Host}/{parts[0]}", Uri.UnescapeDataString(parts[1]), string.IsNullOrEmpty(q) ? "main" : q)!;
        }).ToList();
    }

    /// <summary>One per-layer transcoder's weights in circuit-tracer's orientation (W_enc, W_dec [d_transcoder, d_model]; b_enc;
    /// b_dec; threshold or null; W_skip [d_model, d_model] applied as x·W_skip, or null) from circuit-tracer's, Gemma Scope's
    /// (.npz) or Gemma Scope 2's file; what it reads is added to <paramref name="owned"/> (disposed by the caller). With
    /// <paramref name="lazyEncoder"/> / <paramref name="lazyDecoder"/> (a .safetensors file) W_enc / W_dec are null, left in
    /// the file, and EncKey / DecKey name them there.</summary>
    private static (Tensor? WEnc, Tensor? WDec, Tensor BEnc, Tensor BDec, Tensor? Threshold, Tensor? Skip, string? EncKey, string? DecKey) ReadLayerTranscoder(
        string file, ScalarType dtype, Dictionary<string, Tensor> owned, bool lazyEncoder, bool lazyDecoder, (string In, string Out, string Config) hooks)
    {
        if (Directory.Exists(file))
        {
            var (we, wd, be, bd, th, sk) = ReadSaeTranscoder(file, dtype, owned, hooks);
            return (we, wd, be, bd, th, sk, null, null);
        }
        if (file.EndsWith(".npz", StringComparison.OrdinalIgnoreCase))
        {
            var raw = Npy.LoadNpz(file);
            Keep(owned, raw.ToDictionary(kv => kv.Key, kv => kv.Value, StringComparer.Ordinal));
            var d = raw.ToDictionary(kv => kv.Key, kv => kv.Value.to(dtype), StringComparer.Ordinal);
            Keep(owned, d);
            return (SaeLensConversions.Need(d, "W_enc", file, 2).t(), SaeLensConversions.Need(d, "W_dec", file, 2), SaeLensConversions.Need(d, "b_enc", file, 1),
                SaeLensConversions.Need(d, "b_dec", file, 1), SaeLensConversions.Need(d, "threshold", file, 1), null, null, null);
        }
        bool gemma;
        using (var header = SafeTensorsFile.Open(file)) gemma = header.Contains("w_enc");
        string encKey = gemma ? "w_enc" : "W_enc", decKey = gemma ? "w_dec" : "W_dec";
        if (lazyEncoder) HeaderShape(file, encKey, 2);
        if (lazyDecoder) HeaderShape(file, decKey, 2);
        var p = ReadExcept(file, dtype, lazyEncoder ? encKey : null, lazyDecoder ? decKey : null);
        Keep(owned, p);
        var wEnc = lazyEncoder ? null : SaeLensConversions.Need(p, encKey, file, 2);
        var wDec = lazyDecoder ? null : SaeLensConversions.Need(p, decKey, file, 2);
        if (gemma)
            return (wEnc?.t(), wDec, SaeLensConversions.Need(p, "b_enc", file, 1),
                SaeLensConversions.Need(p, "b_dec", file, 1), SaeLensConversions.Need(p, "threshold", file, 1), p.GetValueOrDefault("affine_skip_connection"),
                lazyEncoder ? encKey : null, lazyDecoder ? decKey : null);
        return (wEnc, wDec, SaeLensConversions.Need(p, "b_enc", file, 1),
            SaeLensConversions.Need(p, "b_dec", file, 1), p.GetValueOrDefault("activation_function.threshold"), p.GetValueOrDefault("W_skip")?.t(),
            lazyEncoder ? encKey : null, lazyDecoder ? decKey : null);
    }

    /// <summary>A transcoder set's layer given as a single SAE's folder (SAELens's cfg.json + sae_weights.safetensors, or any
    /// folder <see cref="SaeLoader"/> reads): a <c>standard</c> or <c>jumprelu</c> transcoder (or its skip variant) with
    /// apply_b_dec_to_input false and no activation normalisation, d_in = d_out; its weights in circuit-tracer's orientation.
    /// The hooks its cfg.json records (hook_name, hook_name_out) must be the set's for its layer (<paramref name="hooks"/>).</summary>
    private static (Tensor WEnc, Tensor WDec, Tensor BEnc, Tensor BDec, Tensor? Threshold, Tensor? Skip) ReadSaeTranscoder(string folder, ScalarType dtype,
        Dictionary<string, Tensor> owned, (string In, string Out, string Config) hooks)
    {
        using var sae = SaeLoader.Load(folder);
        var c = sae.Cfg;
        foreach (var (recorded, expected, field, key) in new[] { (c.Metadata.HookName, hooks.In, "hook_name", "feature_input_hook"), (c.Metadata.HookNameOut, hooks.Out, "hook_name_out", "feature_output_hook") })
            if (recorded is not null && recorded != expected)
                throw new SaeSharpException($"{folder}: the transcoder was trained at {field} {recorded}, but {hooks.Config}'s {key} puts it at {expected}");
        if (sae is not (StandardSae or JumpReluSae) || c.ApplyBDecToInput || c.NormalizeActivations != "none" || c.DOut != c.DIn)
            throw new SaeSharpException($"{folder}: a transcoder set's layer must be a standard or jumprelu transcoder reading and writing d_model " +
                $"with apply_b_dec_to_input false and normalize_activations none (got {c.Architecture}, apply_b_dec_to_input {c.ApplyBDecToInput.ToString().ToLowerInvariant()}, " +
                $"normalize_activations {c.NormalizeActivations}, d_in {c.DIn}, d_out {c.DOut})");
        using var _ = no_grad();
        Tensor Own(Tensor t)
        {
            var copy = t.to(dtype).clone();
            owned[$"#raw{owned.Count}"] = copy;
            return copy;
        }
        return (Own(sae.WEnc.t()), Own(sae.WDec), Own(sae.BEnc), Own(sae.BDec), sae is JumpReluSae j ? Own(j.Threshold) : null,
            sae.HasSkip ? Own(sae.WSkip.t()) : null);   // SaeSharp's SAEs apply x·W_skipᵀ
    }

    /// <summary>Gemma Scope 2 layer files in <paramref name="folder"/>: (<c>params_layer_</c> or <c>layer_</c>, layer, path).</summary>
    private static List<(string Prefix, int Layer, string Path)> GemmaScope2LayerFiles(string folder) =>
        Directory.Exists(folder)
            ? Directory.EnumerateFiles(folder, "*.safetensors")
                .Select(f => (f, m: GemmaScope2LayerName.Match(Path.GetFileName(f))))
                .Where(x => x.m.Success)
                .Select(x => (x.m.Groups[1].Value, int.Parse(x.m.Groups[2].Value, CultureInfo.InvariantCulture), x.f))
                .ToList()
            : [];

    /// <summary>The files of <paramref name="pattern"/> (layer in group 1) in <paramref name="folder"/>, by layer 0..L−1.</summary>
    private static List<string> LayerFiles(string folder, string pattern, string nameFormat)
    {
        if (!Directory.Exists(folder)) throw new SaeSharpException($"{folder}: folder not found");
        var found = Directory.EnumerateFiles(folder, "*.safetensors")
            .Select(f => (f, m: Regex.Match(Path.GetFileName(f), pattern)))
            .Where(x => x.m.Success)
            .Select(x => (int.Parse(x.m.Groups[1].Value, CultureInfo.InvariantCulture), x.f))
            .ToList();
        return Contiguous(found, folder, nameFormat);
    }

    /// <summary>The paths ordered by layer, which must be exactly 0..L−1 (a gap is named).</summary>
    private static List<string> Contiguous(List<(int Layer, string Path)> found, string folder, string nameFormat)
    {
        var byLayer = found.GroupBy(x => x.Layer).ToDictionary(g => g.Key, g => g.First().Path);
        if (byLayer.Count == 0) throw new SaeSharpException($"{folder}: no {string.Format(CultureInfo.InvariantCulture, nameFormat, 0)}");
        int n = byLayer.Keys.Max() + 1;
        for (int i = 0; i < n; i++)
            if (!byLayer.ContainsKey(i))
                throw new SaeSharpException($"{Path.Combine(folder, string.Format(CultureInfo.InvariantCulture, nameFormat, i))}: file not found " +
                    $"(the CLT's files go up to layer {n - 1}; every layer 0..{n - 1} needs one)");
        return Enumerable.Range(0, n).Select(i => byLayer[i]).ToList();
    }

    /// <summary><paramref name="t"/> when its shape is <paramref name="shape"/>, else an error naming the file and tensor.</summary>
    private static Tensor Shaped(Tensor t, string key, string file, params long[] shape) =>
        t.shape.SequenceEqual(shape) ? t
            : throw new SaeSharpException($"{file}: tensor '{key}' has shape [{string.Join(", ", t.shape)}], expected [{string.Join(", ", shape)}] (the CLT's other layers fix the sizes)");

    /// <summary>Every tensor of the safetensors file <paramref name="file"/> as <paramref name="dtype"/> except those named in
    /// <paramref name="skip"/> (left in the file: a lazy CLT's decoders or encoders).</summary>
    private static Dictionary<string, Tensor> ReadExcept(string file, ScalarType dtype, params string?[] skip)
    {
        using var f = SafeTensorsFile.Open(file);
        return f.Names.Where(k => !skip.Contains(k)).ToDictionary(k => k, k => f.Read(k, dtype), StringComparer.Ordinal);
    }

    /// <summary>The header shape of tensor <paramref name="key"/> in <paramref name="file"/> (its data not read), which must
    /// have <paramref name="dims"/> dimensions.</summary>
    private static long[] HeaderShape(string file, string key, int dims)
    {
        using var f = SafeTensorsFile.Open(file);
        if (!f.Contains(key)) throw new SaeSharpException($"{file}: missing tensor '{key}' (tensors: {string.Join(", ", f.Names)})");
        var shape = f.Info(key).Shape;
        return shape.Length == dims ? shape
            : throw new SaeSharpException($"{file}: tensor '{key}' has shape [{string.Join(", ", shape)}], expected {dims} dimensions");
    }

    /// <summary><paramref name="shape"/> (a tensor's header shape, its data left in the file) when it is <paramref name="expected"/>,
    /// else the error <see cref="Shaped"/> gives.</summary>
    private static long[] ShapedHeader(long[] shape, string key, string file, params long[] expected) =>
        shape.SequenceEqual(expected) ? shape
            : throw new SaeSharpException($"{file}: tensor '{key}' has shape [{string.Join(", ", shape)}], expected [{string.Join(", ", expected)}] (the CLT's other layers fix the sizes)");

    /// <summary>Adds the loaded tensors to <paramref name="owned"/> (disposed by the caller) under unique keys.</summary>
    private static void Keep(Dictionary<string, Tensor> owned, params Dictionary<string, Tensor>[] loaded)
    {
        foreach (var d in loaded)
            foreach (var t in d.Values) owned[$"#raw{owned.Count}"] = t;
    }

    private static CrossLayerTranscoder Build(CrossLayerTranscoderConfig cfg, Dictionary<string, Tensor> state, List<Tensor> wEnc,
        List<Tensor> bEnc, List<Tensor> bDec, List<Tensor> thresholds, List<Tensor> skips, string source,
        CrossLayerTranscoderLoadOptions options, List<CrossLayerTranscoderFiles.Source> decoders, List<CrossLayerTranscoderFiles.Source> encoders)
    {
        using var scope = NewDisposeScope();
        var sd = state.Where(kv => !kv.Key.StartsWith('#')).ToDictionary(kv => kv.Key, kv => kv.Value, StringComparer.Ordinal);
        // The big per-layer weights are copied layer by layer into the parameters (no stacked copy).
        var perLayer = new Dictionary<string, List<Tensor>>(StringComparer.Ordinal);
        if (wEnc.Count > 0) perLayer["W_enc"] = wEnc;
        if (cfg.SkipConnection) perLayer["W_skip"] = skips;
        sd["b_enc"] = stack(bEnc, 0);
        sd["b_dec"] = stack(bDec, 0);
        if (cfg.JumpRelu) sd["activation_function.threshold"] = stack(thresholds, 0).unsqueeze(1);
        var files = decoders.Count > 0 || encoders.Count > 0
            ? new CrossLayerTranscoderFiles(decoders.Count > 0 ? [.. decoders] : null, encoders.Count > 0 ? [.. encoders] : null,
                cfg.NLayers, cfg.PerLayer, cfg.DTranscoder, cfg.DModel, options.Dtype)
            : null;
        CrossLayerTranscoder clt;
        try
        {
            clt = OwnedModules.Detach(new CrossLayerTranscoder(cfg, files));
        }
        catch
        {
            files?.Dispose();
            throw;
        }
        try
        {
            // Copied into the module's own parameters (which outlive this scope), key by key.
            var own = clt.state_dict();
            var missing = own.Keys.Where(k => !sd.ContainsKey(k) && !perLayer.ContainsKey(k)).ToList();
            var unexpected = sd.Keys.Concat(perLayer.Keys).Where(k => !own.ContainsKey(k)).ToList();
            if (missing.Count > 0 || unexpected.Count > 0)
                throw new SaeSharpException($"{source}: the CLT's state dict does not match (missing: {string.Join(", ", missing)}; unexpected: {string.Join(", ", unexpected)})");
            using (no_grad())
                foreach (var (k, t) in own)
                    if (perLayer.TryGetValue(k, out var layers))
                        for (int l = 0; l < layers.Count; l++) t[l].copy_(layers[l]);
                    else t.copy_(sd[k]);
            return clt;
        }
        catch
        {
            clt.Dispose();
            throw;
        }
    }
}
