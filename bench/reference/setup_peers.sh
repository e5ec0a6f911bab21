#!/usr/bin/env bash
# Everything side_by_side.sh needs on a fresh machine of this project's kind, in one command, so that a new CPU kind
# (issue #14: an AVX2-only AMD Zen 2 has never been measured) gets its side-by-side round without hand set-up:
#   - Debian's python3-torch and python3-einops (the peers run on /usr/bin/python3);
#   - the system OpenBLAS (scripts/setup-openblas.sh: trixie's 0.3.29 where setup-native.sh added trixie);
#   - dictionary_learning, sparsify and schedule_free extracted from their git mirrors (MIRRORS, default /work/.mirror,
#     folders owner+name/repo as the `fetch` tool writes them; fetch github:saprmarks/dictionary_learning,
#     github:EleutherAI/sparsify and github:facebookresearch/schedule_free first);
#   - the built-in model's activation rows for the whole-run pairs (LM, default /tmp/side_by_side_lm: ./sae corpus, sae
#     cache and `bench relu-run --write`, as BENCHMARKS.md "Whole runs side by side").
# Idempotent: what is present is left alone. Then it prints the side_by_side.sh command.
#
#   bash bench/reference/setup_peers.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
MIRRORS=${MIRRORS:-/work/.mirror}
DL=${DL:-/work/ref/dictionary_learning}
SPARSIFY=${SPARSIFY:-/tmp/sparsify}
SCHEDULEFREE=${SCHEDULEFREE:-/tmp/schedule_free}
LM=${LM:-/tmp/side_by_side_lm}
note() { echo "setup_peers: $*" >&2; }
SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo

bash scripts/setup-native.sh
if ! /usr/bin/python3 -c "import torch, einops" 2>/dev/null; then
  note "installing python3-torch python3-einops ..."
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq >/dev/null
  $SUDO apt-get install -y -qq python3-torch python3-einops >/dev/null
fi
bash scripts/setup-openblas.sh

for pair in "$DL:saprmarks+dictionary_learning" "$SPARSIFY:EleutherAI+sparsify" "$SCHEDULEFREE:facebookresearch+schedule_free"; do
  dir=${pair%%:*}; mirror=$MIRRORS/${pair#*:}/repo
  [ -d "$dir" ] && continue
  [ -d "$mirror" ] || { note "no mirror at $mirror: fetch github:${pair#*:} (owner/name) first"; exit 1; }
  mkdir -p "$dir" && git -C "$mirror" archive HEAD | tar -x -C "$dir"
  note "extracted $dir"
done

BENCH=bench/SaeSharp.Bench/bin/Release/net10.0/SaeSharp.Bench.dll
[ -f "$BENCH" ] || dotnet build SaeSharp.sln -c Release -v q
if [ ! -f "$LM/train.npy" ]; then
  mkdir -p "$LM"
  ./sae corpus --out "$LM/train.jsonl" --docs 20000 --seed 2
  ./sae cache --model builtin --hook blocks.1.hook_resid_post --dataset "$LM/train.jsonl" --tokens 1100000 --out "$LM/cache"
  dotnet "$BENCH" relu-run --write "$LM" --from "$LM/cache"
fi

lscpu | grep -E "Model name|CPU family|^Model:|Flags" | cut -c1-160
echo "ready: LM=$LM DL=$DL SPARSIFY=$SPARSIFY SCHEDULEFREE=$SCHEDULEFREE bash bench/reference/side_by_side.sh /tmp/side_by_side 2"
