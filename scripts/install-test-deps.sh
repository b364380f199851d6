#!/usr/bin/env bash
# System packages the tests need beyond pip, from Debian:
# - chromium, which tests/test_app_browser.py drives through Playwright (the pip package only;
#   no browser download);
# - fluidsynth, libfluidsynth3 and fluid-soundfont-gm: the FluidSynth audio backend and its
#   General MIDI soundfont (/usr/share/sounds/sf2/FluidR3_GM.sf2), the Space's audio path
#   (packages.txt), which tests/test_audio.py renders with.
# Idempotent: installs only what is missing, and does nothing when all of it is there. Where it
# cannot install (no apt-get, not root and no sudo, no network), it says what is missing and
# exits 1, so CI (.ci/run) fails instead of skipping the browser and audio tiers; run by hand,
# the tests that need the missing part skip with that reason and the rest of the suite runs.
#   bash scripts/install-test-deps.sh
set -uo pipefail

have_libfluidsynth() {
  ldconfig -p 2>/dev/null | grep -q 'libfluidsynth\.so'
}

find_missing() {
  missing=()
  [ -x /usr/bin/chromium ] || missing+=(chromium)
  command -v fluidsynth >/dev/null 2>&1 || missing+=(fluidsynth)
  have_libfluidsynth || missing+=(libfluidsynth3)
  [ -f /usr/share/sounds/sf2/FluidR3_GM.sf2 ] || missing+=(fluid-soundfont-gm)
}

find_missing

if [ ${#missing[@]} -eq 0 ]; then
  echo "install-test-deps: $(/usr/bin/chromium --version 2>/dev/null || echo chromium), fluidsynth" \
       "and fluid-soundfont-gm already installed"
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "install-test-deps: no apt-get here; install ${missing[*]} by hand (their tests skip)" >&2
  exit 1
fi
SUDO=""
if [ "$(id -u)" != 0 ]; then
  if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    SUDO="sudo -n"
  else
    echo "install-test-deps: not root and no sudo; cannot apt-get install ${missing[*]} (their tests skip)" >&2
    exit 1
  fi
fi
start=$(date +%s)
wanted=("${missing[@]}")
if ! { $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq \
       && $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${wanted[@]}" >/dev/null; }; then
  echo "install-test-deps: apt-get install ${wanted[*]} failed (their tests skip)" >&2
  exit 1
fi
find_missing  # installed is not enough: each part must now be where the tests look
if [ ${#missing[@]} -ne 0 ]; then
  echo "install-test-deps: apt-get installed ${wanted[*]} but ${missing[*]} is still not found (their tests skip)" >&2
  exit 1
fi
echo "install-test-deps: installed ${wanted[*]} in $(( $(date +%s) - start )) s"
