using static TorchSharp.torch;

namespace SaeSharp.Models;

/// <summary>
/// HF <c>Phi3ForCausalLM</c> (microsoft/Phi-3-mini-4k-instruct, Phi-3-medium, Phi-4-mini): a Llama-layout decoder whose
/// checkpoint fuses q, k and v into <c>self_attn.qkv_proj</c> (rows [q; k; v]: num_attention_heads·head_dim, then
/// num_key_value_heads·head_dim twice) and gate and up into <c>mlp.gate_up_proj</c> (rows [gate; up], HF
/// <c>chunk(2)</c>). The fused weights are split on reading into the Llama names (<c>q_proj</c>, <c>k_proj</c>,
/// <c>v_proj</c>, <c>gate_proj</c>, <c>up_proj</c>), so the model is a <see cref="LlamaFamilyModel"/> with hook_q/k/v,
/// hook_z, hook_pre (gate) and hook_pre_linear (up) of its own.
/// </summary>
internal static class Phi3
{
    private const string Qkv = ".self_attn.qkv_proj.weight", GateUp = ".mlp.gate_up_proj.weight";

    /// <summary>Replaces every layer's <c>qkv_proj</c> and <c>gate_up_proj</c> in <paramref name="ckpt"/> by their row
    /// blocks under the Llama names, read lazily (each part a copy of its rows); a fused weight whose rows do not add up
    /// to <paramref name="s"/>'s sizes is refused naming its file.</summary>
    public static void SplitFusedOnRead(Checkpoint ckpt, DecoderSettings s)
    {
        long q = (long)s.NHead * s.HeadDim, kv = (long)s.NKvHead * s.HeadDim, m = s.Intermediate;
        foreach (var key in ckpt.Keys.Where(k => k.EndsWith(Qkv, StringComparison.Ordinal) || k.EndsWith(GateUp, StringComparison.Ordinal)).ToList())
        {
            bool attn = key.EndsWith(Qkv, StringComparison.Ordinal);
            string stem = key[..^(attn ? Qkv : GateUp).Length];
            (string Name, long Rows)[] parts = attn
                ? [(".self_attn.q_proj.weight", q), (".self_attn.k_proj.weight", kv), (".self_attn.v_proj.weight", kv)]
                : [(".mlp.gate_proj.weight", m), (".mlp.up_proj.weight", m)];
            var (file, shape) = ckpt.Info(key);
            long rows = parts.Sum(p => p.Rows);
            if (shape.Length != 2 || shape[0] != rows || shape[1] != s.Hidden)
                throw new SaeSharpException($"{file}: '{key}' has shape [{string.Join(", ", shape)}] but config.json implies [{rows}, {s.Hidden}] " +
                    (attn ? $"(num_attention_heads={s.NHead}, num_key_value_heads={s.NKvHead}, head_dim={s.HeadDim})" : $"(2 × intermediate_size={s.Intermediate})"));
            var read = ckpt.Reader(key);
            long offset = 0;
            foreach (var (name, n) in parts)
            {
                long start = offset;
                ckpt.Derive(stem + name, file, [n, shape[1]], [key], dtype =>
                {
                    using var full = read(dtype);
                    using var part = full.narrow(0, start, n);
                    return part.clone();
                });
                offset += n;
            }
        }
    }
}
