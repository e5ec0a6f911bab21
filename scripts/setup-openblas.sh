#!/usr/bin/env bash
# Installs the system OpenBLAS (libopenblas.so.0) that SaeSharp's dense ReLU training pass uses for its float32 GEMMs
# where it is faster than libtorch's MKL (AMD CPUs; see SAESHARP_GEMM in README.md). Optional: without it every GEMM runs
# through torch, so this script never fails the set-up. Debian/Ubuntu only; prefers trixie's package when
# setup-native.sh has added the pinned trixie source, else the distribution's. Idempotent; silent when present.
set -uo pipefail

have_openblas() {
  local cache
  cache=$(ldconfig -p 2>/dev/null || /sbin/ldconfig -p 2>/dev/null)
  [[ "$cache" == *libopenblas.so.0* ]]
}
note() { echo "setup-openblas: $*" >&2; }

SOURCES_DIR=${SAESHARP_APT_SOURCES_DIR:-/etc/apt/sources.list.d} # overridden by SetupScriptTests
trixie_source() { ls "$SOURCES_DIR"/saesharp-trixie.* >/dev/null 2>&1; }
# An OpenBLAS already installed (e.g. Debian 12's 0.3.21, pulled in by python3-torch before the trixie source existed)
# is lifted to trixie's where that source is present and its version is newer; otherwise it is left alone.
older_than_trixie() {
  local installed newest
  installed=$(dpkg-query -W -f='${Version}' libopenblas0-pthread 2>/dev/null) || return 1
  newest=$(apt-cache madison libopenblas0-pthread 2>/dev/null | awk -F'|' '/trixie/ {gsub(/ /, "", $2); print $2; exit}')
  [ -n "$installed" ] && [ -n "$newest" ] && dpkg --compare-versions "$installed" lt "$newest"
}
if have_openblas; then
  trixie_source && older_than_trixie || exit 0
fi
command -v apt-get >/dev/null || { note "libopenblas.so.0 not found and apt-get is missing; GEMMs run through torch (install OpenBLAS to use it)."; exit 0; }
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { note "libopenblas.so.0 not found; run as root to install libopenblas0-pthread (GEMMs run through torch meanwhile)."; exit 0; }
  SUDO=sudo
fi
target=()
if trixie_source; then target=(-t trixie); fi
export DEBIAN_FRONTEND=noninteractive
note "installing libopenblas0-pthread ${target[*]} ..."
if ! $SUDO apt-get install -y -qq "${target[@]}" libopenblas0-pthread >/dev/null 2>&1; then
  $SUDO apt-get update -qq >/dev/null 2>&1
  $SUDO apt-get install -y -qq "${target[@]}" libopenblas0-pthread >/dev/null 2>&1 || { note "could not install libopenblas0-pthread; GEMMs run through torch."; exit 0; }
fi
have_openblas && note "libopenblas.so.0 installed." || note "libopenblas0-pthread installed but libopenblas.so.0 is not in the loader cache."
exit 0
