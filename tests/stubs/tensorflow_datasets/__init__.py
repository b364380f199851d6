"""Test-only stand-in for `tensorflow_datasets`.

magenta 2.1.4 imports tensorflow_datasets at module level (`magenta/models/music_vae/data.py`)
but the NoteSequence converters never use it, and the real package drags in a large
dependency tree. `tests/magenta_env.py` puts the folder above this one at the END of
sys.path, so an installed tensorflow_datasets still wins. Anything that touches this
module's attributes fails loudly.
"""


def __getattr__(name):
    raise AttributeError(
        f"tensorflow_datasets.{name}: this is the test stub in tests/stubs "
        "(install the real tensorflow-datasets to use it)"
    )
