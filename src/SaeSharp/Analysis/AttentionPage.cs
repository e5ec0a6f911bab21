using System.Globalization;
using System.Text;
using System.Text.Json.Nodes;
using SaeSharp.IO;
using SaeSharp.Models;
using static TorchSharp.torch;

namespace SaeSharp.Analysis;

/// <summary>One layer's attention patterns on one prompt: per head shown, pattern[query][key] as <c>hook_pattern</c> holds it.</summary>
public sealed record AttentionPatterns(string Hook, int Layer, IReadOnlyList<int> Heads, IReadOnlyList<string> Tokens, float[][][] Patterns);

/// <summary>One prompt of a page of several: what it is (its text, or the row of a file) and its layers' patterns.</summary>
public sealed record AttentionPrompt(string Label, IReadOnlyList<AttentionPatterns> Layers);

/// <summary>
/// A self-contained HTML page of attention patterns in the spirit of circuitsvis's <c>attention_heads</c> and
/// <c>attention_patterns</c> (the views of TransformerLens's Main Demo cells 24–25 and 48 and Exploratory Analysis Demo
/// cells 50–52 and 104–105), one section per layer: a thumbnail per head to pick one, the picked head's query × key pattern
/// as a heatmap with the tokens on both axes, and the tokens coloured by what a hovered (or clicked, to hold it) token
/// attends to or by how much each attends to it, for one head or all heads at once (each head in its own colour, mixed).
/// </summary>
public static class AttentionPage
{
    /// <summary>The default page size limit (<c>--max-page-mb</c>): GPT-2 small's 12 layers × 12 heads × 128 tokens is about 17 MB.</summary>
    public const double DefaultMaxMegabytes = 64;

    /// <summary>The patterns of <paramref name="heads"/> (null: every head) at <paramref name="layer"/> for
    /// <paramref name="tokens"/> [1, pos], from a run cached up to that layer (<c>blocks.L.attn.hook_pattern</c>).</summary>
    public static AttentionPatterns Collect(HookedTransformer model, Tensor tokens, int layer, IReadOnlyList<int>? heads = null) =>
        Collect(model, tokens, [layer], heads)[0];

