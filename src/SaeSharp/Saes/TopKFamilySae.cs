using SaeSharp.Kernels;
using TorchSharp;
using static TorchSharp.torch;

namespace SaeSharp.Saes;

/// <summary>
/// Shared training machinery of the TopK family (TopK, BatchTopK, Matryoshka BatchTopK), following dictionary_learning's
/// <c>TopKTrainer</c>/<c>BatchTopKTrainer</c> (Gao et al. 2024):
/// <list type="bullet">
/// <item>A dense no-grad encoder pass selects the active latents; the loss is then built on the sparse code
/// (<see cref="SparseLatents"/>), so decoding and the backward pass touch only the active latents.</item>
/// <item>AuxK, exactly as dictionary_learning's <c>get_auxiliary_loss</c>: with e = (target − ŷ) detached, take per row the
/// top-k_aux ReLU'd pre-activations among dead latents (k_aux = min(<see cref="SaeTrainingOptions.KAux"/> ?? d_in/2, n_dead)),
/// ê = their decoding without b_dec, aux = mean_n‖e − ê‖² / mean_n‖e − mean(e)‖² (OpenAI's normalisation), NaN → 0,
/// added as <see cref="SaeTrainingOptions.AuxKCoefficient"/>·aux. No dead-fraction scale (sparsify and SAELens scale by
/// min(n_dead/k_aux, 1); dictionary_learning does not). Its gradient reaches W_enc, b_enc, b_dec and W_dec. The dead
/// latents are the trainer's (<see cref="SaeTrainContext.DeadMask"/>: not fired over the window before this step, as
/// SAELens and sparsify; dictionary_learning also counts the step's own firing, docs/recipes.md "Differences from the
/// reference trainers"); given its mask, four steps equal its trainers' (DictionaryLearningTrainerStepTests).</item>
/// <item>Decoder rows held at unit norm, with the gradient component parallel to each row removed before the step; with
/// <see cref="SaeTrainingOptions.RescaleActsByDecoderNorm"/> false (SAELens's plain TopK) the rows are free.</item>
/// <item>Initialisation: unit-norm random decoder rows (with rescale_acts_by_decoder_norm false, rows of norm
/// <c>decoder_init_norm</c>, as SAELens), W_enc = W_decᵀ, zero biases.</item>
/// <item>Adam (0.9, 0.999) with lr 2e-4/sqrt(d_sae/2^14) (<see cref="DefaultLearningRate"/>; <c>sae train</c>'s recipes
/// raise it in short runs: <see cref="Training.SaeRecipes.DefaultLearningRate"/>).</item>
/// <item><see cref="SaeTrainingOptions.Autocast"/>: the dense encoder pass, which only selects, runs in bfloat16; the
/// pre-activations at the selected entries (and so the loss, the gradients, the BatchTopK threshold and the sparse AuxK
/// values) are recomputed exactly in float32. Only the choice between near-tied latents can differ from float32.</item>
/// </list>
/// The training form needs float32 weights on the CPU (the sparse kernels of <see cref="SparseKernels"/>); inference
/// (<see cref="Sae.Encode"/>) works in any dtype. <see cref="SaeTrainOutput.FeatureActs"/> is built on demand; trainers
/// should read <see cref="SaeTrainOutput.ActiveCounts"/> for firing statistics.
/// </summary>
public abstract class TopKFamilySae : Sae
{
    /// <summary>An SAE of the TopK family of shape <paramref name="cfg"/> (zero weights).</summary>
    protected TopKFamilySae(SaeConfig cfg) : base(cfg)
    {
    }

    /// <summary>Active latents per row (per row on average for BatchTopK).</summary>
    public int K => Cfg.K ?? throw new SaeSharpException($"architecture '{Cfg.Architecture}' needs k in cfg.json");

    /// <inheritdoc/>
    public override double DefaultLearningRate() => ScaledTopKLearningRate(Cfg.DSae);

