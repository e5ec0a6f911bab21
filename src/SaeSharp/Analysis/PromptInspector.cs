using System.Text.Json.Nodes;
using SaeSharp.Models;
using SaeSharp.Saes;
using SaeSharp.Tokenizers;
using TorchSharp;
using static TorchSharp.torch;

namespace SaeSharp.Analysis;

/// <summary>One feature (or neuron) on a prompt: its activation on every token and their sum; <paramref name="Layer"/>: the
/// layer of a whole cross-layer transcoder's feature (null for one SAE's).</summary>
public sealed record UnitActivations(int Index, double Sum, float[] Acts, int? Layer = null)
{
    /// <summary>How the unit is named: <c>L{layer}/{index}</c> for a CLT's feature, else its index.</summary>
    public string Label => CrossLayerTranscoder.FeatureLabel(Index, Layer);
}

/// <summary>
/// The prompt view: the prompt's tokens, the top SAE features by activation summed over the tokens and, on request, the
/// top raw dimensions of the hooked activation (for an MLP hook, its neurons).
/// </summary>
public sealed class PromptView
{
    /// <summary>The prompt text.</summary>
    public required string Prompt { get; init; }
    /// <summary>Token ids of the prompt as the model saw them (BOS first when prepended).</summary>
    public required int[] Tokens { get; init; }
    /// <summary>Display string of each token.</summary>
    public required string[] TokenStrings { get; init; }
    /// <summary>Positions left out of the sums (the BOS the window starts with).</summary>
    public int SkippedPrefix { get; init; }
    /// <summary>Top features by activation summed over the prompt's tokens, highest first.</summary>
    public required IReadOnlyList<UnitActivations> Features { get; init; }
    /// <summary>Top raw dimensions of the hooked activation (for an MLP hook, its neurons), when asked for.</summary>
    public IReadOnlyList<UnitActivations> Neurons { get; init; } = [];

    /// <summary><c>{"tokens", "token_strs", "features": [{"feature", "sum", "acts"}], "neurons": [{"neuron", "sum", "acts"}]}</c>
    /// (a CLT's features also give their <c>"layer"</c>).</summary>
    public JsonObject ToJson()
    {
        static JsonArray Units(IEnumerable<UnitActivations> xs, string key) => new(xs.Select(u =>
        {
            var o = new JsonObject();
            if (u.Layer is int l) o["layer"] = l;
            o[key] = u.Index;
            o["sum"] = u.Sum;
            o["acts"] = new JsonArray(u.Acts.Select(a => (JsonNode)JsonValue.Create(a)).ToArray());
            return (JsonNode)o;
        }).ToArray());
        return new JsonObject
        {
            ["prompt"] = Prompt,
            ["tokens"] = new JsonArray(Tokens.Select(t => (JsonNode)JsonValue.Create(t)).ToArray()),
            ["token_strs"] = new JsonArray(TokenStrings.Select(t => (JsonNode)JsonValue.Create(t)).ToArray()),
            ["features"] = Units(Features, "feature"),
            ["neurons"] = Units(Neurons, "neuron"),
        };
    }
}

/// <summary>What is shown next to a feature in the prompt view: its density over a corpus (when a feature report is given)
/// and its top logit tokens.</summary>
public sealed record FeatureNote(double? Density, IReadOnlyList<string> TopLogits);

/// <summary>Features in the top list of every prompt, and per prompt the top features in no other prompt's top list.</summary>
public sealed record PromptComparison(IReadOnlyList<int> Shared, IReadOnlyList<IReadOnlyList<int>> Specific);

/// <summary>
/// The nnsight tutorial's flow as a library call: tokenise a prompt as training did (BOS first unless the SAE's cfg says
/// otherwise), run the model to the SAE's hook, encode, and rank features by activation summed over the prompt's tokens
/// (the BOS position is shown but not summed).
/// </summary>
public sealed class PromptInspector
{
    private readonly HookedTransformer _model;
    private readonly Sae _sae;
    private readonly ITextTokenizer _tokenizer;
    private readonly SaeEncoder _encoder;
    private readonly bool _prependBos;
    private readonly SeqposSlice _slice;

