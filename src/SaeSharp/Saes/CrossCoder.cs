using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace SaeSharp.Saes;

/// <summary>How a crosscoder weighs latent i's activation in its sparsity term and its reported activations
/// (science-of-finetuning dictionary_learning <c>CodeNormalization</c>; the values are that enum's, stored in the
/// checkpoint as <c>code_normalization_id</c>).</summary>
public enum CodeNormalization
{
    /// <summary>Σ_l ‖W_dec[l, i]‖ (Anthropic's crosscoder loss; the default).</summary>
    Crosscoder = 1,
    /// <summary>‖W_dec[:, i]‖ over all layers concatenated (a plain SAE on the stacked activations).</summary>
    Sae = 2,
    /// <summary>α_sae·SAE + α_cc·CROSSCODER (<c>code_normalization_alpha_sae</c>, <c>code_normalization_alpha_cc</c>).</summary>
    Mixed = 3,
    /// <summary>1: no decoder-norm weighting.</summary>
    None = 4,
    /// <summary>‖W_dec[l, i]‖ per layer [L, dict_size] (summed over layers where one weight per latent is needed).</summary>
    Decoupled = 5,
}

/// <summary>Shape and settings of a <see cref="CrossCoder"/>: the fork's constructor arguments (its config.json fields).</summary>
public sealed record CrossCoderConfig
{
    /// <summary>Width of each layer's activation (<c>activation_dim</c>).</summary>
    public required int ActivationDim { get; init; }
    /// <summary>Number of latents (<c>dict_size</c>).</summary>
    public required int DictSize { get; init; }
    /// <summary>Layers (or models) read and reconstructed (<c>num_layers</c>).</summary>
    public required int NumLayers { get; init; }
    /// <summary><c>code_normalization</c> (default CROSSCODER).</summary>
    public CodeNormalization CodeNormalization { get; init; } = CodeNormalization.Crosscoder;
    /// <summary><c>code_normalization_alpha_sae</c> (MIXED only; default 1.0).</summary>
    public double CodeNormalizationAlphaSae { get; init; } = 1.0;
    /// <summary><c>code_normalization_alpha_cc</c> (MIXED only; default 0.1).</summary>
    public double CodeNormalizationAlphaCc { get; init; } = 0.1;
    /// <summary>BatchTopK's k (the buffer <c>k</c>): null for the L1 <c>CrossCoder</c>, set for <c>BatchTopKCrossCoder</c>.</summary>
    public int? K { get; init; }
    /// <summary>Whether the state dict carries the newer fork's activation-normaliser buffers (<c>target_rms</c>,
    /// <c>activation_mean</c>, <c>activation_std</c>, <c>activation_global_scale</c>); older checkpoints have none.</summary>
    public bool NormalizerBuffers { get; init; }
    /// <summary><c>target_rms</c> of the normaliser (default 1.0).</summary>
    public double TargetRms { get; init; } = 1.0;
    /// <summary>The input slots the encoder reads (<c>encoder_layers</c>, indices into the <see cref="NumLayers"/> slots;
    /// null: all). <c>encoder.weight</c> is then [encoder_layers.Count, d, dict_size].</summary>
    public IReadOnlyList<int>? EncoderLayers { get; init; }
    /// <summary>Slots the decoder writes (<c>num_decoder_layers</c>; null: <see cref="NumLayers"/>).</summary>
    public int? NumDecoderLayers { get; init; }

    /// <summary>The slots the encoder reads (<see cref="EncoderLayers"/>' count, else <see cref="NumLayers"/>).</summary>
    public int EncoderLayerCount => EncoderLayers?.Count ?? NumLayers;
    /// <summary>The slots the decoder writes: x̂ is [batch, DecoderLayerCount, d].</summary>
    public int DecoderLayerCount => NumDecoderLayers ?? NumLayers;
    /// <summary>True when x̂ has the input's shape (the decoder writes every input slot).</summary>
    public bool ReconstructsInput => DecoderLayerCount == NumLayers;

    /// <summary>"crosscoder" or "batchtopk_crosscoder".</summary>
    public string Architecture => K is null ? CrossCoder.ArchitectureName : CrossCoder.BatchTopKArchitectureName;
    /// <summary>The fork's class name: <c>CrossCoder</c> or <c>BatchTopKCrossCoder</c>.</summary>
    public string DictClass => K is null ? "CrossCoder" : "BatchTopKCrossCoder";
}