    /// <summary>Refused, as SAELens refuses it for TopK SAEs: multiplying each latent's pre-activation by its decoder norm
    /// changes which latents are the top k.</summary>
    public override void FoldWDecNorm() =>
        throw new SaeSharpException($"fold_W_dec_norm is not safe for a {Cfg.Architecture} SAE: scaling each latent's pre-activation by its decoder norm changes which latents are selected" +
                                   (this is BatchTopKSae ? "; its inference form ToInferenceSae() (a JumpReLU SAE, as SAELens saves it) can fold" : ""));

    /// <summary>Elements of the pre-activation matrix computed at once in the training pass (32 MB of float32): the dense
    /// encoder runs over row chunks, each reduced to its per-row candidates before the next, so the [N, d_sae] matrix is
    /// never materialised and the chunk buffer is reused by the allocator; 1024-row chunks at d_sae 8192 run the matmul
    /// about as fast as one addmm over the batch, 512-row ones about 15% slower. The bfloat16 encoder (autocast) runs
    /// fastest in 512- to 1024-row chunks too, 15-20% faster than over a 4096-row batch.</summary>
    internal long ChunkElements { get; set; } = 1L << 23;

    /// <summary>Rows per encoder chunk: <see cref="ChunkElements"/> / d_sae, twice that with the candidate pass, whose exact
    /// ranking shares its reads of W_encᵀ over groups of rows (<see cref="CandidateEncoder"/>): at d_sae 8192, 2048-row
    /// chunks give each of two threads two 512-row groups, and TopK steps ran 3–4 % faster than with 1024 (BENCHMARKS.md,
    /// "Candidates recomputed latent by latent").</summary>
    internal long ChunkRows(bool candidatePass) => Math.Max(1, (candidatePass ? 2 * ChunkElements : ChunkElements) / Cfg.DSae);

    /// <summary>Whether this training pass runs the dense encoder in bfloat16 (<see cref="SaeTrainingOptions.Autocast"/> with
    /// float32 weights on the CPU): the candidates are ranked on bfloat16 products (float32 accumulation, bfloat16
    /// output) plus the float32 b_enc, and the pre-activations at the chosen entries are then recomputed exactly in
    /// float32 (<see cref="ExactPre"/>), so only near-ties can be selected differently from float32.</summary>
    private bool UseBf16Encoder =>
        AutocastKernels;

    /// <summary>float32 pre-activations ⟨x̃[row], W_enc[:, col]⟩ + b_enc[col] at the code's entries (x̃ the encoder input,
    /// [N, d_in]; <paramref name="encT"/> a contiguous float32 copy of W_encᵀ), no gradient.</summary>
    internal Tensor ExactPre(Tensor xin, Tensor encT, SparseCode code)
    {
        using var scope = NewDisposeScope();
        using var xc = xin.contiguous();
        return SparseKernels.RowDots(xc, code.Rows, encT, code.Cols).add_(BEnc.detach().index_select(0, code.Cols), TorchScalars.One).MoveToOuterDisposeScope();
    }

    private readonly CandidatePassSwitch _candidateSwitch = new();

    /// <summary>The measured choice of <see cref="CandidatePass.Auto"/> (the train bench reads its timings).</summary>
    internal CandidatePassSwitch CandidateSwitch => _candidateSwitch;

    /// <summary>Whether this training step selects through the exact candidate pass (<see cref="SaeTrainingOptions.CandidatePass"/>):
    /// never with <see cref="CandidatePass.Off"/>, wherever a path exists with <see cref="CandidatePass.On"/>, and with
    /// <see cref="CandidatePass.Auto"/> as the measured <see cref="CandidatePassSwitch"/> says.</summary>
    private bool UseCandidatePass(long dSae)
    {
        var path = CpuKernels.Path;
        if (Training.CandidatePass == CandidatePass.Off || !CandidateEncoder.Applies(path, dSae)) return false;
        if (Training.CandidatePass == CandidatePass.On) return true;
        _candidateSwitch.Path = path;
        return _candidateSwitch.Choose();
    }

    /// <summary>Per-row candidates the selection needs (k for TopK; more for BatchTopK).</summary>
    internal abstract long CandidatesPerRow { get; }

    /// <summary>Chooses the active latents among each row's top <see cref="CandidatesPerRow"/> pre-activations
    /// ([N, m] values and latent indices); <paramref name="densePre"/> recomputes the full [N, d_sae] matrix for the rare
    /// case the candidates do not suffice. Returns the code and the pre-activation values at its entries.</summary>
    internal abstract (SparseCode Code, Tensor PreValues) SelectFromCandidates(Tensor candValues, Tensor candIndices, Func<Tensor> densePre);

