using SaeSharp.IO;
using static TorchSharp.torch;

namespace SaeSharp.Synthetic;

/// <summary>
/// Ground-truth feature activations of synthetic rows [rows, n_features], stored compressed by row (CSR): the non-zero
/// entries of row r are <c>indices[indptr[r]..indptr[r+1])</c> (feature index, ascending) with <c>values</c> at the same
/// positions. <c>sae synth</c> stores them next to each file's <c>activations</c> as the tensors
/// <see cref="IndptrTensor"/> (int64 [rows+1]), <see cref="IndicesTensor"/> (int32 [nnz]) and <see cref="ValuesTensor"/>
/// (float32 [nnz]); exact, since every other entry is 0.
/// </summary>
public sealed class SparseFeatureActivations
{
    /// <summary>Tensor name of the row offsets, int64 [rows+1] (starts at 0, ends at nnz).</summary>
    public const string IndptrTensor = "feature_acts_indptr";
    /// <summary>Tensor name of the feature indices of the non-zero entries, int32 [nnz].</summary>
    public const string IndicesTensor = "feature_acts_indices";
    /// <summary>Tensor name of the values of the non-zero entries, float32 [nnz].</summary>
    public const string ValuesTensor = "feature_acts_values";

    private readonly long[] _indptr;
    private readonly int[] _indices;
    private readonly float[] _values;

    /// <summary>Number of rows.</summary>
    public long Rows => _indptr.Length - 1;
    /// <summary>Number of features (columns).</summary>
    public int NFeatures { get; }
    /// <summary>Number of stored (non-zero) entries.</summary>
    public long NonZero => _indices.Length;

    private SparseFeatureActivations(long[] indptr, int[] indices, float[] values, int nFeatures)
    {
        if (indptr.Length == 0 || indptr[0] != 0 || indptr[^1] != indices.Length || indices.Length != values.Length)
            throw new SaeSharpException($"feature activations: inconsistent CSR arrays (indptr ends at {(indptr.Length == 0 ? "-" : indptr[^1])}, {indices.Length} indices, {values.Length} values)");
        for (int i = 1; i < indptr.Length; i++)
            if (indptr[i] < indptr[i - 1]) throw new SaeSharpException("feature activations: indptr decreases");
        foreach (var j in indices)
            if (j < 0 || j >= nFeatures) throw new SaeSharpException($"feature activations: feature index {j} out of range 0..{nFeatures - 1}");
        _indptr = indptr;
        _indices = indices;
        _values = values;
        NFeatures = nFeatures;
    }

    /// <summary>The non-zero entries of a dense [rows, n_features] tensor.</summary>
    public static SparseFeatureActivations FromDense(Tensor acts)
    {
        if (acts.dim() != 2) throw new SaeSharpException($"feature activations must be [rows, n_features], got [{string.Join(", ", acts.shape)}]");
        using var scope = NewDisposeScope();
        long rows = acts.shape[0];
        int n = (int)acts.shape[1];
        var a = acts.detach().to(ScalarType.Float32, CPU).contiguous().data<float>().ToArray();
        var indptr = new long[rows + 1];
        var indices = new List<int>();
        var values = new List<float>();
        for (long r = 0; r < rows; r++)
        {
            for (int j = 0; j < n; j++)
            {
                float v = a[r * n + j];
                if (v != 0) { indices.Add(j); values.Add(v); }
            }
            indptr[r + 1] = indices.Count;
        }
        return new SparseFeatureActivations(indptr, [.. indices], [.. values], n);
    }

    /// <summary>The rows of <paramref name="parts"/> one after another (all with the same number of features).</summary>
    public static SparseFeatureActivations Concat(IReadOnlyList<SparseFeatureActivations> parts, int nFeatures)
    {
        if (parts.Any(p => p.NFeatures != nFeatures)) throw new SaeSharpException($"feature activations: parts disagree on n_features ({nFeatures})");
        var indptr = new long[parts.Sum(p => p.Rows) + 1];
        long row = 0, offset = 0;
        foreach (var p in parts)
        {
            for (long r = 1; r <= p.Rows; r++) indptr[row + r] = offset + p._indptr[r];
            row += p.Rows;
            offset += p.NonZero;
        }
        return new SparseFeatureActivations(indptr, [.. parts.SelectMany(p => p._indices)], [.. parts.SelectMany(p => p._values)], nFeatures);
    }

