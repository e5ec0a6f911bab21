using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace SaeSharp.Saes;

/// <summary>Shape and hooks of a <see cref="CrossLayerTranscoder"/> (circuit-tracer's constructor arguments).</summary>
public sealed record CrossLayerTranscoderConfig
{
    /// <summary>Layers the CLT spans (one encoder each; circuit-tracer <c>n_layers</c>).</summary>
    public required int NLayers { get; init; }
    /// <summary>Features per layer (circuit-tracer <c>d_transcoder</c>).</summary>
    public required int DTranscoder { get; init; }
    /// <summary>Width of the activations read and written (circuit-tracer <c>d_model</c>).</summary>
    public required int DModel { get; init; }
    /// <summary>JumpReLU with a per-feature threshold (f = pre·[pre &gt; θ], circuit-tracer's <c>jump_relu</c>), else ReLU.</summary>
    public bool JumpRelu { get; init; }
    /// <summary>circuit-tracer's <c>TopK</c> activation (a transcoder set with <c>activation: topk</c>): each row keeps its
    /// k largest pre-activations as they are (no ReLU, as circuit-tracer's) and zeroes the rest; null: JumpReLU or ReLU.</summary>
    public int? TopK { get; init; }
    /// <summary>A transcoder set (circuit-tracer's <c>TranscoderSet</c> of per-layer transcoders): layer l's features write
    /// only layer l's output, so <c>W_dec.l</c> is [d_transcoder, 1, d_model] (no zeros stored for the other layers);
    /// else a cross-layer transcoder, whose layer l writes layers l..L−1.</summary>
    public bool PerLayer { get; init; }
    /// <summary>Whether each layer adds x_l·W_skip[l] (circuit-tracer <c>skip_connection</c>, Gemma Scope 2's affine skip).</summary>
    public bool SkipConnection { get; init; }
    /// <summary>Hook (within a block) every encoder reads: <c>blocks.L.{this}</c> (circuit-tracer <c>feature_input_hook</c>).</summary>
    public string FeatureInputHook { get; init; } = "hook_resid_mid";
    /// <summary>Hook (within a block) whose activation layer L's reconstruction replaces: <c>blocks.L.{this}</c>
    /// (circuit-tracer <c>feature_output_hook</c>).</summary>
    public string FeatureOutputHook { get; init; } = "hook_mlp_out";
    /// <summary>The model it was trained on, when the files say (circuit-tracer config.yaml <c>model_name</c>).</summary>
    public string? ModelName { get; init; }
    /// <summary>Where it was loaded from ("circuit-tracer" or "gemma-scope-2"), for display.</summary>
    public string? Format { get; init; }
    /// <summary>The weights' dtype: float32 (default), or bfloat16 / float16 to halve memory beside a model run in that
    /// dtype (circuit-tracer's <c>dtype</c>, whose default is bfloat16), or float64 beside a float64 model (gradient checks).</summary>
    public ScalarType Dtype { get; init; } = ScalarType.Float32;
}

/// <summary>
/// A whole cross-layer transcoder (CLT), as circuit-tracer's <c>CrossLayerTranscoder</c>: layer l's encoder reads
/// x_l (the activation at <c>blocks.l.{FeatureInputHook}</c>), f_l = JumpReLU(x_l·W_enc[l]ᵀ + b_enc[l]) (or ReLU), and
/// the reconstruction of layer l's output (<c>blocks.l.{FeatureOutputHook}</c>, the MLP output) is
/// ŷ_l = Σ_{i ≤ l} f_i·W_dec[i][:, l − i, :] + b_dec[l] (+ x_l·W_skip[l]). With <see cref="CrossLayerTranscoderConfig.PerLayer"/>
/// it is a transcoder set (circuit-tracer's <c>TranscoderSet</c>): ŷ_l = f_l·W_dec[l][:, 0, :] + b_dec[l] (+ x_l·W_skip[l]). State-dict keys are circuit-tracer's:
/// <c>W_enc</c> [L, d_transcoder, d_model], <c>b_enc</c> [L, d_transcoder], <c>b_dec</c> [L, d_model],
/// <c>W_dec.i</c> [d_transcoder, L − i, d_model] ([d_transcoder, 1, d_model] in a transcoder set), <c>activation_function.threshold</c> [L, 1, d_transcoder] (JumpReLU),
/// <c>W_skip</c> [L, d_model, d_model] (with a skip connection). Load one with
/// <see cref="Interop.CrossLayerTranscoderLoader.Load(string, Hub.HfHubOptions?, ScalarType)"/>; splice it into a model with
/// <see cref="Evaluation.DownstreamEvaluator.EvaluateReplacement"/>.
/// </summary>
public sealed class CrossLayerTranscoder : nn.Module<Tensor, Tensor>
{
#pragma warning disable IDE1006 // fields named after circuit-tracer's state_dict keys
    private readonly Parameter? W_enc;
    private readonly Parameter b_enc;
    private readonly Parameter b_dec;
    private readonly ParameterList W_dec;
    private readonly Parameter? W_skip;
    private readonly JumpReluThreshold? activation_function;
#pragma warning restore IDE1006
    private readonly CrossLayerTranscoderFiles? _files;

