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

    /// <summary>TransformerLens's <c>loss_fn(logits, tokens, per_token=True)</c> averaged over the batch (Main Demo cell 44,
    /// <c>einops.reduce(..., "batch position -> position", "mean")</c>): entry t is the mean −log p(token t+1), pos−1 entries
    /// from <paramref name="logits"/> [batch, pos, d_vocab] and <paramref name="tokens"/> [batch, pos].</summary>
    public static double[] LossByPosition(Tensor logits, Tensor tokens)
    {
        if (tokens.dim() != 2 || tokens.shape[1] < 2)
            throw new SaeSharpException($"loss per position: tokens [{string.Join(", ", tokens.shape)}] must be [batch, pos] with pos ≥ 2");
        using var scope = NewDisposeScope();
        var loss = NextTokenLoss(LogProbs(logits), tokens).mean([0]);
        return loss.data<double>().ToArray();
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
