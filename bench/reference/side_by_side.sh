#!/usr/bin/env bash
# Issue #14 §6 side by side, at full instruction set and under the AVX2-only proxy, processes back to back:
# SaeSharp `bench train` (TopK k 32 with `--candidate-pass auto`'s trial printed, ReLU dense), EleutherAI sparsify's own
# step (peer_sparsify_step.py) and dictionary_learning's TopKTrainer/StandardTrainer (peer_step_speed.py), at d_in 512,
# d_sae 8192, batch 4096, 2 threads. Every process's output goes to OUT/NN-<isa>-<what>.log with `uptime` before it.
#
#   bash bench/reference/side_by_side.sh [OUT] [ROUNDS]      (defaults: /tmp/side_by_side, 1)
#
# With LM=DIR (a folder with train.npy and eval.npy, made by `relu-run --write DIR --from CACHE`: BENCHMARKS.md "Whole
# runs side by side") each round also runs the whole 1,000-step ReLU pair: SaeSharp `relu-run` (batch 1,024, d_sae 2,048)
# and dictionary_learning's StandardTrainer (peer_relu_run.py) on those rows, and the TopK pair: `relu-run --arch topk
# --k 32` and sparsify's SparseCoder (peer_sparsify_run.py), each with its held-out FVU.
#
# bench/reference/setup_peers.sh sets all of this up on a fresh machine and prints the command. Needs: a Release build (dotnet build SaeSharp.sln -c Release); /usr/bin/python3 with Debian's python3-torch and
# OpenBLAS 0.3.29 (trixie: see peer_step_speed.py); dictionary_learning at $DL (default /work/ref/dictionary_learning);
# checkouts of sparsify and schedule_free at $SPARSIFY and $SCHEDULEFREE (default /tmp/sparsify, /tmp/schedule_free;
# made from the mirrors with `git archive` when missing). NICE (default 5) is the niceness of every process.
# The AVX2 proxy caps: .NET's JIT (DOTNET_EnableAVX512=0 DOTNET_EnableAVXVNNI=0: SaeSharp's kernels then take the
# avx2 path), MKL (MKL_ENABLE_INSTRUCTIONS=AVX2), oneDNN (ONEDNN_MAX_CPU_ISA=AVX2), ATen (ATEN_CPU_CAPABILITY=avx2),
# OpenBLAS (OPENBLAS_CORETYPE=Haswell: SaeSharp's Blas GEMMs and the peers' BLAS). Each log's first lines show the caps in force and
# the float32 matmul ceiling they give.
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=${1:-/tmp/side_by_side}
ROUNDS=${2:-1}
DL=${DL:-/work/ref/dictionary_learning}
SPARSIFY=${SPARSIFY:-/tmp/sparsify}
SCHEDULEFREE=${SCHEDULEFREE:-/tmp/schedule_free}
NICE=${NICE:-5}
BENCH=bench/SaeSharp.Bench/bin/Release/net10.0/SaeSharp.Bench.dll
mkdir -p "$OUT"
for pair in "$SPARSIFY:EleutherAI+sparsify" "$SCHEDULEFREE:facebookresearch+schedule_free"; do
  dir=${pair%%:*}; mirror=/work/.mirror/${pair#*:}/repo
  if [ ! -d "$dir" ]; then mkdir -p "$dir" && git -C "$mirror" archive HEAD | tar -x -C "$dir"; fi
done
[ -f "$BENCH" ] || { echo "build first: dotnet build SaeSharp.sln -c Release" >&2; exit 1; }

# A machine's environment may preset OpenBLAS (some of these set OPENBLAS_CORETYPE=Haswell and OPENBLAS_L2_SIZE=512):
# the full instruction set runs without them, so that every BLAS detects the CPU itself.
FULL=(-u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE)
AVX2_DOTNET=(DOTNET_EnableAVX512=0 DOTNET_EnableAVXVNNI=0 SAESHARP_KERNELS=avx2 MKL_ENABLE_INSTRUCTIONS=AVX2 ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2 OPENBLAS_CORETYPE=Haswell)
AVX2_PEER=(OPENBLAS_CORETYPE=Haswell ATEN_CPU_CAPABILITY=avx2)
n=0
run() { # isa what command...
  local isa=$1 what=$2; shift 2
  n=$((n + 1))
  local log; log=$(printf '%s/%02d-%s-%s.log' "$OUT" "$n" "$isa" "$what")
  { echo "# $(date -u +%FT%TZ) $(uptime)"; echo "# $*"; } > "$log"
  nice -n "$NICE" env "$@" >> "$log" 2>&1 || echo "# exit $?" >> "$log"
  echo "# $(date -u +%FT%TZ) $(uptime)" >> "$log"
  echo "$log"; grep -E "^(topk|standard|sparsify|dictionary_learning|  topk)|ceiling|peer machine|ISA limits|rows/s|FVU|^eval:" "$log" | sed 's/^/    /'
}
lscpu | grep -E "Model name|^Flags" > "$OUT/lscpu.txt"
for r in $(seq "$ROUNDS"); do
  for isa in full avx2; do
    if [ $isa = full ]; then D=("${FULL[@]}"); P=("${FULL[@]}"); else D=("${AVX2_DOTNET[@]}"); P=("${AVX2_PEER[@]}"); fi
    run $isa saesharp "${D[@]}" X=1 dotnet "$BENCH" train --arch topk,standard --steps 3
    run $isa sparsify "${P[@]}" OMP_WAIT_POLICY=PASSIVE /usr/bin/python3 bench/reference/peer_sparsify_step.py \
      --sparsify "$SPARSIFY" --schedulefree "$SCHEDULEFREE" --steps 3
    run $isa dictionary_learning "${P[@]}" OMP_WAIT_POLICY=PASSIVE /usr/bin/python3 bench/reference/peer_step_speed.py \
      --dl "$DL" --trainer topk,standard --steps 3
    if [ -n "${LM:-}" ]; then
      run $isa relu-run "${D[@]}" X=1 dotnet "$BENCH" relu-run --activations "$LM/train.npy" --eval "$LM/eval.npy" \
        --steps 1000 --batch 1024 --d-sae 2048
      run $isa peer-relu-run "${P[@]}" OMP_WAIT_POLICY=PASSIVE /usr/bin/python3 bench/reference/peer_relu_run.py --dl "$DL" \
        --train "$LM/train.npy" --eval "$LM/eval.npy" --steps 1000 --batch 1024 --dict-size 2048
      run $isa topk-run "${D[@]}" X=1 dotnet "$BENCH" relu-run --activations "$LM/train.npy" --eval "$LM/eval.npy" \
        --steps 1000 --batch 1024 --d-sae 2048 --arch topk --k 32
      run $isa peer-topk-run "${P[@]}" OMP_WAIT_POLICY=PASSIVE /usr/bin/python3 bench/reference/peer_sparsify_run.py \
        --sparsify "$SPARSIFY" --schedulefree "$SCHEDULEFREE" --train "$LM/train.npy" --eval "$LM/eval.npy" --steps 1000 \
        --batch 1024 --dict-size 2048
    fi
  done
done