    /// <summary>Shape, activation and hooks.</summary>
    public CrossLayerTranscoderConfig Cfg { get; }

    /// <summary>A CLT of shape <paramref name="cfg"/> with zero weights (load them with <c>load_state_dict</c>).</summary>
    public CrossLayerTranscoder(CrossLayerTranscoderConfig cfg) : this(cfg, null) { }

    /// <summary>A CLT whose decoders and / or encoders are read on demand from <paramref name="files"/> (not parameters).</summary>
    internal CrossLayerTranscoder(CrossLayerTranscoderConfig cfg, CrossLayerTranscoderFiles? files) : base(nameof(CrossLayerTranscoder))
    {
        ArgumentNullException.ThrowIfNull(cfg);
        if (cfg.NLayers <= 0 || cfg.DTranscoder <= 0 || cfg.DModel <= 0)
            throw new SaeSharpException($"cross-layer transcoder: n_layers, d_transcoder and d_model must be positive, got {cfg.NLayers}, {cfg.DTranscoder}, {cfg.DModel}");
        if (cfg.Dtype is not (ScalarType.Float32 or ScalarType.Float64 or ScalarType.BFloat16 or ScalarType.Float16))
            throw new SaeSharpException($"cross-layer transcoder: weights in {cfg.Dtype}: expected float32, float64, bfloat16 or float16");
        if (cfg.TopK is int k && (k <= 0 || k > cfg.DTranscoder || cfg.JumpRelu))
            throw new SaeSharpException($"cross-layer transcoder: top-k activation needs 0 < k ≤ d_transcoder = {cfg.DTranscoder} and no JumpReLU thresholds, got k = {k}{(cfg.JumpRelu ? " with thresholds" : "")}");
        Cfg = cfg;
        int l = cfg.NLayers, f = cfg.DTranscoder, d = cfg.DModel;
        var t = cfg.Dtype;
        _files = files;
        if (files?.LazyEncoder != true) W_enc = nn.Parameter(zeros(l, f, d, dtype: t), requires_grad: false);
        b_enc = nn.Parameter(zeros(l, f, dtype: t), requires_grad: false);
        b_dec = nn.Parameter(zeros(l, d, dtype: t), requires_grad: false);
        W_dec = new ParameterList();
        if (files?.LazyDecoder != true)
            for (int i = 0; i < l; i++) W_dec.Add(nn.Parameter(zeros(f, cfg.PerLayer ? 1 : l - i, d, dtype: t), requires_grad: false));
        if (cfg.SkipConnection) W_skip = nn.Parameter(zeros(l, d, d, dtype: t), requires_grad: false);
        if (cfg.JumpRelu) activation_function = new JumpReluThreshold(l, f, t);
        RegisterComponents();
    }

    /// <summary>Whether the decoders are read on demand from the CLT's files, only the active features' rows (circuit-tracer's
    /// <c>lazy_decoder</c>, its default): see <see cref="Interop.CrossLayerTranscoderLoadOptions"/>.</summary>
    public bool LazyDecoder => _files?.LazyDecoder == true;

    /// <summary>Whether the encoders are read on demand from the CLT's files, one layer at a time (circuit-tracer's
    /// <c>lazy_encoder</c>).</summary>
    public bool LazyEncoder => _files?.LazyEncoder == true;

    /// <summary>The last layer whose reconstruction layer <paramref name="layer"/>'s features write: the layer itself in a
    /// transcoder set (<see cref="CrossLayerTranscoderConfig.PerLayer"/>), else the last layer.</summary>
    public int LastOutputLayer(int layer)
    {
        CheckLayer(layer);
        return Cfg.PerLayer ? layer : Cfg.NLayers - 1;
    }

    /// <summary>The TransformerLens hook layer <paramref name="layer"/>'s encoder reads.</summary>
    public string InputHook(int layer) => $"blocks.{CheckLayer(layer)}.{Cfg.FeatureInputHook}";

    /// <summary>The TransformerLens hook layer <paramref name="layer"/>'s reconstruction replaces.</summary>
    public string OutputHook(int layer) => $"blocks.{CheckLayer(layer)}.{Cfg.FeatureOutputHook}";

