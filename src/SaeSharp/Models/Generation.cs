using SaeSharp.Hooks;
using TorchSharp;
using static TorchSharp.torch;

namespace SaeSharp.Models;

/// <summary>How <see cref="HookedTransformer.Generate"/> picks tokens. Temperature 0 (the default) is greedy.</summary>
public sealed record GenerationOptions
{
    /// <summary>0 = greedy (argmax); otherwise logits are divided by it before sampling.</summary>
    public double Temperature { get; init; }
    /// <summary>Sample only among the k most likely tokens (0 or null = all).</summary>
    public int? TopK { get; init; }
    /// <summary>Nucleus sampling: the smallest set of most likely tokens whose probability reaches p (null or 1 = all).</summary>
    public double? TopP { get; init; }
    /// <summary>Seed of the sampling generator; null draws from torch's global generator.</summary>
    public ulong? Seed { get; init; }
    /// <summary>TransformerLens's <c>freq_penalty</c>: subtracted, times the number of times a token occurs in the row so far
    /// (its real prompt tokens and the new ones; left padding not counted), from that token's logit after the division by
    /// <see cref="Temperature"/> (TransformerLens's order). Applied when greedy too (TransformerLens ignores it there). 0 = none; negative favours repeats (TransformerLens ignores a
    /// negative value).</summary>
    public double FreqPenalty { get; init; }
    /// <summary>Hugging Face's <c>repetition_penalty</c> (<c>RepetitionPenaltyLogitsProcessor</c>): the logit of every token
    /// present in the row so far (real prompt and new tokens; left padding not counted) is divided by it when positive and
    /// multiplied by it when negative, before temperature, top-k and top-p; applied when greedy too. 1 = none; must be &gt; 0.</summary>
    public double RepetitionPenalty { get; init; } = 1.0;
    /// <summary>Rows that emit any of these tokens stop (Hugging Face's <c>eos_token_id</c>, an id or a list); each is filled
    /// with the token it stopped at afterwards. Generation ends when all rows stop. Null or empty: no stop.
    /// <see cref="HookedTransformer.GenerationConfig"/> gives a loaded model's.</summary>
    public IReadOnlyList<long>? EosTokenIds { get; init; }
    /// <summary>One stop token: sets <see cref="EosTokenIds"/> to it alone (null: none); reads the first of them.</summary>
    public long? EosTokenId
    {
        get => EosTokenIds is { Count: > 0 } ids ? ids[0] : null;
        init => EosTokenIds = value is long id ? [id] : null;
    }
    /// <summary>[batch, prompt] mask of a left-padded batch of prompts (1 = real token).</summary>
    public Tensor? AttentionMask { get; init; }
    /// <summary>Hooks active on every forward step (e.g. steering vectors added to a residual hook); as
    /// <see cref="RunOptions.Hooks"/>, the tensors they see and make are freed when the step's layer returns.</summary>
    public IReadOnlyList<(string Name, Func<Tensor, Tensor?> Fn)>? Hooks { get; init; }
    /// <summary>SAEs spliced into every forward step (<see cref="RunOptions.Saes"/>); their hook points can be hooked.</summary>
    public IReadOnlyList<AttachedSae>? Saes { get; init; }
    /// <summary>Reuse keys and values of earlier tokens (default). False recomputes the whole sequence at each step, as
    /// generation always does with an SAE attached that reads each token's context (<see cref="Saes.Sae.ReadsContext"/>:
    /// a temporal SAE), which a cached step would show only the new token, or whose <see cref="AttachedSae.SeqposSlice"/>
    /// counts from the end of the sequence.</summary>
    public bool UseKvCache { get; init; } = true;
    /// <summary>Also return the model's logits from which each new token was chosen (as the model gave them: before the
    /// penalties, temperature, top-k and top-p).</summary>
    public bool ReturnLogits { get; init; }
    /// <summary>The first forward step (the prompt's pass) replays these attention patterns and norm scales of a recorded
    /// frozen run (<see cref="RunOptions.FreezeAttentionAndNorms"/>); later steps run free (circuit-tracer's
    /// <c>feature_intervention_generate</c> with every layer constrained).</summary>
    internal FrozenValues? FreezeFirstStep { get; init; }
    /// <summary>Called before each forward step with the step's input tokens and their mask (the prompt, then each new
    /// token; the whole sequence so far when the step is not KV-cached) and whether it is KV-cached: other runs that follow
    /// the generation token by token (<c>CrossCoderInterventions.Generate</c>'s clean runs) take their step here.</summary>
    internal Action<Tensor, Tensor, bool>? BeforeStep { get; init; }
}

