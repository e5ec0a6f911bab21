using SaeSharp.Activations;
using SaeSharp.Saes;
using TorchSharp;
using static TorchSharp.torch;

namespace SaeSharp.Evaluation;

/// <summary>Which Δnorm band of the chat slot a latent of <see cref="CrossCoderLatentScaling"/> falls in.</summary>
public enum CrossCoderLatentBand
{
    /// <summary>Δnorm &gt; 0.9: the latent lives in the chat slot only.</summary>
    ChatOnly,
    /// <summary>0.4 ≤ Δnorm ≤ 0.6: shared by both models.</summary>
    Shared,
    /// <summary>Δnorm &lt; 0.1: the latent lives in the base slot only.</summary>
    BaseOnly,
    /// <summary>Any other Δnorm (or a zero decoder).</summary>
    Other,
}

/// <summary>
/// The closed-form scalars of one latent j (Minder, Dumas et al. 2025, "Latent Scaling"): for each target y,
/// β = Σ_n f_j(x_n)⟨d_j, y_n⟩ / (‖d_j‖² Σ_n f_j(x_n)²) with d_j the chat slot's decoder row. Index 0 of each pair is the base
/// slot, 1 the chat slot. NaN where the latent never fired (0/0).
/// </summary>
/// <param name="Latent">The latent index j.</param>
/// <param name="Band">Its band by the chat slot's Δnorm.</param>
/// <param name="DeltaNorm">The chat slot's Δnorm (<see cref="CrossCoderDecoderNorms.DeltaNorm"/>).</param>
/// <param name="ActiveRows">Rows where f_j ≠ 0 (the fork's <c>count_active</c>).</param>
/// <param name="BetaActivation">β with y = the slot's activation.</param>
/// <param name="BetaReconstruction">β with y = the slot's reconstruction x̂ (b_dec and latent j included).</param>
/// <param name="BetaError">β with y = x − x̂ + f_j·d^slot_j: the slot's reconstruction error with latent j's own
/// contribution through that slot's decoder row added back.</param>
public sealed record CrossCoderLatentBetas(int Latent, CrossCoderLatentBand Band, double DeltaNorm, long ActiveRows,
    (double Base, double Chat) BetaActivation, (double Base, double Chat) BetaReconstruction, (double Base, double Chat) BetaError)
{
    /// <summary>ν^ε = β^ε_base / β^ε_chat (the fork's <c>beta_ratio_error</c>): near 0 for a latent the base model lacks, near
    /// 1 for one whose information is in both models ("latent decoupling").</summary>
    public double NuError => BetaError.Base / BetaError.Chat;
    /// <summary>ν^r = β^r_base / β^r_chat (the fork's <c>beta_ratio_reconstruction</c>): near 1 when the crosscoder's
    /// reconstruction of the base model also carries the latent ("complete shrinkage").</summary>
    public double NuReconstruction => BetaReconstruction.Base / BetaReconstruction.Chat;
    /// <summary>β^act_base / β^act_chat (the fork's <c>beta_activation_ratio</c>).</summary>
    public double NuActivation => BetaActivation.Base / BetaActivation.Chat;
}

/// <summary>A run of <see cref="CrossCoderLatentScaling.Compute"/>: the rows read and the β of each chosen latent.</summary>
/// <param name="Rows">Activation rows the sums ran over.</param>
/// <param name="Latents">One entry per chosen latent, in the order chosen.</param>
public sealed record CrossCoderLatentScalingResult(long Rows, IReadOnlyList<CrossCoderLatentBetas> Latents)
{
    /// <summary>Per band present (chat-only, shared, base-only, other): the latents in it and the medians of their finite
    /// ν^ε and ν^r (NaN when none is finite).</summary>
    public IReadOnlyList<(CrossCoderLatentBand Band, int Latents, double MedianNuError, double MedianNuReconstruction)> BandSummary() =>
        Enum.GetValues<CrossCoderLatentBand>()
            .Select(b => (b, Latents.Where(l => l.Band == b).ToList()))
            .Where(t => t.Item2.Count > 0)
            .Select(t => (t.b, t.Item2.Count, CrossCoderLatentScaling.Median(t.Item2.Select(l => l.NuError)),
                CrossCoderLatentScaling.Median(t.Item2.Select(l => l.NuReconstruction))))
            .ToList();

    /// <summary>The axes of <see cref="RenderScatter"/>: ν outside [−0.5, 2] is left out of the picture (the fork's own plots
    /// keep −0.1 ≤ ν^ε ≤ 2).</summary>
    public const double PlotMin = -0.5, PlotMax = 2.0;

