using System.Globalization;
using System.Text;
using System.Text.Json.Nodes;
using SaeSharp.IO;
using SaeSharp.Tokenizers;

namespace SaeSharp.Analysis;

/// <summary>
/// Writes a <see cref="FeatureReport"/> as a self-contained static site (no network, opens from the file system):
/// <c>index.html</c> (every feature, sortable and filterable by density, max activation and top tokens, with a search box),
/// <c>features/&lt;i&gt;.html</c> per feature in the SAEDashboard / Neuronpedia layout (statistics, activation and logit
/// histograms as inline SVG, top and bottom logit tokens, top examples and interval samples with every token shaded by its
/// activation and its value on hover, similar features, a Neuronpedia link when the SAE has a <c>neuronpedia_id</c>),
/// and <c>assets/</c> with the stylesheet and script.
/// </summary>
public static class DashboardWriter
{
    /// <summary>What <see cref="Write"/> creates in its folder: index.html, the features/ pages and assets/.</summary>
    public static IReadOnlyList<string> Entries { get; } = ["index.html", "features", "assets"];

    /// <summary>Writes the site into <paramref name="dir"/>; returns the path of index.html. Feature pages of an earlier
    /// site in the folder that this report does not have are deleted; other files are left alone. <paramref name="progress"/>
    /// counts the feature pages written.</summary>
    public static string Write(FeatureReport report, string dir, IProgress<WorkProgress>? progress = null)
    {
        ArgumentNullException.ThrowIfNull(report);
        Directory.CreateDirectory(Path.Combine(dir, "features"));
        Directory.CreateDirectory(Path.Combine(dir, "assets"));
        AtomicFile.WriteAllText(Path.Combine(dir, "assets", "dashboard.css"), DashboardAssets.Css);
        AtomicFile.WriteAllText(Path.Combine(dir, "assets", "dashboard.js"), DashboardAssets.Js);
        var order = report.Features.Select(f => f.Feature).ToList();
        var pages = new ProgressCounter(progress, "pages", report.Features.Count);
        for (int i = 0; i < report.Features.Count; i++)
        {
            var f = report.Features[i];
            int? prev = i > 0 ? order[i - 1] : null, next = i + 1 < order.Count ? order[i + 1] : null;
            AtomicFile.WriteAllText(Path.Combine(dir, "features", $"{f.Feature}.html"), FeaturePage(report, f, prev, next));
            pages.Add(1);
        }
        FeatureFiles.RemoveStale(Path.Combine(dir, "features"), ".html", order);
        string index = Path.Combine(dir, "index.html");
        AtomicFile.WriteAllText(index, IndexPage(report));
        return index;
    }

    internal static string Esc(string s) => System.Net.WebUtility.HtmlEncode(s);

    /// <summary>JSON to embed in an inline <c>&lt;script&gt;</c> element: <c>&lt;/</c> written <c>&lt;\/</c>, so no string in it ends the element.</summary>
    internal static string ScriptJson(System.Text.Json.Nodes.JsonNode node) => node.ToJsonString().Replace("</", "<\\/", StringComparison.Ordinal);
    private static string Inv(FormattableString s) => s.ToString(CultureInfo.InvariantCulture);

    /// <summary>A token as shown (<see cref="TokenDisplay.Visible"/>): newlines, tabs and other control characters made
    /// visible, an empty string as ∅.</summary>
    public static string Display(string token) => TokenDisplay.Visible(token);

    /// <summary><see cref="Display"/> of a token in double quotes, for a list or table of tokens on the terminal.</summary>
    public static string Quote(string token) => "\"" + Display(token) + "\"";

    /// <summary>Density as a percentage; below 0.01 % the percentage in scientific notation (6.52e-5 → "6.52e-3%"), so a
    /// column of densities reads in one unit.</summary>
    public static string Percent(double density) =>
        density == 0 ? "0" : (density * 100).ToString(density >= 0.01 ? "0.#" : density >= 1e-4 ? "0.###" : "0.##e0", CultureInfo.InvariantCulture) + "%";

    /// <summary>Background colour of a token with activation <paramref name="act"/> on a feature whose max is <paramref name="max"/>.</summary>
    public static string Shade(double act, double max)
    {
        double a = max > 0 ? Math.Clamp(act / max, 0, 1) : 0;
        return a <= 0 ? "transparent" : Inv($"rgba(255,{(int)(140 - 60 * a)},0,{0.12 + 0.78 * a:0.###})");
    }