/// <summary>Why a row of <see cref="HookedTransformer.Generate"/> stopped.</summary>
public enum GenerationStop
{
    /// <summary>It generated every new token asked for.</summary>
    MaxNewTokens,
    /// <summary>It emitted one of <see cref="GenerationOptions.EosTokenIds"/> as its last new token (perhaps before
    /// <see cref="GenerationResult.MaxNewTokens"/>: <see cref="GenerationRow.NewTokens"/> says); the tokens after it, if the
    /// batch went on for other rows, are that token repeated.</summary>
    Eos,
}

/// <summary>How one row of a generation ended: its real prompt tokens (padding left out), the new tokens it generated (its
/// EOS included) and why it stopped.</summary>
public readonly record struct GenerationRow(long PromptTokens, int NewTokens, GenerationStop Stop)
{
    /// <summary>The row's real tokens: prompt plus new tokens, so its positions run 0..Length − 1 in the numbering of
    /// <see cref="Interventions.Steering.Positions"/>.</summary>
    public long Length => PromptTokens + NewTokens;

    /// <summary>Whether an edit at <paramref name="position"/> (<see cref="Interventions.Steering.Positions"/>'s numbering) can
    /// have changed this row's new tokens: the model ran on the row's token there before the row's last new token was
    /// chosen, i.e. the row has new tokens and 0 ≤ position ≤ Length − 2. Positions past that (beyond an early EOS, beyond a
    /// shorter prompt of a padded batch, or the last new token, which is never fed back) were never applied to this row. A
    /// negative position counts back from this row's prompt end, as <see cref="Interventions.Steering.FromPromptEnd"/>
    /// (-1 its last prompt token); one before the prompt's start affects nothing.</summary>
    public bool Affects(long position)
    {
        long at = position < 0 ? PromptTokens + position : position;
        return NewTokens > 0 && at >= 0 && at <= Length - 2;
    }
}

/// <summary>Output of generation: prompt plus new tokens [batch, prompt + new], optionally the step logits [batch, new, d_vocab],
/// and per row how far it got (<see cref="Rows"/>).</summary>
public sealed class GenerationResult(Tensor tokens, Tensor? logits, IReadOnlyList<GenerationRow> rows, int maxNewTokens) : IDisposable
{
    /// <summary>Prompt plus generated tokens [batch, prompt + new], int64.</summary>
    public Tensor Tokens { get; } = tokens;
    /// <summary>Logits each new token was chosen from [batch, new, d_vocab], when asked for (<see cref="GenerationOptions.ReturnLogits"/>); else null.</summary>
    public Tensor? Logits { get; } = logits;
    /// <summary>Per row: its real prompt length, the new tokens it generated and whether it stopped at EOS before
    /// <see cref="MaxNewTokens"/>.</summary>
    public IReadOnlyList<GenerationRow> Rows { get; } = rows;
    /// <summary>The new tokens asked for.</summary>
    public int MaxNewTokens { get; } = maxNewTokens;

    /// <summary>Disposes the tensors.</summary>
    public void Dispose()
    {
        Tokens.Dispose();
        Logits?.Dispose();
    }
}

