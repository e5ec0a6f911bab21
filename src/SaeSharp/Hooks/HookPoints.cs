namespace SaeSharp.Hooks;

/// <summary>Which side of a module an alias refers to: its output (the default) or its input.</summary>
public enum HookKind
{
    /// <summary>The module's output.</summary>
    Out,
    /// <summary>The module's input (what a transcoder reads).</summary>
    In,
}

/// <summary>Hugging Face module names of one architecture, used to accept HF module paths as hook aliases.</summary>
public sealed record HfModuleNames(
    string Prefix, string Blocks, string Embed, string? PosEmbed, string FinalLn,
    string Attn, string Mlp, string Ln1, string Ln2, string Qkv, string AttnProj, string MlpIn, string MlpOut, string Act)
{
    /// <summary>GPT-2: <c>transformer.h.{i}.attn</c>, <c>mlp.c_fc</c>, ...</summary>
    public static HfModuleNames Gpt2 { get; } = new("transformer", "h", "wte", "wpe", "ln_f",
        "attn", "mlp", "ln_1", "ln_2", "attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj", "mlp.act");

    /// <summary>GPT-Neo (TinyStories): <c>transformer.h.{i}.attn.attention.q_proj</c> (output: <c>attn.hook_q</c>, per head),
    /// <c>k_proj</c>, <c>v_proj</c>, <c>out_proj</c>; <c>mlp.c_fc</c>, <c>mlp.c_proj</c> (nn.Linear, not GPT-2's Conv1D).</summary>
    public static HfModuleNames GptNeo { get; } = new("transformer", "h", "wte", "wpe", "ln_f",
        "attn", "mlp", "ln_1", "ln_2", "attn.attention.q_proj", "attn.attention.out_proj", "mlp.c_fc", "mlp.c_proj", "mlp.act")
    { KProj = "attn.attention.k_proj", VProj = "attn.attention.v_proj" };

    /// <summary>GPT-J: <c>transformer.h.{i}.attn.q_proj</c> (output: <c>attn.hook_q</c>, per head), <c>k_proj</c>,
    /// <c>v_proj</c>, <c>out_proj</c>; <c>mlp.fc_in</c>, <c>mlp.fc_out</c>; one <c>ln_1</c> read by both the attention and the
    /// MLP (its output is <c>ln1.hook_normalized</c>; TransformerLens's ln2 is tied to it).</summary>
    public static HfModuleNames GptJ { get; } = new("transformer", "h", "wte", null, "ln_f",
        "attn", "mlp", "ln_1", "ln_1", "attn.q_proj", "attn.out_proj", "mlp.fc_in", "mlp.fc_out", "mlp.act")
    { KProj = "attn.k_proj", VProj = "attn.v_proj" };

    /// <summary>OPT: <c>model.decoder.layers.{i}.self_attn.q_proj</c> (output: <c>attn.hook_q</c>, per head), <c>k_proj</c>,
    /// <c>v_proj</c>, <c>out_proj</c>; <c>self_attn_layer_norm</c> (ln1), <c>final_layer_norm</c> (ln2); <c>fc1</c>, <c>fc2</c>
    /// and <c>activation_fn</c> directly in the layer (HF has no MLP module: <c>mlp</c> names TransformerLens's);
    /// <c>embed_positions</c> (output: <c>hook_pos_embed</c>), the decoder's <c>final_layer_norm</c> (ln_final).</summary>
    public static HfModuleNames Opt { get; } = new("model.decoder", "layers", "embed_tokens", "embed_positions", "final_layer_norm",
        "self_attn", "mlp", "self_attn_layer_norm", "final_layer_norm", "self_attn.q_proj", "self_attn.out_proj",
        "fc1", "fc2", "activation_fn")
    { KProj = "self_attn.k_proj", VProj = "self_attn.v_proj" };

    /// <summary>BLOOM: <c>transformer.h.{i}.self_attention.query_key_value</c> (fused, per head q, k, v), <c>self_attention.dense</c>;
    /// <c>input_layernorm</c> (ln1), <c>post_attention_layernorm</c> (ln2); <c>mlp.dense_h_to_4h</c>, <c>mlp.gelu_impl</c>,
    /// <c>mlp.dense_4h_to_h</c>; <c>word_embeddings_layernorm</c> (output: <c>hook_embed</c>, as TransformerLens's embed
    /// includes that norm), <c>ln_f</c>.</summary>
    public static HfModuleNames Bloom { get; } = new("transformer", "h", "word_embeddings_layernorm", null, "ln_f",
        "self_attention", "mlp", "input_layernorm", "post_attention_layernorm", "self_attention.query_key_value", "self_attention.dense",
        "mlp.dense_h_to_4h", "mlp.dense_4h_to_h", "mlp.gelu_impl");

    /// <summary>GPT-NeoX / Pythia: <c>gpt_neox.layers.{i}.attention</c>, <c>mlp.dense_h_to_4h</c>, ...</summary>
    public static HfModuleNames NeoX { get; } = new("gpt_neox", "layers", "embed_in", null, "final_layer_norm",
        "attention", "mlp", "input_layernorm", "post_attention_layernorm", "attention.query_key_value", "attention.dense",
        "mlp.dense_h_to_4h", "mlp.dense_4h_to_h", "mlp.act");

    /// <summary>Phi (phi-1, phi-1_5, phi-2): <c>model.layers.{i}.self_attn.q_proj</c> (output: <c>attn.hook_q</c>, per head),
    /// <c>k_proj</c>, <c>v_proj</c>, <c>dense</c>; <c>mlp.fc1</c>, <c>mlp.fc2</c>; one <c>input_layernorm</c> read by both the
    /// attention and the MLP (its output is <c>ln1.hook_normalized</c>; TransformerLens's ln2 is tied to it).</summary>
    public static HfModuleNames Phi { get; } = new("model", "layers", "embed_tokens", null, "final_layernorm",
        "self_attn", "mlp", "input_layernorm", "input_layernorm", "self_attn.q_proj", "self_attn.dense",
        "mlp.fc1", "mlp.fc2", "mlp.activation_fn")
    { KProj = "self_attn.k_proj", VProj = "self_attn.v_proj" };

    /// <summary>Llama, Qwen2, Qwen3: <c>model.layers.{i}.self_attn.q_proj</c>, <c>mlp.gate_proj</c>, <c>mlp.up_proj</c>, ...
    /// (<c>self_attn.q_proj</c>'s output is <c>attn.hook_q</c>, per head).</summary>
    public static HfModuleNames Llama { get; } = new("model", "layers", "embed_tokens", null, "norm",
        "self_attn", "mlp", "input_layernorm", "post_attention_layernorm", "self_attn.q_proj", "self_attn.o_proj",
        "mlp.gate_proj", "mlp.down_proj", "mlp.act_fn")
    { KProj = "self_attn.k_proj", VProj = "self_attn.v_proj", MlpUp = "mlp.up_proj" };

    /// <summary>Mixtral: as Llama, with the sparse MoE block <c>block_sparse_moe</c> (transformers 5: <c>mlp</c>) in place of the
    /// MLP: <c>block_sparse_moe.experts.{e}.w1</c> (output: <c>mlp.experts.{e}.hook_gate</c>), <c>w3</c> (<c>hook_pre</c>),
    /// <c>w2</c> (input: <c>hook_post</c>).</summary>
    public static HfModuleNames Mixtral { get; } = Llama with { Mlp = "block_sparse_moe" };

    /// <summary>Gemma 2: as Llama, with <c>pre_feedforward_layernorm</c> before the MLP and the post-norms
    /// <c>post_attention_layernorm</c> (output: <c>hook_attn_out</c>) and <c>post_feedforward_layernorm</c> (output: <c>hook_mlp_out</c>).</summary>
    public static HfModuleNames Gemma2 { get; } = Llama with
    {
        Ln2 = "pre_feedforward_layernorm", PostAttnNorm = "post_attention_layernorm", PostMlpNorm = "post_feedforward_layernorm",
    };

    /// <summary>OLMo-2: as Llama, without <c>input_layernorm</c>: <c>post_attention_layernorm</c> normalises the attention output
    /// (its output is <c>ln1.hook_normalized</c>, as in TransformerLens) and <c>post_feedforward_layernorm</c> the MLP output
    /// (<c>ln2.hook_normalized</c>); <c>self_attn</c> and <c>mlp</c> outputs are <c>hook_attn_out</c> / <c>hook_mlp_out</c>.</summary>
    public static HfModuleNames Olmo2 { get; } = Llama with { Ln1 = "post_attention_layernorm", Ln2 = "post_feedforward_layernorm", PostNormOnly = true };

    /// <summary>Gemma 3's language model inside <c>Gemma3ForConditionalGeneration</c>: Gemma 2's names, also under
    /// <c>model.language_model.layers.{i}</c> (transformers 4.52 on) and <c>language_model.model.layers.{i}</c> (4.50–4.51).</summary>
    public static HfModuleNames Gemma3Conditional { get; } = Gemma2 with { OtherPrefixes = ["model.language_model", "language_model.model"] };

    /// <summary>gpt-oss: as Llama, with the router <c>mlp.router</c> (HF <c>GptOssTopKRouter</c>) in place of Mixtral's and
    /// Qwen-MoE's <c>gate</c>: its input is <c>ln2.hook_normalized</c>; its output (a tuple whose first element is the
    /// router scores in transformers 4.5x, the logits in 5.x) has no hook.</summary>
    public static HfModuleNames GptOss { get; } = Llama with { Router = "mlp.router" };

    /// <summary>OLMo-2: no pre-norms; <see cref="Ln1"/> and <see cref="Ln2"/> normalise the attention and MLP outputs, whose
    /// inputs are the residual stream itself.</summary>
    public bool PostNormOnly { get; init; }

    /// <summary>The router of a mixture-of-experts MLP when not <c>block_sparse_moe.gate</c> / <c>mlp.gate</c> (gpt-oss:
    /// <c>mlp.router</c>); its input is <c>ln2.hook_normalized</c>, its output has no hook.</summary>
    public string? Router { get; init; }

    /// <summary>Further prefixes of the same modules, tried before <see cref="Prefix"/> (a model nested in a larger one).</summary>
    public IReadOnlyList<string> OtherPrefixes { get; init; } = [];

    /// <summary>Key projection when q, k, v are separate modules (its output is <c>attn.hook_k</c>).</summary>
    public string? KProj { get; init; }
    /// <summary>Value projection when q, k, v are separate modules (its output is <c>attn.hook_v</c>).</summary>
    public string? VProj { get; init; }
    /// <summary>Up projection of a gated MLP (its output is <c>mlp.hook_pre_linear</c>).</summary>
    public string? MlpUp { get; init; }
    /// <summary>Norm applied to the attention output before the residual add (Gemma 2); its output is <c>hook_attn_out</c>.</summary>
    public string? PostAttnNorm { get; init; }
    /// <summary>Norm applied to the MLP output before the residual add (Gemma 2); its output is <c>hook_mlp_out</c>.</summary>
    public string? PostMlpNorm { get; init; }
}

