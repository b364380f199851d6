"""Render melodies (tokens or scores) to audio, offline, with one of two backends.

- "fluidsynth": FluidSynth through pyfluidsynth (`import fluidsynth`), usable when the system
  library libfluidsynth is present (Debian: `apt-get install fluidsynth`, the Space's
  packages.txt). It plays a General MIDI soundfont found on the system (Debian's
  fluid-soundfont-gm, /usr/share/sounds/sf2/FluidR3_GM.sf2), else TimGM6mb.sf2, the small GM
  soundfont inside the pretty_midi package. The notes are fed to one synthesizer event by
  event: pretty_midi's own `fluidsynth()` loads the soundfont again for every instrument and
  took 7.5 s for a 32-bar melody with FluidR3 where this takes 0.4 s.
- "sine": a small additive synthesizer in numpy (a few partials under a piano-like envelope),
  always there: what a plain `pip install -r requirements.txt` without the system library gives.
  pretty_midi's `synthesize()` plays bare sine waves that click at every note.

`backend="auto"` takes the first available in that order. `SYMDIFF_SOUNDFONT=/path/x.sf2`
overrides the soundfont.

Bounded work: a render lasts at most `max_seconds` (MAX_SECONDS by default; notes are cut
there), and `playback_qpm` brings a file's tempo into PLAYBACK_QPM, so that a valid 64-bar file
at MIDI's slowest tempo (3.58 qpm, 71 minutes) cannot make a 189 MB WAV.

The output is mono float32 in [-1, 1], its peak normalised to `peak`; it starts at time 0 of
the melody (a leading rest stays) and ends at the end of the last note plus the sound's release,
at most `release` seconds, with a short fade where that cuts a tail. A melody without notes
renders to silence of the melody's length.
"""
from __future__ import annotations

import functools
import importlib.util
import io
import os
import wave
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np

from .atomic import write_bytes
from .errors import SymdiffError
from .melody import DEFAULT_QPM, tokens_to_score
from .notes import Note, Score

BACKENDS = ("fluidsynth", "sine")
SYSTEM_SOUNDFONTS = (
    "/usr/share/sounds/sf2/FluidR3_GM.sf2",  # Debian/Ubuntu fluid-soundfont-gm
    "/usr/share/soundfonts/FluidR3_GM.sf2",  # Arch, Fedora
    "/usr/share/sounds/sf2/default-GM.sf2",
    "/usr/share/soundfonts/default.sf2",
)
SOUNDFONT_ENV = "SYMDIFF_SOUNDFONT"
DEFAULT_SAMPLE_RATE = 22050
DEFAULT_RELEASE = 0.5  # seconds of tail kept after the last note ends, at most
DEFAULT_PEAK = 0.89  # -1 dBFS
TAIL_THRESHOLD_DB = -50.0  # a tail quieter than this (relative to the peak) is cut
FADE_SECONDS = 0.05
PLAYBACK_QPM = (40.0, 300.0)  # tempos outside are played at the nearest end
MAX_SECONDS = 420.0  # 64 bars at 40 qpm (384 s) and a release fit
DRUM_CHANNEL = 9


class AudioError(SymdiffError):
    """A backend that cannot render (missing library or soundfont, bad input)."""


# --- what is available --------------------------------------------------------------------

def bundled_soundfont() -> Path | None:
    """pretty_midi's TimGM6mb.sf2 (a 6 MB General MIDI soundfont), if pretty_midi is installed."""
    spec = importlib.util.find_spec("pretty_midi")
    if spec is None or not spec.origin:
        return None
    path = Path(spec.origin).parent / "TimGM6mb.sf2"
    return path if path.is_file() else None


def system_soundfont() -> Path | None:
    """A General MIDI soundfont installed on the system (or named by $SYMDIFF_SOUNDFONT)."""
    env = os.environ.get(SOUNDFONT_ENV)
    if env and Path(env).is_file():
        return Path(env)
    for p in SYSTEM_SOUNDFONTS:
        if Path(p).is_file():
            return Path(p)
    return None


def soundfont() -> Path | None:
    """The soundfont FluidSynth plays: $SYMDIFF_SOUNDFONT, else the system's (FluidR3_GM, better
    and 148 MB), else pretty_midi's bundled one."""
    return system_soundfont() or bundled_soundfont()


