using SaeSharp.Interventions;
using SaeSharp.Models;
using static TorchSharp.torch;

namespace SaeSharp.Analysis;

/// <summary>The head types of TransformerLens's head detector (transformer_lens/head_detector.py, <c>HeadName</c>).</summary>
public enum HeadType
{
    /// <summary><c>previous_token_head</c>: each token attends to the one before it.</summary>
    PreviousToken,
    /// <summary><c>duplicate_token_head</c>: each token attends to earlier copies of itself.</summary>
    DuplicateToken,
    /// <summary><c>induction_head</c>: each token attends to the token after an earlier copy of itself.</summary>
    Induction,
}

/// <summary>How <see cref="HeadDetector.Similarity"/> compares a pattern with a detection pattern (TransformerLens <c>ErrorMeasure</c>).</summary>
public enum HeadErrorMeasure
{
    /// <summary><c>"mul"</c> (TransformerLens's default): Σ pattern·detection / Σ pattern, the share of attention on the detected pairs.</summary>
    Mul,
    /// <summary><c>"abs"</c>: 1 − round(Σ |pattern − detection| / seq_len, 3), from −1 (opposite) to 1 (exact).</summary>
    Abs,
}

/// <summary>Previous-token, duplicate-token and induction score of every head, [layer, head] each.</summary>
public sealed record HeadScores(double[,] PreviousToken, double[,] DuplicateToken, double[,] Induction)
{
    /// <summary>The scores of one head type.</summary>
    public double[,] Of(HeadType type) => type switch
    {
        HeadType.PreviousToken => PreviousToken,
        HeadType.DuplicateToken => DuplicateToken,
        _ => Induction,
    };
}

/// <summary>
/// TransformerLens's head scores from attention patterns (<c>blocks.L.attn.hook_pattern</c>): <c>Detect</c> is
/// <c>detect_head</c> of transformer_lens/head_detector.py with its built-in detection patterns, and
/// <see cref="RepeatedTokenScores"/> the stripe means of demos/Main_Demo.ipynb (cell 46, <c>induction_score_hook</c>) and
/// demos/Exploratory_Analysis_Demo.ipynb (cell 108) on random tokens repeated twice.
/// </summary>
public static class HeadDetector
{
    /// <summary>Sequences per run in <see cref="RepeatedTokenScores"/>.</summary>
    private const long RepeatedChunk = 16;

    /// <summary>
    /// The detection pattern [seq, seq] (float64, lower triangular) of a head type for these tokens, as
    /// <c>get_previous_token_head_detection_pattern</c> (1 at [i, i−1]), <c>get_duplicate_token_head_detection_pattern</c>
    /// (1 at [i, j], j &lt; i, where token j equals token i) and <c>get_induction_head_detection_pattern</c> (the duplicate
    /// pattern shifted one key to the right: 1 at [i, j+1], j+1 ≤ i) build it.
    /// </summary>
    public static Tensor DetectionPattern(HeadType type, IReadOnlyList<long> tokens)
    {
        ArgumentNullException.ThrowIfNull(tokens);
        int n = tokens.Count;
        var d = new double[n * n];
        for (int i = 0; i < n; i++)
            for (int j = 0; j <= i; j++)
            {
                bool hit = type switch
                {
                    HeadType.PreviousToken => j == i - 1,
                    HeadType.DuplicateToken => j < i && tokens[j] == tokens[i],
                    _ => j >= 1 && tokens[j - 1] == tokens[i],   // [i, i] too when token i−1 equals token i, as TransformerLens's roll and tril give
                };
                if (hit) d[i * n + j] = 1;
            }
        return tensor(d, [n, n]);
    }

    /// <summary>
    /// <c>compute_head_attention_similarity_score</c> for each head at once: <paramref name="patterns"/> [head, q, k] (one
    /// sequence), <paramref name="detection"/> [q, k]. <paramref name="excludeBos"/> ignores the attention to position 0,
    /// <paramref name="excludeCurrentToken"/> the diagonal (both off in TransformerLens by default).
    /// </summary>
    public static double[] Similarity(Tensor patterns, Tensor detection, HeadErrorMeasure measure = HeadErrorMeasure.Mul,
        bool excludeBos = false, bool excludeCurrentToken = false)
    {
        ArgumentNullException.ThrowIfNull(patterns);
        ArgumentNullException.ThrowIfNull(detection);
        if (patterns.dim() != 3 || patterns.shape[1] != patterns.shape[2])
            throw new SaeSharpException($"head scores: attention patterns of shape [{string.Join(", ", patterns.shape)}], expected [head, seq, seq]");
        long n = patterns.shape[1];
        if (detection.shape.Length != 2 || detection.shape[0] != n || detection.shape[1] != n)
            throw new SaeSharpException($"head scores: a detection pattern of shape [{string.Join(", ", detection.shape)}] for sequences of {n} tokens (expected [{n}, {n}])");
        using var scope = NewDisposeScope();
        var keep = new double[n * n];
        for (long i = 0; i < n; i++)
            for (long j = 0; j < n; j++)
                keep[i * n + j] = (excludeBos && j == 0) || (excludeCurrentToken && i == j) ? 0 : 1;
        var mask = tensor(keep, [n, n]);
        var p = patterns.to(ScalarType.Float64);
        var det = detection.to(ScalarType.Float64);
        long[] qk = [-2, -1];
        if (measure == HeadErrorMeasure.Mul)
        {
            var a = p.mul(mask);
            return a.mul(det).sum(qk).div(a.sum(qk)).data<double>().ToArray();
        }
        var abs = p.sub(det).abs().mul(mask).sum(qk).data<double>().ToArray();
        return abs.Select(s => 1 - Math.Round(s / n, 3, MidpointRounding.ToEven)).ToArray();
    }

