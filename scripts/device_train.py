"""Run `symdiff train ...` on a lent GPU machine (`scripts/device_train.sh`), whose image has no
MIDI libraries (pretty_midi, mido) and cannot install them. Training reads only the
corpus' token arrays and the latent cache, never MIDI, so those imports get placeholders that
fail loudly if anything calls them. Not part of the package; the model card records its use."""
import sys
import types


class _Absent(types.ModuleType):
    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        return _Absent(f"{self.__name__}.{name}")

    def __call__(self, *a, **k):
        raise RuntimeError(f"{self.__name__} is not installed on this machine")


for name in ("fluidsynth", "pretty_midi", "pretty_midi.pretty_midi", "mido",
             "mido.midifiles", "mido.midifiles.meta"):
    sys.modules[name] = _Absent(name)

sys.path.insert(0, ".")
from symdiff.cli import main  # noqa: E402

sys.argv = ["symdiff", *sys.argv[1:]]
main()