def _fluidsynth():
    """The pyfluidsynth module, or None when it or the libfluidsynth it loads is missing."""
    try:
        import fluidsynth  # pyfluidsynth raises ImportError when libfluidsynth is absent
    except (ImportError, OSError):
        return None
    synth = getattr(fluidsynth, "Synth", None)
    return fluidsynth if synth is not None and hasattr(synth, "get_samples") else None


def backend_problem(backend: str) -> str | None:
    """Why a backend cannot render here, or None when it can."""
    if backend == "sine":
        return None
    if backend == "fluidsynth":
        if _fluidsynth() is None:
            return ("FluidSynth is unavailable: needs `pip install pyfluidsynth` and the system "
                    "library (apt-get install fluidsynth)")
    else:
        return f"unknown audio backend {backend!r}; choose from {', '.join(BACKENDS)} or 'auto'"
    if soundfont() is None:
        return f"{backend}: no soundfont found (install pretty_midi, or set ${SOUNDFONT_ENV})"
    return None


def available_backends() -> list[str]:
    """Backends that can render here, best first ("sine" is always last and always there)."""
    return [b for b in BACKENDS if backend_problem(b) is None]


def resolve_backend(backend: str = "auto") -> str:
    if backend == "auto":
        return available_backends()[0]
    problem = backend_problem(backend)
    if problem:
        raise AudioError(problem)
    return backend


# --- notes ------------------------------------------------------------------------------

def playback_qpm(qpm: float) -> float:
    """The tempo a melody is played at: its own, brought into PLAYBACK_QPM."""
    return min(max(float(qpm), PLAYBACK_QPM[0]), PLAYBACK_QPM[1])


def _notes(source, qpm: float, program: int, velocity: int, max_seconds: float) -> tuple[list[Note], float]:
    """Notes in seconds and the total duration, from tokens or a Score, cut at `max_seconds`."""
    # a Score keeps its own times, programs and velocities
    score = source if isinstance(source, Score) else tokens_to_score(np.asarray(source), qpm, program, velocity)
    notes = [replace(n, end=min(n.end, max_seconds))
             for n in score.notes if n.end > n.start and n.start < max_seconds and 0 <= n.pitch <= 127]
    total = min(max([score.total_time] + [n.end for n in notes]), max_seconds)
    return sorted(notes, key=lambda n: (n.start, n.pitch)), total


def _channels(notes: Sequence[Note]) -> dict[tuple[int, bool], int]:
    """MIDI channel per (program, is_drum): drums on channel 10 (index 9), programs on the rest."""
    free = [c for c in range(16) if c != DRUM_CHANNEL]
    out: dict[tuple[int, bool], int] = {}
    for n in notes:
        key = (0, True) if n.is_drum else (n.program, False)
        if key not in out:
            out[key] = DRUM_CHANNEL if n.is_drum else free[len([k for k in out if not k[1]]) % 15]
    return out


# --- event-driven soundfont rendering -----------------------------------------------------

class _FluidSynth:
    """One FluidSynth synthesizer with one soundfont loaded, rendering mono float frames."""

    def __init__(self, sample_rate: int, path: Path):
        fluidsynth = _fluidsynth()
        self.synth = fluidsynth.Synth(gain=0.5, samplerate=float(sample_rate))
        self.sfid = self.synth.sfload(str(path))
        if self.sfid == -1:
            self.synth.delete()
            raise AudioError(f"FluidSynth could not load the soundfont {path}")

    def program(self, chan: int, program: int, is_drum: bool) -> None:
        self.synth.program_select(chan, self.sfid, 128 if is_drum else 0, 0 if is_drum else program)

    def noteon(self, chan: int, key: int, velocity: int) -> None:
        self.synth.noteon(chan, key, velocity)

    def noteoff(self, chan: int, key: int) -> None:
        self.synth.noteoff(chan, key)

    def generate(self, frames: int) -> np.ndarray:
        s16 = np.asarray(self.synth.get_samples(frames), dtype=np.float32)  # interleaved stereo
        return s16.reshape(-1, 2).mean(axis=1) / 32768.0

    def close(self) -> None:
        self.synth.delete()


