#!/usr/bin/env bash
# Installs Debian's chromium (/usr/bin/chromium) and DejaVu fonts when missing: the dashboard tests drive it headless through
# PuppeteerSharp (no browser download is possible, the system browser is used). Idempotent; silent when present.
# Never fatal: without it only the browser tests fail, naming this script.
set -uo pipefail

font=/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf   # the font of the ScottPlot PNGs
[ -x /usr/bin/chromium ] && [ -e "$font" ] && exit 0

warn() { echo "setup-browser: $*" >&2; exit 0; }
[ -r /etc/debian_version ] || warn "/usr/bin/chromium is missing and this is not Debian; install Chromium by hand for the browser tests."
command -v apt-get >/dev/null || warn "/usr/bin/chromium is missing and apt-get is missing."
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || warn "/usr/bin/chromium is missing; run this script as root to install Debian's chromium."
  SUDO=sudo
fi
echo "setup-browser: installing Debian's chromium for the dashboard tests ..." >&2
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq >/dev/null || warn "apt-get update failed"
$SUDO apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null || warn "installing chromium failed"
[ -x /usr/bin/chromium ] || warn "chromium installed but /usr/bin/chromium is missing"
echo "setup-browser: $(/usr/bin/chromium --version 2>/dev/null || echo chromium) installed." >&2
