using System.Diagnostics;
using SaeSharp.Kernels;
using SaeSharp.Saes;
using TorchSharp;
using static TorchSharp.torch;

namespace SaeSharp.Bench;

/// <summary>
/// <c>train --profile</c>: per-phase milliseconds of a TopK-family training step (best of the timed steps) and of its
/// building blocks in isolation (chunked encoder, top-k selection, sparse decode and backward kernels).
/// </summary>
internal static class TopKProfile
{
    public static void Run(string name, int dIn, int dSae, int batch, int k, int steps, bool autocast = false)
    {
        using var bench = BenchSae.Create(name, dIn, dSae, batch, k, autocast);
        var sae = (TopKFamilySae)bench.Sae;
        var x = bench.X;
        var best = new Dictionary<string, double>();
        void Note(string key, double ms) => best[key] = best.TryGetValue(key, out var b) ? Math.Min(b, ms) : ms;
        bench.Profile(steps, best);
        ForwardBlocks(sae, x, k, steps, Note);
        if (bench.DeadMask is not null)
        {
            // AuxK's dense and sparse forms (TopKFamilySae.AuxKDenseMaxRatio) at 10 %, 20 % and 45 % of the latents dead.
            long ratio = sae.AuxKDenseMaxRatio;
            foreach (int twentieths in new[] { 2, 4, 9 })
            {
                using var mask = arange(dSae).remainder(20).lt(twentieths);
                foreach (bool dense in new[] { true, false })
                {
                    sae.AuxKDenseMaxRatio = dense ? long.MaxValue / 4 : 0;
                    AuxKBlocks(sae, x, mask, steps, Note, dense ? "dense" : "sparse");
                }
            }
            sae.AuxKDenseMaxRatio = ratio;
        }
        using (no_grad())
        {
            for (int rep = 0; rep < steps; rep++)
            {
                using var scope = NewDisposeScope();
                long chunkRows = sae.ChunkRows(candidatePass: false);
                var sw = Stopwatch.StartNew();
                for (long r = 0; r < batch; r += chunkRows)
                {
                    using var cs = NewDisposeScope();
                    addmm(sae.BEnc, x.narrow(0, r, Math.Min(chunkRows, batch - r)), sae.WEnc, 1, 1);
                }
                Note("[chunked addmm]", sw.Elapsed.TotalMilliseconds);
                foreach (long cr in new long[] { 256, 1024, 2048 })
                {
                    sw.Restart();
                    for (long r = 0; r < batch; r += cr)
                    {
                        using var cs = NewDisposeScope();
                        addmm(sae.BEnc, x.narrow(0, r, Math.Min(cr, batch - r)), sae.WEnc, 1, 1);
                    }
                    Note($"[chunked addmm {cr}]", sw.Elapsed.TotalMilliseconds);
                }
                var wt = sae.WEnc.t().contiguous();
                sw.Restart();
                for (long r = 0; r < batch; r += chunkRows)
                {
                    using var cs = NewDisposeScope();
                    addmm(sae.BEnc, x.narrow(0, r, Math.Min(chunkRows, batch - r)), wt.t(), 1, 1);
                }
                Note("[chunked addmm W^T]", sw.Elapsed.TotalMilliseconds);
                sw.Restart();
                var pre = addmm(sae.BEnc, x, sae.WEnc, 1, 1);
                Note("[one addmm]", sw.Elapsed.TotalMilliseconds);
                sw.Restart();
                var (v, i) = TopKSelection.RowTopK(pre, k);
                Note("[RowTopK k]", sw.Elapsed.TotalMilliseconds);
                sw.Restart();
                TopKSelection.RowTopK(pre, 4 * k);
                Note("[RowTopK 4k]", sw.Elapsed.TotalMilliseconds);
                sw.Restart();
                pre.topk(k, dim: 1, largest: true, sorted: false);
                Note("[torch.topk k]", sw.Elapsed.TotalMilliseconds);
                var code = SparseLatents.FromRowIndices(i);
                var vals = v.reshape(-1).relu();
                var dst = zeros(batch, dIn);
                sw.Restart();
                SparseKernels.ScatterAddRows(dst, code.Rows, sae.WDec, code.Cols, vals);
                Note("[decode scatter]", sw.Elapsed.TotalMilliseconds);
                var gW = zeros(dSae, dIn);
                sw.Restart();
                SparseKernels.ScatterAddRows(gW, code.Cols, dst, code.Rows, vals);
                Note("[gW scatter]", sw.Elapsed.TotalMilliseconds);
                sw.Restart();
                SparseKernels.SumRowsTransposed(dSae, code.Cols, dst, code.Rows, vals).Dispose();
                Note("[gW_enc scatter, transposed]", sw.Elapsed.TotalMilliseconds);
                sw.Restart();
                SparseKernels.RowDots(dst, code.Rows, sae.WDec, code.Cols);
                Note("[row dots]", sw.Elapsed.TotalMilliseconds);
                sw.Restart();
                zeros(dSae, dIn);
                Note("[zeros d_sae x d_in]", sw.Elapsed.TotalMilliseconds);
                if (autocast) AutocastBlocks(sae, x, k, chunkRows, code, Note);
                else if (CandidateEncoder.Applies(CpuKernels.Path, dSae)) CandidateBlocks(sae, x, k, sae.ChunkRows(candidatePass: true), Note);
            }
        }
        foreach (var (key, ms) in best) Console.WriteLine($"  {key,-24} {ms,8:F1} ms");
    }