/// <summary>The TransformerLens hook names of one block, built once per model.</summary>
internal sealed class BlockHookNames
{
    public readonly string ResidPre, ResidMid, ResidPost, AttnOut, MlpOut, Ln1, Ln2, MlpPre, MlpPreLinear, MlpPost, Q, K, V, RotQ, RotK, Z, Pattern;
    /// <summary>TransformerLens's <c>ln1.hook_scale</c>, <c>ln2.hook_scale</c> [batch, pos, 1] and <c>attn.hook_attn_scores</c>
    /// [batch, head, query_pos, key_pos].</summary>
    public readonly string Ln1Scale, Ln2Scale, AttnScores;
    /// <summary>TransformerLens's <c>hook_mlp_in</c> [batch, pos, d_model] (the MLP's input before ln2) and
    /// <c>attn.hook_result</c> [batch, pos, head, d_model] (each head's z_h·W_O[h]).</summary>
    public readonly string MlpIn, Result;
    /// <summary>TransformerLens's <c>hook_attn_in</c> [batch, pos, head, d_model] and <c>hook_q_input</c> / <c>hook_k_input</c> /
    /// <c>hook_v_input</c> (k and v: the key-value heads): each head's copy of resid_pre, before ln1.</summary>
    public readonly string AttnIn, QInput, KInput, VInput;
    /// <summary>Gemma 2/3's post-attention and post-MLP norms (TransformerLens <c>ln1_post</c>, <c>ln2_post</c>): their output
    /// (the same tensor as hook_attn_out / hook_mlp_out) and scale.</summary>
    public readonly string Ln1Post, Ln1PostScale, Ln2Post, Ln2PostScale;
    /// <summary>Mixture of experts (TransformerLens <c>MoE</c>): the router's softmax over the experts and the experts chosen.</summary>
    public readonly string ExpertWeights, ExpertIndices;
    /// <summary>Mixture of experts: each expert's hooks (TransformerLens <c>MoEGatedMLP</c>); empty for a dense MLP.</summary>
    public readonly (string Gate, string Pre, string Post)[] Experts;
    /// <summary>Qwen2-MoE's shared expert: its hooks as an expert's, and the sigmoid of its gate.</summary>
    public readonly (string Gate, string Pre, string Post) SharedExpert;
    public readonly string SharedExpertGate;
    /// <summary>DeepSeek-V3's latent attention: the normalised q and kv latents (SaeSharp's names).</summary>
    public readonly string QLatent, KvLatent;