    /// <summary>Rows [<paramref name="start"/>, start + <paramref name="count"/>) as a dense float32 [count, n_features]
    /// tensor, or, with <paramref name="columns"/>, [count, columns.Count] holding feature columns[c] in column c (as
    /// <c>dense[:, columns]</c>, without making the full width).</summary>
    public Tensor Dense(long start, long count, IReadOnlyList<long>? columns = null)
    {
        if (start < 0 || count < 0 || start + count > Rows)
            throw new SaeSharpException($"feature activations: rows [{start}, {start + count}) out of range 0..{Rows}");
        int width = columns?.Count ?? NFeatures;
        // For each feature, the output columns that take it.
        List<int>[]? outputsOf = null;
        if (columns is not null)
        {
            outputsOf = new List<int>[NFeatures];
            for (int c = 0; c < columns.Count; c++)
                (outputsOf[checked((int)columns[c])] ??= []).Add(c);
        }
        var dense = new float[count * width];
        for (long r = 0; r < count; r++)
            for (long k = _indptr[start + r]; k < _indptr[start + r + 1]; k++)
            {
                if (outputsOf is null) dense[r * width + _indices[k]] = _values[k];
                else if (outputsOf[_indices[k]] is { } outs)
                    foreach (var c in outs) dense[r * width + c] = _values[k];
            }
        return tensor(dense, [count, width]);
    }

    /// <summary>Number of entries &gt; 0 in rows [<paramref name="start"/>, start + <paramref name="count"/>).</summary>
    public long CountPositive(long start, long count)
    {
        if (start < 0 || count < 0 || start + count > Rows)
            throw new SaeSharpException($"feature activations: rows [{start}, {start + count}) out of range 0..{Rows}");
        long n = 0;
        for (long k = _indptr[start]; k < _indptr[start + count]; k++)
            if (_values[k] > 0) n++;
        return n;
    }

    /// <summary>The three CSR tensors under their names, for <see cref="SafeTensors.Save(string, IReadOnlyDictionary{string, Tensor}, IReadOnlyDictionary{string, string}?)"/> (the caller disposes them).</summary>
    public Dictionary<string, Tensor> ToTensors() => new()
    {
        [IndptrTensor] = tensor(_indptr),
        [IndicesTensor] = tensor(_indices),
        [ValuesTensor] = tensor(_values),
    };

    /// <summary>True when the safetensors file holds the three CSR tensors.</summary>
    public static bool IsIn(SafeTensorsFile file) => file.Contains(IndptrTensor) && file.Contains(IndicesTensor) && file.Contains(ValuesTensor);

    /// <summary>
    /// Rows [<paramref name="rowStart"/>, rowStart + <paramref name="rowCount"/>) of the files taken one after another (as
    /// an activation source reads them), or null when a file in that range holds no ground-truth activations (e.g. files
    /// not written by <c>sae synth</c>). Only the entries of those rows are read.
    /// </summary>
    public static SparseFeatureActivations? ReadRows(IReadOnlyList<string> files, long rowStart, long rowCount, int nFeatures)
    {
        var parts = new List<SparseFeatureActivations>();
        long fileStart = 0, end = rowStart + rowCount;
        foreach (var path in files)
        {
            if (fileStart >= end) break;
            if (!path.EndsWith(".safetensors", StringComparison.OrdinalIgnoreCase)) return null;
            using var f = SafeTensorsFile.Open(path);
            if (!IsIn(f)) return null;
            long rows = f.Info(IndptrTensor).Shape[0] - 1;
            // Row r of the ground truth must be row r of the file's activations.
            if (f.Contains(SyntheticDataset.ActivationsTensor) && f.Info(SyntheticDataset.ActivationsTensor).Shape[0] != rows)
                throw new SaeSharpException($"{path}: {rows} rows of ground-truth feature activations but {f.Info(SyntheticDataset.ActivationsTensor).Shape[0]} rows of activations");
            long from = Math.Max(rowStart, fileStart) - fileStart, to = Math.Min(end, fileStart + rows) - fileStart;
            if (to > from)
            {
                long[] ptr;
                using (var p = f.ReadRows(IndptrTensor, from, to - from + 1, ScalarType.Int64)) ptr = p.data<long>().ToArray();
                long nnz = ptr[^1] - ptr[0];
                int[] idx;
                float[] val;
                using (var t = f.ReadRows(IndicesTensor, ptr[0], nnz, ScalarType.Int32)) idx = t.data<int>().ToArray();
                using (var t = f.ReadRows(ValuesTensor, ptr[0], nnz, ScalarType.Float32)) val = t.data<float>().ToArray();
                long first = ptr[0];
                for (int i = 0; i < ptr.Length; i++) ptr[i] -= first;
                parts.Add(new SparseFeatureActivations(ptr, idx, val, nFeatures));
            }
            fileStart += rows;
        }
        long got = parts.Sum(p => p.Rows);
        if (got != rowCount) throw new SaeSharpException($"feature activations: the files hold {got} of the rows [{rowStart}, {end})");
        return Concat(parts, nFeatures);
    }
}
