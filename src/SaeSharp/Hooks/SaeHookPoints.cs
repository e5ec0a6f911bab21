namespace SaeSharp.Hooks;

/// <summary>
/// The hook points of an SAE attached at a model hook, named as in SAELens's <c>HookedSAETransformer</c>:
/// <c>&lt;hook&gt;.hook_sae_input</c> [batch, pos, d_in], <c>.hook_sae_acts_pre</c> and <c>.hook_sae_acts_post</c>
/// [batch, pos, d_sae], <c>.hook_sae_recons</c>, <c>.hook_sae_error</c> (only with the error term) and
/// <c>.hook_sae_output</c> [batch, pos, d_in]. They fire in this order, are cached like model hooks, and a hook
/// function on one of them edits what the SAE computes next.
/// </summary>
public static class SaeHookPoints
{
    /// <summary>Suffix of the SAE's input [batch, pos, d_in].</summary>
    public const string Input = "hook_sae_input";
    /// <summary>Suffix of the latents before the activation function [batch, pos, d_sae].</summary>
    public const string ActsPre = "hook_sae_acts_pre";
    /// <summary>Suffix of the latents after the activation function [batch, pos, d_sae].</summary>
    public const string ActsPost = "hook_sae_acts_post";
    /// <summary>Suffix of the reconstruction [batch, pos, d_in].</summary>
    public const string Recons = "hook_sae_recons";
    /// <summary>Suffix of the error term, input − reconstruction (only when the error term is used).</summary>
    public const string Error = "hook_sae_error";
    /// <summary>Suffix of what replaces the hooked activation: the reconstruction, plus the error term when used.</summary>
    public const string Output = "hook_sae_output";

    /// <summary>The suffixes in firing order.</summary>
    public static IReadOnlyList<string> Suffixes { get; } = [Input, ActsPre, ActsPost, Recons, Error, Output];

    /// <summary><c>blocks.1.hook_resid_pre</c> + <c>hook_sae_acts_post</c> → <c>blocks.1.hook_resid_pre.hook_sae_acts_post</c>.</summary>
    public static string Name(string hook, string suffix) => hook + "." + suffix;

    /// <summary>Splits an SAE hook name into the model hook (as written, maybe an alias) and the suffix.</summary>
    public static bool TrySplit(string name, out string hook, out string suffix)
    {
        foreach (var s in Suffixes)
        {
            if (name.Length > s.Length + 1 && name.EndsWith("." + s, StringComparison.Ordinal))
            {
                hook = name[..^(s.Length + 1)];
                suffix = s;
                return true;
            }
        }
        hook = suffix = "";
        return false;
    }
}
