using System.IO.Compression;
using System.Text.Json;
using Parquet;
using Parquet.Schema;
using SaeSharp.IO;

namespace SaeSharp.Data;

/// <summary>How a <c>.txt</c> file is cut into documents.</summary>
public enum TxtMode
{
    /// <summary>Each line is one document, an empty line an empty one (as <c>datasets</c>' text loader,
    /// <c>load_dataset("text")</c>, reads a file: lines split at \n, \r\n or \r, no row after a final line break).</summary>
    LinePerDocument,
    /// <summary>The whole file is one document.</summary>
    WholeFile,
}

/// <summary>
/// Streams documents (strings) or pre-tokenized rows (token id arrays) from local files without loading them
/// whole: <c>.txt</c>, <c>.jsonl</c>, <c>.parquet</c> (and <c>.txt.gz</c>, <c>.jsonl.gz</c>), or a folder of such
/// files read in ordinal name order. Enumerate the result again to start over.
/// </summary>
public static class TextDataset
{
    /// <summary>Documents of a file or folder, chosen by extension: <c>.txt</c> (see <paramref name="txtMode"/>),
    /// <c>.jsonl</c> (string field <paramref name="field"/>), <c>.parquet</c> (string column <paramref name="field"/>).</summary>
    public static IEnumerable<string> Read(string path, string field = "text", TxtMode txtMode = TxtMode.LinePerDocument) =>
        ReadFiles(ExpandFiles(path), field, txtMode);

    /// <summary>Documents of the given files in order, each read as <see cref="Read"/> reads it.</summary>
    internal static IEnumerable<string> ReadFiles(IEnumerable<string> files, string field = "text", TxtMode txtMode = TxtMode.LinePerDocument)
    {
        foreach (string file in files)
        {
            var docs = KindOf(file) switch
            {
                FileKind.Txt => ReadTxt(file, txtMode),
                FileKind.Jsonl => ReadJsonl(file, field),
                FileKind.Parquet => ReadParquet(file, field),
                FileKind.Arrow => HfDiskDataset.ReadStrings(file, field),
                _ => throw Unsupported(file),
            };
            foreach (var d in docs) yield return d;
        }
    }

    /// <summary>Documents of a text file: one per line (<see cref="TxtMode.LinePerDocument"/>, empty lines included), or the
    /// whole file as one.</summary>
    public static IEnumerable<string> ReadTxt(string path, TxtMode mode = TxtMode.LinePerDocument)
    {
        RequireFile(path);
        using var reader = OpenText(path);
        if (mode == TxtMode.WholeFile)
        {
            foreach (var whole in Lines(reader, path, MaxWholeFileChars, splitLines: false)) yield return whole;
            yield break;
        }
        foreach (var line in Lines(reader, path, MaxLineChars)) yield return line;
    }

    /// <summary>Whether a <c>.txt</c> file has a non-empty line. One of empty lines alone has rows for <c>datasets</c>, but
    /// no text: choosing a dataset's column, and mixing text files with pre-tokenized ones, pass it over as an empty file.</summary>
    internal static bool TxtHasText(string path) => ReadTxt(path).Any(line => line.Length > 0);

    /// <summary>The string field <paramref name="field"/> of each JSON object line; blank lines are skipped.</summary>
    public static IEnumerable<string> ReadJsonl(string path, string field = "text")
    {
        foreach (var (element, lineNo) in JsonLines(path))
        {
            if (!element.TryGetProperty(field, out var v))
                throw new SaeSharpException($"{path} line {lineNo}: no field '{field}'");
            if (v.ValueKind != JsonValueKind.String)
                throw new SaeSharpException($"{path} line {lineNo}: field '{field}' is {v.ValueKind}, expected a string");
            yield return v.GetString()!;
        }
    }

    /// <summary>
    /// (text, class) rows of a classification dataset, as one exports bias_in_bios, amazon reviews or ag_news from Hugging
    /// Face: the string field <paramref name="textField"/> and the class field <paramref name="labelField"/> (a string or an
    /// integer, read as its decimal text) of each <c>.jsonl</c> line or <c>.parquet</c> row; a folder or <c>hf:</c> dataset
    /// as its files in order. A missing field, a null, or a class of another type is an error naming the file and row.
    /// </summary>
    public static IEnumerable<(string Text, string Label)> ReadClassified(string path, string textField = "text", string labelField = "label") =>
        ReadClassified(path, textField, labelField, "--label-field");

