using System.Globalization;
using System.Text;
using System.Text.Json.Nodes;
using SaeSharp.IO;
using SaeSharp.Models;
using static TorchSharp.torch;

namespace SaeSharp.Analysis;

/// <summary>One layer's attention patterns on one prompt: per head shown, pattern[query][key] as <c>hook_pattern</c> holds it.</summary>
public sealed record AttentionPatterns(string Hook, int Layer, IReadOnlyList<int> Heads, IReadOnlyList<string> Tokens, float[][][] Patterns);

/// <summary>
/// A self-contained HTML page of attention patterns in the spirit of circuitsvis's <c>attention_heads</c> /
/// <c>attention_pattern</c> (the views of TransformerLens's Main Demo cells 24–25 and 48 and Exploratory Analysis Demo
/// cells 50–52 and 104–105): a thumbnail per head to pick one, the picked head's query × key pattern as a heatmap with the
/// tokens on both axes, and the tokens shaded by what a hovered token attends to, or by how much each attends to it.
/// </summary>
public static class AttentionPage
{
    /// <summary>The patterns of <paramref name="heads"/> (null: every head) at <paramref name="layer"/> for
    /// <paramref name="tokens"/> [1, pos], from a run cached up to that layer (<c>blocks.L.attn.hook_pattern</c>).</summary>
    public static AttentionPatterns Collect(HookedTransformer model, Tensor tokens, int layer, IReadOnlyList<int>? heads = null)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(tokens);
        var c = model.Config;
        if (layer < 0 || layer >= c.NLayers) throw new SaeSharpException($"--layer {layer}: the model has layers 0..{c.NLayers - 1}");
        var list = heads ?? Enumerable.Range(0, c.NHeads).ToList();
        if (list.Where(h => h < 0 || h >= c.NHeads).Select(h => (int?)h).FirstOrDefault() is int bad)
            throw new SaeSharpException($"--head {bad}: the model has heads 0..{c.NHeads - 1}");
        if (tokens.dim() != 2 || tokens.shape[0] != 1)
            throw new SaeSharpException($"attention patterns: tokens of shape [{string.Join(", ", tokens.shape)}], expected [1, pos]");
        string hook = model.HookPoints.Blocks[layer].Pattern;
        using var _ = no_grad();
        using var scope = NewDisposeScope();
        using var run = model.RunWithCache(tokens, [hook], stopAtLayer: layer + 1 < c.NLayers ? layer + 1 : null);
        var pattern = run.Cache[hook][0].to(ScalarType.Float32);   // [head, q, k]
        long n = pattern.shape[1];
        var patterns = list.Select(h =>
        {
            var flat = pattern[h].contiguous().data<float>().ToArray();
            return Enumerable.Range(0, (int)n).Select(q => flat.AsSpan(q * (int)n, (int)n).ToArray()).ToArray();
        }).ToArray();
        return new AttentionPatterns(hook, layer, list, model.ToStringTokens(tokens), patterns);
    }

    /// <summary>Writes the page (atomically); <paramref name="title"/> names what was run (e.g. the model and prompt).</summary>
    public static void Write(string path, AttentionPatterns patterns, string title)
    {
        ArgumentNullException.ThrowIfNull(patterns);
        var data = new JsonObject
        {
            ["hook"] = patterns.Hook,
            ["layer"] = patterns.Layer,
            ["heads"] = new JsonArray(patterns.Heads.Select(h => (JsonNode?)h).ToArray()),
            ["tokens"] = new JsonArray(patterns.Tokens.Select(t => (JsonNode?)DashboardWriter.Display(t)).ToArray()),
            ["patterns"] = new JsonArray(patterns.Patterns.Select(head => (JsonNode?)new JsonArray(
                head.Select(row => (JsonNode?)new JsonArray(row.Select(v => (JsonNode?)v).ToArray())).ToArray())).ToArray()),
        };
        var sb = new StringBuilder();
        sb.Append("<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Attention patterns</title><style>").Append(Css)
          .Append("</style></head><body><h1>").Append(DashboardWriter.Esc(patterns.Hook)).Append(" <small>")
          .Append(DashboardWriter.Esc(title)).Append("</small></h1>")
          .Append("<p class=\"note\">Rows: destination (query) tokens; columns: source (key) tokens. Pick a head; hover a cell for its ")
          .Append("value, a row's token for what it attends to, a column's token for what attends to it.</p>")
          .Append("<div id=\"heads\"></div><div class=\"main\"><div class=\"grid-wrap\"><table id=\"grid\"></table></div>")
          .Append("<div class=\"side\"><div id=\"info\">").Append(patterns.Tokens.Count.ToString(CultureInfo.InvariantCulture))
          .Append(" tokens</div><label><input type=\"radio\" name=\"mode\" value=\"to\" checked> attends to</label> ")
          .Append("<label><input type=\"radio\" name=\"mode\" value=\"by\"> attended by</label><div id=\"tokens\"></div></div></div>")
          .Append("<script id=\"attention-data\" type=\"application/json\">").Append(DashboardWriter.ScriptJson(data)).Append("</script>")
          .Append("<script>").Append(Js).Append("</script></body></html>");
        AtomicFile.WriteAllText(path, sb.ToString());
    }

    private const string Css =
        "body{font-family:system-ui,sans-serif;margin:20px;color:#222}h1{font-size:18px;font-family:monospace}h1 small{font-family:system-ui;color:#666;font-weight:normal}" +
        ".note{color:#666;font-size:13px}#heads{display:flex;flex-wrap:wrap;gap:8px;margin:10px 0}" +
        ".head{border:2px solid #ddd;border-radius:4px;padding:3px;cursor:pointer;text-align:center;font-size:12px;background:#fff}" +
        ".head.sel{border-color:#2458b3}.head canvas{display:block;image-rendering:pixelated;width:64px;height:64px}" +
        ".main{display:flex;gap:24px;align-items:flex-start}.grid-wrap{overflow:auto;max-width:70vw;max-height:80vh}" +
        "#grid{border-collapse:collapse;font-size:11px}#grid td.c{width:14px;min-width:14px;height:14px;padding:0;border:1px solid #f4f4f4}" +
        "#grid th{font-weight:normal;font-family:monospace;white-space:pre;padding:1px 4px;cursor:default}" +
        "#grid th.k{writing-mode:vertical-rl;transform:rotate(180deg);text-align:left;vertical-align:bottom}#grid th.q{text-align:right}" +
        "#grid th.hl{background:#ffe9a8}.side{flex:1;min-width:220px;max-width:420px}#info{font-size:13px;margin-bottom:8px;min-height:2.6em}" +
        "#tokens{margin-top:10px;line-height:1.9;font-family:monospace;font-size:13px}" +
        "#tokens span{display:inline-block;white-space:pre;padding:1px 2px;margin:1px;border:1px solid #eee;border-radius:3px;cursor:default}#tokens span.hov{outline:2px solid #222}";

    private const string Js = """
        (function(){
          const d = JSON.parse(document.getElementById('attention-data').textContent);
          const n = d.tokens.length, grid = document.getElementById('grid'), info = document.getElementById('info');
          let sel = 0;
          const colour = v => { const f = Math.round(255 * (1 - 0.85 * Math.min(1, Math.max(0, v)))); return `rgb(${f},${f},255)`; };
          const fmt = v => v.toFixed(4);
          const mode = () => document.querySelector('input[name=mode]:checked').value;
          const headsDiv = document.getElementById('heads');
          d.heads.forEach((h, i) => {
            const b = document.createElement('div'); b.className = 'head'; b.dataset.head = h;
            const cv = document.createElement('canvas'); cv.width = n; cv.height = n;
            const ctx = cv.getContext('2d'), img = ctx.createImageData(n, n);
            for (let q = 0; q < n; q++) for (let k = 0; k < n; k++) {
              const f = Math.round(255 * (1 - 0.85 * Math.min(1, d.patterns[i][q][k]))), o = 4 * (q * n + k);
              img.data[o] = f; img.data[o + 1] = f; img.data[o + 2] = 255; img.data[o + 3] = 255;
            }
            ctx.putImageData(img, 0, 0);
            b.appendChild(cv); b.appendChild(document.createTextNode(`L${d.layer}H${h}`));
            b.onclick = () => { sel = i; render(); };
            headsDiv.appendChild(b);
          });
          const tokenDiv = document.getElementById('tokens');
          const spans = d.tokens.map((t, j) => { const s = document.createElement('span'); s.textContent = t; s.title = `position ${j}`; tokenDiv.appendChild(s); return s; });
          function shade(pos, by) {
            const p = d.patterns[sel];
            spans.forEach((s, j) => { const v = by ? p[j][pos] : p[pos][j]; s.style.background = colour(v); s.style.color = v > 0.6 ? '#fff' : ''; s.classList.toggle('hov', j === pos); s.title = `position ${j}: ${fmt(v)}`; });
            info.textContent = by ? `What attends to “${d.tokens[pos]}” (${pos}), head L${d.layer}H${d.heads[sel]}`
                                  : `What “${d.tokens[pos]}” (${pos}) attends to, head L${d.layer}H${d.heads[sel]}`;
          }
          spans.forEach((s, j) => s.onmouseenter = () => shade(j, mode() === 'by'));
          function render() {
            document.querySelectorAll('.head').forEach((b, i) => b.classList.toggle('sel', i === sel));
            const p = d.patterns[sel];
            grid.textContent = '';
            const head = grid.insertRow(); head.appendChild(document.createElement('th'));
            d.tokens.forEach((t, k) => { const th = document.createElement('th'); th.className = 'k'; th.textContent = t; th.onmouseenter = () => shade(k, true); head.appendChild(th); });
            for (let q = 0; q < n; q++) {
              const tr = grid.insertRow(), th = document.createElement('th');
              th.className = 'q'; th.textContent = d.tokens[q]; th.onmouseenter = () => shade(q, false); tr.appendChild(th);
              for (let k = 0; k < n; k++) {
                const td = tr.insertCell(); td.className = 'c'; td.style.background = colour(p[q][k]);
                td.onmouseenter = () => {
                  info.textContent = `“${d.tokens[q]}” (${q}) → “${d.tokens[k]}” (${k}): ${fmt(p[q][k])}`;
                  grid.querySelectorAll('th.hl').forEach(e => e.classList.remove('hl'));
                  th.classList.add('hl'); head.cells[k + 1].classList.add('hl');
                };
              }
            }
            shade(n - 1, false);
          }
          render();
        })();
        """;
}