    /// <summary>Per-row top-k (unsorted): <see cref="TopKSelection.RowTopK"/> for contiguous float32 matrices (about
    /// twice as fast as torch.topk here), torch.topk otherwise.</summary>
    internal static (Tensor Values, Tensor Indices) RowTopK(Tensor m, int k)
    {
        if (m.dtype == ScalarType.Float32 && m.is_contiguous() && CpuKernels.On(m) && m.dim() == 2)
            return TopKSelection.RowTopK(m, k);
        return m.topk(k, dim: -1, largest: true, sorted: false);
    }

    /// <summary>The training-time selection on a dense pre-activation matrix (no gradient).</summary>
    internal (SparseCode Code, Tensor PreValues) Select(Tensor pre)
    {
        var (v, i) = pre.topk((int)Math.Min(CandidatesPerRow, pre.shape[1]), dim: 1, largest: true, sorted: false);
        return SelectFromCandidates(v, i, () => pre.alias());
    }

    private bool _torchHeavyBackward;

    /// <inheritdoc/>
    internal override bool TorchHeavyBackward => _torchHeavyBackward;

    internal override bool TrainsUnitNormDecoderRows => Training.RescaleActsByDecoderNorm;

    /// <inheritdoc/>
    internal override bool SmallTorchSteps => !Training.Autocast && CpuKernels.On(W_enc);

