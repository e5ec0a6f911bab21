using SaeSharp.Tokenizers;

namespace SaeSharp.Data;

/// <summary>
/// Cuts token streams into fixed-length context windows exactly as SAELens does
/// (<c>sae_lens/tokenization_and_batching.py: concat_and_batch_sequences</c>, used by
/// <c>ActivationsStore._iterate_tokenized_sequences</c>).
/// </summary>
public static class TokenWindows
{
    /// <summary>
    /// SAELens' <c>concat_and_batch_sequences</c>. Sequences are concatenated into windows of
    /// <paramref name="contextSize"/> tokens; a trailing partial window is dropped.
    /// <list type="bullet">
    /// <item><paramref name="beginBatchTokenId"/>: put at position 0 of every window, unless the token that would
    /// start the window already is it (a long document continues in the next window after it).</item>
    /// <item><paramref name="beginSequenceTokenId"/>: put before each document, unless it starts with it.</item>
    /// <item><paramref name="sequenceSeparatorTokenId"/>: put between documents that share a window, unless
    /// the next document starts with it. It is written even when it is the last token that fits.</item>
    /// <item>A window the begin-batch/begin-sequence tokens fill alone (context size 1 with a BOS) is an error; SAELens
    /// would yield such windows for ever without reading on.</item>
    /// <item><paramref name="disableConcatSequences"/>: one window per document (BOS-prefixed when given, documents
    /// shorter than the window are skipped). Unlike SAELens, a BOS id of 0 is honoured here
    /// (SAELens tests the id for truthiness and so skips Pythia's BOS 0 in this mode).</item>
    /// </list>
    /// </summary>
    public static IEnumerable<long[]> ConcatAndBatch(
        IEnumerable<long[]> sequences,
        int contextSize,
        long? beginBatchTokenId = null,
        long? beginSequenceTokenId = null,
        long? sequenceSeparatorTokenId = null,
        bool disableConcatSequences = false)
    {
        ArgumentNullException.ThrowIfNull(sequences);
        if (contextSize <= 0) throw new SaeSharpException($"context size must be positive, got {contextSize}");
        return disableConcatSequences
            ? OnePerSequence(sequences, contextSize, beginSequenceTokenId ?? beginBatchTokenId)
            : Concat(sequences, contextSize, beginBatchTokenId, beginSequenceTokenId, sequenceSeparatorTokenId);
    }

    private static IEnumerable<long[]> OnePerSequence(IEnumerable<long[]> sequences, int contextSize, long? bos)
    {
        foreach (var seq in sequences)
        {
            if (seq.Length == 0) continue;
            if (bos is long b && seq[0] != b && seq.Length >= contextSize - 1)
            {
                var window = new long[contextSize];
                window[0] = b;
                Array.Copy(seq, 0, window, 1, contextSize - 1);
                yield return window;
            }
            else if (seq.Length >= contextSize)
            {
                yield return seq[..contextSize];
            }
        }
    }

    private static IEnumerable<long[]> Concat(IEnumerable<long[]> sequences, int contextSize,
        long? beginBatch, long? beginSequence, long? separator)
    {
        List<long>? batch = null;
        var prefix = new List<long>(3);
        foreach (var tokens in sequences)
        {
            int offset = 0;
            bool startOfSequence = true;
            while (tokens.Length - offset > 0)
            {
                prefix.Clear();
                long first = tokens[offset];
                if (startOfSequence && beginSequence is long bs && first != bs)
                {
                    prefix.Insert(0, bs);
                    first = bs;
                }
                int needed;
                if (batch is null)
                {
                    if (beginBatch is long bb && first != bb)
                    {
                        prefix.Insert(0, bb);
                        first = bb;
                    }
                    needed = Math.Max(contextSize - prefix.Count, 0);
                    // SAELens loops here for ever, yielding windows of the prefix alone without consuming a token.
                    if (needed == 0)
                        throw new SaeSharpException(
                            $"context size {contextSize} leaves no room for text after the {prefix.Count} token(s) put at the start of every window (BOS); use a context size of at least {prefix.Count + 1}");
                    batch = new List<long>(contextSize);
                    batch.AddRange(prefix.Take(contextSize));
                }
                else
                {
                    if (separator is long sep && first != sep)
                    {
                        prefix.Insert(0, sep);
                        first = sep;
                    }
                    needed = Math.Max(contextSize - batch.Count - prefix.Count, 0);
                    batch.AddRange(prefix.Take(Math.Max(contextSize - batch.Count, 0)));
                }
                int take = Math.Min(needed, tokens.Length - offset);
                for (int i = 0; i < take; i++) batch.Add(tokens[offset + i]);
                offset += needed;
                startOfSequence = false;
                if (batch.Count == contextSize)
                {
                    yield return batch.ToArray();
                    batch = null;
                }
            }
        }
    }

