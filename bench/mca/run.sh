#!/usr/bin/env bash
# Cycles per iteration and products per cycle of the llvm-mca inputs in this folder, per CPU model (BENCHMARKS.md,
# "llvm-mca: the int8 candidate pass on a modelled Zen 2"). llvm-mca is a model of the scheduler, not the CPU.
# Usage: bash bench/mca/run.sh [cpu ...]   (default: znver2 znver3 skylake)
set -euo pipefail
cd "$(dirname "$0")"
cpus=("${@:-znver2 znver3 skylake}")
read -r -a cpus <<< "${cpus[*]}"
# file: products per iteration
declare -A products=(
  [fp32_fma_6x16.s]=384 [int8_avx2_tile.s]=320 [int8_avx2_tileshift.s]=512 [int8_avx2_tileshift_disp.s]=512
  [int8_pair_pmaddwd_5x16.s]=640 [int8_pair_shift_2x16.s]=256 [int8_pair_shift_3x16.s]=384 [int8_single_shift_3x16.s]=192
)
printf '%-28s' file; for c in "${cpus[@]}"; do printf '%26s' "$c cyc/it (prod/cyc)"; done; echo
for f in fp32_fma_6x16.s int8_avx2_tile.s int8_avx2_tileshift.s int8_avx2_tileshift_disp.s int8_pair_pmaddwd_5x16.s int8_pair_shift_2x16.s int8_pair_shift_3x16.s int8_single_shift_3x16.s; do
  printf '%-28s' "$f"
  for c in "${cpus[@]}"; do
    cyc=$(llvm-mca -mtriple=x86_64 -mcpu="$c" -iterations=1000 "$f" 2>/dev/null | awk '/Total Cycles/{print $3}')
    printf '%26s' "$(awk -v c="$cyc" -v p="${products[$f]}" 'BEGIN{printf "%.2f (%.1f)", c/1000, p*1000/c}')"
  done
  echo
done
