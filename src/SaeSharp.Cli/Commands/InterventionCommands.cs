using System.CommandLine;
using System.Globalization;
using System.Text.Json.Nodes;
using SaeSharp.Activations;
using SaeSharp.Interop;
using SaeSharp.Interventions;
using SaeSharp.IO;
using SaeSharp.Models;
using SaeSharp.Pipelines;
using SaeSharp.Saes;
using SaeSharp.Tokenizers;
using static TorchSharp.torch;

namespace SaeSharp.Cli.Commands;

/// <summary><c>sae steer</c>, <c>sae ablate</c>, <c>sae attribute</c> and the SAE options of <c>sae model run</c>: features used inside the model.</summary>
internal static class InterventionCommands
{
    /// <summary>The SAE and intervention options of <c>sae model run</c>.</summary>
    internal sealed class RunEdits
    {
        public readonly Option<string[]> Sae = new("--sae") { Description = "SAE folder or file to splice at its hook (repeatable), or one crosscoder spliced at every hook of its slots" };
        public readonly Option<bool> ErrorTerm = new("--error-term") { Description = "Add each SAE's error term back (logits then equal the clean run's)" };
        public readonly Option<string[]> Steer = new("--steer") { Description = "F:S adds S·W_dec[F] at the SAE's hook (repeatable)" };
        public readonly Option<string[]> Clamp = new("--clamp") { Description = "F:V sets feature F to V (repeatable)" };
        public readonly Option<string[]> Ablate = new("--ablate") { Description = "F1,F2,… ablates these features (repeatable)" };
        public readonly Option<string> AblateMode = new("--ablate-mode") { Description = "zero, or mean (the feature's mean over the input's tokens)", DefaultValueFactory = _ => "zero" };
        public readonly Option<string?> Positions = new("--positions") { Description = "Comma-separated token positions that --steer applies at, negative ones from the prompt's end (-1 its last token; a position named twice, e.g. 5,-1 in a 6-token prompt, counts once; default: every position)" };
        public readonly Option<int> SaeIndex = new Option<int>("--sae-index") { Description = "Which --sae (0-based) the interventions apply to", DefaultValueFactory = _ => 0 }.NonNegative();

        public void AddTo(Command c)
        {
            foreach (var o in new Option[] { Sae, ErrorTerm, Steer, Clamp, Ablate, AblateMode, Positions, SaeIndex }) c.Options.Add(o);
        }

        public bool Given(ParseResult p) => (p.GetValue(Sae)?.Length ?? 0) > 0 || Any(p, Steer) || Any(p, Clamp) || Any(p, Ablate);

        /// <summary>Refuses the options that qualify another one that is not given (they would change nothing).</summary>
        public void RefuseUnqualified(ParseResult p)
        {
            if (!Any(p, Sae)) Cli.RefuseGiven(p, "the error term of a spliced SAE; give --sae", ErrorTerm);
            if (!Any(p, Ablate)) Cli.RefuseGiven(p, "how --ablate ablates its features; give --ablate", AblateMode);
            if (!Any(p, Steer)) Cli.RefuseGiven(p, "where --steer applies; give --steer", Positions);
            if (!Any(p, Steer) && !Any(p, Clamp) && !Any(p, Ablate))
                Cli.RefuseGiven(p, "which --sae --steer, --clamp and --ablate apply to; give one of them", SaeIndex);
        }

        private static bool Any(ParseResult p, Option<string[]> o) => (p.GetValue(o)?.Length ?? 0) > 0;
        /// <summary>True when --steer, --clamp or --ablate edits the run (beyond splicing the SAEs).</summary>
        public bool Edits(ParseResult p) => Any(p, Steer) || Any(p, Clamp) || Any(p, Ablate);

        /// <summary>
        /// The hooked model and interventions of the command line. Every SAE is spliced, except one whose only
        /// interventions are steering without <c>--error-term</c>: steering then adds to the raw activation.
        /// <paramref name="owned"/> are the loaded <c>--sae</c>s, <paramref name="modelHooks"/> the model's processing hooks;
        /// with <paramref name="generate"/> new tokens, <c>--positions</c> may name their positions too (the prompt and its
        /// continuation one numbering); a negative position counts from the end of the prompt (<paramref name="prompt"/> names it).
        /// </summary>
        public (HookedSaeTransformer Hooked, List<Intervention> Edits) Build(ParseResult p, HookedTransformer model, Tensor tokens, List<Sae> owned,
            IReadOnlyList<(string Name, Func<Tensor, Tensor?> Fn)> modelHooks, int generate = 0, string prompt = "the prompt")
        {
            if (owned.Count == 0) throw new SaeSharpException("--steer, --clamp and --ablate need --sae");
            int index = p.GetValue(SaeIndex);
            if (index < 0 || index >= owned.Count) throw new SaeSharpException($"--sae-index {index}: give 0..{owned.Count - 1} (there are {owned.Count} --sae)");
            var target = owned[index];
            var edits = new List<Intervention>();
            long length = tokens.shape[1] + generate;
            var positions = ParsePositions(p.GetValue(Positions), tokens.shape[1], length,
                generate == 0 ? $"the input has {tokens.shape[1]} tokens" : $"the prompt ({tokens.shape[1]} tokens) and its continuation have {length} tokens", prompt);
            foreach (var s in p.GetValue(Steer) ?? []) { var (f, v) = FeatureValue(s, "--steer", "F:S"); edits.Add(Given("--steer", s, () => new Steering(target, f, v) { Positions = positions })); }
            foreach (var s in p.GetValue(Clamp) ?? []) { var (f, v) = FeatureValue(s, "--clamp", "F:V"); edits.Add(Given("--clamp", s, () => new Clamp(target, f, v))); }
            var ablated = (p.GetValue(Ablate) ?? []).SelectMany(a => FeatureList(a, "--ablate")).ToList();
            if (ablated.Where(f => f < 0 || f >= target.Cfg.DSae).Select(f => (int?)f).FirstOrDefault() is int outside)
                throw new SaeSharpException($"--ablate {outside}: feature {outside} is out of range for an SAE with d_sae={target.Cfg.DSae} (0..{target.Cfg.DSae - 1})");
            var mode = p.GetValue(AblateMode);
            if (mode is not ("zero" or "mean")) throw new SaeSharpException($"--ablate-mode {mode}: expected zero or mean");
            if (ablated.Count > 0)
            {
                var means = mode == "mean" ? Ablation.FeatureMeans(model, target, [tokens], modelHooks: modelHooks) : null;
                edits.Add(new Ablation(target, ablated, means));
            }
            bool errorTerm = p.GetValue(ErrorTerm);
            var hooked = new HookedSaeTransformer(model) { ModelHooks = modelHooks };
            for (int i = 0; i < owned.Count; i++)
            {
                bool steerOnly = i == index && edits.Count > 0 && edits.All(e => e is Steering);
                if (!steerOnly || errorTerm) hooked.AddSae(owned[i], useErrorTerm: errorTerm);
            }
            return (hooked, edits);
        }

        /// <summary>An edit made from option <paramref name="option"/>'s value <paramref name="value"/>; its refusal (a feature
        /// out of range, ...) names the option and the value as given.</summary>
        private static Intervention Given(string option, string value, Func<Intervention> make)
        {
            try { return make(); }
            catch (SaeSharpException e) { throw new SaeSharpException($"{option} {value}: {e.Message}"); }
        }
    }

    public static Sae LoadSae(string path)
    {
        if (CrossLayerTranscoderLoader.IsCrossLayerTranscoder(path, null))
            throw new SaeSharpException($"{path}: a whole cross-layer transcoder or transcoder set, not a single SAE: set its features with " +
                                        $"sae intervene --model M --sae {path} --prompt TEXT --set L:F:V[@POS] (sae graph builds its attribution graph)");
        var sae = SaeLoader.Load(path);
        sae.eval();
        return sae;
    }

    public static (int Feature, double Value) FeatureValue(string spec, string option, string form)
    {
        var parts = spec.Split(':');
        if (parts.Length != 2 || !int.TryParse(parts[0], NumberStyles.None, CultureInfo.InvariantCulture, out int f)
            || !double.TryParse(parts[1], NumberStyles.Float, CultureInfo.InvariantCulture, out double v))
            throw new SaeSharpException($"{option} '{spec}': expected {form}, e.g. 12:4.5");
        if (!double.IsFinite(v))
            throw new SaeSharpException($"{option} '{spec}': {form[^1]} must be a finite number, got {parts[1]}");
        return (f, v);
    }