    /// <summary>A line of tokens, each a <c>span.tok</c> shaded by its activation with the value in <c>data-act</c>
    /// (the page's script shows token and value on hover).</summary>
    public static string TokenLine(IReadOnlyList<string> tokens, IReadOnlyList<float> acts, double max, int? highlight = null)
    {
        var sb = new StringBuilder("<span class=\"toks\">");
        for (int i = 0; i < tokens.Count; i++)
        {
            float a = acts[i];
            string cls = "tok" + (a > 0 ? " on" : "") + (i == highlight ? " hl" : "");
            sb.Append(Inv($"<span class=\"{cls}\" style=\"background-color:{Shade(a, max)}\" data-act=\"{a:0.####}\">{Esc(Display(tokens[i]))}</span>"));
        }
        return sb.Append("</span>").ToString();
    }

    private static string Head(string title, string prefix) => $"""
        <!DOCTYPE html>
        <html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
        <title>{Esc(title)}</title><link rel="stylesheet" href="{prefix}assets/dashboard.css"></head>
        """;

    /// <summary>How the pages name the SAE: a local folder or file by its name (<c>runs/l5</c> → <c>l5</c>), a release id
    /// or <c>hf:</c> path whole (<c>gemma-scope-2b-pt-res-canonical/layer_0/width_16k/canonical</c>, whose last part alone
    /// says nothing).</summary>
    internal static string SaeLabel(string sae) =>
        Interop.SaeSource.IsRemote(sae) ? sae : Path.GetFileName(sae.TrimEnd('/', '\\'));

    private static string SourceLine(FeatureReport r)
    {
        var parts = new List<string>();
        void Add(string k, string? v) { if (!string.IsNullOrEmpty(v)) parts.Add($"<span><b>{k}</b> {Esc(v)}</span>"); }
        Add("SAE", r.Source.Sae is { } s ? SaeLabel(s) : null);
        Add("architecture", r.Source.Architecture);
        Add("d_sae", r.Source.DSae > 0 ? r.Source.DSae.ToString("N0", CultureInfo.InvariantCulture) : null);
        Add("model", r.Source.Model);
        Add("hook", r.Source.Hook is { } hook ? Saes.SaeMetadata.SiteOf(hook, r.Source.HookHeadIndex) : null);
        Add("dataset", r.Source.Dataset is { } d ? Path.GetFileName(d.TrimEnd('/', '\\')) : null);
        Add("tokens", r.Tokens.ToString("N0", CultureInfo.InvariantCulture));
        return string.Join("", parts);
    }

    private static IEnumerable<string> TopTokenStrings(FeatureReport r, FeatureStatistics f, int n) =>
        f.TopExamples.Select(e => r.TokenString(e.Token)).Distinct().Take(n);

