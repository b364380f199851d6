#!/usr/bin/env bash
# System packages the tests need beyond pip: Debian's chromium, which tests/test_app_browser.py
# drives through Playwright (the pip package only; no browser download).
# Idempotent: does nothing when /usr/bin/chromium is there. Where it cannot be installed (no
# apt-get, not root and no sudo, no network), it says so and exits 0: the browser tests then skip
# with that reason and the rest of the suite runs.
#   bash scripts/install-test-deps.sh
set -uo pipefail

if [ -x /usr/bin/chromium ]; then
  echo "install-test-deps: $(/usr/bin/chromium --version 2>/dev/null || echo chromium) already installed"
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "install-test-deps: no apt-get here; install chromium at /usr/bin/chromium by hand (browser tests skip)" >&2
  exit 0
fi
SUDO=""
if [ "$(id -u)" != 0 ]; then
  if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    SUDO="sudo -n"
  else
    echo "install-test-deps: not root and no sudo; cannot apt-get install chromium (browser tests skip)" >&2
    exit 0
  fi
fi
start=$(date +%s)
if $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq \
   && $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null; then
  echo "install-test-deps: installed $(/usr/bin/chromium --version 2>/dev/null) in $(( $(date +%s) - start )) s"
else
  echo "install-test-deps: apt-get install chromium failed (browser tests skip)" >&2
fi
exit 0