internal static class Generation
{
    public static GenerationResult Run(HookedTransformer model, Tensor tokens, int maxNewTokens, GenerationOptions o)
    {
        if (maxNewTokens < 0) throw new SaeSharpException($"maxNewTokens must be >= 0, got {maxNewTokens}");
        if (o.Temperature < 0 || double.IsNaN(o.Temperature)) throw new SaeSharpException($"temperature must be >= 0, got {o.Temperature}");
        if (o.TopK is < 0) throw new SaeSharpException($"top_k must be >= 0, got {o.TopK}");
        if (o.TopP is { } p && (p <= 0 || p > 1)) throw new SaeSharpException($"top_p must be in (0, 1], got {p}");
        if (!double.IsFinite(o.FreqPenalty)) throw new SaeSharpException($"freq_penalty (FreqPenalty) must be finite, got {o.FreqPenalty}");
        if (!(o.RepetitionPenalty > 0) || !double.IsFinite(o.RepetitionPenalty))
            throw new SaeSharpException($"repetition_penalty (RepetitionPenalty) must be finite and > 0, got {o.RepetitionPenalty}");
        if (tokens.dim() != 2) throw new SaeSharpException($"tokens must be [batch, pos], got shape [{string.Join(", ", tokens.shape)}]");
        var saes = model.ResolveSaes(o.Saes);
        var hooks = o.Hooks?.Select(h => (model.ResolveHook(h.Name, saes, null), h.Fn)).ToList();
        int step = 0;
        if (o.FreezeFirstStep is { } frozenFirst)
        {
            hooks ??= [];
            hooks.AddRange(model.HookPoints.Names.Where(n => n.EndsWith(".attn.hook_pattern", StringComparison.Ordinal))
                .Select(n => (n, (Func<Tensor, Tensor?>)(p => step == 0 ? frozenFirst.Take(p.detach(), $"'{n}'") : null))));
        }
        using var runner = new HookRunner(hooks, null, null, saes);
        var gen = o.Seed is { } seed ? new Generator(seed) : null;
        long b = tokens.shape[0];

        using var _ = no_grad();
        using var scope = NewDisposeScope();
        // A temporal SAE encodes each token from the earlier ones: a KV-cached step would show it only the new token. A
        // seqpos_slice counting from the end moves with every new token: the earlier positions are spliced anew each step.
        using var kv = o.UseKvCache && !(saes?.Any(a => a.NeedsWholeSequence) ?? false) ? new KvCache(model.Config.NLayers) : null;
        var seq = tokens.to(ScalarType.Int64).to(model.Device);
        var mask = o.AttentionMask is { } m ? m.ne(TorchScalars.Of(0)).to(seq.device) : ones(b, tokens.shape[1], dtype: ScalarType.Bool, device: seq.device);
        var input = seq;
        var inputMask = mask;
        var finished = zeros(b, dtype: ScalarType.Bool, device: seq.device);
        // Occurrences of each token in each row so far [batch, d_vocab], the penalties' input: the real prompt tokens (a left-padded
        // position has mask 0 and adds nothing), then each new token. The same whether steps are KV-cached or not.
        Tensor? counts = o.FreqPenalty != 0 || o.RepetitionPenalty != 1
            ? zeros(b, model.Config.DVocab, dtype: ScalarType.Float32, device: seq.device).scatter_add_(1, seq, mask.to(ScalarType.Float32))
            : null;
        var eosIds = o.EosTokenIds is { Count: > 0 } stopIds ? tensor(stopIds.ToArray(), device: seq.device) : null;
        var eosStep = full(new[] { b }, TorchScalars.Of(-1L), dtype: ScalarType.Int64, device: seq.device); // the step at which each row emitted EOS
        int steps = 0;
        var stepLogits = new List<Tensor>();
        var outerLength = HookRunner.GenerationLength;
        var outerPrompts = HookRunner.PromptLengths;
        HookRunner.GenerationLength = mask.sum(1).max().item<long>() + maxNewTokens;
        HookRunner.PromptLengths = mask.sum(1).cpu().data<long>().ToArray();
        try
        {
            for (step = 0; step < maxNewTokens; step++)
            {
                using var stepScope = NewDisposeScope();
                o.BeforeStep?.Invoke(input, inputMask, kv is not null);
                bool freeze = step == 0 && o.FreezeFirstStep is not null;
                var (wasFrozen, wasValues) = (NormScales.Frozen, NormScales.Values);
                if (freeze) (NormScales.Frozen, NormScales.Values) = (true, o.FreezeFirstStep);
                Tensor logits;
                try { logits = model.ForwardCore(input, inputMask, runner, null, kv)!; }
                finally { if (freeze) (NormScales.Frozen, NormScales.Values) = (wasFrozen, wasValues); }
                var last = logits.select(1, -1);
                var next = Sample(last, o, gen, counts);
                if (eosIds is not null)
                {
                    // A finished row repeats its last token: the EOS it stopped at.
                    next = where(finished, seq.select(1, -1), next);
                    var now = finished.logical_or(isin(next, eosIds));
                    eosStep = where(now.logical_and(finished.logical_not()), full_like(eosStep, TorchScalars.Of((long)step)), eosStep).MoveToOuterDisposeScope();
                    finished = now.MoveToOuterDisposeScope();
                }
                steps = step + 1;
                if (o.ReturnLogits) stepLogits.Add(last.MoveToOuterDisposeScope());
                var col = next.unsqueeze(1);
                counts?.scatter_add_(1, col, ones(b, 1, dtype: ScalarType.Float32, device: seq.device));
                seq = cat([seq, col], 1).MoveToOuterDisposeScope();
                mask = cat([mask, ones(b, 1, dtype: ScalarType.Bool, device: seq.device)], 1).MoveToOuterDisposeScope();
                if (kv is not null)
                {
                    input = col.MoveToOuterDisposeScope();
                    inputMask = ones(b, 1, dtype: ScalarType.Bool, device: seq.device).MoveToOuterDisposeScope();
                }
                else
                {
                    input = seq;
                    inputMask = mask;
                }
                if (eosIds is not null && finished.all().item<bool>()) break;
            }
        }
        finally
        {
            HookRunner.GenerationLength = outerLength;
            HookRunner.PromptLengths = outerPrompts;
        }
        var outLogits = o.ReturnLogits
            ? (stepLogits.Count > 0 ? stack(stepLogits, 1) : empty(b, 0, model.Config.DVocab)).MoveToOuterDisposeScope()
            : null;
        var prompts = mask.narrow(1, 0, tokens.shape[1]).sum(1).cpu().data<long>().ToArray();
        var stopped = eosStep.cpu().data<long>().ToArray();
        var rows = Enumerable.Range(0, (int)b).Select(r => stopped[r] >= 0
            ? new GenerationRow(prompts[r], (int)stopped[r] + 1, GenerationStop.Eos)
            : new GenerationRow(prompts[r], steps, GenerationStop.MaxNewTokens)).ToList();
        return new GenerationResult(seq.MoveToOuterDisposeScope(), outLogits, rows, maxNewTokens);
    }

