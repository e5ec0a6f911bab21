using static TorchSharp.torch;

namespace SaeSharp.Analysis;

/// <summary>
/// Random tokens repeated twice, as TransformerLens's demos build them (<c>torch.manual_seed(seed); torch.randint(low,
/// high, (batch, seq_len))</c>, then <c>einops.repeat(..., "batch seq_len -> batch (2 seq_len)")</c>): a model with
/// induction heads predicts the second half far better than the first. Drawn with libtorch's CPU generator, the one
/// <c>torch.manual_seed</c> seeds (the ids are not checked against PyTorch's here).
/// </summary>
public static class RepeatedRandomTokens
{
    /// <summary>[<paramref name="batch"/>, 2·<paramref name="seqLen"/>] int64 tokens: each row <paramref name="seqLen"/>
    /// ids drawn uniformly from [<paramref name="low"/>, <paramref name="high"/>), then the same ids again.</summary>
    public static Tensor Generate(long batch, long seqLen, long low, long high, ulong seed)
    {
        if (batch < 1 || seqLen < 1) throw new SaeSharpException($"repeated random tokens: batch {batch} and length {seqLen} must both be ≥ 1");
        if (low < 0 || high <= low) throw new SaeSharpException($"repeated random tokens: token range [{low}, {high}) is empty or negative");
        using var scope = NewDisposeScope();
        using var gen = new Generator(seed);
        var once = randint(low, high, [batch, seqLen], dtype: ScalarType.Int64, generator: gen);
        return cat([once, once], 1).MoveToOuterDisposeScope();
    }

    /// <summary>The Main Demo's tokens (cell 44): ids from [1000, 10000), or [0, d_vocab) for a vocabulary of fewer than
    /// 10000 ids.</summary>
    public static Tensor ForVocabulary(long batch, long seqLen, long dVocab, ulong seed)
    {
        if (dVocab < 1) throw new SaeSharpException($"repeated random tokens: vocabulary size {dVocab}");
        return dVocab >= 10000 ? Generate(batch, seqLen, 1000, 10000, seed) : Generate(batch, seqLen, 0, dVocab, seed);
    }
}