    /// <inheritdoc/>
    public override SaeTrainOutput TrainingForward(Tensor x, Tensor target, SaeTrainContext ctx)
    {
        using var scope = NewDisposeScope();
        _torchHeavyBackward = false;
        var deadIdx = DeadLatents(ctx);
        SparseCode code;
        Tensor preValues;
        Tensor? deadPre = null;
        (Tensor Rows, Tensor Local, Tensor Values)? deadChosen = null;
        bool bf16 = UseBf16Encoder;
        Tensor? encT = null;
        using (no_grad())
        {
            var xin = EncoderInput(x);
            long n = xin.shape[0], dSae = Cfg.DSae;
            long m = Math.Min(CandidatesPerRow, dSae);
            bool exact = W_enc.dtype == ScalarType.Float32 && CpuKernels.On(W_enc) && UseCandidatePass(dSae);
            long chunkRows = ChunkRows(exact);
            if (exact) bf16 = false;
            var xb = bf16 ? Bf16Autograd.ToBf16(xin) : null;
            encT = bf16 || exact ? TransposeKernel.Of(W_enc.detach()) : null;
            using var candidates = exact ? new CandidateEncoder(encT!, BEnc, CpuKernels.Path) : null;
            long kAux = deadIdx is null ? 0 : Math.Min(Training.KAux ?? Cfg.DIn / 2, deadIdx.shape[0]);
            var deadR = new List<Tensor>();
            var deadV = new List<Tensor>();
            var deadI = new List<Tensor>();
            var wb = bf16 ? Bf16Autograd.ToBf16(encT!).t() : null;
            var candV = new List<Tensor>();
            var candI = new List<Tensor>();
            var deadParts = new List<Tensor>();
            for (long r = 0; r < n; r += chunkRows)
            {
                using var chunkScope = NewDisposeScope();
                long rows = Math.Min(chunkRows, n - r);
                Tensor pre, v, i;
                if (candidates is not null)
                {
                    using var approx = candidates.Approximate(xin.narrow(0, r, rows));
                    (v, i) = candidates.TopK(approx, (int)m);
                    candV.Add(v.MoveToOuterDisposeScope());
                    candI.Add(i.MoveToOuterDisposeScope());
                    if (deadIdx is null) continue;
                    using var rScalar = r.ToScalar();
                    // AuxK decodes only positive entries: when no row has more than k_aux, they need no ranking.
                    if (candidates.PositiveAmong(approx, deadIdx, (int)kAux) is { } pos)
                    {
                        deadR.Add(pos.Rows.add_(rScalar, TorchScalars.One).MoveToOuterDisposeScope());
                        deadI.Add(pos.Local.MoveToOuterDisposeScope());
                        deadV.Add(pos.Values.MoveToOuterDisposeScope());
                        continue;
                    }
                    var (dv, di) = candidates.TopK(approx, (int)kAux, deadIdx);
                    var top = SparseLatents.FromRowIndices(di);
                    deadR.Add(top.Rows.add(rScalar, TorchScalars.One).MoveToOuterDisposeScope());
                    deadI.Add(top.Cols.MoveToOuterDisposeScope());
                    deadV.Add(dv.reshape(-1).MoveToOuterDisposeScope());
                    continue;
                }
                if (bf16)
                {
                    using (RowRanges.ParallelTorch()) pre = xb!.narrow(0, r, rows).mm(wb!);
                    (v, i) = TopKSelection.RowTopKBf16(pre, BEnc, (int)m);
                }
                else
                {
                    pre = Blas.AddMm(BEnc, xin.narrow(0, r, rows), W_enc);
                    (v, i) = RowTopK(pre, (int)m);
                }
                candV.Add(v.MoveToOuterDisposeScope());
                candI.Add(i.MoveToOuterDisposeScope());
                if (deadIdx is not null)
                {
                    var dp = pre.index_select(1, deadIdx);
                    if (bf16) dp = dp.to(ScalarType.Float32).add_(BEnc.index_select(0, deadIdx), TorchScalars.One);
                    deadParts.Add(dp.MoveToOuterDisposeScope());
                }
            }
            var candValues = candV.Count == 1 ? candV[0] : cat(candV, 0);
            var candIndices = candI.Count == 1 ? candI[0] : cat(candI, 0);
            (code, preValues) = SelectFromCandidates(candValues, candIndices, () => HiddenPre(x));
            if (bf16) preValues = ExactPre(xin, encT!, code);
            if (deadIdx is not null && candidates is null) deadPre = deadParts.Count == 1 ? deadParts[0] : cat(deadParts, 0);
            if (deadIdx is not null && candidates is not null)
                deadChosen = (deadR.Count == 1 ? deadR[0] : cat(deadR, 0), deadI.Count == 1 ? deadI[0] : cat(deadI, 0), deadV.Count == 1 ? deadV[0] : cat(deadV, 0));
        }
        var vals = nn.functional.relu(EncodeCode(x, code, preValues));
        var losses = new Dictionary<string, Tensor>();
        var (y, reconLoss) = ReconstructionLoss(code, vals, target, losses);
        var loss = reconLoss;
        if (deadIdx is not null)
        {
            var aux = AuxiliaryLoss(x, target, y, deadIdx, deadPre, encT, deadChosen);
            using var auxKCoefficient = Training.AuxKCoefficient.ToScalar();
            loss = loss.add(aux * auxKCoefficient, TorchScalars.One);
            losses["auxiliary_reconstruction_loss"] = aux.detach();
        }
        AfterSelection(code, vals, ctx);
        return new SparseTrainingLatents(code, vals, Cfg.DSae).ToOutput(loss, y, losses);
    }

    /// <summary>Indices of the dead latents when AuxK applies (a dead mask with at least one dead latent and a positive
    /// coefficient), else null.</summary>
    private Tensor? DeadLatents(SaeTrainContext ctx)
    {
        if (ctx.DeadMask is not { } dead || Training.AuxKCoefficient <= 0) return null;
        if (dead.shape.Length != 1 || dead.shape[0] != Cfg.DSae)
            throw new SaeSharpException($"dead mask must have shape [{Cfg.DSae}], got [{string.Join(", ", dead.shape)}]");
        var idx = dead.to(ScalarType.Bool).nonzero().squeeze(1);
        if (idx.shape[0] == 0 || Math.Min(Training.KAux ?? Cfg.DIn / 2, idx.shape[0]) <= 0) return null;
        return idx;
    }

    /// <summary>Pre-activations at the code's entries, differentiable w.r.t. the encoder parameters and b_dec.</summary>
    internal Tensor EncodeCode(Tensor x, SparseCode code, Tensor preValues) =>
        SparseLatents.EncoderValues(x, Cfg.ApplyBDecToInput ? b_dec : null, W_enc, BEnc, code, preValues);

