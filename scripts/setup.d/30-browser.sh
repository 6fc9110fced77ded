#!/usr/bin/env bash
# Headless Chromium for the web page's end-to-end test (tests/test_serve_browser.py).
# Debian's `chromium` package, driven by Playwright for Python (pinned in the dev extra) through
# executable_path=/usr/bin/chromium; `playwright install` is never used (no browser downloads).
# Runs as root on a fresh machine; idempotent and fast when Chromium is already there.
set -euo pipefail

if command -v chromium >/dev/null 2>&1 || [ -x /usr/bin/chromium ]; then
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "30-browser: apt-get not found; install Chromium at /usr/bin/chromium by hand" >&2
  exit 1
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  SUDO="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
# Refresh the package lists only when apt does not know the package yet.
if ! apt-cache show chromium >/dev/null 2>&1; then
  $SUDO apt-get update -q
fi
$SUDO apt-get install -y -q --no-install-recommends chromium fonts-dejavu-core >/dev/null
echo "30-browser: installed $(/usr/bin/chromium --version 2>/dev/null || echo chromium)"