    /// <summary>
    /// TransformerLens <c>detect_head(model, seq, detection_pattern)</c> for each built-in head type and each prompt
    /// ([1, seq] token ids, 1 &lt; seq ≤ n_ctx), averaged over the prompts as <c>detect_head</c> does for a list of strings:
    /// every head's score [layer, head]. One cached run per prompt, caching only the attention patterns. With
    /// <paramref name="heads"/> (<c>detect_head(..., heads=[(layer, head), ...])</c>) only those heads are scored; the others
    /// are NaN (TransformerLens fills them with −1, a score <c>"abs"</c> can give).
    /// </summary>
    public static HeadScores Detect(HookedTransformer model, IReadOnlyList<Tensor> prompts, HeadErrorMeasure measure = HeadErrorMeasure.Mul,
        bool excludeBos = false, bool excludeCurrentToken = false, IReadOnlyCollection<AttentionHead>? heads = null)
    {
        var types = Enum.GetValues<HeadType>();
        var s = Score(model, prompts, ids => types.Select(t => DetectionPattern(t, ids)).ToArray(), measure, excludeBos, excludeCurrentToken, heads);
        return new HeadScores(s[0], s[1], s[2]);
    }

    /// <summary>
    /// TransformerLens <c>detect_head(model, seq, detection_pattern=tensor)</c>: every head's score [layer, head] against a
    /// detection pattern of one's own, [seq, seq] and lower triangular (a query attends only to itself and earlier keys), for
    /// prompts of that many tokens, averaged over the prompts. <paramref name="heads"/> as in the built-in
    /// <see cref="Detect(HookedTransformer, IReadOnlyList{Tensor}, HeadErrorMeasure, bool, bool, IReadOnlyCollection{AttentionHead}?)"/>.
    /// </summary>
    public static double[,] Detect(HookedTransformer model, IReadOnlyList<Tensor> prompts, Tensor detection, HeadErrorMeasure measure = HeadErrorMeasure.Mul,
        bool excludeBos = false, bool excludeCurrentToken = false, IReadOnlyCollection<AttentionHead>? heads = null)
    {
        ArgumentNullException.ThrowIfNull(detection);
        if (detection.dim() != 2 || detection.shape[0] != detection.shape[1])
            throw new SaeSharpException($"head scores: a detection pattern of shape [{string.Join(", ", detection.shape)}]; it must be square [seq, seq]");
        using (var scope = NewDisposeScope())
            if (detection.triu(1).abs().sum().item<double>() != 0)
                throw new SaeSharpException("head scores: the detection pattern is not lower triangular (a query cannot attend to a later key)");
        return Score(model, prompts, _ => [detection], measure, excludeBos, excludeCurrentToken, heads)[0];
    }