/// <summary>The fork's <c>CrossCoderEncoder</c>: <c>weight</c> [L, d, dict_size], <c>bias</c> [dict_size].</summary>
public sealed class CrossCoderEncoder : nn.Module
{
#pragma warning disable IDE1006 // state_dict keys
    private readonly Parameter weight;
    private readonly Parameter bias;
#pragma warning restore IDE1006

    internal CrossCoderEncoder(int layers, int d, int dictSize) : base("encoder")
    {
        weight = nn.Parameter(zeros(layers, d, dictSize));
        bias = nn.Parameter(zeros(dictSize));
        RegisterComponents();
    }

    /// <summary>[L, d, dict_size].</summary>
    public Parameter Weight => weight;
    /// <summary>[dict_size].</summary>
    public Parameter Bias => bias;
}

/// <summary>The fork's <c>CrossCoderDecoder</c>: <c>weight</c> [L, dict_size, d], <c>bias</c> [L, d].</summary>
public sealed class CrossCoderDecoder : nn.Module
{
#pragma warning disable IDE1006 // state_dict keys
    private readonly Parameter weight;
    private readonly Parameter bias;
#pragma warning restore IDE1006

    internal CrossCoderDecoder(int layers, int d, int dictSize) : base("decoder")
    {
        weight = nn.Parameter(zeros(layers, dictSize, d));
        bias = nn.Parameter(zeros(layers, d));
        RegisterComponents();
    }

    /// <summary>[L, dict_size, d].</summary>
    public Parameter Weight => weight;
    /// <summary>[L, d].</summary>
    public Parameter Bias => bias;
}

/// <summary>
/// An acausal crosscoder (Anthropic, "Sparse Crosscoders", 2024) as the science-of-finetuning fork of
/// dictionary_learning writes it (<c>CrossCoder</c>, <c>BatchTopKCrossCoder</c>). Input x [batch, L, d] (L layers, or
/// L models at one hook for model diffing); one latent vector per row:
/// f = ReLU(Σ_l x_l·W_enc[l] + b_enc) = ReLU(einsum("bld,ldD->bD") + b) [batch, dict_size];
/// x̂_l = f·W_dec[l] + b_dec[l] [batch, L, d]. State-dict keys are the fork's: <c>encoder.weight</c> [L, d, dict_size],
/// <c>encoder.bias</c> [dict_size], <c>decoder.weight</c> [L, dict_size, d], <c>decoder.bias</c> [L, d],
/// <c>code_normalization_id</c> (int64 scalar), for BatchTopK <c>k</c> (int32 scalar) and <c>threshold</c> (float32
/// scalar), and, when the checkpoint had them, the activation normaliser's buffers.
/// BatchTopK: training keeps the batch's k·batch largest f·c (c the code normalisation, <see cref="CodeNormalizationWeights"/>),
/// inference keeps f where f·c &gt; <c>threshold</c>. Load and save with <see cref="Interop.CrossCoderFormat"/>.
/// </summary>
public sealed class CrossCoder : nn.Module<Tensor, Tensor>
{
    /// <summary>Architecture name of the L1 crosscoder.</summary>
    public const string ArchitectureName = "crosscoder";
    /// <summary>Architecture name of the BatchTopK crosscoder.</summary>
    public const string BatchTopKArchitectureName = "batchtopk_crosscoder";

#pragma warning disable IDE1006 // state_dict keys
    private readonly CrossCoderEncoder encoder;
    private readonly CrossCoderDecoder decoder;
    private readonly Tensor code_normalization_id;
    private readonly Tensor? k;
    private readonly Tensor? threshold;
    private readonly Tensor? target_rms;
    private readonly Tensor? activation_mean;
    private readonly Tensor? activation_std;
    private readonly Tensor? activation_global_scale;
#pragma warning restore IDE1006
    private readonly long[]? _encoderLayers; // the slots x[:, encoder_layers] (not a tensor field: that would be a checkpoint key)

    /// <summary>Shape and settings.</summary>
    public CrossCoderConfig Cfg { get; }

