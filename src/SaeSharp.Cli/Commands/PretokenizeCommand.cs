using System.Globalization;
using System.Numerics;
using System.CommandLine;
using SaeSharp.Data;
using SaeSharp.Tokenizers;

namespace SaeSharp.Cli.Commands;

/// <summary><c>sae pretokenize</c>: SAELens's <c>PretokenizeRunner</c>: a text dataset tokenized and cut into rows once,
/// written as a <c>datasets</c> <c>save_to_disk</c> folder (or Parquet) with <c>sae_lens.json</c>.</summary>
internal static class PretokenizeCommand
{
    public static Command Create()
    {
        var tokenizer = new Option<string?>("--tokenizer") { Description = "Tokenizer: builtin, a Hugging Face model id or a local model folder (tokenizer_name)" };
        var model = new Option<string?>("--model") { Description = "Same as --tokenizer: builtin, a Hugging Face model id or a local model folder whose tokenizer is used" };
        var revision = ModelSource.RevisionOption();
        revision.Description = "A branch, tag or commit of the --tokenizer (--model) repo on the Hugging Face hub (default main), recorded in sae_lens.json as tokenizer_revision";
        var dataset = new Option<string?>("--dataset") { Description = ".txt, .jsonl, .parquet, .arrow (or a folder of them), or hf:ORG/NAME[:SPLIT] (dataset_path)" };
        var contextSize = new Option<int?>("--context-size") { Description = "Tokens per row (default 128)" }.Positive();
        var output = new Option<string?>("--out") { Description = "Output folder (save_path): save_to_disk layout + sae_lens.json" };
        var shuffle = new Option<bool>("--shuffle") { Description = "Shuffle the rows (the default)" };
        var noShuffle = new Option<bool>("--no-shuffle") { Description = "Keep the rows in document order" };
        var seed = new Option<BigInteger?>("--seed")
        {
            Description = "Shuffle seed: the row order datasets' shuffle(seed) gives (default: a random one, as SAELens's seed None)",
            CustomParser = r =>
            {
                string text = r.Tokens[0].Value;
                if (BigInteger.TryParse(text, NumberStyles.None, CultureInfo.InvariantCulture, out var value)) return value;
                r.AddError($"--seed {text}: expected an integer 0 or more");
                return null;
            },
        };
        var beginBatch = new Option<string?>("--begin-batch-token") { Description = "Token at the start of every row: bos (default), eos, sep, an id, or none" };
        var beginSequence = new Option<string?>("--begin-sequence-token") { Description = "Token before every document: bos, eos, sep, an id, or none (default)" };
        var separator = new Option<string?>("--sequence-separator-token") { Description = "Token between documents in a row: bos (default), eos, sep, an id, or none" };
        var disableConcat = new Option<bool>("--disable-concat-sequences") { Description = "One row per document (its first tokens); shorter documents dropped" };
        var column = new Option<string?>("--column") { Description = "jsonl field / parquet or arrow column holding the text (default text)" };
        var format = new Option<string>("--format") { Description = "arrow: datasets save_to_disk folder (as SAELens's save_path); parquet: data/train-*.parquet (as its hub upload)", DefaultValueFactory = _ => "arrow" };
        format.AcceptOnlyFromAmong("arrow", "parquet");
        var numProc = new Option<int?>("--num-proc") { Description = "SAELens's num_proc (default 4): the documents are cut into this many shards, concatenation restarting at each" }.Positive();
        var batchSize = new Option<int?>("--batch-size") { Description = "SAELens's pretokenize_batch_size (default 1000): concatenation restarts every N documents; 0: never" }.NonNegative();
        var force = new Option<bool>("--force") { Description = "Replace a dataset folder written before at --out" };
        var config = new Option<string?>("--config") { Description = "JSON file of SAELens PretokenizeRunnerConfig fields; flags given win over them" };
        var command = new Command("pretokenize", "Tokenize a text dataset into rows of context-size tokens, as SAELens's PretokenizeRunner")
        {
            tokenizer, model, revision, dataset, contextSize, output, shuffle, noShuffle, seed, beginBatch, beginSequence, separator, disableConcat,
            column, format, numProc, batchSize, force, config,
        };
        Cli.SetAction(command, parse =>
        {
            var s = parse.GetValue(config) is { } cfgPath ? PretokenizeSettings.FromJson(cfgPath) : new PretokenizeSettings();
            bool fromConfig = parse.GetValue(config) is not null;
            foreach (var note in s.Notes) Cli.ErrorLine($"note: {parse.GetValue(config)}: {note}");
            if (parse.GetValue(tokenizer) is { } t1 && parse.GetValue(model) is { } m1 && t1 != m1)
                throw new SaeSharpException("--tokenizer and --model name different tokenizers; give one");
            string? tokName = parse.GetValue(tokenizer) ?? parse.GetValue(model) ?? (fromConfig ? s.TokenizerName : null);
            if (tokName is null) throw new SaeSharpException("give --tokenizer (or --model): builtin, a Hugging Face model id or a model folder");
            string? tokRevision = parse.GetValue(revision);
            string data = parse.GetValue(dataset) ?? (fromConfig && s.DatasetPath.Length > 0 ? s.DatasetPath : null)
                          ?? throw new SaeSharpException("give --dataset (or dataset_path in --config)");
            if (!TextDataset.Exists(data)) throw new SaeSharpException($"--dataset {data}: no such file or folder");
            string outDir = parse.GetValue(output) ?? s.SavePath ?? throw new SaeSharpException("give --out (or save_path in --config)");
            if (parse.GetValue(shuffle) && parse.GetValue(noShuffle)) throw new SaeSharpException("give --shuffle or --no-shuffle, not both");
            s = s with
            {
                TokenizerName = tokName,
                TokenizerRevision = tokRevision,
                DatasetPath = HubDataset.RecordedPath(data),
                SavePath = outDir,
                ContextSize = parse.GetValue(contextSize) ?? s.ContextSize,
                ColumnName = parse.GetValue(column) ?? s.ColumnName,
                Shuffle = parse.GetValue(noShuffle) ? false : parse.GetValue(shuffle) || s.Shuffle,
                Seed = parse.GetValue(seed) ?? s.Seed,
                DisableConcatSequences = parse.GetValue(disableConcat) || s.DisableConcatSequences,
                NumProc = parse.GetValue(numProc) ?? s.NumProc,
                PretokenizeBatchSize = parse.GetResult(batchSize) is { Implicit: false } ? parse.GetValue(batchSize) : s.PretokenizeBatchSize,
                BeginBatchToken = Token(parse, beginBatch, s.BeginBatchToken),
                BeginSequenceToken = Token(parse, beginSequence, s.BeginSequenceToken),
                SequenceSeparatorToken = Token(parse, separator, s.SequenceSeparatorToken),
            };
            if (HubDataset.IsHubDataset(data)) s = s with { Split = new HubDataset(data).Split };
            s.Validate();
            // Resolved (an unknown revision refused, naming the repo) before anything is read or written.
            string tokFolder = ModelSource.Resolve(tokName, tokRevision);
            OutputGuard.RefuseReplacingInput("--out", outDir, [], new CommandInput("--dataset", data, InputKind.Whole));
            Pretokenizer.CheckOutput(outDir, parse.GetValue(force));
            var tok = Tokenizer.FromFolder(tokFolder);
            foreach (var (name, spec) in new[] { ("--begin-batch-token", s.BeginBatchToken), ("--begin-sequence-token", s.BeginSequenceToken), ("--sequence-separator-token", s.SequenceSeparatorToken) })
                if (spec is { Name: { } n } && spec.Resolve(tok) is null)
                    CliProgress.Warn($"warning: {name} {n}: no {n.ToUpperInvariant()} in this tokenizer, none is put");
            var result = CliProgress.Run("pretokenize", progress => Pretokenizer.Run(data, tok, s, progress));
            var written = Pretokenizer.Save(outDir, result.Rows, s, parse.GetValue(format) == "parquet" ? PretokenizedFormat.Parquet : PretokenizedFormat.Arrow,
                parse.GetValue(force));
            Cli.WriteIndented(Spectre.Console.Markup.Escape($"wrote {Cli.Integer(result.Rows.Count)} rows of {s.ContextSize} tokens ({Cli.Integer(result.Tokens)} tokens) from " +
                              $"{Cli.Integer(result.Documents)} documents to {outDir}"), 0);
            Console.WriteLine($"  {string.Join(", ", written.Take(2))}{(written.Count > 2 ? $", … ({written.Count} shards)" : "")}, {PretokenizedMetadata.FileName}");
            return 0;
        });
        return command;
    }

    private static PretokenizeToken? Token(ParseResult parse, Option<string?> option, PretokenizeToken? fallback) =>
        parse.GetResult(option) is { Implicit: false } ? PretokenizeToken.Parse(parse.GetValue(option), option.Name) : fallback;
}
