using System.CommandLine;
using System.Globalization;
using System.Text.Json.Nodes;
using SaeSharp.Analysis;
using SaeSharp.Interventions;
using SaeSharp.Models;
using static TorchSharp.torch;

namespace SaeSharp.Cli.Commands;

/// <summary><c>sae model patch</c> and <c>sae model path-patch</c>: TransformerLens's activation patching and the IOI paper's
/// path patching over a batch of clean/corrupted prompt pairs.</summary>
internal static class PatchCommands
{
    /// <summary>The options both commands share: the prompt pairs and their metrics.</summary>
    private sealed class PairOptions
    {
        public readonly Option<string> Model = ModelCommands.ModelOption();
        public readonly Option<string?> Revision = ModelSource.RevisionOption();
        public readonly Option<string[]> Clean = new("--clean") { Description = "A clean prompt (repeatable: a batch of prompt pairs, the metric averaged over them)", Required = true };
        public readonly Option<string[]> Corrupted = new("--corrupted")
        {
            Description = "A corrupted prompt, one per --clean in order, of as many tokens as its clean prompt (and every pair of one token count, as TransformerLens batches them)",
            Required = true,
        };
        public readonly Option<string[]> Metric = new("--metric")
        {
            Description = "logit-diff:A,B (logit A − logit B at the last token), logit:A or loss; A and B single tokens as written or token ids; " +
                          "once for every pair or once per pair (logits_to_ave_logit_diff with an answer pair per prompt)",
            Required = true,
        };
        public readonly Option<bool> NoBos = new("--no-prepend-bos") { Description = "Do not start the prompts with BOS" };
        public readonly Option<string> Dtype = ModelSource.DtypeOption();
        public readonly Option<string?> Json = new("--json") { Description = "Also write every value to this JSON file" };
        public readonly Option<string?> Png = new("--png") { Description = "Also draw the effects as a heatmap PNG (layer × position or layer × head)" };

        /// <summary><c>--model</c> at <c>--revision</c> (see <see cref="ModelSource.ModelAt"/>).</summary>
        public string ModelAt(ParseResult parse) => ModelSource.ModelAt(parse, Model, Revision);

        public IEnumerable<Option> All => [Model, Revision, Clean, Corrupted, Metric, NoBos, Dtype, Json, Png];

        /// <summary>Before the model loads: refuses a <c>--png</c> this run cannot draw (<paramref name="whyNoPng"/>), and a
        /// <c>--png</c> or <c>--json</c> that is a folder, a file of the model, or both the same file.</summary>
        /// <param name="pngParts">With several parts (block-every, head-every) the PNG is one file per part
        /// (<see cref="PartPng"/>): those are the files checked.</param>
        public void RefuseBadOutputs(ParseResult parse, string? whyNoPng, IReadOnlyList<string>? pngParts = null)
        {
            string? png = parse.GetValue(Png);
            if (png is not null && whyNoPng is not null) throw new SaeSharpException($"--png {png}: {whyNoPng}");
            (string, string?)[] pngs = png is not null && pngParts is { Count: > 1 }
                ? [.. pngParts.Select(part => ("--png", (string?)PartPng(png, part)))]
                : [("--png", png)];
            OutputGuard.RefuseBadOutputFiles([("--json", parse.GetValue(Json)), .. pngs],
                new CommandInput("--model", parse.GetValue(Model)!, InputKind.Folder));
        }

        /// <summary>The pairs as [batch, pos] clean and corrupted tokens, and one metric for every pair or one per pair; refuses
        /// pairs whose prompts differ in length, or pairs of different lengths, naming them.</summary>
        public (Tensor Clean, Tensor Corrupted, List<AttributionMetric> Metrics) Read(ParseResult parse, HookedTransformer m)
        {
            string[] clean = parse.GetValue(Clean)!, corrupted = parse.GetValue(Corrupted)!, specs = parse.GetValue(Metric)!;
            if (clean.Length != corrupted.Length)
                throw new SaeSharpException($"--clean is given {clean.Length} times and --corrupted {corrupted.Length}: give one corrupted prompt per clean prompt, in order");
            bool bos = !parse.GetValue(NoBos);
            var cleanTokens = clean.Select(t => ModelCommands.PromptTokens(m, t, bos, "--clean")).ToList();
            var corruptedTokens = corrupted.Select(t => ModelCommands.PromptTokens(m, t, bos, "--corrupted")).ToList();
            for (int i = 0; i < clean.Length; i++)
            {
                string pair = clean.Length > 1 ? $"pair {i + 1}: " : "";
                if (cleanTokens[i].shape[1] != corruptedTokens[i].shape[1])
                    throw new SaeSharpException($"{pair}--corrupted has {corruptedTokens[i].shape[1]} tokens and --clean {cleanTokens[i].shape[1]}: patching needs prompts of the same length");
                if (cleanTokens[i].shape[1] != cleanTokens[0].shape[1])
                    throw new SaeSharpException($"pair {i + 1} has {cleanTokens[i].shape[1]} tokens and pair 1 {cleanTokens[0].shape[1]}: a batch of prompt pairs " +
                                                "needs one token count (TransformerLens stacks them into one [batch, pos] tensor); run pairs of other lengths separately");
            }
            var metrics = ModelCommands.MetricsPerPrompt(specs, cleanTokens, ModelAt(parse), m.Tokenizer, "prompt pair")!;
            if (metrics.Any(s => s.Kind == AttributionMetricKind.Loss))
                InterventionCommands.RefuseFewerThanTwoTokens("--clean", clean, cleanTokens, "--metric loss");
            return (cat(cleanTokens, 0), cat(corruptedTokens, 0), metrics);
        }