    /// <summary>A crosscoder of shape <paramref name="cfg"/> with zero weights (initialise with <see cref="InitializeWeights"/>
    /// or load with <c>load_state_dict</c>); normaliser buffers, when asked for, are NaN (the fork's "no normaliser").</summary>
    public CrossCoder(CrossCoderConfig cfg) : base(cfg?.DictClass ?? "CrossCoder")
    {
        ArgumentNullException.ThrowIfNull(cfg);
        if (cfg.ActivationDim <= 0 || cfg.DictSize <= 0 || cfg.NumLayers <= 0)
            throw new SaeSharpException($"crosscoder: activation_dim, dict_size and num_layers must be positive, got {cfg.ActivationDim}, {cfg.DictSize}, {cfg.NumLayers}");
        if (!Enum.IsDefined(cfg.CodeNormalization))
            throw new SaeSharpException($"crosscoder: unknown code_normalization id {(int)cfg.CodeNormalization} (known: {KnownNormalizations})");
        if (cfg.K is { } kk && (kk <= 0 || kk > cfg.DictSize))
            throw new SaeSharpException($"crosscoder: k must be in 1..dict_size ({cfg.DictSize}), got {kk}");
        if (cfg.EncoderLayers is { } el)
        {
            if (el.Count == 0 || el.Any(i => i < 0 || i >= cfg.NumLayers) || el.Distinct().Count() != el.Count)
                throw new SaeSharpException($"crosscoder: encoder_layers [{string.Join(", ", el)}] must be distinct slots in 0..{cfg.NumLayers - 1} (num_layers {cfg.NumLayers})");
        }
        if (cfg.NumDecoderLayers is <= 0)
            throw new SaeSharpException($"crosscoder: num_decoder_layers must be positive, got {cfg.NumDecoderLayers}");
        if (cfg.K is not null && cfg.CodeNormalization == CodeNormalization.Decoupled && cfg.DecoderLayerCount != cfg.NumLayers)
            throw new SaeSharpException($"batchtopk_crosscoder: DECOUPLED keeps one threshold per input slot ({cfg.NumLayers}) and one code weight per decoded slot ({cfg.DecoderLayerCount}); the fork's encode_decoupled needs them equal");
        Cfg = cfg;
        int l = cfg.NumLayers, d = cfg.ActivationDim, n = cfg.DictSize;
        encoder = new CrossCoderEncoder(cfg.EncoderLayerCount, d, n);
        decoder = new CrossCoderDecoder(cfg.DecoderLayerCount, d, n);
        _encoderLayers = cfg.EncoderLayers?.Select(i => (long)i).ToArray();
        code_normalization_id = tensor((long)cfg.CodeNormalization);
        if (cfg.K is { } kv)
        {
            k = tensor(kv, ScalarType.Int32);
            // DECOUPLED: one threshold per layer (the fork's [-1.0] * num_layers).
            threshold = cfg.CodeNormalization == CodeNormalization.Decoupled ? full(l, TorchScalars.Of(-1.0), ScalarType.Float32) : tensor(-1f);
        }
        if (cfg.NormalizerBuffers)
        {
            target_rms = tensor((float)cfg.TargetRms);
            activation_mean = full(l, d, TorchScalars.Of(double.NaN));
            activation_std = full(l, d, TorchScalars.Of(double.NaN));
            activation_global_scale = ones(l);
        }
        RegisterComponents();
    }

    /// <summary>True for a DECOUPLED BatchTopK crosscoder (the fork's <c>decoupled_code</c> in <c>BatchTopKCrossCoder</c>): its
    /// codes are per slot, f [batch, L, dict_size], latent i kept in slot l where f_i·‖W_dec[l, i]‖ passes slot l's threshold
    /// (inference) or is among slot l's k·batch largest (training).</summary>
    public bool DecoupledCodes => Cfg.K is not null && Cfg.CodeNormalization == CodeNormalization.Decoupled;

    /// <summary>Refuses a crosscoder with per-slot codes (<see cref="DecoupledCodes"/>) for <paramref name="what"/>, which edits
    /// or regresses one code per latent.</summary>
    public void CheckSharedCodes(string what)
    {
        if (DecoupledCodes)
            throw new SaeSharpException($"{what}: the BatchTopK crosscoder's code normalisation is DECOUPLED, so a latent has one code per slot (f [batch, num_layers, dict_size]), not the one code per latent this needs");
    }