    /// <summary><see cref="ReadClassified(string, string, string)"/>, naming <paramref name="labelOption"/> as the option that
    /// names the class field.</summary>
    internal static IEnumerable<(string Text, string Label)> ReadClassified(string path, string textField, string labelField, string labelOption) =>
        ReadClassified(ExpandFiles(path), textField, [labelField], [labelOption]).Select(r => (r.Text, r.Labels[0]));

    /// <summary>(text, classes) rows of the <paramref name="files"/> of a classification dataset with several class fields,
    /// read in one pass: <paramref name="labelFields"/>[i] is read as <see cref="ReadClassified(string, string, string)"/>
    /// reads its one class field, and a missing one is an error naming <paramref name="labelOptions"/>[i].</summary>
    internal static IEnumerable<(string Text, string[] Labels)> ReadClassified(IEnumerable<string> files, string textField,
        IReadOnlyList<string> labelFields, IReadOnlyList<string> labelOptions)
    {
        foreach (string file in files)
        {
            var rows = KindOf(file) switch
            {
                FileKind.Jsonl => ReadClassifiedJsonl(file, textField, labelFields, labelOptions),
                FileKind.Parquet => ParquetClassified(file, textField, labelFields),
                _ => throw new SaeSharpException($"dataset file '{file}': a classification dataset is .jsonl or .parquet (with fields '{textField}' and '{string.Join("', '", labelFields)}')"),
            };
            foreach (var r in rows) yield return r;
        }
    }

    /// <summary>A Parquet file's text column zipped with its class columns (each column is stored apart: one read each).</summary>
    private static IEnumerable<(string Text, string[] Labels)> ParquetClassified(string file, string textField, IReadOnlyList<string> labelFields)
    {
        var columns = labelFields.Select(f => ReadParquetClasses(file, f).GetEnumerator()).ToList();
        try
        {
            foreach (var text in ReadParquet(file, textField))
            {
                var labels = new string[columns.Count];
                for (int i = 0; i < columns.Count; i++)
                    labels[i] = columns[i].MoveNext() ? columns[i].Current : throw new SaeSharpException($"{file}: class column '{labelFields[i]}' has fewer rows than '{textField}'");
                yield return (text, labels);
            }
        }
        finally
        {
            foreach (var c in columns) c.Dispose();
        }
    }

    private static IEnumerable<(string Text, string[] Labels)> ReadClassifiedJsonl(string path, string textField, IReadOnlyList<string> labelFields, IReadOnlyList<string> labelOptions)
    {
        foreach (var (element, lineNo) in JsonLines(path))
        {
            if (!element.TryGetProperty(textField, out var t))
                throw new SaeSharpException($"{path} line {lineNo}: no text field '{textField}' (--text-field)");
            if (t.ValueKind != JsonValueKind.String)
                throw new SaeSharpException($"{path} line {lineNo}: field '{textField}' is {t.ValueKind}, expected a string");
            var labels = new string[labelFields.Count];
            for (int i = 0; i < labelFields.Count; i++)
            {
                string labelField = labelFields[i];
                if (!element.TryGetProperty(labelField, out var l))
                    throw new SaeSharpException($"{path} line {lineNo}: no class field '{labelField}' ({labelOptions[i]})");
                labels[i] = l.ValueKind switch
                {
                    JsonValueKind.String => l.GetString()!,
                    JsonValueKind.Number when l.TryGetInt64(out long v) => v.ToString(System.Globalization.CultureInfo.InvariantCulture),
                    JsonValueKind.Number when l.TryGetDouble(out double d) && double.IsFinite(d) && d == Math.Round(d) && Math.Abs(d) < 1e15 =>
                        ((long)d).ToString(System.Globalization.CultureInfo.InvariantCulture),
                    _ => throw new SaeSharpException($"{path} line {lineNo}: class field '{labelField}' is {l}, expected a string or an integer (1.0 reads as 1)"),
                };
            }
            yield return (t.GetString()!, labels);
        }
    }

