using System.CommandLine;
using System.Globalization;
using System.Text.Json;
using SaeSharp.Interventions;
using SaeSharp.IO;
using SaeSharp.Models;
using SaeSharp.Pipelines;
using SaeSharp.Tokenizers;
using static TorchSharp.torch;

namespace SaeSharp.Cli.Commands;

/// <summary><c>sae model run|generate|tokenize|info|test-prompt</c>: the hooked language models on their own.</summary>
internal static class ModelCommands
{
    public static Option<string> ModelOption(bool required = true) => ModelSource.AtRevision<string>(new("--model")
    {
        Description = "builtin (the model SaeSharp ships), a Hugging Face model id (downloaded to the hub cache) or a local model folder",
        Required = required,
    });

    /// <summary><c>--freq-penalty</c> (TransformerLens's <c>freq_penalty</c>) and <c>--repetition-penalty</c> (Hugging Face's
    /// <c>repetition_penalty</c>) of every command that generates (<see cref="GenerationOptions.FreqPenalty"/>,
    /// <see cref="GenerationOptions.RepetitionPenalty"/>): they change greedy decoding too.</summary>
    internal sealed class PenaltyOptions
    {
        public readonly Option<double?> FreqPenalty = new("--freq-penalty")
        {
            Description = "Subtract this × (times a token occurred in the prompt and continuation so far) from its logit, after temperature (TransformerLens freq_penalty; 0 = none)",
        };
        public readonly Option<double?> RepetitionPenalty = new("--repetition-penalty")
        {
            Description = "Divide (positive) or multiply (negative) the logit of every token already in the prompt or continuation by this, before temperature (Hugging Face repetition_penalty; 1 = none)",
        };

        /// <summary>Both options.</summary>
        public Option[] All => [FreqPenalty, RepetitionPenalty];

        public void AddTo(Command c)
        {
            foreach (var o in All) c.Options.Add(o);
        }

        /// <summary>Refuses a non-finite <c>--freq-penalty</c> and a <c>--repetition-penalty</c> that is not finite and &gt; 0.</summary>
        public void Validate(ParseResult parse)
        {
            if (parse.GetValue(FreqPenalty) is double f && !double.IsFinite(f))
                throw new SaeSharpException($"--freq-penalty {Format(f)}: expected a finite number (0 = no penalty)");
            if (parse.GetValue(RepetitionPenalty) is double r && (!(r > 0) || !double.IsFinite(r)))
                throw new SaeSharpException($"--repetition-penalty {Format(r)}: expected a finite number > 0 (1 = no penalty; > 1 discourages repeats)");
        }

        /// <summary><paramref name="o"/> with the penalties of the command line (validated).</summary>
        public GenerationOptions Apply(ParseResult parse, GenerationOptions o)
        {
            Validate(parse);
            return o with { FreqPenalty = parse.GetValue(FreqPenalty) ?? 0, RepetitionPenalty = parse.GetValue(RepetitionPenalty) ?? 1 };
        }

        /// <summary>"repetition penalty 1.3", "frequency penalty 0.5" for the penalties given.</summary>
        public IEnumerable<string> Describe(ParseResult parse)
        {
            if (parse.GetValue(RepetitionPenalty) is double r) yield return $"repetition penalty {Format(r)}";
            if (parse.GetValue(FreqPenalty) is double f) yield return $"frequency penalty {Format(f)}";
        }

        private static string Format(double v) => v.ToString(System.Globalization.CultureInfo.InvariantCulture);
    }

    /// <summary><c>--temperature</c>, <c>--top-k</c>, <c>--top-p</c>, <c>--seed</c> and the penalties (<see cref="PenaltyOptions"/>)
    /// of <c>sae model generate</c>, <c>sae model run --generate</c> and <c>sae intervene --generate</c>: greedy by default;
    /// top-k, top-p and seed refused at temperature 0, which they do not change (the penalties do change it).</summary>
    internal sealed class SamplingOptions
    {
        public readonly Option<double> Temperature = new("--temperature") { Description = "0 = greedy (the default); otherwise sample at this temperature", DefaultValueFactory = _ => 0.0 };
        public readonly Option<int?> TopK = new Option<int?>("--top-k") { Description = "Sample from the k most likely tokens" }.Positive();
        public readonly Option<double?> TopP = new("--top-p") { Description = "Nucleus sampling mass" };
        public readonly Option<ulong?> Seed = new("--seed") { Description = "Sampling seed" };
        public readonly Option<bool> NoKvCache = new("--no-kv-cache")
        {
            Description = "Run the whole sequence again at every new token instead of caching keys and values (TransformerLens use_past_kv_cache=False): the same tokens, slower",
        };
        public readonly PenaltyOptions Penalties = new();
        private bool _kvCacheOption;

        /// <summary>Adds the options to <paramref name="c"/>; <paramref name="kvCacheOption"/>: also <c>--no-kv-cache</c>
        /// (not where generation needs the cache: <c>sae intervene</c>).</summary>
        public void AddTo(Command c, bool kvCacheOption = true)
        {
            foreach (var o in new Option[] { Temperature, TopK, TopP, Seed }) c.Options.Add(o);
            if (_kvCacheOption = kvCacheOption) c.Options.Add(NoKvCache);
            Penalties.AddTo(c);
        }

        /// <summary>Refuses bad penalties (<see cref="PenaltyOptions.Validate"/>) and the sampling options at temperature 0
        /// (greedy decoding, which they do not change).</summary>
        public void RefuseWhenGreedy(ParseResult parse, bool seedUsed = false)
        {
            Penalties.Validate(parse);
            if (parse.GetValue(Temperature) == 0)
                Cli.RefuseGiven(parse, "sampling options; --temperature 0 (the default) is greedy decoding, which they do not change (give --temperature > 0 to sample)",
                    seedUsed ? [TopK, TopP] : [TopK, TopP, Seed]);
        }

        /// <summary>Refuses all the options when a command's <c>--generate</c> asks for no new tokens
        /// (<paramref name="newTokens"/> 0), and the sampling options at temperature 0 (<see cref="RefuseWhenGreedy"/>);
        /// <paramref name="seedUsed"/>: <c>--seed</c> also seeds something else (<c>sae model run --repeated-random</c>).</summary>
        public void RefuseWithoutGeneration(ParseResult parse, int newTokens, bool seedUsed = false)
        {
            if (newTokens == 0)
                Cli.RefuseGiven(parse, "how --generate chooses the new tokens; give --generate N",
                    [Temperature, TopK, TopP, .. seedUsed ? Array.Empty<Option>() : [Seed], .. Penalties.All, .. _kvCacheOption ? [NoKvCache] : Array.Empty<Option>()]);
            RefuseWhenGreedy(parse, seedUsed);
        }

        /// <summary>Whether <c>--temperature</c> asks for sampling.</summary>
        public bool Sampling(ParseResult parse) => parse.GetValue(Temperature) != 0;

        /// <summary>The options of the command line, stopping at any of <paramref name="eos"/> (<see cref="HookedTransformer.StopTokenIds"/>); <paramref name="seed"/> replaces <c>--seed</c>.</summary>
        public GenerationOptions Options(ParseResult parse, IReadOnlyList<long>? eos, ulong? seed = null) => Penalties.Apply(parse, new()
        {
            Temperature = parse.GetValue(Temperature),
            TopK = parse.GetValue(TopK),
            TopP = parse.GetValue(TopP),
            Seed = seed ?? parse.GetValue(Seed),
            EosTokenIds = eos,
            UseKvCache = !_kvCacheOption || !parse.GetValue(NoKvCache),
        });

        /// <summary>The seed that both continuations of <c>sae model run --generate</c> share when sampling: <c>--seed</c>, or
        /// one drawn here (and shown) so that the clean and the edited continuation still draw the same random numbers.</summary>
        public ulong? PairSeed(ParseResult parse) =>
            !Sampling(parse) ? null : parse.GetValue(Seed) ?? (ulong)Random.Shared.NextInt64(0, int.MaxValue);

        /// <summary>How the continuations were chosen: <c>greedy</c>, <c>greedy (repetition penalty 1.3)</c>, or
        /// <c>sampled (temperature 0.8, top-k 5, seed 3)</c>.</summary>
        public string Describe(ParseResult parse, ulong? seed)
        {
            var parts = !Sampling(parse) ? new List<string>() : new[]
            {
                $"temperature {parse.GetValue(Temperature).ToString(System.Globalization.CultureInfo.InvariantCulture)}",
                parse.GetValue(TopK) is int k ? $"top-k {k}" : null,
                parse.GetValue(TopP) is double p ? $"top-p {p.ToString(System.Globalization.CultureInfo.InvariantCulture)}" : null,
            }.OfType<string>().ToList();
            parts.AddRange(Penalties.Describe(parse));
            if (Sampling(parse) && seed is ulong sd) parts.Add($"seed {sd}");
            return (Sampling(parse) ? "sampled" : "greedy") + (parts.Count == 0 ? "" : $" ({string.Join(", ", parts)})");
        }
    }

    /// <summary><c>--ablate-head L.H</c> (repeatable), <c>--ablate-head-mode zero|mean</c>, <c>--ablate-positions</c> and the
    /// reference set of a mean (<c>--mean-over</c>, <c>--mean-prompt</c>) of <c>sae model run</c> and <c>sae model logit-attrs</c>:
    /// TransformerLens's head ablation hooks (<see cref="HeadAblation"/>).</summary>
    internal sealed class HeadAblationOptions
    {
        public readonly Option<string[]> Heads = new("--ablate-head")
        {
            Description = "LAYER.HEAD (e.g. 0.8, or L0H8): replace this head's hook_z (at every position, or at --ablate-positions; repeatable; a head named twice counts once), " +
                          "as TransformerLens's head ablation hook",
            AllowMultipleArgumentsPerToken = false,
        };
        public readonly Option<string> Mode = new("--ablate-head-mode")
        {
            Description = "zero, or mean (the head's mean z: over the run's own rows and positions, or over --mean-over / --mean-prompt)",
            DefaultValueFactory = _ => "zero",
        };
        public readonly Option<string?> Positions = new("--ablate-positions")
        {
            Description = "Comma-separated positions where --ablate-head ablates, negative ones from the end (-1 the last token, as TransformerLens's " +
                          "Exploratory Analysis Demo); default: every position",
        };
        public readonly Option<string?> MeanOver = new("--mean-over")
        {
            Description = "--ablate-head-mode mean: the head's mean z over the tokens [batch, seq] of this safetensors file (as --input), or over a text dataset " +
                          "(.txt, .jsonl, .parquet, a folder of them or hf:ORG/NAME[:SPLIT], as --dataset) tokenized by the model, in the model's own run " +
                          "(no --sae), not over the run itself",
        };
        public readonly Option<long> MeanTokens = new Option<long>("--mean-tokens")
        {
            Description = "--mean-over a text dataset: at most this many of its tokens, in windows of 128 (n_ctx when smaller) as SAELens's ActivationsStore cuts them",
            DefaultValueFactory = _ => DefaultMeanTokens,
        }.Positive();

        public readonly Option<string?> MeanTextField = new("--mean-text-field")
        {
            Description = "--mean-over a text dataset: the jsonl field / parquet column holding the text (default: as SAELens, tokens/input_ids, else text, else problem)",
        };

        /// <summary>The default of <c>--mean-tokens</c>.</summary>
        public const long DefaultMeanTokens = 8192;

        /// <summary>What the last <see cref="Hooks"/> took of a <c>--mean-over</c> text dataset, for <see cref="Describe"/>.</summary>
        private string? _meanOverRead;
        public readonly Option<string[]> MeanPrompts = new("--mean-prompt")
        {
            Description = "--ablate-head-mode mean: the head's mean z over this prompt's tokens (repeatable; with --mean-over too), not over the run itself",
            AllowMultipleArgumentsPerToken = false,
        };

        public HeadAblationOptions() => Mode.AcceptOnlyFromAmong("zero", "mean");

        public void AddTo(Command c)
        {
            c.Options.Add(Heads);
            c.Options.Add(Mode);
            c.Options.Add(Positions);
            c.Options.Add(MeanOver);
            c.Options.Add(MeanTokens);
            c.Options.Add(MeanTextField);
            c.Options.Add(MeanPrompts);
        }

        /// <summary>Whether any head is ablated; refuses the other options without one, and a reference set without mean ablation.</summary>
        public bool Given(ParseResult parse)
        {
            bool any = (parse.GetValue(Heads)?.Length ?? 0) > 0;
            if (!any) Cli.RefuseGiven(parse, "how and where --ablate-head ablates its heads; give --ablate-head", Mode, Positions, MeanOver, MeanTokens, MeanTextField, MeanPrompts);
            else if (parse.GetValue(Mode) != "mean") Cli.RefuseGiven(parse, "the reference set of a mean ablation; give --ablate-head-mode mean", MeanOver, MeanTokens, MeanTextField, MeanPrompts);
            else if (parse.GetValue(MeanOver) is not { } over || IsTokenFile(over))
                Cli.RefuseGiven(parse, "how a --mean-over text dataset is read; a safetensors file of token ids is read whole", MeanTokens, MeanTextField);
            else if (!SaeSharp.Data.TextDataset.Exists(over)) throw new SaeSharpException($"--mean-over {over}: no such file or folder");
            return any;
        }

        /// <summary>The heads of the command line (parsed, so that a typo fails before the model loads), and the positions.</summary>
        public List<AttentionHead> Parse(ParseResult parse)
        {
            ParsedPositions(parse);
            return (parse.GetValue(Heads) ?? []).Select(h => AttentionHead.Parse(h, "--ablate-head")).ToList();
        }

        private long[]? ParsedPositions(ParseResult parse)
        {
            if (parse.GetValue(Positions) is not { } text) return null;
            var parts = text.Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries);
            var at = new List<long>();
            foreach (var part in parts)
                at.Add(InterventionCommands.TryParsePosition(part, out long q) ? q
                    : throw new SaeSharpException($"--ablate-positions '{text}': expected comma-separated integers (negative ones count from the end, -1 the last token), e.g. 0,-1"));
            return at.Count == 0 ? throw new SaeSharpException($"--ablate-positions '{text}': give at least one position") : [.. at.Distinct()];
        }

        /// <summary>The ablation hooks for <paramref name="model"/> (heads checked against it), or null when no head is ablated. A
        /// reference mean is computed here (run with <paramref name="modelHooks"/>, prompts with BOS unless <paramref name="bos"/> is
        /// false); its tensors belong to the current dispose scope.</summary>
        public (string Name, Func<Tensor, Tensor?> Fn)[]? Hooks(ParseResult parse, HookedTransformer model, bool bos = true,
            IReadOnlyList<(string Name, Func<Tensor, Tensor?> Fn)>? modelHooks = null)
        {
            if (!Given(parse)) return null;
            var heads = Parse(parse);
            var kind = parse.GetValue(Mode) == "mean" ? HeadAblationKind.Mean : HeadAblationKind.Zero;
            Dictionary<AttentionHead, Tensor>? reference = null;
            if (Reference(parse))
            {
                var tokens = new List<Tensor>();
                var file = parse.GetValue(MeanOver);
                if (file is not null && IsTokenFile(file))
                {
                    tokens.Add(InterventionCommands.ReadTokens(file));
                    InterventionCommands.RefuseIdsOutsideVocabulary("--mean-over", file, tokens[0], model.Config.DVocab);
                }
                else if (file is not null)
                {
                    var (batches, windows, ctx) = DatasetWindows(model, file, bos, parse.GetValue(MeanTokens), parse.GetValue(MeanTextField));
                    tokens.AddRange(batches);
                    _meanOverRead = $"{windows} window{(windows == 1 ? "" : "s")} of {ctx} tokens: {windows * ctx} tokens";
                }
                tokens.AddRange((parse.GetValue(MeanPrompts) ?? []).Select(t => PromptTokens(model, t, bos, "--mean-prompt")));
                var detached = HeadAblation.MeanZ(model, heads, tokens, modelHooks, "--ablate-head");
                reference = detached.ToDictionary(kv => kv.Key, kv => { var kept = kv.Value.clone(); kv.Value.Dispose(); return kept; });
            }
            return HeadAblation.Hooks(model, heads, kind, "--ablate-head", ParsedPositions(parse), reference);
        }