    /// <summary>One code per latent [batch, dict_size] from <see cref="Encode"/>'s f: f itself, or for DECOUPLED codes the
    /// latent's f where any slot kept it (max over slots: every slot's code is the same ReLU output, masked per slot).</summary>
    public static Tensor LatentCodes(Tensor f)
    {
        ArgumentNullException.ThrowIfNull(f);
        return f.Dimensions == 3 ? f.amax([1]) : f.alias();
    }

    /// <summary>The code normalisations by their fork names.</summary>
    public static string KnownNormalizations => string.Join(", ", Enum.GetValues<CodeNormalization>().Select(c => c.ToString().ToUpperInvariant()));

    /// <summary>The <see cref="CodeNormalization"/> named <paramref name="name"/> (any case, as the fork's <c>from_string</c>).</summary>
    public static CodeNormalization ParseCodeNormalization(string name, string source)
    {
        ArgumentNullException.ThrowIfNull(name);
        // The fork's trainers write str(CodeNormalization.X), "CodeNormalization.X"; save_pretrained writes "X".
        string bare = name.StartsWith("CodeNormalization.", StringComparison.Ordinal) ? name["CodeNormalization.".Length..] : name;
        return Enum.TryParse<CodeNormalization>(bare, ignoreCase: true, out var c) && Enum.IsDefined(c) && !int.TryParse(bare, out _)
            ? c
            : throw new SaeSharpException($"{source}: unknown code_normalization '{name}' (known: {KnownNormalizations})");
    }

    /// <summary>The encoder (<c>encoder.weight</c>, <c>encoder.bias</c>).</summary>
    public CrossCoderEncoder Encoder => encoder;
    /// <summary>The decoder (<c>decoder.weight</c>, <c>decoder.bias</c>).</summary>
    public CrossCoderDecoder Decoder => decoder;
    /// <summary>The BatchTopK inference threshold (float32 scalar, −1 until estimated); null for the L1 crosscoder.</summary>
    public Tensor? Threshold => threshold;
    /// <summary>The BatchTopK k buffer (int32 scalar); null for the L1 crosscoder.</summary>
    public Tensor? KBuffer => k;

    /// <summary>True when the normaliser buffers hold finite statistics (the fork's <c>has_activation_normalizer</c>).</summary>
    public bool HasActivationNormalizer
    {
        get
        {
            if (activation_mean is null || activation_std is null) return false;
            using var scope = NewDisposeScope();
            return !activation_mean.isnan().any().item<bool>() && !activation_std.isnan().any().item<bool>();
        }
    }

    /// <summary>
    /// Initialises as the fork: W_enc ~ kaiming_uniform over [L, d, dict_size] (fan_in = d·dict_size, bound
    /// √6/√fan_in), then, with <paramref name="normInitScale"/>, each W_enc[l, :, i] rescaled to that norm; W_dec[l] = W_enc[l]ᵀ
    /// (<c>init_with_transpose</c>); biases zero. The fork's defaults: no rescaling for <c>CrossCoder</c>, 1.0 for
    /// <c>BatchTopKCrossCoder</c>.
    /// </summary>
    public void InitializeWeights(Generator? generator, double? normInitScale)
    {
        using var _ = no_grad();
        using var scope = NewDisposeScope();
        int l = Cfg.EncoderLayerCount, d = Cfg.ActivationDim, n = Cfg.DictSize;
        double bound = Math.Sqrt(2.0) * Math.Sqrt(3.0 / ((double)d * n));
        var w = rand(new long[] { l, d, n }, generator: generator).mul_(TorchScalars.Of(2 * bound)).sub_(TorchScalars.Of(bound));
        if (normInitScale is { } s)
        {
            using var scale = s.ToScalar();
            w = w.div(TorchScalars.VectorNorm(w, 2, [1], keepdim: true)).mul(scale);
        }
        encoder.Weight.copy_(w);
        encoder.Bias.fill_(TorchScalars.Of(0));
        if (l == Cfg.DecoderLayerCount)
        {
            decoder.Weight.copy_(w.permute(0, 2, 1));
        }
        else
        {
            // init_with_transpose=False (the transpose has the encoder's slot count): kaiming_uniform over [L_dec, dict_size, d]
            // (fan_in = dict_size·d: the same bound), rows rescaled to norm_init_scale along d.
            var wd = rand(new long[] { Cfg.DecoderLayerCount, n, d }, generator: generator).mul_(TorchScalars.Of(2 * bound)).sub_(TorchScalars.Of(bound));
            if (normInitScale is { } s2)
            {
                using var scale = s2.ToScalar();
                wd = wd.div(TorchScalars.VectorNorm(wd, 2, [2], keepdim: true)).mul(scale);
            }
            decoder.Weight.copy_(wd);
        }
        decoder.Bias.fill_(TorchScalars.Of(0));
    }