    public BlockHookNames(int i, int numExperts = 0)
    {
        string b = $"blocks.{i}.";
        ResidPre = b + "hook_resid_pre";
        ResidMid = b + "hook_resid_mid";
        ResidPost = b + "hook_resid_post";
        AttnOut = b + "hook_attn_out";
        MlpOut = b + "hook_mlp_out";
        Ln1 = b + "ln1.hook_normalized";
        Ln2 = b + "ln2.hook_normalized";
        Ln1Scale = b + "ln1.hook_scale";
        Ln2Scale = b + "ln2.hook_scale";
        AttnScores = b + "attn.hook_attn_scores";
        MlpIn = b + "hook_mlp_in";
        Result = b + "attn.hook_result";
        AttnIn = b + "hook_attn_in";
        QInput = b + "hook_q_input";
        KInput = b + "hook_k_input";
        VInput = b + "hook_v_input";
        Ln1Post = b + "ln1_post.hook_normalized";
        Ln1PostScale = b + "ln1_post.hook_scale";
        Ln2Post = b + "ln2_post.hook_normalized";
        Ln2PostScale = b + "ln2_post.hook_scale";
        MlpPre = b + "mlp.hook_pre";
        MlpPreLinear = b + "mlp.hook_pre_linear";
        MlpPost = b + "mlp.hook_post";
        Q = b + "attn.hook_q";
        K = b + "attn.hook_k";
        V = b + "attn.hook_v";
        RotQ = b + "attn.hook_rot_q";
        RotK = b + "attn.hook_rot_k";
        Z = b + "attn.hook_z";
        Pattern = b + "attn.hook_pattern";
        ExpertWeights = b + "mlp.hook_expert_weights";
        ExpertIndices = b + "mlp.hook_expert_indices";
        Experts = Enumerable.Range(0, numExperts)
            .Select(e => (b + $"mlp.experts.{e}.hook_gate", b + $"mlp.experts.{e}.hook_pre", b + $"mlp.experts.{e}.hook_post")).ToArray();
        SharedExpert = (b + "mlp.shared_expert.hook_gate", b + "mlp.shared_expert.hook_pre", b + "mlp.shared_expert.hook_post");
        SharedExpertGate = b + "mlp.hook_shared_expert_gate";
        QLatent = b + "attn.hook_q_latent";
        KvLatent = b + "attn.hook_kv_latent";
    }
}

/// <summary>
/// The hook points of one model, named as in TransformerLens, and the resolution of aliases:
/// TransformerLens module paths (<c>blocks.3.mlp</c>) and Hugging Face module paths
/// (<c>transformer.h.3.mlp</c>, <c>gpt_neox.layers.3.attention</c>, with or without the prefix),
/// each as the module's output or input (<see cref="HookKind"/>).
/// <para>Shapes: residual-stream hooks, <c>hook_embed</c>, <c>hook_pos_embed</c>, BLOOM's <c>embed.ln.hook_normalized</c>, <c>hook_attn_out</c>, <c>hook_mlp_out</c>,
/// <c>ln*.hook_normalized</c>, <c>hook_mlp_in</c> (the MLP's copy of resid_mid, or resid_pre in a parallel block; an edit
/// reaches the MLP only): [batch, pos, d_model]; <c>attn.hook_result</c> (each head's z_h·W_O[h], without b_O): [batch, pos,
/// head, d_model]; <c>hook_attn_in</c>, <c>hook_q_input</c> (each head's copy of resid_pre before ln1, TransformerLens's
/// <c>use_attn_in</c> / <c>use_split_qkv_input</c>; head h's query is projected from ln1 of its copy): [batch, pos, head,
/// d_model], <c>hook_k_input</c> / <c>hook_v_input</c> with the n_key_value_heads heads (an edit of any of them is the attention's input: see the README);
/// Gemma 2/3's <c>ln1_post/ln2_post.hook_normalized</c> (= hook_attn_out / hook_mlp_out) and
/// <c>hook_scale</c>; <c>mlp.hook_pre/post</c>: [batch, pos, d_mlp];
/// <c>attn.hook_q/k/v/z</c> (and <c>hook_rot_q/k</c> for rotary models): [batch, pos, head, d_head], with the
/// n_key_value_heads heads for k and v under grouped-query attention (as TransformerLens);
/// gated MLPs (Llama, Gemma) also have <c>mlp.hook_pre_linear</c>: hook_pre is the gate projection, hook_pre_linear the up
/// projection, hook_post = act(hook_pre)·hook_pre_linear;
/// <c>attn.hook_attn_scores</c> (the scaled, soft-capped and masked scores the softmax reads, float32; masked entries hold
/// float32's minimum, where TransformerLens has −inf) and <c>attn.hook_pattern</c>: [batch, head, query_pos, key_pos];
/// <c>ln1/ln2/ln_final.hook_scale</c> (and BLOOM's <c>embed.ln.hook_scale</c>): [batch, pos, 1], the norm's divisor √(var + eps) (LayerNorm) or √(mean x² + eps)
/// (RMSNorm), float32.</para>
/// <para>A mixture-of-experts MLP (Mixtral, Qwen2-MoE, Qwen3-MoE) has TransformerLens's MoE hooks instead of hook_pre/post:
/// <c>mlp.hook_expert_weights</c> [batch, pos, num_experts] float32, the router's softmax over every expert (the top
/// experts are chosen from it after the hook, so editing it reroutes tokens); <c>mlp.hook_expert_indices</c> [batch, pos,
/// experts_per_token] int64, the experts chosen, best first; and each expert's <c>mlp.experts.{e}.hook_gate</c> (w1·x,
/// Qwen-MoE gate_proj·x), <c>hook_pre</c> (w3·x, up_proj·x) and <c>hook_post</c> (act(gate)·pre), [batch, pos, d_mlp], zero at the tokens not routed to
/// that expert (TransformerLens fires them on the routed tokens only, [n_routed, d_mlp]; an edit elsewhere changes nothing;
/// SAE harvests, evaluations and feature statistics read the routed rows only, <see cref="ExpertRouting"/>). Qwen2-MoE's
/// shared expert, which every token goes through, has <c>mlp.shared_expert.hook_gate/hook_pre/hook_post</c> [batch, pos,
/// shared d_mlp] and <c>mlp.hook_shared_expert_gate</c> [batch, pos, 1], the sigmoid weight of its output (SaeSharp's names:
/// TransformerLens has no Qwen2-MoE).</para>
/// <para><c>ln1/ln2/ln_final.hook_normalized</c> is the norm's full output, weight and bias included: exactly the input of
/// the attention / MLP / unembedding. TransformerLens's LayerNorm hook is the same; its RMSNorm hook is x/scale before the
/// weight, so on an unprocessed RMSNorm model (Llama, Qwen, Gemma, ...) the two differ by the weight; after fold_ln (the
/// weight folded into the next layer) both are x/scale (TransformerLensReferenceTests).</para>
/// </summary>
public sealed class HookPoints
{
    private readonly HashSet<string> _set;
    private readonly Dictionary<string, int> _layer;
    private readonly Dictionary<string, (string IndicesHook, int Expert)> _routing = new(StringComparer.Ordinal);
    internal BlockHookNames[] Blocks { get; }