    /// <summary>The class column of a Parquet file: strings, or numbers as their shortest decimal text (1.0 → "1").</summary>
    private static IEnumerable<string> ReadParquetClasses(string path, string column) => ReadParquetColumn(path, column, integers: true);

    private static string?[] Integers<T>(ParquetRowGroupReader group, DataField field, int n) where T : struct, IFormattable
    {
        var inv = System.Globalization.CultureInfo.InvariantCulture;
        if (field.IsNullable)
        {
            var values = new T?[n];
            Sync(group.ReadAsync<T>(field, values.AsMemory(), null, default));
            return [.. values.Select(v => v?.ToString(null, inv))];
        }
        var plain = new T[n];
        Sync(group.ReadAsync<T>(field, plain.AsMemory(), null, default));
        return [.. plain.Select(v => v.ToString(null, inv))];
    }

    /// <summary>Token id arrays from the int-array field of each JSON line. With <paramref name="field"/> null,
    /// the first of "tokens", "input_ids" present in the first row is used (as SAELens does).</summary>
    public static IEnumerable<long[]> ReadTokenizedJsonl(string path, string? field = null)
    {
        foreach (var (element, lineNo) in JsonLines(path))
        {
            field ??= Choose(Names(element), tokenized: true) ?? throw new SaeSharpException(
                $"{path} line {lineNo}: no 'tokens' or 'input_ids' field");
            if (!element.TryGetProperty(field, out var v))
                throw new SaeSharpException($"{path} line {lineNo}: no field '{field}'");
            if (v.ValueKind != JsonValueKind.Array)
                throw new SaeSharpException($"{path} line {lineNo}: field '{field}' is {v.ValueKind}, expected an array of token ids");
            var ids = new long[v.GetArrayLength()];
            int i = 0;
            foreach (var x in v.EnumerateArray())
            {
                if (x.ValueKind != JsonValueKind.Number || !x.TryGetInt64(out long id) || id < 0)
                    throw new SaeSharpException($"{path} line {lineNo}: {field}[{i}] = {x} is not a non-negative integer");
                ids[i++] = id;
            }
            yield return ids;
        }
    }

    /// <summary>The string column <paramref name="column"/> of a Parquet file, one row group at a time. A file with no
    /// rows gives none, whatever its columns (<see cref="ChooseColumn(IEnumerable{string}, string?)"/> passes it over).</summary>
    public static IEnumerable<string> ReadParquet(string path, string column = "text") => ReadParquetColumn(path, column, integers: false);

    /// <summary>A string column (with <paramref name="integers"/>, also an int32/int64 one, as decimal text) of a Parquet
    /// file, one row group at a time; a null value is a <see cref="SaeSharpException"/> naming the row.</summary>
    private static IEnumerable<string> ReadParquetColumn(string path, string column, bool integers)
    {
        RequireFile(path);
        using var stream = ParquetFooter.Open(path);
        var (reader, footer) = OpenParquet(stream, path);
        string what = integers ? "class column" : "column";
        try
        {
            if (NoRows(reader)) yield break;
            var field = FindColumn(reader, column, path);
            var type = field.ClrType;
            bool isString = type == typeof(string) || type == typeof(ReadOnlyMemory<char>);
            bool isInt = integers && (type == typeof(long) || type == typeof(int) || type == typeof(double) || type == typeof(float));
            if ((!isString && !isInt) || field.MaxRepetitionLevel != 0)
                throw new SaeSharpException($"{path}: {what} '{column}' holds {type.Name}{(field.MaxRepetitionLevel != 0 ? " lists" : "")}, " +
                    $"expected strings{(integers ? " or int32/int64/float/double" : "")}");
            long row = 0;
            long maxRows = MaxParquetRows(stream.Length);
            for (int g = 0; g < reader.RowGroupCount; g++)
            {
                var values = ParquetGroup(path, g, maxRows, () =>
                {
                    footer.CheckPages(stream, g);
                    using var group = reader.OpenRowGroupReader(g);
                    if (group.RowCount < 0 || group.RowCount > maxRows)
                        throw new SaeSharpException($"{path}: row group {g} declares {group.RowCount} rows, more than a {stream.Length}-byte file can plausibly hold ({maxRows})");
                    int n = checked((int)group.RowCount);
                    if (!isString)
                        return type == typeof(long) ? Integers<long>(group, field, n) : type == typeof(int) ? Integers<int>(group, field, n)
                            : type == typeof(double) ? Integers<double>(group, field, n) : Integers<float>(group, field, n);
                    var strings = new string?[n];
                    Sync(group.ReadAsync(field, strings.AsMemory(), null, default));
                    return strings;
                });
                foreach (var v in values)
                {
                    if (v is null) throw new SaeSharpException($"{path}: {what} '{column}' is null in row {row}");
                    row++;
                    yield return v;
                }
            }
        }
        finally
        {
            Sync(reader.DisposeAsync());
        }
    }

