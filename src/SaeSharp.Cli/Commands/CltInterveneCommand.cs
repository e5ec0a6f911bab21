using System.CommandLine;
using System.Globalization;
using SaeSharp.Interop;
using SaeSharp.Interventions;
using SaeSharp.Models;
using SaeSharp.Pipelines;
using SaeSharp.Tokenizers;
using static TorchSharp.torch;

namespace SaeSharp.Cli.Commands;

/// <summary><c>sae intervene</c>: circuit-tracer's <c>feature_intervention</c> (and <c>feature_intervention_generate</c>) on a
/// whole CLT or transcoder set, the top next-token predictions before and after.</summary>
internal static class CltInterveneCommand
{
    public static Command Create()
    {
        var model = ModelCommands.ModelOption();
        var sae = new Option<string>("--sae") { Description = "Whole cross-layer transcoder or transcoder set folder (local or hf:ORG/REPO[/PATH])", Required = true };
        var prompt = new Option<string[]>("--prompt")
        {
            Description = "Prompt text; repeat it for several prompts, each intervened on (and continued) on its own, --set positions counting in each",
            AllowMultipleArgumentsPerToken = false,
        };
        var input = new Option<string?>("--input") { Description = "safetensors file holding an int64 tensor 'tokens' [1, seq] (one prompt)" };
        var set = new Option<string[]>("--set")
        {
            Description = "L:F:V sets layer L's feature F to V at every position (new tokens included); L:F:V@P at position P; @A-B at A..B; " +
                          "@P- from P on (new tokens included); @1,3-5 lists them; a negative P counts from the prompt's end (@-1 its last token, @-3--1, @-2-); " +
                          "xM for V: M times its clean value at each listed position (repeatable)",
            Required = true,
        };
        var direct = new Option<bool>("--direct-effects") { Description = "Constrain every layer: patterns, norm scales and MLP outputs frozen, direct effects only" };
        var constrained = new Option<string?>("--constrained-layers") { Description = "A-B: freeze these layers' MLP outputs and write the interventions there only (circuit-tracer constrained_layers)" };
        var noFreeze = new Option<bool>("--no-freeze-attention") { Description = "Let attention patterns change (circuit-tracer freeze_attention=False)" };
        var generate = new Option<int>("--generate")
        {
            Description = "Also continue each prompt up to this many tokens (stopping at EOS), without and with the interventions " +
                          "(KV-cached; greedy, or sampled with --temperature, the two drawing the same random numbers)",
        }.NonNegative();
        var top = new Option<int>("--top") { Description = "Next-token predictions shown", DefaultValueFactory = _ => 10 }.Positive();
        var noBos = InterventionCommands.NoBosOption();
        var dtype = ModelSource.SaeOrCltDtypeOption();
        var command = new Command("intervene", "Set CLT or transcoder-set features to values (circuit-tracer's feature_intervention) and show the top next-token predictions before and after")
        {
            model, sae, prompt, input, set, direct, constrained, noFreeze, generate, top, noBos, dtype,
        };
        var sampling = new ModelCommands.SamplingOptions();
        sampling.AddTo(command, kvCacheOption: false);   // feature_intervention's positions follow the cached passes
        Cli.SetAction(command, parse =>
        {
            string saePath = parse.GetValue(sae)!;
            CltLoadingCli.RequireWhole(saePath, "sae intervene needs a whole cross-layer transcoder's or a transcoder set's folder (single SAEs: sae model run --clamp, sae steer)");
            if (parse.GetValue(direct)) Cli.RefuseGiven(parse, "--direct-effects constrains every layer", constrained);
            // circuit-tracer freezes the patterns whenever constrained_layers is set, whatever freeze_attention says.
            if (parse.GetValue(noFreeze))
                Cli.RefuseGiven(parse, "constrained layers freeze the attention patterns (circuit-tracer ignores freeze_attention=False with constrained_layers): --no-freeze-attention would be ignored", direct, constrained);
            int g = parse.GetValue(generate);
            sampling.RefuseWithoutGeneration(parse, g);
            var (folder, tok, prompts) = InterventionCommands.PromptsOrInputTokens(parse, model, prompt, input, noBos);
            try
            {
                return Run(parse, prompts, parse.GetValue(prompt) ?? [], folder, tok, saePath, new ModelCommands.GenerationRequest(g, sampling, parse, parse.GetValue(prompt) ?? []),
                    parse.GetValue(set)!, parse.GetValue(direct), parse.GetValue(constrained), !parse.GetValue(noFreeze), parse.GetValue(top), dtype);
            }
            finally
            {
                foreach (var t in prompts) t.Dispose();
            }
        });
        return command;
    }