    /// <summary>A PNG scatter of ν^ε (x) against ν^r (y), one colour per band (orange chat-only, grey shared, blue base-only,
    /// olive other), as the paper's figure; points outside [<see cref="PlotMin"/>, <see cref="PlotMax"/>] are counted in the title.</summary>
    public byte[] RenderScatter(string baseName, string chatName)
    {
        var colors = new Dictionary<CrossCoderLatentBand, (string Label, string Color)>
        {
            [CrossCoderLatentBand.ChatOnly] = ($"only {chatName} (Δnorm > {CrossCoderDecoderNorms.SpecificAbove.ToString(System.Globalization.CultureInfo.InvariantCulture)})", "#ff7f0e"),
            [CrossCoderLatentBand.Shared] = ("shared", "#7f7f7f"),
            [CrossCoderLatentBand.BaseOnly] = ($"only {baseName}", "#1f77b4"),
            [CrossCoderLatentBand.Other] = ("other", "#bcbd22"),
        };
        static bool In(double v) => double.IsFinite(v) && v >= PlotMin && v <= PlotMax;
        int outside = Latents.Count(l => !In(l.NuError) || !In(l.NuReconstruction));
        var groups = colors.Select(kv =>
        {
            var ls = Latents.Where(l => l.Band == kv.Key && In(l.NuError) && In(l.NuReconstruction)).ToList();
            return new Plots.ScatterGroup($"{kv.Value.Label} ({ls.Count})", kv.Value.Color, ls.Select(l => l.NuError).ToList(), ls.Select(l => l.NuReconstruction).ToList());
        }).Where(g => g.X.Count > 0).ToList();
        string title = outside == 0 ? "Latent Scaling" : $"Latent Scaling ({outside} latents outside the axes or never active not shown)";
        return Plots.ScatterPlot.Render(groups, title, $"ν^ε = β^ε {baseName} / β^ε {chatName}", $"ν^r = β^r {baseName} / β^r {chatName}",
            (PlotMin, PlotMax, PlotMin, PlotMax));
    }
}

/// <summary>
/// Latent Scaling of a model-diffing crosscoder (slot 0 base, slot 1 chat; Minder, Dumas et al. 2025, arXiv 2504.02922,
/// as the science-of-finetuning <c>sparsity-artifacts-crosscoders</c> code computes it: <c>tools/latent_scaler/closed_form.py</c>
/// and <c>scripts/compute_scalers.py</c>). Every target is regressed on the chat decoder row d_j, for both models. Streams
/// the rows in batches and accumulates, per chosen latent, Σ f_j⟨d_j, y⟩ and Σ f_j² in float64; never holds more than one
/// batch's [batch, dict_size] codes. With normaliser buffers the sums are taken in the crosscoder's normalised space (where
/// its decoder lives): inputs normalised, reconstructions not denormalised.
/// </summary>
public static class CrossCoderLatentScaling
{
    /// <summary>The band of a chat-slot Δnorm.</summary>
    public static CrossCoderLatentBand BandOf(double deltaNorm) =>
        deltaNorm > CrossCoderDecoderNorms.SpecificAbove ? CrossCoderLatentBand.ChatOnly
        : deltaNorm is >= CrossCoderDecoderNorms.SharedFrom and <= CrossCoderDecoderNorms.SharedTo ? CrossCoderLatentBand.Shared
        : deltaNorm < CrossCoderDecoderNorms.AbsentBelow ? CrossCoderLatentBand.BaseOnly
        : CrossCoderLatentBand.Other;

    /// <summary>The default latents: the chat-only band (Δnorm &gt; 0.9) and, as a control, the shared band, in index order.</summary>
    public static IReadOnlyList<int> DefaultLatents(CrossCoder cc)
    {
        CheckModelDiffing(cc);
        var norms = CrossCoderDecoderNorms.Of(cc);
        return Enumerable.Range(0, cc.Cfg.DictSize)
            .Where(i => BandOf(norms.DeltaNorm[1][i]) is CrossCoderLatentBand.ChatOnly or CrossCoderLatentBand.Shared).ToList();
    }

