#!/usr/bin/env bash
# Sets up everything a fresh machine needs, runs the whole test suite and prints "N passed, N failed".
set -uo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
bash scripts/setup-native.sh || exit 1
results="$root/.build/test-results"
rm -rf "$results"
# The arm64 kernel check, published self-contained for linux-arm64 before the suite (ArmCheckTests runs it under qemu).
# A failed publish leaves no program, and ArmCheckTests fails naming it.
armcheck="$root/.build/armcheck"
rm -rf "$armcheck"
dotnet publish tests/SaeSharp.ArmCheck/SaeSharp.ArmCheck.csproj -c Release -r linux-arm64 --self-contained -nologo -v q -o "$armcheck" >/dev/null \
  || echo "test.sh: dotnet publish of tests/SaeSharp.ArmCheck for linux-arm64 failed" >&2
export SAESHARP_ARMCHECK="$armcheck"
dotnet test tests/SaeSharp.Tests/SaeSharp.Tests.csproj -c Release -nologo \
  --logger "trx;LogFileName=results.trx" --logger "console;verbosity=minimal" --results-directory "$results" "$@"
status=$?
trx="$results/results.trx"
if [ -f "$trx" ]; then
  passed=$(grep -o '<Counters [^>]*' "$trx" | grep -o 'passed="[0-9]*"' | grep -o '[0-9]*')
  failed=$(grep -o '<Counters [^>]*' "$trx" | grep -o 'failed="[0-9]*"' | grep -o '[0-9]*')
  echo "${passed:-0} passed, ${failed:-0} failed"
else
  echo "0 passed, 1 failed"
  [ $status -ne 0 ] || status=1
fi
exit $status
