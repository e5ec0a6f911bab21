using static TorchSharp.torch;

namespace SaeSharp.Analysis;

/// <summary>
/// A matrix kept as the product A·B of two factors, A [..., ldim, mdim] and B [..., mdim, rdim], leading dimensions
/// (layers, heads) broadcast as batch dimensions: TransformerLens's <c>FactoredMatrix</c> (transformer_lens/FactoredMatrix.py).
/// Eigenvalues come from the small B·A, the SVD and norm from the factors' own SVDs, and a product with another matrix
/// keeps the factorisation along the smaller inner dimension, so W_E·W_V·W_O·W_U of a 50k vocabulary never becomes a
/// [vocab, vocab] tensor. The factors belong to the caller's dispose scope (nothing here is disposed).
/// </summary>
public sealed class FactoredMatrix
{
    /// <summary>Builds A·B; the factors' leading dimensions broadcast against each other.</summary>
    public FactoredMatrix(Tensor a, Tensor b)
    {
        ArgumentNullException.ThrowIfNull(a);
        ArgumentNullException.ThrowIfNull(b);
        if (a.dim() < 2 || b.dim() < 2)
            throw new SaeSharpException($"FactoredMatrix: factors need at least two dimensions, got A [{Dims(a.shape)}] and B [{Dims(b.shape)}]");
        if (a.shape[^1] != b.shape[^2])
            throw new SaeSharpException($"FactoredMatrix: the factors must match on the inner dimension, got A [{Dims(a.shape)}] and B [{Dims(b.shape)}]");
        var lead = Broadcast(a.shape[..^2], b.shape[..^2], a, b);
        LDim = a.shape[^2];
        MDim = a.shape[^1];
        RDim = b.shape[^1];
        Shape = [.. lead, LDim, RDim];
        A = a.broadcast_to([.. lead, LDim, MDim]);
        B = b.broadcast_to([.. lead, MDim, RDim]);
    }

    /// <summary>The left factor [..., ldim, mdim].</summary>
    public Tensor A { get; }

    /// <summary>The right factor [..., mdim, rdim].</summary>
    public Tensor B { get; }

    /// <summary>Rows of the product (TransformerLens <c>ldim</c>).</summary>
    public long LDim { get; }

    /// <summary>The inner (hidden) dimension (TransformerLens <c>mdim</c>).</summary>
    public long MDim { get; }

    /// <summary>Columns of the product (TransformerLens <c>rdim</c>).</summary>
    public long RDim { get; }

    /// <summary>The product's shape: the leading dimensions, then ldim, rdim.</summary>
    public long[] Shape { get; }

    /// <summary>The product A·B [..., ldim, rdim] (expensive for a vocabulary-sized matrix).</summary>
    public Tensor AB => A.matmul(B);

    /// <summary>The reverse product B·A [..., rdim, ldim]; square matrices only.</summary>
    public Tensor BA => RDim == LDim ? B.matmul(A)
        : throw new SaeSharpException($"FactoredMatrix: B·A needs a square matrix, the shape is [{Dims(Shape)}]");

    /// <summary>The transpose: Bᵀ·Aᵀ.</summary>
    public FactoredMatrix T => new(B.transpose(-2, -1), A.transpose(-2, -1));

    /// <summary>The eigenvalues [..., mdim] (complex) of a square A·B, computed as those of B·A: they are the same but for
    /// A·B's trailing zeros, which are left out (TransformerLens <c>eigenvalues</c>). 16-bit factors are taken to float32.</summary>
    public Tensor Eigenvalues()
    {
        var ba = BA;
        if (ba.dtype is ScalarType.BFloat16 or ScalarType.Float16) ba = ba.to(ScalarType.Float32);
        return linalg.eigvals(ba);
    }

    /// <summary>
    /// The thin SVD (U [..., ldim, mdim], S [..., mdim], V [..., rdim, mdim]) with A·B = U·diag(S)·Vᵀ, from the SVDs of the
    /// factors as TransformerLens's <c>svd</c>: A = Ua·Sa·Vaᵀ, B = Ub·Sb·Vbᵀ, then the SVD of the small
    /// diag(Sa)·Vaᵀ·Ub·diag(Sb). S is sorted largest first; the trailing zeros of a low-rank product are kept to mdim.
    /// </summary>
    public (Tensor U, Tensor S, Tensor V) Svd()
    {
        var (ua, sa, vha) = linalg.svd(A, fullMatrices: false);
        var (ub, sb, vhb) = linalg.svd(B, fullMatrices: false);
        var middle = sa.unsqueeze(-1) * vha.matmul(ub) * sb.unsqueeze(-2);
        var (um, sm, vhm) = linalg.svd(middle, fullMatrices: false);
        return (ua.matmul(um), sm, vhb.transpose(-2, -1).matmul(vhm.transpose(-2, -1)));
    }

    /// <summary>The Frobenius norm [...] of A·B: the root of the sum of the squared singular values (TransformerLens <c>norm</c>).</summary>
    public Tensor Norm()
    {
        var s = Svd().S;
        return s.mul(s).sum(-1).sqrt();
    }

    /// <summary>This · <paramref name="other"/> [..., rdim, n], factored along the smaller of mdim and rdim (TransformerLens <c>__matmul__</c>).</summary>
    public FactoredMatrix MatMul(Tensor other)
    {
        ArgumentNullException.ThrowIfNull(other);
        if (other.dim() < 2 || other.shape[^2] != RDim)
            throw new SaeSharpException($"FactoredMatrix: cannot multiply [{Dims(Shape)}] by [{Dims(other.shape)}] (its rows must be {RDim})");
        return RDim > MDim ? new FactoredMatrix(A, B.matmul(other)) : new FactoredMatrix(AB, other);
    }