    /// <summary>
    /// β of every latent in <paramref name="latents"/> (default <see cref="DefaultLatents"/>) over the rows of
    /// <paramref name="source"/> ([batch, 2·d] rows, slot 0 base then slot 1 chat, as every crosscoder source hands them out),
    /// read until it is exhausted or <paramref name="maxRows"/> rows were used.
    /// </summary>
    public static CrossCoderLatentScalingResult Compute(CrossCoder cc, IActivationSource source, IReadOnlyList<int>? latents = null,
        long? maxRows = null, int batchSize = 4096)
    {
        ArgumentNullException.ThrowIfNull(source);
        if (batchSize <= 0) throw new SaeSharpException($"latent scaling: batch size {batchSize} must be positive");
        using var acc = new CrossCoderLatentScalingAccumulator(cc, latents);
        int d = cc.Cfg.ActivationDim;
        if (source.DIn != 2 * d)
            throw new SaeSharpException($"latent scaling: the activation rows are {source.DIn} wide; the crosscoder needs 2 slots × activation_dim {d} = {2 * d}");
        if (acc.Latents.Count == 0) return acc.Result();
        while (maxRows is not { } cap || acc.Rows < cap)
        {
            int want = maxRows is { } c ? (int)Math.Min(batchSize, c - acc.Rows) : batchSize;
            using var batch = source.Next(want);
            if (batch is null) break;
            using var inner = NewDisposeScope();
            acc.Add(batch.Input.view(batch.Rows, 2, d));
        }
        return acc.Result();
    }

    /// <summary>Median of the finite values (NaN when there are none).</summary>
    public static double Median(IEnumerable<double> values)
    {
        ArgumentNullException.ThrowIfNull(values);
        var v = values.Where(double.IsFinite).Order().ToList();
        if (v.Count == 0) return double.NaN;
        return v.Count % 2 == 1 ? v[v.Count / 2] : (v[v.Count / 2 - 1] + v[v.Count / 2]) / 2;
    }

    internal static void CheckModelDiffing(CrossCoder cc)
    {
        ArgumentNullException.ThrowIfNull(cc);
        if (cc.Cfg.NumLayers != 2)
            throw new SaeSharpException($"latent scaling needs a model-diffing crosscoder with 2 slots (base, chat); this one has {cc.Cfg.NumLayers}");
    }
}

/// <summary>
/// The running sums of <see cref="CrossCoderLatentScaling"/>: rows x [n, 2, d] (slot 0 base, slot 1 chat) go in batch by
/// batch (<see cref="Add"/>), from files (<see cref="CrossCoderLatentScaling.Compute"/>) or from the model runs of
/// <c>sae eval --model BASE --diff-model CHAT --latent-scaling</c>; <see cref="Result"/> gives the β. Per chosen latent it keeps
/// Σ f_j⟨d_j, y⟩ for the three targets of both slots, Σ f_j² and the rows where f_j ≠ 0, in float64 on the crosscoder's device.
/// </summary>
public sealed class CrossCoderLatentScalingAccumulator : IDisposable
{
    private readonly CrossCoder _cc;
    private readonly IReadOnlyList<int> _chosen;
    private readonly CrossCoderDecoderNorms _norms;
    private readonly Tensor? _idx, _dChat, _selfChat, _selfBase, _bDec, _wAll, _num, _fSq, _active;

    /// <summary>Starts empty sums for <paramref name="latents"/> of <paramref name="cc"/> (default
    /// <see cref="CrossCoderLatentScaling.DefaultLatents"/>); refuses a crosscoder Latent Scaling does not apply to.</summary>
    public CrossCoderLatentScalingAccumulator(CrossCoder cc, IReadOnlyList<int>? latents = null)
    {
        ArgumentNullException.ThrowIfNull(cc);
        cc.CheckReconstructsInput("Latent Scaling");
        cc.CheckSharedCodes("Latent Scaling");
        CrossCoderLatentScaling.CheckModelDiffing(cc);
        _cc = cc;
        _norms = CrossCoderDecoderNorms.Of(cc);
        _chosen = latents ?? CrossCoderLatentScaling.DefaultLatents(cc);
        foreach (var j in _chosen)
            if (j < 0 || j >= cc.Cfg.DictSize) throw new SaeSharpException($"latent scaling: latent {j} is outside 0..{cc.Cfg.DictSize - 1}");
        if (_chosen.Count == 0) return;
        using var _ = no_grad();
        using var scope = NewDisposeScope();
        var device = cc.Decoder.Weight.device;
        _idx = tensor(_chosen.Select(i => (long)i).ToArray(), device: device);
        var w = cc.Decoder.Weight.detach().to(ScalarType.Float64); // [2, dict_size, d]
        _dChat = w[1].index_select(0, _idx); // [m, d]: d_j of every target
        var dBase = w[0].index_select(0, _idx);
        _selfChat = (_dChat * _dChat).sum(-1); // ⟨d^chat_j, d_j⟩ = ‖d_j‖²
        _selfBase = (dBase * _dChat).sum(-1); // ⟨d^base_j, d_j⟩
        _bDec = cc.Decoder.Bias.detach().to(ScalarType.Float64); // [2, d]
        _wAll = w.permute(1, 0, 2).reshape(cc.Cfg.DictSize, -1); // [dict_size, 2d]
        int m = _chosen.Count;
        // Numerators per target and slot: [activation, reconstruction, error] × [base, chat] × m.
        _num = zeros(3, 2, m, ScalarType.Float64, device: device);
        _fSq = zeros(m, ScalarType.Float64, device: device);
        _active = zeros(m, ScalarType.Int64, device: device);
        foreach (var t in new[] { _idx, _dChat, _selfChat, _selfBase, _bDec, _wAll, _num, _fSq, _active }) t.DetachFromDisposeScope();
    }