    private static string IndexPage(FeatureReport r)
    {
        var rows = new JsonArray(r.Features.Select(f => (JsonNode)new JsonObject
        {
            ["f"] = f.Feature,
            ["d"] = f.Density,
            ["m"] = f.MaxActivation,
            ["mean"] = Math.Round(f.MeanNonzero, 5),
            ["toks"] = new JsonArray(TopTokenStrings(r, f, 6).Select(t => (JsonNode)JsonValue.Create(Display(t))).ToArray()),
            ["logits"] = new JsonArray(f.TopLogits.Take(5).Select(t => (JsonNode)JsonValue.Create(Display(r.TokenString(t.Token)))).ToArray()),
        }).ToArray());
        var live = r.Features.Where(f => f.Density > 0).Select(f => Math.Log10(f.Density)).ToList();
        string densityChart = "";
        if (live.Count > 0)
        {
            double lo = Math.Floor(live.Min()), hi = Math.Max(0, Math.Ceiling(live.Max()));
            if (hi <= lo) hi = lo + 1;
            int bins = (int)((hi - lo) * 10);
            var counts = new long[bins];
            foreach (var v in live) counts[Math.Clamp((int)((v - lo) * 10), 0, bins - 1)]++;
            densityChart = SvgChart.Histogram(Enumerable.Range(0, bins + 1).Select(i => lo + i / 10.0).ToList(), counts,
                "Feature density", "log10(firing density)", logY: false, _ => "#4f7cac", "density-chart", 560, 190);
        }
        int dead = r.Features.Count(f => f.Firings == 0);
        double median = r.Features.Count == 0 ? 0 : r.Features.Select(f => f.Density).Order().ElementAt(r.Features.Count / 2);
        string np = r.Source.NeuronpediaId is { } id ? $"<a class=\"np\" href=\"https://www.neuronpedia.org/{Esc(id)}\">Neuronpedia ↗</a>" : "";
        var json = ScriptJson(rows);
        return Head("Feature dashboard", "") + $$"""
            <body class="index">
            <header class="top"><div class="brand">SaeSharp <span>feature dashboard</span></div>{{np}}</header>
            <main>
            <section class="source">{{SourceLine(r)}}</section>
            <section class="overview">
              <div class="cards">
                <div class="card"><div class="k">features</div><div class="v">{{r.Features.Count.ToString("N0", CultureInfo.InvariantCulture)}}</div></div>
                <div class="card"><div class="k">dead (never fired)</div><div class="v">{{dead.ToString("N0", CultureInfo.InvariantCulture)}}</div></div>
                <div class="card"><div class="k">median density</div><div class="v">{{Percent(median)}}</div></div>
                <div class="card"><div class="k">tokens</div><div class="v">{{r.Tokens.ToString("N0", CultureInfo.InvariantCulture)}}</div></div>
              </div>
              <div class="overview-chart">{{densityChart}}</div>
            </section>
            <section class="controls">
              <input id="search" type="search" placeholder="Search top tokens and logits…" autocomplete="off">
              <label>density ≥ <input id="dmin" type="number" step="any" placeholder="0"> %</label>
              <label>density ≤ <input id="dmax" type="number" step="any" placeholder="100"> %</label>
              <label>max act ≥ <input id="mmin" type="number" step="any" placeholder="0"></label>
              <label class="check"><input id="hidedead" type="checkbox"> hide dead</label>
              <span id="count" class="count"></span>
            </section>
            <table id="features" class="features">
              <thead><tr>
                <th data-key="f" class="num sorted asc">feature</th>
                <th data-key="d" class="num">density</th>
                <th data-key="m" class="num">max act</th>
                <th data-key="mean" class="num">mean act</th>
                <th>top activating tokens</th>
                <th>top logits</th>
              </tr></thead>
              <tbody></tbody>
            </table>
            </main>
            <script id="feature-data" type="application/json">{{json}}</script>
            <script src="assets/dashboard.js"></script>
            </body></html>
            """;
    }

