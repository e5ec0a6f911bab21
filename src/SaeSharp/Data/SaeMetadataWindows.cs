using System.Text.Json;
using System.Text.Json.Nodes;
using SaeSharp.Saes;

namespace SaeSharp.Data;

/// <summary>
/// The window fields SAELens's <c>LanguageModelSAETrainingRunner</c> writes into an SAE's cfg.json metadata
/// (<c>seqpos_slice</c>, <c>disable_concat_sequences</c>, <c>sequence_separator_token</c>), read and written in
/// <see cref="SaeMetadata.Extra"/> in SAELens's JSON form: <c>[1, null]</c>, <c>false</c>, <c>"bos"</c> / an id / null.
/// </summary>
public static class SaeMetadataWindows
{
    /// <summary>The metadata's <c>seqpos_slice</c>; null when absent (SAELens's <c>from_sae</c> then uses every position).
    /// A malformed value is an error naming it.</summary>
    public static Saes.SeqposSlice? SeqposSlice(this SaeMetadata metadata) => Saes.SeqposSlice.Of(metadata);

    /// <summary>The metadata's <c>disable_concat_sequences</c>; null when absent or not a boolean.</summary>
    public static bool? DisableConcatSequences(this SaeMetadata metadata) =>
        Get(metadata, "disable_concat_sequences", out var node) && node?.GetValueKind() is JsonValueKind.True or JsonValueKind.False ? node.GetValue<bool>() : null;

    /// <summary>The metadata's <c>sequence_separator_token</c> (<see cref="PretokenizeToken.None"/> for null); null when absent.</summary>
    public static PretokenizeToken? SequenceSeparatorToken(this SaeMetadata metadata) =>
        Get(metadata, "sequence_separator_token", out var node) ? PretokenizeToken.FromJson(node, "cfg.json metadata sequence_separator_token") : null;

    /// <summary>Writes the three fields as SAELens writes them (its defaults for the null arguments: <c>[null]</c>, false, "bos").</summary>
    public static void SetWindowFields(this SaeMetadata metadata, Saes.SeqposSlice? seqposSlice, bool? disableConcatSequences, PretokenizeToken? sequenceSeparatorToken)
    {
        ArgumentNullException.ThrowIfNull(metadata);
        var extra = metadata.Extra ??= [];
        extra["seqpos_slice"] = JsonSerializer.SerializeToElement((seqposSlice ?? Saes.SeqposSlice.All).ToJson());
        extra["disable_concat_sequences"] = JsonSerializer.SerializeToElement(disableConcatSequences ?? false);
        extra["sequence_separator_token"] = JsonSerializer.SerializeToElement((sequenceSeparatorToken ?? PretokenizeToken.Bos).ToJson());
    }

    /// <summary>
    /// Fills the metadata fields SAELens 6's training runner always records (<c>_set_sae_metadata</c> in
    /// llm_sae_training_runner.py) with the values it writes by default where <paramref name="metadata"/> has none (absent or
    /// null): <c>seqpos_slice</c> [null], <c>model_from_pretrained_kwargs</c> {}, <c>exclude_special_tokens</c> false,
    /// <c>disable_concat_sequences</c> false, <c>sequence_separator_token</c> "bos" (absent only: a null separator is
    /// SAELens's "none" and is kept). SAELens's evals spread the kwargs (<c>**model_from_pretrained_kwargs</c>), which
    /// fails on null. <c>sae convert --to saelens</c> writes its cfg.json so.
    /// </summary>
    public static void FillSaeLensDefaults(this SaeMetadata metadata)
    {
        ArgumentNullException.ThrowIfNull(metadata);
        metadata.ModelFromPretrainedKwargs ??= [];
        if (metadata.ExcludeSpecialTokens is null && metadata.ExcludeTokenIds is null) metadata.ExcludeSpecialTokens = false;
        metadata.SetWindowFields(metadata.SeqposSlice(), metadata.DisableConcatSequences(), metadata.SequenceSeparatorToken());
    }

    private static bool Get(SaeMetadata metadata, string key, out JsonNode? node)
    {
        ArgumentNullException.ThrowIfNull(metadata);
        node = null;
        if (metadata.Extra?.TryGetValue(key, out var v) != true) return false;
        node = v.ValueKind == JsonValueKind.Null ? null : JsonNode.Parse(v.GetRawText());
        return true;
    }
}
