namespace SaeSharp.Analysis;

/// <summary>The stylesheet and script of the dashboard and the prompt view (bundled: the site needs no network).</summary>
internal static class DashboardAssets
{
    public const string Css = """
        :root { --fg:#1d2330; --muted:#6b7385; --line:#e3e6ec; --bg:#f6f7f9; --panel:#fff; --accent:#e0720b; --blue:#3b78c4; --red:#d0544a; }
        * { box-sizing: border-box; }
        body { margin:0; font: 14px/1.45 system-ui, -apple-system, "Segoe UI", "DejaVu Sans", sans-serif; color:var(--fg); background:var(--bg); }
        a { color: var(--blue); text-decoration: none; } a:hover { text-decoration: underline; }
        header.top { display:flex; align-items:center; justify-content:space-between; padding:10px 24px; background:#1d2330; color:#fff; }
        header.top a { color:#fff; }
        .brand { font-weight:700; letter-spacing:.2px; } .brand span { font-weight:400; opacity:.7; }
        header nav a { margin-left:18px; opacity:.9; }
        .np { background:var(--accent); color:#fff !important; padding:3px 10px; border-radius:12px; font-size:12px; }
        main { padding: 16px 24px 40px; max-width: 1500px; margin: 0 auto; }
        h1 { margin: 4px 0 6px; font-size: 26px; }
        h2 { font-size: 15px; margin: 0 0 10px; } h2 small { color: var(--muted); font-weight: 400; margin-left: 8px; }
        h3 { font-size: 13px; margin: 8px 0 6px; color: var(--muted); text-transform: uppercase; letter-spacing: .4px; }
        .source { color: var(--muted); font-size: 12.5px; margin-bottom: 14px; display:flex; flex-wrap:wrap; gap:4px 18px; }
        .source b { color: var(--fg); font-weight: 600; margin-right: 3px; }
        .panel { background: var(--panel); border: 1px solid var(--line); border-radius: 8px; padding: 12px 14px; margin-bottom: 14px; }
        .grid { display: grid; grid-template-columns: 440px minmax(0, 1fr); gap: 16px; align-items: start; }
        .stats table { width: 100%; border-collapse: collapse; } .stats th { text-align:left; color:var(--muted); font-weight:500; padding:3px 0; } .stats td { text-align:right; font-variant-numeric: tabular-nums; font-weight:600; }
        svg.chart { display:block; max-width:100%; height:auto; }
        svg .chart-title { font-size: 12.5px; font-weight: 600; fill: var(--fg); }
        svg .tick, svg .axis-label, svg .chart-empty { font-size: 10.5px; fill: var(--muted); }
        svg .grid { stroke: #eef0f4; } svg .axis { stroke: #9aa1b0; }
        .logit-tables { display:grid; grid-template-columns: 1fr 1fr; gap: 12px; }
        .logits table { width:100%; border-collapse: collapse; font-size: 12.5px; }
        .logits td { padding: 1px 2px; } .logits td.num { text-align:right; font-variant-numeric: tabular-nums; color: var(--muted); width: 54px; }
        .logits .ltok { max-width: 110px; overflow: hidden; }
        .lbar { width: 60px; } .lbar span { display:block; height: 8px; border-radius: 2px; }
        .pos .lbar span { background: var(--blue); } .neg .lbar span { background: var(--red); }
        .chip { font-family: ui-monospace, "DejaVu Sans Mono", monospace; white-space: pre; background:#f0f2f6; border-radius:3px; padding:0 4px; font-size:12px; }
        .pos .chip { background: #e4eefa; } .neg .chip { background: #fbe6e4; }
        .similar ul { list-style:none; margin:0; padding:0; } .similar li { display:flex; justify-content:space-between; padding:2px 0; border-bottom:1px dashed var(--line); }
        .similar .num { color: var(--muted); font-variant-numeric: tabular-nums; }
        .example { display:flex; align-items:baseline; gap: 10px; padding: 4px 0; border-bottom: 1px solid #f1f2f5; }
        .example:last-child { border-bottom: 0; }
        .val { flex: 0 0 56px; text-align:right; font-variant-numeric: tabular-nums; font-size: 12px; color: var(--muted); }
        .toks { font-family: ui-monospace, "DejaVu Sans Mono", monospace; font-size: 13px; white-space: pre-wrap; word-break: break-word; line-height: 1.9; }
        .tok { white-space: pre; border-radius: 2px; padding: 1px 0; cursor: default; }
        .tok.hl { outline: 1.5px solid #b34d00; outline-offset: 0; font-weight: 700; }
        .tok:hover { outline: 1.5px solid #1d2330; }
        .interval h2 { font-weight: 600; }
        .empty { color: var(--muted); font-style: italic; }
        .tip { position: fixed; pointer-events: none; background: #1d2330; color: #fff; padding: 4px 8px; border-radius: 4px; font-size: 12px; display: none; z-index: 10; white-space: pre; font-family: ui-monospace, "DejaVu Sans Mono", monospace; }
        .overview { display:flex; gap: 18px; align-items: stretch; margin-bottom: 14px; flex-wrap: wrap; }
        .cards { display:grid; grid-template-columns: repeat(2, 170px); gap: 10px; }
        .card { background: var(--panel); border:1px solid var(--line); border-radius: 8px; padding: 10px 14px; }
        .card .k { color: var(--muted); font-size: 12px; } .card .v { font-size: 22px; font-weight: 700; font-variant-numeric: tabular-nums; }
        .overview-chart { background: var(--panel); border:1px solid var(--line); border-radius: 8px; padding: 6px 10px; }
        .controls { display:flex; flex-wrap: wrap; gap: 10px 16px; align-items:center; background: var(--panel); border:1px solid var(--line); border-radius: 8px; padding: 10px 14px; margin-bottom: 10px; }
        .controls input[type=search] { flex: 1 1 280px; padding: 7px 10px; border:1px solid #cfd4dd; border-radius: 6px; font-size: 14px; }
        .controls input[type=number] { width: 80px; padding: 4px 6px; border:1px solid #cfd4dd; border-radius: 5px; }
        .controls label { color: var(--muted); font-size: 13px; } .count { margin-left:auto; color: var(--muted); font-size: 13px; }
        table.features { width: 100%; border-collapse: collapse; background: var(--panel); border:1px solid var(--line); border-radius: 8px; overflow: hidden; }
        table.features th { text-align:left; font-size: 12px; text-transform: uppercase; letter-spacing: .4px; color: var(--muted); background:#fafbfc; padding: 8px 10px; border-bottom: 1px solid var(--line); position: sticky; top: 0; }
        table.features th[data-key] { cursor: pointer; user-select: none; } table.features th[data-key]:hover { color: var(--fg); }
        table.features th.sorted.asc::after { content: " ▲"; } table.features th.sorted.desc::after { content: " ▼"; }
        table.features td { padding: 6px 10px; border-bottom: 1px solid #f1f2f5; vertical-align: middle; }
        table.features tr:hover td { background: #fbf7f2; }
        td.num, th.num, table.features th.num { text-align: right; font-variant-numeric: tabular-nums; }
        td.dcell { white-space: nowrap; }
        .dbar { display:inline-block; width: 70px; height: 7px; background: #eef0f4; border-radius: 4px; margin-left: 8px; vertical-align: middle; position: relative; overflow:hidden; }
        .dbar span { position:absolute; left:0; top:0; bottom:0; background: var(--accent); }
        tr.dead td { color: #a8aebb; }
        .chips .chip { margin-right: 4px; }
        .prompt-view .unit { display:flex; gap: 14px; align-items: baseline; padding: 6px 0; border-bottom: 1px solid #f1f2f5; }
        .prompt-view .unit .name { flex: 0 0 180px; min-width: 0; font-size: 12.5px; }
        .prompt-view .unit .name .chip { display: inline-block; max-width: 100%; overflow: hidden; vertical-align: bottom; } .prompt-view .unit .name small { display:block; color: var(--muted); }
        .cols { display:grid; grid-template-columns: 1fr 1fr; gap: 16px; }
        /* A narrow window: one column (the examples and the neurons below, not off the page to the right); the index
           table scrolls sideways inside itself. */
        @media (max-width: 900px) {
          main { padding: 12px 12px 32px; }
          .grid, .cols { grid-template-columns: minmax(0, 1fr); }
          .cards { grid-template-columns: repeat(2, minmax(0, 1fr)); flex: 1 1 100%; }
          .overview-chart { flex: 1 1 100%; min-width: 0; }
          table.features { display: block; overflow-x: auto; }
        }
        @media (max-width: 560px) {
          .logit-tables { grid-template-columns: minmax(0, 1fr); }
          .prompt-view .unit .name { flex-basis: 120px; }
        }
        """;

