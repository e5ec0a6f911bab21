using System.Globalization;
using System.Text.Json;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace SaeSharp.Saes;

/// <summary>
/// SAELens 6.37.6's <c>temporal</c> SAE (canrager's Temporal SAE, arXiv 2511.01836; <c>sae_lens/saes/temporal_sae.py</c>),
/// inference only, as in SAELens. Each activation x_t of a sequence is split into a part predicted from the earlier
/// tokens' codes (z_pred, through causal attention layers) and a sparse novel part (z_novel, the features):
/// <list type="number">
/// <item>x ← x·<c>activation_normalization_factor</c> when <c>normalize_activations</c> is "constant_scalar_rescale",
/// minus b_dec when <c>apply_b_dec_to_input</c> (SAELens's <c>process_sae_in</c>); r ← x, z_pred ← 0;</item>
/// <item>per attention layer: z = ReLU(r·λ·W_enc) with λ = 1/(4·d_in) and W_enc = W_decᵀ when <c>tied_weights</c>;
/// the context codes are z shifted one position (position 0 sees a zero vector); z_p = ReLU(attention(context → z));
/// D = z_p·W_dec; s = ⟨D, r⟩ / (‖D‖ + 1e-6)²; z_pred += s·z_p; r −= s·D;</item>
/// <item>z_novel = ReLU(r·λ·W_enc), keeping only the <c>kval_topk</c> largest per token when <c>sae_diff_type</c> is
/// "topk" and kval_topk is set.</item>
/// </list>
/// <see cref="Encode"/> is z_novel; <c>forward</c> and <see cref="Run"/> reconstruct ((z_novel + z_pred)·W_dec + b_dec) / factor;
/// <see cref="Decode"/> alone decodes the novel codes only, (f·W_dec + b_dec) / factor, as SAELens's <c>decode</c> (which
/// warns that x_pred is missing). The attention layers (<c>attn_layers.{i}.{k_ctx,q_target,v_ctx,c_proj}.{weight,bias}</c>)
/// work in latent space: keys and queries [d_sae → d_sae/bottleneck_factor], values and output [d_sae → d_sae], n_heads heads.
/// Inputs must be ordered sequences [batch, pos, d_in]: a token's code reads the tokens before it, so rows [N, d_in] are
/// refused (<see cref="SequenceRequired"/>). An optional mask [batch, pos] (1 real, 0 padding) keeps padding out of the
/// real tokens' context: with it each real token attends to the zero vector and the real tokens before it, as it would
/// in the unpadded sequence. No <c>b_enc</c>; <c>W_enc</c> only when untied.
/// </summary>
public sealed class TemporalSae : Sae
{
    /// <summary>The registry entry of "temporal" (SAELens's name): inference only.</summary>
    public static SaeArchitecture Descriptor { get; } = new()
    {
        Name = SaeArchitectures.Temporal,
        Create = c => new TemporalSae(c),
        InferenceOnly = true,
        OtherNormalizations = [ConstantScalarRescale],
        HasEncoderWeights = c => !Settings.Of(c).TiedWeights,
        Validate = (c, source) => Settings.Of(c, source),
    };

    /// <summary>SAELens's <c>normalize_activations</c> value of temporal SAEs: x·<c>activation_normalization_factor</c> in,
    /// the reconstruction divided by it.</summary>
    public const string ConstantScalarRescale = "constant_scalar_rescale";

    /// <summary>ε of the projection scale's denominator (SAELens <c>self.eps</c>).</summary>
    public const double Eps = 1e-6;

#pragma warning disable IDE1006 // field named after the state_dict key
    private readonly ModuleList<TemporalAttention> attn_layers;
#pragma warning restore IDE1006

    private readonly Settings _s;