        /// <summary>The start of the metric line: the metric as given (or the metrics per pair), the mean over how many pairs.</summary>
        public string Describe(ParseResult parse, long pairs) =>
            $"metric {string.Join("; ", parse.GetValue(Metric)!)}" + (pairs > 1 ? $", mean over {pairs} prompt pairs" : "");
    }

    /// <summary>The <c>--act</c> names of <see cref="PatchedActivation"/> (TransformerLens's activation names).</summary>
    private static readonly (string Name, PatchedActivation Kind)[] Acts =
    [
        ("resid_pre", PatchedActivation.ResidPre), ("resid_mid", PatchedActivation.ResidMid), ("attn_out", PatchedActivation.AttnOut),
        ("mlp_out", PatchedActivation.MlpOut), ("z", PatchedActivation.HeadZ), ("q", PatchedActivation.HeadQ), ("k", PatchedActivation.HeadK),
        ("v", PatchedActivation.HeadV), ("pattern", PatchedActivation.HeadPattern),
    ];

    private static string ActName(PatchedActivation kind) => Acts.First(a => a.Kind == kind).Name;

    /// <summary><paramref name="png"/> with <c>.<paramref name="part"/></c> before its extension: <c>out.png</c> → <c>out.z.png</c>.</summary>
    internal static string PartPng(string png, string part) =>
        Path.Combine(Path.GetDirectoryName(png) ?? "", $"{Path.GetFileNameWithoutExtension(png)}.{part}{Path.GetExtension(png)}");