        /// <summary>Refuses an <c>--ablate-positions</c> position outside one of several prompts (each runs on its own), naming
        /// that prompt, before any run.</summary>
        public void RefusePositionsOutside(ParseResult parse, IReadOnlyList<string> texts, IReadOnlyList<Tensor> tokens)
        {
            if (!Given(parse) || ParsedPositions(parse) is not { } positions) return;
            for (int i = 0; i < tokens.Count; i++)
            {
                long seq = tokens[i].shape[^1];
                foreach (long p in positions.Where(p => p >= seq || p < -seq))
                    throw new SaeSharpException($"--ablate-positions {p}: --prompt {i + 1} of {tokens.Count} ('{texts[i]}') has {seq} tokens " +
                                                $"(positions 0..{seq - 1}, or -{seq}..-1 from its end)");
            }
        }

        private bool Reference(ParseResult parse) => parse.GetValue(MeanOver) is not null || (parse.GetValue(MeanPrompts)?.Length ?? 0) > 0;

        /// <summary>A <c>--mean-over</c> of token ids (a <c>.safetensors</c> file, as <c>--input</c>) rather than a text dataset.</summary>
        private static bool IsTokenFile(string path) => path.EndsWith(".safetensors", StringComparison.OrdinalIgnoreCase);

        /// <summary>A <c>--mean-over</c> text dataset as token windows [windows, ctx], read by the one dataset reader
        /// (<see cref="SaeSharp.Data.TokenWindows.FromPath"/>, as <c>--dataset</c>): windows of 128 tokens (n_ctx, or
        /// <paramref name="maxTokens"/>, when smaller), BOS first unless <paramref name="bos"/> is false, as many whole windows
        /// as fit <paramref name="maxTokens"/>, in batches of <see cref="MeanBatchWindows"/> (one run each); fewer tokens than one
        /// window is refused naming the file.</summary>
        private static (List<Tensor> Batches, long Windows, int Ctx) DatasetWindows(HookedTransformer model, string path, bool bos, long maxTokens, string? textField)
        {
            int ctx = (int)Math.Min(Math.Min(128, model.Config.NCtx), maxTokens);
            if (bos && ctx < 2) throw new SaeSharpException($"--mean-tokens {maxTokens}: a window of BOS and at least one token needs 2");
            List<long[]> rows;
            // The dataset reader names the file; the flag is put first, as for every --mean-over refusal.
            try { rows = SaeSharp.Data.TokenWindows.FromPath(path, model.Tokenizer, ctx, bos, textField).Take((int)Math.Min(int.MaxValue, maxTokens / ctx)).ToList(); }
            catch (SaeSharpException e) when (!e.Message.StartsWith("--mean-over", StringComparison.Ordinal)) { throw new SaeSharpException($"--mean-over {path}: {e.Message.Replace("--text-field", "--mean-text-field", StringComparison.Ordinal)}", e); }
            if (rows.Count == 0)
                throw new SaeSharpException($"--mean-over {path}: fewer tokens than one window of {ctx} (with BOS first); give a longer text or a smaller --mean-tokens");
            var batches = rows.Chunk(MeanBatchWindows).Select(c => tensor(c.SelectMany(r => r).ToArray(), [c.Length, ctx])).ToList();
            return (batches, rows.Count, ctx);
        }

        /// <summary>Windows of a <c>--mean-over</c> text dataset run at once: a large <c>--mean-tokens</c> takes time, not memory.</summary>
        private const int MeanBatchWindows = 16;