    /// <param name="model">The model the SAE was trained on (processed as its cfg asks: <c>Pipelines/ModelForSae</c>).</param>
    /// <param name="sae">The SAE.</param>
    /// <param name="tokenizer">The model's tokenizer.</param>
    /// <param name="modelHooks">Hooks completing the model's weight processing (<see cref="ProcessedModel.Hooks"/>).</param>
    /// <param name="prependBos">Start the prompt with BOS; null: the SAE's <c>prepend_bos</c>.</param>
    /// <param name="hook">Hook the SAE reads; null: <c>cfg.metadata.hook_name</c>.</param>
    /// <param name="seqposSlice">The prompt positions the SAE is applied at (no feature fires elsewhere); null: the SAE's
    /// <c>seqpos_slice</c>, as <c>sae eval --model</c> and the splices apply it (<see cref="SeqposSlice.All"/>: every position).</param>
    public PromptInspector(HookedTransformer model, Sae sae, ITextTokenizer tokenizer,
        IReadOnlyList<(string Name, Func<Tensor, Tensor?> Fn)>? modelHooks = null, bool? prependBos = null, string? hook = null,
        SeqposSlice? seqposSlice = null)
    {
        _model = model ?? throw new ArgumentNullException(nameof(model));
        _sae = sae ?? throw new ArgumentNullException(nameof(sae));
        _tokenizer = tokenizer ?? throw new ArgumentNullException(nameof(tokenizer));
        _encoder = new SaeEncoder(model, sae, sae.Cfg.Metadata.HookOr(hook), modelHooks);
        _prependBos = prependBos ?? sae.Cfg.Metadata.PrependBos;
        _slice = seqposSlice ?? SeqposSlice.Of(sae.Cfg.Metadata) ?? SeqposSlice.All;
    }

    /// <summary>TransformerLens hook name the SAE reads.</summary>
    public string Hook => _encoder.Hook;

    /// <summary>The prompt's token ids as the model sees them (BOS first when prepended).</summary>
    public long[] Tokenize(string prompt) => PromptTokens(_tokenizer, prompt, _prependBos);

    /// <summary>The prompt's token ids (BOS first when prepended); a prompt whose text gives no token (empty, or only
    /// what the tokenizer drops) is an error naming it, not a view of BOS alone.</summary>
    internal static long[] PromptTokens(ITextTokenizer tokenizer, string prompt, bool prependBos)
    {
        ArgumentNullException.ThrowIfNull(prompt);
        var result = tokenizer.EncodePrompt(prompt, prependBos);
        if (result.Length == (prependBos ? 1 : 0))
            throw new SaeSharpException($"the prompt \"{prompt}\" has no tokens (the tokenizer gives none for its text); give some text");
        return result;
    }

    /// <summary>The top <paramref name="top"/> features (and with <paramref name="neurons"/>, raw dimensions) of a prompt.</summary>
    public PromptView Inspect(string prompt, int top = 10, bool neurons = false) => Inspect(prompt, Tokenize(prompt), top, neurons);

    /// <summary>As <see cref="Inspect(string, int, bool)"/> on given token ids (the first <paramref name="skipPrefix"/> are not summed;
    /// null: 1 when the tokens start with BOS and BOS is prepended).</summary>
    public PromptView Inspect(string prompt, long[] tokens, int top = 10, bool neurons = false, int? skipPrefix = null)
    {
        ArgumentNullException.ThrowIfNull(tokens);
        if (top <= 0) throw new SaeSharpException($"top must be positive, got {top}");
        int skip = skipPrefix ?? (_prependBos && tokens.Length > 1 && tokens[0] == _tokenizer.BosOrEosTokenId() ? 1 : 0);
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        var (f, x, _, rows) = _encoder.EncodeWithInput([tokens]);
        // At an expert's hook the tokens routed elsewhere have no activation, and outside the SAE's seqpos_slice it is not
        // applied: no feature fires there.
        var applied = rows[0];
        if (!_slice.IsAll)
        {
            var positions = tensor(Enumerable.Range(0, tokens.Length).Select(p => (long)p).ToArray()).unsqueeze(0);
            applied = applied.logical_and(_slice.Mask(positions, tensor(new long[] { tokens.Length }))[0].to(applied.device));
        }
        var feats = f[0] * applied.unsqueeze(1).to(f.dtype);                // [s, d_sae]
        var input = x[0];                                                   // [s, d]
        return new PromptView
        {
            Prompt = prompt,
            Tokens = tokens.Select(t => (int)t).ToArray(),
            TokenStrings = tokens.Select(t => _tokenizer.TokenText((int)t)).ToArray(),
            SkippedPrefix = skip,
            Features = TopUnits(feats, skip, top),
            Neurons = neurons ? TopUnits(input, skip, top) : [],
        };
    }