    /// <summary>Every hook name, in the order the hooks fire.</summary>
    public IReadOnlyList<string> Names { get; }
    /// <summary>The hooks TransformerLens's <c>run_with_cache()</c> caches with a default config: <see cref="Names"/> without
    /// the opt-in ones (<see cref="IsOptIn"/>). What <c>all</c> selects.</summary>
    public IReadOnlyList<string> DefaultNames { get; }

    /// <summary>True for the hooks TransformerLens fires only when its config asks: <c>attn.hook_result</c>
    /// (<c>use_attn_result</c>), <c>hook_attn_in</c> (<c>use_attn_in</c>), <c>hook_q/k/v_input</c> (<c>use_split_qkv_input</c>)
    /// and <c>hook_mlp_in</c> (<c>use_hook_mlp_in</c>). SaeSharp fires them whenever they are named.</summary>
    public static bool IsOptIn(string name) => OptInSuffixes.Any(s => name.EndsWith(s, StringComparison.Ordinal));

    private static readonly string[] OptInSuffixes = [".attn.hook_result", ".hook_attn_in", ".hook_q_input", ".hook_k_input", ".hook_v_input", ".hook_mlp_in"];
    /// <summary>Number of transformer blocks (<c>blocks.0</c> … <c>blocks.{n-1}</c>).</summary>
    public int NLayers { get; }
    /// <summary>The model adds learned position embeddings (has <c>hook_pos_embed</c>).</summary>
    public bool HasPosEmbed { get; }
    /// <summary>Attention and MLP read the same residual (GPT-NeoX <c>use_parallel_residual</c>): no <c>hook_resid_mid</c>.</summary>
    public bool ParallelAttnMlp { get; }
    /// <summary>The model uses rotary position embeddings (has <c>attn.hook_rot_q</c>/<c>hook_rot_k</c>).</summary>
    public bool Rotary { get; }
    /// <summary>The family's Hugging Face module names, accepted as hook aliases.</summary>
    public HfModuleNames Hf { get; }
    /// <summary>Norms after the attention and the MLP (Gemma 2/3): has <c>ln1_post.*</c> and <c>ln2_post.*</c>.</summary>
    public bool PostNorms { get; }
    /// <summary>Gated MLP: has <c>mlp.hook_pre_linear</c>.</summary>
    public bool GatedMlp { get; }
    /// <summary>A LayerNorm on the token embeddings (BLOOM): has <c>embed.ln.hook_scale</c> and <c>embed.ln.hook_normalized</c>.</summary>
    public bool PostEmbeddingLn { get; }

    /// <summary>Token embedding output [batch, pos, d_model] (facebook/opt-350m: word_embed_proj_dim wide, before project_in).</summary>
    public const string Embed = "hook_embed";
    /// <summary>Position embedding output [batch, pos, d_model] (models with learned positions only).</summary>
    public const string PosEmbed = "hook_pos_embed";
    /// <summary>BLOOM's embedding LayerNorm (<c>word_embeddings_layernorm</c>, TransformerLens's <c>post_embedding_ln</c>
    /// <c>embed.ln</c>): its scale √(var + eps) [batch, pos, 1], float32, as TransformerLens's <c>embed.ln.hook_scale</c>.</summary>
    public const string EmbedLnScale = "embed.ln.hook_scale";
    /// <summary>BLOOM's embedding LayerNorm's output [batch, pos, d_model], weight and bias included, as TransformerLens's
    /// <c>embed.ln.hook_normalized</c> (its LayerNorm fires hook_normalized after them; no weight processing folds this
    /// norm): the same values as <see cref="Embed"/>, which fires next.</summary>
    public const string EmbedLnNormalized = "embed.ln.hook_normalized";
    /// <summary>Final layer norm output [batch, pos, d_model], the unembedding's input (facebook/opt-350m: project_out's
    /// output, word_embed_proj_dim wide).</summary>
    public const string LnFinal = "ln_final.hook_normalized";
    /// <summary>Final norm's scale [batch, pos, 1] (TransformerLens <c>ln_final.hook_scale</c>); absent where the model has no
    /// final norm (a post-norm OPT, facebook/opt-350m, whose <see cref="LnFinal"/> is project_out's output).</summary>
    public const string LnFinalScale = "ln_final.hook_scale";