    /// <summary>Rows added so far.</summary>
    public long Rows { get; private set; }

    /// <summary>The latents whose β are taken, in order.</summary>
    public IReadOnlyList<int> Latents => _chosen;

    /// <summary>Adds rows x [n, 2, d] (raw activations; the crosscoder's normaliser, if any, is applied here), moved to the
    /// crosscoder's device.</summary>
    public void Add(Tensor x)
    {
        ArgumentNullException.ThrowIfNull(x);
        int d = _cc.Cfg.ActivationDim;
        if (x.dim() != 3 || x.shape[1] != 2 || x.shape[2] != d)
            throw new SaeSharpException($"latent scaling: rows [{string.Join(", ", x.shape)}] are not [n, 2, {d}] (base slot, chat slot)");
        long n = x.shape[0];
        if (_chosen.Count == 0 || n == 0)
        {
            Rows += n;
            return;
        }
        using var _ = no_grad();
        using var scope = NewDisposeScope();
        var xf = x.to(ScalarType.Float32, _cc.Decoder.Weight.device);
        var f = _cc.Encode(xf); // [n, dict_size], as the fork's encode(use_threshold=True)
        var xn = _cc.NormalizeActivations(xf).to(ScalarType.Float64);
        var fd = f.to(ScalarType.Float64);
        var xHat = matmul(fd, _wAll!).view(n, 2, d).add(_bDec!, TorchScalars.One); // normalised space
        var fj = fd.index_select(1, _idx!); // [n, m]
        for (int s = 0; s < 2; s++)
        {
            var ys = xn.select(1, s);
            var rs = xHat.select(1, s);
            var pAct = matmul(ys, _dChat!.t()); // [n, m]: ⟨d_j, y_n⟩
            var pRec = matmul(rs, _dChat!.t());
            // ⟨d_j, x − x̂ + f_j d^s_j⟩ = ⟨d_j, x − x̂⟩ + f_j⟨d^s_j, d_j⟩
            var self = s == 0 ? _selfBase! : _selfChat!;
            var pErr = pAct.sub(pRec).add(fj.mul(self), TorchScalars.One);
            _num![0, s].add_((fj * pAct).sum(0L), TorchScalars.One);
            _num[1, s].add_((fj * pRec).sum(0L), TorchScalars.One);
            _num[2, s].add_((fj * pErr).sum(0L), TorchScalars.One);
        }
        _fSq!.add_(fj.pow(TorchScalars.Of(2)).sum(0L), TorchScalars.One);
        _active!.add_(fj.ne(TorchScalars.Of(0)).sum(0L), TorchScalars.One);
        Rows += n;
    }

    /// <summary>The β and ν of every chosen latent over the rows added (an error when none were).</summary>
    public CrossCoderLatentScalingResult Result()
    {
        if (_chosen.Count == 0) return new CrossCoderLatentScalingResult(Rows, []);
        if (Rows == 0) throw new SaeSharpException("latent scaling: the activations gave no rows");
        using var scope = NewDisposeScope();
        int m = _chosen.Count;
        var beta = (_num! / (_fSq! * _selfChat!)).contiguous().cpu(); // [3, 2, m]
        var b = beta.data<double>().ToArray();
        var a = _active!.cpu().data<long>().ToArray();
        double B(int target, int slot, int k) => b[(target * 2 + slot) * m + k];
        var result = new List<CrossCoderLatentBetas>(m);
        for (int k = 0; k < m; k++)
        {
            double dn = _norms.DeltaNorm[1][_chosen[k]];
            result.Add(new CrossCoderLatentBetas(_chosen[k], CrossCoderLatentScaling.BandOf(dn), dn, a[k],
                (B(0, 0, k), B(0, 1, k)), (B(1, 0, k), B(1, 1, k)), (B(2, 0, k), B(2, 1, k))));
        }
        return new CrossCoderLatentScalingResult(Rows, result);
    }

    /// <summary>Frees the sums and the decoder copies.</summary>
    public void Dispose()
    {
        foreach (var t in new[] { _idx, _dChat, _selfChat, _selfBase, _bDec, _wAll, _num, _fSq, _active }) t?.Dispose();
    }
}
