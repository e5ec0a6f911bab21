#!/usr/bin/env bash
# Longer fuzzing of every reader of outside bytes (tests/SaeSharp.Tests/Fuzzing/FuzzTests.cs).
# Usage: scripts/fuzz.sh [ITERATIONS_PER_READER (default 2000)] [SEED]
# The suite runs the same properties with 25 iterations each; docs/fuzzing.md records the longer runs.
set -uo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
export SAESHARP_FUZZ_ITER="${1:-2000}"
[ -n "${2:-}" ] && export SAESHARP_FUZZ_SEED="$2"
exec dotnet test tests/SaeSharp.Tests/SaeSharp.Tests.csproj -c Release -nologo \
  --filter "FullyQualifiedName~SaeSharp.Tests.Fuzzing" --logger "console;verbosity=normal"