    /// <summary>Experts of each mixture-of-experts MLP (Mixtral, Qwen-MoE), 0 for a dense MLP.</summary>
    public int NumExperts { get; }
    /// <summary>The mixture of experts has a shared expert (Qwen2-MoE; DeepSeek-V3's <c>shared_experts</c>).</summary>
    public bool SharedExpert { get; }
    /// <summary>The shared expert's output is scaled by a sigmoid gate (<c>mlp.hook_shared_expert_gate</c>: Qwen2-MoE; not DeepSeek-V3).</summary>
    public bool SharedExpertGate { get; }
    /// <summary>The first block whose MLP is a mixture of experts (DeepSeek <c>first_k_dense_replace</c>, or after Qwen-MoE's
    /// dense <c>mlp_only_layers</c>); 0 otherwise.</summary>
    public int FirstMoeLayer { get; }

    /// <summary>True when block <paramref name="layer"/>'s MLP is a mixture of experts (has <c>mlp.hook_expert_weights</c>).</summary>
    public bool IsMoeLayer(int layer) => layer >= 0 && layer < NLayers && Blocks[layer].Experts.Length > 0;

    internal HookPoints(int nLayers, bool hasPosEmbed, bool parallelAttnMlp, bool rotary, HfModuleNames hf, bool gatedMlp = false,
        int numExperts = 0, bool sharedExpert = false, bool[]? denseMlpLayers = null, bool sharedExpertGate = true, bool qLatent = false, bool kvLatent = false, bool postNorms = false, bool finalNorm = true,
        bool postEmbeddingLn = false)
    {
        PostEmbeddingLn = postEmbeddingLn;
        bool Dense(int i) => denseMlpLayers is { } d && d[i];
        FirstMoeLayer = numExperts > 0 ? Enumerable.Range(0, nLayers).FirstOrDefault(i => !Dense(i), nLayers) : 0;
        SharedExpertGate = sharedExpertGate;
        PostNorms = postNorms;
        GatedMlp = gatedMlp;
        NumExperts = numExperts;
        SharedExpert = sharedExpert;
        NLayers = nLayers;
        HasPosEmbed = hasPosEmbed;
        ParallelAttnMlp = parallelAttnMlp;
        Rotary = rotary;
        Hf = hf;
        Blocks = Enumerable.Range(0, nLayers).Select(i => new BlockHookNames(i, Dense(i) ? 0 : numExperts)).ToArray();
        var names = new List<string>();
        _layer = new Dictionary<string, int>(StringComparer.Ordinal);
        void Add(string n, int layer) { names.Add(n); _layer[n] = layer; }
        if (postEmbeddingLn) { Add(EmbedLnScale, -1); Add(EmbedLnNormalized, -1); }
        Add(Embed, -1);
        if (hasPosEmbed) Add(PosEmbed, -1);
        for (int i = 0; i < nLayers; i++)
        {
            var b = Blocks[i];
            Add(b.ResidPre, i);
            Add(b.AttnIn, i);
            Add(b.QInput, i); Add(b.KInput, i); Add(b.VInput, i);
            Add(b.Ln1Scale, i);
            Add(b.Ln1, i);
            if (qLatent) Add(b.QLatent, i);
            if (kvLatent) Add(b.KvLatent, i);
            Add(b.Q, i); Add(b.K, i); Add(b.V, i);
            if (rotary) { Add(b.RotQ, i); Add(b.RotK, i); }
            Add(b.AttnScores, i);
            Add(b.Pattern, i);
            Add(b.Z, i);
            Add(b.Result, i);
            if (postNorms) { Add(b.Ln1PostScale, i); Add(b.Ln1Post, i); }
            Add(b.AttnOut, i);
            if (!parallelAttnMlp) Add(b.ResidMid, i);
            Add(b.MlpIn, i);
            Add(b.Ln2Scale, i);
            Add(b.Ln2, i);
            if (b.Experts.Length > 0)
            {
                Add(b.ExpertWeights, i);
                Add(b.ExpertIndices, i);
                for (int e = 0; e < b.Experts.Length; e++)
                {
                    var (gate, pre, post) = b.Experts[e];
                    Add(gate, i); Add(pre, i); Add(post, i);
                    foreach (var n in new[] { gate, pre, post }) _routing[n] = (b.ExpertIndices, e);
                }
                if (sharedExpert)
                {
                    Add(b.SharedExpert.Gate, i); Add(b.SharedExpert.Pre, i); Add(b.SharedExpert.Post, i);
                    if (sharedExpertGate) Add(b.SharedExpertGate, i);
                }
            }
            else
            {
                Add(b.MlpPre, i);
                if (gatedMlp) Add(b.MlpPreLinear, i);
                Add(b.MlpPost, i);
            }
            if (postNorms) { Add(b.Ln2PostScale, i); Add(b.Ln2Post, i); }
            Add(b.MlpOut, i);
            Add(b.ResidPost, i);
        }
        if (finalNorm) Add(LnFinalScale, nLayers);
        Add(LnFinal, nLayers);
        Names = names;
        DefaultNames = names.Where(n => !IsOptIn(n)).ToList();
        _set = new HashSet<string>(names, StringComparer.Ordinal);
    }

    /// <summary>For an expert's hook (<c>blocks.{i}.mlp.experts.{e}.hook_gate/hook_pre/hook_post</c>): the layer's
    /// <c>mlp.hook_expert_indices</c>, whose rows holding <c>e</c> are the tokens routed to the expert, and <c>e</c>; null for
    /// every other hook (the shared expert's included: every token goes through it).</summary>
    internal (string IndicesHook, int Expert)? ExpertRouting(string hookName) =>
        _routing.TryGetValue(hookName, out var r) ? r : null;

