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
        var prompt = new Option<string?>("--prompt") { Description = "Prompt text" };
        var input = new Option<string?>("--input") { Description = "safetensors file holding an int64 tensor 'tokens' [1, seq] (one prompt)" };
        var set = new Option<string[]>("--set")
        {
            Description = "L:F:V sets layer L's feature F to V at every position (new tokens included); L:F:V@P at position P; @A-B at A..B; " +
                          "@P- from P on (new tokens included); @1,3-5 lists them; xM for V: M times its clean value at each listed position (repeatable)",
            Required = true,
        };
        var direct = new Option<bool>("--direct-effects") { Description = "Constrain every layer: patterns, norm scales and MLP outputs frozen, direct effects only" };
        var constrained = new Option<string?>("--constrained-layers") { Description = "A-B: freeze these layers' MLP outputs and write the interventions there only (circuit-tracer constrained_layers)" };
        var noFreeze = new Option<bool>("--no-freeze-attention") { Description = "Let attention patterns change (circuit-tracer freeze_attention=False)" };
        var generate = new Option<int>("--generate") { Description = "Also continue the prompt greedily up to this many tokens (stopping at EOS), without and with the interventions" }.NonNegative();
        var top = new Option<int>("--top") { Description = "Next-token predictions shown", DefaultValueFactory = _ => 10 }.Positive();
        var noBos = InterventionCommands.NoBosOption();
        var dtype = ModelSource.SaeOrCltDtypeOption();
        var command = new Command("intervene", "Set CLT or transcoder-set features to values (circuit-tracer's feature_intervention) and show the top next-token predictions before and after")
        {
            model, sae, prompt, input, set, direct, constrained, noFreeze, generate, top, noBos, dtype,
        };
        Cli.SetAction(command, parse =>
        {
            string saePath = parse.GetValue(sae)!;
            CltLoadingCli.RequireWhole(saePath, "sae intervene needs a whole cross-layer transcoder's or a transcoder set's folder (single SAEs: sae model run --clamp, sae steer)");
            if (parse.GetValue(direct)) Cli.RefuseGiven(parse, "--direct-effects constrains every layer", constrained);
            var (folder, tok, tokens) = InterventionCommands.PromptOrInputTokens(parse, model, prompt, input, noBos);
            using var _t = tokens;
            if (tokens.shape[0] != 1) throw new SaeSharpException($"--input: an intervention is on one prompt, but 'tokens' has {tokens.shape[0]} rows");
            var specs = parse.GetValue(set)!.SelectMany(text => ParseSet(text).Select(x => (Text: text, x.Intervention, x.Multiplier))).ToList();
            bool bos = tok?.BosTokenId is int b && tokens[0, 0].item<long>() == b;   // circuit-tracer's zero_positions
            var options = new CltInterventionOptions
            {
                FreezeAttention = !parse.GetValue(noFreeze), DirectEffects = parse.GetValue(direct),
                ConstrainedLayers = parse.GetValue(constrained) is string c ? ParseRange(c) : null, ZeroBos = bos,
            };
            ScalarType? modelDtype = ModelSource.GivenDtype(parse, dtype, folder);
            using var clt = CrossLayerTranscoderLoader.Load(saePath, null, CrossLayerTranscoderLoader.ForModel(modelDtype));
            if (options.ConstrainedLayers is { } cl && cl.End > clt.Cfg.NLayers)
                throw new SaeSharpException($"--constrained-layers {parse.GetValue(constrained)}: the transcoders span layers 0-{clt.Cfg.NLayers - 1}");
            using var cm = ModelForSae.Load(folder, new WeightProcessingOptions(), modelDtype ?? ScalarType.Float32);
            using var scope = NewDisposeScope();
            using var clean = CltInterventions.FeatureIntervention(cm.Model, clt, tokens, [], options, cm.Hooks);
            var interventions = specs.Select(x => Resolve(x.Intervention, x.Multiplier, clean.Activations, tokens.shape[1])).ToList();
            foreach (var group in specs.Zip(interventions).Where(p => p.First.Multiplier is not null && p.Second.Value == 0).GroupBy(p => p.First.Text))
            {
                var at = group.Select(p => p.Second.Position.ToString(CultureInfo.InvariantCulture)).ToList();
                Cli.ErrorLine($"note: --set {group.Key}: the feature is inactive (clean 0) at position{(at.Count == 1 ? "" : "s")} {string.Join(", ", at)}, so the multiple changes nothing there");
            }
            using var after = CltInterventions.FeatureIntervention(cm.Model, clt, tokens, interventions, options, cm.Hooks);
            string Tok(long id) => tok is null ? id.ToString(CultureInfo.InvariantCulture) : Analysis.DashboardWriter.Quote(tok.TokenText((int)id));
            static string F(double v) => (v == 0 ? 0 : v).ToString("F4", CultureInfo.InvariantCulture);   // no "-0.0000" for a JumpReLU zero

            if (parse.GetValue(prompt) is string text) Console.WriteLine($"prompt: {text}");
            long n = tokens.shape[1];
            Cli.WriteColumns("interventions", ["layer", "feature", "position", "token", new Column("clean", Right: true), new Column("set", Right: true)],
                interventions.Select(i => new[]
                {
                    i.Layer.ToString(CultureInfo.InvariantCulture), i.Feature.ToString(CultureInfo.InvariantCulture),
                    i.Onward ? (i.Position == 0 ? "all" : $"{i.Position}-") : i.Position.ToString(CultureInfo.InvariantCulture),
                    i.Onward || i.Position >= n ? "" : Tok(tokens[0, i.Position].item<long>()),
                    i.Onward ? "" : F(clean.Activations[i.Layer, i.Position, i.Feature].to(ScalarType.Float64).item<double>()),
                    F(i.Value),
                }));
            int k = Math.Min(parse.GetValue(top), (int)clean.Logits.shape[^1]);
            var (pc, ic) = softmax(clean.Logits[0, -1].to(ScalarType.Float64), 0).topk(k);
            var (pa, ia) = softmax(after.Logits[0, -1].to(ScalarType.Float64), 0).topk(k);
            var (pcv, icv, pav, iav) = (pc.data<double>().ToArray(), ic.data<long>().ToArray(), pa.data<double>().ToArray(), ia.data<long>().ToArray());
            string how = options.DirectEffects ? "direct effects" : options.ConstrainedLayers is { } r ? $"layers {r.Start}-{r.End - 1} constrained"
                : options.FreezeAttention ? "attention frozen" : "nothing frozen";
            Cli.WriteColumns($"next token after position {n - 1} ({how})",
                ["rank", "clean", new Column("p clean", Right: true), "intervened", new Column("p after", Right: true)],
                Enumerable.Range(0, k).Select(i => new[] { (i + 1).ToString(CultureInfo.InvariantCulture), Tok(icv[i]), F(pcv[i]), Tok(iav[i]), F(pav[i]) }));

            if (parse.GetValue(generate) is int g and > 0)
            {
                if (tok is null) throw new SaeSharpException("--generate needs the model's tokenizer to show the continuations");
                // Both stop at EOS, as sae steer and circuit-tracer's generate (TransformerLens's stop_at_eos) do.
                using var plain = cm.Model.Generate(tokens, g, new GenerationOptions { Hooks = cm.Hooks, EosTokenId = tok.EosTokenId });
                using var gen = CltInterventions.FeatureInterventionGenerate(cm.Model, clt, tokens, interventions, g, options with { ZeroBos = bos },
                    new GenerationOptions { EosTokenId = tok.EosTokenId }, cm.Hooks);
                string Continuation(Tensor t) => ModelCommands.DecodeShowingUnknownIds(tok, t[0].narrow(0, n, t.shape[1] - n).data<long>().Select(v => (int)v).ToList());
                Cli.WriteColumns($"greedy continuation (up to {g} tokens, to EOS{(options.DirectEffects || options.ConstrainedLayers is not null ? $"; {how} in the prompt's pass only" : "")})", ["run", "continuation"],
                    [["clean", Continuation(plain.Tokens)], ["intervened", Continuation(gen.Tokens!)]]);
            }
            return 0;
        });
        return command;
    }

    /// <summary>"L:F:V" (every position), or "L:F:V@POS" with POS a comma-separated list of positions P, inclusive ranges
    /// A-B and open-ended P- (from P on, new tokens included), as interventions, one per position (circuit-tracer's tensor of
    /// positions) and one per open-ended item; "xM" for V gives <c>Multiplier</c> M and a placeholder value (see
    /// <see cref="Resolve"/>), at listed positions only.</summary>
    internal static List<(CltFeatureIntervention Intervention, double? Multiplier)> ParseSet(string spec)
    {
        const string form = "L:F:V or L:F:V@POS (layer, feature, value or xM for M times the clean value; POS positions P, ranges A-B " +
                            "and P- from P on, comma-separated), e.g. 3:120:-2@5, 3:120:x2@1,4-6 or 3:120:0@5-";
        string body = spec, at = "";
        int sep = spec.IndexOf('@', StringComparison.Ordinal);
        if (sep >= 0) (body, at) = (spec[..sep], spec[(sep + 1)..]);
        var parts = body.Split(':');
        bool times = parts.Length == 3 && parts[2].StartsWith('x');
        if (parts.Length != 3 || !int.TryParse(parts[0], NumberStyles.None, CultureInfo.InvariantCulture, out int layer)
            || !int.TryParse(parts[1], NumberStyles.None, CultureInfo.InvariantCulture, out int feature)
            || !double.TryParse(times ? parts[2][1..] : parts[2], NumberStyles.Float, CultureInfo.InvariantCulture, out double value) || !double.IsFinite(value))
            throw new SaeSharpException($"--set '{spec}': expected {form}");
        const string noClean = "xM multiplies the clean value at each position, which the new tokens do not have: give @P or @A-B (prompt positions)";
        if (sep < 0)
        {
            if (times) throw new SaeSharpException($"--set '{spec}': {noClean}");
            return [(CltFeatureIntervention.AllPositions(layer, feature, value), null)];
        }
        var result = new List<(CltFeatureIntervention, double?)>();
        var seen = new HashSet<(int, bool)>();
        foreach (var item in at.Split(','))
        {
            static bool Int(string t, out int v) => int.TryParse(t, NumberStyles.None, CultureInfo.InvariantCulture, out v);
            int dash = item.IndexOf('-', StringComparison.Ordinal);
            IEnumerable<(int Pos, bool Onward)> positions;
            if (dash < 0 && Int(item, out int p)) positions = [(p, false)];
            else if (dash == item.Length - 1 && dash > 0 && Int(item[..dash], out p))
            {
                if (times) throw new SaeSharpException($"--set '{spec}': {noClean}");
                positions = [(p, true)];
            }
            else if (dash > 0 && Int(item[..dash], out int a) && Int(item[(dash + 1)..], out int b))
            {
                if (b < a) throw new SaeSharpException($"--set '{spec}': the range {item} is empty (A-B needs A ≤ B)");
                positions = Enumerable.Range(a, b - a + 1).Select(q => (q, false));
            }
            else throw new SaeSharpException($"--set '{spec}': the position '{item}' must be a non-negative integer P, a range A-B or P-; expected {form}");
            foreach (var (pos, onward) in positions)
            {
                if (!seen.Add((pos, onward))) throw new SaeSharpException($"--set '{spec}': position {pos}{(onward ? "-" : "")} is given twice");
                result.Add((new CltFeatureIntervention(layer, pos, feature, times ? 0 : value, onward), times ? value : null));
            }
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