    /// <summary>The columns SAELens's <c>ActivationsStore</c> reads when none is named, in its order of preference
    /// (<c>sae_lens/training/activations_store.py</c>): pre-tokenized ids in "tokens" or "input_ids", else text in
    /// "text" or "problem".</summary>
    public static readonly IReadOnlyList<(string Name, bool Tokenized)> DatasetColumns =
        [("tokens", true), ("input_ids", true), ("text", false), ("problem", false)];

    /// <summary>The first of <see cref="DatasetColumns"/> (of the pre-tokenized or the text ones) in <paramref name="names"/>.</summary>
    private static string? Choose(IEnumerable<string> names, bool tokenized)
    {
        var present = names.ToHashSet(StringComparer.Ordinal);
        return DatasetColumns.Where(c => c.Tokenized == tokenized).Select(c => c.Name).FirstOrDefault(present.Contains);
    }

    /// <summary>
    /// The column a dataset file is read from, chosen as SAELens's <c>ActivationsStore</c> chooses it from the first
    /// row: "tokens", else "input_ids" (pre-tokenized); else the text column <paramref name="textField"/> when it is
    /// given; else "text", else "problem". A file with none of them is an error listing its columns. A <c>.txt</c>
    /// file (null: its lines are the text) and a file with no rows take <paramref name="textField"/> or "text".
    /// </summary>
    public static (string? Column, bool Tokenized) ChooseColumn(string file, string? textField = null)
    {
        var (column, tokenized, _) = ChooseColumn([file], textField);
        return (column, tokenized);
    }

    /// <summary>The column of a dataset's files (<see cref="ChooseColumn(string, string?)"/>), chosen by the first file
    /// that has a row (as SAELens looks at the dataset's first row): empty files before it are passed over, and so is a
    /// <c>.txt</c> of empty lines alone (<see cref="TxtHasText"/>).
    /// <c>File</c> is that file, or null when no file has a row (then <paramref name="textField"/> or "text").</summary>
    public static (string? Column, bool Tokenized, string? File) ChooseColumn(IEnumerable<string> files, string? textField)
    {
        foreach (string file in files)
        {
            var kind = KindOf(file);
            List<string>? names = kind switch
            {
                FileKind.Txt => TxtHasText(file) ? [] : null,
                FileKind.Jsonl => JsonLines(file).Select(x => Names(x.Element)).FirstOrDefault(),
                FileKind.Parquet => ParquetColumns(file, withRows: true),
                FileKind.Arrow => HfDiskDataset.Columns(file, withRows: true),
                _ => throw Unsupported(file),
            };
            if (names is null) continue;
            if (kind == FileKind.Txt) return (null, false, file);
            if (Choose(names, tokenized: true) is { } tokens) return (tokens, true, file);
            if (textField is not null) return (textField, false, file);
            return (Choose(names, tokenized: false) ?? throw new SaeSharpException(
                $"{file}: no {string.Join(", ", DatasetColumns.Select(c => $"'{c.Name}'").SkipLast(1))} or '{DatasetColumns[^1].Name}' " +
                $"{(kind == FileKind.Jsonl ? "field in its first row" : "column")} (it has: {string.Join(", ", names.Take(20))}" +
                $"{(names.Count > 20 ? ", …" : "")}); name the text column with --text-field"), false, file);
        }
        return (textField ?? "text", false, null);
    }

    /// <summary>The most rows one row group may declare: a thousand per byte of file, at least a million. Run-length
    /// encoding lets a few bytes declare billions of rows; real text datasets are far below this.</summary>
    private static long MaxParquetRows(long fileBytes) => Math.Max(1_000_000, fileBytes * 1000);