    /// <summary>One prompt's outcome: its interventions (values resolved against its clean run), the top next-token predictions
    /// before and after, its notes and, with <c>--generate</c>, its continuations' rows.</summary>
    private sealed record Outcome(long Length, List<string[]> Set, List<string[]> Next, List<string> Notes, string[][]? Rows);

    /// <summary>Every prompt's intervention (and generation) computed before anything is shown, so that a bad position in a later
    /// prompt prints nothing; then each prompt's tables, then the continuations.</summary>
    private static int Run(ParseResult parse, List<Tensor> prompts, string[] texts, string folder, ITextTokenizer? tok, string saePath,
        ModelCommands.GenerationRequest generation, string[] setTexts, bool direct, string? constrained, bool freeze, int topK, Option<string> dtype)
    {
        if (prompts[0].shape[0] != 1)
            throw new SaeSharpException($"--input: an intervention is on one prompt, but 'tokens' has {prompts[0].shape[0]} rows (give several prompts as --prompt, repeated)");
        int g = generation.NewTokens;
        if (g > 0 && tok is null) throw new SaeSharpException("--generate needs the model's tokenizer to show the continuations");
        var sets = setTexts.Select(ParseSet).ToList();
        var options = new CltInterventionOptions
        {
            FreezeAttention = freeze, DirectEffects = direct, ConstrainedLayers = constrained is string c ? ParseRange(c) : null,
        };
        ScalarType? modelDtype = ModelSource.GivenDtype(parse, dtype, folder);
        using var clt = CrossLayerTranscoderLoader.Load(saePath, null, CrossLayerTranscoderLoader.ForModel(modelDtype));
        if (options.ConstrainedLayers is { } cl && cl.End > clt.Cfg.NLayers)
            throw new SaeSharpException($"--constrained-layers {constrained}: the transcoders span layers 0-{clt.Cfg.NLayers - 1}");
        using var cm = ModelForSae.Load(folder, new WeightProcessingOptions(), modelDtype ?? ScalarType.Float32);
        string Tok(long id) => tok is null ? id.ToString(CultureInfo.InvariantCulture) : Analysis.DashboardWriter.Quote(tok.TokenText((int)id));
        static string F(double v) => Cli.Fixed(v, 4);   // no "-0.0000" for a JumpReLU zero
        string how = options.DirectEffects ? "direct effects" : options.ConstrainedLayers is { } r ? $"layers {r.Start}-{r.End - 1} constrained"
            : options.FreezeAttention ? "attention frozen" : "nothing frozen";
        for (int p = 0; p < prompts.Count && g > 0; p++)
            ModelCommands.RefuseGenerationPastContext(cm.Model, prompts[p].shape[1], g, "--generate", generation.PromptName(p));
        var outcomes = new List<Outcome>();
        for (int p = 0; p < prompts.Count; p++)
        {
            var tokens = prompts[p];
            long n = tokens.shape[1];
            // Positions count in each prompt (a negative one from its end): one beyond this prompt's end, or before its start, is an
            // error naming it (an open-ended P- beyond it is not).
            var specs = AtPositions(sets, n, generation.PromptName(p),
                texts.Length > 1 ? $" ({Analysis.DashboardWriter.Quote(texts[p])}): it has {n} tokens (positions 0..{n - 1}); --set positions count within each prompt" : null);
            using var scope = NewDisposeScope();
            bool bos = tok?.BosTokenId is int b && tokens[0, 0].item<long>() == b;   // circuit-tracer's zero_positions
            var o = options with { ZeroBos = bos };
            using var clean = CltInterventions.FeatureIntervention(cm.Model, clt, tokens, [], o, cm.Hooks);
            var interventions = specs.Select(x => Resolve(x.Intervention, x.Multiplier, clean.Activations, n)).ToList();
            var notes = new List<string>();
            foreach (var group in specs.Zip(interventions).Where(q => q.First.Multiplier is not null && q.Second.Value == 0).GroupBy(q => q.First.Text))
            {
                var at = group.Select(q => q.Second.Position.ToString(CultureInfo.InvariantCulture)).ToList();
                notes.Add($"{generation.NotePrefix(p)}--set {group.Key}: the feature is inactive (clean 0) at position{(at.Count == 1 ? "" : "s")} {string.Join(", ", at)}, so the multiple changes nothing there");
            }
            using var after = CltInterventions.FeatureIntervention(cm.Model, clt, tokens, interventions, o, cm.Hooks);
            var set = interventions.Select(i => new[]
            {
                i.Layer.ToString(CultureInfo.InvariantCulture), i.Feature.ToString(CultureInfo.InvariantCulture),
                i.Onward ? (i.Position == 0 ? "all" : $"{i.Position}-") : i.Position.ToString(CultureInfo.InvariantCulture),
                i.Onward || i.Position >= n ? "" : Tok(tokens[0, i.Position].item<long>()),
                i.Onward ? "" : F(clean.Activations[i.Layer, i.Position, i.Feature].to(ScalarType.Float64).item<double>()),
                F(i.Value),
            }).ToList();
            int k = Math.Min(topK, (int)clean.Logits.shape[^1]);
            var (pc, ic) = softmax(clean.Logits[0, -1].to(ScalarType.Float64), 0).topk(k);
            var (pa, ia) = softmax(after.Logits[0, -1].to(ScalarType.Float64), 0).topk(k);
            var (pcv, icv, pav, iav) = (pc.data<double>().ToArray(), ic.data<long>().ToArray(), pa.data<double>().ToArray(), ia.data<long>().ToArray());
            var next = Enumerable.Range(0, k).Select(i => new[] { (i + 1).ToString(CultureInfo.InvariantCulture), Tok(icv[i]), F(pcv[i]), Tok(iav[i]), F(pav[i]) }).ToList();
            string[][]? rows = null;
            if (g > 0)
            {
                // One seed for both: the clean and the intervened continuation draw the same random numbers at every step; both
                // stop at EOS, as sae steer and circuit-tracer's generate (TransformerLens's stop_at_eos) do.
                var sample = generation.Options(cm.Model.StopTokenIds);
                using var plain = cm.Model.Generate(tokens, g, sample with { Hooks = cm.Hooks });
                using var gen = CltInterventions.FeatureInterventionGenerate(cm.Model, clt, tokens, interventions, g, o, sample, cm.Hooks);
                rows = [ModelCommands.ContinuationRow(tok!, n, "clean", plain.Tokens), ModelCommands.ContinuationRow(tok!, n, "intervened", gen.Tokens!)];
                if (InterventionCommands.GenerationNote(plain, 0, null) is string cleanNote) notes.Add($"{generation.NotePrefix(p)}clean: {cleanNote}");
                if (InterventionCommands.GenerationNote(gen.Row!.Value, g, null) is string note) notes.Add($"{generation.NotePrefix(p)}intervened: {note}");
                if (ModelCommands.PastContextNote(cm.Model, Math.Max(plain.Tokens.shape[1], gen.Tokens!.shape[1])) is { } past) notes.Add($"{generation.NotePrefix(p)}{past}");
            }
            outcomes.Add(new Outcome(n, set, next, notes, rows));
        }

        for (int p = 0; p < outcomes.Count; p++)
        {
            var x = outcomes[p];
            if (texts.Length == 1) Console.WriteLine($"prompt: {texts[0]}");
            else if (texts.Length > 1) Console.WriteLine($"prompt {p}: {texts[p]}");
            Cli.WriteColumns("interventions", ["layer", "feature", "position", "token", new Column("clean", Right: true), new Column("set", Right: true)], x.Set);
            Cli.WriteColumns($"next token after position {x.Length - 1} ({how})",
                ["rank", "clean", new Column("p clean", Right: true), "intervened", new Column("p after", Right: true)], x.Next);
        }
        generation.WriteContinuations(outcomes.Select(x => x.Rows).ToList(), ModelLoader.NameOf(folder),
            options.DirectEffects || options.ConstrainedLayers is not null ? $"; {how} in the prompt's pass only" : "");
        foreach (var note in outcomes.SelectMany(x => x.Notes)) Cli.ErrorLine($"note: {note}");
        return 0;
    }

