#!/usr/bin/env bash
# Install the headless browser that the web demo's browser test drives: Debian's chromium and
# chromium-driver (/usr/bin/chromium, /usr/bin/chromedriver; both built from one source package, so
# their versions always match). Needs root and apt-get (Debian / Ubuntu). Idempotent: when both programs
# are there it only prints their versions.
#
#   bash tools/setup_browser.sh
#   CHROMIUM=/usr/bin/chromium CHROMEDRIVER=/usr/bin/chromedriver bash tools/setup_browser.sh
set -euo pipefail
CHROMIUM="${CHROMIUM:-/usr/bin/chromium}"
CHROMEDRIVER="${CHROMEDRIVER:-/usr/bin/chromedriver}"

if [ -x "$CHROMIUM" ] && [ -x "$CHROMEDRIVER" ]; then
  echo "[setup_browser] present: $("$CHROMIUM" --version 2>/dev/null) | $("$CHROMEDRIVER" --version 2>/dev/null)"
  exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
  echo "[setup_browser] apt-get not found: install Chromium and its matching chromedriver by hand" \
       "(CHROMIUM=$CHROMIUM, CHROMEDRIVER=$CHROMEDRIVER)" >&2
  exit 1
fi
SUDO=()
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then
    SUDO=(sudo)
  else
    echo "[setup_browser] installing packages needs root (or sudo)" >&2
    exit 1
  fi
fi

echo "[setup_browser] installing chromium and chromium-driver with apt-get"
export DEBIAN_FRONTEND=noninteractive
"${SUDO[@]}" apt-get update -q
"${SUDO[@]}" apt-get install -y -q --no-install-recommends chromium chromium-driver
"$CHROMIUM" --version
"$CHROMEDRIVER" --version