    /// <summary>
    /// Tokenizes documents and concatenates them into windows as SAELens' ActivationsStore does for a text
    /// dataset (SAELens v6): each document is encoded without BOS; with <paramref name="prependBos"/> the tokenizer's BOS
    /// starts every window (<c>begin_batch_token_id = bos if prepend_bos</c>, no begin-sequence token) and
    /// <paramref name="sequenceSeparatorToken"/> separates documents (<see cref="SequenceSeparatorId"/>; null: SAELens's
    /// default <c>"bos"</c>). <paramref name="disableConcatSequences"/>: one window per document, the rest of it and
    /// documents shorter than the window dropped (<see cref="ConcatAndBatch"/>). A tokenizer without BOS concatenates
    /// documents with its EOS, and prepend_bos starts windows with it, as TransformerLens
    /// (<see cref="PromptEncoding.PrependedBosId"/>).
    /// </summary>
    public static IEnumerable<long[]> TokenizeAndConcatenate(
        IEnumerable<string> documents,
        ITextTokenizer tokenizer,
        int contextSize,
        bool prependBos = true,
        bool disableConcatSequences = false,
        PretokenizeToken? sequenceSeparatorToken = null)
    {
        ArgumentNullException.ThrowIfNull(documents);
        ArgumentNullException.ThrowIfNull(tokenizer);
        long? bos = prependBos ? tokenizer.PrependedBosId() : null;
        // "bos" (the default) is the token prepend_bos uses: a tokenizer without BOS separates with its EOS, as SAELens's
        // ActivationsStore does on a TransformerLens model (whose tokenizer's bos_token is then its eos_token).
        long? separator = sequenceSeparatorToken is null || sequenceSeparatorToken == PretokenizeToken.Bos
            ? tokenizer.BosOrEosTokenId()
            : SequenceSeparatorId(sequenceSeparatorToken, tokenizer);
        var sequences = documents.Select(d => Array.ConvertAll(tokenizer.Encode(d), x => (long)x));
        return ConcatAndBatch(sequences, contextSize, beginBatchTokenId: prependBos ? bos : null, beginSequenceTokenId: null,
            sequenceSeparatorTokenId: separator, disableConcatSequences: disableConcatSequences);
    }

    /// <summary>
    /// The id of SAELens's <c>sequence_separator_token</c> for <paramref name="tokenizer"/>
    /// (<c>get_special_token_from_cfg</c>): null or <c>"bos"</c> the tokenizer's BOS (none when it has no BOS, as SAELens,
    /// whose every config carries the default "bos"); <c>"eos"</c> / <c>"sep"</c> its EOS / SEP, which it must have;
    /// an id, which must be in its vocabulary; <see cref="PretokenizeToken.None"/> no separator.
    /// </summary>
    public static long? SequenceSeparatorId(PretokenizeToken? token, ITextTokenizer tokenizer)
    {
        ArgumentNullException.ThrowIfNull(tokenizer);
        if (token is null || token == PretokenizeToken.Bos) return tokenizer.BosTokenId;
        if (token == PretokenizeToken.None) return null;
        long? id = token.Resolve(tokenizer);
        if (id is null)
            throw new SaeSharpException($"sequence_separator_token {token}: the tokenizer has no {token.Name!.ToUpperInvariant()} token; give bos, eos, sep, a token id, or none");
        if (id >= tokenizer.VocabSize)
            throw new SaeSharpException($"sequence_separator_token {token}: beyond the tokenizer's {tokenizer.VocabSize} ids; give bos, eos, sep, a token id below {tokenizer.VocabSize}, or none");
        return id;
    }