    public const string Js = """
        (function () {
          var tip = document.getElementById('tip');
          if (tip) {
            document.addEventListener('mouseover', function (e) {
              var t = e.target.closest && e.target.closest('.tok');
              if (!t) { tip.style.display = 'none'; return; }
              tip.textContent = JSON.stringify(t.textContent) + '  ' + t.getAttribute('data-act');
              tip.style.display = 'block';
            });
            document.addEventListener('mousemove', function (e) { tip.style.left = (e.clientX + 12) + 'px'; tip.style.top = (e.clientY + 14) + 'px'; });
          }
          var dataEl = document.getElementById('feature-data');
          if (!dataEl) return;
          var rows = JSON.parse(dataEl.textContent);
          var tbody = document.querySelector('#features tbody');
          var sortKey = 'f', sortDir = 1, LIMIT = 2000;
          var minLog = 0;
          rows.forEach(function (r) { if (r.d > 0) { var l = Math.log10(r.d); if (l < minLog) minLog = l; } });
          minLog = Math.min(-1, Math.floor(minLog));
          function esc(s) { return s.replace(/[&<>"]/g, function (c) { return { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;' }[c]; }); }
          function pct(d) { return d === 0 ? '0' : d >= 1e-4 ? (+(d * 100).toPrecision(3)) + '%' : (d * 100).toExponential(2) + '%'; }
          function num(v) { return v === 0 ? '0' : (+v.toPrecision(4)).toString(); }
          function chips(xs) { return xs.map(function (t) { return '<span class="chip">' + esc(t) + '</span>'; }).join(''); }
          function val(id) { var v = parseFloat(document.getElementById(id).value); return isNaN(v) ? null : v; }
          function render() {
            var q = document.getElementById('search').value.trim().toLowerCase();
            var dmin = val('dmin'), dmax = val('dmax'), mmin = val('mmin'), hide = document.getElementById('hidedead').checked;
            var out = rows.filter(function (r) {
              if (hide && r.d === 0) return false;
              if (dmin !== null && r.d * 100 < dmin) return false;
              if (dmax !== null && r.d * 100 > dmax) return false;
              if (mmin !== null && r.m < mmin) return false;
              if (q) {
                if (String(r.f) === q) return true;
                var hay = r.toks.concat(r.logits).join('\u0001').toLowerCase();
                if (hay.indexOf(q) < 0) return false;
              }
              return true;
            });
            out.sort(function (a, b) { return (a[sortKey] - b[sortKey]) * sortDir || a.f - b.f; });
            var html = [];
            out.slice(0, LIMIT).forEach(function (r) {
              var w = r.d > 0 ? Math.max(3, 100 * (1 - Math.log10(r.d) / minLog)) : 0;
              html.push('<tr class="' + (r.d === 0 ? 'dead' : '') + '" data-feature="' + r.f + '">' +
                '<td class="num"><a href="features/' + r.f + '.html">' + r.f + '</a></td>' +
                '<td class="num dcell">' + pct(r.d) + '<span class="dbar"><span style="width:' + w.toFixed(1) + '%"></span></span></td>' +
                '<td class="num">' + num(r.m) + '</td><td class="num">' + num(r.mean) + '</td>' +
                '<td class="chips">' + chips(r.toks) + '</td><td class="chips">' + chips(r.logits) + '</td></tr>');
            });
            tbody.innerHTML = html.join('');
            document.getElementById('count').textContent = out.length > LIMIT
              ? 'showing ' + LIMIT + ' of ' + out.length + ' matching (' + rows.length + ' features)'
              : out.length + ' of ' + rows.length + ' features';
          }
          document.querySelectorAll('#features th[data-key]').forEach(function (th) {
            th.addEventListener('click', function () {
              var k = th.getAttribute('data-key');
              if (k === sortKey) sortDir = -sortDir; else { sortKey = k; sortDir = k === 'f' ? 1 : -1; }
              document.querySelectorAll('#features th').forEach(function (x) { x.classList.remove('sorted', 'asc', 'desc'); });
              th.classList.add('sorted', sortDir > 0 ? 'asc' : 'desc');
              render();
            });
          });
          ['search', 'dmin', 'dmax', 'mmin', 'hidedead'].forEach(function (id) {
            document.getElementById(id).addEventListener('input', render);
          });
          render();
        })();
        """;
}