    /// <summary>The normaliser applied to inputs (identity without statistics): (x − mean)·global_scale[l].</summary>
    public Tensor NormalizeActivations(Tensor x)
    {
        if (!HasActivationNormalizer) return x.alias();
        using var scope = NewDisposeScope();
        return ((x - activation_mean!) * activation_global_scale!.unsqueeze(0).unsqueeze(-1)).MoveToOuterDisposeScope();
    }

    /// <summary>The inverse of <see cref="NormalizeActivations"/>: x / (global_scale[l] + 1e-8) + mean.</summary>
    public Tensor DenormalizeActivations(Tensor x)
    {
        if (!HasActivationNormalizer) return x.alias();
        using var scope = NewDisposeScope();
        return (x / activation_global_scale!.unsqueeze(0).unsqueeze(-1).add(TorchScalars.Of(1e-8), TorchScalars.One)).add(activation_mean!, TorchScalars.One).MoveToOuterDisposeScope();
    }

    /// <summary>Sets the normaliser's statistics mean, std [L, d] (global_scale[l] = target_rms / √(Σ_d std² + 1e-8)).</summary>
    public void SetActivationNormalizer(Tensor mean, Tensor std)
    {
        if (activation_mean is null || activation_std is null || activation_global_scale is null || target_rms is null)
            throw new SaeSharpException("crosscoder: built without normaliser buffers (CrossCoderConfig.NormalizerBuffers)");
        CheckNormalizerFitsDecoder(settingStatistics: true);
        CheckNoDecoupledNormalizer(settingStatistics: true);
        CheckShape(mean, "activation_mean", Cfg.NumLayers, Cfg.ActivationDim);
        CheckShape(std, "activation_std", Cfg.NumLayers, Cfg.ActivationDim);
        using var _ = no_grad();
        using var scope = NewDisposeScope();
        activation_mean.copy_(mean);
        activation_std.copy_(std);
        activation_global_scale.copy_(target_rms / std.pow(TorchScalars.Of(2)).sum(-1).add(TorchScalars.Of(1e-8), TorchScalars.One).sqrt());
    }

    /// <summary>Refuses an activation normaliser on a decoder of another slot count: the fork denormalises x̂ with the
    /// input slots' statistics and asserts the shapes agree.</summary>
    internal void CheckNormalizerFitsDecoder(bool settingStatistics = false)
    {
        if (!Cfg.ReconstructsInput && (settingStatistics || HasActivationNormalizer))
            throw new SaeSharpException($"crosscoder: an activation normaliser with num_decoder_layers {Cfg.DecoderLayerCount} ≠ num_layers {Cfg.NumLayers}: the fork's denormalisation of x̂ needs one statistic per decoded slot (its shape assertion fails)");
    }

    /// <summary>Refuses an activation normaliser on a DECOUPLED BatchTopK crosscoder: the fork's <c>encode_decoupled</c> calls
    /// <c>CrossCoder.encode</c>, which normalises again inputs <c>BatchTopKCrossCoder.encode</c> (and the trainer) already
    /// normalised, so its forward with statistics applies them twice, which SaeSharp does not reproduce.</summary>
    internal void CheckNoDecoupledNormalizer(bool settingStatistics = false)
    {
        if (DecoupledCodes && (settingStatistics || HasActivationNormalizer))
            throw new SaeSharpException("batchtopk_crosscoder: DECOUPLED with an activation normaliser is not supported: the fork's encode_decoupled normalises inputs that BatchTopKCrossCoder.encode already normalised (twice in all), and SaeSharp does not copy that");
    }

