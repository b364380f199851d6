#!/usr/bin/env bash
# Install Magenta 2.1.4 (MusicVAE's reference data code) for the parity tests.
# Idempotent: does nothing when the pinned versions are already importable.
#   bash scripts/install-magenta.sh            # uses $PYTHON, else python (then python3)
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-$(command -v python || command -v python3)}
MAGENTA_VERSION=2.1.4

installed() {
  "$PYTHON" - "$MAGENTA_VERSION" <<'PY'
import sys
from importlib.metadata import version, PackageNotFoundError
want = {"magenta": sys.argv[1], "tensorflow": "2.21.0", "tf-keras": "2.21.0",
        "tensorflow-probability": "0.25.0", "tf-slim": "1.1.0"}
try:
    ok = all(version(name) == v for name, v in want.items())
except PackageNotFoundError:
    ok = False
sys.exit(0 if ok else 1)
PY
}

if installed; then
  echo "install-magenta: magenta $MAGENTA_VERSION and TensorFlow already installed"
else
  start=$(date +%s)
  "$PYTHON" -m pip install --disable-pip-version-check -q -r requirements-magenta.txt
  # magenta's own requirements pin versions that do not exist for Python 3.11.
  "$PYTHON" -m pip install --disable-pip-version-check -q --no-deps "magenta==$MAGENTA_VERSION"
  echo "install-magenta: installed in $(( $(date +%s) - start )) s"
fi

# The stack must still import together (numpy/protobuf as TensorFlow left them).
TF_USE_LEGACY_KERAS=1 TF_CPP_MIN_LOG_LEVEL=2 PYTHONPATH="tests/stubs${PYTHONPATH:+:$PYTHONPATH}" \
  "$PYTHON" -W ignore -c "
import note_seq, torch, numpy, google.protobuf
import magenta.models.music_vae.data
from magenta.models.music_vae import configs
print('install-magenta: ok: torch', torch.__version__, '| numpy', numpy.__version__,
      '| protobuf', google.protobuf.__version__, '| note-seq', note_seq.__version__)
"