    /// <summary>True when <paramref name="name"/> is one of this model's TransformerLens hook names (aliases excluded).</summary>
    public bool Contains(string name) => _set.Contains(name);

    /// <summary>The block a hook belongs to: -1 for the embeddings, <see cref="NLayers"/> for <c>ln_final</c>.</summary>
    public int LayerOf(string hookName) =>
        _layer.TryGetValue(hookName, out int l) ? l : _layer[Resolve(hookName)];

    /// <summary>
    /// The smallest <c>stopAtLayer</c> that still fires every hook in <paramref name="hookNames"/>,
    /// or null when one of them needs the full model (<c>ln_final</c>).
    /// </summary>
    public int? StopAtLayerFor(IEnumerable<string> hookNames)
    {
        int max = -1;
        foreach (var n in hookNames) max = Math.Max(max, LayerOf(n));
        return max >= NLayers ? null : max + 1;
    }

    /// <summary>
    /// Parses a hook list as the CLI takes it: <c>all</c> (<see cref="DefaultNames"/>, TransformerLens's default set), or names and aliases separated by commas,
    /// each optionally suffixed <c>:in</c> or <c>:out</c>. Returns TransformerLens names without duplicates.
    /// </summary>
    public IReadOnlyList<string> Select(string spec)
    {
        if (string.IsNullOrWhiteSpace(spec)) throw new SaeSharpException("empty hook list: give 'all' or hook names separated by commas");
        if (spec.Trim() == "all") return DefaultNames;
        var result = new List<string>();
        foreach (var n in spec.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
        {
            var r = Resolve(n);
            if (!result.Contains(r)) result.Add(r);
        }
        return result;
    }

    /// <summary>
    /// Maps a hook name or alias to a TransformerLens hook name. A hook name is returned as is; a module path
    /// (TransformerLens <c>blocks.1.mlp</c> or Hugging Face <c>gpt_neox.layers.1.mlp</c>, <c>transformer.h.1.attn</c>,
    /// <c>h.1</c>) is mapped to the hook holding that module's output or, with <see cref="HookKind.In"/>, its input
    /// (input of an MLP = <c>ln2.hook_normalized</c>; of a block = <c>hook_resid_pre</c>). A suffix <c>:in</c> or
    /// <c>:out</c> on the name overrides <paramref name="kind"/>. TransformerLens 3's bridge name
    /// <c>blocks.{i}.mlp.hook_in</c> (the MLP's input) is <c>blocks.{i}.ln2.hook_normalized</c>, the same tensor in every family.
    /// </summary>
    public string Resolve(string name, HookKind kind = HookKind.Out)
    {
        if (name is null) throw new SaeSharpException("hook name is null");
        name = name.Trim();
        if (_set.Contains(name)) return name;
        if (name.EndsWith(":in", StringComparison.Ordinal)) { kind = HookKind.In; name = name[..^3]; }
        else if (name.EndsWith(":out", StringComparison.Ordinal)) { kind = HookKind.Out; name = name[..^4]; }
        if (_set.Contains(name)) return name;
        var r = TryResolveAlias(name, kind, out string? why);
        if (r is not null) return r;
        if (NumExperts > 0 && DenseMlpHook.Match(name) is { Success: true } dense
            && int.TryParse(dense.Groups[1].Value, System.Globalization.CultureInfo.InvariantCulture, out int denseLayer) && IsMoeLayer(denseLayer))
            throw new SaeSharpException($"hook '{name}': the MLP of this model is a mixture of {NumExperts} experts with no single mlp.{dense.Groups[2].Value}; " +
                $"its hooks are blocks.{dense.Groups[1].Value}.mlp.hook_expert_weights, mlp.hook_expert_indices and " +
                $"mlp.experts.{{0..{NumExperts - 1}}}.hook_gate/hook_pre/hook_post (each expert's), " +
                (SharedExpert ? "mlp.shared_expert.hook_gate/hook_pre/hook_post, " + (SharedExpertGate ? "mlp.hook_shared_expert_gate, " : "") : "") +
                "and hook_mlp_out for the block's MLP output");
        throw new SaeSharpException(why ?? $"unknown hook '{name}'{NameSuggestion.For(name, Names)}. Valid hooks: {ValidNamesSummary()}; " +
            $"aliases: module paths such as blocks.0.mlp, {Hf.Prefix}.{Hf.Blocks}.0.{Hf.Mlp} (output, or input with kind In / ':in')");
    }

    /// <summary>
    /// TransformerLens <c>utils.get_act_name(name, layer, layer_type)</c>, the same mapping: <c>("resid_post", 1)</c> →
    /// <c>blocks.1.hook_resid_post</c>; <c>("q", 0)</c> → <c>blocks.0.attn.hook_q</c> (also k, v, z, rot_q, rot_k, result,
    /// pattern, attn_scores); <c>("pre", 2)</c> → <c>blocks.2.mlp.hook_pre</c> (also post, mid, pre_linear);
    /// <c>("normalized", 3, "ln2")</c> → <c>blocks.3.ln2.hook_normalized</c>; <c>"embed"</c> → <c>hook_embed</c>;
    /// <c>("q_input", 1)</c> → <c>blocks.1.hook_q_input</c> (also attn_in, k_input, v_input, mlp_in);
    /// <c>"normalized"</c> / <c>"scale"</c> without a layer → <c>ln_final.hook_normalized</c> / <c>ln_final.hook_scale</c>.
    /// Aliases: attn → pattern, attn_logits → attn_scores, key/query/value → k/q/v, mlp_pre/mlp_mid/mlp_post →
    /// pre/mid/post; layer types a → attn, m → mlp, b/block/blocks → none, attention → attn. A compact name
    /// <c>"k6"</c>, <c>"pre5"</c>, <c>"scale4ln1"</c> carries its layer (and layer type); a full name (with a dot, or
    /// starting with <c>hook_</c>) without a layer is returned as is. The name is not checked against a model.
    /// </summary>
    public static string ActName(string name, int? layer = null, string? layerType = null) =>
        ActNameCore(name, layer?.ToString(System.Globalization.CultureInfo.InvariantCulture), layerType);

    private static readonly System.Text.RegularExpressions.Regex DenseMlpHook = new(@"^blocks\.([0-9]+)\.mlp\.(hook_pre|hook_post|hook_pre_linear|hook_mid)$");

    private static readonly System.Text.RegularExpressions.Regex CompactActName = new("^([a-z]+)([0-9]+)([a-z]?.*)", System.Text.RegularExpressions.RegexOptions.Singleline);

    private static string ActNameCore(string name, string? layer, string? layerType)
    {
        ArgumentNullException.ThrowIfNull(name);
        if ((name.Contains('.', StringComparison.Ordinal) || name.StartsWith("hook_", StringComparison.Ordinal)) && layer is null && layerType is null)
            return name;
        var m = CompactActName.Match(name);
        if (m.Success) (name, layer, layerType) = (m.Groups[1].Value, m.Groups[2].Value, m.Groups[3].Value);
        name = name switch
        {
            "attn" => "pattern", "attn_logits" => "attn_scores", "key" => "k", "query" => "q", "value" => "v",
            "mlp_pre" => "pre", "mlp_mid" => "mid", "mlp_post" => "post", _ => name,
        };
        if (name is "k" or "v" or "q" or "z" or "rot_k" or "rot_q" or "result" or "pattern" or "attn_scores") layerType = "attn";
        else if (name is "pre" or "post" or "mid" or "pre_linear") layerType = "mlp";
        else layerType = layerType switch { "a" or "attention" => "attn", "m" => "mlp", "b" or "block" or "blocks" => "", _ => layerType };
        string full = (layer is null ? "" : $"blocks.{layer}.") + (string.IsNullOrEmpty(layerType) ? "" : layerType + ".") + "hook_" + name;
        return name is "scale" or "normalized" && layer is null ? "ln_final." + full : full;
    }

    /// <summary>The valid hook names in one line, per-block names written once with <c>{0..L-1}</c>.</summary>
    public string ValidNamesSummary()
    {
        var parts = PostEmbeddingLn ? new List<string> { EmbedLnScale, EmbedLnNormalized, Embed } : new List<string> { Embed };
        if (HasPosEmbed) parts.Add(PosEmbed);
        if (NLayers > 0)
        {
            string range = NLayers == 1 ? "0" : $"{{0..{NLayers - 1}}}";
            string experts = NumExperts == 1 ? "0" : $"{{0..{NumExperts - 1}}}";
            // Per-block names from block 0, and (DeepSeek, Qwen-MoE with dense layers) the experts' from the first MoE block.
            var perBlock = Names.Where(n => _layer[n] == 0).ToList();
            if (FirstMoeLayer > 0 && FirstMoeLayer < NLayers)
                perBlock.AddRange(Names.Where(n => _layer[n] == FirstMoeLayer && n.Contains(".mlp.", StringComparison.Ordinal))
                    .Select(n => "blocks.0" + n[$"blocks.{FirstMoeLayer}".Length..]).Where(n => !perBlock.Contains(n)));
            foreach (var n in perBlock)
            {
                // Each expert's hooks once, as mlp.experts.{0..E-1}.hook_*.
                if (n.StartsWith("blocks.0.mlp.experts.", StringComparison.Ordinal))
                {
                    if (!n.StartsWith("blocks.0.mlp.experts.0.", StringComparison.Ordinal)) continue;
                    parts.Add("blocks." + range + ".mlp.experts." + experts + n["blocks.0.mlp.experts.0".Length..]);
                }
                else parts.Add("blocks." + range + n["blocks.0".Length..]);
            }
        }
        parts.Add(LnFinal);
        return string.Join(", ", parts);
    }

    private string? TryResolveAlias(string name, HookKind kind, out string? why)
    {
        why = null;
        string n = name;
        foreach (var prefix in Hf.OtherPrefixes.Append(Hf.Prefix))
            if (n.StartsWith(prefix + ".", StringComparison.Ordinal))
            {
                n = n[(prefix.Length + 1)..];
                break;
            }
        string lastResid = NLayers > 0 ? Blocks[NLayers - 1].ResidPost : Embed;

        // Whole-model modules.
        (string? In, string? Out)? top = n switch
        {
            "embed" => (null, Embed),
            "pos_embed" => HasPosEmbed ? (null, PosEmbed) : null,
            "ln_final" => (lastResid, LnFinal),
            "unembed" => (LnFinal, null),
            _ => null,
        };
        if (top is null && n == Hf.Embed) top = (null, Embed);
        if (top is null && Hf.PosEmbed is not null && n == Hf.PosEmbed) top = (null, PosEmbed);
        if (top is null && n == Hf.FinalLn) top = (lastResid, LnFinal);
        if (top is { } t) return Pick(name, kind, t.In, t.Out, out why);

        // Block modules: blocks.{i}[.sub], {Blocks}.{i}[.sub].
        string? rest = null;
        bool tl = false;
        if (n.StartsWith("blocks.", StringComparison.Ordinal)) { rest = n["blocks.".Length..]; tl = true; }
        else if (n.StartsWith(Hf.Blocks + ".", StringComparison.Ordinal)) rest = n[(Hf.Blocks.Length + 1)..];
        if (rest is null) return null;
        int dot = rest.IndexOf('.');
        string idx = dot < 0 ? rest : rest[..dot];
        string sub = dot < 0 ? "" : rest[(dot + 1)..];
        if (!int.TryParse(idx, System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out int i)) return null;
        if (i >= NLayers)
        {
            why = $"hook '{name}': layer {i} does not exist (the model has {NLayers} layers, 0..{NLayers - 1})";
            return null;
        }
        var b = Blocks[i];
        // OLMo-2 (post-norms only): attention reads resid_pre and the MLP resid_mid; ln1/ln2 normalise their outputs.
        bool post = Hf.PostNormOnly;
        string attnIn = post ? b.ResidPre : b.Ln1, mlpIn = post ? b.ResidMid : b.Ln2;
        string ln1In = post ? b.AttnOut : b.ResidPre;
        string ln2In = post ? b.MlpOut : ParallelAttnMlp ? b.ResidPre : b.ResidMid;
        (string? In, string? Out)? m = null;
        if (tl)
        {
            m = sub switch
            {
                "" => (b.ResidPre, b.ResidPost),
                "attn" => (attnIn, b.AttnOut),
                "mlp" => (mlpIn, b.MlpOut),
                // TransformerLens 3's TransformerBridge names the MLP's input (ln2's full output) mlp.hook_in.
                "mlp.hook_in" => (mlpIn, mlpIn),
                // ...and its output mlp.hook_out (circuit-tracer's ReplacementMLP hooks too, the mwhanna Qwen 3 transcoder
                // sets' feature_output_hook): hook_mlp_out, unless a post-MLP norm (Gemma 2) comes between them.
                "mlp.hook_out" when Hf.PostMlpNorm is null => (b.MlpOut, b.MlpOut),
                "ln1" => (ln1In, b.Ln1),
                "ln2" => (ln2In, b.Ln2),
                _ => null,
            };
        }
        else
        {
            if (sub == "") m = (b.ResidPre, b.ResidPost);
            // With post-norms (Gemma 2) the attention / MLP module outputs precede the norm and have no hook point.
            string? attnOut = Hf.PostAttnNorm is null ? b.AttnOut : null;
            string? mlpOut = Hf.PostMlpNorm is null ? b.MlpOut : null;
            if (sub == Hf.Attn) m = (attnIn, attnOut);
            else if (sub == Hf.Mlp || (NumExperts > 0 && sub == "mlp")) m = (mlpIn, mlpOut);
            else if (sub == Hf.Ln1) m = (ln1In, b.Ln1);
            else if (sub == Hf.Ln2) m = (ln2In, b.Ln2);
            else if (sub == Hf.PostAttnNorm) m = (null, b.AttnOut);
            else if (sub == Hf.PostMlpNorm) m = (null, b.MlpOut);
            else if (_set.Contains(b.KvLatent) && sub is "self_attn.kv_a_layernorm") m = (null, b.KvLatent);   // DeepSeek-V3's latents
            else if (_set.Contains(b.KvLatent) && sub is "self_attn.kv_b_proj") m = (b.KvLatent, null);
            else if (_set.Contains(b.QLatent) && sub is "self_attn.q_a_layernorm") m = (null, b.QLatent);
            else if (_set.Contains(b.QLatent) && sub is "self_attn.q_b_proj") m = (b.QLatent, b.Q);
            else if (sub == Hf.Qkv) m = (attnIn, Hf.KProj is null ? null : b.Q);
            else if (sub == Hf.KProj) m = (attnIn, b.K);
            else if (sub == Hf.VProj) m = (attnIn, b.V);
            else if (sub == Hf.AttnProj) m = (b.Z, attnOut);
            else if (b.Experts.Length > 0) m = sub == "" ? m : ExpertModule(b, sub);  // no dense MLP modules
            else if (sub == Hf.MlpIn) m = (mlpIn, b.MlpPre);
            else if (sub == Hf.MlpUp) m = (mlpIn, b.MlpPreLinear);
            else if (sub == Hf.Act) m = (b.MlpPre, GatedMlp ? null : b.MlpPost);
            else if (sub == Hf.MlpOut) m = (b.MlpPost, mlpOut);
        }
        if (m is null && tl && sub == "mlp.hook_out")
            why = $"hook '{name}': the MLP's output before {Hf.Blocks}.{i}.{Hf.PostMlpNorm} has no hook point (hook_mlp_out is after that norm)";
        return m is { } mm ? Pick(name, kind, mm.In, mm.Out, out why) : null;
    }

    private static readonly System.Text.RegularExpressions.Regex ExpertModulePath =
        new(@"^(?:block_sparse_moe|mlp)\.experts\.([0-9]+)\.(w1|w2|w3|gate_proj|up_proj|down_proj|act_fn)$");

    /// <summary>An expert's modules as its hooks (input and output): Mixtral's <c>block_sparse_moe.experts.{e}.w1/w3/w2/act_fn</c>,
    /// Qwen-MoE's <c>mlp.experts.{e}.gate_proj/up_proj/down_proj/act_fn</c> and (Qwen2-MoE) <c>mlp.shared_expert.*</c>.</summary>
    private (string? In, string? Out)? ExpertModule(BlockHookNames b, string sub)
    {
        // The router reads ln2's output; its logits (Mixtral, Qwen-MoE) or scores and indices (gpt-oss) have no hook.
        if (Hf.Router is { } router ? sub == router : sub is "block_sparse_moe.gate" or "mlp.gate") return (b.Ln2, null);
        if (SharedExpert)
        {
            var (sg, sp, spost) = b.SharedExpert;
            (string? In, string? Out)? shared = sub switch
            {
                "mlp.shared_expert" or "mlp.shared_expert_gate" or "mlp.shared_experts" => (b.Ln2, null),   // outputs before the sigmoid scaling / the sum: no hook
                "mlp.shared_expert.gate_proj" or "mlp.shared_experts.gate_proj" => (b.Ln2, sg),
                "mlp.shared_expert.up_proj" or "mlp.shared_experts.up_proj" => (b.Ln2, sp),
                "mlp.shared_expert.act_fn" or "mlp.shared_experts.act_fn" => (sg, null),
                "mlp.shared_expert.down_proj" or "mlp.shared_experts.down_proj" => (spost, null),
                _ => null,
            };
            if (shared is not null) return shared;
        }
        var m = ExpertModulePath.Match(sub);
        if (!m.Success || !int.TryParse(m.Groups[1].Value, System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out int e)
            || e >= b.Experts.Length) return null;
        var (gate, pre, post) = b.Experts[e];
        return m.Groups[2].Value switch
        {
            "w1" or "gate_proj" => (b.Ln2, gate),
            "w3" or "up_proj" => (b.Ln2, pre),
            "act_fn" => (gate, null),
            _ => (post, null),  // w2 / down_proj: its output is scaled by the routing weight and summed over experts; no hook holds it
        };
    }

    private static string? Pick(string name, HookKind kind, string? input, string? output, out string? why)
    {
        why = null;
        var r = kind == HookKind.In ? input : output;
        if (r is null)
            why = $"module '{name}' has no hook point for its {(kind == HookKind.In ? "input" : "output")}" +
                  (kind == HookKind.In ? $" (its output is '{output}')" : input is null ? "" : $" (its input is '{input}')");
        return r;
    }
}