    /// <summary>The patterns of <paramref name="heads"/> (null: every head) at each of <paramref name="layers"/> (in that
    /// order) for <paramref name="tokens"/> [1, pos], from one run cached up to the last of them.</summary>
    public static IReadOnlyList<AttentionPatterns> Collect(HookedTransformer model, Tensor tokens, IReadOnlyList<int> layers, IReadOnlyList<int>? heads = null)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(tokens);
        ArgumentNullException.ThrowIfNull(layers);
        var c = model.Config;
        if (layers.Count == 0) throw new SaeSharpException("--layer: no layer given");
        if (layers.Where(l => l < 0 || l >= c.NLayers).Select(l => (int?)l).FirstOrDefault() is int badLayer)
            throw new SaeSharpException($"--layer {badLayer}: the model has layers 0..{c.NLayers - 1}");
        var list = heads ?? Enumerable.Range(0, c.NHeads).ToList();
        if (list.Where(h => h < 0 || h >= c.NHeads).Select(h => (int?)h).FirstOrDefault() is int bad)
            throw new SaeSharpException($"--head {bad}: the model has heads 0..{c.NHeads - 1}");
        if (tokens.dim() != 2 || tokens.shape[0] != 1)
            throw new SaeSharpException($"attention patterns: tokens of shape [{string.Join(", ", tokens.shape)}], expected [1, pos]");
        var hooks = layers.Select(l => model.HookPoints.Blocks[l].Pattern).ToList();
        int last = layers.Max();
        using var _ = no_grad();
        using var scope = NewDisposeScope();
        using var run = model.RunWithCache(tokens, hooks.Distinct(), stopAtLayer: last + 1 < c.NLayers ? last + 1 : null);
        var str = model.ToStringTokens(tokens);
        return layers.Select((layer, i) =>
        {
            var pattern = run.Cache[hooks[i]][0].to(ScalarType.Float32);   // [head, q, k]
            int n = (int)pattern.shape[1];
            var patterns = list.Select(h =>
            {
                var flat = pattern[h].contiguous().data<float>().ToArray();
                return Enumerable.Range(0, n).Select(q => flat.AsSpan(q * n, n).ToArray()).ToArray();
            }).ToArray();
            return new AttentionPatterns(hooks[i], layer, list, str, patterns);
        }).ToList();
    }

    /// <summary>The least a page of <paramref name="layers"/> × <paramref name="heads"/> patterns over
    /// <paramref name="tokens"/> tokens can weigh (each number at least "0,"), to refuse a page too large before running.</summary>
    public static long MinimumBytes(int layers, int heads, long tokens) => 2L * layers * heads * tokens * tokens;

    /// <summary>Refuses a page of <paramref name="bytes"/> (<paramref name="estimated"/>: at least that many) over
    /// <paramref name="maxMegabytes"/>, naming its size, what makes it and the options that narrow it;
    /// <paramref name="prompts"/> above 1: a page of several prompts, <paramref name="tokens"/> the longest one's.</summary>
    public static void RefuseOversized(long bytes, double maxMegabytes, int layers, int heads, long tokens, bool estimated, int prompts = 1)
    {
        if (bytes <= maxMegabytes * 1024 * 1024) return;
        string what = prompts == 1 ? $"{tokens}² tokens" : $"up to {tokens}² tokens, {prompts} prompts";
        throw new SaeSharpException($"--max-page-mb {maxMegabytes.ToString(CultureInfo.InvariantCulture)}: the attention page would be " +
                                    $"{(estimated ? "at least " : "")}{HostMemory.Format(bytes)} ({layers} layer{(layers == 1 ? "" : "s")} × " +
                                    $"{heads} head{(heads == 1 ? "" : "s")} × {what}); narrow it with --layer, --head or " +
                                    $"{(prompts == 1 ? "a shorter prompt" : "fewer or shorter prompts")}, or raise --max-page-mb");
    }

    /// <summary>Writes the page (atomically), one section per entry of <paramref name="layers"/> (the same tokens);
    /// <paramref name="title"/> names what was run (e.g. the model and prompt). A page over <paramref name="maxMegabytes"/>
    /// is refused before anything is written.</summary>
    public static void Write(string path, IReadOnlyList<AttentionPatterns> layers, string title, double maxMegabytes = DefaultMaxMegabytes)
    {
        ArgumentNullException.ThrowIfNull(layers);
        Write(path, [new AttentionPrompt(title, layers)], title, maxMegabytes);
    }

    /// <summary>Writes one page of several prompts (atomically), each with the same layers and heads: a prompt selector
    /// above the sections switches every section to that prompt's tokens and patterns. The data embedded are
    /// <c>{"prompts": [{"label", "tokens", "layers"}, ...]}</c>; a page of one prompt is the single-prompt page
    /// (<c>{"tokens", "layers"}</c>, no selector).</summary>
    public static void Write(string path, IReadOnlyList<AttentionPrompt> prompts, string title, double maxMegabytes = DefaultMaxMegabytes)
    {
        ArgumentNullException.ThrowIfNull(prompts);
        if (prompts.Count == 0) throw new ArgumentException("attention page: no prompt", nameof(prompts));
        var layers = prompts[0].Layers;
        if (layers.Count == 0) throw new ArgumentException("attention page: no layer", nameof(prompts));
        foreach (var p in prompts)
        {
            if (p.Layers.Any(l => !l.Tokens.SequenceEqual(p.Layers[0].Tokens))) throw new ArgumentException("attention page: layers of different tokens", nameof(prompts));
            if (p.Layers.Count != layers.Count || p.Layers.Zip(layers).Any(x => x.First.Layer != x.Second.Layer || !x.First.Heads.SequenceEqual(x.Second.Heads)))
                throw new ArgumentException("attention page: prompts of different layers or heads", nameof(prompts));
        }
        static JsonObject Prompt(IReadOnlyList<AttentionPatterns> ls) => new()
        {
            ["tokens"] = new JsonArray(ls[0].Tokens.Select(t => (JsonNode?)DashboardWriter.Display(t)).ToArray()),
            ["layers"] = new JsonArray(ls.Select(l => (JsonNode?)new JsonObject
            {
                ["hook"] = l.Hook,
                ["layer"] = l.Layer,
                ["heads"] = new JsonArray(l.Heads.Select(h => (JsonNode?)h).ToArray()),
                ["patterns"] = new JsonArray(l.Patterns.Select(head => (JsonNode?)new JsonArray(
                    head.Select(row => (JsonNode?)new JsonArray(row.Select(v => (JsonNode?)v).ToArray())).ToArray())).ToArray()),
            }).ToArray()),
        };
        JsonObject data;
        if (prompts.Count == 1) data = Prompt(layers);
        else
        {
            data = new JsonObject
            {
                ["prompts"] = new JsonArray(prompts.Select(p =>
                {
                    var o = new JsonObject { ["label"] = p.Label };
                    foreach (var kv in Prompt(p.Layers).ToList()) { o[kv.Key] = kv.Value?.DeepClone(); }
                    return (JsonNode?)o;
                }).ToArray()),
            };
        }
        var tokens = layers[0].Tokens;
        var sb = new StringBuilder();
        string heading = layers.Count == 1 ? layers[0].Hook : $"Attention patterns of {layers.Count} layers";
        sb.Append("<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Attention patterns</title><style>").Append(Css)
          .Append("</style></head><body><h1>").Append(DashboardWriter.Esc(heading)).Append(" <small>")
          .Append(DashboardWriter.Esc(title)).Append("</small></h1>")
          .Append("<p class=\"note\">Rows: destination (query) tokens; columns: source (key) tokens. Pick a head; hover a cell for its ")
          .Append("value, a row's token for what it attends to, a column's token for what attends to it; click a token to hold it. ")
          .Append("\"all heads\" colours the tokens by every head at once, each head in the colour under its thumbnail.</p>");
        if (prompts.Count > 1)
            sb.Append("<p class=\"prompts\"><label>prompt <select id=\"prompt-pick\"></select></label> <span class=\"note\">")
              .Append(prompts.Count.ToString(CultureInfo.InvariantCulture)).Append(" prompts; every section shows the one picked</span></p>");
        foreach (var l in layers)
        {
            string layer = l.Layer.ToString(CultureInfo.InvariantCulture);
            sb.Append("<section class=\"layer\" data-layer=\"").Append(layer).Append("\">");
            if (layers.Count > 1) sb.Append("<h2>").Append(DashboardWriter.Esc(l.Hook)).Append("</h2>");
            sb.Append("<div class=\"heads\"></div><div class=\"main\"><div class=\"grid-wrap\"><table class=\"grid\"></table></div>")
              .Append("<div class=\"side\"><div class=\"info\">").Append(tokens.Count.ToString(CultureInfo.InvariantCulture))
              .Append(" tokens</div><label>head <select class=\"pick\"></select></label> ")
              .Append("<label><input type=\"radio\" class=\"mode\" name=\"mode-").Append(layer).Append("\" value=\"to\" checked> attends to</label> ")
              .Append("<label><input type=\"radio\" class=\"mode\" name=\"mode-").Append(layer).Append("\" value=\"by\"> attended by</label>")
              .Append("<div class=\"tokens\"></div></div></div></section>");
        }
        sb.Append("<script id=\"attention-data\" type=\"application/json\">").Append(DashboardWriter.ScriptJson(data)).Append("</script>")
          .Append("<script>").Append(Js).Append("</script></body></html>");
        string page = sb.ToString();
        RefuseOversized(Encoding.UTF8.GetByteCount(page), maxMegabytes, layers.Count, layers.Max(l => l.Heads.Count),
            prompts.Max(p => p.Layers[0].Tokens.Count), estimated: false, prompts.Count);
        AtomicFile.WriteAllText(path, page);
    }

    private const string Css =
        "body{font-family:system-ui,sans-serif;margin:20px;color:#222}h1{font-size:18px;font-family:monospace}h1 small{font-family:system-ui;color:#666;font-weight:normal}" +
        "h2{font-size:15px;font-family:monospace;margin:24px 0 4px;border-top:1px solid #ddd;padding-top:12px}" +
        ".note{color:#666;font-size:13px}.heads{display:flex;flex-wrap:wrap;gap:8px;margin:10px 0}" +
        ".head{border:2px solid #ddd;border-radius:4px;padding:3px;cursor:pointer;text-align:center;font-size:12px;background:#fff}" +
        ".head.sel{border-color:#2458b3}.head canvas{display:block;image-rendering:pixelated;width:64px;height:64px}" +
        ".head .swatch{display:inline-block;width:9px;height:9px;border-radius:2px;margin-right:3px}" +
        ".main{display:flex;gap:24px;align-items:flex-start}.grid-wrap{overflow:auto;max-width:70vw;max-height:80vh}" +
        ".grid{border-collapse:collapse;font-size:11px}.grid td.c{width:14px;min-width:14px;height:14px;padding:0;border:1px solid #f4f4f4}" +
        ".grid th{font-weight:normal;font-family:monospace;white-space:pre;padding:1px 4px;cursor:pointer}" +
        ".grid th.k{writing-mode:vertical-rl;transform:rotate(180deg);text-align:left;vertical-align:bottom}.grid th.q{text-align:right}" +
        ".grid th.hl{background:#ffe9a8}.side{flex:1;min-width:220px;max-width:420px}.info{font-size:13px;margin-bottom:8px;min-height:2.6em}" +
        ".side label{font-size:13px}.tokens{margin-top:10px;line-height:1.9;font-family:monospace;font-size:13px}" +
        ".tokens span{display:inline-block;white-space:pre;padding:1px 2px;margin:1px;border:1px solid #eee;border-radius:3px;cursor:pointer}" +
        ".tokens span.hov{outline:2px solid #222}.tokens span.held{outline:2px solid #c00}" +
        ".prompts{font-size:14px}.prompts select{font-family:monospace;font-size:13px;max-width:80vw}";

    /// <summary>One view per section: <c>blue(v)</c> shades one head's value white → blue; with "all heads" each head i
    /// takes away v·(255 − its colour) from white, channel by channel (its colour: <c>palette[i % 10]</c>, d3's category10).
    /// Each token span keeps its values (one per head shown) in <c>data-values</c>.</summary>
    private const string Js = """
        (function(){
          const d = JSON.parse(document.getElementById('attention-data').textContent);
          const prompts = d.prompts ?? [{ label: null, tokens: d.tokens, layers: d.layers }];
          const palette = ['#1f77b4','#ff7f0e','#2ca02c','#d62728','#9467bd','#8c564b','#e377c2','#7f7f7f','#bcbd22','#17becf'];
          const rgb = h => [1, 3, 5].map(i => parseInt(h.slice(i, i + 2), 16));
          const clamp = v => Math.min(1, Math.max(0, v));
          const blue = v => { const f = Math.round(255 * (1 - 0.85 * clamp(v))); return `rgb(${f}, ${f}, 255)`; };
          const mixed = vs => { const c = [255, 255, 255]; vs.forEach((v, i) => { const h = rgb(palette[i % 10]); for (let ch = 0; ch < 3; ch++) c[ch] -= clamp(v) * (255 - h[ch]); });
                                return c.map(x => Math.round(Math.max(0, x))); };
          const dark = c => 0.299 * c[0] + 0.587 * c[1] + 0.114 * c[2] < 110;   // white text on it
          const fmt = v => v.toFixed(4);
          const sections = document.querySelectorAll('section.layer'), promptPick = document.getElementById('prompt-pick');
          const show = p => sections.forEach((root, li) => view(root, prompts[p].layers[li], prompts[p].tokens));
          if (promptPick) {
            prompts.forEach((p, i) => { const o = document.createElement('option'); o.value = String(i);
              o.textContent = `${i + 1}: ${p.label.length > 90 ? p.label.slice(0, 87) + '...' : p.label} (${p.tokens.length} tokens)`; promptPick.appendChild(o); });
            promptPick.onchange = () => show(+promptPick.value);
          }
          show(0);
          // Draws one section for one prompt; called again (the section emptied) when another prompt is picked, keeping the
          // picked head and mode.
          function view(root, L, tokens) {
            const $ = s => root.querySelector(s);
            const grid = $('.grid'), info = $('.info'), pick = $('.pick'), headsDiv = $('.heads'), tokenDiv = $('.tokens');
            const n = tokens.length, kept = pick.value;
            headsDiv.textContent = ''; pick.textContent = ''; tokenDiv.textContent = ''; grid.textContent = '';
            let sel = kept && kept !== 'all' ? +kept : 0, held = null, last = { pos: n - 1, by: mode() };
            const name = i => `L${L.layer}H${L.heads[i]}`;
            function mode() { return root.querySelector('input.mode:checked').value === 'by'; }
            L.heads.forEach((h, i) => {
              const b = document.createElement('div'); b.className = 'head'; b.dataset.head = h;
              const cv = document.createElement('canvas'); cv.width = n; cv.height = n;
              const ctx = cv.getContext('2d'), img = ctx.createImageData(n, n);
              for (let q = 0; q < n; q++) for (let k = 0; k < n; k++) {
                const f = Math.round(255 * (1 - 0.85 * clamp(L.patterns[i][q][k]))), o = 4 * (q * n + k);
                img.data[o] = f; img.data[o + 1] = f; img.data[o + 2] = 255; img.data[o + 3] = 255;
              }
              ctx.putImageData(img, 0, 0);
              const sw = document.createElement('span'); sw.className = 'swatch'; sw.style.background = palette[i % 10];
              b.appendChild(cv); b.appendChild(sw); b.appendChild(document.createTextNode(name(i)));
              b.onclick = () => { sel = i; pick.value = String(i); render(); };
              headsDiv.appendChild(b);
              const o = document.createElement('option'); o.value = String(i); o.textContent = name(i); pick.appendChild(o);
            });
            const all = document.createElement('option'); all.value = 'all'; all.textContent = 'all heads'; pick.appendChild(all);
            pick.value = kept === 'all' ? 'all' : String(sel);
            pick.onchange = () => { if (pick.value !== 'all') { sel = +pick.value; render(); } else shade(last.pos, last.by); };
            root.querySelectorAll('input.mode').forEach(r => r.onchange = () => shade(last.pos, mode()));
            const spans = tokens.map((t, j) => {
              const s = document.createElement('span'); s.textContent = t; s.title = `position ${j}`; tokenDiv.appendChild(s);
              s.onmouseenter = () => hover(j, mode());
              s.onclick = () => hold(j, mode());
              return s;
            });
            function hover(pos, by) { if (held === null) shade(pos, by); }
            function hold(pos, by) { held = held === pos ? null : pos; shade(pos, by); }
            function shade(pos, by) {
              last = { pos, by };
              const every = pick.value === 'all', shown = every ? L.patterns.map((_, i) => i) : [sel];
              spans.forEach((s, j) => {
                const vs = shown.map(i => by ? L.patterns[i][j][pos] : L.patterns[i][pos][j]);
                s.dataset.values = vs.join(',');
                const c = every ? mixed(vs) : null;
                s.style.background = every ? `rgb(${c.join(', ')})` : blue(vs[0]);
                s.style.color = (every ? dark(c) : vs[0] > 0.6) ? '#fff' : '';
                s.classList.toggle('hov', j === pos); s.classList.toggle('held', j === held);
                s.title = `position ${j}: ` + shown.map((i, x) => (every ? name(i) + ' ' : '') + fmt(vs[x])).join(', ');
              });
              const heads = every ? `all ${L.heads.length} heads of layer ${L.layer}` : `head ${name(sel)}`;
              info.textContent = (by ? `What attends to “${tokens[pos]}” (${pos}), ` : `What “${tokens[pos]}” (${pos}) attends to, `) + heads +
                                 (held === null ? '' : ' (held: click it again to let go)');
            }
            function render() {
              root.querySelectorAll('.head').forEach((b, i) => b.classList.toggle('sel', i === sel));
              const p = L.patterns[sel];
              grid.textContent = '';
              const head = grid.insertRow(); head.appendChild(document.createElement('th'));
              tokens.forEach((t, k) => { const th = document.createElement('th'); th.className = 'k'; th.textContent = t;
                th.onmouseenter = () => hover(k, true); th.onclick = () => hold(k, true); head.appendChild(th); });
              for (let q = 0; q < n; q++) {
                const tr = grid.insertRow(), th = document.createElement('th');
                th.className = 'q'; th.textContent = tokens[q]; th.onmouseenter = () => hover(q, false); th.onclick = () => hold(q, false); tr.appendChild(th);
                for (let k = 0; k < n; k++) {
                  const td = tr.insertCell(); td.className = 'c'; td.style.background = blue(p[q][k]);
                  td.onmouseenter = () => {
                    info.textContent = `“${tokens[q]}” (${q}) → “${tokens[k]}” (${k}): ${fmt(p[q][k])}`;
                    grid.querySelectorAll('th.hl').forEach(e => e.classList.remove('hl'));
                    th.classList.add('hl'); head.cells[k + 1].classList.add('hl');
                  };
                }
              }
              shade(held ?? last.pos, last.by);
            }
            render();
          }
        })();
        """;
}