    /// <summary>A temporal SAE of shape <paramref name="cfg"/> (zero weights; load them).</summary>
    public TemporalSae(SaeConfig cfg) : base(cfg, hasEncoderBias: false, hasEncoderWeights: !Settings.Of(cfg).TiedWeights)
    {
        _s = Settings.Of(cfg);
        attn_layers = new ModuleList<TemporalAttention>(
            Enumerable.Range(0, _s.NAttnLayers).Select(_ => new TemporalAttention(cfg.DSae, _s.NHeads, _s.BottleneckFactor)).ToArray());
        RegisterComponents();
    }

    /// <summary>Attention heads of each layer (<c>n_heads</c>).</summary>
    public int NHeads => _s.NHeads;
    /// <summary>Number of attention layers (<c>n_attn_layers</c>).</summary>
    public int NAttnLayers => _s.NAttnLayers;
    /// <summary>"topk" or "relu" (<c>sae_diff_type</c>).</summary>
    public string SaeDiffType => _s.SaeDiffType;
    /// <summary>Novel codes kept per token when <see cref="SaeDiffType"/> is "topk" (<c>kval_topk</c>); null: all.</summary>
    public int? KvalTopk => _s.KvalTopk;
    /// <summary>Whether the encoder is W_decᵀ (<c>tied_weights</c>; no <c>W_enc</c> then).</summary>
    public bool TiedWeights => _s.TiedWeights;
    /// <summary>The input scale of "constant_scalar_rescale" (<c>activation_normalization_factor</c>); 1 otherwise.</summary>
    public double NormalizationFactor => Cfg.NormalizeActivations == ConstantScalarRescale ? _s.Factor : 1.0;

    /// <inheritdoc/>
    public override IReadOnlyList<(string Name, string Value)> ArchitectureFields =>
    [
        ("n_heads", NHeads.ToString(System.Globalization.CultureInfo.InvariantCulture)),
        ("n_attn_layers", NAttnLayers.ToString(System.Globalization.CultureInfo.InvariantCulture)),
        ("bottleneck_factor", _s.BottleneckFactor.ToString(System.Globalization.CultureInfo.InvariantCulture)),
        ("sae_diff_type", SaeDiffType),
        ("kval_topk", KvalTopk?.ToString(System.Globalization.CultureInfo.InvariantCulture) ?? "-"),
        ("tied_weights", TiedWeights ? "true" : "false"),
        ("activation_normalization_factor", NormalizationFactor.ToString("R", System.Globalization.CultureInfo.InvariantCulture)),
    ];
    /// <summary>λ = 1/(4·d_in), the encoder's input scale.</summary>
    public double Lambda => 1.0 / (4 * Cfg.DIn);

    /// <inheritdoc/>
    public override bool ReadsContext => true;

    /// <summary>The error for rows handed to a temporal SAE, naming <paramref name="what"/>.</summary>
    public static SaeSharpException SequenceRequired(string what) =>
        new($"{what}: temporal SAEs encode a token from the earlier tokens of its context, so they need ordered sequences " +
            "[batch, pos, d_in], not rows of activations (shuffled buffers, activation files and caches hold rows): " +
            "run them on a model (--model, or a HookedSaeTransformer / model run with the SAE attached)");

    /// <summary>z_novel [batch, pos, d_sae] of <paramref name="x"/> [batch, pos, d_in] (SAELens <c>encode</c>).</summary>
    public override Tensor Encode(Tensor x)
    {
        var (novel, pred) = EncodeWithPredictions(x);
        pred.Dispose();
        return novel;
    }

    /// <summary>SAELens's <c>encode_with_predictions</c>: (z_novel, z_pred), each [batch, pos, d_sae], of
    /// <paramref name="x"/> [batch, pos, d_in]; <paramref name="mask"/> [batch, pos] (nonzero: real token) keeps padding
    /// out of the real tokens' context.</summary>
    public (Tensor ZNovel, Tensor ZPred) EncodeWithPredictions(Tensor x, Tensor? mask = null)
    {
        using var scope = NewDisposeScope();
        var (pre, pred) = NovelPreactivations(x, mask);
        var novel = Activate(pre, x);
        return (novel.MoveToOuterDisposeScope(), pred.MoveToOuterDisposeScope());
    }

