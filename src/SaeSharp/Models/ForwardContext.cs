using SaeSharp.Hooks;
using static TorchSharp.torch;

namespace SaeSharp.Models;

/// <summary>What every block needs for one forward pass: hooks, attention mask, positions, KV cache.</summary>
internal sealed class ForwardContext
{
    public required HookRunner Hooks { get; init; }
    /// <summary>[batch, 1, query, key] bool: true where the query may attend to the key (causal and not padding).</summary>
    public required Tensor Allowed { get; init; }
    /// <summary>[batch, query] int64 position of each new token (padding-aware, as HF computes from the attention mask).</summary>
    public required Tensor Positions { get; init; }
    public KvCache? Kv { get; init; }
    /// <summary>Rotary cos / sin [batch, pos, 1, rotary_dim] of this pass (rotary models), set by the embedding step.</summary>
    public Tensor? RotaryCos { get; set; }
    public Tensor? RotarySin { get; set; }
    /// <summary>Rotary cos / sin of the sliding-window layers when their frequencies differ (Gemma 3).</summary>
    public (Tensor Cos, Tensor Sin)? LocalRotary { get; set; }
    /// <summary>While a block's attention runs with its per-head inputs edited (hook_attn_in, hook_q/k/v_input): ln1 of each
    /// head's query, key and value input [batch, pos, head, d_model], which the attention projects head by head instead of
    /// its own input (<see cref="SplitAttentionInputs"/>); null otherwise.</summary>
    public (Tensor Q, Tensor K, Tensor V)? SplitInputs { get; set; }
}