def _render_events(synth: _FluidSynth, notes: Sequence[Note], sample_rate: int, frames: int) -> np.ndarray:
    """Play the notes through a synthesizer, rendering the frames between events."""
    channels = _channels(notes)
    for (program, is_drum), chan in channels.items():
        synth.program(chan, program, is_drum)
    events = []  # (frame, order, kind, channel, pitch, velocity); offs before ons at one frame
    for n in notes:
        chan = channels[(0, True) if n.is_drum else (n.program, False)]
        events.append((round(n.start * sample_rate), 1, "on", chan, n.pitch, n.velocity))
        events.append((round(n.end * sample_rate), 0, "off", chan, n.pitch, 0))
    events.sort(key=lambda e: e[:2])
    out = np.zeros(frames, dtype=np.float32)
    pos = 0
    for frame, _, kind, chan, pitch, vel in events:
        frame = min(frame, frames)
        if frame > pos:
            out[pos:frame] = synth.generate(frame - pos)
            pos = frame
        if kind == "on":
            synth.noteon(chan, pitch, vel)
        else:
            synth.noteoff(chan, pitch)
    if frames > pos:
        out[pos:] = synth.generate(frames - pos)
    return out


def _render_fluidsynth(notes: Sequence[Note], sample_rate: int, frames: int, path: str | Path | None) -> np.ndarray:
    path = path or soundfont()
    if path is None:  # resolve_backend found one; it can have gone since
        raise AudioError(f"fluidsynth: no soundfont found (install pretty_midi, or set ${SOUNDFONT_ENV})")
    synth = _FluidSynth(sample_rate, Path(path))
    try:
        return _render_events(synth, notes, sample_rate, frames)
    finally:
        synth.close()


# --- the numpy fallback -------------------------------------------------------------------

HARMONICS = np.array([1.0, 0.45, 0.22, 0.12, 0.06])
SINE_ATTACK = 0.005  # seconds
SINE_DECAY = 0.9  # time constant of the piano-like decay while a key is held
SINE_RELEASE = 0.08  # time constant after the key is released


WAVETABLE_SIZE = 4096


@functools.cache
def _wavetable(harmonics: int) -> np.ndarray:
    """One period of the tone with its first `harmonics` partials (fewer for high notes,
    so that nothing lies above Nyquist)."""
    x = 2 * np.pi * np.arange(WAVETABLE_SIZE) / WAVETABLE_SIZE
    return sum(a * np.sin(k * x) for k, a in enumerate(HARMONICS[: max(1, harmonics)], start=1))


def _render_sine(notes: Sequence[Note], sample_rate: int, frames: int) -> np.ndarray:
    """A plucked/piano-like additive tone per note (drums: a short noise burst)."""
    out = np.zeros(frames, dtype=np.float64)
    rng = np.random.default_rng(0)
    tail = int(6 * SINE_RELEASE * sample_rate)
    for n in notes:
        s = round(n.start * sample_rate)
        held = max(1, round(n.end * sample_rate) - s)
        e = min(frames, s + held + tail)
        if s >= e:
            continue
        t = np.arange(e - s) / sample_rate
        env = np.minimum(1.0, t / SINE_ATTACK) * np.exp(-t / SINE_DECAY)
        if held < len(t):  # key released: a fast exponential release from where it was
            env[held:] = env[held - 1] * np.exp(-(t[held:] - t[held - 1]) / SINE_RELEASE)
        if n.is_drum:
            tone = rng.standard_normal(len(t)) * np.exp(-t / 0.05)
        else:
            f0 = 440.0 * 2.0 ** ((n.pitch - 69) / 12.0)
            table = _wavetable(min(len(HARMONICS), int(0.45 * sample_rate / f0)))
            phase = (np.arange(e - s) * (f0 * WAVETABLE_SIZE / sample_rate)) % WAVETABLE_SIZE
            tone = table[phase.astype(np.int64)]
        out[s:e] += (n.velocity / 127.0) * env * tone
    return out.astype(np.float32)


# --- public API ---------------------------------------------------------------------------