    internal static List<UnitActivations> TopUnits(Tensor acts, int skip, int top)
    {
        long s = acts.shape[0], d = acts.shape[1];
        var counted = skip < s ? acts.narrow(0, skip, s - skip) : acts.narrow(0, 0, 0);
        var sums = counted.to(ScalarType.Float64).sum(0, keepdim: false);                  // [d]
        int k = (int)Math.Min(top, d);
        var (_, idx) = sums.topk(k);
        var ids = idx.data<long>().ToArray();
        var sumArr = sums.data<double>().ToArray();
        var all = acts.t().to(ScalarType.Float32).contiguous().data<float>().ToArray();            // [d, s] (a bfloat16 CLT's too)
        return ids.Select(i => new UnitActivations((int)i, sumArr[i], all.AsSpan((int)(i * s), (int)s).ToArray())).ToList();
    }

    /// <summary>Notes for <paramref name="features"/>: top logit tokens from the weights, density from <paramref name="stats"/>
    /// (a <c>sae features</c> report of the same SAE) when given.</summary>
    /// <exception cref="SaeSharpException"><paramref name="stats"/> records another d_sae, hook or head than this SAE's.</exception>
    public IReadOnlyDictionary<int, FeatureNote> Notes(IEnumerable<int> features, FeatureReport? stats = null, int topLogits = 5)
    {
        stats?.Source.RefuseOtherSae(_sae.Cfg, Hook, "its densities");
        var ids = features.Distinct().ToList();
        var fs = ids.Select(i => new FeatureStatistics
        {
            Feature = i, Density = 0, MaxActivation = 0, MeanNonzero = 0, Firings = 0, TopExamples = [], Intervals = [], Histogram = new([], []),
        }).ToList();
        if (fs.Count > 0)
            FeatureWeights.Fill(fs, _model, _sae, Hook, topLogits, similar: 0, neurons: 0, Math.Min(_tokenizer.VocabSize, _model.Config.DVocab));
        var density = stats?.Features.ToDictionary(f => f.Feature, f => f.Density);
        return fs.ToDictionary(f => f.Feature, f => new FeatureNote(
            density is not null && density.TryGetValue(f.Feature, out var d) ? d : null,
            f.TopLogits.Select(t => _tokenizer.TokenText(t.Token)).ToList()));
    }

    /// <summary>SAELens's "comparing features across related prompts": the firing features (sum &gt; 0) in the top list of
    /// every prompt, and per prompt those in no other prompt's top list.</summary>
    public static PromptComparison Compare(IReadOnlyList<PromptView> views)
    {
        ArgumentNullException.ThrowIfNull(views);
        var tops = views.Select(v => v.Features.Where(u => u.Sum > 0).Select(u => u.Index).ToList()).ToList();
        var shared = tops.Count == 0 ? [] : tops.Skip(1).Aggregate((IEnumerable<int>)tops[0], (acc, t) => acc.Intersect(t)).ToList();
        var specific = new List<IReadOnlyList<int>>();
        for (int i = 0; i < views.Count; i++)
        {
            var others = new HashSet<int>(tops.Where((_, j) => j != i).SelectMany(t => t));
            specific.Add(tops[i].Where(f => !others.Contains(f)).ToList());
        }
        return new PromptComparison(shared, specific);
    }
}