    /// <summary><c>L{layer}/{index}</c>: how feature <paramref name="index"/> of layer <paramref name="layer"/> is named
    /// (<c>sae inspect</c>, attribution tables); without a layer (one SAE's feature), the index.</summary>
    public static string FeatureLabel(int index, int? layer) =>
        layer is int l ? $"L{l}/{index}" : index.ToString(System.Globalization.CultureInfo.InvariantCulture);

    /// <summary>Features of layer <paramref name="layer"/> [..., d_transcoder] from its input <paramref name="x"/> [..., d_model]
    /// (circuit-tracer <c>encode_layer</c>); with <paramref name="applyActivationFunction"/> false, the pre-activations.</summary>
    public Tensor EncodeLayer(Tensor x, int layer, bool applyActivationFunction = true)
    {
        ArgumentNullException.ThrowIfNull(x);
        CheckLayer(layer);
        CheckWidth(x, "input");
        using var scope = NewDisposeScope();
        var pre = matmul(x.to(b_enc.dtype), EncoderWeight(layer).t()).add(b_enc[layer], TorchScalars.One);
        return (applyActivationFunction ? ApplyActivationFunction(pre, layer) : pre).MoveToOuterDisposeScope();
    }

    /// <summary>Layer <paramref name="layer"/>'s activation of pre-activations <paramref name="pre"/> [..., d_transcoder]:
    /// pre·[pre &gt; θ] (JumpReLU), the k largest of each row (top-k sets) or ReLU (circuit-tracer <c>apply_activation_function</c>).</summary>
    public Tensor ApplyActivationFunction(Tensor pre, int layer)
    {
        ArgumentNullException.ThrowIfNull(pre);
        CheckLayer(layer);
        return activation_function is { } a ? pre * pre.gt(a.Threshold(layer)).to(pre.dtype)
            : Cfg.TopK is int k ? pre * zeros_like(pre).scatter_(-1, pre.topk(k, dim: -1).indexes, ones_like(pre))
            : nn.functional.relu(pre);
    }

