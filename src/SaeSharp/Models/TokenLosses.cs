using static TorchSharp.torch;

namespace SaeSharp.Models;

/// <summary>Per-position next-token loss and KL from log-probabilities, as TransformerLens's per-token loss and
/// SAELens/SAEBench's KL: shared by intervention effects and SAEBench's core procedure.</summary>
public static class TokenLosses
{
    /// <summary>log softmax of <paramref name="logits"/> [batch, pos, d_vocab] in float64.</summary>
    public static Tensor LogProbs(Tensor logits) => logits.to(ScalarType.Float64).log_softmax(-1);

    /// <summary>−log p(token t+1) at each position t: [batch, pos−1] from <paramref name="logProbs"/> [batch, pos, d_vocab].</summary>
    public static Tensor NextTokenLoss(Tensor logProbs, Tensor tokens)
    {
        long s = tokens.shape[1];
        using var next = tokens.narrow(1, 1, s - 1).to(ScalarType.Int64).unsqueeze(-1);
        using var lp = logProbs.narrow(1, 0, s - 1);
        using var picked = lp.gather(-1, next);
        return picked.squeeze(-1).neg();
    }

    /// <summary>KL(p ‖ q) per position [batch, pos] from log-probabilities (p the clean run's).</summary>
    public static Tensor Kl(Tensor logP, Tensor logQ)
    {
        using var p = logP.exp();
        using var d = logP - logQ;
        using var prod = p * d;
        return prod.sum(-1);
    }
}