    /// <summary><c>sae model patch</c>.</summary>
    public static Command Patch()
    {
        var o = new PairOptions();
        o.Png.Description = "Also draw the effects as a heatmap PNG: layer × position, layer × head, the top heads × position (--by-position) or the top head's " +
                            "destination × source (--dest-src); with block-every or head-every one PNG per part, named with the part before the extension " +
                            "(out.png: out.resid_pre.png, ...)";
        var act = new Option<string>("--act")
        {
            Description = "resid_pre, resid_mid, attn_out or mlp_out (per layer and position), or z, q, k, v or pattern (each head's hook_z, hook_q, hook_k, " +
                          "hook_v or hook_pattern over every position, or with --by-position at each position); block-every: resid_pre, attn_out and " +
                          "mlp_out (get_act_patch_block_every); head-every: z, q, k, v and pattern (get_act_patch_attn_head_all_pos_every, with " +
                          "--by-position _by_pos_every), one clean run shared by the parts",
            DefaultValueFactory = _ => "resid_pre",
            HelpName = "act",   // the description names the eleven values
        };
        act.AcceptOnlyFromAmong([.. Acts.Select(a => a.Name), "block-every", "head-every"]);
        var byPosition = new Option<bool>("--by-position")
        {
            Description = "With a head's activation: patch one head at one position at a time (get_act_patch_attn_head_*_by_pos; pattern: the head's row of one " +
                          "destination position) and list the largest effects",
        };
        var destSrc = new Option<bool>("--dest-src")
        {
            Description = "With --act pattern: patch one entry [destination, source] of one head's pattern at a time (get_act_patch_attn_head_pattern_dest_src_pos; " +
                          "a forward pass per entry that differs between the runs) and list the largest effects",
        };
        var top = new Option<int>("--top") { Description = "How many heads (cells with --by-position or --dest-src) to list by |effect|", DefaultValueFactory = _ => 10 }.Positive();
        var command = new Command("patch", "TransformerLens's activation patching: the metric of the corrupted prompts with one activation (layer × position, " +
                                           "layer × head, or layer × position × head) taken from the clean prompts, as (patched − corrupted) / (clean − corrupted)");
        foreach (var option in o.All) command.Options.Add(option);
        command.Options.Add(act);
        command.Options.Add(byPosition);
        command.Options.Add(destSrc);
        command.Options.Add(top);
        Cli.SetAction(command, parse =>
        {
            string actName = parse.GetValue(act)!;
            var kinds = actName switch
            {
                "block-every" => ActivationPatching.BlockEvery,
                "head-every" => ActivationPatching.HeadEvery,
                _ => [Acts.First(a => a.Name == actName).Kind],
            };
            bool every = kinds.Count > 1;
            bool positions = parse.GetValue(byPosition), entries = parse.GetValue(destSrc);
            if (positions && !ActivationPatching.IsPerHead(kinds[0]))
                throw new SaeSharpException($"--by-position: --act {actName} is already patched one position at a time; give a head's activation (z, q, k, v, pattern or head-every)");
            if (entries && actName != "pattern")
                throw new SaeSharpException($"--dest-src patches one entry of an attention pattern: give --act pattern, not --act {actName}");
            if (entries && positions)
                throw new SaeSharpException("--dest-src already patches one destination × source entry at a time: leave out --by-position");
            if (!ActivationPatching.IsPerHead(kinds[0]))
                Cli.RefuseGiven(parse, $"how many heads are listed; --act {actName} prints every layer × position (give a head's activation: z, q, k, v, pattern or head-every)", top);
            o.RefuseBadOutputs(parse, null, [.. kinds.Select(ActName)]);
            using var m = ModelSource.LoadModel(o.ModelAt(parse), parse.GetValue(o.Dtype)!);
            using var scope = NewDisposeScope();
            var (cleanTokens, corruptedTokens, metrics) = o.Read(parse, m);
            long pairs = cleanTokens.shape[0];
            var strTokens = m.ToStringTokens(cleanTokens[0]);
            var corruptedStr = m.ToStringTokens(corruptedTokens[0]);
            string Token(int p) => strTokens[p] == corruptedStr[p] ? DashboardWriter.Quote(strTokens[p]) : $"{DashboardWriter.Quote(strTokens[p])}/{DashboardWriter.Quote(corruptedStr[p])}";
            string PosName(int p) => $"{p} {DashboardWriter.Display(strTokens[p])}";
            string ofPair1 = pairs > 1 ? " (pair 1's)" : "";
            int topN = parse.GetValue(top);
            string? png = parse.GetValue(o.Png);
            string? Png(PatchedActivation kind) => png is null ? null : every ? PartPng(png, ActName(kind)) : png;
            var json = new JsonObject
            {
                ["act"] = actName, ["by_position"] = positions, ["dest_src"] = entries,
                ["metric"] = new JsonArray([.. metrics.Select(s => (JsonNode)s.ToString())]), ["pairs"] = pairs,
            };
            double clean, corrupted;
            void Header(double cleanMetric, double corruptedMetric, bool raw)
            {
                Console.WriteLine($"{o.Describe(parse, pairs)}: clean {Cli.Fixed(cleanMetric, 3)}, corrupted {Cli.Fixed(corruptedMetric, 3)}");
                Console.WriteLine(raw ? "effect: the patched metric (clean and corrupted are equal)" : "effect: (patched − corrupted) / (clean − corrupted)");
            }
            static bool Raw(double cleanMetric, double corruptedMetric) => Math.Abs(cleanMetric - corruptedMetric) < 1e-9;
            string valueLabel(bool raw) => raw ? "patched metric" : "(patched − corrupted) / (clean − corrupted)";
            // Per part: a JSON grid, and the heads to show the attention of.
            var grids = new List<(PatchedActivation Kind, JsonNode Grid)>();
            string axes;
            if (entries)
            {
                var r = ActivationPatching.RunPatternDestSrc(m, cleanTokens, corruptedTokens, metrics);
                (clean, corrupted) = (r.Clean, r.Corrupted);
                bool raw = Raw(r.Clean, r.Corrupted);
                double Value(int l, int h, int d, int src) => raw ? r.Patched[l, h, d, src] : r.Normalized(l, h, d, src);
                int layers = r.Patched.GetLength(0), heads = r.Patched.GetLength(1), n = r.Patched.GetLength(2);
                var cells = (from l in Enumerable.Range(0, layers) from h in Enumerable.Range(0, heads) from d in Enumerable.Range(0, n)
                             from src in Enumerable.Range(0, d + 1) select (l, h, d, src))   // above the diagonal causal attention is 0 in both runs
                    .OrderByDescending(c => Math.Abs(Value(c.l, c.h, c.d, c.src))).Take(topN).ToList();
                Header(r.Clean, r.Corrupted, raw);
                Cli.WriteColumns($"one entry of one head's hook_pattern, top {cells.Count} of {layers * heads * n * (n + 1) / 2} (source ≤ destination)",
                    [new Column("head"), new Column("dest", Right: true), new Column($"token{ofPair1}"), new Column("src", Right: true), new Column("token"), new Column("effect", Right: true)],
                    cells.Select(c => (IReadOnlyList<string>)[$"L{c.l}H{c.h}", c.d.ToString(CultureInfo.InvariantCulture), Token(c.d),
                        c.src.ToString(CultureInfo.InvariantCulture), Token(c.src), Cli.Fixed(Value(c.l, c.h, c.d, c.src), 2)]));
                if (png is not null && cells.Count > 0)
                {
                    var (bl, bh) = (cells[0].l, cells[0].h);
                    var grid = new double[n, n];
                    for (int d = 0; d < n; d++)
                        for (int src = 0; src < n; src++) grid[d, src] = src > d ? double.NaN : Value(bl, bh, d, src);
                    ModelCommands.WriteHeatmap(png, grid, $"Patching one entry of L{bl}H{bh}'s hook_pattern", $"destination: token{ofPair1}", "source",
                        valueLabel(raw), rowNames: [.. Enumerable.Range(0, n).Select(PosName)], columnNames: [.. Enumerable.Range(0, n).Select(PosName)]);
                }
                json["patched"] = new JsonArray([.. Enumerable.Range(0, layers).Select(l => (JsonNode)new JsonArray([.. Enumerable.Range(0, heads).Select(h =>
                    (JsonNode)ModelCommands.Grid(Values(n, n, (d, src) => r.Patched[l, h, d, src])))]))]);
                json["patched_axes"] = "layer, head, dest_pos, src_pos";
                (json["clean"], json["corrupted"]) = (clean, corrupted);
                if (parse.GetValue(o.Json) is { } jsonPath) ModelCommands.WriteJson(jsonPath, json);
                ShowTopHeads(o, parse, cells.Select(c => (c.l, c.h)), kv: false);
                return 0;
            }
            var topHeads = new List<(int Layer, int Head)>();
            bool topKv = false;
            if (positions)
            {
                var results = ActivationPatching.RunByPositionEach(m, cleanTokens, corruptedTokens, kinds, metrics);
                (clean, corrupted) = (results[0].Clean, results[0].Corrupted);
                bool raw = Raw(clean, corrupted);
                Header(clean, corrupted, raw);
                foreach (var r in results)
                {
                    string name = ActName(r.Activation);
                    int layers = r.Patched.GetLength(0), n = r.Patched.GetLength(1), heads = r.Patched.GetLength(2);
                    bool kv = heads < m.Config.NHeads;
                    string HeadLabel(int h) => $"{(kv ? "KV" : "H")}{h}";
                    double Value(int l, int p, int h) => raw ? r.Patched[l, p, h] : r.Normalized(l, p, h);
                    var cells = (from l in Enumerable.Range(0, layers) from p in Enumerable.Range(0, n) from h in Enumerable.Range(0, heads) select (l, p, h))
                        .OrderByDescending(c => Math.Abs(Value(c.l, c.p, c.h))).Take(topN).ToList();
                    if (every) Console.WriteLine();
                    Cli.WriteColumns($"hook_{name} of one {(kv ? "key/value " : "")}head at one {(r.Activation == PatchedActivation.HeadPattern ? "destination " : "")}position, " +
                                     $"top {cells.Count} of {layers * n * heads}",
                        [new Column("head"), new Column("pos", Right: true), new Column($"token{ofPair1} (clean/corrupted)"), new Column("effect", Right: true)],
                        cells.Select(c => (IReadOnlyList<string>)[$"L{c.l}{HeadLabel(c.h)}", c.p.ToString(CultureInfo.InvariantCulture), Token(c.p), Cli.Fixed(Value(c.l, c.p, c.h), 2)]));
                    if (Png(r.Activation) is { } file)
                    {
                        // The heads of the largest |effect| at any position (at most 16), each a row over the positions.
                        var rows = (from l in Enumerable.Range(0, layers) from h in Enumerable.Range(0, heads) select (l, h))
                            .OrderByDescending(c => Enumerable.Range(0, n).Max(p => Math.Abs(Value(c.l, p, c.h)))).Take(Math.Min(16, topN)).ToList();
                        ModelCommands.WriteHeatmap(file, Values(rows.Count, n, (i, p) => Value(rows[i].l, p, rows[i].h)),
                            $"Patching hook_{name} of one {(kv ? "key/value " : "")}head at one position: the {rows.Count} heads of largest |effect|",
                            kv ? "key/value head" : "head", $"{(r.Activation == PatchedActivation.HeadPattern ? "destination " : "")}position: token{ofPair1}", valueLabel(raw),
                            rowNames: [.. rows.Select(c => $"L{c.l}{HeadLabel(c.h)}")], columnNames: [.. Enumerable.Range(0, n).Select(PosName)]);
                    }
                    grids.Add((r.Activation, new JsonArray([.. Enumerable.Range(0, layers).Select(l => (JsonNode)ModelCommands.Grid(Values(n, heads, (p, h) => r.Patched[l, p, h])))])));
                    if (topHeads.Count == 0) (topHeads, topKv) = ([.. cells.Select(c => (c.l, c.h))], kv);
                }
                axes = "layer, pos, head";
            }
            else
            {
                var results = ActivationPatching.RunEach(m, cleanTokens, corruptedTokens, kinds, metrics);
                (clean, corrupted) = (results[0].Clean, results[0].Corrupted);
                bool raw = Raw(clean, corrupted);
                Console.WriteLine($"{o.Describe(parse, pairs)}: clean {Cli.Fixed(clean, 3)}, corrupted {Cli.Fixed(corrupted, 3)}");
                string what = raw ? "patched metric (clean and corrupted are equal)" : "(patched − corrupted) / (clean − corrupted)";
                foreach (var r in results)
                {
                    string name = ActName(r.Activation);
                    double Value(int row, int col) => raw ? r.Patched[row, col] : r.Normalized(row, col);
                    int layers = r.Patched.GetLength(0), cols = r.Patched.GetLength(1);
                    if (ActivationPatching.IsPerHead(r.Activation))
                    {
                        bool kv = cols < m.Config.NHeads;
                        string HeadLabel(int h) => $"{(kv ? "KV" : "H")}{h}";
                        ModelCommands.WriteHeadGrid($"hook_{name} of each {(kv ? "key/value " : "")}head, {what}", Values(layers, cols, Value), [.. Enumerable.Range(0, layers)], kv ? "KV" : "H");
                        if (Png(r.Activation) is { } file)
                            ModelCommands.WriteHeatmap(file, Values(layers, cols, Value), $"Patching hook_{name} of each {(kv ? "key/value " : "")}head", "layer",
                                kv ? "key/value head" : "head", valueLabel(raw));
                        // Exploratory Analysis Demo cell 99: the top heads by |output patching effect|, whose attention to look at.
                        var heads = (from l in Enumerable.Range(0, layers) from h in Enumerable.Range(0, cols) select (l, h))
                            .OrderByDescending(c => Math.Abs(Value(c.l, c.h))).Take(topN).ToList();
                        Console.WriteLine($"largest |effect|: {string.Join(", ", heads.Take(5).Select(c => $"L{c.l}{HeadLabel(c.h)} {Cli.Fixed(Value(c.l, c.h), 2)}"))}");
                        if (topHeads.Count == 0) (topHeads, topKv) = (heads, kv);
                    }
                    else
                    {
                        var layerColumns = Enumerable.Range(0, layers).Select(l => new Column($"L{l}", Right: true));
                        if (every) Console.WriteLine();
                        Cli.WriteColumns($"hook_{name} at each position, {what}", [new Column("pos"), new Column($"token{ofPair1} (clean/corrupted)"), .. layerColumns],
                            Enumerable.Range(0, cols).Select(p => (IReadOnlyList<string>)[p.ToString(CultureInfo.InvariantCulture), Token(p), .. Enumerable.Range(0, layers).Select(l => Value(l, p))
                                .Select(v => Cli.Fixed(v, 2))]));
                        if (Png(r.Activation) is { } file)
                            ModelCommands.WriteHeatmap(file, Values(layers, cols, Value), $"Patching hook_{name} at each position", "layer", $"position: token{ofPair1}",
                                valueLabel(raw), columnNames: [.. Enumerable.Range(0, cols).Select(PosName)]);
                    }
                    grids.Add((r.Activation, ModelCommands.Grid(r.Patched)));
                }
                axes = ActivationPatching.IsPerHead(kinds[0]) ? "layer, head" : "layer, pos";
            }
            // One act: "patched" is its grid; block-every and head-every: keyed by part.
            json["patched"] = every ? new JsonObject(grids.Select(g => KeyValuePair.Create(ActName(g.Kind), (JsonNode?)g.Grid))) : grids[0].Grid;
            json["patched_axes"] = axes;
            json["clean"] = clean;
            json["corrupted"] = corrupted;
            if (parse.GetValue(o.Json) is { } path) ModelCommands.WriteJson(path, json);
            ShowTopHeads(o, parse, topHeads, topKv);
            return 0;
        });
        return command;
    }