    /// <summary>Reads one row group, turning the Parquet library's errors on a corrupt file into one-line SaeSharp errors.</summary>
    private static T ParquetGroup<T>(string path, int group, long maxRows, Func<T> read)
    {
        try
        {
            return read();
        }
        catch (Exception e) when (e is not SaeSharpException and not OutOfMemoryException)
        {
            throw new SaeSharpException($"{path}: row group {group} cannot be read, the Parquet file is corrupt ({e.GetType().Name}: {e.Message})", e);
        }
    }

    /// <summary>Checks the footer (<see cref="ParquetFooter"/>), then opens the file with Parquet.Net.</summary>
    private static (ParquetReader Reader, ParquetFooter Footer) OpenParquet(Stream stream, string path)
    {
        var footer = ParquetFooter.Check(stream, path);
        try
        {
            var reader = Sync(ParquetReader.CreateAsync(stream, null, false, default));
            _ = reader.Schema.Fields; // the schema is built lazily: fail here, as one error, on a corrupt footer
            return (reader, footer);
        }
        catch (Exception e) when (e is not SaeSharpException)
        {
            throw new SaeSharpException($"{path}: not a readable Parquet file ({e.Message})", e);
        }
    }

    /// <summary>Token id arrays from an integer list column of a Parquet file (as written by SAELens'
    /// pretokenize runner or HF datasets). With <paramref name="column"/> null, "tokens" or "input_ids". A file with no rows
    /// gives none, whatever its columns.</summary>
    public static IEnumerable<long[]> ReadTokenizedParquet(string path, string? column = null)
    {
        RequireFile(path);
        using var stream = ParquetFooter.Open(path);
        var (reader, footer) = OpenParquet(stream, path);
        try
        {
            if (NoRows(reader)) yield break;
            column ??= Choose(reader.Schema.Fields.Select(f => f.Name), tokenized: true)
                       ?? throw new SaeSharpException($"{path}: no 'tokens' or 'input_ids' column");
            var field = FindColumn(reader, column, path);
            if (field.MaxRepetitionLevel != 1 || (field.ClrType != typeof(long) && field.ClrType != typeof(int)))
                throw new SaeSharpException($"{path}: column '{column}' is not a list of int32/int64 token ids");
            for (int g = 0; g < reader.RowGroupCount; g++)
            {
                long maxRows = MaxParquetRows(stream.Length);
                var rows = ParquetGroup(path, g, maxRows, () =>
                {
                    footer.CheckPages(stream, g);
                    using var group = reader.OpenRowGroupReader(g);
                    if (group.RowCount < 0 || group.RowCount > maxRows)
                        throw new SaeSharpException($"{path}: row group {g} declares {group.RowCount} rows, more than a {stream.Length}-byte file can plausibly hold ({maxRows})");
                    return field.ClrType == typeof(long)
                        ? ListRows<long>(group, field, column, x => x, path, g)
                        : ListRows<int>(group, field, column, x => x, path, g);
                });
                foreach (var r in rows) yield return r;
            }
        }
        finally
        {
            Sync(reader.DisposeAsync());
        }
    }

    /// <summary>The token lists of one row group (<paramref name="field"/>, the ids of list column
    /// <paramref name="column"/>). A null id inside a list is an error (dropping it would shift the tokens after it), and
    /// so is a null list (the whole cell, which read as an empty row); an empty list is an empty row.</summary>
    private static List<long[]> ListRows<T>(ParquetRowGroupReader group, DataField field, string column, Func<T, long> toLong, string path, int groupIndex) where T : struct
    {
        using var raw = (Parquet.Data.RawColumnData<T>)Sync(group.ReadRawColumnDataBaseAsync(field, default));
        var values = raw.Values;
        var rep = raw.RepetitionLevels;
        bool hasDef = field.MaxDefinitionLevel > 0;
        Span<int> def = hasDef ? raw.DefinitionLevels : default;
        // Definition levels of a top-level list: MaxDefinitionLevel is an id; one less, a null id (when ids are nullable);
        // then an empty list; below that, a null list (when the list is optional).
        int emptyList = field.MaxDefinitionLevel - 1 - (field.IsNullable ? 1 : 0);
        var rows = new List<long[]>();
        var current = new List<long>();
        int v = 0;
        for (int i = 0; i < rep.Length; i++)
        {
            if (rep[i] == 0 && i > 0) { rows.Add(current.ToArray()); current.Clear(); }
            if (!hasDef || def[i] == field.MaxDefinitionLevel) current.Add(toLong(values[v++]));
            else if (field.IsNullable && def[i] == field.MaxDefinitionLevel - 1)
                throw new SaeSharpException($"{path}: row group {groupIndex}, row {rows.Count}: token {current.Count} of column '{column}' is null");
            else if (rep[i] == 0 && def[i] < emptyList)
                throw new SaeSharpException($"{path}: row group {groupIndex}, row {rows.Count}: column '{column}' is null (no token list)");
        }
        if (rep.Length > 0) rows.Add(current.ToArray());
        return rows;
    }