    /// <summary>The novel codes' pre-activations (r·λ·W_enc, before the ReLU and top-k; what SaeSharp fires at
    /// <c>hook_sae_acts_pre</c>) and z_pred, each [batch, pos, d_sae], of <paramref name="x"/> [batch, pos, d_in].</summary>
    public (Tensor Pre, Tensor ZPred) NovelPreactivations(Tensor x, Tensor? mask = null)
    {
        using var scope = NewDisposeScope();
        var xs = SequenceInput(x, nameof(Encode));
        long b = xs.shape[0], l = xs.shape[1];
        var keyMask = KeyMask(mask, b, l, xs.device);
        var wEnc = EncoderMatrix();
        using var lam = Lambda.ToScalar();
        var residual = xs;
        var zPred = zeros(b, l, Cfg.DSae, dtype: xs.dtype, device: xs.device);
        using var eps = Eps.ToScalar();
        foreach (var layer in attn_layers)
        {
            var zInput = nn.functional.relu(residual.mul(lam).matmul(wEnc));
            var zCtx = cat([zeros_like(zInput.narrow(1, 0, 1)), zInput.narrow(1, 0, l - 1)], 1);
            var zp = nn.functional.relu(layer.Attend(zCtx, zInput, keyMask));
            var dz = zp.matmul(W_dec);
            var norm = dz.norm(-1, keepdim: true).add(eps, TorchScalars.One);
            var scale = (dz * residual).sum(-1, keepdim: true) / norm.pow(TorchScalars.Of(2));
            zPred = zPred.add(zp * scale, TorchScalars.One);
            residual = residual - scale * dz;
        }
        var pre = residual.mul(lam).matmul(wEnc);
        return (pre.MoveToOuterDisposeScope(), zPred.MoveToOuterDisposeScope());
    }

    /// <summary>z_novel from its pre-activations <paramref name="pre"/> (any shape [..., d_sae]): ReLU, then the
    /// <c>kval_topk</c> largest per token when <c>sae_diff_type</c> is "topk" (SAELens multiplies by a top-k mask).</summary>
    public override Tensor Activate(Tensor pre, Tensor x)
    {
        ArgumentNullException.ThrowIfNull(pre);
        using var scope = NewDisposeScope();
        var z = nn.functional.relu(pre);
        if (_s.SaeDiffType == "topk" && _s.KvalTopk is int k)
        {
            var idx = z.topk(k, -1).indexes;
            z = zeros_like(z).scatter(-1, idx, z.gather(-1, idx));
        }
        return z.MoveToOuterDisposeScope();
    }

    /// <summary>Refused: a temporal SAE has no row-wise pre-activation (see <see cref="NovelPreactivations"/>).</summary>
    public override Tensor HiddenPre(Tensor x) => throw SequenceRequired("HiddenPre");

    /// <summary>Refused for rows; <see cref="ReconstructWithPredictions"/> is the temporal reconstruction.</summary>
    public override Tensor Reconstruct(Tensor featureActs, Tensor x) => throw SequenceRequired("Reconstruct");

    /// <summary>SAELens's <c>forward</c> from (possibly edited) novel codes and the predicted codes, each [..., d_sae]:
    /// ((z_novel + z_pred)·W_dec + b_dec) / factor, [..., d_in].</summary>
    public Tensor ReconstructWithPredictions(Tensor zNovel, Tensor zPred)
    {
        ArgumentNullException.ThrowIfNull(zNovel);
        ArgumentNullException.ThrowIfNull(zPred);
        using var scope = NewDisposeScope();
        var y = zNovel.to(W_dec.dtype).add(zPred.to(W_dec.dtype), TorchScalars.One).matmul(W_dec).add(b_dec, TorchScalars.One);
        return Unscaled(y).MoveToOuterDisposeScope();
    }

