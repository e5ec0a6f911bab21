#!/usr/bin/env bash
# Makes sure the system libstdc++ provides GLIBCXX_3.4.32, which TorchSharp's native
# libLibTorchSharp.so needs. On Debian 12 it adds Debian 13 ("trixie") as an apt source
# pinned at priority 100 (copied from the machine's own Debian source entry, suite changed)
# and installs trixie's libstdc++6. Idempotent; silent when nothing is needed.
set -euo pipefail

# Headless Chromium for the dashboard browser tests (a no-op when /usr/bin/chromium exists; never fatal).
bash "$(dirname "${BASH_SOURCE[0]}")/setup-browser.sh"
# qemu-aarch64 and the arm64 C runtime for the arm64 kernel check (a no-op when present; never fatal).
bash "$(dirname "${BASH_SOURCE[0]}")/setup-arm64.sh"

need=GLIBCXX_3.4.32

has_symbol() {
  local lib
  for lib in /usr/lib/x86_64-linux-gnu/libstdc++.so.6 /usr/lib/aarch64-linux-gnu/libstdc++.so.6 /usr/lib64/libstdc++.so.6 /usr/lib/libstdc++.so.6; do
    if [ -e "$lib" ] && grep -qa "$need" "$lib"; then return 0; fi
  done
  return 1
}

# System OpenBLAS for the dense ReLU GEMMs (optional; never fatal). It runs after the trixie source is added so that a
# fresh Debian 12 gets trixie's 0.3.29 (0.3.21 does not know recent Intel CPUs and runs SSE3 kernels there).
openblas() { bash "$(dirname "${BASH_SOURCE[0]}")/setup-openblas.sh"; }

has_symbol && { openblas; exit 0; }

fail() { echo "setup: $*" >&2; exit 1; }

[ -r /etc/debian_version ] || fail "libstdc++ lacks $need and this is not Debian; install GCC 13+'s libstdc++ by hand."
command -v apt-get >/dev/null || fail "libstdc++ lacks $need and apt-get is missing."
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || fail "libstdc++ lacks $need; run this script as root to install Debian 13's libstdc++6."
  SUDO=sudo
fi

echo "setup: libstdc++ lacks $need; installing Debian 13 (trixie) libstdc++6 ..." >&2
src=/etc/apt/sources.list.d/debian.sources
dst=/etc/apt/sources.list.d/saesharp-trixie.sources
if [ ! -e "$dst" ]; then
  if [ -r "$src" ]; then
    # First stanza of the machine's own deb822 entry (the main archive), suite changed to trixie.
    awk 'BEGIN{RS=""; ORS="\n\n"} NR==1' "$src" \
      | sed -E 's/^Suites:.*/Suites: trixie/' | $SUDO tee "$dst" >/dev/null
  elif [ -r /etc/apt/sources.list ]; then
    line=$(grep -E '^deb[[:space:]]' /etc/apt/sources.list | grep -v security | head -n1)
    [ -n "$line" ] || fail "no Debian apt source found to copy for trixie."
    echo "$line" | awk '{$3="trixie"; print}' | $SUDO tee /etc/apt/sources.list.d/saesharp-trixie.list >/dev/null
  else
    fail "no Debian apt source found to copy for trixie."
  fi
  printf 'Package: *\nPin: release n=trixie\nPin-Priority: 100\n' | $SUDO tee /etc/apt/preferences.d/saesharp-trixie >/dev/null
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq >/dev/null
$SUDO apt-get install -y -qq -t trixie libstdc++6 >/dev/null
has_symbol || fail "installed trixie's libstdc++6 but $need is still missing."
echo "setup: libstdc++ now provides $need." >&2
openblas
