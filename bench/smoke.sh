#!/usr/bin/env bash
# Runs every bench sub-command once at a tiny size, to catch a bench that no longer runs (a library change refusing
# what it passes, a moved file) before someone needs its recorded command. Parsing alone is checked by
# BenchCommandLineTests; this runs the code. Figures printed here mean nothing. Usage: bash bench/smoke.sh [SCRATCH_DIR]
# (after dotnet build SaeSharp.sln -c Release). Not run: harvest and features (a pythia-70m-sized model, minutes each).
set -u
cd "$(dirname "$0")/.."
B=bench/SaeSharp.Bench/bin/Release/net10.0/SaeSharp.Bench.dll
[ -f "$B" ] || { echo "build first: dotnet build SaeSharp.sln -c Release" >&2; exit 1; }
D=${1:-$(mktemp -d /tmp/bench-smoke-XXXXXX)}
mkdir -p "$D"
failed=0
run() {
  local start=$SECONDS
  if timeout 300 nice -n 5 dotnet "$B" "$@" > "$D/last.log" 2>&1; then
    printf 'ok   %4ss  %s\n' $((SECONDS - start)) "$*"
  else
    printf 'FAIL %4ss  %s\n' $((SECONDS - start)) "$*"; tail -5 "$D/last.log" | sed 's/^/       /'; failed=$((failed + 1))
  fi
}
run machine
run train --arch topk,standard --steps 1 --d-in 64 --d-sae 512 --batch 256 --k 8
run accuracy --arch topk --steps 2 --d-in 64 --d-sae 512 --features 256 --batch 256 --k 8 --rows 4096
run topk-paths --repeats 1 --rows 256 --d-in 64 --d-sae 1024 --k 8
run int8-products --rounds 1 --rows 256 --d-in 64 --d-sae 1024
run gemm --rounds 1 --d-in 64 --d-sae 512 --batch 256
run sparse --densities 0.01 --repeats 1 --d-in 64 --d-sae 512 --batch 256
run fork-join --calls 200 --gaps 0,100
run relu-run --write "$D/relu" --d-in 64 --features 256 --rows 8192 --eval-rows 1024
run relu-run --activations "$D/relu/train.npy" --eval "$D/relu/eval.npy" --steps 20 --batch 256 --d-sae 256 --report 10
run relu-run --activations "$D/relu/train.npy" --eval "$D/relu/eval.npy" --steps 20 --batch 256 --d-sae 256 --report 10 --arch topk --k 8
run relu-run --crossover --d-in 64 --d-sae 512 --batch 256 --densities 0.01
run recipes --activations "$D/relu/train.npy" --eval "$D/relu/eval.npy" --arch topk,relu --tokens 2048 --batch 256 --d-sae 256 --k 8
run downstream --windows 2 --ctx 16 --batch 2 --repeats 1 --d-model 64
run probe-fit --n 400 --d 2048 --density 0.01
run probe --n 1000 --d 2048 --density 0.01
run score-labels --tokens 2000 --d-sae 1024 --k 8
run fit-l1 --n 2000 --d 64
run lm-memory --shapes 64:2:16:2:1:32 --steps 1
run tensor-lifetime --mode scope --seconds 1 --n 64
echo "$failed failed (logs in $D)"
[ "$failed" -eq 0 ]