    /// <summary>The float32 forward of a training step in its parts, as <see cref="TopKFamilySae.TrainingForward"/> runs them:
    /// the encoder input x − b_dec, the chunked addmm with each chunk's per-row top-k, the selection from the candidates,
    /// the differentiable values at the chosen entries, and decoding with the loss.</summary>
    private static void ForwardBlocks(TopKFamilySae sae, Tensor x, int k, int steps, Action<string, double> note)
    {
        long batch = x.shape[0], dSae = sae.Cfg.DSae;
        long chunkRows = sae.ChunkRows(candidatePass: false);
        for (int rep = 0; rep < steps; rep++)
        {
            using var scope = NewDisposeScope();
            var sw = Stopwatch.StartNew();
            Tensor xin;
            using (no_grad()) xin = sae.Cfg.ApplyBDecToInput ? x - sae.BDec : x.alias();
            note("[fwd x - b_dec]", sw.Elapsed.TotalMilliseconds);
            sw.Restart();
            var candV = new List<Tensor>();
            var candI = new List<Tensor>();
            using (no_grad())
            {
                for (long r = 0; r < batch; r += chunkRows)
                {
                    using var cs = NewDisposeScope();
                    var pre = addmm(sae.BEnc, xin.narrow(0, r, Math.Min(chunkRows, batch - r)), sae.WEnc, 1, 1);
                    var (v, i) = TopKFamilySae.RowTopK(pre, (int)Math.Min(sae.CandidatesPerRow, dSae));
                    candV.Add(v.MoveToOuterDisposeScope());
                    candI.Add(i.MoveToOuterDisposeScope());
                }
            }
            note("[fwd chunked addmm+top-k]", sw.Elapsed.TotalMilliseconds);
            sw.Restart();
            SparseCode code;
            Tensor preValues;
            using (no_grad()) (code, preValues) = sae.SelectFromCandidates(cat(candV, 0), cat(candI, 0), () => sae.HiddenPre(x));
            note("[fwd select]", sw.Elapsed.TotalMilliseconds);
            sw.Restart();
            var vals = nn.functional.relu(sae.EncodeCode(x, code, preValues));
            note("[fwd values (autograd)]", sw.Elapsed.TotalMilliseconds);
            sw.Restart();
            var (y, loss) = sae.ReconstructionLoss(code, vals, x, new Dictionary<string, Tensor>());
            loss.item<float>();
            note("[fwd decode + loss]", sw.Elapsed.TotalMilliseconds);
            sw.Restart();
            sae.zero_grad();
            loss.backward();
            note("[backward]", sw.Elapsed.TotalMilliseconds);
            sw.Restart();
            var o = sae.TrainingForward(x, x, new SaeTrainContext { Step = rep });
            note("[TrainingForward]", sw.Elapsed.TotalMilliseconds);
            sw.Restart();
            o.Loss.backward();
            note("[its backward]", sw.Elapsed.TotalMilliseconds);
        }
    }

    /// <summary>AuxK's parts as <see cref="TopKFamilySae.TrainingForward"/> runs them without the candidate pass: the dead
    /// latents' indices, their pre-activation columns, the per-row top-k_aux among them, the loss and its backward.</summary>
    private static void AuxKBlocks(TopKFamilySae sae, Tensor x, Tensor deadMask, int steps, Action<string, double> note, string form)
    {
        int kAux = sae.Cfg.DIn / 2;
        for (int rep = 0; rep < steps; rep++)
        {
            using var scope = NewDisposeScope();
            var sw = Stopwatch.StartNew();
            var deadIdx = deadMask.nonzero().squeeze(1);
            note("[auxk dead indices]", sw.Elapsed.TotalMilliseconds);
            Tensor deadPre;
            using (no_grad())
            {
                var pre = addmm(sae.BEnc, x, sae.WEnc, 1, 1);
                sw.Restart();
                deadPre = pre.index_select(1, deadIdx);
                note($"[auxk dead columns {deadIdx.shape[0]}]", sw.Elapsed.TotalMilliseconds);
                sw.Restart();
                TopKFamilySae.RowTopK(nn.functional.relu(deadPre), kAux);
                note($"[auxk top-{kAux} of {deadIdx.shape[0]}]", sw.Elapsed.TotalMilliseconds);
            }
            var y = x.detach().mul(0.9);
            sw.Restart();
            var aux = sae.AuxKLoss(x, x, y, deadIdx, deadPre);
            aux.item<float>();
            note($"[auxk {form} loss {deadIdx.shape[0]}]", sw.Elapsed.TotalMilliseconds);
            sae.zero_grad();
            sw.Restart();
            aux.backward();
            note($"[auxk {form} backward {deadIdx.shape[0]}]", sw.Elapsed.TotalMilliseconds);
        }
    }