    /// <summary>Each detection pattern's score [layer, head] averaged over the prompts, the patterns built from each prompt's ids.</summary>
    private static double[][,] Score(HookedTransformer model, IReadOnlyList<Tensor> prompts, Func<long[], Tensor[]> detectionsOf,
        HeadErrorMeasure measure, bool excludeBos, bool excludeCurrentToken, IReadOnlyCollection<AttentionHead>? heads)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(prompts);
        if (prompts.Count == 0) throw new SaeSharpException("head scores: no prompt");
        var c = model.Config;
        if (heads?.Where(h => h.Layer < 0 || h.Layer >= c.NLayers || h.Head < 0 || h.Head >= c.NHeads).Select(h => (AttentionHead?)h).FirstOrDefault() is { } bad)
            throw new SaeSharpException($"--heads {bad.Layer}.{bad.Head}: the model has layers 0..{c.NLayers - 1} and heads 0..{c.NHeads - 1}");
        if (heads is { Count: 0 }) throw new SaeSharpException("--heads: no head given");
        var layers = heads is null ? Enumerable.Range(0, c.NLayers).ToList() : heads.Select(h => h.Layer).Distinct().Order().ToList();
        bool Scored(int l, int h) => heads is null || heads.Contains(new AttentionHead(l, h));
        double[][,]? sums = null;
        using var _ = no_grad();
        foreach (var tokens in prompts)
        {
            using var scope = NewDisposeScope();
            if (tokens.dim() != 2 || tokens.shape[0] != 1)
                throw new SaeSharpException($"head scores: a prompt of shape [{string.Join(", ", tokens.shape)}], expected [1, seq]");
            long n = tokens.shape[1];
            if (n < 2 || n > c.NCtx)
                throw new SaeSharpException($"head scores: a prompt of {n} tokens; the sequence must have at least 2 tokens and fit the context window ({c.NCtx})");
            var ids = tokens[0].to(ScalarType.Int64).data<long>().ToArray();
            var detections = detectionsOf(ids);
            sums ??= detections.Select(_ => Filled(c.NLayers, c.NHeads, heads is null ? 0 : double.NaN)).ToArray();
            using var run = model.RunWithCache(tokens, layers.Select(l => model.HookPoints.Blocks[l].Pattern),
                stopAtLayer: layers[^1] + 1 < c.NLayers ? layers[^1] + 1 : null);
            foreach (int l in layers)
            {
                var pattern = run.Cache[model.HookPoints.Blocks[l].Pattern][0];
                for (int t = 0; t < detections.Length; t++)
                {
                    var s = Similarity(pattern, detections[t], measure, excludeBos, excludeCurrentToken);
                    for (int h = 0; h < c.NHeads; h++)
                        if (Scored(l, h)) sums[t][l, h] = (double.IsNaN(sums[t][l, h]) ? 0 : sums[t][l, h]) + s[h] / prompts.Count;
                }
            }
        }
        return sums!;
    }

    private static double[,] Filled(int rows, int cols, double value)
    {
        var a = new double[rows, cols];
        for (int r = 0; r < rows; r++)
            for (int k = 0; k < cols; k++) a[r, k] = value;
        return a;
    }

    /// <summary>
    /// The demos' scores on random tokens repeated twice (<paramref name="repeated"/> [batch, 2·seq_len], as
    /// <see cref="RepeatedRandomTokens.Generate"/> makes them): per head, the mean over the batch of the pattern's stripe
    /// <c>pattern.diagonal(offset, dim1=-2, dim2=-1)</c> at offset −1 (previous token), −seq_len (duplicate token: the first
    /// copy) and 1 − seq_len (induction: the token after the first copy), the stripe taken whole as the notebooks do.
    /// </summary>
    public static HeadScores RepeatedTokenScores(HookedTransformer model, Tensor repeated)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(repeated);
        var c = model.Config;
        if (repeated.dim() != 2 || repeated.shape[1] % 2 != 0 || repeated.shape[1] < 4)
            throw new SaeSharpException($"head scores: repeated tokens of shape [{string.Join(", ", repeated.shape)}], expected [batch, 2·seq_len] with seq_len ≥ 2");
        long seqLen = repeated.shape[1] / 2;
        // Past n_ctx only learned positions (W_pos) end; rotary and ALiBi run on, as sae model generate does.
        if (2 * seqLen > c.NCtx && model.LearnedPositions)
            throw new SaeSharpException($"head scores: {seqLen} random tokens repeated twice are {2 * seqLen} tokens, more than the context window ({c.NCtx}, learned positions)");
        var scores = new[] { new double[c.NLayers, c.NHeads], new double[c.NLayers, c.NHeads], new double[c.NLayers, c.NHeads] };
        long[] offsets = [-1, -seqLen, 1 - seqLen];
        long batch = repeated.shape[0];
        using var _ = no_grad();
        // A few sequences per run, so that a large --batch holds one chunk's patterns ([chunk, head, q, k] per layer) at a time.
        for (long first = 0; first < batch; first += RepeatedChunk)
        {
            using var scope = NewDisposeScope();
            using var run = model.RunWithCache(repeated.narrow(0, first, Math.Min(RepeatedChunk, batch - first)),
                model.HookPoints.Blocks.Take(c.NLayers).Select(b => b.Pattern));
            for (int l = 0; l < c.NLayers; l++)
            {
                var pattern = run.Cache[model.HookPoints.Blocks[l].Pattern].to(ScalarType.Float64);   // [chunk, head, q, k]
                for (int t = 0; t < 3; t++)
                {
                    var stripe = pattern.diagonal(offsets[t], -2, -1);                                 // [chunk, head, stripe]
                    var s = stripe.sum([0, 2]).data<double>().ToArray();
                    for (int h = 0; h < c.NHeads; h++) scores[t][l, h] += s[h] / (batch * stripe.shape[2]);
                }
            }
        }
        return new HeadScores(scores[0], scores[1], scores[2]);
    }
}