    /// <summary>Is this JSONL file pre-tokenized? True when its first row has "tokens" or "input_ids".</summary>
    public static bool IsTokenizedJsonl(string path)
    {
        foreach (var (element, _) in JsonLines(path)) return Choose(Names(element), tokenized: true) is not null;
        return false;
    }

    /// <summary>Is this Parquet file pre-tokenized? True when it has a "tokens" or "input_ids" column.</summary>
    public static bool IsTokenizedParquet(string path) => Choose(ParquetColumns(path)!, tokenized: true) is not null;

    /// <summary>The top-level column names of a Parquet file; with <paramref name="withRows"/>, null when it has no rows.</summary>
    private static List<string>? ParquetColumns(string path, bool withRows = false)
    {
        RequireFile(path);
        using var stream = ParquetFooter.Open(path);
        var (reader, _) = OpenParquet(stream, path);
        try
        {
            if (withRows && NoRows(reader)) return null;
            return reader.Schema.Fields.Select(f => f.Name).ToList();
        }
        finally
        {
            Sync(reader.DisposeAsync());
        }
    }

    /// <summary>The footer declares no rows (num_rows ≤ 0): the file is passed over when choosing the column and when reading.</summary>
    private static bool NoRows(ParquetReader reader) => (reader.Metadata?.NumRows ?? 0) <= 0;

    private static List<string> Names(JsonElement row) => row.EnumerateObject().Select(p => p.Name).ToList();

    /// <summary>True when <paramref name="path"/> is an existing file or folder, or names a hub dataset (<c>hf:ORG/NAME[:SPLIT]</c>).</summary>
    public static bool Exists(string path) => File.Exists(path) || Directory.Exists(path) || HubDataset.IsHubDataset(path);

    internal enum FileKind { Txt, Jsonl, Parquet, Arrow, Unknown }

    internal static FileKind KindOf(string file)
    {
        string name = file.EndsWith(".gz", StringComparison.OrdinalIgnoreCase) ? file[..^3] : file;
        string ext = Path.GetExtension(name).ToLowerInvariant();
        return ext switch
        {
            ".txt" => FileKind.Txt,
            ".jsonl" or ".ndjson" => FileKind.Jsonl,
            ".parquet" when !file.EndsWith(".gz", StringComparison.OrdinalIgnoreCase) => FileKind.Parquet,
            ".arrow" when !file.EndsWith(".gz", StringComparison.OrdinalIgnoreCase) => FileKind.Arrow,
            _ => FileKind.Unknown,
        };
    }

    /// <summary>A file as itself; a <c>datasets</c> <c>save_to_disk</c> folder (state.json) as its Arrow shards in
    /// state.json's order (<see cref="HfDiskDataset.DataFiles"/>); another folder as its supported files (recursively) in ordinal path order; a hub dataset
    /// (<c>hf:ORG/NAME[:SPLIT]</c>, <see cref="HubDataset"/>) as its split's files, each downloaded when reached.</summary>
    internal static IEnumerable<string> ExpandFiles(string path)
    {
        if (File.Exists(path)) return [path];
        if (HubDataset.IsHubDataset(path)) return new HubDataset(path).LocalFiles();
        if (!Directory.Exists(path)) throw new SaeSharpException($"dataset '{path}' does not exist");
        if (HfDiskDataset.IsSavedDataset(path)) return HfDiskDataset.DataFiles(path);
        var files = Directory.EnumerateFiles(path, "*", SearchOption.AllDirectories)
            .Where(f => KindOf(f) != FileKind.Unknown)
            .OrderBy(f => f, StringComparer.Ordinal)
            .ToList();
        if (files.Count == 0)
            throw new SaeSharpException($"dataset folder '{path}' has no .txt, .jsonl, .parquet or .arrow files");
        return files;
    }