    /// <summary>A <c>--sender</c>: a head (<c>L.H</c>, <c>L0H8</c>) or an MLP (<c>mlp.L</c>).</summary>
    private static (AttentionHead? Head, int? Mlp) ParseSender(string spec)
    {
        string s = (spec ?? "").Trim();
        if (s.StartsWith("mlp", StringComparison.OrdinalIgnoreCase))
            return s.Length > 4 && s[3] == '.' && int.TryParse(s[4..], NumberStyles.None, CultureInfo.InvariantCulture, out int layer)
                ? (null, layer)
                : throw new SaeSharpException($"--sender '{spec}': write an MLP as mlp.LAYER (mlp.3), a head as LAYER.HEAD (0.8) or L0H8");
        try { return (AttentionHead.Parse(s, "--sender"), null); }
        catch (SaeSharpException) { throw new SaeSharpException($"--sender '{spec}': write a head as LAYER.HEAD (0.8) or L0H8, an MLP as mlp.LAYER (mlp.3)"); }
    }

    /// <summary><c>sae model path-patch</c>.</summary>
    public static Command PathPatch()
    {
        var o = new PairOptions();
        var sender = new Option<string[]>("--sender")
        {
            Description = "A sender: a head L.H (or L0H8) or an MLP mlp.L (its hook_mlp_out); repeatable, patched together; none: every head in turn, " +
                          "a table of layer × head; with --direct the one source head",
        };
        var receiver = new Option<string[]>("--receiver")
        {
            Description = "A receiver head L.H whose --receiver-input is patched (repeatable; a key/value head for k and v); none: the final residual stream",
        };
        var input = new Option<string>("--receiver-input")
        {
            Description = "q, k or v: which input of the receivers (blocks.L.hook_q_input, ...); with --direct the destinations' hook_q, hook_k or hook_v",
            DefaultValueFactory = _ => "q",
        };
        input.AcceptOnlyFromAmong("q", "k", "v");
        var positions = new Option<string?>("--receiver-positions")
        {
            Description = "Comma-separated positions of the receivers' input to patch, negative ones from the end (-1 the last token; default every position)",
            HelpName = "positions",
        };
        var direct = new Option<bool>("--direct")
        {
            Description = "TransformerLens's direct path patching (get_act_patch_direct_path): the corrupted prompts with (clean − corrupted hook_result " +
                          "of the --sender head) / ln1 scale · W_Q/K/V added to each later head's q/k/v; a layer × head table",
        };
        var foldLn = new Option<bool>("--fold-ln")
        {
            Description = "Fold each block's norms into the layers reading them first (TransformerLens fold_ln; the outputs are unchanged; --direct's linearisation needs it)",
        };
        var top = new Option<int>("--top") { Description = "How many sender heads (destination heads with --direct) to list by |effect| in a table", DefaultValueFactory = _ => 10 }.Positive();
        var command = new Command("path-patch", "Path patching (the IOI paper's): the clean prompts with the senders' output (hook_z, or an MLP's hook_mlp_out) from the " +
                                                "corrupted prompts, every other head frozen at its clean output, reaching only the receivers' q/k/v input or the final " +
                                                "residual stream; (patched − clean) / (clean − corrupted), 0 for no effect, −1 for all of the corruption's. --direct: " +
                                                "TransformerLens's direct path patching from one head to each later head");
        foreach (var option in o.All) command.Options.Add(option);
        command.Options.Add(sender);
        command.Options.Add(receiver);
        command.Options.Add(input);
        command.Options.Add(positions);
        command.Options.Add(direct);
        command.Options.Add(foldLn);
        command.Options.Add(top);
        Cli.SetAction(command, parse =>
        {
            var parsedSenders = (parse.GetValue(sender) ?? []).Select(ParseSender).Distinct().ToList();
            var senders = parsedSenders.Where(s => s.Head is not null).Select(s => s.Head!.Value).ToList();
            var mlps = parsedSenders.Where(s => s.Mlp is not null).Select(s => s.Mlp!.Value).ToList();
            var receiverList = parse.GetValue(receiver) is { Length: > 0 } rs ? rs.Select(s => AttentionHead.Parse(s, "--receiver")).Distinct().ToList() : null;
            var inputKind = parse.GetValue(input) switch { "k" => PathReceiverInput.K, "v" => PathReceiverInput.V, _ => PathReceiverInput.Q };
            string? positionsText = parse.GetValue(positions);
            bool isDirect = parse.GetValue(direct);
            if (isDirect)
            {
                if (receiverList is not null)
                    throw new SaeSharpException("--receiver: --direct patches every head after the --sender's layer in turn (a layer × head table); leave out --receiver");
                if (positionsText is not null)
                    throw new SaeSharpException("--receiver-positions: --direct adds the path at every position, as TransformerLens's get_act_patch_direct_path; leave it out");
                if (mlps.Count > 0 || senders.Count != 1)
                    throw new SaeSharpException($"--direct needs one --sender head L.H (the source; {(mlps.Count > 0 ? $"mlp.{mlps[0]} is an MLP" : senders.Count == 0 ? "none given" : $"{senders.Count} given")})");
            }
            else
            {
                if (receiverList is null && parse.GetResult(input) is { Implicit: false })
                    throw new SaeSharpException("--receiver-input: give --receiver heads too (without them the receiver is the final residual stream)");
                if (receiverList is null && positionsText is not null)
                    throw new SaeSharpException("--receiver-positions: give --receiver heads too (without them the receiver is the final residual stream, read through the logits)");
                if (parsedSenders.Count > 0) Cli.RefuseGiven(parse, "how many sender heads are listed when every head is sent in turn; --sender gives one number (leave out --sender)", top);
                // A head's or an MLP's output reaches only later layers: a sender at or after every receiver's layer would leave the clean run unchanged.
                var late = senders.Select(s => (Layer: s.Layer, Name: s.ToString())).Concat(mlps.Select(l => (Layer: l, Name: $"mlp.{l}")));
                if (receiverList is { Count: > 0 } && late.Where(s => s.Layer >= receiverList.Max(r => r.Layer)).ToList() is [var tooLate, ..])
                    throw new SaeSharpException($"--sender {tooLate.Name}: layer {tooLate.Layer} is not before any --receiver ({string.Join(", ", receiverList)}); " +
                                                "an output reaches only later layers' inputs, so this path has no effect: give senders in earlier layers");
            }
            o.RefuseBadOutputs(parse, !isDirect && parsedSenders.Count > 0 ? "--sender gives one number; the heatmap draws every sender head in turn (leave out --sender)" : null);
            using var m = ModelSource.LoadModel(o.ModelAt(parse), parse.GetValue(o.Dtype)!);
            // Heads outside the model named by their flag (not as the library's "path patching: sender L5H0").
            HeadAblation.CheckHeads(m, senders, "--sender");
            if (receiverList is not null)
            {
                int kvHeads = inputKind == PathReceiverInput.Q ? m.Config.NHeads : m.Config.NKvHeads;
                HeadAblation.CheckHeads(m, receiverList, "--receiver");
                if (receiverList.FirstOrDefault(r => r.Head >= kvHeads) is var kv && receiverList.Contains(kv))
                    throw new SaeSharpException($"--receiver {kv.Layer}.{kv.Head}: --receiver-input {parse.GetValue(input)} reads key/value heads, and " +
                                                $"{m.Config.ModelName} has key/value heads 0..{kvHeads - 1}");
            }
            using var scope = NewDisposeScope();
            if (parse.GetValue(foldLn))
                foreach (var w in WeightProcessing.Apply(m, new WeightProcessingOptions { FoldLn = true }).Warnings) CliProgress.Warn($"warning: {w}");
            var c = m.Config;
            foreach (int l in mlps.Where(l => l >= c.NLayers))
                throw new SaeSharpException($"--sender mlp.{l}: {c.ModelName} has layers 0..{c.NLayers - 1}");
            if (isDirect && senders[0].Layer == c.NLayers - 1 && parse.GetValue(o.Png) is { } noPng)
                throw new SaeSharpException($"--png {noPng}: --sender {senders[0]} is in the last layer, so no head reads its output and there is nothing to draw");
            var (cleanTokens, corruptedTokens, metrics) = o.Read(parse, m);
            long pairs = cleanTokens.shape[0];
            long[]? receiverPositions = InterventionCommands.ParsePositions(positionsText, cleanTokens.shape[1], cleanTokens.shape[1],
                $"the prompts have {cleanTokens.shape[1]} tokens", "the prompts", "--receiver-positions");
            string inputName = $"hook_{parse.GetValue(input)}_input";
            string at = receiverPositions is null ? "" : $" at position{(receiverPositions.Length == 1 ? "" : "s")} {string.Join(",", receiverPositions)}";
            string to = receiverList is null ? "the final residual stream" : $"{inputName} of {string.Join(", ", receiverList)}{at}";
            var json = new JsonObject
            {
                ["metric"] = new JsonArray([.. metrics.Select(s => (JsonNode)s.ToString())]), ["pairs"] = pairs,
                ["receivers"] = receiverList is null ? null : new JsonArray([.. receiverList.Select(r => (JsonNode)r.ToString())]),
                ["receiver_input"] = receiverList is null && !isDirect ? null : parse.GetValue(input),
                ["receiver_positions"] = receiverPositions is null ? null : new JsonArray([.. receiverPositions.Select(p => (JsonNode)p)]),
            };
            if (isDirect)
            {
                var r = DirectPathPatching.Run(m, cleanTokens, corruptedTokens, senders[0], inputKind, metrics);
                if (r.Warning is not null) CliProgress.Warn($"warning: {r.Warning}");
                WriteDirect(parse, o, r, pairs, m.Config.NHeads, parse.GetValue(top), json);
            }
            else if (parsedSenders.Count > 0)
            {
                var r = PathPatching.Run(m, cleanTokens, corruptedTokens, senders, receiverList, inputKind, metrics, mlps, receiverPositions);
                var names = parsedSenders.Select(s => s.Head?.ToString() ?? $"mlp.{s.Mlp}").ToList();
                Console.WriteLine($"{o.Describe(parse, pairs)}: clean {Cli.Fixed(r.Clean, 3)}, corrupted {Cli.Fixed(r.Corrupted, 3)}");
                Console.WriteLine($"path {string.Join(", ", names)} → {to}: patched {Cli.Fixed(r.Patched, 3)}");
                Console.WriteLine($"(patched − clean) / (clean − corrupted) = {Cli.Fixed(r.Normalized, 3)} (0: none, −1: all)");
                (json["senders"], json["clean"], json["corrupted"], json["patched"]) =
                    (new JsonArray([.. names.Select(s => (JsonNode)s)]), r.Clean, r.Corrupted, r.Patched);
            }
            else
            {
                var (clean, corrupted, patched) = PathPatching.RunEachSender(m, cleanTokens, corruptedTokens, receiverList, inputKind, metrics, receiverPositions);
                Console.WriteLine($"{o.Describe(parse, pairs)}: clean {Cli.Fixed(clean, 3)}, corrupted {Cli.Fixed(corrupted, 3)}");
                bool raw = Math.Abs(clean - corrupted) < 1e-9;
                double Value(int l, int h) => raw ? patched[l, h] : PathPatchingResult.Normalize(patched[l, h], clean, corrupted);
                int layers = patched.GetLength(0), heads = patched.GetLength(1);
                Console.WriteLine(raw ? "effect: the patched metric (clean and corrupted are equal)"
                    : "effect: (patched − clean) / (clean − corrupted): 0 none, −1 all");
                ModelCommands.WriteHeadGrid($"each head's output → {to}",
                    Values(layers, heads, Value), [.. Enumerable.Range(0, layers)]);
                if (parse.GetValue(o.Png) is { } png)
                    ModelCommands.WriteHeatmap(png, Values(layers, heads, Value), $"Path patching each sender head → {to}", "sender layer", "sender head",
                        raw ? "patched metric" : "(patched − clean) / (clean − corrupted)");
                var best = (from l in Enumerable.Range(0, layers) from h in Enumerable.Range(0, heads) select (l, h))
                    .OrderByDescending(c => Math.Abs(Value(c.l, c.h))).Take(parse.GetValue(top)).ToList();
                Console.WriteLine($"largest |effect|: {string.Join(", ", best.Take(5).Select(c => $"L{c.l}H{c.h} {Cli.Fixed(Value(c.l, c.h), 2)}"))}");
                ShowTopHeads(o, parse, best, kv: false);
                (json["clean"], json["corrupted"], json["patched"], json["patched_axes"]) = (clean, corrupted, ModelCommands.Grid(patched), "sender layer, sender head");
            }
            if (parse.GetValue(o.Json) is { } path) ModelCommands.WriteJson(path, json);
            return 0;
        });
        return command;
    }

