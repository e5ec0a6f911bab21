using SaeSharp.Models;
using SaeSharp.Tokenizers;
using static TorchSharp.torch;

namespace SaeSharp.Analysis;

/// <summary>
/// TransformerLens's <c>evals.induction_loss</c>: <c>batch_size</c> (4) rows of <c>subseq_len</c> (384) random ids from
/// [100, 20000) repeated twice, the first id replaced by BOS (<c>prepend_bos</c>, the model's default), and the mean
/// next-token loss on the second copy, <c>correct_log_probs[:, subseq_len + 1:]</c>: the positions predicting ids
/// <c>subseq_len + 2 .. 2·subseq_len − 1</c>. A model with induction heads gets it far below the first copy's loss; over
/// Pythia's training checkpoints it drops when induction heads form (the Main Demo's checkpoint table).
/// </summary>
public static class InductionLoss
{
    /// <summary>The tokens [<paramref name="batch"/>, 2·<paramref name="subseqLen"/>]: ids from [100, 20000) (from [0, d_vocab)
    /// for a vocabulary of fewer than 20000 ids) drawn by <see cref="RepeatedRandomTokens.Generate"/> with <paramref name="seed"/>,
    /// and with <paramref name="bos"/> (null: none) in place of each row's first id.</summary>
    public static Tensor Tokens(int batch, int subseqLen, long dVocab, long? bos, ulong seed)
    {
        if (dVocab < 1) throw new SaeSharpException($"induction loss: vocabulary size {dVocab}");
        var tokens = dVocab >= 20000 ? RepeatedRandomTokens.Generate(batch, subseqLen, 100, 20000, seed)
            : RepeatedRandomTokens.Generate(batch, subseqLen, 0, dVocab, seed);
        if (bos is long b)
        {
            using var first = tokens.select(1, 0);
            first.fill_(TorchScalars.Of(b));
        }
        return tokens;
    }

    /// <summary>The mean loss on the second copy of <paramref name="tokens"/> (from <see cref="Tokens"/>, subsequence length
    /// half their length) under <paramref name="logits"/>: <c>lm_cross_entropy_loss(logits, tokens, per_token=True)[:, subseq_len + 1:].mean()</c>.</summary>
    public static double FromLogits(Tensor logits, Tensor tokens)
    {
        ArgumentNullException.ThrowIfNull(logits);
        ArgumentNullException.ThrowIfNull(tokens);
        long subseqLen = tokens.shape[1] / 2;
        if (subseqLen < 2 || tokens.shape[1] != 2 * subseqLen)
            throw new SaeSharpException($"induction loss: the tokens have {tokens.shape[1]} positions; give two copies of at least 2 ids each");
        // Every position has the same number of rows, so the mean of the per-position means is the mean over rows and positions.
        return TokenLosses.LossByPosition(logits, tokens).Skip((int)subseqLen + 1).Average();
    }

    /// <summary>Whether two copies of <paramref name="subseqLen"/> ids are more than <paramref name="model"/>'s learned
    /// positions (n_ctx); a rotary model runs past n_ctx.</summary>
    public static bool PastContext(HookedTransformer model, int subseqLen)
    {
        ArgumentNullException.ThrowIfNull(model);
        return 2L * subseqLen > model.Config.NCtx && model.LearnedPositions;
    }

    /// <summary>The bytes of a layer's float32 attention scores and pattern for <paramref name="batch"/> rows of two copies
    /// of <paramref name="subseqLen"/> ids: they grow with the square of the row.</summary>
    public static double ScoreBytes(HookedTransformer model, int batch, int subseqLen)
    {
        ArgumentNullException.ThrowIfNull(model);
        double rowLength = 2.0 * subseqLen + 1;
        return 2 * 4 * (double)batch * model.Config.NHeads * rowLength * rowLength;
    }

    /// <summary><c>evals.induction_loss(model, batch_size, subseq_len, prepend_bos)</c> on <paramref name="model"/> (its
    /// tokenizer's BOS when <paramref name="prependBos"/>), the random ids drawn with <paramref name="seed"/>.</summary>
    public static double Run(HookedTransformer model, int batch = 4, int subseqLen = 384, bool prependBos = true, ulong seed = 0)
    {
        ArgumentNullException.ThrowIfNull(model);
        if (batch < 1 || subseqLen < 2) throw new SaeSharpException($"induction loss: batch {batch} (≥ 1) and subsequence length {subseqLen} (≥ 2)");
        if (PastContext(model, subseqLen))
            throw new SaeSharpException($"induction loss: 2 × {subseqLen} tokens exceed n_ctx={model.Config.NCtx} of {model.Config.ModelName}; give a shorter subsequence");
        double need = ScoreBytes(model, batch, subseqLen);
        long available = HostMemory.AvailableBytes();
        if (need > available)
            throw new SaeSharpException($"induction loss: {batch} row{(batch == 1 ? "" : "s")} of 2 × {subseqLen} tokens (batch_size {batch}, subseq_len {subseqLen}): " +
                $"a layer's attention scores alone need {HostMemory.Format(need)} (they grow with the square of the row) but " +
                $"{HostMemory.Format(available)} of memory is available; give a shorter subsequence or fewer rows");
        long? bos = prependBos ? model.Tokenizer.PrependedBosId() : null;
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        var tokens = Tokens(batch, subseqLen, model.Config.DVocab, bos, seed);
        var logits = model.Forward(tokens);
        return FromLogits(logits, tokens);
    }
}