    /// <summary>
    /// Pre-tokenized rows as SAELens uses them: each row is one window, cut to its first
    /// <paramref name="contextSize"/> tokens (BOS/separators are assumed to be in the data already).
    /// A row shorter than the window is an error.
    /// </summary>
    public static IEnumerable<long[]> FromPretokenized(IEnumerable<long[]> rows, int contextSize)
    {
        ArgumentNullException.ThrowIfNull(rows);
        if (contextSize <= 0) throw new SaeSharpException($"context size must be positive, got {contextSize}");
        long index = 0;
        foreach (var row in rows)
        {
            if (row.Length < contextSize)
                throw new SaeSharpException(
                    $"pre-tokenized row {index} has {row.Length} tokens, fewer than context size {contextSize}");
            yield return row.Length == contextSize ? row : row[..contextSize];
            index++;
        }
    }

    /// <summary>Refuses a window with an id the tokenizer does not have (a dataset tokenized for another model; SAELens
    /// compares the recorded tokenizer's vocabulary with the model's), naming the dataset, instead of an index error
    /// deep in the model's embedding.</summary>
    private static IEnumerable<long[]> InVocabulary(IEnumerable<long[]> windows, int vocabSize, string path)
    {
        long index = 0;
        foreach (var w in windows)
        {
            foreach (long id in w)
                if (id >= vocabSize)
                    throw new SaeSharpException($"{path}: row {index} holds token id {id}, beyond the tokenizer's {vocabSize} ids: the dataset was tokenized for another model");
            index++;
            yield return w;
        }
    }

    /// <summary>SAELens's warning on a pre-tokenized dataset whose first row is longer than the run's windows.</summary>
    private static IEnumerable<long[]> WarnWhenLonger(IEnumerable<long[]> rows, int contextSize, string path)
    {
        bool first = true;
        foreach (var row in rows)
        {
            if (first && row.Length > contextSize)
                DatasetWarnings.Report($"{path}: rows of {row.Length} tokens > the run's {contextSize}: rows cut to their first {contextSize} tokens");
            first = false;
            yield return row;
        }
    }

    /// <summary>The length of the first row of a pre-tokenized dataset (the column <see cref="FromPath"/> reads), or null when
    /// the dataset holds text: SAELens's <c>context_size=-1</c> in <c>CacheActivationsRunnerConfig</c>.</summary>
    public static int? PretokenizedRowLength(string path, string? textField = null)
    {
        var files = TextDataset.ExpandFiles(path);
        var (column, tokenized, first) = TextDataset.ChooseColumn(files, textField);
        if (first is null || !tokenized) return null;
        var rows = TextDataset.KindOf(first) switch
        {
            TextDataset.FileKind.Jsonl => TextDataset.ReadTokenizedJsonl(first, column),
            TextDataset.FileKind.Parquet => TextDataset.ReadTokenizedParquet(first, column),
            TextDataset.FileKind.Arrow => HfDiskDataset.ReadTokenRows(first, column),
            _ => [],
        };
        return rows.FirstOrDefault()?.Length;
    }