    /// <summary>Next token ids [batch] from last-position logits [batch, vocab] (float32), in TransformerLens's
    /// <c>sample_logits</c> order: repetition penalty, temperature, frequency penalty, then top-k and top-p (both when both are
    /// given); greedy (temperature 0) takes the argmax of the penalised logits. <paramref name="counts"/> [batch, vocab] holds how
    /// often each token occurs in each row so far (needed when a penalty is set).</summary>
    internal static Tensor Sample(Tensor logits, GenerationOptions o, Generator? gen, Tensor? counts = null)
    {
        using var scope = NewDisposeScope();
        var l = Penalise(logits, o, counts);
        if (o.Temperature == 0) return l.argmax(-1).MoveToOuterDisposeScope();
        using (var temperature = o.Temperature.ToScalar()) l = l / temperature;
        if (o.FreqPenalty != 0) l = SubtractFreqPenalty(l, o.FreqPenalty, counts!);
        long v = l.shape[^1];
        if (o.TopK is int k && k > 0 && k < v)
        {
            var kth = l.topk(k, -1).values.narrow(-1, k - 1, 1);
            l = l.masked_fill(l.lt(kth), TorchScalars.Of(float.NegativeInfinity));
        }
        if (o.TopP is double p && p < 1)
        {
            var (sorted, idx) = l.sort(-1, descending: true);
            var probs = sorted.softmax(-1);
            // Drop a token when the tokens more likely than it already reach p (HF TopPLogitsWarper); keep the first.
            using var pScalar = p.ToScalar();
            var remove = (probs.cumsum(-1) - probs).ge(pScalar);
            using (var no = false.ToScalar()) remove.select(-1, 0).fill_(no);
            sorted = sorted.masked_fill(remove, TorchScalars.Of(float.NegativeInfinity));
            l = full_like(l, TorchScalars.Of(float.NegativeInfinity)).scatter(-1, idx, sorted);
        }
        var choice = multinomial(l.softmax(-1), 1, generator: gen).squeeze(-1);
        return choice.MoveToOuterDisposeScope();
    }

    /// <summary>The logits before temperature: Hugging Face's repetition penalty (a present token's logit divided by p when
    /// positive, multiplied by p when negative) and, when greedy, the frequency penalty (TransformerLens applies it after
    /// temperature, which greedy decoding has not: there it is subtracted from the raw logits).</summary>
    private static Tensor Penalise(Tensor logits, GenerationOptions o, Tensor? counts)
    {
        if (o.FreqPenalty == 0 && o.RepetitionPenalty == 1) return logits.alias();
        if (counts is null) throw new SaeSharpException("a repetition or frequency penalty needs the token counts of the rows so far");
        var l = logits;
        if (o.RepetitionPenalty != 1)
        {
            using var p = o.RepetitionPenalty.ToScalar();
            using var zero = 0.0.ToScalar();
            var penalised = where(l.lt(zero), l * p, l / p);
            l = where(counts.gt(zero), penalised, l);
        }
        if (o.Temperature == 0 && o.FreqPenalty != 0) l = SubtractFreqPenalty(l, o.FreqPenalty, counts);
        return l;
    }

    private static Tensor SubtractFreqPenalty(Tensor logits, double penalty, Tensor counts)
    {
        using var f = penalty.ToScalar();
        return logits - counts.to(logits.dtype) * f;
    }
}
