#!/usr/bin/env bash
# Installs what the arm64 kernel check needs (tests/SaeSharp.Tests/Kernels/ArmCheckTests.cs runs tests/SaeSharp.ArmCheck,
# published for linux-arm64, under qemu user-mode emulation): Debian's qemu-user-static (qemu-aarch64-static) and the
# arm64 C/C++ runtime under /usr/aarch64-linux-gnu (libc6, libgcc-s1, libstdc++6 -arm64-cross), which the .NET runtime
# loads. Idempotent; silent when present. Never fatal: without it only the arm64 check fails, naming this script.
set -uo pipefail

sysroot=/usr/aarch64-linux-gnu/lib
have_qemu() { command -v qemu-aarch64-static >/dev/null || command -v qemu-aarch64 >/dev/null; }
have_qemu && [ -e "$sysroot/ld-linux-aarch64.so.1" ] && [ -e "$sysroot/libstdc++.so.6" ] && [ -e "$sysroot/libgcc_s.so.1" ] && exit 0

warn() { echo "setup-arm64: $*" >&2; exit 0; }
[ -r /etc/debian_version ] || warn "qemu-aarch64 or the arm64 runtime is missing and this is not Debian; install them by hand for the arm64 check."
command -v apt-get >/dev/null || warn "qemu-aarch64 or the arm64 runtime is missing and apt-get is missing."
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || warn "qemu-aarch64 or the arm64 runtime is missing; run this script as root to install them."
  SUDO=sudo
fi
echo "setup-arm64: installing qemu-user-static and the arm64 C runtime for the arm64 kernel check ..." >&2
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq >/dev/null || warn "apt-get update failed"
$SUDO apt-get install -y -qq --no-install-recommends qemu-user-static libc6-arm64-cross libgcc-s1-arm64-cross libstdc++6-arm64-cross \
  >/dev/null || warn "installing qemu-user-static and the arm64 runtime failed"
have_qemu || warn "qemu-user-static installed but qemu-aarch64-static is missing"
echo "setup-arm64: $(qemu-aarch64-static --version 2>/dev/null | head -n1) and $sysroot installed." >&2
