using SaeSharp.Models;
using static TorchSharp.torch;

namespace SaeSharp.Analysis;

/// <summary>One token of a next-token distribution: its id and text, its rank (0 = the most likely; the number of tokens
/// strictly more likely), its logit and its probability.</summary>
public sealed record TokenPrediction(int Id, string Token, int Rank, double Logit, double Prob);

/// <summary>The prediction of one answer token (teacher-forced after the prompt and the answer's earlier tokens): the
/// answer token's own rank, logit and probability, and the <c>top_k</c> most likely tokens at that position.</summary>
public sealed record AnswerTokenPrediction(TokenPrediction Answer, IReadOnlyList<TokenPrediction> Top);

/// <summary>What <see cref="PromptTest.Run"/> found: the prompt's and the answer's tokens as text (TransformerLens
/// <c>to_str_tokens</c>) and one <see cref="AnswerTokenPrediction"/> per answer token.</summary>
public sealed record PromptTestResult(IReadOnlyList<string> PromptTokens, IReadOnlyList<string> AnswerTokens,
    IReadOnlyList<AnswerTokenPrediction> Predictions)
{
    /// <summary>TransformerLens's closing line's pairs: each answer token with its rank.</summary>
    public IEnumerable<(string Token, int Rank)> AnswerRanks => Predictions.Select(p => (p.Answer.Token, p.Answer.Rank));
}

/// <summary>
/// TransformerLens <c>utils.test_prompt(prompt, answer, model)</c> (transformer_lens/utilities/exploratory_utils.py): runs
/// the prompt followed by the answer once and reports, for every answer token, its rank, logit and probability at the
/// position before it, with the top-k tokens there. One answer string (of one or more tokens); TransformerLens's list of
/// alternative answers is not taken.
/// </summary>
public static class PromptTest
{
    /// <summary>
    /// Tests <paramref name="answer"/> after <paramref name="prompt"/> on <paramref name="model"/> (its tokenizer). As
    /// TransformerLens: <paramref name="prependSpaceToAnswer"/> puts a space before an answer that does not start with one;
    /// <paramref name="prependBos"/> starts the prompt with BOS. <paramref name="logits"/> replaces the clean forward pass
    /// (tokens [1, pos] → logits [1, pos, d_vocab]), e.g. a run with an SAE spliced and features ablated.
    /// </summary>
    public static PromptTestResult Run(HookedTransformer model, string prompt, string answer, bool prependSpaceToAnswer = true,
        bool prependBos = true, int topK = 10, Func<Tensor, Tensor>? logits = null)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(prompt);
        ArgumentNullException.ThrowIfNull(answer);
        if (topK < 1) throw new SaeSharpException($"test_prompt: top_k {topK} must be at least 1");
        string given = answer;
        if (prependSpaceToAnswer && !answer.StartsWith(' ')) answer = " " + answer;
        using var scope = NewDisposeScope();
        var promptTokens = model.ToTokens(prompt, prependBos);
        var answerTokens = model.ToTokens(answer, prependBos: false);
        int n = (int)promptTokens.shape[1], m = (int)answerTokens.shape[1];
        if (n == 0) throw new SaeSharpException("test_prompt: the prompt gives no token; give some text, or keep BOS first");
        if (m == 0) throw new SaeSharpException($"test_prompt: the answer '{given}' gives no token");
        // A word-level vocabulary makes unknown text its unk token: ranking that token would answer another question.
        if (model.Tokenizer.UnkTokenId is int unk && model.Tokenizer.IdToToken(unk) is { } unkText && !answer.Contains(unkText, StringComparison.Ordinal)
            && answerTokens[0].data<long>().Contains(unk))
            throw new SaeSharpException($"test_prompt: the answer '{given}' is not in the vocabulary of {model.Config.ModelName}: it tokenizes to " +
                                        $"the unknown token {unkText}; give an answer the tokenizer knows");
        if (n + m > model.Config.NCtx)
            throw new SaeSharpException($"test_prompt: the prompt's {n} tokens and the answer's {m} exceed the context of " +
                                        $"{model.Config.NCtx} tokens of {model.Config.ModelName}");
        var tokens = cat([promptTokens, answerTokens], 1);
        var all = (logits ?? (t => model.Forward(t)))(tokens);
        // Positions n-1 .. n+m-2 predict the answer's tokens; probabilities from float64 logits.
        var rows = all[0].narrow(0, n - 1, m).to(ScalarType.Float64).cpu();
        var probs = rows.softmax(-1);
        int vocab = (int)rows.shape[1];
        var logitValues = rows.data<double>().ToArray();
        var probValues = probs.data<double>().ToArray();
        var answerIds = answerTokens[0].data<long>().Select(v => (int)v).ToArray();
        var tok = model.Tokenizer;
        string Text(int id) => tok.Decode([id]);
        var predictions = new List<AnswerTokenPrediction>(m);
        for (int i = 0; i < m; i++)
        {
            var l = logitValues.AsSpan(i * vocab, vocab).ToArray();
            var p = probValues.AsSpan(i * vocab, vocab).ToArray();
            var order = Enumerable.Range(0, vocab).ToArray();
            Array.Sort(p.ToArray(), order);   // ascending
            int RankOf(int id) => p.Count(q => q > p[id]);
            int a = answerIds[i];
            var top = new List<TokenPrediction>(Math.Min(topK, vocab));
            for (int j = 0; j < Math.Min(topK, vocab); j++)
            {
                int id = order[vocab - 1 - j];
                top.Add(new TokenPrediction(id, Text(id), RankOf(id), l[id], p[id]));
            }
            predictions.Add(new AnswerTokenPrediction(new TokenPrediction(a, Text(a), RankOf(a), l[a], p[a]), top));
        }
        return new PromptTestResult(model.ToStringTokens(prompt, prependBos), answerIds.Select(Text).ToList(), predictions);
    }
}