    /// <summary>SAELens's <c>decode</c>: the novel codes alone, (f·W_dec + b_dec) / factor: not the full reconstruction
    /// (x_pred is missing; <c>forward</c>, <see cref="Run"/> and <see cref="ReconstructWithPredictions"/> add it).</summary>
    public override Tensor Decode(Tensor featureActs)
    {
        using var scope = NewDisposeScope();
        return Unscaled(base.Decode(featureActs)).MoveToOuterDisposeScope();
    }

    /// <summary>The full reconstruction [batch, pos, d_in] of <paramref name="x"/> [batch, pos, d_in] (SAELens <c>forward</c>).</summary>
    public override Tensor forward(Tensor x)
    {
        using var scope = NewDisposeScope();
        var (novel, pred) = EncodeWithPredictions(x);
        return ReconstructWithPredictions(novel, pred).MoveToOuterDisposeScope();
    }

    /// <summary>The full reconstruction and z_novel of <paramref name="x"/> [batch, pos, d_in].</summary>
    public override (Tensor SaeOut, Tensor FeatureActs) Run(Tensor x)
    {
        using var scope = NewDisposeScope();
        var (novel, pred) = EncodeWithPredictions(x);
        var y = ReconstructWithPredictions(novel, pred);
        return (y.MoveToOuterDisposeScope(), novel.MoveToOuterDisposeScope());
    }

    /// <summary>Refused, as SAELens's <c>fold_W_dec_norm</c> for TemporalSAE.</summary>
    public override void FoldWDecNorm() => throw new SaeSharpException("folding W_dec norms is not supported for temporal SAEs (SAELens refuses it too)");

    /// <summary>Refused, as SAELens's <c>fold_activation_norm_scaling_factor</c> for TemporalSAE (the tied encoder is
    /// W_decᵀ, so the scale cannot move into the weights; it stays in <c>activation_normalization_factor</c>).</summary>
    public override void FoldActivationScale(double scaleIn, double scaleOut) =>
        throw new SaeSharpException("folding an activation scale is not supported for temporal SAEs (SAELens refuses it too); " +
            "their scale is normalize_activations 'constant_scalar_rescale' with activation_normalization_factor");

    /// <summary>Refused: temporal SAEs are inference only (SAELens has no training form either).</summary>
    public override void InitializeWeights(Generator? generator = null, double decoderNorm = 0.1) => throw InferenceOnly();

    /// <summary>Refused: temporal SAEs are inference only (SAELens has no training form either).</summary>
    public override SaeTrainOutput TrainingForward(Tensor x, Tensor target, SaeTrainContext ctx) => throw InferenceOnly();

    private static SaeSharpException InferenceOnly() =>
        new("temporal SAEs are inference only in SaeSharp, as in SAELens: load a trained one (a SAELens folder or the temporal-sae-* releases)");

    private Tensor EncoderMatrix() => _s.TiedWeights ? W_dec.t() : WEnc;

    private Tensor Unscaled(Tensor y)
    {
        if (Cfg.NormalizeActivations != ConstantScalarRescale) return y.alias();
        using var f = _s.Factor.ToScalar();
        return y.div(f);
    }

    /// <summary>x [batch, pos, d_in] checked, in the weights' dtype, scaled and centred as SAELens's <c>process_sae_in</c>.</summary>
    private Tensor SequenceInput(Tensor x, string method)
    {
        ArgumentNullException.ThrowIfNull(x);
        if (x.dim() != 3) throw SequenceRequired($"{method}: input has shape [{string.Join(", ", x.shape)}]");
        using var scope = NewDisposeScope();
        var rows = CheckedRows(x, method, Cfg.DIn, "d_in");
        var xs = rows.view(x.shape);
        if (Cfg.NormalizeActivations == ConstantScalarRescale)
        {
            using var f = _s.Factor.ToScalar();
            xs = xs.mul(f);
        }
        if (Cfg.ApplyBDecToInput) xs = xs - b_dec;
        return xs.MoveToOuterDisposeScope();
    }