    /// <summary>
    /// The train and test files of a dataset that has both splits, as <c>datasets.load_dataset(name)["train"]</c> and
    /// <c>["test"]</c> find them (<see cref="HubDataset.SplitFiles"/>): a hub dataset named without a split
    /// (<c>hf:ORG/NAME</c>) whose repo has a train and a test split, or a local folder whose files name them
    /// (<c>train.jsonl</c> + <c>test.jsonl</c>, <c>data/train-00000-of-00001.parquet</c>, folders <c>train/</c> and
    /// <c>test/</c>). Null for a file, a <c>save_to_disk</c> folder, a hub dataset named with its split, or one without
    /// both splits. An empty split is an error naming it.
    /// </summary>
    internal static (IEnumerable<string> Train, IEnumerable<string> Test)? TrainTestFiles(string path, Hub.HfHubOptions? hub = null)
    {
        if (File.Exists(path)) return null;
        if (HubDataset.IsHubDataset(path))
        {
            var ds = new HubDataset(path, hub);
            if (ds.SplitGiven || !ds.Splits().Contains("train") || !ds.Splits().Contains("test")) return null;
            return (new HubDataset(path + ":train", hub).LocalFiles(), new HubDataset(path + ":test", hub).LocalFiles());
        }
        if (!Directory.Exists(path) || HfDiskDataset.IsSavedDataset(path)) return null;
        var files = Directory.EnumerateFiles(path, "*", SearchOption.AllDirectories).Where(f => KindOf(f) != FileKind.Unknown)
            .Select(f => Path.GetRelativePath(path, f).Replace('\\', '/')).OrderBy(f => f, StringComparer.Ordinal).ToList();
        var splits = HubDataset.SplitFiles(files);
        var train = splits.FirstOrDefault(s => s.Split == "train").Files;
        var test = splits.FirstOrDefault(s => s.Split == "test").Files;
        if (train is null || test is null) return null;
        return (train.Select(f => Path.Combine(path, f)), test.Select(f => Path.Combine(path, f)));
    }

    private static SaeSharpException Unsupported(string file) =>
        new SaeSharpException($"dataset file '{file}': unsupported extension (expected .txt, .jsonl, .parquet, .arrow, .txt.gz or .jsonl.gz)");

    internal static IEnumerable<(JsonElement Element, long LineNo)> JsonLines(string path)
    {
        RequireFile(path);
        using var reader = OpenText(path);
        long lineNo = 0;
        foreach (var line in Lines(reader, path, MaxLineChars))
        {
            lineNo++;
            if (string.IsNullOrWhiteSpace(line)) continue;
            JsonElement element;
            try
            {
                using var doc = JsonDocument.Parse(line);
                element = doc.RootElement.Clone();
            }
            catch (JsonException e)
            {
                throw new SaeSharpException($"{path} line {lineNo}: invalid JSON ({e.Message})", e);
            }
            if (element.ValueKind != JsonValueKind.Object)
                throw new SaeSharpException($"{path} line {lineNo}: expected a JSON object, got {element.ValueKind}");
            yield return (element, lineNo);
        }
    }

    /// <summary>The longest line (document) read from a .txt or .jsonl file, in characters: a compressed file can
    /// hold a line of gigabytes in a few kilobytes.</summary>
    internal const int MaxLineChars = 64 << 20;

    /// <summary>The longest .txt file read as one document (<see cref="TxtMode.WholeFile"/>), in characters.</summary>
    internal const int MaxWholeFileChars = 512 << 20;