    /// <summary>Features of every layer [L, ..., d_transcoder] from the inputs <paramref name="x"/> [L, ..., d_model]
    /// (circuit-tracer <c>encode</c>).</summary>
    public Tensor Encode(Tensor x)
    {
        CheckStacked(x, "inputs");
        using var scope = NewDisposeScope();
        return stack(Enumerable.Range(0, Cfg.NLayers).Select(l => EncodeLayer(x[l], l)), 0).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// Reconstruction of layer <paramref name="layer"/>'s output [..., d_model] from the features of layers 0..layer
    /// (<paramref name="features"/>[i], each [..., d_transcoder]; later entries are ignored, and in a transcoder set all but
    /// <paramref name="features"/>[layer]) and, with a skip connection,
    /// the layer's input <paramref name="input"/> [..., d_model]: Σ_{i ≤ l} f_i·W_dec[i][:, l − i, :] + b_dec[l] (+ x_l·W_skip[l]).
    /// </summary>
    public Tensor DecodeLayer(IReadOnlyList<Tensor> features, int layer, Tensor? input = null)
    {
        ArgumentNullException.ThrowIfNull(features);
        CheckLayer(layer);
        if (features.Count <= layer)
            throw new SaeSharpException($"cross-layer transcoder: layer {layer}'s reconstruction needs the features of layers 0..{layer}, got {features.Count} layers");
        using var scope = NewDisposeScope();
        var y = b_dec[layer].alias();
        for (int i = Cfg.PerLayer ? layer : 0; i <= layer; i++)
        {
            if (features[i].shape[^1] != Cfg.DTranscoder)
                throw new SaeSharpException($"cross-layer transcoder: features of layer {i} have {features[i].shape[^1]} values per row, expected d_transcoder = {Cfg.DTranscoder}");
            var fi = features[i].to(b_enc.dtype);
            y = y.add(LazyDecoder ? LazyDecode(fi, i, layer) : matmul(fi, W_dec[i].select(1, layer - i)), TorchScalars.One);
        }
        if (W_skip is not null)
        {
            if (input is null) throw new SaeSharpException("cross-layer transcoder has a skip connection: its reconstruction needs the layer's input");
            y = y.add(Skip(input, layer)!, TorchScalars.One);
        }
        return y.MoveToOuterDisposeScope();
    }

    /// <summary>Layer <paramref name="layer"/>'s skip term x_l·W_skip[l] [..., d_model] of its input <paramref name="input"/>
    /// [..., d_model] (circuit-tracer <c>compute_skip</c>), or null when the CLT has no skip connection.</summary>
    public Tensor? Skip(Tensor input, int layer)
    {
        ArgumentNullException.ThrowIfNull(input);
        CheckLayer(layer);
        if (W_skip is null) return null;
        CheckWidth(input, "input");
        return matmul(input.to(b_enc.dtype), W_skip[layer]);
    }

    /// <summary>Encoder rows W_enc[layer][features] [n, d_model] of the features <paramref name="features"/> (int64 [n]):
    /// each feature's pre-activation is x·row + b_enc (circuit-tracer's <c>encoder_vecs</c>).</summary>
    public Tensor EncoderRows(int layer, Tensor features)
    {
        ArgumentNullException.ThrowIfNull(features);
        CheckLayer(layer);
        return LazyEncoder ? _files!.EncoderRows(layer, features.data<long>().ToArray()) : W_enc![layer].index_select(0, features);
    }

    /// <summary>Decoder rows W_dec[layer][features, outputLayer − layer] [n, d_model]: what the features
    /// <paramref name="features"/> (int64 [n]) of layer <paramref name="layer"/> write, per unit activation, into the
    /// reconstruction of layer <paramref name="outputLayer"/> (layer..<see cref="LastOutputLayer"/>).</summary>
    public Tensor DecoderRows(int layer, int outputLayer, Tensor features)
    {
        ArgumentNullException.ThrowIfNull(features);
        CheckLayer(layer);
        CheckLayer(outputLayer);
        if (outputLayer < layer || outputLayer > LastOutputLayer(layer))
            throw new SaeSharpException($"{(Cfg.PerLayer ? "transcoder set" : "cross-layer transcoder")}: layer {layer}'s features write to layers {layer}..{LastOutputLayer(layer)}, not {outputLayer}");
        return LazyDecoder ? _files!.DecoderRows(layer, outputLayer, features.data<long>().ToArray())
            : W_dec[layer].index_select(0, features).select(1, outputLayer - layer);
    }

    /// <summary>Reconstructions of every layer [L, ..., d_model] from <paramref name="features"/> [L, ..., d_transcoder]
    /// (and the inputs [L, ..., d_model] with a skip connection): circuit-tracer <c>decode</c> (+ skip).</summary>
    public Tensor Decode(Tensor features, Tensor? inputs = null)
    {
        ArgumentNullException.ThrowIfNull(features);
        if (features.dim() < 2 || features.shape[0] != Cfg.NLayers)
            throw new SaeSharpException($"cross-layer transcoder: features must be [n_layers = {Cfg.NLayers}, ..., d_transcoder], got [{string.Join(", ", features.shape)}]");
        if (inputs is not null) CheckStacked(inputs, "inputs");
        using var scope = NewDisposeScope();
        var f = features.unbind(0);
        return stack(Enumerable.Range(0, Cfg.NLayers).Select(l => DecodeLayer(f, l, inputs?[l])), 0).MoveToOuterDisposeScope();
    }

    /// <summary>Every layer's reconstruction [L, ..., d_model] from its inputs <paramref name="x"/> [L, ..., d_model]
    /// (circuit-tracer <c>forward</c>).</summary>
    public override Tensor forward(Tensor x)
    {
        using var scope = NewDisposeScope();
        return Decode(Encode(x), x).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// Layer <paramref name="layer"/> as a single-layer transcoder (SAELens's <c>mntss_clt_layer_transcoder</c> view):
    /// its encoder, <c>b_dec[layer]</c>, and as <c>W_dec</c> [d_transcoder, d_model] the sum of its decoders to layers
    /// layer..L−1 (W_dec[layer].sum(1)): everything a feature writes, so W_dec·W_U is its direct logit effect, but not a
    /// reconstruction of any one layer's output. Architecture <c>jumprelu</c> (its thresholds) or <c>standard</c>; hooks
    /// <see cref="InputHook"/> → <see cref="OutputHook"/>; apply_b_dec_to_input false. For the weight-based feature tables
    /// (<c>sae features</c> of a whole CLT); the features themselves are <see cref="EncodeLayer"/>'s. A new module the caller
    /// disposes, in the CLT's dtype.
    /// </summary>
    public Sae LayerTranscoder(int layer)
    {
        CheckLayer(layer);
        var cfg = new SaeConfig
        {
            Architecture = activation_function is not null ? SaeArchitectures.JumpReLU : Cfg.TopK is null ? SaeArchitectures.Standard : SaeArchitectures.TopK,
            K = Cfg.TopK,
            DIn = Cfg.DModel, DOut = Cfg.DModel, DSae = Cfg.DTranscoder, ApplyBDecToInput = false,
            Dtype = SaeConfig.DtypeName(b_enc.dtype),
            Metadata = new SaeMetadata { ModelName = Cfg.ModelName, HookName = InputHook(layer) },
        };
        cfg.Metadata.HookNameOut = OutputHook(layer);
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        var weights = new Dictionary<string, Tensor>(StringComparer.Ordinal)
        {
            ["W_enc"] = EncoderWeight(layer).t(), ["b_enc"] = b_enc[layer], ["b_dec"] = b_dec[layer],
            ["W_dec"] = LazyDecoder ? _files!.DecoderSum(layer, layer, LastOutputLayer(layer) - layer + 1) : W_dec[layer].sum(1),
        };
        if (activation_function is { } a) weights["threshold"] = a.Threshold(layer);
        string where = $"cross-layer transcoder layer {layer}";
        return SaeWeights.Create(cfg, weights, where, where);
    }

    /// <summary>
    /// f_i·W_dec[i][:, layer − i] with the decoder read lazily: only the rows of the features active somewhere in
    /// <paramref name="fi"/> are read, into an otherwise zero [d_transcoder, d_model] matrix (freed at once), so the value is
    /// the eager product exactly. When <paramref name="fi"/> needs a gradient, it flows through the active features' rows
    /// alone (added as r − r, exactly zero in value), so autograd keeps only those rows, not the dense matrix; inactive
    /// features get a zero gradient (their attribution, activation × gradient, is zero either way).
    /// </summary>
    private Tensor LazyDecode(Tensor fi, int source, int layer)
    {
        using var scope = NewDisposeScope();
        var active = fi.detach().reshape(-1, Cfg.DTranscoder).ne(TorchScalars.Of(0.0)).any(0).nonzero().view(-1);
        var rows = _files!.DecoderRows(source, layer, active.data<long>().ToArray());
        Tensor part;
        using (no_grad())
        using (var w = zeros(Cfg.DTranscoder, Cfg.DModel, dtype: rows.dtype))
        {
            if (rows.shape[0] > 0) w.index_copy_(0, active, rows);
            part = matmul(fi.detach(), w);
        }
        if (fi.requires_grad)
        {
            var sparse = matmul(fi.index_select(-1, active), rows);
            part = part.add(sparse.sub(sparse.detach()), TorchScalars.One);
        }
        return part.MoveToOuterDisposeScope();
    }

    /// <summary>Layer <paramref name="layer"/>'s encoder [d_transcoder, d_model]: the parameter's row, or read from the file.</summary>
    private Tensor EncoderWeight(int layer) => LazyEncoder ? _files!.Encoder(layer) : W_enc![layer];

    /// <summary>Closes the files of a lazily loaded CLT.</summary>
    protected override void Dispose(bool disposing)
    {
        if (disposing) _files?.Dispose();
        base.Dispose(disposing);
    }

    private int CheckLayer(int layer) =>
        layer >= 0 && layer < Cfg.NLayers ? layer
            : throw new SaeSharpException($"cross-layer transcoder: layer {layer} is outside 0..{Cfg.NLayers - 1}");

    private void CheckWidth(Tensor x, string what)
    {
        if (x.dim() == 0 || x.shape[^1] != Cfg.DModel)
            throw new SaeSharpException($"cross-layer transcoder: {what} has shape [{string.Join(", ", x.shape)}], expected [..., d_model = {Cfg.DModel}]");
    }

    private void CheckStacked(Tensor x, string what)
    {
        ArgumentNullException.ThrowIfNull(x);
        if (x.dim() < 2 || x.shape[0] != Cfg.NLayers || x.shape[^1] != Cfg.DModel)
            throw new SaeSharpException($"cross-layer transcoder: {what} must be [n_layers = {Cfg.NLayers}, ..., d_model = {Cfg.DModel}], got [{string.Join(", ", x.shape)}]");
    }

    /// <summary>circuit-tracer's <c>JumpReLU</c> module: the thresholds [L, 1, d_transcoder] (state-dict key
    /// <c>activation_function.threshold</c>).</summary>
    private sealed class JumpReluThreshold : nn.Module
    {
#pragma warning disable IDE1006 // state_dict key
        private readonly Parameter threshold;
#pragma warning restore IDE1006

        public JumpReluThreshold(int layers, int features, ScalarType dtype) : base("JumpReLU")
        {
            threshold = nn.Parameter(zeros(layers, 1, features, dtype: dtype), requires_grad: false);
            RegisterComponents();
        }

        public Tensor Threshold(int layer) => threshold[layer, 0];
    }
}