    /// <summary>The candidate pass's building blocks as a training step runs them (<see cref="TopKFamilySae.TrainingForward"/>):
    /// W_encᵀ, the encoder (weight quantisation and norms), and per chunk the low-precision products and the exact top-k.</summary>
    private static void CandidateBlocks(TopKFamilySae sae, Tensor x, int k, long chunkRows, Action<string, double> note)
    {
        using var scope = NewDisposeScope();
        long batch = x.shape[0];
        var sw = Stopwatch.StartNew();
        var encT = TransposeKernel.Of(sae.WEnc.detach());
        note("[cand W_enc^T]", sw.Elapsed.TotalMilliseconds);
        sw.Restart();
        using var candidates = new CandidateEncoder(encT, sae.BEnc, CpuKernels.Path);
        note($"[cand encoder ({CpuKernels.Path})]", sw.Elapsed.TotalMilliseconds);
        double products = 0, selection = 0;
        for (long r = 0; r < batch; r += chunkRows)
        {
            using var cs = NewDisposeScope();
            sw.Restart();
            using var approx = candidates.Approximate(x.narrow(0, r, Math.Min(chunkRows, batch - r)));
            products += sw.Elapsed.TotalMilliseconds;
            sw.Restart();
            candidates.TopK(approx, k);
            selection += sw.Elapsed.TotalMilliseconds;
        }
        note("[cand products, chunks]", products);
        note("[cand exact top-k, chunks]", selection);
    }

    /// <summary>The bfloat16 building blocks of an autocast step: conversions, the chunked bf16 encoder matmul (both
    /// weight layouts), the bf16 top-k and the exact float32 recomputation of the chosen pre-activations.</summary>
    private static void AutocastBlocks(TopKFamilySae sae, Tensor x, int k, long chunkRows, SparseCode code, Action<string, double> note)
    {
        using var scope = NewDisposeScope();
        long batch = x.shape[0];
        long bf16Rows = Math.Min(chunkRows, batch);
        // Each block: the best of 5 runs (the machine is shared).
        void Time(string key, Action f)
        {
            for (int i = 0; i < 5; i++)
            {
                using var s = NewDisposeScope();
                var sw = Stopwatch.StartNew();
                f();
                note(key, sw.Elapsed.TotalMilliseconds);
            }
        }
        var wt = sae.WEnc.t().contiguous();
        var wb = wt.to(ScalarType.BFloat16).t();
        var xb = x.to(ScalarType.BFloat16);
        Time("[W_enc^T fp32 copy]", () => sae.WEnc.t().contiguous());
        Time("[W_enc^T -> bf16]", () => wt.to(ScalarType.BFloat16));
        Time("[x -> bf16]", () => x.to(ScalarType.BFloat16));
        foreach (long cr in new long[] { 512, 1024, 4096 })
        {
            Time($"[chunked bf16 mm {cr}]", () =>
            {
                for (long r = 0; r < batch; r += cr)
                {
                    using var cs = NewDisposeScope();
                    xb.narrow(0, r, Math.Min(cr, batch - r)).mm(wb);
                }
            });
        }
        foreach (long cr in new long[] { 256, 512, 1024, 2048 })
        {
            Time($"[chunked bf16 mm + top-k {cr}]", () =>
            {
                for (long r = 0; r < batch; r += cr)
                {
                    using var cs = NewDisposeScope();
                    TopKSelection.RowTopKBf16(xb.narrow(0, r, Math.Min(cr, batch - r)).mm(wb), sae.BEnc, k);
                }
            });
        }
        var chunk = xb.narrow(0, 0, bf16Rows).mm(wb);
        long reps = (batch + bf16Rows - 1) / bf16Rows;
        Time("[RowTopK bf16 k, chunks]", () => { for (long i = 0; i < reps; i++) TopKSelection.RowTopKBf16(chunk, sae.BEnc, k); });
        Time("[RowTopK bf16 4k, chunks]", () => { for (long i = 0; i < reps; i++) TopKSelection.RowTopKBf16(chunk, sae.BEnc, 4 * k); });
        Time("[exact pre dots]", () => SparseKernels.RowDots(x, code.Rows, wt, code.Cols).add_(sae.BEnc.index_select(0, code.Cols)));
    }
}