    /// <summary>Reconstruction ŷ = decode(code) + b_dec and the loss on it (sum over features, mean over rows).
    /// Matryoshka overrides it with the nested prefix losses.</summary>
    internal virtual (Tensor SaeOut, Tensor Loss) ReconstructionLoss(SparseCode code, Tensor vals, Tensor target, Dictionary<string, Tensor> losses)
    {
        var y = SparseLatents.Decode(vals, code, W_dec).add(b_dec, TorchScalars.One);
        var mse = MseLoss(y, target);
        losses["mse_loss"] = mse;
        return (y, mse);
    }

    /// <summary>The AuxK term of the step (<see cref="AuxKLoss"/> over every dead latent on the full residual); Matryoshka
    /// overrides it with one term per level when <see cref="SaeTrainingOptions.UseMatryoshkaAuxLoss"/> is set.</summary>
    internal virtual Tensor AuxiliaryLoss(Tensor x, Tensor target, Tensor y, Tensor deadIdx, Tensor? deadPre, Tensor? encT, (Tensor Rows, Tensor Local, Tensor Values)? chosen) =>
        AuxKLoss(x, target, y, deadIdx, deadPre, encT, chosen);

    /// <summary>Hook after the active latents are chosen (BatchTopK updates its threshold estimate here).</summary>
    internal virtual void AfterSelection(SparseCode code, Tensor vals, SaeTrainContext ctx) { }

    /// <summary>AuxK runs densely over the dead latents (an [N, n_dead] masked code and three dense matmuls) while its
    /// positive entries number at least N·n_dead / this, else through the sparse code. At d_in 512, k_aux 256 the dense
    /// form is about 3× faster with 10% of 8192 latents dead and every chosen entry positive: the code is then 30% dense,
    /// where matmuls beat per-entry row kernels.</summary>
    internal long AuxKDenseMaxRatio { get; set; } = 8;

    /// <summary>
    /// The normalised AuxK loss (see the class comment) from the pre-activations of the dead latents
    /// <paramref name="deadIdx"/> ([N, n_dead], no gradient). With <paramref name="encT"/> (W_encᵀ, contiguous float32) the
    /// chosen pre-activations are recomputed exactly (<see cref="ExactPre"/>): deadPre came from the bfloat16 encoder and
    /// serves only the selection. With <paramref name="chosen"/>, the candidate pass's choice among the dead latents
    /// (entries as rows, positions in deadIdx and float32 pre-activations: the exact per-row top-k_aux, or every positive
    /// entry when no row has more than k_aux), deadPre is not needed.
    /// Only the chosen entries with a positive pre-activation are decoded: the ReLU makes the others zero, with zero
    /// gradient, so the loss and the gradients are those of the whole top-k_aux. In training most chosen entries are not
    /// positive (2–8 % were, on the built-in model's activations), so this is a small part of the k_aux·N entries. When no
    /// row has more than k_aux positive dead pre-activations (float32 deadPre), they are taken without a top-k.
    /// </summary>
    internal Tensor AuxKLoss(Tensor x, Tensor target, Tensor y, Tensor deadIdx, Tensor? deadPre, Tensor? encT = null, (Tensor Rows, Tensor Local, Tensor Values)? chosen = null)
    {
        using var scope = NewDisposeScope();
        long n = x.shape[0], nDead = deadIdx.shape[0];
        long kAux = Math.Min(Training.KAux ?? Cfg.DIn / 2, nDead);
        Tensor rows, local, preValues;
        using (no_grad())
        {
            var positive = chosen is null && encT is null ? PositiveWithinKAux(deadPre!, kAux) : null;
            if (positive is { } p)
                (rows, local, preValues) = p;
            else if (chosen is { } c)
                (rows, local, preValues) = c;
            else
            {
                var li = RowTopK(nn.functional.relu(deadPre!), (int)kAux).Indices;
                var top = SparseLatents.FromRowIndices(li);
                (rows, local) = (top.Rows, top.Cols);
                preValues = encT is null ? deadPre!.gather(1, li).reshape(-1)
                    : ExactPre(EncoderInput(x), encT, new SparseCode(rows, deadIdx.index_select(0, local), n));
            }
            var keep = preValues.gt(TorchScalars.Of(0)).nonzero().squeeze(1);
            if (keep.shape[0] < preValues.shape[0])
                (rows, local, preValues) = (rows.index_select(0, keep), local.index_select(0, keep), preValues.index_select(0, keep));
        }
        var e = (target - y).detach();
        long nnz = preValues.shape[0];
        Tensor eHat;
        if (nnz == 0)
            eHat = zeros_like(e);
        else if (nnz * AuxKDenseMaxRatio >= n * nDead)
        {
            Tensor mask;
            using (no_grad())
                mask = zeros(n, nDead, dtype: x.dtype, device: x.device).index_put_(ones(nnz, dtype: x.dtype, device: x.device), rows, local);
            // (x − b_dec)·W + b as x·W + (b − b_dec·W): b_dec's gradient is then a product with the summed rows, not
            // a fourth [N, n_dead]·[n_dead, d_in] product summed afterwards.
            // [N, n_dead] torch products: with torch's full thread count, forward here and backward in the trainer.
            _torchHeavyBackward = true;
            using var parallel = RowRanges.ParallelTorch();
            var wSel = W_enc.index_select(1, deadIdx);
            var bias = Cfg.ApplyBDecToInput ? BEnc.index_select(0, deadIdx) - b_dec.matmul(wSel) : BEnc.index_select(0, deadIdx);
            var pre = addmm(bias, x, wSel, 1, 1);
            eHat = (nn.functional.relu(pre) * mask).mm(W_dec.index_select(0, deadIdx));
        }
        else
        {
            var code = new SparseCode(rows, deadIdx.index_select(0, local), n);
            var auxVals = nn.functional.relu(EncodeCode(x, code, preValues));
            eHat = SparseLatents.Decode(auxVals, code, W_dec);
        }
        var l2 = (e - eHat).pow(TorchScalars.Of(2)).sum(-1).mean();
        var denom = (e - e.mean([0], keepdim: true)).pow(TorchScalars.Of(2)).sum(-1).mean();
        return (l2 / denom).nan_to_num(0.0).MoveToOuterDisposeScope();
    }

