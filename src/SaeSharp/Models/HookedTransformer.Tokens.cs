using SaeSharp.Tokenizers;
using static TorchSharp.torch;

namespace SaeSharp.Models;

/// <summary>Which end of a shorter text <see cref="HookedTransformer.ToTokens(IReadOnlyList{string}, bool, PaddingSide)"/>
/// pads (TransformerLens <c>padding_side</c>).</summary>
public enum PaddingSide
{
    /// <summary>Padding after the text (TransformerLens's default): positions of real tokens match an unpadded run.</summary>
    Right,
    /// <summary>Padding before the text: every text ends at the last position (as for generation).</summary>
    Left,
}

public abstract partial class HookedTransformer
{
    private ITextTokenizer? _tokenizer;

    /// <summary>The Hugging Face folder the model was loaded from (<see cref="ModelLoader.FromPretrained"/>), or null for
    /// a model built otherwise.</summary>
    public string? Folder { get; internal set; }

    /// <summary>Hugging Face's <c>model.generation_config</c> as far as stopping goes: the EOS ids of the folder's
    /// generation_config.json, else config.json (<see cref="Models.GenerationConfig.FromFolder"/>); none for a model built
    /// otherwise. Pass <see cref="StopTokenIds"/> as <see cref="GenerationOptions.EosTokenIds"/> to stop where Hugging
    /// Face's and TransformerLens's <c>generate</c> stop.</summary>
    public GenerationConfig GenerationConfig { get; internal set; } = GenerationConfig.None;

    /// <summary>The ids generation stops at: <see cref="GenerationConfig"/>'s EOS ids (where Hugging Face's <c>generate</c>
    /// stops), and the tokenizer's EOS when not among them (where TransformerLens's <c>generate(stop_at_eos=True)</c> stops);
    /// a model with no tokenizer stops at the former alone.</summary>
    public IReadOnlyList<long> StopTokenIds =>
        (_tokenizer ?? (MissingTokenizer() is null ? Tokenizer : null))?.EosTokenId is int t && !GenerationConfig.EosTokenIds.Contains(t)
            ? [.. GenerationConfig.EosTokenIds, t]
            : GenerationConfig.EosTokenIds;

    /// <summary>
    /// TransformerLens <c>model.tokenizer</c>: the tokenizer of the model's folder (<see cref="Tokenizers.Tokenizer.FromFolder"/>,
    /// read on first use), or the one set here (TransformerLens <c>set_tokenizer</c>). A model loaded from no folder, or
    /// from a folder without tokenizer files, has none: reading it is a <see cref="SaeSharpException"/> saying so.
    /// </summary>
    public ITextTokenizer Tokenizer
    {
        get
        {
            if (_tokenizer is not null) return _tokenizer;
            if (MissingTokenizer() is { } why)
                throw new SaeSharpException($"model '{Config.ModelName}' has no tokenizer: {why} (set model.Tokenizer = Tokenizer.FromFolder(dir), or pass token ids)");
            return _tokenizer = Tokenizers.Tokenizer.FromFolder(Folder!);
        }
        set => _tokenizer = value ?? throw new ArgumentNullException(nameof(value));
    }

    /// <summary>Why the model's folder gives no tokenizer, or null when it does.</summary>
    private string? MissingTokenizer()
    {
        if (Folder is null) return "it was not loaded from a folder";
        string json = Path.Combine(Folder, "tokenizer.json"), vocab = Path.Combine(Folder, "vocab.json"), merges = Path.Combine(Folder, "merges.txt");
        return !File.Exists(json) && !(File.Exists(vocab) && File.Exists(merges))
            ? $"{Folder} holds no tokenizer.json, nor vocab.json and merges.txt"
            : null;
    }