    /// <summary>The lines of <paramref name="reader"/> as <see cref="TextReader.ReadLine"/> splits them (at \n, \r or
    /// \r\n), or the whole text as one when <paramref name="splitLines"/> is false, refusing one longer than
    /// <paramref name="maxChars"/> before it is all in memory.</summary>
    internal static IEnumerable<string> Lines(TextReader reader, string path, int maxChars, bool splitLines = true)
    {
        var line = new System.Text.StringBuilder();
        var buffer = new char[1 << 16];
        bool afterCr = false;
        long lineNo = 1;
        int n;
        while ((n = ReadChunk(reader, buffer, path)) > 0)
        {
            int start = 0;
            for (int i = 0; i < n && splitLines; i++)
            {
                char c = buffer[i];
                if (c == '\n' && afterCr)
                {
                    afterCr = false;
                    start = i + 1;
                    continue;
                }
                afterCr = c == '\r';
                if (c is not ('\n' or '\r')) continue;
                line.Append(buffer, start, i - start);
                if (line.Length > maxChars) throw TooLong(path, lineNo, maxChars, splitLines);
                yield return line.ToString();
                line.Clear();
                lineNo++;
                start = i + 1;
            }
            line.Append(buffer, start, n - start);
            if (line.Length > maxChars) throw TooLong(path, lineNo, maxChars, splitLines);
        }
        if (line.Length > 0 || !splitLines) yield return line.ToString();
    }

    /// <summary>One block of characters; a corrupt .gz file is one clear error (GZipStream's InvalidDataException).</summary>
    private static int ReadChunk(TextReader reader, char[] buffer, string path)
    {
        try
        {
            return reader.Read(buffer, 0, buffer.Length);
        }
        catch (InvalidDataException e)
        {
            throw new SaeSharpException($"{path}: the compressed data is corrupt ({e.Message})", e);
        }
    }

    private static SaeSharpException TooLong(string path, long lineNo, int maxChars, bool splitLines) =>
        new(splitLines
            ? $"{path} line {lineNo}: longer than {maxChars:N0} characters (a corrupt or hostile file, or one document too large for a line)"
            : $"{path}: longer than {maxChars:N0} characters, too large to read as one document");

    private static StreamReader OpenText(string path)
    {
        Stream s = File.OpenRead(path);
        if (path.EndsWith(".gz", StringComparison.OrdinalIgnoreCase)) s = new GZipStream(s, CompressionMode.Decompress);
        return new StreamReader(s, System.Text.Encoding.UTF8, detectEncodingFromByteOrderMarks: true, bufferSize: 1 << 16);
    }

    private static DataField FindColumn(ParquetReader reader, string column, string path)
    {
        ParquetSchema schema;
        try
        {
            schema = reader.Schema;
        }
        catch (Exception e) when (e is not SaeSharpException and not OutOfMemoryException)
        {
            throw new SaeSharpException($"{path}: the Parquet schema cannot be read, the file is corrupt ({e.GetType().Name}: {e.Message})", e);
        }
        var top = schema.Fields.FirstOrDefault(f => f.Name == column);
        // A field of a struct column (europarl's translation.en) by its dotted path, when no top column has that name.
        if (top is null && column.Split('.') is [var structName, var member]
            && schema.Fields.FirstOrDefault(f => f.Name == structName) is StructField st)
        {
            return st.Fields.FirstOrDefault(f => f.Name == member) as DataField ?? throw new SaeSharpException(
                $"{path}: struct column '{structName}' has no string field '{member}' (fields: {string.Join(", ", st.Fields.Select(f => f.Name))})");
        }
        return top switch
        {
            DataField d => d,
            ListField { Item: DataField item } => item,
            null => throw new SaeSharpException(
                $"{path}: no column '{column}' (columns: {string.Join(", ", schema.Fields.Select(f => f.Name))})"),
            _ => throw new SaeSharpException($"{path}: column '{column}' is a {top.SchemaType}, expected strings or a list of ints"),
        };
    }

    private static void RequireFile(string path)
    {
        if (!File.Exists(path)) throw new SaeSharpException($"dataset file '{path}' does not exist");
    }

    private static T Sync<T>(Task<T> task) => task.GetAwaiter().GetResult();
    private static T Sync<T>(ValueTask<T> task) => task.AsTask().GetAwaiter().GetResult();
    private static void Sync(Task task) => task.GetAwaiter().GetResult();
    private static void Sync(ValueTask task) => task.AsTask().GetAwaiter().GetResult();
}