    /// <summary>One item of a <c>--set</c>: layer, feature and value (0 with a <see cref="Multiplier"/> M of the clean value) at
    /// positions <see cref="Start"/>..<see cref="End"/> (inclusive), or from <see cref="Start"/> on when <see cref="Onward"/>;
    /// a negative bound counts from the prompt's end, so the positions are known per prompt (<see cref="At"/>).</summary>
    internal sealed record SetItem(string Text, int Layer, int Feature, double Value, double? Multiplier, int Start, int End, bool Onward)
    {
        /// <summary>The interventions at the positions of a prompt of <paramref name="n"/> tokens (<paramref name="prompt"/>
        /// names it in errors): a negative bound is n + it (-1 the prompt's last token, generated tokens never move it); a bound
        /// before the prompt's start, a listed position past its end and an empty range are errors.</summary>
        public IEnumerable<(CltFeatureIntervention Intervention, double? Multiplier)> At(long n, string prompt, string? beyond)
        {
            string given = $"--set '{Text}': position {(Onward ? $"{Start}-" : Start == End ? $"{Start}" : $"{Start}-{End}")}";
            int a = (int)Steering.FromPromptEnd(Start, n, given, prompt);
            if (Onward) return [(new CltFeatureIntervention(Layer, a, Feature, Value, true), null)];
            int b = (int)Steering.FromPromptEnd(End, n, given, prompt);
            if (b < a)
                throw new SaeSharpException($"--set '{Text}': the range {Start}-{End} is empty in {prompt} of {n} tokens ({Start} is {a}, {End} is {b}; A-B needs A ≤ B)");
            if (b >= n)
                throw new SaeSharpException($"--set '{Text}': position {b} is outside {prompt}{beyond ?? $": the prompt has {n} tokens (positions 0..{n - 1})"}");
            return Enumerable.Range(a, b - a + 1).Select(q => (new CltFeatureIntervention(Layer, q, Feature, Value), Multiplier));
        }
    }