    /// <summary>This · <paramref name="other"/>, another factored matrix: (this·A')·B'.</summary>
    public FactoredMatrix MatMul(FactoredMatrix other)
    {
        ArgumentNullException.ThrowIfNull(other);
        return MatMul(other.A).MatMul(other.B);
    }

    /// <summary><paramref name="other"/> [..., n, ldim] · this, factored along the smaller of mdim and ldim (TransformerLens <c>__rmatmul__</c>).</summary>
    public FactoredMatrix LeftMatMul(Tensor other)
    {
        ArgumentNullException.ThrowIfNull(other);
        if (other.dim() < 2 || other.shape[^1] != LDim)
            throw new SaeSharpException($"FactoredMatrix: cannot multiply [{Dims(other.shape)}] by [{Dims(Shape)}] (its columns must be {LDim})");
        return LDim > MDim ? new FactoredMatrix(other.matmul(A), B) : new FactoredMatrix(other, AB);
    }

    /// <summary>The number of dimensions of the product, leading ones included (TransformerLens <c>ndim</c>).</summary>
    public int NDim => Shape.Length;

    /// <summary>The factors (TransformerLens <c>pair</c>).</summary>
    public (Tensor A, Tensor B) Pair => (A, B);

    /// <summary>The product times a number: A·<paramref name="scalar"/> and B (TransformerLens <c>__mul__</c> / <c>__rmul__</c>).</summary>
    public FactoredMatrix Multiply(double scalar) => new(A * tensor(scalar, A.dtype, A.device), B);

    /// <summary>The product times a one-element tensor (TransformerLens <c>__mul__</c>, which refuses any other tensor:
    /// use <see cref="MatMul(Tensor)"/> for a matrix).</summary>
    public FactoredMatrix Multiply(Tensor scalar)
    {
        ArgumentNullException.ThrowIfNull(scalar);
        if (scalar.numel() != 1)
            throw new SaeSharpException($"FactoredMatrix: a scalar product needs a one-element tensor, got [{Dims(scalar.shape)}] (MatMul multiplies by a matrix)");
        return new(A * scalar.reshape([]), B);
    }

    /// <summary><see cref="Multiply(double)"/>.</summary>
    public static FactoredMatrix operator *(FactoredMatrix m, double scalar) => m.Multiply(scalar);

    /// <summary><see cref="Multiply(double)"/>.</summary>
    public static FactoredMatrix operator *(double scalar, FactoredMatrix m) => m.Multiply(scalar);

    /// <summary>The same product as the even factorisation U·diag(√S), diag(√S)·Vᵀ: both factors carry half of each
    /// singular value and have orthogonal columns / rows (TransformerLens <c>make_even</c>).</summary>
    public FactoredMatrix MakeEven()
    {
        var (u, s, v) = Svd();
        var root = s.sqrt();
        return new FactoredMatrix(u * root.unsqueeze(-2), root.unsqueeze(-1) * v.transpose(-2, -1));
    }

    /// <summary>diag(S)·Vᵀ [..., mdim, rdim], the product with its left orthogonal factor U taken off: A·B = U·CollapseL()
    /// (TransformerLens <c>collapse_l</c>).</summary>
    public Tensor CollapseL()
    {
        var (_, s, v) = Svd();
        return s.unsqueeze(-1) * v.transpose(-2, -1);
    }

    /// <summary>U·diag(S) [..., ldim, mdim], the product with its right orthogonal factor Vᵀ taken off: A·B = CollapseR()·Vᵀ
    /// (TransformerLens <c>collapse_r</c>).</summary>
    public Tensor CollapseR()
    {
        var (u, s, _) = Svd();
        return u * s.unsqueeze(-2);
    }

    /// <summary>The top-left <paramref name="k"/> entries of every dimension of the product, leading ones included, formed from
    /// the first k rows of A and columns of B only (TransformerLens <c>get_corner</c>).</summary>
    public Tensor GetCorner(int k = 3)
    {
        if (k <= 0) throw new SaeSharpException($"FactoredMatrix: get_corner needs k ≥ 1, got {k}");
        var corner = A.narrow(-2, 0, Math.Min(k, LDim)).matmul(B.narrow(-1, 0, Math.Min(k, RDim)));
        for (int d = 0; d < NDim - 2; d++) corner = corner.narrow(d, 0, Math.Min(k, Shape[d]));
        return corner;
    }

    /// <summary>The matrix at <paramref name="index"/> of the first leading dimension (a layer of <c>model.OV</c>, then a head).</summary>
    public FactoredMatrix this[long index] => Shape.Length > 2 ? new FactoredMatrix(A[index], B[index])
        : throw new SaeSharpException($"FactoredMatrix: [{Dims(Shape)}] has no leading dimension to index");

    /// <inheritdoc/>
    public override string ToString() => $"FactoredMatrix: Shape([{Dims(Shape)}]), Hidden Dim({MDim})";

    private static string Dims(long[] shape) => string.Join(", ", shape);

    private static long[] Broadcast(long[] x, long[] y, Tensor a, Tensor b)
    {
        int n = Math.Max(x.Length, y.Length);
        var r = new long[n];
        for (int i = 0; i < n; i++)
        {
            long u = i < n - x.Length ? 1 : x[i - (n - x.Length)], v = i < n - y.Length ? 1 : y[i - (n - y.Length)];
            r[i] = u == v || v == 1 ? u : u == 1 ? v
                : throw new SaeSharpException($"FactoredMatrix: the leading dimensions of A [{Dims(a.shape)}] and B [{Dims(b.shape)}] do not broadcast");
        }
        return r;
    }
}