    /// <summary><c>path-patch --direct</c>'s output: the metric line, the destinations after the source's layer as a layer ×
    /// head table of (patched − corrupted) / (clean − corrupted), the largest, the heatmap and the JSON (TransformerLens's
    /// grid: raw metrics, 0 at and before the source's layer).</summary>
    private static void WriteDirect(ParseResult parse, PairOptions o, DirectPathPatchingResult r, long pairs, int queryHeads, int top, JsonObject json)
    {
        string component = r.Component.ToString().ToLowerInvariant();
        int layers = r.Patched.GetLength(0), heads = r.Patched.GetLength(1);
        bool kv = heads < queryHeads;
        string prefix = kv ? "KV" : "H";
        bool raw = Math.Abs(r.Clean - r.Corrupted) < 1e-9;
        double Value(int l, int h) => raw ? r.Patched[l, h] : r.Normalized(l, h);
        Console.WriteLine($"{o.Describe(parse, pairs)}: clean {Cli.Fixed(r.Clean, 3)}, corrupted {Cli.Fixed(r.Corrupted, 3)}");
        string what = $"{r.Source} → each later {(kv ? "key/value " : "")}head's hook_{component}";
        var later = Enumerable.Range(r.Source.Layer + 1, layers - r.Source.Layer - 1).ToList();
        if (later.Count == 0)
            Console.WriteLine($"direct path {what}: {r.Source} is in the last layer, so no head reads its output (every entry 0, as TransformerLens)");
        else
        {
            Console.WriteLine(raw ? "effect: the patched metric (clean and corrupted are equal)" : "effect: (patched − corrupted) / (clean − corrupted): 0 none, 1 all");
            ModelCommands.WriteHeadGrid($"direct path {what}", Values(later.Count, heads, (i, h) => Value(later[i], h)), later, prefix);
            if (parse.GetValue(o.Png) is { } png)
                ModelCommands.WriteHeatmap(png, Values(later.Count, heads, (i, h) => Value(later[i], h)), $"Direct path patching {what}",
                    "destination layer", kv ? "destination key/value head" : "destination head", raw ? "patched metric" : "(patched − corrupted) / (clean − corrupted)",
                    rowNames: [.. later.Select(l => $"L{l}")]);
            var best = (from l in later from h in Enumerable.Range(0, heads) select (l, h)).OrderByDescending(c => Math.Abs(Value(c.l, c.h))).Take(top).ToList();
            Console.WriteLine($"largest |effect|: {string.Join(", ", best.Take(5).Select(c => $"L{c.l}{prefix}{c.h} {Cli.Fixed(Value(c.l, c.h), 2)}"))}");
            ShowTopHeads(o, parse, best, kv);
        }
        (json["direct"], json["sender"], json["clean"], json["corrupted"], json["patched"], json["patched_axes"], json["warning"]) =
            (true, r.Source.ToString(), r.Clean, r.Corrupted, ModelCommands.Grid(r.Patched), kv ? "destination layer, destination key/value head" : "destination layer, destination head", r.Warning);
    }

