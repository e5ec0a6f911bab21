#!/usr/bin/env bash
# Longer fuzzing of every reader of outside bytes (tests/SaeSharp.Tests/Fuzzing/FuzzTests.cs).
# Usage: scripts/fuzz.sh [ITERATIONS_PER_READER (default 2000) | SECONDSs per reader, e.g. 60s] [SEED] [PROPERTIES]
# PROPERTIES: comma-separated fragments of property names (e.g. Clt_,Feature_folders); default all.
# The suite runs the same properties with 25 iterations each; docs/fuzzing.md records the longer runs.
# On a shared machine run it under nice and give a time per reader: nice -n 15 scripts/fuzz.sh 60s
# It prints, per reader, the iterations run and the seconds taken (a failure prints the seed and the shrunk input).
set -uo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
arg="${1:-2000}"
if [[ "$arg" == *s ]]; then
  export SAESHARP_FUZZ_SECONDS="${arg%s}"
else
  export SAESHARP_FUZZ_ITER="$arg"
fi
[ -n "${2:-}" ] && export SAESHARP_FUZZ_SEED="$2"
filter="FullyQualifiedName~SaeSharp.Tests.Fuzzing"
if [ -n "${3:-}" ]; then
  filter=""
  IFS=',' read -ra names <<< "$3"
  for n in "${names[@]}"; do filter="${filter:+$filter|}FullyQualifiedName~SaeSharp.Tests.Fuzzing.FuzzTests.$n"; done
fi
report="$(mktemp)"
export SAESHARP_FUZZ_REPORT="$report"
dotnet test tests/SaeSharp.Tests/SaeSharp.Tests.csproj -c Release -nologo \
  --filter "$filter" --logger "console;verbosity=normal"
status=$?
echo "reader	iterations	seconds"
sort "$report"
awk -F'\t' '{ n += $2 } END { print "total\t" n }' "$report"
rm -f "$report"
exit $status