    /// <summary>
    /// TransformerLens <c>model.to_tokens(text, prepend_bos=True)</c>: the token ids [1, pos] int64 of
    /// <paramref name="text"/> on the model's <see cref="Device"/>, with the tokenizer's BOS first when
    /// <paramref name="prependBos"/> (<c>&lt;|endoftext|&gt;</c> for GPT-2, <c>&lt;s&gt;</c> for Llama, <c>&lt;bos&gt;</c> for
    /// Gemma: the BOS the folder's tokenizer files name). Special tokens written in the text are parsed as such.
    /// </summary>
    public Tensor ToTokens(string text, bool prependBos = true)
    {
        ArgumentNullException.ThrowIfNull(text);
        var ids = TokenIds(text, prependBos);
        using var scope = NewDisposeScope();
        return tensor(ids, dtype: ScalarType.Int64).unsqueeze(0).to(Device).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// TransformerLens <c>model.to_tokens([text, ...], prepend_bos=True, padding_side=...)</c>: a batch [n, pos] int64,
    /// shorter texts padded with the tokenizer's PAD (else its EOS, else BOS, as TransformerLens sets <c>pad_token</c>) at
    /// <paramref name="paddingSide"/>. <see cref="ToTokens(IReadOnlyList{string}, out Tensor, bool, PaddingSide)"/> also
    /// returns the attention mask a run of the padded batch needs.
    /// </summary>
    public Tensor ToTokens(IReadOnlyList<string> texts, bool prependBos = true, PaddingSide paddingSide = PaddingSide.Right)
    {
        var tokens = ToTokens(texts, out var mask, prependBos, paddingSide);
        mask.Dispose();
        return tokens;
    }

    /// <summary>As <see cref="ToTokens(IReadOnlyList{string}, bool, PaddingSide)"/>, also giving <paramref name="attentionMask"/>
    /// [n, pos] int64 (1 real token, 0 padding) for <see cref="RunOptions.AttentionMask"/>; the caller disposes both.</summary>
    public Tensor ToTokens(IReadOnlyList<string> texts, out Tensor attentionMask, bool prependBos = true, PaddingSide paddingSide = PaddingSide.Right)
    {
        ArgumentNullException.ThrowIfNull(texts);
        if (texts.Count == 0) throw new SaeSharpException("ToTokens: no text given");
        var rows = texts.Select(t => TokenIds(t ?? throw new ArgumentException("a text is null", nameof(texts)), prependBos)).ToList();
        var tok = Tokenizer;
        long pad = tok.PadTokenId ?? tok.EosTokenId ?? tok.BosTokenId ?? 0;
        int len = rows.Max(r => r.Length);
        var ids = new long[rows.Count * len];
        var mask = new long[rows.Count * len];
        for (int i = 0; i < rows.Count; i++)
        {
            int offset = paddingSide == PaddingSide.Left ? len - rows[i].Length : 0;
            for (int j = 0; j < len; j++)
            {
                int k = j - offset;
                bool real = k >= 0 && k < rows[i].Length;
                ids[i * len + j] = real ? rows[i][k] : pad;
                mask[i * len + j] = real ? 1 : 0;
            }
        }
        using var scope = NewDisposeScope();
        var device = Device;
        attentionMask = tensor(mask, [rows.Count, len], ScalarType.Int64).to(device).MoveToOuterDisposeScope();
        return tensor(ids, [rows.Count, len], ScalarType.Int64).to(device).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// TransformerLens <c>model.to_string(tokens)</c>: the text of token ids [pos] or [1, pos] (special tokens kept,
    /// as TransformerLens decodes them). A batch [n, pos] with n &gt; 1 is <see cref="ToStrings"/>.
    /// </summary>
    public string ToString(Tensor tokens)
    {
        ArgumentNullException.ThrowIfNull(tokens);
        if (tokens.dim() == 2 && tokens.shape[0] != 1)
            throw new SaeSharpException($"ToString takes one sequence ([pos] or [1, pos]); tokens are [{string.Join(", ", tokens.shape)}]: use ToStrings");
        return Tokenizer.Decode(Ids(tokens));
    }

    /// <summary>TransformerLens <c>model.to_string(tokens)</c> on a batch [n, pos]: one text per row.</summary>
    public IReadOnlyList<string> ToStrings(Tensor tokens)
    {
        ArgumentNullException.ThrowIfNull(tokens);
        if (tokens.dim() != 2) throw new SaeSharpException($"ToStrings takes a batch [n, pos]; tokens are [{string.Join(", ", tokens.shape)}]");
        var all = Ids(tokens);
        int len = (int)tokens.shape[1];
        return Enumerable.Range(0, (int)tokens.shape[0]).Select(i => Tokenizer.Decode(all.Skip(i * len).Take(len))).ToList();
    }

    /// <summary>
    /// TransformerLens <c>model.to_str_tokens(text, prepend_bos=True)</c>: each token of <paramref name="text"/> decoded
    /// alone (GPT-2's <c>" world"</c> keeps its leading space), BOS first when <paramref name="prependBos"/>.
    /// </summary>
    public IReadOnlyList<string> ToStringTokens(string text, bool prependBos = true)
    {
        ArgumentNullException.ThrowIfNull(text);
        var tok = Tokenizer;
        return TokenIds(text, prependBos).Select(id => tok.Decode([(int)id])).ToList();
    }

    /// <summary>TransformerLens <c>model.to_str_tokens(tokens)</c>: each id of [pos] or [1, pos] decoded alone.</summary>
    public IReadOnlyList<string> ToStringTokens(Tensor tokens)
    {
        ArgumentNullException.ThrowIfNull(tokens);
        if (tokens.dim() == 2 && tokens.shape[0] != 1)
            throw new SaeSharpException($"ToStringTokens takes one sequence ([pos] or [1, pos]); tokens are [{string.Join(", ", tokens.shape)}]");
        var tok = Tokenizer;
        return Ids(tokens).Select(id => tok.Decode([id])).ToList();
    }

    /// <summary>TransformerLens <c>model.to_single_token(string)</c>: the id of a string that is exactly one token, else an error.</summary>
    public long ToSingleToken(string token) => Tokenizer.SingleToken(token, $"model '{Config.ModelName}'");

    /// <summary>
    /// TransformerLens <c>model.get_token_position(single_token, input, mode, prepend_bos)</c>
    /// (transformer_lens/HookedTransformer.py): the position of <paramref name="singleToken"/> (a string that is one
    /// token, <see cref="ToSingleToken"/>) in the tokens of <paramref name="input"/> (BOS first when
    /// <paramref name="prependBos"/>, so it counts), its first occurrence or, with <paramref name="last"/>, its last;
    /// an error when it does not occur.
    /// </summary>
    public int GetTokenPosition(string singleToken, string input, bool last = false, bool prependBos = true)
    {
        ArgumentNullException.ThrowIfNull(input);
        return GetTokenPosition(ToSingleToken(singleToken), TokenIds(input, prependBos), last, $"'{input}'");
    }

    /// <summary><see cref="GetTokenPosition(string, string, bool, bool)"/> of token id <paramref name="token"/> in
    /// <paramref name="tokens"/> [pos] or [1, pos].</summary>
    public int GetTokenPosition(long token, Tensor tokens, bool last = false)
    {
        ArgumentNullException.ThrowIfNull(tokens);
        if (tokens.dim() == 2 && tokens.shape[0] != 1)
            throw new SaeSharpException($"GetTokenPosition takes one sequence ([pos] or [1, pos]); tokens are [{string.Join(", ", tokens.shape)}]");
        return GetTokenPosition(token, Ids(tokens).Select(i => (long)i).ToArray(), last, "the tokens");
    }

    private int GetTokenPosition(long token, long[] ids, bool last, string where)
    {
        int at = last ? Array.LastIndexOf(ids, token) : Array.IndexOf(ids, token);
        if (at < 0)
            throw new SaeSharpException($"model '{Config.ModelName}': token {token} \"{TokenDisplay.Visible(Tokenizer.TokenText((int)token))}\" does not occur in {where}");
        return at;
    }

    private long[] TokenIds(string text, bool prependBos)
    {
        try
        {
            return Tokenizer.EncodePrompt(text, prependBos);
        }
        catch (SaeSharpException e)
        {
            throw new SaeSharpException($"model '{Config.ModelName}': {e.Message} (pass prependBos: false)", e);
        }
    }

    private static int[] Ids(Tensor tokens)
    {
        if (tokens.dim() is not (1 or 2)) throw new SaeSharpException($"token ids must be [pos] or [batch, pos], got [{string.Join(", ", tokens.shape)}]");
        using var scope = NewDisposeScope();
        using var flat = tokens.reshape(-1).to(ScalarType.Int64).cpu();
        return flat.data<long>().Select(v => checked((int)v)).ToArray();
    }
}