    /// <summary>A [layer, head] (any [rows, columns]) grid of <paramref name="value"/>.</summary>
    private static double[,] Values(int layers, int heads, Func<int, int, double> value)
    {
        var v = new double[layers, heads];
        for (int l = 0; l < layers; l++)
            for (int h = 0; h < heads; h++) v[l, h] = value(l, h);
        return v;
    }

    /// <summary>Exploratory Analysis Demo cell 99 (<c>visualize_attention_patterns</c> of the top heads): the command that draws
    /// the attention of the top head's layer's heads among <paramref name="heads"/> (query heads only: a key/value head has none of its own).</summary>
    private static void ShowTopHeads(PairOptions o, ParseResult parse, IEnumerable<(int Layer, int Head)> heads, bool kv)
    {
        var list = heads.ToList();
        if (kv || list.Count == 0) return;
        int layer = list[0].Layer;
        var inLayer = list.Where(c => c.Layer == layer).Select(c => c.Head).Distinct();
        Console.WriteLine("their attention:");
        string revision = parse.GetValue(o.Revision) is { } r ? $" --revision {Quote(r)}" : "";
        Console.WriteLine($"./sae model attention --model {Quote(parse.GetValue(o.Model)!)}{revision} --prompt {Quote(parse.GetValue(o.Clean)![0])} --layer {layer} " +
                          $"{string.Concat(inLayer.Select(h => $"--head {h} "))}--html L{layer}.html");
    }

    private static string Quote(string s) => s.Length > 0 && s.All(ch => char.IsLetterOrDigit(ch) || ch is '/' or '.' or '-' or '_' or ':') ? s : $"'{s.Replace("'", "'\\''", StringComparison.Ordinal)}'";
}