    public static IEnumerable<int> FeatureList(string spec, string option)
    {
        var list = new List<int>();
        foreach (var part in spec.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
        {
            if (!int.TryParse(part, NumberStyles.None, CultureInfo.InvariantCulture, out int f))
                throw new SaeSharpException($"{option} '{spec}': expected feature indices separated by commas, e.g. 3,17,250");
            list.Add(f);
        }
        if (list.Count == 0) throw new SaeSharpException($"{option} '{spec}': no feature given");
        return list;
    }


    /// <summary>The model folder, its tokenizer (null when it has none and the tokens come from <c>--input</c>) and the
    /// tokens of <c>--prompt</c> or <c>--input</c> (exactly one given; <c>--no-prepend-bos</c> only with a prompt).</summary>
    internal static (string Folder, ITextTokenizer? Tokenizer, Tensor Tokens) PromptOrInputTokens(ParseResult parse, Option<string> model,
        Option<string?> prompt, Option<string?> input, Option<bool> noBos)
    {
        var (folder, tok, tokens) = PromptsOrInputTokens(parse, model, prompt, parse.GetValue(prompt) is string text ? [text] : [], input, noBos);
        return (folder, tok, tokens[0]);
    }

    /// <summary>As <see cref="PromptOrInputTokens"/> with <paramref name="prompt"/> repeatable: each text's tokens [1, pos], or
    /// <c>--input</c>'s tokens alone.</summary>
    internal static (string Folder, ITextTokenizer? Tokenizer, List<Tensor> Tokens) PromptsOrInputTokens(ParseResult parse, Option<string> model,
        Option<string[]> prompt, Option<string?> input, Option<bool> noBos) =>
        PromptsOrInputTokens(parse, model, prompt, parse.GetValue(prompt) ?? [], input, noBos);

    private static (string Folder, ITextTokenizer? Tokenizer, List<Tensor> Tokens) PromptsOrInputTokens(ParseResult parse, Option<string> model,
        Option prompt, string[] texts, Option<string?> input, Option<bool> noBos)
    {
        if (texts.Length > 0)
            Cli.RefuseGiven(parse, "the tokens come from --prompt; give one of --prompt and --input", input);
        else if (parse.GetValue(input) is not null)
            Cli.RefuseGiven(parse, "for a --prompt's tokens; --input's token ids are used as they are", noBos);
        var folder = ModelSource.Resolve(parse.GetValue(model)!);
        ITextTokenizer? tok = null;
        try { tok = Tokenizer.FromFolder(folder); }
        catch (SaeSharpException) when (texts.Length == 0) { }
        if (texts.Length > 0) return (folder, tok, texts.Select(t => PromptTokens(tok!, t, !parse.GetValue(noBos))).ToList());
        if (parse.GetValue(input) is string inPath) return (folder, tok, [ReadTokens(inPath)]);
        throw new SaeSharpException($"give {prompt.Name} or --input");
    }

    /// <summary>Prompt text to [1, pos] ids, with BOS first when the tokenizer has one (SAELens's prepend_bos default).</summary>
    public static Tensor PromptTokens(ITextTokenizer tok, string prompt, bool prependBos)
    {
        var ids = tok.EncodePrompt(prompt, prependBos && tok.BosTokenId is not null);
        if (ids.Length == 0) throw NoTokenError("--prompt", prompt);
        NoteUnknownWords(tok, prompt, "--prompt");
        using var scope = NewDisposeScope();
        return tensor(ids).unsqueeze(0).MoveToOuterDisposeScope();
    }

    /// <summary>The error for a prompt (given as <paramref name="option"/>) that gives no token at all: empty text and no BOS
    /// before it (<c>--no-prepend-bos</c>, or a tokenizer without one). With BOS an empty prompt runs on BOS alone, as
    /// TransformerLens's <c>model("")</c>. With <paramref name="need"/> and <paramref name="use"/>: the prompt gives
    /// <paramref name="got"/> tokens, fewer than <paramref name="use"/> (a next-token loss: 2) needs.</summary>
    internal static SaeSharpException NoTokenError(string option, string prompt, long got = 0, int need = 1, string? use = null) =>
        got == 0 ? new($"{option} \"{prompt}\": gives no token (its text gives none and no BOS is prepended); give some text")
            : new($"{option} \"{prompt}\": gives {got} token{(got == 1 ? "" : "s")}, and {use} needs at least {need}; give a longer prompt");

    /// <summary>Refuses (naming <paramref name="option"/> and the prompt) the first of <paramref name="texts"/> whose tokens
    /// (<paramref name="tokens"/>, [1, pos] each) are fewer than the 2 that <paramref name="use"/> needs (a next-token loss,
    /// a head's attention to earlier tokens).</summary>
    internal static void RefuseFewerThanTwoTokens(string option, IReadOnlyList<string> texts, IReadOnlyList<Tensor> tokens, string use)
    {
        for (int i = 0; i < Math.Min(texts.Count, tokens.Count); i++)
            if (tokens[i].shape[1] < 2) throw NoTokenError(option, texts[i], tokens[i].shape[1], 2, use);
    }

    /// <summary>A note on stderr naming the words of <paramref name="text"/> (given as <paramref name="option"/>) that the
    /// tokenizer reads as its unknown token, so that a run on <c>&lt;unk&gt;</c> is not taken for a run on the words.</summary>
    internal static void NoteUnknownWords(ITextTokenizer tok, string text, string option)
    {
        var words = tok.UnknownWords(text);
        if (words.Count > 0)
            Cli.ErrorLine($"note: {option}: {string.Join(", ", words.Select(w => $"'{w}'"))} not in the tokenizer's vocabulary: " +
                          $"read as {tok.IdToToken(tok.UnkTokenId!.Value)}");
    }

    internal static Option<bool> NoBosOption() => new("--no-prepend-bos") { Description = "Do not start the prompt with BOS" };

    public static Command Steer()
    {
        var model = ModelCommands.ModelOption();
        var sae = SaeCommands.SaeOption();
        var feature = new Option<int>("--feature") { Description = "Feature index", Required = true };
        var scale = new Option<double[]>("--scale")
        {
            Description = "Steering coefficient S (adds S·W_dec[F] at every position); repeat it for a sweep (--scale -4 --scale 2 ...): one table per S, the unsteered runs shared",
            Required = true, AllowMultipleArgumentsPerToken = false,
        };
        var prompt = new Option<string>("--prompt") { Description = "Prompt text", Required = true };
        var maxNew = new Option<int>("--max-new-tokens") { Description = "Tokens to generate", DefaultValueFactory = _ => 32 }.NonNegative();
        var temperature = new Option<double>("--temperature") { Description = "Sampling temperature (0 = greedy)", DefaultValueFactory = _ => 1.0 };
        var topK = new Option<int?>("--top-k") { Description = "Sample from the k most likely tokens" }.Positive();
        var topP = new Option<double?>("--top-p") { Description = "Nucleus sampling mass" };
        var seed = new Option<ulong>("--seed") { Description = "Seed of the first run (run r uses seed + r, steered and unsteered alike)", DefaultValueFactory = _ => 0 };
        var runs = new Option<int>("--runs") { Description = "Continuations of each kind", DefaultValueFactory = _ => 3 }.Positive();
        var hook = new Option<string?>("--hook") { Description = "Hook to steer at (default: the SAE's hook_name)" };
        var positionsOption = new Option<string?>("--positions") { Description = "Comma-separated token positions to steer at, negative ones from the prompt's end (-1 its last token; a position named twice counts once; default: every position, generated ones included)" };
        var noBos = NoBosOption();
        var diffModel = ModelSource.AtRevision<string?>(new("--diff-model") { Description = "A model-diffing crosscoder: the second (chat) model, which --slot may choose to generate with" }, ModelSource.DiffRevision);
        var slot = new Option<int?>("--slot") { Description = "A crosscoder: the slot whose model generates, steered at every hook of its slots by that slot's decoder rows (default: the last slot)" };
        var byMaxAct = new Option<bool>("--scale-by-max-act")
        {
            Description = "Give --scale in units of the feature's max activation (SAELens's steering tutorial: coefficient × max_act), read from --features-file or measured over --dataset",
        };
        var featuresFile = new Option<string?>("--features-file") { Description = "With --scale-by-max-act: the features.jsonl of sae features (or its --out folder) holding the feature's max_activation" };
        var dataset = new Option<string?>("--dataset") { Description = "With --scale-by-max-act: measure the feature's max activation over this dataset as sae features does (SAELens find_max_activation)" };
        var maxActTokens = new Option<long?>("--tokens") { Description = "With --dataset: tokens to measure the max activation over (default 20000)" }.Positive();
        var command = new Command("steer", "Continue a prompt with and without a feature's decoder direction added (same seeds), and show the feature's top logit tokens")
        {
            model, sae, feature, scale, prompt, maxNew, temperature, topK, topP, seed, runs, hook, positionsOption, noBos, diffModel, slot,
            byMaxAct, featuresFile, dataset, maxActTokens,
        };
        var penalties = new ModelCommands.PenaltyOptions();
        penalties.AddTo(command);
        Cli.SetAction(command, parse =>
        {
            penalties.Validate(parse);
            if (parse.GetValue(temperature) == 0)
                Cli.RefuseGiven(parse, "sampling options; --temperature 0 is greedy decoding, which they do not change (give --temperature > 0 to sample)", topK, topP, seed);
            var folder = ModelSource.Resolve(parse.GetValue(model)!);
            var scales = parse.GetValue(scale)!;
            // How each scale is named in titles and notes: as given ("20"), or "2 max act" with --scale-by-max-act.
            var scaleNames = scales.Select(v => v.ToString(CultureInfo.InvariantCulture) + (parse.GetValue(byMaxAct) ? " max act" : "")).ToArray();
            // Each strength named as given on the command line; one given twice would run and print the same table twice.
            var scaleTokens = parse.GetResult(scale)?.Tokens.Select(t => t.Value).ToArray() ?? [];
            string Given(int i) => i < scaleTokens.Length ? scaleTokens[i] : scales[i].ToString(CultureInfo.InvariantCulture);
            for (int i = 0; i < scales.Length; i++)
                if (!double.IsFinite(scales[i])) throw new SaeSharpException($"--scale {Given(i)}: expected a finite number");
            for (int i = 1; i < scales.Length; i++)
                if (Array.IndexOf(scales, scales[i]) is int first && first < i)
                    throw new SaeSharpException($"--scale {Given(i)}: the same strength as --scale {Given(first)}; give each strength once");
            if (!parse.GetValue(byMaxAct))
                Cli.RefuseGiven(parse, "for --scale-by-max-act, the source of the feature's max activation", featuresFile, dataset, maxActTokens);
            else if (parse.GetValue(featuresFile) is not null)
                Cli.RefuseGiven(parse, "the max activation comes from --features-file; give one of --features-file and --dataset", dataset, maxActTokens);
            else if (parse.GetValue(dataset) is null)
                throw new SaeSharpException("--scale-by-max-act: give --features-file FEATURES.jsonl (sae features output) or --dataset D to measure the feature's max activation over");
            if (CrossCoderFormat.IsCrossCoderPath(parse.GetValue(sae)!))
            {
                Cli.RefuseGiven(parse, "for an SAE; a crosscoder steers at raw --scale", byMaxAct);
                if (scales.Length > 1) throw new SaeSharpException("--scale: a crosscoder steers at one scale per call; give --scale once");
                Cli.RefuseGiven(parse, "for SAEs; a crosscoder steers at the hooks of its slots", hook);
                return CrossCoderCli.Steer(parse.GetValue(sae)!, folder, parse.GetValue(diffModel) is { } dm ? ModelSource.Resolve(dm) : null, parse.GetValue(slot),
                    parse.GetValue(feature), scales[0], parse.GetValue(prompt)!, parse.GetValue(maxNew), parse.GetValue(runs),
                    i => penalties.Apply(parse, new GenerationOptions
                    {
                        Temperature = parse.GetValue(temperature), TopK = parse.GetValue(topK), TopP = parse.GetValue(topP), Seed = parse.GetValue(seed) + (ulong)i,
                    }),
                    !parse.GetValue(noBos), parse.GetValue(positionsOption));
            }
            Cli.RefuseGiven(parse, "for a crosscoder (--sae CROSSCODER)", diffModel, slot);
            using var s = LoadSae(parse.GetValue(sae)!);
            if (parse.GetValue(byMaxAct))
            {
                // SAELens's steering tutorial: strength = coefficient × the feature's max activation (before the model is loaded here).
                int f = parse.GetValue(feature);
                double maxAct = parse.GetValue(featuresFile) is { } ff
                    ? Analysis.FeatureReport.MaxActivation(ff, f, s.Cfg, s.Cfg.Metadata.HookOr(parse.GetValue(hook)))
                    : Pipelines.AnalysisPipeline.MaxActivation(parse.GetValue(sae)!, f,
                        new Pipelines.ModelDataOptions { ModelPath = folder, DatasetPath = parse.GetValue(dataset)!, Tokens = parse.GetValue(maxActTokens) ?? 20000 });
                string source = parse.GetValue(featuresFile) ?? $"measured over {(parse.GetValue(maxActTokens) ?? 20000).ToString(CultureInfo.InvariantCulture)} tokens of {parse.GetValue(dataset)}";
                if (!(maxAct > 0))
                    throw new SaeSharpException($"--scale-by-max-act: feature {f} has max activation {maxAct.ToString(CultureInfo.InvariantCulture)} ({source}): it never fires, so its units scale nothing");
                Console.WriteLine($"feature {f} max activation {maxAct.ToString("G6", CultureInfo.InvariantCulture)} ({source})");
                Console.WriteLine("strengths: " +
                    string.Join(", ", scales.Select(v => $"{v.ToString(CultureInfo.InvariantCulture)} → {(v * maxAct).ToString("G6", CultureInfo.InvariantCulture)}")));
                scales = scales.Select(v => v * maxAct).ToArray();
            }
            using var pm = ModelForSae.Load(folder, s.Cfg);   // processed as the SAE's cfg records, in its dtype
            var m = pm.Model;
            var tok = Tokenizer.FromFolder(folder);
            using var scope = NewDisposeScope();   // the tensors shown below (Conventions: no temporary outside a scope)
            int r = parse.GetValue(runs);
            using var tokens = PromptTokens(tok, parse.GetValue(prompt)!, !parse.GetValue(noBos));
            long steps = tokens.shape[1] + parse.GetValue(maxNew);
            ModelCommands.RefuseGenerationPastContext(m, tokens.shape[1], parse.GetValue(maxNew), "--max-new-tokens");
            var positions = ParsePositions(parse.GetValue(positionsOption), tokens.shape[1], steps, $"the prompt ({tokens.shape[1]} tokens) and its continuation have {steps} tokens");
            // One Steering per --scale (a sweep, as SAELens tutorial 2.0's strengths × max activation), each against the same unsteered runs.
            var steerings = scales.Select(v => new Steering(s, parse.GetValue(feature), v, parse.GetValue(hook)) { Positions = positions }).ToList();
            var steering = steerings[0];
            var site = m.Attach(s, steering.Hook);   // a transcoder steers (and writes) at its output hook
            string at = site.IsTranscoder ? $"{site.OutputHook} (transcoder reading {site.Hook})" : s.Cfg.Metadata.Site(site.Hook);
            var hooked = new HookedSaeTransformer(m) { ModelHooks = pm.Hooks };
            long promptLen = tokens.shape[1];
            var tables = steerings.Select(_ => new List<string[]>()).ToList();
            var notes = new List<string>();
            long longest = 0;
            for (int i = 0; i < r; i++)
            {
                var o = penalties.Apply(parse, new GenerationOptions
                {
                    Temperature = parse.GetValue(temperature), TopK = parse.GetValue(topK), TopP = parse.GetValue(topP), Seed = parse.GetValue(seed) + (ulong)i,
                    EosTokenIds = m.StopTokenIds,
                });
                string Continue(Steering? steer)
                {
                    using var g = hooked.Generate(tokens, parse.GetValue(maxNew), o, steer is null ? [] : [steer]);
                    longest = Math.Max(longest, g.Tokens.shape[1]);
                    string kind = steer is null ? "unsteered" : scales.Length == 1 ? "steered" : $"steered × {scaleNames[steerings.IndexOf(steer)]}";
                    if (GenerationNote(g, 0, steer?.Positions) is string note) notes.Add($"seed {o.Seed}, {kind}: {note}");
                    return ModelCommands.Continuation(tok, g.Tokens, promptLen);
                }
                string plain = Continue(null);
                for (int k = 0; k < steerings.Count; k++) tables[k].Add([o.Seed.ToString()!, plain, Continue(steerings[k])]);
            }
            Console.WriteLine($"prompt: {parse.GetValue(prompt)}");
            // The penalties given, both runs penalised alike: "feature 3 × 20 at H (repetition penalty 1.3)".
            string penalised = string.Join(", ", penalties.Describe(parse));
            for (int k = 0; k < steerings.Count; k++)
                Cli.WriteColumns($"feature {steerings[k].Feature} × {scaleNames[k]} at {at}" +
                                 (penalised.Length == 0 ? "" : $" ({penalised})"), ["seed", "unsteered", "steered"], tables[k]);
            if (ModelCommands.PastContextNote(m, longest) is { } past) notes.Add(past);
            foreach (var note in notes) Cli.ErrorLine($"note: {note}");
            WriteFeatureLogits(steering.Feature, FeatureLogits(m, s, site.WriteHook, steering.Feature, 10, Math.Min(tok.VocabSize, m.Config.DVocab))
                .Select(e => (tok.TokenText((int)e.Token), e.Logit)));
            return 0;
        });
        return command;
    }

    /// <summary><c>sae ablate</c>'s per-position table (pos, token, next, CE clean, CE ablated, ΔCE, KL). The CE headings
    /// take two lines, so that a row of a special token (<c>"&lt;|endoftext|&gt;"</c>) and four-decimal losses fits
    /// 80 columns without its token cell wrapped.</summary>
    internal static void WritePerPosition(IEnumerable<IReadOnlyList<string>> rows) =>
        Cli.WriteColumns("per position", ["pos", "token", "next", new Column("CE clean", Right: true, Heading: "CE\nclean"),
            new Column("CE ablated", Right: true, Heading: "CE\nablated"), new Column("ΔCE", Right: true), new Column("KL", Right: true)], rows);

    /// <summary><c>sae steer</c>'s table of the feature's top logit tokens. The title stays short and the heading names the
    /// product (W_dec[F]·W_U, final norm scale folded: docs/features.md), so on an 80-column terminal the table is as
    /// narrow as its cells rather than stretched to a long title.</summary>
    internal static void WriteFeatureLogits(int feature, IEnumerable<(string Token, double Logit)> logits) =>
        Cli.WriteColumns($"feature {feature}: top logit tokens", ["token", new Column("logit", Right: true, Heading: "W_dec[F]·W_U")],
            logits.Select(e => new[] { Analysis.DashboardWriter.Quote(e.Token), e.Logit.ToString("F3", CultureInfo.InvariantCulture) }));

    /// <summary>The tokens whose logits the feature's decoder direction raises most: its logit effect as <c>sae features</c>
    /// reports it (<see cref="Analysis.FeatureWeights"/>: W_dec[F] written into the residual stream, times W_U with the final
    /// norm's scale folded in), over the first <paramref name="vocab"/> tokens; empty when the hook's rows cannot be mapped.</summary>
    public static IReadOnlyList<(long Token, double Logit)> FeatureLogits(HookedTransformer model, Sae sae, string hook, int feature, int n, int vocab)
    {
        using var scope = NewDisposeScope();
        Tensor dir;
        try { dir = Analysis.FeatureWeights.ResidualDirections(model, sae, hook, [feature]); }
        catch (SaeSharpException) { return []; }
        var l = dir.matmul(Analysis.FeatureWeights.FoldedUnembed(model))[0];
        if (vocab < l.shape[0]) l = l.narrow(0, 0, vocab);
        var (v, i) = l.topk((int)Math.Min(n, l.shape[0]));
        var vals = v.data<float>().ToArray();
        return i.data<long>().Select((t, k) => (t, (double)vals[k])).ToList();
    }

    /// <summary>The id of <paramref name="text"/> when the tokenizer makes exactly one token of it, and not the unknown
    /// token (unless the text is that token); otherwise an error naming <paramref name="option"/> and what the text tokenizes to.</summary>
    internal static int SingleToken(ITextTokenizer tok, string text, string option) => tok.SingleToken(text, option);

    public static Command Ablate()
    {
        var model = ModelCommands.ModelOption();
        var sae = SaeCommands.SaeOption();
        var features = new Option<string?>("--features") { Description = "Features to ablate, e.g. 3,17,250 (give --features, --clamp or both)" };
        var clamp = new Option<string[]>("--clamp") { Description = "F:V sets feature F to V, as sae model run --clamp (repeatable; a crosscoder: the raw latent f, not f·c)" };
        var prompt = new Option<string[]>("--prompt")
        {
            Description = "Prompt text; repeat it for several prompts: --metric then prints a row per prompt and their mean, and --each ablates over them as one batch " +
                          "(prompts of the same token count), the metric summed over the prompts",
            AllowMultipleArgumentsPerToken = false,
        };
        var dataset = new Option<string?>("--dataset") { Description = ".txt, .jsonl, .parquet (or a folder of them), or a hub dataset hf:ORG/NAME[:SPLIT]" };
        var tokensOpt = new Option<long>("--tokens") { Description = "Token budget over --dataset", DefaultValueFactory = _ => 4096 }.Positive();
        var contextSize = new Option<int>("--context-size") { Description = "Tokens per window over --dataset", DefaultValueFactory = _ => 128 }.Positive();
        var mode = new Option<string>("--mode") { Description = "zero, or mean (each feature's mean over the same tokens)", DefaultValueFactory = _ => "zero" };
        var hook = new Option<string?>("--hook") { Description = "Hook of the SAE (default: its hook_name)" };
        var top = new Option<int>("--top") { Description = "Most-changed predictions shown", DefaultValueFactory = _ => 10 }.Positive();
        var noBos = NoBosOption();
        var diffModel = ModelSource.AtRevision<string?>(new("--diff-model") { Description = "A model-diffing crosscoder: the second (chat) model, run on the same tokens to encode (same tokenizer)" }, ModelSource.DiffRevision);
        var slot = new Option<int?>("--slot") { Description = "A crosscoder: the slot whose model is run with the latents ablated (all of that model's slots are edited; default: the last slot)" };
        var metric = new Option<string?>("--metric") { Description = "With --prompt: also report this metric clean and ablated: logit-diff:A,B | logit:A | loss, as sae attribute takes it" };
        var each = new Option<bool>("--each") { Description = "With --metric: ablate each live feature (of --features, default all) on its own at --positions; a table feature → Δmetric, largest |Δ| first" };
        var positionsOpt = new Option<string?>("--positions") { Description = "With --prompt: token positions where --features, --each and --ablate-error ablate, negative ones from the end (-1 the last token; default: every position)" };
        var ablateError = new Option<bool>("--ablate-error") { Description = "Zero the SAE's error node (hook_sae_error): the activation becomes the reconstruction alone" };
        var command = new Command("ablate", "Ablate features (SAE spliced with its error term): change in next-token loss and KL per position and overall")
        {
            model, sae, features, clamp, prompt, dataset, tokensOpt, contextSize, mode, hook, top, noBos, diffModel, slot, metric, each, positionsOpt, ablateError,
        };
        Cli.SetAction(command, parse =>
        {
            var texts = parse.GetValue(prompt) ?? [];
            if (texts.Length > 0)
                Cli.RefuseGiven(parse, "for ablating over a dataset; the tokens come from --prompt (give one of --prompt and --dataset)", dataset, tokensOpt, contextSize);
            else if (parse.GetValue(dataset) is null)
                Cli.RefuseGiven(parse, "for ablating over --dataset, which is not given (or give --prompt)", tokensOpt, contextSize);
            if (texts.Length == 0) Cli.RefuseGiven(parse, "for --prompt (the metric is read at its last token)", metric, positionsOpt);
            if (parse.GetValue(metric) is null) Cli.RefuseGiven(parse, "the features ablated one at a time against --metric; give --metric", each);
            if (parse.GetValue(each)) Cli.RefuseGiven(parse, "for ablating features together; --each ablates one at a time", clamp);
            if (parse.GetValue(features) is null && !parse.GetValue(each) && !parse.GetValue(ablateError))
                Cli.RefuseGiven(parse, "where --features, --each and --ablate-error ablate (clamps apply at every position); give one of them", positionsOpt);
            var folder = ModelSource.Resolve(parse.GetValue(model)!);
            bool crossCoder = CrossCoderFormat.IsCrossCoderPath(parse.GetValue(sae)!);
            if (crossCoder) Cli.RefuseGiven(parse, "for SAEs; a crosscoder edits the hooks of its slots", hook, metric, each, positionsOpt, ablateError);
            else Cli.RefuseGiven(parse, "for a crosscoder (--sae CROSSCODER)", diffModel, slot);
            using var s = crossCoder ? null : LoadSae(parse.GetValue(sae)!);
            using var pm = s is null ? null : ModelForSae.Load(folder, s.Cfg);   // processed as the SAE's cfg records, in its dtype
            var tok = Tokenizer.FromFolder(folder);
            using var outer = NewDisposeScope();   // the token batches and the ablation's tensors
            var clamps = (parse.GetValue(clamp) ?? []).Select(c => FeatureValue(c, "--clamp", "F:V")).ToList();
            bool sweep = parse.GetValue(each), errorNode = parse.GetValue(ablateError);
            if (parse.GetValue(features) is null && clamps.Count == 0 && !sweep && !errorNode)
                throw new SaeSharpException(crossCoder ? "give --features (to ablate), --clamp F:V, or both"
                    : "give --features (to ablate), --clamp F:V, --ablate-error, or --metric M --each");
            if (parse.GetValue(features) is null && !sweep) Cli.RefuseGiven(parse, "how --features are ablated; give --features", mode);
            var list = parse.GetValue(features) is { } fs ? FeatureList(fs, "--features").ToList() : [];
            string md = parse.GetValue(mode)!;
            if (md is not ("zero" or "mean")) throw new SaeSharpException($"--mode {md}: expected zero or mean");
            string what = string.Join(", ", (list.Count > 0 && !sweep ? [$"{md}-ablation of {list.Count} {(crossCoder ? "latent" : "feature")}(s)"] : new List<string>())
                .Concat(clamps.Select(c => $"{(crossCoder ? "latent" : "feature")} {c.Feature} clamped to {c.Value.ToString("G6", CultureInfo.InvariantCulture)}"))
                .Concat(errorNode && !sweep ? ["error node zeroed"] : []));
            bool bos = !parse.GetValue(noBos);
            List<Tensor> batches;
            if (texts.Length > 0)
            {
                batches = texts.Select(t => PromptTokens(tok, t, bos)).ToList();
                RefuseFewerThanTwoTokens("--prompt", texts, batches, "comparing next-token losses clean and ablated");
            }
            else if (parse.GetValue(dataset) is string ds)
            {
                if (!Data.TextDataset.Exists(ds)) throw new SaeSharpException($"--dataset {ds}: no such file or folder");
                int ctx = parse.GetValue(contextSize);
                long budget = parse.GetValue(tokensOpt);
                var windows = ModelPipeline.Windows(tok, ds, ctx, bos).Take((int)Math.Max(1, (budget + ctx - 1) / ctx)).ToList();
                if (windows.Count == 0) throw new SaeSharpException($"--dataset {ds}: no text");
                batches = windows.Chunk(8).Select(c => tensor(c.SelectMany(w => w).ToArray(), c.Length, c[0].Length)).ToList();
            }
            else throw new SaeSharpException("give --prompt or --dataset");
            try
            {
                if (crossCoder)
                    return CrossCoderCli.Ablate(parse.GetValue(sae)!, folder, parse.GetValue(diffModel) is { } dm ? ModelSource.Resolve(dm) : null,
                        parse.GetValue(slot), list, md, clamps, what, batches, tok, parse.GetValue(top));
                var m = pm!.Model;
                var hooked = new HookedSaeTransformer(m) { ModelHooks = pm.Hooks };
                hooked.AddSae(s!, parse.GetValue(hook), useErrorTerm: true);
                using var means = md == "mean" && (list.Count > 0 || sweep) ? Ablation.FeatureMeans(m, s!, batches, parse.GetValue(hook), pm.Hooks) : null;
                // Each prompt's positions (negative ones from its own end); --each runs the prompts as one batch of one length.
                long[]? At(Tensor batch, int i) => ParsePositions(parse.GetValue(positionsOpt), batch.shape[1], batch.shape[1],
                    $"{(texts.Length > 1 ? $"prompt {i}" : "the prompt")} has {batch.shape[1]} tokens", texts.Length > 1 ? $"prompt {i}" : "the prompt");
                var at = At(batches[0], 0);
                var spec = parse.GetValue(metric) is { } mt ? AttributionMetric.Parse(mt, id => SingleToken(tok, id, "--metric")) : null;
                var spliced = hooked.Saes[0];
                string site = spliced.IsTranscoder ? $"{spliced.OutputHook} (transcoder reading {spliced.Hook})" : spliced.Sae.Cfg.Metadata.Site(spliced.Hook);
                string where = at is null ? "" : texts.Length > 1 && !sweep ? $", positions {parse.GetValue(positionsOpt)} of each prompt"
                    : $", position{(at.Length == 1 ? "" : "s")} {string.Join(",", at)}";
                if (sweep)
                {
                    if (batches.Count > 1 && batches.FirstOrDefault(b => b.shape[1] != batches[0].shape[1]) is { } other)
                        throw new SaeSharpException($"--each over several prompts ablates them as one batch, which needs prompts of one token count: " +
                            $"prompt 0 has {batches[0].shape[1]} tokens, prompt {batches.IndexOf(other)} {other.shape[1]}");
                    var batch = batches.Count == 1 ? batches[0] : cat(batches, 0);
                    var (clean, effects) = CliProgress.Run("ablate", progress =>
                        FeatureAblation.Sweep(hooked, s!, batch, spec!, at, list.Count > 0 ? list : null, means, parse.GetValue(hook), progress));
                    double? error = errorNode ? FeatureAblation.Metric(hooked, batch, spec!, [new ErrorAblation(s!, parse.GetValue(hook)) { Positions = at }]) : null;
                    if (effects.Count == 0)
                    {
                        // An empty table said nothing; say which features were asked for and that none fires there.
                        string asked = list.Count > 0 ? $"of --features {string.Join(",", list)} " : "";
                        Cli.WriteIndented(Spectre.Console.Markup.Escape($"no feature {asked}is active at {site}{where}: nothing to ablate " +
                                                                        $"({MetricLabel(spec!, tok)} = {F(clean)})"), 0);
                        if (error is null) return 0;
                    }
                    else Cli.WriteIndented(Spectre.Console.Markup.Escape($"{md}-ablating each of {effects.Count} live feature(s) at {site}{where}"), 0);
                    WriteAblationEffects($"{MetricLabel(spec!, tok)}{(batches.Count > 1 ? $" summed over {batches.Count} prompts" : "")} = {F(clean)}",
                        effects.Take(parse.GetValue(top)).Select(e => new[] { e.Feature.ToString(CultureInfo.InvariantCulture), F(e.Activation), F(e.Metric), F(e.Delta) })
                            .Concat(error is double v ? [["error", "", F(v), F(v - clean)]] : []));
                    return 0;
                }
                // The ablation first, then the clamps, as sae model run applies --ablate and --clamp; the error node last.
                List<Intervention> Edits(Tensor batch)
                {
                    var positions = texts.Length > 1 ? At(batch, batches.IndexOf(batch)) : at;
                    var edits = new List<Intervention>();
                    if (list.Count > 0) edits.Add(new Ablation(s!, list, means, parse.GetValue(hook)) { Positions = positions });
                    edits.AddRange(clamps.Select(c => (Intervention)new Clamp(s!, c.Feature, c.Value, parse.GetValue(hook))));
                    if (errorNode) edits.Add(new ErrorAblation(s!, parse.GetValue(hook)) { Positions = positions });
                    return edits;
                }
                ReportAblation(batches, batch => (pm.Forward(batch), hooked.RunWithHooks(batch, Edits(batch))), tok, parse.GetValue(top), $"{what} at {site}{where}");
                if (spec is not null && texts.Length > 1)
                    ModelCommands.WriteMetricPerPrompt([spec], texts, batches.Select(b => FeatureAblation.Metric(hooked, b, spec)).ToList(),
                        batches.Select(b => FeatureAblation.Metric(hooked, b, spec, Edits(b))).ToList(), "ablated", tok);
                else if (spec is not null)
                {
                    double clean = FeatureAblation.Metric(hooked, batches[0], spec), ablated = FeatureAblation.Metric(hooked, batches[0], spec, Edits(batches[0]));
                    Cli.WriteTable(MetricLabel(spec, tok), new (string, string)[] { ("clean", F(clean)), ("ablated", F(ablated)), ("Δ", F(ablated - clean)) });
                }
                return 0;
            }
            finally
            {
                foreach (var b in batches) b.Dispose();
            }
        });
        return command;
    }

    /// <summary><c>sae ablate</c>'s report: per batch the clean and edited logits from <paramref name="run"/> (made in the
    /// batch's dispose scope), compared per position (<see cref="InterventionEffect"/>); the per-position table for one
    /// prompt, the most-changed predictions, and the overall CE and KL under <paramref name="title"/>.</summary>
    internal static void ReportAblation(List<Tensor> batches, Func<Tensor, (Tensor Clean, Tensor Edited)> run, ITextTokenizer tok, int top, string title)
    {
        double ceClean = 0, ceAbl = 0, kl = 0;
        long nCe = 0, nKl = 0;
        var changed = new List<(double Kl, string Context, string Clean, double CleanProb, string Ablated, double AblatedProb)>();
        string T(long id) => Analysis.DashboardWriter.Quote(tok.TokenText((int)id));
        foreach (var batch in batches)
        {
            using var scope = NewDisposeScope();
            var (clean, edited) = run(batch);
            using var effect = InterventionEffect.Compare(clean, edited, batch);
            ceClean += effect.CleanLoss.sum().item<double>();
            ceAbl += effect.EditedLoss.sum().item<double>();
            kl += effect.Kl.sum().item<double>();
            nCe += effect.CleanLoss.numel();
            nKl += effect.Kl.numel();
            if (batches.Count == 1 && batch.shape[0] == 1)
            {
                var ids = batch[0].data<long>().ToArray();
                var rows = new List<string[]>();
                for (int p = 0; p < ids.Length; p++)
                {
                    bool hasNext = p + 1 < ids.Length;
                    double c = hasNext ? effect.CleanLoss[0, p].item<double>() : double.NaN, a = hasNext ? effect.EditedLoss[0, p].item<double>() : double.NaN;
                    rows.Add([p.ToString(CultureInfo.InvariantCulture), T(ids[p]), hasNext ? T(ids[p + 1]) : "",
                        F(c), F(a), F(a - c), Cli.Significant(effect.Kl[0, p].item<double>(), 3)]);
                }
                WritePerPosition(rows);
            }
            foreach (var (b, p, k) in effect.MostChanged(top))
            {
                var ids = batch[b].data<long>().ToArray();
                string context = tok.Decode(ids.Skip(Math.Max(0, p - 8)).Take(Math.Min(p + 1, 9)).Select(v => (int)v));
                changed.Add((k, context, T(effect.CleanTop[b, p].item<long>()), effect.CleanTopProb[b, p].item<double>(),
                    T(effect.EditedTop[b, p].item<long>()), effect.EditedTopProb[b, p].item<double>()));
            }
        }
        Cli.WriteColumns("next-token predictions that change most",
            ["context", "clean top", new Column("clean %", Right: true), "ablated top", new Column("ablated %", Right: true), new Column("KL", Right: true)],
            changed.OrderByDescending(c => c.Kl).Take(top).Select(c => new[]
            {
                Analysis.DashboardWriter.Quote(c.Context), c.Clean, Cli.Percent("clean %", c.CleanProb, 1), c.Ablated, Cli.Percent("ablated %", c.AblatedProb, 1), Cli.Significant(c.Kl, 3),
            }));
        Cli.WriteTable(title, new (string, string)[]
        {
            ("CE loss clean", F(ceClean / nCe)),
            ("CE loss ablated", F(ceAbl / nCe)),
            ("ΔCE loss", F((ceAbl - ceClean) / nCe)),
            ("KL(clean ‖ ablated)", Cli.Significant(kl / nKl, 3)),
            ("positions", Cli.Integer(nKl)),
        });
    }

    /// <summary><c>sae ablate --each</c>'s table: feature, its activation summed over the ablated tokens, the metric with it
    /// ablated and the change (rows as given: largest |Δ| first, the error node last). The title is the metric and its clean
    /// value only, so at 80 columns the table is as narrow as its cells.</summary>
    internal static void WriteAblationEffects(string title, IEnumerable<IReadOnlyList<string>> rows) =>
        Cli.WriteColumns(title, [new Column("feature", Right: true), new Column("activation", Right: true), new Column("ablated", Right: true), new Column("Δ", Right: true)], rows);

    /// <summary>A metric as a user reads it: <c>logit-diff:" Mary"," John"</c> with the tokens' text (ids without a tokenizer).</summary>
    internal static string MetricLabel(AttributionMetric spec, ITextTokenizer? tok)
    {
        string Tok(long id) => Analysis.DashboardWriter.Quote(tok is null ? id.ToString(CultureInfo.InvariantCulture) : tok.TokenText((int)id));
        return spec.Kind switch
        {
            AttributionMetricKind.Logit => $"logit:{Tok(spec.A)}",
            AttributionMetricKind.LogitDiff => $"logit-diff:{Tok(spec.A)},{Tok(spec.B)}",
            _ => spec.ToString(),
        };
    }

    /// <summary>What a user should know about row <paramref name="row"/> of a generation, or null: that it stopped at EOS
    /// before the new tokens asked for, and which of <paramref name="positions"/> (steering positions) never took effect in
    /// it (<see cref="GenerationRow.Affects"/>): "stopped at EOS after 5 of 20 new tokens; steering at position 12 never applied".</summary>
    internal static string? GenerationNote(GenerationResult g, int row, IEnumerable<long>? positions) =>
        GenerationNote(g.Rows[row], g.MaxNewTokens, positions);

    /// <inheritdoc cref="GenerationNote(GenerationResult, int, IEnumerable{long}?)"/>
    internal static string? GenerationNote(GenerationRow r, int maxNewTokens, IEnumerable<long>? positions)
    {
        var parts = new List<string>();
        if (r.Stop == GenerationStop.Eos && r.NewTokens < maxNewTokens)
            parts.Add($"stopped at EOS after {r.NewTokens} of {maxNewTokens} new tokens");
        var missed = positions?.Where(p => !r.Affects(p)).Order().ToList() ?? [];
        if (missed.Count > 0)
            parts.Add($"steering at position{(missed.Count == 1 ? "" : "s")} {string.Join(", ", missed)} never applied " +
                      $"(the row's {r.Length} tokens end at position {r.Length - 1}, and a position steers only the tokens after it)");
        return parts.Count == 0 ? null : string.Join("; ", parts);
    }

    private static string F(double v) => double.IsNaN(v) ? "" : Cli.Fixed(v, 4);

    public static Command Attribute()
    {
        var model = ModelCommands.ModelOption();
        var sae = new Option<string[]>("--sae") { Description = "SAE folder or file (repeatable; each spliced with its error term)", Required = true };
        var prompt = new Option<string?>("--prompt") { Description = "Prompt text" };
        var input = new Option<string?>("--input") { Description = "safetensors file holding an int64 tensor 'tokens' [batch, seq]" };
        var metric = new Option<string>("--metric") { Description = "logit-diff:A,B | logit:A | loss (A, B: token ids or single-token strings)", Required = true };
        var top = new Option<int>("--top") { Description = "Rows shown (largest |attribution|)", DefaultValueFactory = _ => 20 }.Positive();
        var output = new Option<string?>("--out") { Description = "Write attribution, error_attribution and metric to this safetensors file" };
        var json = new Option<string?>("--json") { Description = "Write the top rows and error attributions as JSON" };
        var html = new Option<string?>("--html") { Description = "Write the prompt with each top feature's attribution per token as HTML" };
        var ig = new Option<int>("--ig-steps") { Description = "Integrated-gradient steps (0: attribution patching)", DefaultValueFactory = _ => 0 }.NonNegative();
        var igErrors = new Option<bool>("--ig-errors")
        {
            Description = "With --ig-steps: scale each SAE's error term along with its features (Marks et al.'s path from b_dec), so the error attribution is integrated too",
        };
        var noBos = NoBosOption();
        var freeze = new Option<bool>("--freeze-attention-and-norms")
        {
            Description = "Treat attention patterns and norm scales as constants of the backward (circuit-tracer's replacement model)",
        };
        var dtype = ModelSource.SaeOrCltDtypeOption();
        var command = new Command("attribute", "Attribution patching of a metric to SAE features (or a whole CLT's): f·∂m/∂f per token and feature, and each error node's share")
        {
            model, sae, prompt, input, metric, top, output, json, html, ig, igErrors, noBos, freeze, dtype,
        };
        var cltLoading = new CltLoadingCli();
        cltLoading.AddTo(command);
        Cli.SetAction(command, parse =>
        {
            // Before the run: no output replaces an input (the SAEs' files, the model's, the --input tokens) or another output.
            var inputs = parse.GetValue(sae)!.Select(s => new CommandInput("--sae", s, InputKind.Sae)).ToList();
            inputs.Add(new("--model", parse.GetValue(model)!, InputKind.Folder));
            if (parse.GetValue(input) is { } inputPath) inputs.Add(new("--input", inputPath, InputKind.Whole));
            OutputGuard.RefuseBadOutputFiles([("--out", parse.GetValue(output)), ("--json", parse.GetValue(json)), ("--html", parse.GetValue(html))], [.. inputs]);
            if (parse.GetValue(ig) == 0) Cli.RefuseGiven(parse, "part of integrated gradients; give --ig-steps N", igErrors);
            if (parse.GetValue(igErrors) && parse.GetValue(sae)!.Any(p => CrossLayerTranscoderLoader.IsCrossLayerTranscoder(p, null)))
                throw new SaeSharpException("--ig-errors: for SAEs; a whole cross-layer transcoder's integrated gradients hold its error nodes at their clean values (its replacement model)");
            using var scope = NewDisposeScope();   // the tensors shown below
            var (folder, tok, tokens) = PromptOrInputTokens(parse, model, prompt, input, noBos);
            using var _t = tokens;
            var spec = AttributionMetric.Parse(parse.GetValue(metric)!, tok is null ? null : s => SingleToken(tok, s, "--metric"));
            var saes = new List<Sae>();
            var saePaths = parse.GetValue(sae)!;
            bool frozen = parse.GetValue(freeze);
            ScalarType? modelDtype = ModelSource.GivenDtype(parse, dtype, folder);
            try
            {
                AttributionResult Attribute()
                {
                    if (saePaths.Any(p => CrossLayerTranscoderLoader.IsCrossLayerTranscoder(p, null)))
                    {
                        if (saePaths.Length != 1) throw new SaeSharpException("--sae: a whole cross-layer transcoder is attributed on its own (give one --sae)");
                        using var clt = CrossLayerTranscoderLoader.Load(saePaths[0], cltLoading.Read(parse, modelDtype));
                        using var cm = ModelForSae.Load(folder, new WeightProcessingOptions(), modelDtype ?? ScalarType.Float32);
                        return CliProgress.Run("attribute", progress => FeatureAttribution.Run(cm.Model, clt, tokens, spec, parse.GetValue(ig), frozen, cm.Hooks, progress));
                    }
                    cltLoading.RefuseForSae(parse, saePaths[0]);
                    foreach (var p in saePaths) saes.Add(LoadSae(p));
                    // Processed as the SAEs' cfgs record, in their dtype (or --dtype's).
                    using var pm = ModelForSae.Load(folder, ModelForSae.SharedOptions(saes.Select(s => s.Cfg)), modelDtype ?? ModelForSae.SharedDtype(saes, saePaths));
                    var hooked = new HookedSaeTransformer(pm.Model) { ModelHooks = pm.Hooks };
                    foreach (var s in saes) hooked.AddSae(s, useErrorTerm: true);
                    return CliProgress.Run("attribute", progress => hooked.Attribute(tokens, spec, parse.GetValue(ig), progress, frozen, parse.GetValue(igErrors)));
                }
                using var result = Attribute();
                string Tok(long id) => tok is null ? id.ToString(CultureInfo.InvariantCulture) : tok.TokenText((int)id);
                string label = MetricLabel(spec, tok);
                var rows = result.Top(parse.GetValue(top));
                Cli.WriteColumns($"{label} = {result.Metric.ToString("G6", CultureInfo.InvariantCulture)}: top attributions",
                    ["sae", "batch", "pos", "token", "feature", new Column("activation", Right: true), new Column("attribution", Right: true)],
                    rows.Select(e => new[]
                    {
                        e.Sae.ToString(CultureInfo.InvariantCulture), e.Batch.ToString(CultureInfo.InvariantCulture), e.Position.ToString(CultureInfo.InvariantCulture),
                        Analysis.DashboardWriter.Quote(Tok(tokens[e.Batch, e.Position].item<long>())), result.FeatureLabel(e.Sae, e.Feature),
                        F(e.Activation), F(e.Attribution),
                    }));
                for (int i = 0; i < result.Hooks.Count; i++)
                    Cli.WriteIndented(Spectre.Console.Markup.Escape($"{(result.CrossLayer ? "layer" : "SAE")} {i} at {AttributedAt(result, saes, i)}: features {F(result.Attribution[i].sum().item<float>())}, error node {F(result.ErrorAttribution[i].sum().item<float>())} (sums over tokens)"), 0);
                if (parse.GetValue(output) is string o) { result.Save(o); Console.WriteLine($"attributions: {o}"); }
                var texts = Enumerable.Range(0, (int)tokens.shape[0])
                    .Select(b => (IReadOnlyList<string>)tokens[b].data<long>().Select(Tok).ToList()).ToList();
                if (parse.GetValue(json) is string j)
                {
                    var node = new JsonObject
                    {
                        ["metric"] = spec.ToString(),
                        ["metric_value"] = result.Metric,
                        ["integrated_gradient_steps"] = result.IntegratedGradientSteps,
                        ["cross_layer"] = result.CrossLayer,
                        ["freeze_attention_and_norms"] = result.FrozenAttentionAndNorms,
                        ["hooks"] = new JsonArray(result.Hooks.Select(h => (JsonNode)h).ToArray()),
                        ["tokens"] = new JsonArray(texts.Select(t => (JsonNode)new JsonArray(t.Select(s => (JsonNode)s).ToArray())).ToArray()),
                        ["top"] = new JsonArray(rows.Select(e => (JsonNode)new JsonObject
                        {
                            ["sae"] = e.Sae, ["hook"] = result.Hooks[e.Sae], ["batch"] = e.Batch, ["position"] = e.Position,
                            ["token"] = texts[e.Batch][e.Position], ["feature"] = e.Feature, ["feature_label"] = result.FeatureLabel(e.Sae, e.Feature), ["activation"] = e.Activation, ["attribution"] = e.Attribution,
                        }).ToArray()),
                        ["error_attribution"] = new JsonArray(result.ErrorAttribution.Select(t => (JsonNode)new JsonArray(
                            Enumerable.Range(0, (int)t.shape[0]).Select(b => (JsonNode)new JsonArray(
                                t[b].to(ScalarType.Float64).data<double>().Select(v => (JsonNode)v).ToArray())).ToArray())).ToArray()),
                    };
                    AtomicFile.WriteAllText(j, node.ToJsonString(new System.Text.Json.JsonSerializerOptions { WriteIndented = true }));
                    Console.WriteLine($"json: {j}");
                }
                if (parse.GetValue(html) is string h)
                {
                    AttributionHtml.Write(h, result, texts, Math.Min(parse.GetValue(top), 20), label);
                    Console.WriteLine($"html: {h}");
                }
            }
            finally
            {
                foreach (var s in saes) s.Dispose();
            }
            return 0;
        });
        return command;
    }

    public static Command Graph()
    {
        var model = ModelCommands.ModelOption();
        var sae = new Option<string>("--sae") { Description = "Whole cross-layer transcoder or transcoder set folder (local or hf:ORG/REPO[/PATH])", Required = true };
        var prompt = new Option<string?>("--prompt") { Description = "Prompt text" };
        var input = new Option<string?>("--input") { Description = "safetensors file holding an int64 tensor 'tokens' [1, seq] (one prompt)" };
        var output = new Option<string>("--out")
        {
            Description = "Graph JSON SLUG.json for circuit-tracer's viewer / Neuronpedia (graph-metadata.json is updated beside it), or a folder to write --slug's SLUG.json into (create_graph_files' output_path)",
            Required = true,
        };
        var maxLogits = new Option<int>("--max-logits") { Description = "At most this many logit nodes", DefaultValueFactory = _ => 10 }.Positive();
        var logitProb = new Option<double>("--logit-prob") { Description = "Logit nodes until their cumulative probability reaches this", DefaultValueFactory = _ => 0.95 };
        var nodeThreshold = new Option<double>("--node-threshold") { Description = "Pruning: keep the nodes holding this share of the influence", DefaultValueFactory = _ => 0.8 };
        var edgeThreshold = new Option<double>("--edge-threshold") { Description = "Pruning: keep the edges holding this share of the influence", DefaultValueFactory = _ => 0.98 };
        var maxFeatures = new Option<int?>("--max-features") { Description = "At most this many feature nodes (chosen by influence; default: all active)" };
        var batch = new Option<int>("--batch-size") { Description = "Target rows per backward pass (memory: this many copies of the prompt's activations)", DefaultValueFactory = _ => 32 }.Positive();
        var slug = new Option<string?>("--slug") { Description = "The graph's slug (the viewer loads SLUG.json): with --out FOLDER, the file written there; with --out FILE.json, FILE (given, it must match)" };
        var scan = new Option<string?>("--scan") { Description = "The transcoders' scan name Neuronpedia knows them by (default: the CLT's model name)" };
        var top = new Option<int>("--top") { Description = "Rows of the table of edges into the top logit", DefaultValueFactory = _ => 15 }.Positive();
        var target = new Option<string[]>("--target")
        {
            Description = "A logit node (repeatable, in order; replaces the most probable tokens): a token string (one token), logit:A (a token string or id), logit-diff:A,B (logit A − logit B) or vector:PATH[@WEIGHT] (a d_model direction in a .npy or one-tensor .safetensors file, read at the final norm's output; weight in pruning, default 1)",
        };
        var noBos = NoBosOption();
        var dtype = ModelSource.SaeOrCltDtypeOption();
        var command = new Command("graph", "Attribution graph of a prompt for a whole cross-layer transcoder (circuit-tracer's attribute + prune_graph), as the viewer's JSON")
        {
            model, sae, prompt, input, output, maxLogits, logitProb, nodeThreshold, edgeThreshold, maxFeatures, batch, slug, scan, top, target, noBos, dtype,
        };
        var cltLoading = new CltLoadingCli();
        cltLoading.AddTo(command);
        Cli.SetAction(command, parse =>
        {
            string saePath = parse.GetValue(sae)!;
            CltLoadingCli.RequireWhole(saePath, "sae graph needs a whole cross-layer transcoder's or a transcoder set's folder (see sae attribute for single SAEs)");
            string outPath = parse.GetValue(output)!;
            if (Directory.Exists(outPath) || outPath.EndsWith('/'))
            {
                // create_graph_files(graph, slug, output_path): the folder, and the slug naming the file in it.
                string folderSlug = parse.GetValue(slug) ?? throw new SaeSharpException(
                    $"--out {outPath}: a folder; give --slug NAME to write NAME.json there (as circuit-tracer's create_graph_files), or --out FILE.json");
                if (folderSlug.Length == 0 || folderSlug.IndexOfAny(['/', '\\']) >= 0 || folderSlug is "." or "..")
                    throw new SaeSharpException($"--slug '{folderSlug}': the graph's file name in --out, without '/'");
                outPath = Path.Combine(outPath, folderSlug + ".json");
            }
            var graphInputs = new List<CommandInput> { new("--sae", saePath, InputKind.Folder), new("--model", parse.GetValue(model)!, InputKind.Folder) };
            if (parse.GetValue(input) is { } inputPath) graphInputs.Add(new("--input", inputPath, InputKind.Whole));
            OutputGuard.RefuseBadOutputFile("--out", outPath, "graph.json", [.. graphInputs]);
            AttributionGraph.CheckGraphFolder(outPath, parse.GetValue(slug));
            var (folder, tok, tokens) = PromptOrInputTokens(parse, model, prompt, input, noBos);
            using var _t = tokens;
            if (tokens.shape[0] != 1) throw new SaeSharpException($"--input: a graph is of one prompt, but 'tokens' has {tokens.shape[0]} rows");
            // circuit-tracer zeroes the features and errors at position 0 when the first token is a special token (BOS).
            bool bos = tok?.BosTokenId is int b && tokens[0, 0].item<long>() == b;
            var targets = parse.GetValue(target) is { Length: > 0 } specs
                ? specs.Select(spec => AttributionTarget.Parse(spec, tok is null ? null : t => SingleToken(tok, t, "--target"))).ToList()
                : null;
            if (targets is not null) Cli.RefuseGiven(parse, "--target lists the logit nodes itself", maxLogits, logitProb);
            var options = new AttributionGraphOptions
            {
                MaxLogits = parse.GetValue(maxLogits), LogitProbability = parse.GetValue(logitProb), MaxFeatures = parse.GetValue(maxFeatures),
                BatchSize = parse.GetValue(batch), ZeroBos = bos, Targets = targets,
            };
            double nodeThr = parse.GetValue(nodeThreshold), edgeThr = parse.GetValue(edgeThreshold);
            AttributionGraph.CheckPruneThresholds(nodeThr, edgeThr, "--node-threshold", "--edge-threshold");
            ScalarType? modelDtype = ModelSource.GivenDtype(parse, dtype, folder);
            using var clt = CrossLayerTranscoderLoader.Load(saePath, cltLoading.Read(parse, modelDtype));
            using var cm = ModelForSae.Load(folder, new WeightProcessingOptions(), modelDtype ?? ScalarType.Float32);
            using var graph = CliProgress.Run("graph", progress => AttributionGraph.Build(cm.Model, clt, tokens, options, cm.Hooks, progress));
            var pruned = graph.Prune(nodeThr, edgeThr);
            var (replacement, completeness) = graph.Scores();
            string Tok(long id) => tok is null ? id.ToString(CultureInfo.InvariantCulture) : tok.TokenText((int)id);
            string promptText = parse.GetValue(prompt) ?? (tok is null ? string.Join(" ", graph.Tokens) : string.Concat(graph.Tokens.Select(Tok)));
            string slugName = parse.GetValue(slug) ?? Path.GetFileNameWithoutExtension(outPath);
            string scanName = parse.GetValue(scan) ?? clt.Cfg.ModelName ?? cm.Model.Config.ModelName;
            var json = graph.ToJson(pruned, Tok, promptText, slugName, scanName, nodeThr);
            AttributionGraph.WriteGraphFiles(outPath, json);

            int top0 = graph.LogitNode(0);
            var row = graph.AdjacencyMatrix[top0].to(ScalarType.Float64).data<double>().ToArray();
            var best = Enumerable.Range(0, row.Length).Where(i => row[i] != 0).OrderByDescending(i => Math.Abs(row[i])).Take(parse.GetValue(top)).ToList();
            string Position(int node)
            {
                int pos = node < graph.NFeatures ? graph.ActiveFeatures[graph.SelectedFeatures[node]].Position
                    : node < graph.NFeatures + graph.NErrors ? (node - graph.NFeatures) % graph.NPos : node - graph.NFeatures - graph.NErrors;
                return Analysis.DashboardWriter.Quote(Tok(graph.Tokens[pos]));
            }
            string first = graph.LogitLabels?[0] is string label ? label : $"the centred logit of {Analysis.DashboardWriter.Quote(Tok(graph.LogitTokens[0]))}";
            Cli.WriteColumns($"direct effects on {first} (p = {F(graph.LogitProbabilities[0])})",
                ["source", "token", new Column("weight", Right: true), "kept"],
                best.Select(i => new[] { graph.NodeLabel(i), Position(i), F(row[i]), pruned.NodeMask[i] && pruned.EdgeMask[top0, i] ? "yes" : "" }));
            Console.WriteLine(FormattableString.Invariant(
                $"{graph.ActiveFeatures.Count} active features, {graph.NFeatures} feature nodes, {graph.LogitTokens.Count} logits; kept {pruned.NodeMask.Count(k => k)} nodes"));
            Console.WriteLine(FormattableString.Invariant($"replacement score {replacement:F4}, completeness {completeness:F4}"));
            Console.WriteLine($"graph: {outPath}");
            return 0;
        });
        return command;
    }

    /// <summary>The <c>tokens</c> [batch, seq] of a safetensors file as int64 (stored as I64 or I32; a floating-point
    /// tensor is refused, as TransformerLens takes token ids as a LongTensor only).</summary>
    public static Tensor ReadTokens(string path)
    {
        using var file = SafeTensorsFile.Open(path);
        if (!file.Contains("tokens")) throw new SaeSharpException($"{path}: no tensor named 'tokens' (int64 [batch, seq])");
        string dtype = file.Info("tokens").Dtype;
        if (dtype is not ("I64" or "I32"))
            throw new SaeSharpException($"{path}: 'tokens' has dtype {dtype}; token ids must be integers (I64 or I32)");
        var tokens = file.Read("tokens", ScalarType.Int64);
        if (tokens.dim() != 2) throw new SaeSharpException($"{path}: 'tokens' must be [batch, seq], got [{string.Join(", ", tokens.shape)}]");
        if (tokens.numel() == 0) throw new SaeSharpException($"{path}: 'tokens' is empty ([{string.Join(", ", tokens.shape)}]); give at least one token per row");
        return tokens;
    }

    /// <summary>Refuses (naming <paramref name="flag"/> and <paramref name="path"/>) token ids read from a file that lie
    /// outside the vocabulary of <paramref name="vocab"/> ids of the model they are run in.</summary>
    internal static void RefuseIdsOutsideVocabulary(string flag, string path, Tensor tokens, long vocab)
    {
        using var scope = NewDisposeScope();
        long min = tokens.min().item<long>(), max = tokens.max().item<long>();
        if (min < 0 || max >= vocab)
            throw new SaeSharpException($"{flag} {path}: token id {(min < 0 ? min : max)} is outside the model's vocabulary 0..{vocab - 1}");
    }

    /// <summary>"0,3,-1" as positions below <paramref name="length"/> (<paramref name="what"/> says what has that many
    /// tokens), each given once; null (every position) when not given. A negative position counts back from the end of the
    /// prompt, whatever is generated after it: -1 is its last token, position <paramref name="promptLength"/> − 1
    /// (<paramref name="prompt"/> names it in the error when it has fewer tokens).</summary>
    internal static long[]? ParsePositions(string? text, long promptLength, long length, string what, string prompt = "the prompt", string flag = "--positions")
    {
        if (string.IsNullOrWhiteSpace(text)) return null;
        var positions = new List<long>();
        foreach (var part in text.Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries))
        {
            if (!TryParsePosition(part, out long q))
                throw new SaeSharpException($"{flag} '{text}': expected comma-separated integers (negative ones count from the prompt's end, -1 its last token), e.g. 0,3,-1");
            long at = Steering.FromPromptEnd(q, promptLength, $"{flag} {q}", prompt);
            if (at >= length) throw new SaeSharpException($"{flag} {q}: {what}, so positions run 0..{length - 1}");
            if (!positions.Contains(at)) positions.Add(at);
        }
        return positions.ToArray();
    }

    /// <summary>Where attribute's SAE <paramref name="i"/> sits, as steer names it: a transcoder at the hook it replaces
    /// (where its error node is), reading its input hook (<c>blocks.1.hook_mlp_out (transcoder reading
    /// blocks.1.ln2.hook_normalized)</c>); an SAE or a CLT layer at its hook.</summary>
    private static string AttributedAt(AttributionResult result, List<Sae> saes, int i) =>
        !result.CrossLayer && i < saes.Count && saes[i].Cfg.Metadata.HookNameOut is { } output
            ? $"{output} (transcoder reading {result.Hooks[i]})"
            : i < saes.Count ? saes[i].Cfg.Metadata.Site(result.Hooks[i]) : result.Hooks[i];

    /// <summary>A token position as written on the command line: a non-negative integer, or a negative one (Python's
    /// counting from the end); "-0" and a "+" sign are not positions.</summary>
    internal static bool TryParsePosition(string text, out long position)
    {
        bool negative = text.StartsWith('-');
        bool ok = long.TryParse(negative ? text[1..] : text, NumberStyles.None, CultureInfo.InvariantCulture, out position) && !(negative && position == 0);
        if (negative) position = -position;
        return ok;
    }
}
