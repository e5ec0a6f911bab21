using TorchSharp;
using static TorchSharp.torch;

namespace SaeSharp.Kernels;

/// <summary>
/// Active latents in coordinate form: entry e is latent <see cref="Cols"/>[e] of row <see cref="Rows"/>[e] (int64, [nnz]).
/// TopK-family SAEs train through this form so that decoding and the backward pass touch only the active latents.
/// </summary>
internal sealed record SparseCode(Tensor Rows, Tensor Cols, long RowCount);

/// <summary>
/// Autograd operations on <see cref="SparseCode"/>s whose backward passes cost O(nnz·d) instead of O(N·d_sae·d):
/// <list type="bullet">
/// <item><see cref="EncoderValues"/>: pre-activations ((x − b_dec)·W_enc + b_enc) at the active entries, with gradients to
/// W_enc (grad W_encᵀ[col] += g·x̃[row]), b_enc (index_add) and b_dec (−W_enc·grad b_enc); the values themselves come
/// from the dense no-grad encoder pass that selected the entries.</item>
/// <item><see cref="Decode"/>: Σ_e vals[e]·W_dec[cols[e]] per row, with gradients to vals (row-wise dot products) and
/// W_dec (grad W_dec[col] += vals·grad y[row]).</item>
/// </list>
/// The row operations run in <see cref="SparseKernels"/>.
/// </summary>
internal static class SparseLatents
{
    public static Tensor EncoderValues(Tensor x, Tensor? bDec, Tensor wEnc, Tensor bEnc, SparseCode code, Tensor preValues) =>
        EncoderValuesFunction.apply(x, bDec!, wEnc, bEnc, code.Rows, code.Cols, preValues.detach());

    public static Tensor Decode(Tensor vals, SparseCode code, Tensor wDec) =>
        DecodeFunction.apply(vals, code.Rows, code.Cols, wDec, code.RowCount);

    /// <summary>Dense [rows, d_sae] matrix of the code with the given values (no gradient).</summary>
    public static Tensor ToDense(SparseCode code, Tensor vals, long dSae)
    {
        using var _ = no_grad();
        using var scope = NewDisposeScope();
        var dense = zeros(code.RowCount, dSae, dtype: vals.dtype, device: vals.device);
        dense.index_put_(vals.detach(), code.Rows, code.Cols);
        return dense.MoveToOuterDisposeScope();
    }

    /// <summary>[d_sae] int64: the number of nonzero values of each latent in the code.</summary>
    public static Tensor ActiveCounts(SparseCode code, Tensor vals, long dSae)
    {
        using var _ = no_grad();
        using var scope = NewDisposeScope();
        return zeros(dSae, dtype: ScalarType.Int64, device: vals.device).index_add_(0, code.Cols, vals.detach().ne(TorchScalars.Of(0)).to(ScalarType.Int64), TorchScalars.Of(1)).MoveToOuterDisposeScope();
    }

    /// <summary>The code of a per-row top-k selection ([N, k] indices).</summary>
    public static SparseCode FromRowIndices(Tensor indices)
    {
        long n = indices.shape[0], k = indices.shape[1];
        using var nScalar = n.ToScalar();
        var rows = TorchScalars.Arange(nScalar, dtype: ScalarType.Int64, device: indices.device).unsqueeze(1).expand(n, k).reshape(-1);
        return new SparseCode(rows, indices.reshape(-1), n);
    }

    /// <summary>Σ_e vals[e]·dense[srcRow[e]] accumulated into row dstRow[e] of a zero [rows, d] matrix.</summary>
    private static Tensor ScatterRows(Tensor dstRow, Tensor srcRow, Tensor vals, long rows, Tensor dense)
    {
        using var src = dense.contiguous();
        return SparseKernels.SumRows(rows, dstRow, src, srcRow, vals);
    }

    private sealed class EncoderValuesFunction : autograd.SingleTensorFunction<EncoderValuesFunction>
    {
        public override string Name => "SparseEncoderValues";

        public override Tensor forward(autograd.AutogradContext ctx, params object[] vars)
        {
            var x = (Tensor)vars[0];
            var bDec = vars[1] as Tensor;
            var wEnc = (Tensor)vars[2];
            var rows = (Tensor)vars[4];
            var cols = (Tensor)vars[5];
            var pre = (Tensor)vars[6];
            ctx.set_materialize_grads(false);
            ctx.save_for_backward([x, bDec!, wEnc, rows, cols]);
            return pre.clone();
        }

        public override List<Tensor> backward(autograd.AutogradContext ctx, Tensor grad)
        {
            var saved = ctx.get_saved_variables();
            if (grad is null || grad.IsInvalid) return [null!, null!, null!, null!, null!, null!, null!];
            using var scope = NewDisposeScope();
            var (x, bDec, wEnc, rows, cols) = (saved[0], saved[1], saved[2], saved[3], saved[4]);
            long dSae = wEnc.shape[1];
            var xin = bDec is null || bDec.IsInvalid ? x : x - bDec;
            var gBEnc = zeros(dSae, dtype: grad.dtype, device: grad.device).index_add_(0, cols, grad, TorchScalars.Of(1));
            using var xc = xin.contiguous();
            var gWEnc = SparseKernels.SumRowsTransposed(dSae, cols, xc, rows, grad);
            Tensor? gBDec = bDec is null || bDec.IsInvalid ? null : wEnc.mv(gBEnc).neg_();
            return [null!, gBDec?.MoveToOuterDisposeScope()!, gWEnc.MoveToOuterDisposeScope(), gBEnc.MoveToOuterDisposeScope(), null!, null!, null!];
        }
    }

    private sealed class DecodeFunction : autograd.SingleTensorFunction<DecodeFunction>
    {
        public override string Name => "SparseDecode";

        public override Tensor forward(autograd.AutogradContext ctx, params object[] vars)
        {
            var vals = (Tensor)vars[0];
            var rows = (Tensor)vars[1];
            var cols = (Tensor)vars[2];
            var wDec = (Tensor)vars[3];
            var n = (long)vars[4];
            ctx.set_materialize_grads(false);
            ctx.save_for_backward([vals, rows, cols, wDec]);
            return ScatterRows(rows, cols, vals, n, wDec);
        }

        public override List<Tensor> backward(autograd.AutogradContext ctx, Tensor grad)
        {
            var saved = ctx.get_saved_variables();
            if (grad is null || grad.IsInvalid) return [null!, null!, null!, null!, null!];
            using var scope = NewDisposeScope();
            var (vals, rows, cols, wDec) = (saved[0], saved[1], saved[2], saved[3]);
            long dSae = wDec.shape[0];
            var gy = grad.contiguous();
            var gWDec = ScatterRows(cols, rows, vals, dSae, gy);
            var gVals = SparseKernels.RowDots(gy, rows, wDec.contiguous(), cols);
            return [gVals.MoveToOuterDisposeScope(), null!, null!, gWDec.MoveToOuterDisposeScope(), null!];
        }
    }
}