    /// <summary>Refuses a crosscoder whose decoder writes another number of slots than it reads (num_decoder_layers ≠
    /// num_layers), for <paramref name="what"/>, which compares x̂ with x slot by slot.</summary>
    public void CheckReconstructsInput(string what)
    {
        if (!Cfg.ReconstructsInput)
            throw new SaeSharpException($"{what}: the crosscoder decodes {Cfg.DecoderLayerCount} slots (num_decoder_layers) but reads {Cfg.NumLayers} (num_layers), so x̂ cannot be compared with x slot by slot (the fork's trainers cannot train it either)");
    }

    private static void CheckShape(Tensor t, string name, params long[] shape)
    {
        if (!t.shape.SequenceEqual(shape))
            throw new SaeSharpException($"crosscoder: {name} has shape [{string.Join(", ", t.shape)}], expected [{string.Join(", ", shape)}]");
    }

    /// <summary>Refuses anything but [batch, L, d] with this crosscoder's L and d.</summary>
    public void CheckInput(Tensor x, string what = "input")
    {
        ArgumentNullException.ThrowIfNull(x);
        if (x.Dimensions != 3 || x.shape[1] != Cfg.NumLayers || x.shape[2] != Cfg.ActivationDim)
            throw new SaeSharpException($"crosscoder: {what} has shape [{string.Join(", ", x.shape)}], expected [batch, num_layers = {Cfg.NumLayers}, activation_dim = {Cfg.ActivationDim}]");
    }

