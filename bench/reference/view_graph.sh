#!/usr/bin/env bash
# Opens graphs written by `sae graph` in circuit-tracer's own local viewer (circuit_tracer/frontend/assets), rendered by
# headless Chromium: a screenshot per graph and a count of the nodes and links the viewer drew.
#
#   bench/reference/view_graph.sh CIRCUIT_TRACER GRAPH_DIR [OUT_PREFIX] [SLUG...]
#
# CIRCUIT_TRACER: a circuit-tracer checkout, or its bare git directory (the assets are taken from HEAD).
# GRAPH_DIR: the folder `sae graph --out` wrote into (graph-metadata.json and SLUG.json files).
# OUT_PREFIX: where the screenshots go (default /tmp/graphview_): OUT_PREFIX<slug>.png (the target logit clicked),
# OUT_PREFIX<slug>.pinned.png (a subgraph pinned) and OUT_PREFIX<slug>.dom.html.
# SLUG...: the graphs to open (default: every graph in graph-metadata.json).
#
# The viewer's index.html loads d3, d3-jetpack and dagre from web hosts; this script installs them from the npm registry
# (d3 7, d3-collection 1.0.7, d3-jetpack 2.3.0, dagre 0.8.5) into a scratch folder and points index.html at them, then serves the
# assets as circuit-tracer's frontend/local_server.py does (/data/ and /graph_data/ map to GRAPH_DIR) with python3.
# Nothing of the viewer is copied into the repository. Needs: git or the checkout, npm, python3, chromium.
set -euo pipefail
ct="${1:?circuit-tracer checkout or bare git directory}"
graphs="$(cd "${2:?folder with graph-metadata.json}" && pwd)"
out="${3:-/tmp/graphview_}"
shift $(( $# < 3 ? $# : 3 ))
[ -f "$graphs/graph-metadata.json" ] || { echo "view_graph: $graphs has no graph-metadata.json (sae graph --out writes it)" >&2; exit 2; }
work="$(mktemp -d /tmp/view_graph.XXXXXX)"
trap 'kill "${server:-0}" 2>/dev/null || true; rm -rf "$work"' EXIT

# 1. The viewer's assets.
if [ -d "$ct/circuit_tracer/frontend/assets" ]; then
  cp -r "$ct/circuit_tracer/frontend/assets" "$work/site"
else
  git -C "$ct" archive HEAD circuit_tracer/frontend/assets | tar -x -C "$work"
  mv "$work/circuit_tracer/frontend/assets" "$work/site"
fi

# 2. Its JavaScript libraries, from npm (cached between runs).
libs="${VIEW_GRAPH_LIBS:-/tmp/view_graph_libs}"
if [ ! -f "$libs/node_modules/dagre/dist/dagre.js" ]; then
  mkdir -p "$libs"
  (cd "$libs" && npm init -y >/dev/null && npm install --no-audit --no-fund d3@7 d3-collection@1.0.7 d3-jetpack@2.3.0 dagre@0.8.5 >/dev/null)
fi
mkdir -p "$work/site/lib"
# d3 7 with d3-collection (jetpack's nest), then jetpack's CommonJS build run against it (its browser builds patch a second copy of d3-selection, or none).
{ cat "$libs/node_modules/d3/dist/d3.js" "$libs/node_modules/d3-collection/dist/d3-collection.js"
  echo '(function () { var module = {exports: {}}, exports = module.exports, require = function () { return window.d3 };'
  cat "$libs/node_modules/d3-jetpack/build/d3-jetpack.cjs"
  echo '; for (var k in module.exports) if (!(k in window.d3)) window.d3[k] = module.exports[k] })();'
  # what the viewer's jetpack build (2024-07-20) has beyond 2.3.0: c.drawAxis(svg) and d3.clamp
  cat <<'JS'
(function () {
  var conventions = d3.conventions;
  d3.conventions = function (c) {
    c = conventions(c);
    c.drawAxis = function (svg) { var own = c.svg; c.svg = svg || own; d3.drawAxis(c); c.svg = own; };
    return c;
  };
  d3.clamp = d3.clamp || function (min, v, max) { return Math.max(min, Math.min(max, v)); };
})();
JS
} > "$work/site/lib/d3.js"
cp "$libs/node_modules/dagre/dist/dagre.js" "$work/site/lib/dagre.js"
echo "window.npyjs = window.npyjs || {parse() { throw 'npy files are not served here' }}" > "$work/site/lib/npy.js"
python3 - "$work/site/index.html" <<'EOF'
import re, sys
path = sys.argv[1]
html = open(path, encoding="utf-8").read()
def local(m):
    src = m.group(1)
    name = src.rsplit("/", 1)[-1]
    if "hotserver" in name or "jetpack" in name: return ""          # dev reload client; jetpack is in lib/d3.js
    if name == "d3.js": return "<script src='./lib/d3.js'></script>"
    if name.startswith("npy"): return "<script src='./lib/npy.js'></script>"
    if "dagre" in name: return "<script src='./lib/dagre.js'></script>"
    return m.group(0)
html = re.sub(r"<script src='(https?://[^']+)'></script>", local, html)
open(path, "w", encoding="utf-8").write(html)
EOF

# 3. Serve as circuit-tracer's local_server.py: /data/X and /graph_data/X are GRAPH_DIR/X, the rest the assets.
port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
cat > "$work/serve.py" <<'EOF'
import functools, http.server, os, socketserver, sys
site, data, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
class Handler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args): pass
    def do_GET(self):
        for prefix in ("/data/", "/graph_data/"):
            if self.path.startswith(prefix):
                local = os.path.join(data, self.path[len(prefix):].split("?")[0])
                if not os.path.exists(local):
                    self.send_response(404); self.end_headers(); return
                body = open(local, "rb").read()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers(); self.wfile.write(body); return
        super().do_GET()
socketserver.TCPServer.allow_reuse_address = True
with socketserver.TCPServer(("127.0.0.1", port), functools.partial(Handler, directory=site)) as httpd:
    httpd.serve_forever()
EOF
python3 "$work/serve.py" "$work/site" "$graphs" "$port" &
server=$!
for _ in $(seq 50); do python3 -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$port/data/graph-metadata.json')" 2>/dev/null && break; sleep 0.2; done

# 4. Render each graph; count what the viewer drew.
if [ $# -eq 0 ]; then
  mapfile -t slugs < <(python3 -c 'import json, sys; [print(g["slug"]) for g in json.load(open(sys.argv[1]))["graphs"]]' "$graphs/graph-metadata.json")
else
  slugs=("$@")
fi
status=0
for slug in "${slugs[@]}"; do
  # the viewer selects no node by itself; click the target logit (is_target_logit) so its incoming links are drawn
  clicked="$(python3 -c 'import json, sys; print(next((n["node_id"] for n in json.load(open(sys.argv[1]))["nodes"] if n.get("is_target_logit")), ""))' "$graphs/$slug.json")"
  url="http://127.0.0.1:$port/index.html?slug=$slug&clickedId=$clicked"
  flags=(--headless --no-sandbox --disable-gpu --hide-scrollbars --window-size=1600,1000 --virtual-time-budget=15000
         --user-data-dir="$work/profile")
  chromium "${flags[@]}" --screenshot="${out}${slug}.png" "$url" >/dev/null 2>&1
  # and the subgraph: the target logit and its five strongest sources pinned, the strongest feature clicked
  pinned="$(python3 - "$graphs/$slug.json" <<'EOF2'
import json, sys
g = json.load(open(sys.argv[1]))
kind = {n["node_id"]: n["feature_type"] for n in g["nodes"]}
target = next((n["node_id"] for n in g["nodes"] if n.get("is_target_logit")), "")
into = sorted((l for l in g["links"] if l["target"] == target), key=lambda l: -abs(l["weight"]))[:5]
feature = next((l["source"] for l in into if kind[l["source"]] == "cross layer transcoder"), target)
print(",".join([target] + [l["source"] for l in into]) + " " + feature)
EOF2
)"
  chromium "${flags[@]}" --screenshot="${out}${slug}.pinned.png" \
    "http://127.0.0.1:$port/index.html?slug=$slug&pinnedIds=${pinned% *}&clickedId=${pinned#* }" >/dev/null 2>&1
  chromium "${flags[@]}" --dump-dom "$url" > "${out}${slug}.dom.html" 2>/dev/null
  read -r nodes links < <(python3 - "${out}${slug}.dom.html" <<'EOF'
import re, sys
dom = open(sys.argv[1], encoding="utf-8").read()
# the link graph draws one <text> per node label and one path per link in its SVG layers; count node circles/rects
nodes = len(re.findall(r'class="node[ "]', dom))
links = len(re.findall(r'<path[^>]*class="link', dom)) or len(re.findall(r'<path', dom))
print(nodes, links)
EOF
)
  echo "$slug: ${out}${slug}.png (DOM: $nodes node elements, $links paths)"
  [ "$nodes" -gt 0 ] || status=1
done
exit $status