        /// <summary>"L0H8 zero-ablated (hook_z at every position)" for the heads given, where and over what.</summary>
        public string Describe(ParseResult parse)
        {
            var over = new List<string>();
            if (parse.GetValue(MeanOver) is { } f) over.Add(_meanOverRead is null ? f : $"{f} ({_meanOverRead})");
            int prompts = parse.GetValue(MeanPrompts)?.Length ?? 0;
            if (prompts > 0) over.Add($"{prompts} --mean-prompt{(prompts == 1 ? "" : "s")}");
            string where = parse.GetValue(Positions) is { } p ? $"hook_z at positions {string.Join(",", ParsedPositions(parse)!)}" : "hook_z at every position";
            return $"{string.Join(", ", Parse(parse).Distinct())} {parse.GetValue(Mode)}-ablated ({where}{(over.Count > 0 ? $"; mean over {string.Join(" and ", over)}" : "")})";
        }
    }

    public static Command Create()
    {
        var command = new Command("model", "Run, inspect and sample from a hooked transformer language model");
        command.Subcommands.Add(Run());
        command.Subcommands.Add(Generate());
        command.Subcommands.Add(Tokenize());
        command.Subcommands.Add(Info());
        command.Subcommands.Add(TestPrompt());
        command.Subcommands.Add(LogitAttrs());
        command.Subcommands.Add(PatchCommands.Patch());
        command.Subcommands.Add(PatchCommands.PathPatch());
        command.Subcommands.Add(HeadScoresCommand());
        command.Subcommands.Add(Attention());
        command.Subcommands.Add(Circuits());
        command.Subcommands.Add(InductionLossCommand());
        return command;
    }

    private static Command Run()
    {
        var model = ModelOption();
        var revision = ModelSource.RevisionOption();
        var input = new Option<string?>("--input") { Description = "safetensors file holding an int64 tensor 'tokens' [batch, seq]" };
        var prompt = new Option<string[]>("--prompt")
        {
            Description = "Prompt text instead of --input: run on its tokens [1, seq] (BOS first when the tokenizer has one, as TransformerLens's run_with_cache(text)); " +
                          "they are saved as 'tokens'. Repeat it for several prompts, each run (and continued) on its own and saved with the suffix .0, .1, ...",
            AllowMultipleArgumentsPerToken = false,
        };
        var noBos = InterventionCommands.NoBosOption();
        var output = new Option<string?>("--out") { Description = "Output safetensors: 'logits' and each requested hook (required unless --metric is given)" };
        var hooks = new Option<string?>("--hooks") { Description = "'all' or a comma-separated list of hook names" };
        var metric = new Option<string[]>("--metric")
        {
            Description = "logit-diff:A,B | logit:A | loss, as sae attribute takes it: print it per prompt (each row of --input), clean and with --sae and its edits, and the mean. " +
                          "Give it once for every prompt, or once per prompt in order (the Hooked SAE demo's answer pair of each prompt)",
            AllowMultipleArgumentsPerToken = false,
        };
        var dtype = ModelSource.DtypeOption();
        var diffModel = ModelSource.AtRevision<string?>(new("--diff-model") { Description = "A model-diffing crosscoder (--sae): the second (chat) model, run clean on the same tokens to encode (same tokenizer)" }, ModelSource.DiffRevision);
        var slot = new Option<int?>("--slot") { Description = "A crosscoder (--sae): the slot whose model is run, spliced at every hook of its slots (default: the last slot)" };
        var generate = new Option<int>("--generate")
        {
            Description = "With --sae (SAEs or a crosscoder): also continue each prompt (each row of --input) up to this many tokens (stopping at EOS), clean and with the splice and edits, " +
                          "side by side (KV-cached; greedy, or sampled with --temperature, the two drawing the same random numbers)",
        }.NonNegative();
        var lossPerPosition = new Option<bool>("--loss-per-position")
        {
            Description = "Print the next-token loss at each position (mean over the rows), clean and with --ablate-head or --sae (TransformerLens loss_fn(per_token=True))",
        };
        var repeated = new Option<int?>("--repeated-random")
        {
            Description = "Run on N random tokens repeated twice instead of --input/--prompt (TransformerLens Main Demo: ids in [1000, 10000), or the whole vocabulary " +
                          "below 10000 ids; seeded by --seed, default 0)",
        }.Positive();
        var batch = new Option<int>("--batch") { Description = "Rows of --repeated-random", DefaultValueFactory = _ => 10 }.Positive();
        var command = new Command("run", "Run the model on token ids (or a --prompt) and save logits and hook activations, with SAEs (or a crosscoder) spliced and interventions applied")
        {
            model, input, prompt, noBos, output, hooks, metric, dtype, diffModel, slot, generate, lossPerPosition, repeated, batch,
        };
        var headAblation = new HeadAblationOptions();
        headAblation.AddTo(command);
        var edits = new InterventionCommands.RunEdits();
        edits.AddTo(command);
        var sampling = new SamplingOptions();
        sampling.AddTo(command);
        command.Options.Add(revision);
        Cli.SetAction(command, parse =>
        {
            edits.RefuseUnqualified(parse);
            var metricSpecs = parse.GetValue(metric) ?? [];
            bool ablated = headAblation.Given(parse), perPosition = parse.GetValue(lossPerPosition);
            int? repeatedLength = parse.GetValue(repeated);
            if (ablated)
            {
                if (parse.GetValue(edits.Sae)?.Any(SaeSharp.Interop.CrossCoderFormat.IsCrossCoderPath) == true)
                    throw new SaeSharpException("--ablate-head runs the model alone or with SAEs spliced; with a crosscoder (--sae CROSSCODER) it is not done");
                headAblation.Parse(parse);
                if (metricSpecs.Length == 0) metricSpecs = ["loss"];   // Main Demo cell 31: the loss before and after
                if (parse.GetValue(generate) > 0) throw new SaeSharpException("--generate continues a prompt with --sae spliced; with --ablate-head it is not done");
            }
            if (parse.GetValue(output) is null && metricSpecs.Length == 0 && !perPosition)
                throw new SaeSharpException("give --out (the file for the logits and hooks), --metric to print a metric per prompt, or --loss-per-position");
            RefuseReplacingRunInputs(parse, output, model, input, diffModel, edits.Sae, headAblation.MeanOver);
            int newTokens = parse.GetValue(generate);
            if (repeatedLength is null) Cli.RefuseGiven(parse, "the rows of --repeated-random; give --repeated-random N", batch);
            else
            {
                Cli.RefuseGiven(parse, "the tokens come from --repeated-random", input, prompt, noBos, generate);
                if (edits.Given(parse)) throw new SaeSharpException("--repeated-random runs the model alone (and with --ablate-head): give it without --sae");
            }
            sampling.RefuseWithoutGeneration(parse, newTokens, seedUsed: repeatedLength is not null);
            using var scope = NewDisposeScope();   // the cache, logits and SAE hooks' tensors (Conventions: no temporary outside a scope)
            var texts = parse.GetValue(prompt) ?? [];
            if (repeatedLength is not null) { }
            else if (texts.Length > 0) Cli.RefuseGiven(parse, "the tokens come from --prompt; give one of --prompt and --input", input);
            else if (parse.GetValue(input) is null) throw new SaeSharpException("give --input (a safetensors file of token ids), --prompt (text) or --repeated-random N");
            else Cli.RefuseGiven(parse, "for a --prompt's tokens; --input's token ids are used as they are", noBos);
            var promptTokenizer = texts.Length == 0 ? null : Tokenizer.FromFolder(ModelSource.Resolve(ModelSource.ModelAt(parse, model, revision)));
            var prompts = repeatedLength is int n
                ? [SaeSharp.Analysis.RepeatedRandomTokens.ForVocabulary(parse.GetValue(batch), n, VocabularySize(ModelSource.ModelAt(parse, model, revision)), parse.GetValue(sampling.Seed) ?? 0)]
                : texts.Length == 0 ? [InterventionCommands.ReadTokens(parse.GetValue(input)!)]
                : texts.Select(t => InterventionCommands.PromptTokens(promptTokenizer!, t, !parse.GetValue(noBos))).ToList();
            // A next-token loss needs 2 tokens: a prompt of BOS alone is named before any run.
            bool LossAt(int i) => perPosition || (metricSpecs.Length > 0 && metricSpecs[Math.Min(i, metricSpecs.Length - 1)].Trim() == "loss");
            var lossPrompts = Enumerable.Range(0, texts.Length).Where(LossAt).ToList();
            string lossUse = perPosition ? "--loss-per-position" : parse.GetValue(metric) is { Length: > 0 } ? "--metric loss" : "the loss (--ablate-head's default metric)";
            InterventionCommands.RefuseFewerThanTwoTokens("--prompt", [.. lossPrompts.Select(i => texts[i])], [.. lossPrompts.Select(i => prompts[i])], lossUse);
            if (texts.Length == 0 && repeatedLength is null && prompts[0].shape[1] < 2 && Enumerable.Range(0, (int)prompts[0].shape[0]).Any(LossAt))
                throw new SaeSharpException($"--input {parse.GetValue(input)}: its rows have 1 token each ('tokens' [{string.Join(", ", prompts[0].shape)}]), and {lossUse} " +
                                            "needs at least 2 (a next-token loss); give rows of 2 tokens or more");
            var generation = new GenerationRequest(newTokens, sampling, parse, texts);
            if (newTokens > 0 && texts.Length == 0 && prompts[0].shape[0] > 1)
            {
                // --input [batch, seq] with --generate: each row a prompt of its own, as repeated --prompt (run and continued on its
                // own, saved with the suffix .0, .1, ...), headed by its text.
                var rows = prompts[0];
                prompts = Enumerable.Range(0, (int)rows.shape[0]).Select(r => rows.narrow(0, r, 1).clone()).ToList();
                rows.Dispose();
                var rowTokenizer = Tokenizer.FromFolder(ModelSource.Resolve(ModelSource.ModelAt(parse, model, revision)));
                generation = new GenerationRequest(newTokens, sampling, parse,
                    prompts.Select(t => DecodeShowingUnknownIds(rowTokenizer, t[0].data<long>().Select(v => (int)v).ToList())).ToArray(), "row");
            }
            var hookArg = parse.GetValue(hooks);
            var metrics = MetricsPerPrompt(metricSpecs, prompts, ModelSource.ModelAt(parse, model, revision), promptTokenizer);
            if (parse.GetValue(edits.Sae)?.FirstOrDefault(SaeSharp.Interop.CrossCoderFormat.IsCrossCoderPath) is string ccPath)
            {
                Cli.RefuseGiven(parse, "for a model run with SAEs; a crosscoder run saves its logits with --out", metric, lossPerPosition);
                return CrossCoderCli.ModelRun(parse, edits, ccPath, ModelSource.Resolve(ModelSource.ModelAt(parse, model, revision)),
                    parse.GetValue(diffModel) is { } dm ? ModelSource.Resolve(dm) : null, parse.GetValue(slot), parse.GetValue(dtype)!,
                    prompts, texts.Length > 0, hookArg, parse.GetValue(output)!, generation);
            }
            Cli.RefuseGiven(parse, "for a crosscoder (--sae CROSSCODER)", diffModel, slot);
            ITextTokenizer? generationTokenizer = null;
            if (newTokens > 0)
            {
                if ((parse.GetValue(edits.Sae)?.Length ?? 0) == 0)
                    throw new SaeSharpException("--generate continues the prompt clean and with --sae spliced, side by side: give --sae (a plain continuation: sae model generate)");
                // Before anything is written: the continuations are shown as text.
                generationTokenizer = Tokenizer.FromFolder(ModelSource.Resolve(ModelSource.ModelAt(parse, model, revision)));
            }
            var saes = new List<SaeSharp.Saes.Sae>();
            var runs = new List<SavedRun>();
            try
            {
                var paths = parse.GetValue(edits.Sae) ?? [];
                foreach (var p in paths) saes.Add(InterventionCommands.LoadSae(p));
                // With --sae, the model as the SAEs' cfgs record it (weight processing, and dtype unless --dtype is given), as sae eval --model runs it.
                var folder = ModelSource.Resolve(ModelSource.ModelAt(parse, model, revision));
                using var pm = ModelForSae.Load(folder, ModelForSae.SharedOptions(saes.Select(s => s.Cfg)),
                    saes.Count == 0 || parse.GetResult(dtype) is { Implicit: false } ? ModelLoader.ParseDtype(parse.GetValue(dtype)!, folder)
                        : ModelForSae.SharedDtype(saes, paths));
                var m = pm.Model;
                if (texts.Length == 0 && repeatedLength is null)
                    foreach (var t in prompts)
                    {
                        InterventionCommands.RefuseIdsOutsideVocabulary("--input", parse.GetValue(input)!, t, m.Config.DVocab);
                        RefusePastContext(m, t, $"--input {parse.GetValue(input)}", "give shorter rows");
                    }
                for (int i = 0; i < texts.Length; i++)
                    RefusePastContext(m, prompts[i], $"--prompt {PromptName(texts[i])}", "give a shorter prompt");
                if (repeatedLength is not null)
                    RefusePastContext(m, prompts[0], $"--repeated-random {repeatedLength}", "give a shorter N");
                for (int i = 0; i < prompts.Count && newTokens > 0; i++)
                    RefuseGenerationPastContext(m, prompts[i].shape[1], newTokens, "--generate", generation.PromptName(i));
                var notes = new List<string>();
                string? spliced = null;
                var (metricClean, metricEdited) = (new List<double>(), new List<double>());
                var ablationHooks = headAblation.Hooks(parse, m, texts.Length == 0 || !parse.GetValue(noBos), pm.Hooks);
                var positionLosses = new List<(double[] Clean, double[]? Ablated)>();
                for (int i = 0; i < prompts.Count; i++)
                {
                    var tokens = prompts[i];
                    var rowMetrics = metrics is null ? null : metrics.Count == 1 ? metrics : metrics.GetRange(metricClean.Count, (int)tokens.shape[0]);
                    if (newTokens == 0 && PastContextNote(m, tokens.shape[1]) is { } past) notes.Add($"{(prompts.Count == 1 ? "" : $"run {i}: ")}{past}");
                    if (edits.Given(parse))
                    {
                        // With --ablate-head the heads are ablated in the run with the SAEs spliced (after the weight processing's hooks).
                        var (hooked, list) = edits.Build(parse, m, tokens, saes, ablationHooks is null ? pm.Hooks : [.. pm.Hooks, .. ablationHooks], newTokens,
                            generation.PromptName(i));
                        var names = hookArg is null ? [] : hooked.SelectHooks(hookArg);
                        // The saved run covers the prompt only: steering at positions of new tokens steers the continuation alone.
                        var (logits, cache) = hooked.RunWithCache(tokens, names, PromptEdits(list, tokens.shape[1]));
                        var run = new SavedRun(logits!, texts.Length == 0 ? null : tokens, names, cache);
                        runs.Add(run);
                        if (rowMetrics is not null || perPosition)
                        {
                            using var _ = no_grad();
                            using var clean = pm.Forward(tokens);
                            if (rowMetrics is not null)
                            {
                                metricEdited.AddRange(AttributionMetric.EvaluateRows(rowMetrics, logits!, tokens));
                                metricClean.AddRange(AttributionMetric.EvaluateRows(rowMetrics, clean, tokens));
                            }
                            if (perPosition) positionLosses.Add((TokenLosses.LossByPosition(clean, tokens), TokenLosses.LossByPosition(logits!, tokens)));
                        }
                        // The continuations before the file is written, so that a failing generation (beyond the context length) writes nothing.
                        if (newTokens > 0)
                            spliced = Continuations(hooked, list, parse.GetValue(edits.ErrorTerm), generationTokenizer!, tokens, generation, run, notes, generation.NotePrefix(i));
                    }
                    else
                    {
                        var names = hookArg is null ? [] : m.HookPoints.Select(hookArg);
                        // With --ablate-head the saved run is the ablated one (TransformerLens run_with_hooks), compared with a clean forward.
                        var (logits, cache) = m.RunWithCache(tokens, new RunOptions { CacheNames = names, Hooks = ablationHooks });
                        runs.Add(new SavedRun(logits!, texts.Length == 0 ? null : tokens, names, cache));
                        using var _ = no_grad();
                        using var clean = ablationHooks is null ? null : m.Forward(tokens);
                        if (rowMetrics is not null)
                        {
                            metricClean.AddRange(AttributionMetric.EvaluateRows(rowMetrics, clean ?? logits!, tokens));
                            if (clean is not null) metricEdited.AddRange(AttributionMetric.EvaluateRows(rowMetrics, logits!, tokens));
                        }
                        if (perPosition)
                            positionLosses.Add((TokenLosses.LossByPosition(clean ?? logits!, tokens), clean is null ? null : TokenLosses.LossByPosition(logits!, tokens)));
                    }
                }
                string editedHeading = (ablated && edits.Given(parse) ? "SAE+" : "") + (ablated ? "ablated" : edits.Edits(parse) ? "edited" : "spliced");
                if (ablated) Console.WriteLine(headAblation.Describe(parse));
                if (metrics is not null)
                    WriteMetricPerPrompt(metrics, texts.Length > 0 ? texts : null, metricClean, edits.Given(parse) || ablated ? metricEdited : null,
                        editedHeading, promptTokenizer ?? MetricTokenizer(ModelSource.ModelAt(parse, model, revision)));
                for (int i = 0; i < positionLosses.Count; i++)
                    WriteLossPerPosition(positionLosses[i], editedHeading, prompts[i], prompts.Count > 1 ? generation.PromptName(i) : null, repeatedLength,
                        promptTokenizer ?? MetricTokenizer(ModelSource.ModelAt(parse, model, revision)));
                if (spliced is not null) Console.WriteLine($"{spliced} of {ModelLoader.NameOf(folder)}");
                if (parse.GetValue(output) is { } outPath) SaveRuns(outPath, runs);
                generation.WriteContinuations(runs, ModelLoader.NameOf(folder));
                foreach (var note in notes) Cli.ErrorLine($"note: {note}");
            }
            finally
            {
                foreach (var r in runs) r.Dispose();
                foreach (var s in saes) s.Dispose();
                foreach (var t in prompts) t.Dispose();
            }
            return 0;
        });
        return command;
    }

    /// <summary><c>sae model run --metric</c>: the metrics of its prompts (of the rows of <paramref name="prompts"/>), one for
    /// every prompt or one per prompt in order; token strings through the model's tokenizer. Null without --metric.</summary>
    internal static List<AttributionMetric>? MetricsPerPrompt(string[] specs, IReadOnlyList<Tensor> prompts, string model, ITextTokenizer? tok, string unit = "prompt")
    {
        if (specs.Length == 0) return null;
        int rows = prompts.Sum(t => (int)t.shape[0]);
        if (specs.Length != 1 && specs.Length != rows)
            throw new SaeSharpException($"--metric is given {specs.Length} times for {rows} {unit}{(rows == 1 ? "" : "s")}: give it once (for every {unit}) or once per {unit}, in order");
        tok ??= MetricTokenizer(model);
        return specs.Select(s => AttributionMetric.Parse(s, tok is null ? null : t => InterventionCommands.SingleToken(tok, t, "--metric"))).ToList();
    }

    /// <summary>The vocabulary size of <paramref name="model"/>'s tokenizer, from which <c>--repeated-random</c> draws.</summary>
    private static long VocabularySize(string model) =>
        (MetricTokenizer(model) ?? throw new SaeSharpException($"--repeated-random: --model {model} has no tokenizer to draw token ids from")).VocabSize;

    /// <summary><c>sae model run --loss-per-position</c>: the next-token loss at each position, averaged over the rows (TransformerLens
    /// Main Demo cell 44), clean and with the heads ablated (or the SAEs spliced and edited, <paramref name="editedHeading"/>); the token predicted shown for a single row; after
    /// <c>--repeated-random N</c> the mean loss on each copy (an induction head makes the second far lower).</summary>
    private static void WriteLossPerPosition((double[] Clean, double[]? Ablated) losses, string editedHeading, Tensor tokens, string? promptName, int? repeatedLength, ITextTokenizer? tok)
    {
        string F(double v) => Cli.Fixed(v, 3);
        long rows = tokens.shape[0];
        var ids = rows == 1 && tok is not null ? tokens[0].data<long>().ToArray() : null;
        var columns = new List<Column> { new("pos", Right: true) };
        if (ids is not null) columns.Add("next token");
        columns.Add(new Column("clean", Right: true));
        if (losses.Ablated is not null) columns.AddRange([new Column(editedHeading, Right: true), new Column("Δ", Right: true)]);
        var table = Enumerable.Range(0, losses.Clean.Length).Select(t =>
        {
            var row = new List<string> { t.ToString(CultureInfo.InvariantCulture) };
            if (ids is not null) row.Add(ids[t + 1] >= 0 && ids[t + 1] < tok!.VocabSize ? Analysis.DashboardWriter.Quote(tok.TokenText((int)ids[t + 1])) : $"<id {ids[t + 1]}>");
            row.Add(F(losses.Clean[t]));
            if (losses.Ablated is not null) row.AddRange([F(losses.Ablated[t]), F(losses.Ablated[t] - losses.Clean[t])]);
            return (IReadOnlyList<string>)row;
        });
        Console.WriteLine();
        Cli.WriteColumns($"next-token loss at each position{(rows > 1 ? $", mean over {rows} rows" : "")}{(promptName is null ? "" : $", {promptName}")}", columns, table);
        if (repeatedLength is int n && n > 1)
        {
            // Position t predicts token t+1: the first copy's tokens 1..n−1 at t = 0..n−2, the second copy's n+1..2n−1 at t = n..2n−2.
            string Halves(double[] l) => $"{F(l.Take(n - 1).Average())} on the first copy, {F(l.Skip(n).Average())} on the second";
            Console.WriteLine($"mean loss (clean): {Halves(losses.Clean)}");
            if (losses.Ablated is not null) Console.WriteLine($"mean loss ({editedHeading}): {Halves(losses.Ablated)}");
        }
    }

    /// <summary>The model's tokenizer for a metric's token strings and labels, or null when the model has none (token ids only).</summary>
    private static ITextTokenizer? MetricTokenizer(string model)
    {
        try { return Tokenizer.FromFolder(ModelSource.Resolve(model)); }
        catch (SaeSharpException) { return null; }
    }

    /// <summary><c>sae model run --metric</c>'s table, as the Hooked SAE demo prints its per-prompt logit differences: one
    /// row per prompt (its index, as the saved keys' suffix, and its text), the metric clean and, with --sae, spliced or
    /// edited and the change; then their means.</summary>
    internal static void WriteMetricPerPrompt(List<AttributionMetric> metrics, string[]? texts, List<double> clean,
        List<double>? edited, string editedHeading, ITextTokenizer? tok)
    {
        string F(double v) => Cli.Fixed(v, 4);
        bool several = metrics.Count > 1;
        var columns = new List<Column> { new("prompt", Right: true) };
        if (texts is not null) columns.Add("text");
        if (several) columns.Add("metric");
        columns.Add(new Column("clean", Right: true));
        if (edited is not null) columns.AddRange([new Column(editedHeading, Right: true), new Column("Δ", Right: true)]);
        var rows = new List<IReadOnlyList<string>>();
        for (int i = 0; i < clean.Count; i++)
        {
            var row = new List<string> { i.ToString(CultureInfo.InvariantCulture) };
            if (texts is not null) row.Add(texts[i]);
            if (several) row.Add(InterventionCommands.MetricLabel(metrics[i], tok));
            row.Add(F(clean[i]));
            if (edited is not null) row.AddRange([F(edited[i]), F(edited[i] - clean[i])]);
            rows.Add(row);
        }
        // The mean of one kind of metric (the IOI notebooks' average logit difference); a loss and a logit averaged mean nothing.
        if (metrics.Select(m => m.Kind).Distinct().Count() == 1)
        {
            var mean = new List<string> { "mean" };
            if (texts is not null) mean.Add("");
            if (several) mean.Add("");
            mean.Add(F(clean.Average()));
            if (edited is not null) mean.AddRange([F(edited.Average()), F(edited.Average() - clean.Average())]);
            rows.Add(mean);
        }
        Cli.WriteColumns(several ? "metric per prompt" : $"{InterventionCommands.MetricLabel(metrics[0], tok)} per prompt", columns, rows);
    }

    /// <summary>Before <c>sae model run</c> runs: its --out is a file that replaces none of its inputs (the SAEs' files, the
    /// models' files, the --input tokens).</summary>
    private static void RefuseReplacingRunInputs(ParseResult parse, Option<string?> output, Option<string> model, Option<string?> input,
        Option<string?> diffModel, Option<string[]> saes, Option<string?> meanOver)
    {
        if (parse.GetValue(output) is not { } outPath) return;
        var inputs = (parse.GetValue(saes) ?? []).Select(s => new CommandInput("--sae", s, InputKind.Sae)).ToList();
        if (parse.GetValue(model) is { } m) inputs.Add(new("--model", m, InputKind.Folder));
        if (parse.GetValue(diffModel) is { } dm) inputs.Add(new("--diff-model", dm, InputKind.Folder));
        if (parse.GetValue(input) is { } i) inputs.Add(new("--input", i, InputKind.Whole));
        if (parse.GetValue(meanOver) is { } mo) inputs.Add(new("--mean-over", mo, InputKind.Whole));
        OutputGuard.RefuseBadOutputFile("--out", outPath, [.. inputs]);
    }

    /// <summary>One prompt's run of <c>sae model run</c>: its logits, its tokens (of a <c>--prompt</c>), the hooks it saves, and
    /// with <c>--generate</c> the prompt plus each continuation [1, prompt + new] and the table rows (run, text).</summary>
    internal sealed class SavedRun(Tensor logits, Tensor? tokens, IReadOnlyList<string> names, SaeSharp.Hooks.ActivationCache cache) : IDisposable
    {
        public Tensor Logits { get; } = logits;
        public Tensor? Tokens { get; } = tokens;
        public IReadOnlyList<string> Names { get; } = names;
        public SaeSharp.Hooks.ActivationCache Cache { get; } = cache;
        public Tensor? GeneratedClean { get; set; }
        public Tensor? GeneratedEdited { get; set; }
        public string[][]? Rows { get; set; }

        public void Dispose()
        {
            Logits.Dispose();
            Cache.Dispose();
            GeneratedClean?.Dispose();
            GeneratedEdited?.Dispose();
        }
    }

    /// <summary>What <c>sae model run --generate</c> asks for: the new tokens, how they are chosen (one seed shared by the clean and
    /// the edited continuation of every prompt, drawn here when sampling without <c>--seed</c>), and how the prompts are named.</summary>
    /// <paramref name="texts"/> head each prompt's table: the <c>--prompt</c> texts, or the text of each row of <c>--input</c>
    /// (<paramref name="noun"/> "row").</summary>
    internal sealed class GenerationRequest(int newTokens, SamplingOptions sampling, ParseResult parse, string[] texts, string noun = "prompt")
    {
        public int NewTokens { get; } = newTokens;
        public ulong? Seed { get; } = newTokens > 0 ? sampling.PairSeed(parse) : null;
        private string How => sampling.Describe(parse, Seed);

        /// <summary>The options of both continuations: the same seed, so both draw the same random numbers at every step.</summary>
        public GenerationOptions Options(IReadOnlyList<long> eos) => sampling.Options(parse, eos, Seed);

        /// <summary>"prompt 1, " (or "row 1, ") before a note when there are several prompts.</summary>
        public string NotePrefix(int i) => texts.Length > 1 ? $"{noun} {i}, " : "";

        /// <summary>Each prompt's continuations side by side: one table for one prompt, a table per prompt under one heading for several.</summary>
        public void WriteContinuations(IReadOnlyList<SavedRun> runs, string model) => WriteContinuations(runs.Select(r => r.Rows).ToList(), model);

        /// <summary>Each prompt's rows (run, continuation) side by side, as <see cref="WriteContinuations(IReadOnlyList{SavedRun}, string)"/>;
        /// <paramref name="detail"/> follows "to EOS" in the heading (<c>sae intervene</c>: what is frozen in the prompt's pass).</summary>
        public void WriteContinuations(IReadOnlyList<string[][]?> rows, string model, string detail = "")
        {
            if (rows.All(r => r is null)) return;
            string what = $"{How} continuation{(rows.Count > 1 ? "s" : "")} (up to {NewTokens} tokens, to EOS{detail}) of {model}";
            if (rows.Count == 1)
            {
                Cli.WriteColumns(what, ["run", "continuation"], rows[0]!);
                return;
            }
            Cli.WriteIndented(Spectre.Console.Markup.Escape(what), 0);
            for (int i = 0; i < rows.Count; i++)
                Cli.WriteColumns($"{PromptName(i)}: {SaeSharp.Analysis.DashboardWriter.Quote(texts[i])}", ["run", "continuation"], rows[i]!);
        }

        /// <summary>"prompt 1" (or "row 1") of several prompts, "the prompt" of one.</summary>
        public string PromptName(int i) => texts.Length > 1 ? $"{noun} {i}" : "the prompt";
    }

    /// <summary><paramref name="edits"/> for a run of the prompt alone (<paramref name="promptLength"/> tokens): steering at
    /// positions keeps those inside the prompt, and steering only at new tokens' positions is left out.</summary>
    private static List<SaeSharp.Interventions.Intervention> PromptEdits(List<SaeSharp.Interventions.Intervention> edits, long promptLength) =>
        edits.Select(e => e is SaeSharp.Interventions.Steering { Positions: { } at } st && at.Any(q => q >= promptLength)
                ? at.Any(q => q < promptLength)
                    ? new SaeSharp.Interventions.Steering(st.Sae, st.Feature, st.Scale, st.Hook) { Positions = at.Where(q => q < promptLength).ToArray() }
                    : null
                : e).OfType<SaeSharp.Interventions.Intervention>().ToList();

    /// <summary><c>sae model run --sae SAE --generate N</c>: the continuations (to EOS) of the prompt, clean (the model with its
    /// processing hooks) and with the SAEs of <paramref name="hooked"/> spliced and <paramref name="edits"/> applied (KV-cached:
    /// <see cref="SaeSharp.Interventions.HookedSaeTransformer.Generate"/>), both with the same options (a sampling seed gives
    /// each its own generator of that seed: the same random draws), kept in <paramref name="run"/>; returns the line saying what is spliced.</summary>
    private static string Continuations(SaeSharp.Interventions.HookedSaeTransformer hooked, List<SaeSharp.Interventions.Intervention> edits,
        bool errorTerm, ITextTokenizer tok, Tensor tokens, GenerationRequest request, SavedRun run, List<string> notes, string notePrefix)
    {
        var options = request.Options(hooked.Model.StopTokenIds);
        using var plain = hooked.Model.Generate(tokens, request.NewTokens, options with { Hooks = hooked.ModelHooks });
        using var edited = hooked.Generate(tokens, request.NewTokens, options, edits);
        string label = edits.Count > 0 ? "edited" : "spliced";
        var positions = edits.OfType<SaeSharp.Interventions.Steering>().SelectMany(st => st.Positions ?? []).Distinct().ToList();
        KeepContinuations(hooked.Model, run, tok, tokens.shape[1], plain, edited, label, positions.Count == 0 ? null : positions, notes, notePrefix);
        string sites = hooked.Saes.Count == 0 ? "no SAE spliced (steering adds to the raw activation)"
            : (hooked.Saes.Count == 1 ? "SAE spliced at " : "SAEs spliced at ") + string.Join(", ", hooked.Saes.Select(a => a.IsTranscoder ? $"{a.Hook} → {a.WriteHook}" : a.Hook));
        return $"{sites}{(errorTerm && hooked.Saes.Count > 0 ? " (error term kept)" : "")}";
    }

    /// <summary>A table row (<paramref name="label"/>, text) of the new tokens of <paramref name="tokens"/> [1, prompt + new], the
    /// prompt <paramref name="promptLength"/> tokens.</summary>
    internal static string[] ContinuationRow(ITextTokenizer tok, long promptLength, string label, Tensor tokens) =>
        [label, Continuation(tok, tokens, promptLength)];

    /// <summary>The text generated after the first <paramref name="promptLength"/> tokens of row 0 of <paramref name="tokens"/>
    /// [1, pos], cut after the prompt's text (<see cref="TokenDisplay.DecodeContinuation"/>), ids beyond the vocabulary as
    /// <c>&lt;id N&gt;</c>.</summary>
    internal static string Continuation(ITextTokenizer tok, Tensor tokens, long promptLength)
    {
        var ids = tokens[0].data<long>().Select(v => (int)v).ToList();
        return DecodeShowingUnknownIds(tok, ids.GetRange((int)promptLength, ids.Count - (int)promptLength), ids.GetRange(0, (int)promptLength));
    }

    /// <summary>Keeps the clean and the edited generation of a prompt of <paramref name="promptLength"/> tokens in
    /// <paramref name="run"/> (tokens for the file, text for the table, labelled <paramref name="label"/>) and notes an early EOS
    /// or steering <paramref name="positions"/> never reached, and a sequence past the n_ctx of <paramref name="m"/> (<see cref="PastContextNote"/>).</summary>
    internal static void KeepContinuations(HookedTransformer m, SavedRun run, ITextTokenizer tok, long promptLength, GenerationResult plain, GenerationResult edited,
        string label, IEnumerable<long>? positions, List<string> notes, string notePrefix)
    {
        run.Rows = [ContinuationRow(tok, promptLength, "clean", plain.Tokens), ContinuationRow(tok, promptLength, label, edited.Tokens)];
        run.GeneratedClean = plain.Tokens.cpu().clone().DetachFromDisposeScope();
        run.GeneratedEdited = edited.Tokens.cpu().clone().DetachFromDisposeScope();
        if (InterventionCommands.GenerationNote(plain, 0, null) is string cleanNote) notes.Add($"{notePrefix}clean: {cleanNote}");
        if (InterventionCommands.GenerationNote(edited, 0, positions) is string note) notes.Add($"{notePrefix}{label}: {note}");
        if (PastContextNote(m, Math.Max(plain.Tokens.shape[1], edited.Tokens.shape[1])) is { } past) notes.Add($"{notePrefix}{past}");
    }

    /// <summary><c>sae model run</c>'s output file: per run 'logits', 'tokens' (of a --prompt), each hook of its names and, after
    /// <c>--generate</c>, 'generated_clean' and 'generated_edited' (the prompt and its continuation, [1, prompt + new]); with
    /// several runs (prompts) every key ends in the run's index, <c>logits.0</c>, <c>logits.1</c>, ...</summary>
    internal static void SaveRuns(string path, IReadOnlyList<SavedRun> runs)
    {
        var outputs = new List<KeyValuePair<string, Tensor>>();
        foreach (var (r, i) in runs.Select((r, i) => (r, i)))
        {
            string suffix = runs.Count == 1 ? "" : $".{i}";
            outputs.Add(new("logits" + suffix, r.Logits));
            if (r.Tokens is not null) outputs.Add(new("tokens" + suffix, r.Tokens));
            if (r.GeneratedClean is not null) outputs.Add(new("generated_clean" + suffix, r.GeneratedClean));
            if (r.GeneratedEdited is not null) outputs.Add(new("generated_edited" + suffix, r.GeneratedEdited));
            foreach (var n in r.Names) outputs.Add(new(n + suffix, r.Cache[n]));
        }
        SafeTensors.Save(path, outputs);
        string Shape(Tensor t) => $"[{string.Join(", ", t.shape)}]";
        var first = runs[0];
        bool one = runs.Count == 1;
        var parts = new List<string> { one ? $"logits {Shape(first.Logits)}" : "logits" };
        if (first.Tokens is not null) parts.Add(one ? $"tokens {Shape(first.Tokens)}" : "tokens");
        if (first.GeneratedClean is { } gc && first.GeneratedEdited is { } ge)
            parts.Add(!one ? "generated_clean, generated_edited"
                : gc.shape.SequenceEqual(ge.shape) ? $"generated_clean and generated_edited {Shape(gc)}"
                : $"generated_clean {Shape(gc)}, generated_edited {Shape(ge)}");
        string hooks = first.Names.Count == 0 ? "" : $" and {first.Names.Count} hook tensor{(first.Names.Count == 1 ? "" : "s")}";
        // Wrapped at spaces on a terminal (a path and several shapes pass 80 columns).
        Cli.WriteIndented(Spectre.Console.Markup.Escape(one ? $"wrote {path}: {string.Join(", ", parts)}{hooks}"
            : $"wrote {path}: per prompt (keys ending in .0 to .{runs.Count - 1}) {string.Join(", ", parts)}{hooks}"), 0);
    }

    /// <summary>The text of <paramref name="ids"/>, an id beyond the tokenizer's vocabulary written <c>&lt;id N&gt;</c> (a model's
    /// embedding is often padded past its tokenizer's vocabulary, and an untrained model can sample those rows); after
    /// <paramref name="prompt"/>'s ids when given (<see cref="TokenDisplay.DecodeContinuation"/>).</summary>
    internal static string DecodeShowingUnknownIds(ITextTokenizer tok, IReadOnlyList<int> ids, IReadOnlyList<int>? prompt = null)
    {
        var text = new System.Text.StringBuilder();
        var before = new List<int>(prompt ?? []);
        var run = new List<int>();
        foreach (int id in ids)
        {
            if (id >= 0 && id < tok.VocabSize) { run.Add(id); continue; }
            text.Append(tok.DecodeContinuation(before, run)).Append($"<id {id}>");
            before.AddRange(run);
            run.Clear();
        }
        return text.Append(tok.DecodeContinuation(before, run)).ToString();
    }

    private static Command Generate()
    {
        var model = ModelOption();
        var revision = ModelSource.RevisionOption();
        var prompt = new Option<string>("--prompt") { Description = "Prompt text", Required = true };
        var maxNew = new Option<int>("--max-new-tokens") { Description = "Tokens to generate", DefaultValueFactory = _ => 32 }.NonNegative();
        var sampling = new SamplingOptions();
        var dtype = ModelSource.DtypeOption();
        var sae = new Option<string[]>("--sae") { Description = "Not here: continuations with SAEs spliced (and --clamp, --ablate, --steer) are sae model run --sae SAE --prompt TEXT --generate N" };
        var prependBos = new Option<bool>("--prepend-bos")
        {
            Description = "Start the prompt with BOS, as TransformerLens's generate(text), sae model run and sae steer do (default: as Hugging Face's tokenizer(text), BOS only where the tokenizer adds it)",
        };
        var command = new Command("generate", "Continue a prompt (greedy or sampled, with a KV cache); with SAEs spliced: sae model run --sae SAE --generate N")
        {
            model, prompt, maxNew, dtype, sae, prependBos,
        };
        sampling.AddTo(command);
        command.Options.Add(revision);
        Cli.SetAction(command, parse =>
        {
            Cli.RefuseGiven(parse, "sae model generate runs the model alone; to continue a prompt clean and with SAEs spliced (--error-term, --clamp, " +
                "--ablate, --steer, --positions), side by side: sae model run --model M --sae SAE --prompt TEXT --generate N --out run.safetensors", sae);
            sampling.RefuseWhenGreedy(parse);
            var folder = ModelSource.Resolve(ModelSource.ModelAt(parse, model, revision));
            using var m = ModelLoader.FromPretrained(folder, ModelLoader.ParseDtype(parse.GetValue(dtype)!, folder));
            var tok = Tokenizer.FromFolder(folder);
            var text = parse.GetValue(prompt)!;
            var ids = tok.EncodeWithSpecialTokens(text);
            if (parse.GetValue(prependBos))
            {
                int bos = tok.BosTokenId ?? throw new SaeSharpException($"--prepend-bos: the tokenizer of {folder} has no BOS token");
                if (ids.Length == 0 || ids[0] != bos) ids = [bos, .. ids];
            }
            if (ids.Length == 0) throw new SaeSharpException("--prompt: the prompt gives no token; give some text (or --prepend-bos to start from BOS alone)");
            int newTokens = parse.GetValue(maxNew), promptTokens = ids.Length;
            RefuseGenerationPastContext(m, promptTokens, newTokens, "--max-new-tokens");
            using var scope = NewDisposeScope();
            using var tokens = tensor(ids.Select(i => (long)i).ToArray()).unsqueeze(0);
            using var result = m.Generate(tokens, newTokens, sampling.Options(parse, m.StopTokenIds));
            var all = result.Tokens[0].data<long>().Select(v => (int)v).ToArray();
            Console.WriteLine(DecodeShowingUnknownIds(tok, all));
            if (PastContextNote(m, all.Length) is { } past) Cli.ErrorLine($"note: {past}");
            if (InterventionCommands.GenerationNote(result, 0, null) is string note) Cli.ErrorLine($"note: {note}");
            return 0;
        });
        return command;
    }

    private static Command Tokenize()
    {
        var model = ModelOption();
        var revision = ModelSource.RevisionOption();
        var text = new Option<string?>("--text", "--prompt") { Description = "Text to tokenize (or ids as a JSON array with --decode); --prompt, as the other commands name it, is the same" };
        var file = new Option<string?>("--file") { Description = "Read the text from a file" };
        var decode = new Option<bool>("--decode") { Description = "Decode a JSON array of ids to text" };
        var raw = new Option<bool>("--no-special-tokens") { Description = "Leave out the BOS/EOS the tokenizer adds (Hugging Face add_special_tokens=False)" };
        var find = new Option<string?>("--find")
        {
            Description = "Also print where this single token occurs among the printed ids (TransformerLens get_token_position: first and last position)",
        };
        var command = new Command("tokenize", "Print token ids as a JSON array, as Hugging Face tokenizer(text) gives them (with the BOS a Llama-style tokenizer adds), or decode ids with --decode")
            { model, text, file, decode, raw, find };
        command.Options.Add(revision);
        Cli.SetAction(command, parse =>
        {
            if (parse.GetValue(text) is not null) Cli.RefuseGiven(parse, "the text comes from --text (--prompt); give one of --text and --file", file);
            if (parse.GetValue(decode)) Cli.RefuseGiven(parse, "for encoding text; --decode turns ids into text", raw, find);
            var tok = Tokenizer.FromFolder(ModelSource.Resolve(ModelSource.ModelAt(parse, model, revision)));
            var input = parse.GetValue(text) ?? (parse.GetValue(file) is string f ? ReadTextFile("--file", f)
                : throw new SaeSharpException("give --text (or --prompt) or --file"));
            if (parse.GetValue(decode))
            {
                int[] ids;
                try { ids = JsonSerializer.Deserialize<int[]>(input) ?? []; }
                catch (JsonException) { throw new SaeSharpException("--decode expects a JSON array of token ids, e.g. [464, 3290]"); }
                foreach (int id in ids)
                    if (tok.IdToToken(id) is null)
                        throw new SaeSharpException($"--decode: id {id} is not in the vocabulary (vocabulary size {tok.VocabSize}: ids 0..{tok.VocabSize - 1})");
                Console.WriteLine(tok.Decode(ids));
            }
            else
            {
                int? sought = parse.GetValue(find) is { } f2 ? tok.SingleToken(f2, "--find") : null;
                var ids = parse.GetValue(raw) ? tok.Encode(input) : tok.EncodeWithSpecialTokens(input);
                Console.WriteLine(JsonSerializer.Serialize(ids));
                if (sought is { } id)
                {
                    int first = Array.IndexOf(ids, id), last = Array.LastIndexOf(ids, id);
                    string quoted = Analysis.DashboardWriter.Quote(tok.TokenText(id));
                    Console.WriteLine(first < 0 ? $"{quoted} (id {id}) does not occur"
                        : $"{quoted} (id {id}) at position {first}" + (last != first ? $" first, {last} last" : "") + " (0 is the first id printed)");
                }
            }
            return 0;
        });
        return command;
    }

    private static Command Info()
    {
        var model = ModelOption();
        var revision = ModelSource.RevisionOption();
        var dtype = ModelSource.DtypeOption();
        var command = new Command("info", "Print a model's architecture, sizes and hook points") { model, dtype };
        command.Options.Add(revision);
        Cli.SetAction(command, parse =>
        {
            using var m = ModelSource.LoadModel(ModelSource.ModelAt(parse, model, revision), parse.GetValue(dtype)!);
            Cli.WriteIndented(Spectre.Console.Markup.Escape(m.Config.ToString()), 0); // wrapped at spaces on a terminal
            Console.WriteLine($"parameters: {Cli.Integer(m.parameters().Sum(p => p.numel()))}");
            Console.WriteLine("hook points (opt-in ones are left out of \"all\", as in TransformerLens):");
            var listing = HookListing(m.HookNames).ToList();
            int width = listing.Max(h => h.Shown.Length);
            int optInShape = listing.Where(h => SaeSharp.Hooks.HookPoints.IsOptIn(h.Name)).Select(h => m.HookShape(h.Name).Length).DefaultIfEmpty(0).Max();
            foreach (var (shown, name) in listing)
                Console.WriteLine(SaeSharp.Hooks.HookPoints.IsOptIn(name) ? $"  {shown.PadRight(width)}  {m.HookShape(name).PadRight(optInShape)}  opt-in"
                                                           : $"  {shown.PadRight(width)}  {m.HookShape(name)}");
            return 0;
        });
        return command;
    }

    private static Command TestPrompt()
    {
        var model = ModelOption();
        var revision = ModelSource.RevisionOption();
        var prompt = new Option<string>("--prompt") { Description = "Prompt text", Required = true };
        var answer = new Option<string>("--answer") { Description = "The expected continuation (one or more tokens), e.g. earth", Required = true };
        var noSpace = new Option<bool>("--no-prepend-space")
        {
            Description = "Take the answer as written (TransformerLens prepend_space_to_answer=False; default: a space is put before an answer that has none)",
        };
        var noBos = new Option<bool>("--no-prepend-bos") { Description = "Do not start the prompt with BOS" };
        var topK = new Option<int>("--top-k") { Description = "Most likely tokens shown at each answer position", DefaultValueFactory = _ => 10 }.Positive();
        var dtype = ModelSource.DtypeOption();
        var command = new Command("test-prompt", "TransformerLens's test_prompt: the rank, logit and probability of each answer token after the prompt, and the " +
                                                 "top-k tokens there; with --sae, the SAE spliced and its features ablated, clamped or steered as in sae model run")
            { model, prompt, answer, noSpace, noBos, topK, dtype };
        var edits = new InterventionCommands.RunEdits();
        edits.AddTo(command);
        command.Options.Add(revision);
        Cli.SetAction(command, parse =>
        {
            edits.RefuseUnqualified(parse);
            string text = parse.GetValue(prompt)!, expected = parse.GetValue(answer)!;
            bool space = !parse.GetValue(noSpace), bos = !parse.GetValue(noBos);
            int k = parse.GetValue(topK);
            var folder = ModelSource.Resolve(ModelSource.ModelAt(parse, model, revision));
            InterventionCommands.NoteUnknownWords(Tokenizer.FromFolder(folder), text, "--prompt");   // an unknown answer is an error (PromptTest)
            if (!edits.Given(parse))
            {
                using var m = ModelLoader.FromPretrained(folder, ModelLoader.ParseDtype(parse.GetValue(dtype)!, folder));
                WritePromptTest(SaeSharp.Analysis.PromptTest.Run(m, text, expected, space, bos, k));
                return 0;
            }
            var paths = parse.GetValue(edits.Sae) ?? [];
            if (paths.FirstOrDefault(SaeSharp.Interop.CrossCoderFormat.IsCrossCoderPath) is string cc)
                throw new SaeSharpException($"--sae {cc}: a crosscoder; sae model test-prompt splices SAEs (a crosscoder's latents: sae ablate)");
            var saes = new List<SaeSharp.Saes.Sae>();
            try
            {
                foreach (var p in paths) saes.Add(InterventionCommands.LoadSae(p));
                // The model as the SAEs' cfgs record it (weight processing, and dtype unless --dtype is given), as sae model run --sae runs it.
                using var pm = ModelForSae.Load(folder, ModelForSae.SharedOptions(saes.Select(s => s.Cfg)),
                    parse.GetResult(dtype) is { Implicit: false } ? ModelLoader.ParseDtype(parse.GetValue(dtype)!, folder) : ModelForSae.SharedDtype(saes, paths));
                var m = pm.Model;
                // The edits apply over the prompt and answer tokens (one numbering for --positions, as the run sees them).
                var result = SaeSharp.Analysis.PromptTest.Run(m, text, expected, space, bos, k, tokens =>
                {
                    var (hooked, list) = edits.Build(parse, m, tokens, saes, pm.Hooks, 0, "the prompt and answer");
                    return hooked.Run(tokens, null, list).Logits!;
                });
                WritePromptTest(result);
            }
            finally
            {
                foreach (var s in saes) s.Dispose();
            }
            return 0;
        });
        return command;
    }

    private static Command LogitAttrs()
    {
        var model = ModelOption();
        var revision = ModelSource.RevisionOption();
        var prompt = new Option<string[]>("--prompt") { Description = "Prompt text (repeatable; each is run on its own, so lengths may differ)", Required = true };
        var answer = new Option<string[]>("--answer")
        {
            Description = "A,B: the logit difference logit(A) − logit(B) at the prompt's last token, A and B single tokens as written " +
                          "(\" Mary, John\") or token ids; one for every prompt, or one per prompt in order",
            Required = true,
        };
        var noBos = new Option<bool>("--no-prepend-bos") { Description = "Do not start the prompts with BOS" };
        var topHeads = new Option<int>("--top-heads") { Description = "Heads shown, largest |logit difference| first", DefaultValueFactory = _ => 10 }.Positive();
        var json = new Option<string?>("--json") { Description = "Write every value (all heads; all neurons with --top-neurons) to this JSON file" };
        var topNeurons = new Option<int?>("--top-neurons")
        {
            Description = "Also each MLP neuron's share (cache.stack_neuron_results: hook_post × its W_out row); show this many, largest |logit difference| first",
        }.Positive();
        var recompute = new Option<bool>("--recompute-ln")
        {
            Description = "Logit lens through the final norm recomputed for each accumulated stream (accumulated_resid(apply_ln=True)), " +
                          "not the final stream's cached scale",
        };
        var dtype = ModelSource.DtypeOption();
        var command = new Command("logit-attrs", "TransformerLens's direct logit attribution of a logit difference: the logit lens of the accumulated residual " +
                                                 "stream, each layer's output and each head's (cache.accumulated_resid, decompose_resid, stack_head_results)")
            { model, prompt, answer, noBos, topHeads, topNeurons, json, recompute, dtype };
        var png = new Option<string?>("--png") { Description = "Write a layer × head heatmap of every head's logit difference (stack_head_results) to this PNG" };
        command.Options.Add(png);
        var headAblation = new HeadAblationOptions();
        headAblation.AddTo(command);
        command.Options.Add(revision);
        Cli.SetAction(command, parse =>
        {
            if (headAblation.Given(parse)) headAblation.Parse(parse);
            var texts = parse.GetValue(prompt)!;
            var pairs = parse.GetValue(answer)!;
            if (pairs.Length != 1 && pairs.Length != texts.Length)
                throw new SaeSharpException($"--answer: {pairs.Length} given for {texts.Length} prompts (give one for all, or one per prompt)");
            CommandInput[] inputs = parse.GetValue(headAblation.MeanOver) is { } meanOver
                ? [new("--model", parse.GetValue(model)!, InputKind.Folder), new("--mean-over", meanOver, InputKind.Whole)]
                : [new("--model", parse.GetValue(model)!, InputKind.Folder)];
            OutputGuard.RefuseBadOutputFiles([("--json", parse.GetValue(json)), ("--png", parse.GetValue(png))], inputs);
            using var m = ModelSource.LoadModel(ModelSource.ModelAt(parse, model, revision), parse.GetValue(dtype)!);
            var tok = m.Tokenizer;
            (long, long) Pair(string spec)
            {
                var parts = spec.Split(',');
                if (parts.Length != 2 || parts.Any(x => x.Length == 0))
                    throw new SaeSharpException($"--answer '{spec}': write A,B with two tokens (\" Mary, John\")");
                long Id(string t) => long.TryParse(t.Trim(), System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out long id)
                    ? id : InterventionCommands.SingleToken(tok, t, "--answer");
                long a = Id(parts[0]), b = Id(parts[1]);
                SaeSharp.Interventions.AttributionMetric.RefuseSameToken($"--answer '{spec}'", a, b);
                return (a, b);
            }
            var answers = texts.Select((_, i) => Pair(pairs[pairs.Length == 1 ? 0 : i])).ToList();
            using var scope = NewDisposeScope();
            bool bos = !parse.GetValue(noBos);
            var tokens = texts.Select(t => PromptTokens(m, t, bos, "--prompt")).ToList();
            headAblation.RefusePositionsOutside(parse, texts, tokens);
            var ablation = headAblation.Hooks(parse, m, bos);
            bool recomputeLn = parse.GetValue(recompute);
            var r = SaeSharp.Analysis.LogitAttribution.Run(m, tokens, answers, ablation, recomputeLn, neurons: parse.GetValue(topNeurons) is not null);
            if (ablation is not null) Console.WriteLine($"the run with {headAblation.Describe(parse)}:");
            string Tok(long id) => Analysis.DashboardWriter.Quote(tok.TokenText((int)id));
            var distinct = answers.Distinct().ToList();
            string what = distinct.Count == 1 ? $"logit({Tok(distinct[0].Item1)}) − logit({Tok(distinct[0].Item2)})" : "logit(A) − logit(B)";
            Console.WriteLine($"{what} at the last token, mean over {r.Prompts} prompt{(r.Prompts == 1 ? "" : "s")}: {Cli.Fixed(r.LogitDiff, 3)}");
            Console.WriteLine($"= final_post below + {Cli.Fixed(r.Bias, 3)} from the biases (final LayerNorm β, b_U)");
            WriteLogitComponents(recomputeLn ? "Accumulated residual stream, final norm recomputed per stream (apply_ln=True)"
                : "Accumulated residual stream (logit lens, cache.accumulated_resid)", "stream", r.Accumulated);
            WriteLogitComponents("Each layer's output (cache.decompose_resid); they sum to final_post", "component", r.PerLayer);
            var heads = r.PerHead.OrderByDescending(h => Math.Abs(h.LogitDiff)).Take(parse.GetValue(topHeads)).ToList();
            WriteLogitComponents($"Heads (cache.stack_head_results), {heads.Count} of {r.PerHead.Count} by |logit diff|", "head", heads);
            if (parse.GetValue(topNeurons) is { } nTop)
            {
                var neurons = r.PerNeuron.OrderByDescending(x => Math.Abs(x.LogitDiff)).Take(nTop).ToList();
                WriteLogitComponents($"MLP neurons (cache.stack_neuron_results), {neurons.Count} of {r.PerNeuron.Count} by |logit diff|", "neuron", neurons);
                Console.WriteLine("a layer's neurons and its b_out (in --json) sum to its L_mlp_out");
            }
            if (parse.GetValue(png) is { } pngFile)
            {
                var grid = new double[m.Config.NLayers, m.Config.NHeads];
                foreach (var h in r.PerHead)
                {
                    var at = AttentionHead.Parse(h.Label);
                    grid[at.Layer, at.Head] = h.LogitDiff;
                }
                WriteHeatmap(pngFile, grid, $"Direct logit attribution of each head: {what}", "layer", "head", "logit difference");
            }
            if (parse.GetValue(json) is { } path)
            {
                static System.Text.Json.Nodes.JsonObject Map(IEnumerable<SaeSharp.Analysis.LogitComponent> cs)
                {
                    var o = new System.Text.Json.Nodes.JsonObject();
                    foreach (var c in cs) o[c.Label] = c.LogitDiff;
                    return o;
                }
                var node = new System.Text.Json.Nodes.JsonObject
                {
                    ["logit_diff"] = r.LogitDiff, ["bias"] = r.Bias, ["prompts"] = r.Prompts,
                    ["ablated_heads"] = ablation is null ? null : headAblation.Describe(parse), ["recompute_ln"] = recomputeLn,
                    ["accumulated_resid"] = Map(r.Accumulated), ["decompose_resid"] = Map(r.PerLayer), ["stack_head_results"] = Map(r.PerHead),
                };
                if (parse.GetValue(topNeurons) is not null)
                {
                    node["stack_neuron_results"] = Map(r.PerNeuron);
                    node["mlp_b_out"] = Map(r.MlpBias);
                }
                WriteJson(path, node);
            }
            return 0;
        });
        return command;
    }

    /// <summary><c>sae model induction-loss</c>: TransformerLens's <c>evals.induction_loss</c> (<see cref="SaeSharp.Analysis.InductionLoss"/>),
    /// of one model or of several revisions of it on the same tokens (the Main Demo's checkpoint table).</summary>
    private static Command InductionLossCommand()
    {
        var model = ModelOption();
        var revisions = new Option<string[]>("--revision")
        {
            Description = "A branch, tag or commit of the --model repo (repeatable: one row each, on the same tokens; Pythia's checkpoints step1000, ...); default main",
            AllowMultipleArgumentsPerToken = false,
        };
        var batch = new Option<int>("--batch") { Description = "Rows (TransformerLens batch_size)", DefaultValueFactory = _ => 4 }.Positive();
        var subseq = new Option<int>("--subseq-len") { Description = "Random ids per copy (TransformerLens subseq_len)", DefaultValueFactory = _ => 384 }.Positive();
        var noBos = new Option<bool>("--no-prepend-bos") { Description = "Keep each row's first random id (TransformerLens prepend_bos=False); by default it is replaced by BOS" };
        var seed = new Option<ulong>("--seed") { Description = "Seed of the random tokens (torch.manual_seed)", DefaultValueFactory = _ => 0 };
        var dtype = ModelSource.DtypeOption();
        var command = new Command("induction-loss", "TransformerLens's evals.induction_loss: the mean next-token loss on the second copy of random ids repeated " +
                                                    "twice (low when the model has induction heads), per --revision")
            { model, revisions, batch, subseq, noBos, seed, dtype };
        Cli.SetAction(command, parse =>
        {
            int b = parse.GetValue(batch), n = parse.GetValue(subseq);
            if (n < 2) throw new SaeSharpException($"--subseq-len {n}: the loss on the second copy needs at least 2 ids per copy");
            string?[] revs = parse.GetValue(revisions) is { Length: > 0 } r ? [.. r.Distinct()] : [(string?)null];
            // Every revision resolved (downloaded) before the first runs, so that an unknown one fails at once.
            var folders = revs.Select(rev => ModelSource.Resolve(parse.GetValue(model)!, rev)).ToList();
            bool bos = !parse.GetValue(noBos);
            var rows = new List<IReadOnlyList<string>>();
            string? range = null;
            for (int i = 0; i < revs.Length; i++)
            {
                using var m = ModelLoader.FromPretrained(folders[i], ModelLoader.ParseDtype(parse.GetValue(dtype)!, folders[i]));
                // Named by the flags, not as the library's batch_size and subseq_len.
                if (SaeSharp.Analysis.InductionLoss.PastContext(m, n))
                    throw new SaeSharpException($"--subseq-len {n}: repeated twice that is {2L * n} tokens, more than the context window of {m.Config.ModelName} " +
                                                $"(n_ctx={m.Config.NCtx}, learned positions); give at most {m.Config.NCtx / 2}");
                double need = SaeSharp.Analysis.InductionLoss.ScoreBytes(m, b, n);
                long available = HostMemory.AvailableBytes();
                if (need > available)
                    throw new SaeSharpException($"--batch {b} --subseq-len {n}: a layer's attention scores alone need {HostMemory.Format(need)} (they grow with " +
                                                $"the square of --subseq-len) but {HostMemory.Format(available)} of memory is available; give a smaller --subseq-len or --batch");
                range ??= m.Config.DVocab >= 20000 ? "[100, 20000)" : $"[0, {m.Config.DVocab})";
                double loss = SaeSharp.Analysis.InductionLoss.Run(m, b, n, bos, parse.GetValue(seed));
                rows.Add([revs[i] ?? "main", Cli.Fixed(loss, 4)]);
            }
            Cli.WriteColumns($"induction loss of {parse.GetValue(model)}: {b} × {n} random ids in {range} repeated twice (seed {parse.GetValue(seed)}" +
                $"{(bos ? ", BOS first" : "")}), mean loss on the second copy", [new Column("revision"), new Column("loss", Right: true)], rows);
            return 0;
        });
        return command;
    }

    private static Command HeadScoresCommand()
    {
        var model = ModelOption();
        var revision = ModelSource.RevisionOption();
        var prompt = new Option<string[]>("--prompt") { Description = "Prompt text (repeatable; scores averaged over the prompts, as detect_head of a list)" };
        var input = TokenInputOption("[batch, seq] (each row a prompt, scores averaged over them), instead of --prompt");
        var repeated = new Option<int?>("--repeated-random")
        {
            Description = "Instead of prompts: N random tokens repeated twice (the demos' induction test); scores are the mean attention " +
                          "1 token back, N back (duplicate) and N − 1 back (induction)",
        }.Positive();
        var batch = new Option<int>("--batch") { Description = "Random sequences with --repeated-random", DefaultValueFactory = _ => 2 }.Positive();
        var seed = new Option<ulong>("--seed") { Description = "Seed of the random tokens (torch.manual_seed)", DefaultValueFactory = _ => 0 };
        var range = new Option<string>("--token-range")
        {
            Description = "LOW,HIGH: random token ids in [LOW, HIGH), HIGH capped at the vocabulary size (torch.randint(100, 20000))",
            DefaultValueFactory = _ => "100,20000",
        };
        var measure = new Option<string>("--error-measure")
        {
            Description = "With --prompt: mul (share of the attention on the detected pairs) or abs (1 − Σ|pattern − detection| / seq_len)",
            DefaultValueFactory = _ => "mul",
        };
        measure.AcceptOnlyFromAmong("mul", "abs");
        var pattern = new Option<string?>("--pattern")
        {
            Description = "With --prompt/--input: a detection pattern of one's own instead of the three built-in ones (detect_head(detection_pattern=tensor)): " +
                          "a JSON file of [seq][seq] numbers or a .npy float32/float64 [seq, seq] array, lower triangular (row: query, column: key), seq the prompts' token count",
        };
        var headList = new Option<string?>("--heads") { Description = "With --prompt/--input: score only these heads, L.H separated by commas (0.1,3.4); the others show –" };
        var excludeBos = new Option<bool>("--exclude-bos") { Description = "With --prompt: ignore the attention to the first token" };
        var excludeCurrent = new Option<bool>("--exclude-current-token") { Description = "With --prompt: ignore each token's attention to itself" };
        var noBos = new Option<bool>("--no-prepend-bos") { Description = "Do not start the prompts with BOS" };
        var top = new Option<int>("--top") { Description = "Top heads listed per score", DefaultValueFactory = _ => 5 }.Positive();
        var json = new Option<string?>("--json") { Description = "Write every head's scores to this JSON file ([layer][head] per score)" };
        var png = new Option<string?>("--png")
        {
            Description = "Draw each score as a layer × head heatmap: FILE.png gives FILE.previous_token_head.png, FILE.duplicate_token_head.png and " +
                          "FILE.induction_head.png (with --pattern: FILE.png itself)",
        };
        var dtype = ModelSource.DtypeOption();
        var command = new Command("head-scores", "TransformerLens's head detector: the previous-token, duplicate-token and induction score of every head " +
                                                 "(detect_head on prompts, or the demos' stripe means on repeated random tokens), or the score against a pattern of one's own")
            { model, prompt, input, repeated, batch, seed, range, measure, pattern, headList, excludeBos, excludeCurrent, noBos, top, json, png, dtype };
        command.Options.Add(revision);
        Cli.SetAction(command, parse =>
        {
            var texts = parse.GetValue(prompt) ?? [];
            string? inputPath = parse.GetValue(input);
            int? n = parse.GetValue(repeated);
            if ((texts.Length > 0 ? 1 : 0) + (inputPath is null ? 0 : 1) + (n is null ? 0 : 1) != 1)
                throw new SaeSharpException("give either --prompt (one or more), --input (token ids) or --repeated-random N");
            if (n is null) Cli.RefuseGiven(parse, "random tokens; give --repeated-random N", batch, seed, range);
            else Cli.RefuseGiven(parse, "detect_head on prompts; give --prompt (--repeated-random scores the stripes of its repeated tokens)",
                measure, excludeBos, excludeCurrent, noBos, pattern, headList);
            if (inputPath is not null) Cli.RefuseGiven(parse, "for a --prompt's tokens; --input's token ids are used as they are", noBos);
            var inputs = new List<CommandInput> { new("--model", parse.GetValue(model)!, InputKind.Folder) };
            if (inputPath is not null) inputs.Add(new("--input", inputPath, InputKind.Whole));
            if (parse.GetValue(pattern) is { } pf) inputs.Add(new("--pattern", pf, InputKind.Whole));
            // FILE.png names the three files FILE.<head name>.png: a folder path would name hidden files in it.
            if (parse.GetValue(png) is { } given) OutputGuard.RefuseFolderPath("--png", given, "heads.png");
            var pngFiles = parse.GetValue(png) is { } pngPath
                ? parse.GetValue(pattern) is null ? HeadScorePngs(pngPath) : [pngPath]
                : [];
            // One list, so that --json onto one of the --png files (FILE.induction_head.png) is refused too.
            OutputGuard.RefuseBadOutputFiles([.. pngFiles.Select(f => ("--png", (string?)f)), ("--json", parse.GetValue(json))], [.. inputs]);
            var (detection, binary) = parse.GetValue(pattern) is { } patternFile ? ReadDetectionPattern(patternFile) : (null, true);
            var heads = parse.GetValue(headList) is { } hl ? ParseHeadList(hl) : null;
            using var m = ModelSource.LoadModel(ModelSource.ModelAt(parse, model, revision), parse.GetValue(dtype)!);
            using var scope = NewDisposeScope();
            List<(string Title, string Key, double[,] Values)> kinds;
            string source;
            if (n is int len)
            {
                if (len < 2) throw new SaeSharpException($"--repeated-random {len}: the duplicate and induction stripes need at least 2 random tokens");
                // As sae model induction-loss --subseq-len: past n_ctx refused for learned positions only, noted for rotary and ALiBi.
                if (2L * len > m.Config.NCtx && m.LearnedPositions)
                    throw new SaeSharpException($"--repeated-random {len}: repeated twice that is {2L * len} tokens, more than the context window of " +
                                                $"{m.Config.ModelName} (n_ctx={m.Config.NCtx}, learned positions); give at most {m.Config.NCtx / 2}");
                if (PastContextNote(m, 2L * len) is { } past) Cli.ErrorLine($"note: {past}");
                var (low, high) = TokenRange(parse.GetValue(range)!, m.Config.DVocab);
                int b = parse.GetValue(batch);
                var tokens = SaeSharp.Analysis.RepeatedRandomTokens.Generate(b, len, low, high, parse.GetValue(seed));
                var scores = SaeSharp.Analysis.HeadDetector.RepeatedTokenScores(m, tokens);
                kinds = BuiltInKinds(scores);
                source = $"{b} × {len} random tokens in [{low}, {high}) repeated twice (seed {parse.GetValue(seed)})";
            }
            else
            {
                var (tokens, what) = DetectHeadTokens(m, texts, inputPath, !parse.GetValue(noBos));
                // Every prompt against the pattern: prompts of several lengths fit one pattern at most.
                if (detection is not null && tokens.FindIndex(t => t.shape[1] != detection.shape[0]) is var bad and >= 0)
                {
                    string which = tokens.Count > 1 && inputPath is null ? $"--prompt {bad + 1} of {tokens.Count} ('{texts[bad]}')" : what;
                    throw new SaeSharpException($"--pattern {parse.GetValue(pattern)}: a [{detection.shape[0]}, {detection.shape[0]}] pattern for {which} of " +
                                                $"{tokens[bad].shape[1]} tokens; the pattern must be [seq, seq] for the prompts' seq");
                }
                var em = parse.GetValue(measure) == "abs" ? SaeSharp.Analysis.HeadErrorMeasure.Abs : SaeSharp.Analysis.HeadErrorMeasure.Mul;
                bool exBos = parse.GetValue(excludeBos), exCurrent = parse.GetValue(excludeCurrent);
                if (detection is not null)
                {
                    if (em == SaeSharp.Analysis.HeadErrorMeasure.Mul && !binary)
                        Cli.ErrorLine($"note: --pattern {parse.GetValue(pattern)} holds values other than 0 and 1; with --error-measure mul the score is no longer a " +
                                      "share of attention (TransformerLens warns too); abs compares the values themselves");
                    kinds = [("pattern", "pattern_score", SaeSharp.Analysis.HeadDetector.Detect(m, tokens, detection, em, exBos, exCurrent, heads))];
                }
                else kinds = BuiltInKinds(SaeSharp.Analysis.HeadDetector.Detect(m, tokens, em, exBos, exCurrent, heads));
                source = $"detect_head{(detection is null ? "" : $" with --pattern {parse.GetValue(pattern)}")}, error measure {parse.GetValue(measure)}" +
                         (exBos ? ", BOS excluded" : "") + (exCurrent ? ", current token excluded" : "") +
                         (heads is null ? "" : $", {heads.Count} head{(heads.Count == 1 ? "" : "s")}") +
                         (tokens.Count == 1 ? $", {tokens[0].shape[1]} tokens" : $", mean over {tokens.Count} prompts");
            }
            WriteHeadScores([.. kinds.Select(k => (k.Title, k.Values))], source, parse.GetValue(top));
            for (int i = 0; i < pngFiles.Count; i++)
                WriteHeatmap(pngFiles[i], kinds[i].Values, $"{char.ToUpperInvariant(kinds[i].Title[0])}{kinds[i].Title[1..]} score of each head", "layer", "head",
                    kinds[i].Key);
            if (parse.GetValue(json) is { } path)
            {
                var node = new System.Text.Json.Nodes.JsonObject { ["source"] = source };
                foreach (var k in kinds) node[k.Key] = Grid(k.Values);
                WriteJson(path, node);
            }
            return 0;
        });
        return command;
    }

    /// <summary>TransformerLens's <c>HeadName</c>s, the keys of <c>head-scores --json</c>, in the order of <see cref="BuiltInKinds"/>.</summary>
    private static readonly string[] HeadNames = ["previous_token_head", "duplicate_token_head", "induction_head"];

    private static List<(string Title, string Key, double[,] Values)> BuiltInKinds(SaeSharp.Analysis.HeadScores s) =>
        [("previous token", HeadNames[0], s.PreviousToken), ("duplicate token", HeadNames[1], s.DuplicateToken), ("induction", HeadNames[2], s.Induction)];

    /// <summary><c>head-scores --png FILE.png</c> without <c>--pattern</c>: one file per built-in score, FILE.&lt;head name&gt;.png.</summary>
    private static List<string> HeadScorePngs(string path)
    {
        string stem = Path.ChangeExtension(path, null), ext = Path.GetExtension(path) is { Length: > 0 } e ? e : ".png";
        return [.. HeadNames.Select(k => $"{stem}.{k}{ext}")];
    }

    /// <summary>The prompts of <c>head-scores</c> as [1, seq] tokens each: the <c>--prompt</c> texts, or the rows of <c>--input</c>;
    /// a prompt of fewer than 2 tokens or more than n_ctx is refused naming its option. Also what they are, for errors.</summary>
    private static (List<Tensor> Tokens, string What) DetectHeadTokens(HookedTransformer m, string[] texts, string? inputPath, bool bos)
    {
        var c = m.Config;
        if (inputPath is not null)
        {
            var all = InterventionCommands.ReadTokens(inputPath);
            InterventionCommands.RefuseIdsOutsideVocabulary("--input", inputPath, all, c.DVocab);
            long seq = all.shape[1];
            if (seq < 2 || seq > c.NCtx)
                throw new SaeSharpException($"--input {inputPath}: rows of {seq} token{(seq == 1 ? "" : "s")}; detect_head needs at least 2 and at most the context window of " +
                                            $"{c.ModelName} ({c.NCtx})");
            return ([.. Enumerable.Range(0, (int)all.shape[0]).Select(r => all.narrow(0, r, 1))], $"--input {inputPath}");
        }
        var tokens = texts.Select(t => PromptTokens(m, t, bos, "--prompt")).ToList();
        InterventionCommands.RefuseFewerThanTwoTokens("--prompt", texts, tokens, "detect_head");
        for (int i = 0; i < texts.Length; i++)
            if (tokens[i].shape[1] > c.NCtx)
                throw new SaeSharpException($"--prompt \"{(texts[i].Length > 60 ? texts[i][..57] + "..." : texts[i])}\": {tokens[i].shape[1]} tokens, more than the " +
                                            $"context window of {c.ModelName} ({c.NCtx}); detect_head needs a prompt that fits it");
        return (tokens, texts.Length == 1 ? "a --prompt" : "--prompt");
    }

    /// <summary><c>--pattern FILE</c>: a JSON array of rows of numbers, or a NumPy <c>.npy</c> float32/float64 [seq, seq]
    /// array (<c>numpy.save</c>), square, finite, lower triangular, as a float64 [seq, seq] tensor, and whether it holds only
    /// 0s and 1s.</summary>
    private static (Tensor Pattern, bool Binary) ReadDetectionPattern(string path)
    {
        double[][]? rows;
        if (path.EndsWith(".npy", StringComparison.OrdinalIgnoreCase)) rows = ReadNpyPattern(path);
        else
        {
            string json = ReadTextFile("--pattern", path);
            try { rows = JsonSerializer.Deserialize<double[][]>(json); }
            catch (JsonException e) { throw new SaeSharpException($"--pattern {path}: not a JSON array of rows of numbers ([[1, 0], [1, 0]]) nor a .npy file: {e.Message}"); }
        }
        if (rows is null || rows.Length == 0) throw new SaeSharpException($"--pattern {path}: no rows; write [seq][seq] numbers");
        int n = rows.Length;
        for (int i = 0; i < n; i++)
            if (rows[i] is not { } row || row.Length != n)
                throw new SaeSharpException($"--pattern {path}: row {i} has {rows[i]?.Length ?? 0} numbers; a detection pattern is square, {n} rows of {n}");
        if (rows.SelectMany(r => r).Any(v => !double.IsFinite(v))) throw new SaeSharpException($"--pattern {path}: holds a number that is not finite");
        // TransformerLens's detect_head refuses it too: a query attends to no later key, so such a pattern scores nothing real.
        for (int i = 0; i < n; i++)
            for (int k = i + 1; k < n; k++)
                if (rows[i][k] != 0)
                    throw new SaeSharpException($"--pattern {path}: row {i} column {k} is {rows[i][k].ToString(CultureInfo.InvariantCulture)}, above the diagonal; " +
                                                "a detection pattern is lower triangular (row: query, column: key; a query attends to no later key)");
        return (tensor(rows.SelectMany(r => r).ToArray(), [n, n]), rows.SelectMany(r => r).All(v => v is 0 or 1));
    }

    /// <summary>A <c>--pattern FILE.npy</c>: a float32 or float64 2-d array (numpy's .npy, read by <see cref="Npy"/>) as rows;
    /// other dtypes or shapes named with the file.</summary>
    private static double[][] ReadNpyPattern(string path)
    {
        if (Directory.Exists(path)) throw new SaeSharpException($"--pattern {path}: is a folder; give a file");
        if (!File.Exists(path)) throw new SaeSharpException($"--pattern {path}: no such file");
        Tensor array;
        try { array = Npy.Load(path); }
        catch (SaeSharpException e) { throw new SaeSharpException($"--pattern {e.Message}"); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { throw new SaeSharpException($"--pattern {path}: cannot be read ({e.Message})"); }
        using (array)
        {
            if (array.dtype is not (ScalarType.Float32 or ScalarType.Float64))
                throw new SaeSharpException($"--pattern {path}: a .npy array of {array.dtype.ToString().ToLowerInvariant()}; a detection pattern is float32 or float64 (numpy.save of a float array)");
            if (array.dim() != 2 || array.shape[0] != array.shape[1])
                throw new SaeSharpException($"--pattern {path}: a .npy array of shape ({string.Join(", ", array.shape)}); a detection pattern is square, [seq, seq]");
            int n = (int)array.shape[0];
            using var f64 = array.to(ScalarType.Float64);
            using var contiguous = f64.contiguous();
            var flat = contiguous.data<double>().ToArray();
            return [.. Enumerable.Range(0, n).Select(q => flat.AsSpan(q * n, n).ToArray())];
        }
    }

    /// <summary>The text of the file <paramref name="path"/> given as <paramref name="flag"/>; a missing file, a folder or an
    /// unreadable file named in one line.</summary>
    private static string ReadTextFile(string flag, string path)
    {
        if (Directory.Exists(path)) throw new SaeSharpException($"{flag} {path}: is a folder; give a file");
        if (!File.Exists(path)) throw new SaeSharpException($"{flag} {path}: no such file");
        try { return File.ReadAllText(path); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { throw new SaeSharpException($"{flag} {path}: cannot be read ({e.Message})"); }
    }

    /// <summary><c>--heads 0.1,3.4</c> (or L0H1,L3H4) as heads, each once.</summary>
    private static List<AttentionHead> ParseHeadList(string spec) =>
        [.. spec.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).Select(h => AttentionHead.Parse(h, "--heads")).Distinct()];

    private static Command Circuits()
    {
        var model = ModelOption();
        var revision = ModelSource.RevisionOption();
        var layer = new Option<int[]>("--layer") { Description = "Score only these layers (repeatable; default every layer)" };
        var tokens = new Option<int>("--tokens")
        {
            Description = "Tokens (evenly spaced over the vocabulary) whose rows and columns of the full OV circuit give the top-1 accuracy; " +
                          "capped at the vocabulary size",
            DefaultValueFactory = _ => 1000,
        }.Positive();
        var json = new Option<string?>("--json") { Description = "Write every head's scores to this JSON file ([layer][head] per score)" };
        var foldLn = new Option<bool>("--fold-ln")
        {
            Description = "Fold each block's LayerNorm or RMSNorm into W_Q, W_K, W_V first (TransformerLens fold_ln only)",
        };
        var process = new Option<bool>("--process-weights")
        {
            Description = "TransformerLens from_pretrained's full default processing first: fold_ln, center_writing_weights (W_E, W_pos, " +
                          "W_O centred over d_model; LayerNorm models only), center_unembed (W_U centred over the vocabulary), fold_value_biases",
        };
        var positions = new Option<int?>("--positions")
        {
            Description = "Positions of the positional QK pattern W_pos·W_Q·W_Kᵀ·W_posᵀ (default n_ctx; learned positions only)",
        }.Positive();
        var refactor = new Option<bool>("--refactor-factored-attn-matrices")
        {
            Description = "After any processing, TransformerLens's refactor_factored_attn_matrices: W_Q = U·√S, W_K = V·√S of the QK form with its " +
                          "biases, W_V = U·S, W_O = Vᵀ, b_V moved into b_O (GPT-2; rotary models refused as TransformerLens refuses them). " +
                          "W_Q·W_Kᵀ and W_V·W_O, and so every score, are unchanged",
        };
        var eigenPng = new Option<string?>("--eigen-png")
        {
            Description = "Also draw the eigenvalues of each head's OV circuit W_V·W_O in the complex plane (PNG): a panel per layer, up to 4 a row, " +
                          $"{SaeSharp.Analysis.AttentionCircuits.EigenvaluePanelPixels} pixels wide, a colour per head",
        };
        var dtype = ModelSource.DtypeOption();
        var command = new Command("circuits", "The OV and QK circuits of every head as TransformerLens's Main Demo and ARENA score them (model.OV, " +
                                              "model.QK, FactoredMatrix): the eigenvalue copying score of W_V·W_O and of the full circuit " +
                                              "W_E·W_V·W_O·W_U, the full OV circuit's top-1 accuracy, the positional QK pattern's previous-token " +
                                              "score and the full QK circuit's same-token top-1")
            { model, layer, tokens, json, foldLn, process, refactor, positions, eigenPng, dtype };
        command.Options.Add(revision);
        Cli.SetAction(command, parse =>
        {
            OutputGuard.RefuseBadOutputFiles([("--json", parse.GetValue(json)), ("--eigen-png", parse.GetValue(eigenPng))],
                new CommandInput("--model", parse.GetValue(model)!, InputKind.Folder));
            if (parse.GetValue(positions) is 1) throw new SaeSharpException("--positions 1: the previous-token score needs at least 2 positions");
            using var m = ModelSource.LoadModel(ModelSource.ModelAt(parse, model, revision), parse.GetValue(dtype)!);
            var layers = parse.GetValue(layer) is { Length: > 0 } ls ? ls.Distinct().Order().ToList() : null;
            if (layers?.Where(l => l < 0 || l >= m.Config.NLayers).ToList() is [var outside, ..])
                throw new SaeSharpException($"--layer {outside}: the model has layers 0..{m.Config.NLayers - 1}");
            if (parse.GetValue(positions) is int asked)
            {
                // Named by the flag, not as the library's "QK circuit scores: positions N".
                using var wpos = SaeSharp.Analysis.AttentionCircuits.PositionEmbedding(m);
                if (wpos is null)
                    throw new SaeSharpException($"--positions {asked}: {m.Config.ModelName} has no learned position embedding W_pos (rotary positions), " +
                                                "so no positional QK pattern; leave out --positions");
                if (asked > wpos.shape[0])
                    throw new SaeSharpException($"--positions {asked}: {m.Config.ModelName} has {wpos.shape[0]} rows of W_pos (n_ctx); give at most {wpos.shape[0]}");
            }
            // The processing applied: TransformerLens skips some steps for some models (center_writing_weights for RMSNorm; a warning says so).
            var processed = WeightProcessing.Apply(m, parse.GetValue(process) ? WeightProcessingOptions.TransformerLensDefaults
                : new WeightProcessingOptions { FoldLn = parse.GetValue(foldLn) });
            foreach (var w in processed.Warnings) CliProgress.Warn($"warning: {w}");
            var processing = processed.Options;
            bool refactored = parse.GetValue(refactor);
            if (refactored)
            {
                try { SaeSharp.Analysis.AttentionCircuits.RefactorFactoredAttnMatrices(m); }
                catch (SaeSharpException e) // named by the flag, not as the library's "refactor_factored_attn_matrices: ..."
                { throw new SaeSharpException("--refactor-factored-attn-matrices: " + e.Message.Replace("refactor_factored_attn_matrices: ", "", StringComparison.Ordinal)); }
            }
            // The QK scores first: a --positions the model has no W_pos rows for is refused before the OV circuits' work.
            var qk = SaeSharp.Analysis.AttentionCircuits.QkScores(m, parse.GetValue(tokens), layers, parse.GetValue(positions), processing);
            var r = SaeSharp.Analysis.AttentionCircuits.Scores(m, parse.GetValue(tokens), layers, processing);
            var c = m.Config;
            var steps = processing.ToKwargs().Keys.ToList();
            if (refactored) steps.Add("refactor_factored_attn_matrices");
            Console.WriteLine($"Circuits of {c.ModelName}: {r.Layers.Count} layer{(r.Layers.Count == 1 ? "" : "s")} × {c.NHeads} heads, d_head {c.DHead}" +
                              (c.NKvHeads != c.NHeads ? $", {c.NKvHeads} key/value heads shared by {c.NHeads / c.NKvHeads} query heads each" : ""));
            Console.WriteLine("weights: " + (steps.Count > 0 ? string.Join(", ", steps) : "as loaded"));
            Console.WriteLine("copying score: sum(λ).real / sum(|λ|) of the eigenvalues; 1 copies, −1 negates");
            WriteHeadGrid("OV copying score (W_V·W_O)", r.OvCopying, r.Layers);
            WriteHeadGrid("Full OV copying score (W_E·W_V·W_O·W_U)", r.FullOvCopying, r.Layers);
            string sample = $"{r.Tokens.Count} tokens" + (r.Tokens.Count < c.DVocab ? $" of {c.DVocab}" : "");
            WriteHeadGrid($"Full OV top-1 accuracy on {sample}", r.Top1, r.Layers);
            Console.WriteLine();
            if (qk.PreviousToken is { } prev)
            {
                Console.WriteLine($"previous-token score: mean sub-diagonal of softmax(W_pos·W_Q·W_Kᵀ·W_posᵀ/√d_head)");
                Console.WriteLine($"over the first {qk.Positions} positions, causal mask; 1 attends to the previous position");
                WriteHeadGrid("Positional QK previous-token score", prev, qk.Layers);
            }
            else Console.WriteLine($"No positional QK score: {c.ModelName} has {(c.Alibi ? "ALiBi" : "rotary")} positions, no W_pos");
            Console.WriteLine();
            Console.WriteLine("same-token top-1: share of the sampled tokens whose own key scores highest in");
            Console.WriteLine("their row of the full QK circuit W_E·W_Q·W_Kᵀ·W_Eᵀ");
            WriteHeadGrid($"Full QK same-token top-1, {sample}", qk.SameToken, qk.Layers);
            if (parse.GetValue(json) is { } path)
            {
                var node = new System.Text.Json.Nodes.JsonObject
                {
                    ["fold_ln"] = processing.FoldLn,
                    ["center_writing_weights"] = processing.CenterWritingWeights,
                    ["center_unembed"] = processing.CenterUnembed,
                    ["fold_value_biases"] = processing.FoldValueBiases,
                    ["refactor_factored_attn_matrices"] = refactored,
                    ["layers"] = new System.Text.Json.Nodes.JsonArray(r.Layers.Select(l => (System.Text.Json.Nodes.JsonNode?)l).ToArray()),
                    ["top1_tokens"] = new System.Text.Json.Nodes.JsonArray(r.Tokens.Select(t => (System.Text.Json.Nodes.JsonNode?)t).ToArray()),
                    ["ov_copying_score"] = Grid(r.OvCopying),
                    ["full_ov_copying_score"] = Grid(r.FullOvCopying),
                    ["full_ov_top1"] = Grid(r.Top1),
                    ["qk_positions"] = qk.Positions,
                    ["qk_previous_token_score"] = qk.PreviousToken is { } p ? Grid(p) : null,
                    ["full_qk_same_token_top1"] = Grid(qk.SameToken),
                };
                WriteJson(path, node);
            }
            if (parse.GetValue(eigenPng) is { } png)
            {
                var bytes = SaeSharp.Analysis.AttentionCircuits.OvEigenvaluePng(SaeSharp.Analysis.AttentionCircuits.OvEigenvalues(m, r.Layers), c.ModelName);
                SaeSharp.IO.AtomicFile.Write(png, s => s.Write(bytes));
                Console.WriteLine($"wrote {png}");
            }
            return 0;
        });
        return command;
    }

    private static Command Attention()
    {
        var model = ModelOption();
        var revision = ModelSource.RevisionOption();
        var prompt = new Option<string[]>("--prompt")
        {
            Description = "Prompt text (repeatable: one page with a prompt selector)",
            AllowMultipleArgumentsPerToken = false,
        };
        var input = TokenInputOption("[batch, seq] (a prompt per row), instead of --prompt");
        var layer = new Option<string>("--layer")
        {
            Description = "The layers whose attention patterns are shown (blocks.L.attn.hook_pattern), a section each: L, L1,L2,... or all",
            Required = true,
        };
        var head = new Option<int[]>("--head") { Description = "Show only these heads (repeatable; default every head of the layer)" };
        var html = new Option<string>("--html") { Description = "The page to write (one self-contained .html file)", Required = true };
        var noBos = new Option<bool>("--no-prepend-bos") { Description = "Do not start the prompt with BOS" };
        var maxMb = new Option<double>("--max-page-mb")
        {
            Description = "Refuse a page larger than this many megabytes (it holds layers × heads × tokens² numbers)",
            DefaultValueFactory = _ => SaeSharp.Analysis.AttentionPage.DefaultMaxMegabytes,
        };
        var dtype = ModelSource.DtypeOption();
        var command = new Command("attention", "An attention pattern page as circuitsvis draws them (attention_heads, attention_patterns), a section per " +
                                               "layer: a thumbnail per head, the picked head's pattern with the tokens on both axes, and the tokens coloured " +
                                               "by what a hovered or clicked token attends to or is attended by, for one head or all heads")
            { model, prompt, input, layer, head, html, noBos, maxMb, dtype };
        command.Options.Add(revision);
        Cli.SetAction(command, parse =>
        {
            string path = parse.GetValue(html)!;
            double limit = parse.GetValue(maxMb);
            if (!(limit > 0)) throw new SaeSharpException($"--max-page-mb {limit.ToString(CultureInfo.InvariantCulture)}: give a positive number of megabytes");
            var texts = PromptOrInput(parse, prompt, input, noBos);
            OutputGuard.RefuseBadOutputFile("--html", path, "attention.html", [new CommandInput("--model", parse.GetValue(model)!, InputKind.Folder),
                .. parse.GetValue(input) is { } i ? [new CommandInput("--input", i, InputKind.Whole)] : Array.Empty<CommandInput>()]);
            using var m = ModelSource.LoadModel(ModelSource.ModelAt(parse, model, revision), parse.GetValue(dtype)!);
            using var scope = NewDisposeScope();
            var layers = AttentionLayers(parse.GetValue(layer)!, m.Config.NLayers);
            // Each prompt [1, seq] with what it is: its text, or its row of --input (rows of one file share a length).
            var prompts = new List<(Tensor Tokens, string Label)>();
            string what;
            if (texts is not null)
            {
                prompts.AddRange(texts.Select(t => (PromptTokens(m, t, !parse.GetValue(noBos), "--prompt"), t)));
                what = texts.Length == 1 ? texts[0] : $"{texts.Length} prompts";
            }
            else
            {
                string file = parse.GetValue(input)!;
                var all = InterventionCommands.ReadTokens(file);
                InterventionCommands.RefuseIdsOutsideVocabulary("--input", file, all, m.Config.DVocab);
                long rows = all.shape[0];
                prompts.AddRange(Enumerable.Range(0, (int)rows).Select(r => (all.narrow(0, r, 1), rows == 1 ? file : $"{file} row {r}")));
                what = $"{file} ({(rows == 1 ? "" : $"{rows} rows of ")}{all.shape[1]} tokens)";
            }
            var heads = parse.GetValue(head) is { Length: > 0 } hs ? hs.Distinct().ToList() : null;
            int headCount = heads?.Count ?? m.Config.NHeads;
            long longest = prompts.Max(p => p.Tokens.shape[1]);
            SaeSharp.Analysis.AttentionPage.RefuseOversized(prompts.Sum(p => SaeSharp.Analysis.AttentionPage.MinimumBytes(layers.Count, headCount, p.Tokens.shape[1])),
                limit, layers.Count, headCount, longest, estimated: true, prompts.Count);
            var pages = prompts.Select(p => new SaeSharp.Analysis.AttentionPrompt(p.Label, SaeSharp.Analysis.AttentionPage.Collect(m, p.Tokens, layers, heads))).ToList();
            SaeSharp.Analysis.AttentionPage.Write(path, pages, $"{m.Config.ModelName}: {what}", limit);
            // The page holds layers × heads × tokens² numbers: its size said, as a long prompt makes it tens of megabytes.
            var counts = pages.Select(p => p.Layers[0].Tokens.Count).ToList();
            string tokenCount = counts.Count == 1 ? $"{counts[0]} token{(counts[0] == 1 ? "" : "s")}"
                : $"{counts.Count} prompts of {(counts.Min() == counts.Max() ? $"{counts[0]}" : $"{counts.Min()} to {counts.Max()}")} tokens";
            Console.WriteLine($"wrote {path} ({(layers.Count == 1 ? "" : $"{layers.Count} layers × ")}{headCount} head{(headCount == 1 ? "" : "s")}, " +
                              $"{tokenCount}, {HostMemory.Format(new FileInfo(path).Length)})");
            if (PastContextNote(m, counts.Max()) is { } past) Cli.ErrorLine($"note: {past}");
            return 0;
        });
        return command;
    }

    /// <summary><c>--input</c> of <c>attention</c> and <c>head-scores</c>: token ids as <c>sae model run --input</c> takes them.</summary>
    private static Option<string?> TokenInputOption(string shape) =>
        new("--input") { Description = $"safetensors file holding an int64 tensor 'tokens' {shape}, as sae model run --input takes it" };

    /// <summary>The <c>--prompt</c> texts, or null when <c>--input</c> gives the tokens (then <c>--no-prepend-bos</c> is refused:
    /// the ids are used as they are); exactly one of the two.</summary>
    private static string[]? PromptOrInput(ParseResult parse, Option<string[]> prompt, Option<string?> input, Option<bool> noBos)
    {
        var texts = parse.GetValue(prompt) is { Length: > 0 } t ? t : null;
        if ((texts is null) == (parse.GetValue(input) is null)) throw new SaeSharpException("give either --prompt (text) or --input (a safetensors file of token ids)");
        if (texts is null) Cli.RefuseGiven(parse, "for a --prompt's tokens; --input's token ids are used as they are", noBos);
        return texts;
    }

    /// <summary><c>--layer</c> of <c>attention</c>: <c>L</c>, <c>L1,L2,...</c> (in that order, each once) or <c>all</c>.</summary>
    internal static List<int> AttentionLayers(string spec, int nLayers)
    {
        if (spec.Trim().Equals("all", StringComparison.OrdinalIgnoreCase)) return Enumerable.Range(0, nLayers).ToList();
        var layers = new List<int>();
        foreach (var part in spec.Split(','))
        {
            if (!int.TryParse(part.Trim(), NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out int l))
                throw new SaeSharpException($"--layer '{spec}': write a layer, layers separated by commas (0,1,5) or all");
            if (l < 0 || l >= nLayers) throw new SaeSharpException($"--layer {l}: the model has layers 0..{nLayers - 1}");
            if (!layers.Contains(l)) layers.Add(l);
        }
        return layers;
    }

    /// <summary>A [layer, head] grid as a JSON array of rows.</summary>
    internal static System.Text.Json.Nodes.JsonArray Grid(double[,] v) => new(Enumerable.Range(0, v.GetLength(0))
        .Select(l => (System.Text.Json.Nodes.JsonNode?)new System.Text.Json.Nodes.JsonArray(Enumerable.Range(0, v.GetLength(1))
            .Select(h => double.IsNaN(v[l, h]) ? null : (System.Text.Json.Nodes.JsonNode?)v[l, h]).ToArray())).ToArray());

    /// <summary>The note for a run of <paramref name="tokens"/> tokens past the n_ctx of a model without learned positions
    /// (rotary or ALiBi; a learned-position model refuses such a run, <see cref="HookedTransformer.LearnedPositions"/>);
    /// null within it.</summary>
    internal static string? PastContextNote(HookedTransformer m, long tokens) =>
        tokens > m.Config.NCtx && !m.LearnedPositions
            ? $"{tokens} tokens exceed n_ctx={m.Config.NCtx} of {m.Config.ModelName}, the context it was trained on; " +
              $"{(m.Config.Alibi ? "ALiBi" : "rotary")} positions run on past it, as transformers does (TransformerLens refuses), " +
              "but quality may drop"
            : null;

    /// <summary>Every command that generates, before it starts: a prompt of <paramref name="promptTokens"/> tokens and
    /// <paramref name="newTokens"/> new ones past the n_ctx of a model with learned positions is an error naming
    /// <paramref name="flag"/> and how many new tokens fit (<paramref name="prompt"/>: "the prompt", or "prompt 1" of several);
    /// a rotary or ALiBi model runs on past it, with <see cref="PastContextNote"/> after.</summary>
    internal static void RefuseGenerationPastContext(HookedTransformer m, long promptTokens, int newTokens, string flag, string prompt = "the prompt")
    {
        if (promptTokens + newTokens > m.Config.NCtx && m.LearnedPositions)
            throw new SaeSharpException($"{flag} {newTokens}: {prompt}'s {promptTokens} tokens and {newTokens} new ones exceed the context of " +
                                        $"{m.Config.NCtx} tokens of {m.Config.ModelName} (learned positions); ask for at most {Math.Max(0, m.Config.NCtx - promptTokens)}");
    }

    /// <summary>Writes a <c>--png</c> heatmap of <paramref name="values"/> [rows, columns] (<see cref="SaeSharp.Plots.HeatmapPlot"/>,
    /// atomically) and says so.</summary>
    internal static void WriteHeatmap(string path, double[,] values, string title, string rowLabel, string columnLabel, string valueLabel,
        IReadOnlyList<string>? rowNames = null, IReadOnlyList<string>? columnNames = null)
    {
        var bytes = SaeSharp.Plots.HeatmapPlot.Render(values, title, rowLabel, columnLabel, valueLabel, rowNames, columnNames);
        SaeSharp.IO.AtomicFile.Write(path, s => s.Write(bytes));
        Console.WriteLine($"wrote {path}");
    }

    /// <summary>Writes a <c>--json</c> file (indented, atomically) and says so.</summary>
    internal static void WriteJson(string path, System.Text.Json.Nodes.JsonNode node)
    {
        SaeSharp.IO.AtomicFile.WriteAllText(path, node.ToJsonString(new JsonSerializerOptions { WriteIndented = true }));
        Console.WriteLine($"wrote {path}");
    }

    /// <summary>A prompt's tokens by the model's tokenizer, [1, pos]; a prompt that gives no token, or more than a model of
    /// learned positions has, is an error naming <paramref name="option"/>, and words the tokenizer reads as its unknown
    /// token are noted.</summary>
    internal static Tensor PromptTokens(HookedTransformer m, string text, bool bos, string option)
    {
        var tokens = m.ToTokens(text, bos);
        if (tokens.shape[1] == 0) throw InterventionCommands.NoTokenError(option, text);
        RefusePastContext(m, tokens, $"{option} {PromptName(text)}", "give a shorter prompt");
        InterventionCommands.NoteUnknownWords(m.Tokenizer, text, option);
        return tokens;
    }

    /// <summary>A prompt as error messages quote it: in double quotes, cut to 60 characters.</summary>
    private static string PromptName(string text) => $"\"{(text.Length > 60 ? text[..57] + "..." : text)}\"";

    /// <summary>Learned positions end at W_pos's last row: rows of <paramref name="tokens"/> longer than the model's n_ctx are
    /// an error naming <paramref name="what"/> (the option and its value), the token count and the model's limit, not the
    /// run's "sequence of N tokens".</summary>
    internal static void RefusePastContext(HookedTransformer m, Tensor tokens, string what, string fix)
    {
        if (m.LearnedPositions && tokens.shape[^1] > m.Config.NCtx)
            throw new SaeSharpException($"{what}: {tokens.shape[^1]} tokens, more than the context window of {m.Config.ModelName} " +
                                        $"(n_ctx={m.Config.NCtx}, learned positions); {fix}");
    }

    /// <summary><c>--token-range LOW,HIGH</c>, HIGH capped at the vocabulary size.</summary>
    private static (long Low, long High) TokenRange(string spec, int vocab)
    {
        var parts = spec.Split(',');
        if (parts.Length != 2 || !long.TryParse(parts[0].Trim(), NumberStyles.None, CultureInfo.InvariantCulture, out long low)
            || !long.TryParse(parts[1].Trim(), NumberStyles.None, CultureInfo.InvariantCulture, out long high))
            throw new SaeSharpException($"--token-range '{spec}': write LOW,HIGH with two token ids (100,20000)");
        high = Math.Min(high, vocab);
        if (low >= high)
            throw new SaeSharpException($"--token-range '{spec}': no token id in [{low}, {high}) (the vocabulary has {vocab} tokens)");
        return (low, high);
    }

    /// <summary>Each score as a layer × head table (heads split over several tables to fit the terminal), then the top heads of
    /// each (heads not scored, NaN, left out).</summary>
    internal static void WriteHeadScores(SaeSharp.Analysis.HeadScores scores, string source, int top) =>
        WriteHeadScores([.. BuiltInKinds(scores).Select(k => (k.Title, k.Values))], source, top);

    /// <summary>As <see cref="WriteHeadScores(SaeSharp.Analysis.HeadScores, string, int)"/> for any scores, each titled.</summary>
    internal static void WriteHeadScores(IReadOnlyList<(string Title, double[,] Values)> kinds, string source, int top)
    {
        Console.WriteLine($"Head scores: {source}");
        int layers = kinds[0].Values.GetLength(0), heads = kinds[0].Values.GetLength(1);
        foreach (var (title, v) in kinds)
            WriteHeadGrid($"{char.ToUpperInvariant(title[0])}{title[1..]} score", v, Enumerable.Range(0, layers).ToList());
        var ranked = kinds.Select(k => Enumerable.Range(0, layers * heads).Select(i => (Layer: i / heads, Head: i % heads, Score: k.Values[i / heads, i % heads]))
            .Where(x => !double.IsNaN(x.Score)).OrderByDescending(x => x.Score).Take(top).ToList()).ToList();
        Console.WriteLine();
        Cli.WriteColumns("Top heads", [new Column("rank"), .. kinds.Select(k => new Column(k.Title))],
            Enumerable.Range(0, ranked[0].Count).Select(r => (IReadOnlyList<string>)[$"{r + 1}", .. ranked.Select(x => $"L{x[r].Layer}H{x[r].Head} {Cli.Fixed(x[r].Score, 2)}")]));
    }

    /// <summary>A layer × head table of <paramref name="v"/> (row i is layer <paramref name="layerIds"/>[i]), two decimals, the
    /// heads split over several tables to fit the terminal; columns <paramref name="headPrefix"/>0, 1, ... (KV for key/value heads).</summary>
    internal static void WriteHeadGrid(string title, double[,] v, IReadOnlyList<int> layerIds, string headPrefix = "H")
    {
        int layers = v.GetLength(0), heads = v.GetLength(1);
        bool terminal = !Console.IsOutputRedirected || Cli.TerminalTables.Value;
        var cells = Enumerable.Range(0, layers).Select(l => Enumerable.Range(0, heads).Select(h => double.IsNaN(v[l, h]) ? "–" : Cli.Fixed(v[l, h], 2)).ToArray()).ToArray();
        int cell = Math.Max(cells.SelectMany(r => r).Max(c => c.Length), $"{headPrefix}{heads - 1}".Length) + 3;
        int fit = terminal ? Math.Max(1, (Spectre.Console.AnsiConsole.Profile.Width - 1 - $"L{layerIds.Max()}".Length - 5) / cell) : heads;
        int chunks = (heads + fit - 1) / fit, per = (heads + chunks - 1) / chunks;
        for (int first = 0; first < heads; first += per)
        {
            int last = Math.Min(heads, first + per);
            Console.WriteLine();
            Cli.WriteColumns(title + (chunks > 1 ? $", heads {first}–{last - 1}" : ""),
                [new Column("layer"), .. Enumerable.Range(first, last - first).Select(h => new Column($"{headPrefix}{h}", Right: true))],
                Enumerable.Range(0, layers).Select(l => (IReadOnlyList<string>)[$"L{layerIds[l]}", .. cells[l][first..last]]));
        }
    }

    /// <summary>One stack of <see cref="SaeSharp.Analysis.LogitAttribution"/>: label, value and a bar (+ or −) scaled to the stack's largest |value|.</summary>
    private static void WriteLogitComponents(string title, string what, IReadOnlyList<SaeSharp.Analysis.LogitComponent> rows)
    {
        const int width = 30;
        double max = rows.Select(c => Math.Abs(c.LogitDiff)).DefaultIfEmpty(0).Max();
        string Bar(double v) => max == 0 ? "" : new string(v < 0 ? '-' : '+', (int)Math.Round(width * Math.Abs(v) / max));
        Console.WriteLine();
        Cli.WriteColumns(title, [what, new Column("logit diff", Right: true), new Column("", NoWrap: true)],
            rows.Select(c => new[] { c.Label, Cli.Fixed(c.LogitDiff, 3), Bar(c.LogitDiff) }));
    }

    /// <summary>A <see cref="SaeSharp.Analysis.PromptTestResult"/> as TransformerLens's test_prompt prints it: the tokens as Python
    /// lists, then per answer token its rank, logit and probability and a table of the top tokens, then the ranks.</summary>
    internal static void WritePromptTest(SaeSharp.Analysis.PromptTestResult result)
    {
        static string Repr(string s) => "'" + s.Replace("\\", "\\\\").Replace("'", "\\'").Replace("\n", "\\n").Replace("\t", "\\t").Replace("\r", "\\r") + "'";
        static string List(IEnumerable<string> items) => "[" + string.Join(", ", items) + "]";
        string Num(double v) => Cli.Fixed(v, 2);
        Console.WriteLine($"Tokenized prompt: {List(result.PromptTokens.Select(Repr))}");
        Console.WriteLine($"Tokenized answer: {List(result.AnswerTokens.Select(Repr))}");
        foreach (var p in result.Predictions)
        {
            var a = p.Answer;
            Cli.WriteColumns($"Performance on answer token {Analysis.DashboardWriter.Quote(a.Token)}: rank {a.Rank}, logit {Num(a.Logit)}, " +
                             $"prob {Cli.Percent("prob", a.Prob, 2)}",
                ["rank", "token", new Column("logit", Right: true), new Column("prob", Right: true)],
                p.Top.Select(t => new[] { t.Rank.ToString(System.Globalization.CultureInfo.InvariantCulture), Analysis.DashboardWriter.Quote(t.Token),
                                          Num(t.Logit), Cli.Percent("prob", t.Prob, 2) }));
        }
        Console.WriteLine($"Ranks of the answer tokens: {List(result.AnswerRanks.Select(r => $"({Repr(r.Token)}, {r.Rank})"))}");
    }

    /// <summary>The hook names, each expert hook of an MoE block once for all experts (<c>blocks.3.mlp.experts.{0..127}.hook_post</c>,
    /// where the model has one line per expert: 18k lines for a 48-layer, 128-expert model).</summary>
    internal static IEnumerable<(string Shown, string Name)> HookListing(IEnumerable<string> names)
    {
        var list = names.ToList();
        var experts = new Dictionary<(string Block, string Hook), int>();
        foreach (var n in list)
            if (ExpertHook.Match(n) is { Success: true } e)
                experts[(e.Groups[1].Value, e.Groups[3].Value)] = Math.Max(experts.GetValueOrDefault((e.Groups[1].Value, e.Groups[3].Value)), int.Parse(e.Groups[2].Value, System.Globalization.CultureInfo.InvariantCulture));
        foreach (var n in list)
        {
            if (ExpertHook.Match(n) is not { Success: true } e) yield return (n, n);
            else if (e.Groups[2].Value == "0")
            {
                int last = experts[(e.Groups[1].Value, e.Groups[3].Value)];
                yield return ($"{e.Groups[1].Value}.mlp.experts.{(last == 0 ? "0" : $"{{0..{last}}}")}.{e.Groups[3].Value}", n);
            }
        }
    }

    private static readonly System.Text.RegularExpressions.Regex ExpertHook = new(@"^(blocks\.\d+)\.mlp\.experts\.(\d+)\.(hook_\w+)$");
}