    /// <summary>Every <c>--set</c>'s items (<see cref="ParseSet"/>) at the positions of a prompt of <paramref name="n"/> tokens;
    /// a position one <c>--set</c> gives twice is an error (e.g. 5 and -1 in a 6-token prompt).</summary>
    internal static List<(string Text, CltFeatureIntervention Intervention, double? Multiplier)> AtPositions(IEnumerable<List<SetItem>> sets, long n,
        string prompt = "the prompt", string? beyond = null)
    {
        var result = new List<(string, CltFeatureIntervention, double?)>();
        foreach (var set in sets)
        {
            var seen = new HashSet<(int, bool)>();
            foreach (var (i, m) in set.SelectMany(x => x.At(n, prompt, beyond)))
            {
                if (!seen.Add((i.Position, i.Onward)))
                    throw new SaeSharpException($"--set '{set[0].Text}': position {i.Position}{(i.Onward ? "-" : "")} is given twice" +
                        (set.Any(x => x.Start < 0 || x.End < 0) ? $" (negative positions count from the end of {prompt}, which has {n} tokens)" : ""));
                result.Add((set[0].Text, i, m));
            }
        }
        return result;
    }

    /// <summary>"L:F:V" (every position), or "L:F:V@POS" with POS a comma-separated list of positions P, inclusive ranges
    /// A-B and open-ended P- (from P on, new tokens included), one item each (circuit-tracer's tensor of positions); a
    /// position may be negative, counting from the prompt's end (-1 its last token; a leading minus is the sign, the next
    /// "-" the range's: -3--1, 2--1, -3-); "xM" for V gives <c>Multiplier</c> M (see <see cref="Resolve"/>), at listed
    /// positions only.</summary>
    internal static List<SetItem> ParseSet(string spec)
    {
        const string form = "L:F:V or L:F:V@POS (layer, feature, value or xM for M times the clean value; POS positions P, ranges A-B " +
                            "and P- from P on, comma-separated, negative ones counting from the prompt's end), e.g. 3:120:-2@5, 3:120:x2@1,4-6, 3:120:0@5- or 3:120:-2@-1";
        string body = spec, at = "";
        int sep = spec.IndexOf('@', StringComparison.Ordinal);
        if (sep >= 0) (body, at) = (spec[..sep], spec[(sep + 1)..]);
        var parts = body.Split(':');
        bool times = parts.Length == 3 && parts[2].StartsWith('x');
        if (parts.Length != 3 || !int.TryParse(parts[0], NumberStyles.None, CultureInfo.InvariantCulture, out int layer)
            || !int.TryParse(parts[1], NumberStyles.None, CultureInfo.InvariantCulture, out int feature)
            || !double.TryParse(times ? parts[2][1..] : parts[2], NumberStyles.Float, CultureInfo.InvariantCulture, out double value))
            throw new SaeSharpException($"--set '{spec}': expected {form}");
        if (!double.IsFinite(value))
            throw new SaeSharpException($"--set '{spec}': the {(times ? "multiplier" : "value")} must be a finite number, got {parts[2]}");
        const string noClean = "xM multiplies the clean value at each position, which the new tokens do not have: give @P or @A-B (prompt positions)";
        if (sep < 0)
        {
            if (times) throw new SaeSharpException($"--set '{spec}': {noClean}");
            return [new SetItem(spec, layer, feature, value, null, 0, 0, true)];
        }
        var result = new List<SetItem>();
        foreach (var item in at.Split(','))
        {
            static bool Pos(string t, out int v)
            {
                bool ok = InterventionCommands.TryParsePosition(t, out long q) && q is >= int.MinValue and <= int.MaxValue;
                v = (int)q;
                return ok;
            }
            SetItem Item(int a, int b, bool onward) => new(spec, layer, feature, times ? 0 : value, times ? value : null, a, b, onward);
            // A leading minus is the first bound's sign; the next "-" separates the range (-3--1) or ends an open one (-3-).
            int dash = item.Length > 1 ? item.IndexOf('-', 1) : -1;
            if (item.Contains(':', StringComparison.Ordinal))
                throw new SaeSharpException($"--set '{spec}': '{item}' is a Python slice; positions here are P, A-B (both ends included) " +
                    "and P- (from P on, new tokens included), negative ones counting from the prompt's end: e.g. -3- for [-3:], -3--2 for [-3:-1]");
            if (item.StartsWith("--", StringComparison.Ordinal))
                throw new SaeSharpException($"--set '{spec}': '{item}' has no first position; a range is A-B with both ends given (a leading minus is a " +
                    $"negative position's sign), e.g. 0-{item[1..]} for positions 0 to {item[1..]}");
            if (dash < 0 && Pos(item, out int p)) result.Add(Item(p, p, false));
            else if (dash == item.Length - 1 && Pos(item[..dash], out p))
            {
                if (times) throw new SaeSharpException($"--set '{spec}': {noClean}");
                result.Add(Item(p, p, true));
            }
            else if (dash > 0 && Pos(item[..dash], out int a) && Pos(item[(dash + 1)..], out int b))
            {
                if (b < a && (a < 0) == (b < 0)) throw new SaeSharpException($"--set '{spec}': the range {item} is empty (A-B needs A ≤ B)");
                result.Add(Item(a, b, false));
            }
            else throw new SaeSharpException($"--set '{spec}': the position '{item}' must be an integer P (negative: from the prompt's end, -1 its last token), " +
                                             $"a range A-B or P- (e.g. 2-5, -3--1, -2-); expected {form}");
        }
        return result;
    }