    /// <summary>[batch, 1, pos, pos] true where query t may attend to key j: j ≤ t, and key j real (key 0, the zero
    /// context, always; key j > 0 holds token j − 1's codes).</summary>
    private static Tensor KeyMask(Tensor? mask, long b, long l, Device device)
    {
        using var scope = NewDisposeScope();
        var causal = ones(l, l, dtype: ScalarType.Bool, device: device).tril();
        if (mask is null) return causal.view(1, 1, l, l).MoveToOuterDisposeScope();
        if (mask.dim() != 2 || mask.shape[0] != b || mask.shape[1] != l)
            throw new SaeSharpException($"temporal SAE: the mask has shape [{string.Join(", ", mask.shape)}] but the input is [{b}, {l}, d_in]");
        var real = mask.to(device).ne(TorchScalars.Of(0));
        var keyReal = cat([ones(b, 1, dtype: ScalarType.Bool, device: device), real.narrow(1, 0, l - 1)], 1);   // [b, l]
        return causal.view(1, 1, l, l).logical_and(keyReal.view(b, 1, 1, l)).MoveToOuterDisposeScope();
    }

    /// <summary>The temporal fields of a cfg.json (SAELens's <c>TemporalSAEConfig</c> names and defaults), kept in
    /// <see cref="SaeConfig.Extra"/>.</summary>
    private sealed record Settings(int NHeads, int NAttnLayers, int BottleneckFactor, string SaeDiffType, int? KvalTopk, bool TiedWeights, double Factor)
    {
        public static Settings Of(SaeConfig c, string source = "cfg.json")
        {
            var e = c.Extra;
            JsonElement? Get(string key) => e is not null && e.TryGetValue(key, out var v) && v.ValueKind != JsonValueKind.Null ? v : null;
            int Int(string key, int dflt) => Get(key) is not { } v ? dflt
                : v.ValueKind == JsonValueKind.Number && v.TryGetInt32(out int i) ? i
                : throw new SaeSharpException($"{source}: '{key}' is {v.GetRawText()}, expected an integer");
            var s = new Settings(
                Int("n_heads", 8), Int("n_attn_layers", 1), Int("bottleneck_factor", 64),
                Get("sae_diff_type") is { } t ? (t.ValueKind == JsonValueKind.String ? t.GetString()! : throw new SaeSharpException($"{source}: 'sae_diff_type' is {t.GetRawText()}, expected \"topk\" or \"relu\"")) : "topk",
                Get("kval_topk") is not null ? Int("kval_topk", 0) : null,
                Get("tied_weights") is { } w ? (w.ValueKind is JsonValueKind.True or JsonValueKind.False ? w.GetBoolean() : throw new SaeSharpException($"{source}: 'tied_weights' is {w.GetRawText()}, expected true or false")) : true,
                Get("activation_normalization_factor") is { } f ? (f.ValueKind == JsonValueKind.Number ? f.GetDouble() : throw new SaeSharpException($"{source}: 'activation_normalization_factor' is {f.GetRawText()}, expected a number")) : 1.0);
            if (s.NHeads <= 0 || s.BottleneckFactor <= 0 || s.NAttnLayers < 0)
                throw new SaeSharpException($"{source}: a temporal SAE needs positive n_heads and bottleneck_factor and n_attn_layers ≥ 0, got {s.NHeads}, {s.BottleneckFactor}, {s.NAttnLayers}");
            if (c.DSae % (s.BottleneckFactor * s.NHeads) != 0)
                throw new SaeSharpException($"{source}: a temporal SAE's d_sae must be a multiple of bottleneck_factor·n_heads ({s.BottleneckFactor}·{s.NHeads}), got d_sae={c.DSae} (SAELens's ManualAttention asserts it)");
            if (s.SaeDiffType is not ("topk" or "relu"))
                throw new SaeSharpException($"{source}: sae_diff_type must be \"topk\" or \"relu\", got \"{s.SaeDiffType}\"");
            if (s.KvalTopk is int k && (k <= 0 || k > c.DSae))
                throw new SaeSharpException($"{source}: kval_topk must be in 1..d_sae={c.DSae}, got {k}");
            if (!(s.Factor > 0) || double.IsInfinity(s.Factor))
                throw new SaeSharpException($"{source}: activation_normalization_factor must be positive and finite, got {s.Factor.ToString(CultureInfo.InvariantCulture)}");
            if (c.NormalizeActivations is not ("none" or ConstantScalarRescale))
                throw new SaeSharpException($"{source}: a temporal SAE's normalize_activations must be \"none\" or \"{ConstantScalarRescale}\", got \"{c.NormalizeActivations}\"");
            if (c.DOut is int d && d != c.DIn)
                throw new SaeSharpException($"{source}: a temporal SAE reconstructs its input (d_out {d} ≠ d_in {c.DIn})");
            return s;
        }
    }
}