def render(
    source,
    qpm: float = DEFAULT_QPM,
    sample_rate: int = DEFAULT_SAMPLE_RATE,
    program: int = 0,
    backend: str = "auto",
    *,
    soundfont: str | Path | None = None,
    velocity: int = 100,
    release: float = DEFAULT_RELEASE,
    peak: float = DEFAULT_PEAK,
    max_seconds: float = MAX_SECONDS,
) -> tuple[int, np.ndarray]:
    """Tokens (1-D, the melody grid) or a Score -> (sample_rate, mono float32 audio).

    Tokens are played at `qpm` with GM `program` and `velocity`; a Score keeps its own
    times, programs and velocities. The audio is peak-normalised to `peak` and ends at most
    `release` seconds after the last note ends; a melody without notes gives silence of its
    length; nothing after `max_seconds` is played. `backend`: "auto" (the best available),
    "fluidsynth" or "sine".
    """
    sample_rate = int(sample_rate)
    if not 8000 <= sample_rate <= 96000:
        raise ValueError(f"sample_rate must be in 8000..96000, got {sample_rate}")
    if qpm <= 0:
        raise ValueError(f"qpm must be positive, got {qpm}")
    if not max_seconds > 0:
        raise ValueError(f"max_seconds must be positive, got {max_seconds}")
    kind = resolve_backend(backend)
    notes, total = _notes(source, qpm, program, velocity, max_seconds)
    if not notes:
        return sample_rate, np.zeros(max(1, round(total * sample_rate)), dtype=np.float32)
    last_end = max(n.end for n in notes)
    end_frame = round(last_end * sample_rate)
    frames = end_frame + round(max(0.0, release) * sample_rate)
    if kind == "sine":
        audio = _render_sine(notes, sample_rate, frames)
    else:
        audio = _render_fluidsynth(notes, sample_rate, frames, soundfont)
    return sample_rate, _finish(audio, end_frame, sample_rate, peak)


def _finish(audio: np.ndarray, end_frame: int, sample_rate: int, peak: float) -> np.ndarray:
    """Cut the tail where it falls below TAIL_THRESHOLD_DB, fade what is cut, normalise."""
    audio = np.asarray(audio, dtype=np.float32)
    top = float(np.abs(audio).max()) if len(audio) else 0.0
    if top < 1e-7:
        return np.zeros_like(audio)
    loud = np.flatnonzero(np.abs(audio[end_frame:]) > top * 10 ** (TAIL_THRESHOLD_DB / 20))
    stop = end_frame + (int(loud[-1]) + 1 if len(loud) else 0)
    audio = audio[: max(stop, 1)].copy()
    fade = min(round(FADE_SECONDS * sample_rate), len(audio) - end_frame)
    if fade > 0:
        audio[-fade:] *= np.linspace(1.0, 0.0, fade, dtype=np.float32)
    audio *= np.float32(peak / top)
    return np.clip(audio, -1.0, 1.0)


def to_int16(audio: np.ndarray) -> np.ndarray:
    return (np.clip(np.asarray(audio, dtype=np.float32), -1.0, 1.0) * 32767.0).round().astype(np.int16)


def wav_bytes(source, qpm: float = DEFAULT_QPM, sample_rate: int = DEFAULT_SAMPLE_RATE,
              program: int = 0, backend: str = "auto", **kwargs) -> bytes:
    """The rendered melody as a 16-bit mono WAV file, in memory."""
    sr, audio = render(source, qpm, sample_rate, program, backend, **kwargs)
    return encode_wav(sr, audio)


def encode_wav(sample_rate: int, audio: np.ndarray) -> bytes:
    """(sample_rate, float audio in [-1, 1]) -> 16-bit mono WAV bytes (stdlib wave)."""
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(int(sample_rate))
        w.writeframes(to_int16(audio).tobytes())
    return buf.getvalue()


def write_wav(path: str | Path, source, qpm: float = DEFAULT_QPM,
              sample_rate: int = DEFAULT_SAMPLE_RATE, program: int = 0, backend: str = "auto",
              **kwargs) -> Path:
    """Render and write a 16-bit mono WAV file; returns the path."""
    return write_bytes(path, wav_bytes(source, qpm, sample_rate, program, backend, **kwargs))