    /// <summary>The intervention with <paramref name="multiplier"/> × the feature's clean activation (<paramref name="clean"/>
    /// [L, pos, d_transcoder]) at its position as its value; as parsed without a multiplier.</summary>
    internal static CltFeatureIntervention Resolve(CltFeatureIntervention i, double? multiplier, Tensor clean, long positions)
    {
        if (multiplier is not double m) return i;
        if (i.Layer < 0 || i.Layer >= clean.shape[0] || i.Feature < 0 || i.Feature >= clean.shape[2])
            throw new SaeSharpException($"--set {i.Layer}:{i.Feature}:x…: no such layer/feature (the CLT has {clean.shape[0]} layers of {clean.shape[2]} features)");
        if (i.Position >= positions)
            throw new SaeSharpException($"--set …@{i.Position}: the prompt has {positions} tokens (positions 0..{positions - 1})");
        return i with { Value = m * clean[i.Layer, i.Position, i.Feature].to(ScalarType.Float64).item<double>() };
    }

    /// <summary>"A-B" (inclusive) as [A, B + 1).</summary>
    private static (int Start, int End) ParseRange(string text)
    {
        var parts = text.Split('-');
        if (parts.Length != 2 || !int.TryParse(parts[0], NumberStyles.None, CultureInfo.InvariantCulture, out int a)
            || !int.TryParse(parts[1], NumberStyles.None, CultureInfo.InvariantCulture, out int b) || b < a)
            throw new SaeSharpException($"--constrained-layers '{text}': expected A-B with A ≤ B, e.g. 2-5");
        return (a, b + 1);
    }
}