    /// <summary>
    /// Windows from a dataset file or folder, reading the column SAELens's ActivationsStore reads
    /// (<see cref="TextDataset.ChooseColumn(IEnumerable{string}, string?)"/>, decided by the first file with a row and used for all): pre-tokenized "tokens" or
    /// "input_ids" rows (<see cref="FromPretokenized"/>); else text from <paramref name="textField"/> when given, else
    /// from "text" or "problem" (or .txt lines), tokenized and concatenated (<see cref="TokenizeAndConcatenate"/>).
    /// Files with no rows are skipped; a dataset with no file that has a row is an error naming it. A <c>datasets</c>
    /// <c>save_to_disk</c> folder and <c>.arrow</c> files are read as well (<see cref="HfDiskDataset"/>); a pre-tokenized
    /// dataset with SAELens's <c>sae_lens.json</c> is checked against the run (<see cref="PretokenizedMetadata.Check"/>:
    /// a shorter context size is an error, other mismatches go to <see cref="DatasetWarnings"/>).
    /// <paramref name="disableConcatSequences"/> and <paramref name="sequenceSeparatorToken"/> apply to text only: as in
    /// SAELens, pre-tokenized rows are used as they are.
    /// </summary>
    public static IEnumerable<long[]> FromPath(
        string path,
        ITextTokenizer tokenizer,
        int contextSize,
        bool prependBos = true,
        string? textField = null,
        TxtMode txtMode = TxtMode.LinePerDocument,
        bool disableConcatSequences = false,
        PretokenizeToken? sequenceSeparatorToken = null)
    {
        // A hub dataset's files download as the reader reaches them: list once, look at the first with a row to choose the column.
        var files = TextDataset.ExpandFiles(path);
        var (column, tokenized, first) = TextDataset.ChooseColumn(files, textField);
        if (first is null)
            throw new SaeSharpException(File.Exists(path)
                ? $"dataset file '{path}' has no rows with text or tokens"
                : $"dataset '{path}': no rows with text or tokens in any of its files");
        if (tokenized)
        {
            var rows = files.SelectMany(f => TextDataset.KindOf(f) switch
            {
                TextDataset.FileKind.Jsonl => TextDataset.ReadTokenizedJsonl(f, column),
                TextDataset.FileKind.Parquet => TextDataset.ReadTokenizedParquet(f, column),
                TextDataset.FileKind.Arrow => HfDiskDataset.ReadTokenRows(f, column),
                TextDataset.FileKind.Txt when !TextDataset.TxtHasText(f) => [], // no text: skipped as other empty files
                _ => throw new SaeSharpException($"dataset file '{f}' is text, but '{first}' is pre-tokenized; do not mix them"),
            });
            // As in SAELens, the two window fields shape text only: a run that asked for them is told they changed nothing.
            var unused = new[] { disableConcatSequences ? "disable_concat_sequences" : null,
                                 sequenceSeparatorToken is { } sep && sep != PretokenizeToken.Bos ? "sequence_separator_token" : null }.OfType<string>().ToList();
            if (unused.Count > 0)
                DatasetWarnings.Report($"dataset '{path}' is pre-tokenized: {string.Join(" and ", unused)} apply to text only: its rows are used as they are (as in SAELens), so this changes nothing");
            if ((HubDataset.IsHubDataset(path) ? new HubDataset(path).MetadataFile() : PretokenizedMetadata.Find(path)) is { } meta)
                foreach (var w in PretokenizedMetadata.Read(meta).Check(meta, contextSize, prependBos, tokenizer)) DatasetWarnings.Report(w);
            else
                rows = WarnWhenLonger(rows, contextSize, path);
            return InVocabulary(FromPretokenized(rows, contextSize), tokenizer.VocabSize, path);
        }
        string field = column ?? textField ?? "text";
        return NamingEmptyText(TextDataset.ReadFiles(files, field, txtMode), docs => TokenizeAndConcatenate(docs, tokenizer, contextSize, prependBos,
            disableConcatSequences, sequenceSeparatorToken), path, field);
    }

    /// <summary>The windows <paramref name="windows"/> makes of <paramref name="documents"/>; none of a dataset whose rows all
    /// hold empty (or blank) text is an error naming it and the field, not a count of zero windows found later.</summary>
    private static IEnumerable<long[]> NamingEmptyText(IEnumerable<string> documents, Func<IEnumerable<string>, IEnumerable<long[]>> windows,
        string path, string field)
    {
        long rows = 0, withText = 0;
        bool any = false;
        foreach (var w in windows(documents.Select(d =>
                 {
                     rows++;
                     if (!string.IsNullOrWhiteSpace(d)) withText++;
                     return d;
                 })))
        {
            any = true;
            yield return w;
        }
        if (!any && rows > 0 && withText == 0)
            throw new SaeSharpException($"dataset '{path}': the text of all its {rows} row(s) is empty (field '{field}'); give a dataset with text, or --text-field naming the column that holds it");
    }
}