    private static string ExampleRow(FeatureReport r, ActivationExample e, double max, string label) =>
        $"<div class=\"example\"><span class=\"val\" title=\"{Esc(label)}\">{Inv($"{e.Activation:0.###}")}</span>" +
        TokenLine(e.ContextTokens.Select(r.TokenString).ToList(), e.ContextActs, max, e.Index) + "</div>";

    private static string LogitTable(FeatureReport r, IReadOnlyList<TokenValue> xs, string title, string cls)
    {
        if (xs.Count == 0) return "";
        double scale = xs.Max(x => Math.Abs(x.Value));
        var sb = new StringBuilder($"<div class=\"logits {cls}\"><h3>{title}</h3><table>");
        foreach (var t in xs)
        {
            double w = scale > 0 ? Math.Abs(t.Value) / scale * 100 : 0;
            sb.Append(Inv($"<tr><td class=\"ltok\"><span class=\"chip\">{Esc(Display(r.TokenString(t.Token)))}</span></td><td class=\"lbar\"><span style=\"width:{w:0.#}%\"></span></td><td class=\"num\">{t.Value:+0.000;-0.000}</td></tr>"));
        }
        return sb.Append("</table></div>").ToString();
    }

    private static string FeaturePage(FeatureReport r, FeatureStatistics f, int? prev, int? next)
    {
        double max = f.MaxActivation;
        var sb = new StringBuilder();
        sb.Append(Head($"Feature {f.Feature}", "../"));
        sb.Append("<body class=\"feature\"><header class=\"top\"><div class=\"brand\"><a href=\"../index.html\">SaeSharp <span>feature dashboard</span></a></div><nav>");
        if (prev is int p) sb.Append(Inv($"<a href=\"{p}.html\">← {p}</a>"));
        sb.Append("<a href=\"../index.html\">all features</a>");
        if (next is int n) sb.Append(Inv($"<a href=\"{n}.html\">{n} →</a>"));
        if (r.Source.NeuronpediaId is { } id)
            sb.Append(Inv($"<a class=\"np\" href=\"https://www.neuronpedia.org/{Esc(id)}/{f.Feature}\">Neuronpedia ↗</a>"));
        sb.Append("</nav></header><main>");
        sb.Append(Inv($"<h1>Feature {f.Feature}</h1><section class=\"source\">{SourceLine(r)}</section>"));
        sb.Append("<div class=\"grid\"><aside class=\"left\">");
        sb.Append("<div class=\"panel stats\"><table>");
        sb.Append(Inv($"<tr><th>density</th><td id=\"density\">{Percent(f.Density)}</td></tr>"));
        sb.Append(Inv($"<tr><th>max activation</th><td id=\"max-act\">{f.MaxActivation:0.####}</td></tr>"));
        sb.Append(Inv($"<tr><th>mean (non-zero)</th><td>{f.MeanNonzero:0.####}</td></tr>"));
        sb.Append(Inv($"<tr><th>firings</th><td>{f.Firings:N0} of {r.Tokens:N0} tokens</td></tr>"));
        if (f.RelativeDecoderNorm is { } rn)
            sb.Append(Inv($"<tr><th>relative decoder norm</th><td id=\"relative-norm\" title=\"last slot's decoder norm / all slots': 0 only the other slots, ½ shared, 1 only this slot\">{rn:0.###}</td></tr>"));
        if (f.DeltaNorm is { } dn)
            sb.Append(Inv($"<tr><th>Δnorm</th><td id=\"delta-norm\">{dn:0.###}</td></tr>"));
        sb.Append("</table></div>");
        sb.Append("<div class=\"panel\">");
        sb.Append(SvgChart.Histogram(f.Histogram.Edges, f.Histogram.Counts, Inv($"Activation density · {Percent(f.Density)} of tokens"),
            "activation", logY: true, c => Shade(c, max) == "transparent" ? "#f0a050" : Shade(Math.Max(c, max * 0.25), max), "act-hist"));
        sb.Append("</div><div class=\"panel\">");
        if (f.LogitHistogram is { } lh)
            sb.Append(SvgChart.Histogram(lh.Edges, lh.Counts, "Logit effect W_dec·W_U over the vocabulary", "logit effect", logY: false,
                c => c >= 0 ? "#3b78c4" : "#d0544a", "logit-hist"));
        sb.Append("<div class=\"logit-tables\">");
        sb.Append(LogitTable(r, f.BottomLogits, "Negative logits", "neg"));
        sb.Append(LogitTable(r, f.TopLogits, "Positive logits", "pos"));
        sb.Append("</div></div>");
        if (f.SimilarFeatures.Count > 0)
        {
            sb.Append("<div class=\"panel similar\"><h3>Similar features (decoder cosine)</h3><ul>");
            foreach (var s in f.SimilarFeatures)
                sb.Append(Inv($"<li><a href=\"{s.Index}.html\">feature {s.Index}</a><span class=\"num\">{s.Cosine:0.000}</span></li>"));
            sb.Append("</ul></div>");
        }
        if (f.AlignedNeurons.Count > 0)
        {
            sb.Append("<div class=\"panel similar\"><h3>Most aligned MLP neurons</h3><ul>");
            foreach (var s in f.AlignedNeurons) sb.Append(Inv($"<li>neuron {s.Index}<span class=\"num\">{s.Cosine:0.000}</span></li>"));
            sb.Append("</ul></div>");
        }
        sb.Append("</aside><section class=\"right\">");
        sb.Append(Inv($"<div class=\"panel examples top-examples\"><h2>Top activations <small>max {f.MaxActivation:0.###}</small></h2>"));
        if (f.TopExamples.Count == 0) sb.Append("<p class=\"empty\">This feature never fired on the analysed tokens.</p>");
        foreach (var e in f.TopExamples) sb.Append(ExampleRow(r, e, max, Inv($"window {e.Window}, position {e.Position}")));
        sb.Append("</div>");
        foreach (var iv in f.Intervals.Reverse())
        {
            if (iv.Samples.Count == 0) continue;
            sb.Append(Inv($"<div class=\"panel examples interval\"><h2>Interval {iv.Lower:0.###} – {iv.Upper:0.###} <small>contains {iv.Share * 100:0.##}% of firings ({iv.Count:N0})</small></h2>"));
            foreach (var e in iv.Samples) sb.Append(ExampleRow(r, e, max, Inv($"window {e.Window}, position {e.Position}")));
            sb.Append("</div>");
        }
        sb.Append("</section></div></main><div id=\"tip\" class=\"tip\"></div><script src=\"../assets/dashboard.js\"></script></body></html>");
        return sb.ToString();
    }

    /// <summary>
    /// The prompt view as one self-contained HTML file: per prompt, its top features (and neurons, side by side) as lines of
    /// the prompt's tokens shaded by activation, with each feature's density and top logits; with several prompts, the
    /// features shared by all and those specific to each.
    /// </summary>
    public static void WritePromptView(string path, IReadOnlyList<PromptView> views, IReadOnlyDictionary<int, FeatureNote> notes,
        PromptComparison? comparison = null, string? hook = null)
    {
        ArgumentNullException.ThrowIfNull(views);
        var sb = new StringBuilder();
        sb.Append("<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Prompt view</title><style>")
          .Append(DashboardAssets.Css).Append("</style></head><body class=\"prompt-view\">");
        sb.Append("<header class=\"top\"><div class=\"brand\">SaeSharp <span>prompt view</span></div></header><main>");
        if (hook is not null) sb.Append("<section class=\"source\"><span><b>hook</b> ").Append(Esc(hook)).Append("</span></section>");
        for (int v = 0; v < views.Count; v++)
        {
            var view = views[v];
            sb.Append(Inv($"<div class=\"panel prompt\"><h2>Prompt {v + 1} <small>{Esc(view.Prompt)}</small></h2><div class=\"cols\"><div><h3>Top SAE features</h3>"));
            foreach (var u in view.Features)
            {
                FeatureNote? note = null;
                if (u.Layer is null) notes.TryGetValue(u.Index, out note);   // notes are one SAE's, by index
                string extra = note is null ? "" : (note.Density is double d ? $"density {Percent(d)} · " : "") + string.Join(" ", note.TopLogits.Select(t => $"<span class=\"chip\">{Esc(Display(t))}</span>"));
                sb.Append(Inv($"<div class=\"unit feature-unit\" data-feature=\"{u.Label}\"><div class=\"name\"><b>feature {u.Label}</b> <small>sum {u.Sum:0.###}</small><small>{extra}</small></div>"))
                  .Append(TokenLine(view.TokenStrings, u.Acts, u.Acts.DefaultIfEmpty(0).Max())).Append("</div>");
            }
            sb.Append("</div>");
            if (view.Neurons.Count > 0)
            {
                sb.Append("<div><h3>Top neurons (raw dimensions)</h3>");
                foreach (var u in view.Neurons)
                    sb.Append(Inv($"<div class=\"unit neuron-unit\"><div class=\"name\"><b>neuron {u.Index}</b> <small>sum {u.Sum:0.###}</small></div>"))
                      .Append(TokenLine(view.TokenStrings, u.Acts, u.Acts.Select(Math.Abs).DefaultIfEmpty(0).Max())).Append("</div>");
                sb.Append("</div>");
            }
            sb.Append("</div></div>");
        }
        if (comparison is not null && views.Count > 1)
        {
            sb.Append("<div class=\"panel compare\"><h2>Across prompts</h2>");
            sb.Append(Inv($"<p><b>Shared by all prompts:</b> {(comparison.Shared.Count == 0 ? "none" : string.Join(", ", comparison.Shared))}</p>"));
            for (int v = 0; v < views.Count; v++)
                sb.Append(Inv($"<p><b>Only prompt {v + 1}:</b> {(comparison.Specific[v].Count == 0 ? "none" : string.Join(", ", comparison.Specific[v]))}</p>"));
            sb.Append("</div>");
        }
        sb.Append("</main><div id=\"tip\" class=\"tip\"></div><script>").Append(DashboardAssets.Js).Append("</script></body></html>");
        AtomicFile.WriteAllText(path, sb.ToString());
    }
}
