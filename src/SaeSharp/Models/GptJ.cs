using SaeSharp.Hooks;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace SaeSharp.Models;

/// <summary>GPT-J (HF <c>GPTJConfig</c>: EleutherAI/gpt-j-6B) settings read from a Hugging Face config.json, with
/// <c>GPTJConfig</c>'s defaults for missing keys.</summary>
internal sealed record GptJSettings(int NEmbd, int NLayer, int NHead, int NInner, int NPositions, int VocabSize,
    string Activation, double Eps, int RotaryDim)
{
    public int HeadDim => NEmbd / NHead;

    /// <summary>The parallel block of HF <c>GPTJBlock</c>: q/k/v/out_proj without bias, adjacent-pair rotary.</summary>
    public ParallelBlockLayout Layout => new(ParallelBlockNames.GptJ, NEmbd, NHead, NHead, NInner, VocabSize, Eps, RotaryDim,
        AttnBias: false, InterleavedRotary: true);

    /// <summary>GPT-J's rotary base (<c>create_sinusoidal_positions</c>: 10000, not a config key).</summary>
    public const double RotaryBase = 10000;

    /// <summary>Reads the settings; with <paramref name="weights"/>, checks every declared size against the tensors
    /// present before anything is allocated. Refuses <c>rotary_dim</c> null (transformers then builds sin/cos tables
    /// n_embd wide, which fit no head but a single one) and tied embeddings.</summary>
    public static GptJSettings From(JsonConfig c, Checkpoint? weights = null)
    {
        int nEmbd = c.Int("n_embd", 4096);
        if (c.Root.ContainsKey("rotary_dim") && c.Root["rotary_dim"] is null)
            throw new SaeSharpException($"{c.Path}: rotary_dim=null is not supported for gptj (EleutherAI/gpt-j-6B has rotary_dim=64)");
        var s = new GptJSettings(nEmbd, c.Int("n_layer", 28), c.Int("n_head", 16),
            c.Root["n_inner"] is null ? 4 * nEmbd : c.Int("n_inner"),
            c.Int("n_positions", 2048), c.Int("vocab_size", 50400),
            c.String("activation_function") ?? "gelu_new", c.Double("layer_norm_epsilon", 1e-5), c.Int("rotary_dim", 64));
        if (s.NEmbd <= 0 || s.NLayer <= 0 || s.NHead <= 0 || s.NEmbd % s.NHead != 0)
            throw new SaeSharpException($"{c.Path}: n_embd={s.NEmbd} must be a positive multiple of n_head={s.NHead} (and n_layer positive)");
        if (s.RotaryDim <= 0 || s.RotaryDim % 2 != 0 || s.RotaryDim > s.HeadDim)
            throw new SaeSharpException($"{c.Path}: rotary_dim={s.RotaryDim} must be a positive even number of at most the head size n_embd / n_head = {s.HeadDim}");
        if (c.Bool("tie_word_embeddings", false))
            throw new SaeSharpException($"{c.Path}: tie_word_embeddings=true is not supported for gptj (its lm_head has a weight and bias of its own)");
        if (weights is not null)
        {
            weights.ExpectLayers(c.Path, "n_layer", s.NLayer);
            string dims = $"vocab_size={s.VocabSize}, n_embd={s.NEmbd}";
            weights.ExpectShape(c.Path, "transformer", "wte.weight", [s.VocabSize, s.NEmbd], dims);
            weights.ExpectShape(c.Path, "", "lm_head.weight", [s.VocabSize, s.NEmbd], dims);
            weights.ExpectShape(c.Path, "transformer", "h.0.attn.q_proj.weight", [s.NEmbd, s.NEmbd], $"n_embd={s.NEmbd}");
            weights.ExpectShape(c.Path, "transformer", "h.0.mlp.fc_in.weight", [s.NInner, s.NEmbd], $"n_inner={s.NInner}, n_embd={s.NEmbd}");
        }
        return s;
    }
}

/// <summary>
/// GPT-J (HF <c>GPTJForCausalLM</c>: EleutherAI/gpt-j-6B) with TransformerLens hooks: token embeddings only (rotary
/// positions on the first <c>rotary_dim</c> dims of q and k, turned in adjacent pairs: TransformerLens's
/// <c>rotary_adjacent_pairs</c>), a parallel block of one LayerNorm (<c>ln_1</c>) feeding attention (q/k/v/out_proj
/// without bias) and a gelu_new MLP (<c>fc_in</c>, <c>fc_out</c> with bias), <c>ln_f</c>, and an untied <c>lm_head</c>
/// with bias. State-dict keys are the HF ones (<c>transformer.h.0.attn.q_proj.weight</c>, <c>lm_head.bias</c>).
/// </summary>
public sealed class GptJModel : HookedTransformer
{
    private readonly ParallelCore transformer;
    private readonly Linear lm_head;
    private readonly GptJSettings _s;

    internal GptJModel(GptJSettings s, string modelName, string configPath, ScalarType dtype)
        : base("GPTJForCausalLM", new TransformerConfig
        {
            ModelName = modelName, Architecture = "gptj", NLayers = s.NLayer, DModel = s.NEmbd, NHeads = s.NHead,
            DHead = s.HeadDim, DMlp = s.NInner, DVocab = s.VocabSize, NCtx = s.NPositions, Activation = s.Activation,
            LayerNormEps = s.Eps, ParallelAttnMlp = true, RotaryDim = s.RotaryDim, RotaryBase = GptJSettings.RotaryBase,
            RotaryAdjacentPairs = true, Dtype = dtype,
        }, new HookPoints(s.NLayer, hasPosEmbed: false, parallelAttnMlp: true, rotary: true, HfModuleNames.GptJ))
    {
        _s = s;
        transformer = new ParallelCore(s.Layout, s.NLayer, ActivationFunctions.Get(s.Activation, configPath), HookPoints, dtype);
        lm_head = new Linear(s.NEmbd, s.VocabSize, true, dtype);
        RegisterComponents();
    }

    private protected override Tensor Embed(Tensor tokens, ForwardContext ctx)
    {
        (ctx.RotaryCos, ctx.RotarySin) = Rotary.CosSin(ctx.Positions, _s.RotaryDim, GptJSettings.RotaryBase, Config.Dtype);
        return ctx.Hooks.Fire(HookPoints.Embed, transformer.Embed.forward(tokens));
    }

    private protected override Tensor RunBlock(int layer, Tensor resid, ForwardContext ctx) => transformer.Layers[layer].forward(resid, ctx);

    private protected override Tensor FinalNorm(Tensor resid, ForwardContext ctx) =>
        ctx.Hooks.Fire(HookPoints.LnFinal, transformer.FinalNorm.Forward(resid, ctx.Hooks, HookPoints.LnFinalScale));

    private protected override Tensor UnembedNormalized(Tensor x) => lm_head.forward(x);
}