/// <summary>
/// The prompt view of a whole cross-layer transcoder: one run of the model caches every layer's input hook, each layer's
/// encoder reads its own (<see cref="CrossLayerTranscoder.EncodeLayer"/>), and the features of all layers are ranked
/// together by activation summed over the prompt's tokens (BOS shown, not summed), each labelled <c>L{layer}/{index}</c>.
/// </summary>
public sealed class CrossLayerPromptInspector
{
    private readonly HookedTransformer _model;
    private readonly CrossLayerTranscoder _clt;
    private readonly ITextTokenizer _tokenizer;
    private readonly IReadOnlyList<(string Name, Func<Tensor, Tensor?> Fn)>? _hooks;
    private readonly bool _prependBos;
    private readonly int? _stop;

    /// <param name="model">The model the CLT was trained on (its hooks are checked: <see cref="CrossLayerTranscoderHooks.Hooks"/>).</param>
    /// <param name="clt">The cross-layer transcoder.</param>
    /// <param name="tokenizer">The model's tokenizer.</param>
    /// <param name="modelHooks">Hooks completing the model's weight processing (<see cref="ProcessedModel.Hooks"/>).</param>
    /// <param name="prependBos">Start the prompt with BOS (circuit-tracer's default).</param>
    public CrossLayerPromptInspector(HookedTransformer model, CrossLayerTranscoder clt, ITextTokenizer tokenizer,
        IReadOnlyList<(string Name, Func<Tensor, Tensor?> Fn)>? modelHooks = null, bool prependBos = true)
    {
        _model = model ?? throw new ArgumentNullException(nameof(model));
        _clt = clt ?? throw new ArgumentNullException(nameof(clt));
        _tokenizer = tokenizer ?? throw new ArgumentNullException(nameof(tokenizer));
        InputHooks = clt.Hooks(model).Inputs;
        _hooks = modelHooks;
        _prependBos = prependBos;
        _stop = model.HookPoints.StopAtLayerFor(InputHooks);
    }

    /// <summary>The hook each layer's encoder reads, by layer.</summary>
    public IReadOnlyList<string> InputHooks { get; }

    /// <summary>The top <paramref name="top"/> features over all layers of a prompt.</summary>
    public PromptView Inspect(string prompt, int top = 10)
    {
        return Inspect(prompt, PromptInspector.PromptTokens(_tokenizer, prompt, _prependBos), top);
    }

    /// <summary>As <see cref="Inspect(string, int)"/> on given token ids (the first <paramref name="skipPrefix"/> are not
    /// summed; null: 1 when the tokens start with BOS and BOS is prepended).</summary>
    public PromptView Inspect(string prompt, long[] tokens, int top = 10, int? skipPrefix = null)
    {
        ArgumentNullException.ThrowIfNull(tokens);
        if (top <= 0) throw new SaeSharpException($"top must be positive, got {top}");
        int skip = skipPrefix ?? (_prependBos && tokens.Length > 1 && tokens[0] == _tokenizer.BosOrEosTokenId() ? 1 : 0);
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        var (logits, cache) = _model.Run(tensor(tokens).unsqueeze(0), new RunOptions { StopAtLayer = _stop, Hooks = _hooks, CacheNames = InputHooks });
        logits?.Dispose();
        Tensor all;
        using (cache!)
            all = cat(Enumerable.Range(0, _clt.Cfg.NLayers).Select(l => _clt.EncodeLayer(cache![InputHooks[l]][0], l)).ToList(), 1); // [s, L·d_transcoder]
        int f = _clt.Cfg.DTranscoder;
        return new PromptView
        {
            Prompt = prompt,
            Tokens = tokens.Select(t => (int)t).ToArray(),
            TokenStrings = tokens.Select(t => _tokenizer.TokenText((int)t)).ToArray(),
            SkippedPrefix = skip,
            Features = PromptInspector.TopUnits(all, skip, top).Select(u => u with { Index = u.Index % f, Layer = u.Index / f }).ToList(),
        };
    }
}