/// <summary>SAELens's <c>ManualAttention</c> of a temporal SAE, in latent space: keys and queries
/// [dimin → dimin/bottleneck_factor], values and output [dimin → dimin], split into n_heads heads, causal softmax.</summary>
internal sealed class TemporalAttention : nn.Module<Tensor, Tensor, Tensor>
{
#pragma warning disable IDE1006 // fields named after the state_dict keys
    private readonly Linear k_ctx;
    private readonly Linear q_target;
    private readonly Linear v_ctx;
    private readonly Linear c_proj;
#pragma warning restore IDE1006
    private readonly int _heads, _embd, _dimin;

    public TemporalAttention(int dimin, int heads, int bottleneckFactor) : base("ManualAttention")
    {
        _heads = heads;
        _dimin = dimin;
        _embd = dimin / bottleneckFactor;
        k_ctx = nn.Linear(dimin, _embd);
        q_target = nn.Linear(dimin, _embd);
        v_ctx = nn.Linear(dimin, dimin);
        c_proj = nn.Linear(dimin, dimin);
        RegisterComponents();
        using (no_grad())
            foreach (var (_, p) in named_parameters()) p.fill_(TorchScalars.Of(0));
    }

    /// <summary>Causal attention from <paramref name="target"/>'s queries to <paramref name="context"/>'s keys and values.</summary>
    public override Tensor forward(Tensor context, Tensor target) => Attend(context, target, null);

    /// <summary>The attention output [b, l, dimin]; <paramref name="allowed"/> [b or 1, 1, l, l] (null: causal).</summary>
    public Tensor Attend(Tensor context, Tensor target, Tensor? allowed)
    {
        using var scope = NewDisposeScope();
        long b = context.shape[0], l = context.shape[1];
        int dk = _embd / _heads;
        var k = k_ctx.call(context).view(b, l, _heads, dk).transpose(1, 2);
        var q = q_target.call(target).view(b, l, _heads, dk).transpose(1, 2);
        var v = v_ctx.call(context).view(b, l, _heads, _dimin / _heads).transpose(1, 2);
        using var scale = (1.0 / Math.Sqrt(dk)).ToScalar();
        var scores = q.matmul(k.transpose(-2, -1)).mul(scale);
        allowed ??= ones(l, l, dtype: ScalarType.Bool, device: context.device).tril().view(1, 1, l, l);
        scores = scores.masked_fill(allowed.logical_not(), TorchScalars.Of(double.NegativeInfinity));
        var o = scores.softmax(-1).matmul(v).transpose(1, 2).contiguous().view(b, l, _dimin);
        return c_proj.call(o).MoveToOuterDisposeScope();
    }
}