    /// <summary>The positive entries of <paramref name="deadPre"/> (rows, positions in the dead set, values), or null when a
    /// row has more than <paramref name="kAux"/> of them (the top-k_aux then decides).</summary>
    private static (Tensor Rows, Tensor Local, Tensor Values)? PositiveWithinKAux(Tensor deadPre, long kAux)
    {
        using var scope = NewDisposeScope();
        if (deadPre.dtype != ScalarType.Float32) return null;
        var entries = SparseKernels.PositiveEntries(deadPre.contiguous(), long.MaxValue);
        if (entries is not { } p || p.Values is null) return null;
        if (p.Rows.shape[0] > 0 && p.Rows.bincount(null, 0).max().item<long>() > kAux) return null;
        return (p.Rows.MoveToOuterDisposeScope(), p.Cols.MoveToOuterDisposeScope(), p.Values.MoveToOuterDisposeScope());
    }

    /// <summary>Random decoder rows, W_enc = W_decᵀ, zero biases: unit-norm rows (<paramref name="decoderNorm"/> ignored), or
    /// rows of norm <paramref name="decoderNorm"/> with <see cref="SaeTrainingOptions.RescaleActsByDecoderNorm"/> false
    /// (SAELens's <c>decoder_init_norm</c>).</summary>
    public override void InitializeWeights(Generator? generator = null, double decoderNorm = 0.1) =>
        base.InitializeWeights(generator, Training.RescaleActsByDecoderNorm ? 1.0 : decoderNorm);

    /// <inheritdoc/>
    public override void BeforeOptimizerStep(SaeTrainContext ctx)
    {
        _candidateSwitch.Stop();
        if (Training.RescaleActsByDecoderNorm) RemoveGradientParallelToDecoderRows();
    }

    /// <inheritdoc/>
    public override void AfterOptimizerStep(SaeTrainContext ctx)
    {
        if (Training.RescaleActsByDecoderNorm) NormalizeDecoderRows();
    }
}
