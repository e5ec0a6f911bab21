using SaeSharp.Activations;
using static TorchSharp.torch;

namespace SaeSharp.Analysis;

/// <summary>
/// Random tokens repeated twice, TransformerLens's Main Demo cell 44 (<c>torch.randint(1000, 10000, (batch, seq_len))</c>,
/// then <c>einops.repeat(..., "batch seq_len -> batch (2 seq_len)")</c>): a model with induction heads predicts the second
/// half far better than the first. Drawn from a <see cref="SeededRandom"/>, so the same seed gives the same tokens everywhere.
/// </summary>
public static class RepeatedRandomTokens
{
    /// <summary>[<paramref name="batch"/>, 2·<paramref name="seqLen"/>] int64 tokens, each row <paramref name="seqLen"/> ids
    /// drawn uniformly from [1000, 10000) (the notebook's range; [0, d_vocab) for a vocabulary of fewer than 10000 ids)
    /// and then the same ids again.</summary>
    public static Tensor Generate(int batch, int seqLen, long dVocab, ulong seed)
    {
        if (batch < 1 || seqLen < 1) throw new SaeSharpException($"repeated random tokens: batch {batch} and length {seqLen} must both be ≥ 1");
        if (dVocab < 1) throw new SaeSharpException($"repeated random tokens: vocabulary size {dVocab}");
        (long low, long high) = dVocab >= 10000 ? (1000L, 10000L) : (0L, dVocab);
        var rng = new SeededRandom(seed);
        var ids = new long[batch * 2L * seqLen];
        for (int b = 0; b < batch; b++)
            for (int p = 0; p < seqLen; p++)
            {
                long id = low + rng.NextLong(high - low);
                ids[(long)b * 2 * seqLen + p] = id;
                ids[(long)b * 2 * seqLen + seqLen + p] = id;
            }
        return tensor(ids, [batch, 2L * seqLen]);
    }
}
