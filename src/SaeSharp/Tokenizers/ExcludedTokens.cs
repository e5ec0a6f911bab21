using System.Globalization;
using System.Text.Json;
using System.Text.Json.Nodes;

namespace SaeSharp.Tokenizers;

/// <summary>
/// SAELens's <c>exclude_special_tokens: bool | list[int]</c>: <c>true</c> drops the positions of the tokenizer's special
/// tokens (<see cref="SpecialTokenIds"/>), a list drops the positions of exactly those ids (SAELens
/// adds no BOS, EOS or pad to a list), <c>false</c> or an empty list drops none.
/// </summary>
public static class ExcludedTokens
{
    /// <summary>
    /// The ids SAELens <c>exclude_special_tokens=True</c> drops (<c>sae_lens.util.get_special_token_ids</c>: every
    /// <c>*_token_id</c> and <c>special_tokens_map</c> entry of the Hugging Face tokenizer): BOS, EOS, PAD, UNK and
    /// <see cref="ITextTokenizer.NamedSpecialTokenIds"/>. Special added tokens the config files do not name
    /// (Llama 3's reserved tokens, Gemma's <c>&lt;start_of_turn&gt;</c>) are kept, as in SAELens.
    /// </summary>
    public static IReadOnlyCollection<long> SpecialTokenIds(ITextTokenizer tokenizer)
    {
        var ids = new SortedSet<long>();
        foreach (var id in new[] { tokenizer.BosTokenId, tokenizer.EosTokenId, tokenizer.PadTokenId, tokenizer.UnkTokenId })
            if (id is int i) ids.Add(i);
        foreach (int id in tokenizer.NamedSpecialTokenIds) ids.Add(id);
        return ids;
    }

    /// <summary>A JSON list of token ids; throws "<paramref name="where"/> VALUE: expected ..." for anything else.</summary>
    public static long[] FromJson(JsonNode? node, string where)
    {
        if (node is not JsonArray list) throw Bad(where, node?.ToJsonString() ?? "null");
        var ids = new long[list.Count];
        for (int i = 0; i < list.Count; i++)
        {
            if (list[i] is not JsonValue v || v.GetValueKind() != JsonValueKind.Number || !v.TryGetValue(out long id) || id < 0)
                throw Bad(where, list.ToJsonString());
            ids[i] = id;
        }
        return ids;
    }

    /// <summary>Comma-separated token ids, e.g. <c>0,50256</c> (<c>--exclude-token-ids</c>).</summary>
    public static long[] Parse(string text, string where)
    {
        ArgumentNullException.ThrowIfNull(text);
        var parts = text.Split(',', StringSplitOptions.TrimEntries);
        var ids = new long[parts.Length];
        for (int i = 0; i < parts.Length; i++)
            if (!long.TryParse(parts[i], NumberStyles.None, CultureInfo.InvariantCulture, out ids[i]))
                throw new SaeSharpException($"{where} {text}: expected comma-separated non-negative token ids, e.g. 0,50256");
        return ids;
    }

    /// <summary>The field as SAELens writes it: <c>true</c>/<c>false</c>, the list of ids, or null when neither is set.</summary>
    public static JsonElement? ToJson(bool? special, IReadOnlyList<long>? ids) =>
        ids is not null ? JsonSerializer.SerializeToElement(ids) : special is bool b ? JsonSerializer.SerializeToElement(b) : null;

    /// <summary>The ids whose positions are dropped: <paramref name="ids"/> as given, else the special tokens when
    /// <paramref name="special"/> is true, else null. A listed id the tokenizer's vocabulary does not hold is an error
    /// naming <paramref name="origin"/>, where the list came from.</summary>
    public static IReadOnlyCollection<long>? Resolve(bool? special, IReadOnlyList<long>? ids, ITextTokenizer tokenizer,
        string origin = "exclude_special_tokens")
    {
        ArgumentNullException.ThrowIfNull(tokenizer);
        if (ids is null) return special == true ? SpecialTokenIds(tokenizer) : null;
        foreach (long id in ids)
            if (id >= tokenizer.VocabSize)
                throw new SaeSharpException($"{origin}: token id {id} is beyond the tokenizer's vocabulary (ids 0 to {tokenizer.VocabSize - 1})");
        return ids.Distinct().ToArray();
    }

    private static SaeSharpException Bad(string where, string value) =>
        new($"{where} {value}: expected true, false or a list of non-negative token ids, e.g. [0, 50256]");
}
