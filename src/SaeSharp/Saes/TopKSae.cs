using SaeSharp.Kernels;
using static TorchSharp.torch;

namespace SaeSharp.Saes;

/// <summary>
/// TopK SAE ("topk", Gao et al. 2024): f = the ReLU of the k largest pre-activations of each row, zero elsewhere
/// (SAELens applies top-k then ReLU, sparsify ReLU then top-k: the same activations). Training: see
/// <see cref="TopKFamilySae"/> (MSE + AuxK, unit-norm decoder unless rescale_acts_by_decoder_norm is false, sparse decode and backward).
/// </summary>
public sealed class TopKSae : TopKFamilySae
{
    /// <summary>The registry entry of "topk".</summary>
    public static SaeArchitecture Descriptor { get; } = new() { Name = SaeArchitectures.TopK, Create = c => new TopKSae(c), NeedsK = true };

    /// <summary>A TopK SAE of shape <paramref name="cfg"/> (zero weights; <c>k</c> required).</summary>
    public TopKSae(SaeConfig cfg) : base(cfg)
    {
        RegisterComponents();
    }

    /// <inheritdoc/>
    public override Tensor Encode(Tensor x) => EncodeRows(x);

    /// <summary>ReLU of the k largest pre-activations of each row, zero elsewhere. Gradients flow to the selected
    /// pre-activations (as through torch.topk) when <paramref name="pre"/> requires them.</summary>
    public override Tensor Activate(Tensor pre, Tensor x)
    {
        using var scope = NewDisposeScope();
        var (vals, idx) = pre.dim() == 2 ? RowTopK(pre, K) : pre.topk(K, dim: -1, largest: true, sorted: false);
        // The row kernel's values carry no autograd graph: take them from pre when a gradient is wanted.
        if (pre.requires_grad && is_grad_enabled()) vals = pre.gather(-1, idx);
        return zeros_like(pre).scatter_(-1, idx, nn.functional.relu(vals)).MoveToOuterDisposeScope();
    }

    internal override long CandidatesPerRow => K;

    internal override (SparseCode Code, Tensor PreValues) SelectFromCandidates(Tensor candValues, Tensor candIndices, Func<Tensor> densePre) =>
        (SparseLatents.FromRowIndices(candIndices), candValues.reshape(-1));
}