    /// <summary>ReLU(einsum("bld,ldD->bD", x, W_enc) + b_enc) of already-normalised x: the fork's <c>CrossCoderEncoder.forward</c>.</summary>
    public Tensor EncodePostRelu(Tensor x)
    {
        CheckInput(x);
        using var scope = NewDisposeScope();
        long b = x.shape[0];
        if (_encoderLayers is not null) x = x.index_select(1, tensor(_encoderLayers, device: x.device)); // the fork's x[:, encoder_layers]
        var pre = matmul(x.to(encoder.Weight.dtype).reshape(b, -1), encoder.Weight.reshape(-1, Cfg.DictSize)).add(encoder.Bias, TorchScalars.One);
        return nn.functional.relu(pre).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// The code normalisation c (the fork's <c>get_code_normalization</c>): CROSSCODER Σ_l ‖W_dec[l, i]‖ [1, dict_size];
    /// SAE ‖W_dec[:, i]‖ [1, dict_size]; MIXED α_sae·SAE + α_cc·CROSSCODER; NONE the scalar 1; DECOUPLED ‖W_dec[l, i]‖ [L, dict_size].
    /// </summary>
    public Tensor CodeNormalizationWeights()
    {
        using var scope = NewDisposeScope();
        var dw = decoder.Weight;
        Tensor w = Cfg.CodeNormalization switch
        {
            CodeNormalization.Sae => TorchScalars.VectorNorm(dw, 2, [0, 2]).unsqueeze(0),
            CodeNormalization.Mixed => TorchScalars.VectorNorm(dw, 2, [0, 2]).unsqueeze(0).mul(TorchScalars.Of(Cfg.CodeNormalizationAlphaSae))
                                       .add(TorchScalars.VectorNorm(dw, 2, [2]).sum(0, keepdim: true).mul(TorchScalars.Of(Cfg.CodeNormalizationAlphaCc)), TorchScalars.One),
            CodeNormalization.None => tensor(1f, dtype: dw.dtype, device: dw.device),
            CodeNormalization.Crosscoder => TorchScalars.VectorNorm(dw, 2, [2]).sum(0, keepdim: true),
            CodeNormalization.Decoupled => TorchScalars.VectorNorm(dw, 2, [2]),
            _ => throw new SaeSharpException($"crosscoder: code normalization {Cfg.CodeNormalization} not implemented"),
        };
        return w.MoveToOuterDisposeScope();
    }

    /// <summary>c with one weight per latent: DECOUPLED summed over layers (as the fork's <c>get_activations</c> and forward).</summary>
    public Tensor LatentNormalizationWeights()
    {
        using var scope = NewDisposeScope();
        var w = CodeNormalizationWeights();
        if (Cfg.CodeNormalization == CodeNormalization.Decoupled) w = w.sum(0, keepdim: true);
        return w.MoveToOuterDisposeScope();
    }

    /// <summary>Latents f [batch, dict_size] (DECOUPLED BatchTopK: [batch, L, dict_size]) of x [batch, L, d] (normalised first when the checkpoint has statistics): ReLU for
    /// the L1 crosscoder, ReLU kept where f·c &gt; threshold for BatchTopK (the fork's <c>encode</c>, <c>use_threshold=True</c>).</summary>
    public Tensor Encode(Tensor x)
    {
        CheckInput(x);
        using var scope = NewDisposeScope();
        var f = EncodePostRelu(NormalizeActivations(x));
        if (DecoupledCodes)
        {
            // encode_decoupled, use_threshold: f [b, L, N] = f_i where f_i·‖W_dec[l, i]‖ > threshold[l].
            var scaled = f.unsqueeze(1) * CodeNormalizationWeights().unsqueeze(0);
            f = f.unsqueeze(1) * scaled.gt(threshold!.view(1, -1, 1));
        }
        else if (threshold is not null)
        {
            f = f * (f * CodeNormalizationWeights()).gt(threshold);
        }
        return f.MoveToOuterDisposeScope();
    }

    /// <summary>
    /// BatchTopK training encode (the fork's <c>use_threshold=False</c>) of normalised x: keeps the k·batch largest entries
    /// of f·c over the whole batch. Returns f [batch, dict_size], the post-ReLU f before selection and f·c. DECOUPLED: the
    /// k·batch largest per slot, f [batch, L, dict_size], and f·c summed over the slots (what the fork's AuxK ranks).
    /// </summary>
    public (Tensor F, Tensor PostRelu, Tensor PostReluScaled) EncodeBatchTopK(Tensor x, int k)
    {
        if (Cfg.K is null) throw new SaeSharpException("crosscoder: EncodeBatchTopK needs a BatchTopK crosscoder");
        using var scope = NewDisposeScope();
        var post = EncodePostRelu(x);
        if (DecoupledCodes)
        {
            // encode_decoupled, use_threshold=False: per slot l, the k·batch largest f_i·‖W_dec[l, i]‖ over the batch.
            long b = x.shape[0], n = Cfg.DictSize;
            var perSlot = post.unsqueeze(1) * CodeNormalizationWeights().unsqueeze(0); // [b, L, N]
            var flat = perSlot.transpose(0, 1).flatten(1); // [L, b·N]
            var (_, top) = flat.topk((int)Math.Min((long)k * b, flat.shape[1]), dim: -1, sorted: false);
            var mask = zeros_like(flat).scatter(1, top, ones(top.shape, flat.dtype, flat.device)).view(Cfg.NumLayers, b, n).transpose(0, 1);
            var fd = post.unsqueeze(1) * mask;
            return (fd.MoveToOuterDisposeScope(), post.MoveToOuterDisposeScope(), perSlot.sum(1).MoveToOuterDisposeScope());
        }
        var scaled = post * CodeNormalizationWeights();
        long total = Math.Min((long)k * x.shape[0], scaled.numel());
        var (_, idx) = scaled.flatten().topk((int)total, sorted: false);
        var f = zeros_like(post).flatten().scatter(0, idx, post.flatten().index_select(0, idx)).reshape(post.shape);
        return (f.MoveToOuterDisposeScope(), post.MoveToOuterDisposeScope(), scaled.MoveToOuterDisposeScope());
    }

    /// <summary>x̂ = einsum("bD,lDd->bld", f, W_dec) + b_dec [batch, L_dec, d] (L_dec = num_decoder_layers; denormalised when the checkpoint has statistics).</summary>
    public Tensor Decode(Tensor f)
    {
        ArgumentNullException.ThrowIfNull(f);
        if (!(f.Dimensions == 2 || f.Dimensions == 3 && f.shape[1] == Cfg.DecoderLayerCount) || f.shape[^1] != Cfg.DictSize)
            throw new SaeSharpException($"crosscoder: latents have shape [{string.Join(", ", f.shape)}], expected [batch, dict_size = {Cfg.DictSize}] (or per slot [batch, {Cfg.DecoderLayerCount}, dict_size])");
        using var scope = NewDisposeScope();
        return DenormalizeActivations(DecodeNoBias(f).add(decoder.Bias, TorchScalars.One)).MoveToOuterDisposeScope();
    }

    /// <summary>einsum("bD,lDd->bld", f, W_dec) (f [b, L, D]: "blD,lDd->bld") without b_dec and without denormalising (the fork's <c>decoder(f, add_bias=False)</c>).</summary>
    public Tensor DecodeNoBias(Tensor f)
    {
        using var scope = NewDisposeScope();
        long b = f.shape[0];
        if (f.Dimensions == 3) // einsum("blf,lfd->bld"): each slot decodes its own codes
            return bmm(f.to(decoder.Weight.dtype).transpose(0, 1), decoder.Weight).transpose(0, 1).MoveToOuterDisposeScope();
        var w = decoder.Weight.permute(1, 0, 2).reshape(Cfg.DictSize, -1);
        return matmul(f.to(w.dtype), w).reshape(b, Cfg.DecoderLayerCount, Cfg.ActivationDim).MoveToOuterDisposeScope();
    }

    /// <summary>Reported activations f·c [batch, dict_size] (the fork's <c>get_activations</c>).</summary>
    public Tensor GetActivations(Tensor x)
    {
        using var scope = NewDisposeScope();
        // DECOUPLED BatchTopK: Σ_l f_l·‖W_dec[l]‖ over the slots (BatchTopKCrossCoder.get_activations).
        if (DecoupledCodes) return (Encode(x) * CodeNormalizationWeights()).sum(1).MoveToOuterDisposeScope();
        return (Encode(x) * LatentNormalizationWeights()).MoveToOuterDisposeScope();
    }

    /// <summary>x̂ = Decode(Encode(x)) [batch, L_dec, d].</summary>
    public override Tensor forward(Tensor x)
    {
        using var scope = NewDisposeScope();
        return Decode(Encode(x)).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// The fork's <c>CrossCoderTrainer.loss</c> on normalised x [batch, L, d]: x̂, f = forward(x); f' = f·c;
    /// l2 = mean over (batch, layer) of ‖x_l − x̂_l‖₂ (not squared); mse = mean over (batch, layer) of ‖x_l − x̂_l‖²;
    /// l1 = mean over batch of Σ_i |f'_i|; loss = (mse if <paramref name="useMseLoss"/> else l2) + λ·l1.
    /// </summary>
    public CrossCoderLoss L1Loss(Tensor x, double l1Penalty, bool useMseLoss = false)
    {
        CheckInput(x);
        CheckReconstructsInput("crosscoder loss");
        using var scope = NewDisposeScope();
        var f = EncodePostRelu(x);
        var xHat = DecodeNoBias(f).add(decoder.Bias, TorchScalars.One);
        var e = x - xHat;
        var l2 = TorchScalars.VectorNorm(e, 2, [-1]).mean();
        var mse = e.pow(TorchScalars.Of(2)).sum(-1).mean();
        var fs = f * LatentNormalizationWeights();
        var l1 = fs.abs().sum(-1).mean();
        var loss = (useMseLoss ? mse : l2).add(l1.mul(TorchScalars.Of(l1Penalty)), TorchScalars.One);
        var result = new CrossCoderLoss(loss, l2, mse, l1, fs, xHat);
        return result.MoveToOuterDisposeScope();
    }
}

/// <summary>One training loss of a crosscoder and its terms (scalars), with the scaled latents f·c and x̂.</summary>
public sealed record CrossCoderLoss(Tensor Loss, Tensor L2Loss, Tensor MseLoss, Tensor SparsityLoss, Tensor ScaledLatents, Tensor XHat) : IDisposable
{
    /// <summary>Moves every tensor to the enclosing dispose scope.</summary>
    public CrossCoderLoss MoveToOuterDisposeScope()
    {
        foreach (var t in new[] { Loss, L2Loss, MseLoss, SparsityLoss, ScaledLatents, XHat }) t.MoveToOuterDisposeScope();
        return this;
    }

    /// <inheritdoc/>
    public void Dispose()
    {
        foreach (var t in new[] { Loss, L2Loss, MseLoss, SparsityLoss, ScaledLatents, XHat }) t.Dispose();
    }
}
