"""symdiff.audio on real melodies, for every backend this machine has: non-silent, as long as the
melody at the tempo given (plus a release tail), the first note's energy where the tokens put
it, the right pitch, silence for a melody without notes, and WAV output.

FluidSynth is skipped only where its system library is truly absent (scripts/install-test-deps.sh
installs it, so CI runs it); the numpy synthesizer is always there."""
import ctypes.util
import io
import wave
from pathlib import Path

import numpy as np
import pytest

from symdiff import audio, melody

MIDI = Path(__file__).parent / "data" / "midi"
SR = 22050


def has_libfluidsynth() -> bool:
    return any(ctypes.util.find_library(n) for n in ("fluidsynth", "libfluidsynth"))


def backend_param(name):
    marks = []
    if name == "fluidsynth" and not has_libfluidsynth():
        marks.append(pytest.mark.skip(
            reason="libfluidsynth is not installed on this machine (scripts/install-test-deps.sh installs it)"))
    return pytest.param(name, marks=marks, id=name)


BACKENDS = [backend_param(b) for b in audio.BACKENDS]


@pytest.fixture(scope="module")
def foster():
    """Real melody whose first note comes after a rest (step 8); first 8 bars."""
    tokens = melody.read_midi(MIDI / "foster_brown_hair_lead_sheet.mid").chosen.tokens[:128]
    assert int(np.flatnonzero(tokens >= 2)[0]) == 8
    return tokens


@pytest.fixture(scope="module")
def bach():
    return melody.read_midi(MIDI / "bach_bwv66.6_chorale_pickup.mid").chosen.tokens


def seconds_per_step(qpm):
    return 60.0 / qpm / melody.STEPS_PER_QUARTER


def last_note_end(tokens, qpm):
    return max(n.end for n in melody.tokens_to_score(tokens, qpm=qpm).notes)


def onset(x, sr, rel=0.1, hop=64):
    """Time at which the short-time energy first reaches `rel` of its maximum."""
    rms = np.sqrt(np.convolve(x.astype(np.float64) ** 2, np.ones(hop) / hop, mode="same"))
    return np.flatnonzero(rms >= rel * rms.max())[0] / sr


def test_available_backends():
    names = audio.available_backends()
    assert names[-1] == "sine"
    assert audio.bundled_soundfont() is not None and audio.bundled_soundfont().name == "TimGM6mb.sf2"
    assert names == (["fluidsynth", "sine"] if has_libfluidsynth() else ["sine"])
    assert audio.resolve_backend("auto") == names[0]


def test_auto_falls_back_without_fluidsynth(monkeypatch, foster):
    monkeypatch.setattr(audio, "_fluidsynth", lambda: None)
    assert "fluidsynth" not in audio.available_backends()
    assert audio.resolve_backend("auto") == "sine"
    with pytest.raises(audio.AudioError, match="FluidSynth"):
        audio.render(foster, backend="fluidsynth")
    sr, x = audio.render(foster[:32], backend="auto")
    assert np.abs(x).max() > 0.5


def test_unknown_backend(foster):
    with pytest.raises(audio.AudioError, match="unknown"):
        audio.render(foster, backend="midi-magic")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("qpm", [120.0, 90.0])
def test_real_melody(backend, qpm, foster):
    sr, x = audio.render(foster, qpm=qpm, sample_rate=SR, backend=backend)
    assert sr == SR and x.dtype == np.float32 and x.ndim == 1
    assert np.abs(x).max() == pytest.approx(audio.DEFAULT_PEAK, abs=1e-3)  # normalised
    assert np.sqrt(np.mean(x ** 2)) > 0.02  # clearly not silent
    # length: the end of the last note, plus at most the release tail
    end = last_note_end(foster, qpm)
    assert end <= len(x) / sr <= end + audio.DEFAULT_RELEASE + 1 / sr
    assert abs(end - len(foster) * seconds_per_step(qpm)) < 1e-9  # this melody ends on a note
    # the first note sounds at step 8, silence before it
    first = 8 * seconds_per_step(qpm)
    assert onset(x, sr) == pytest.approx(first, abs=0.02)
    assert np.abs(x[: int((first - 0.01) * sr)]).max() < 1e-3


@pytest.mark.parametrize("backend", BACKENDS)
def test_pitch_and_tempo(backend):
    """One bar of A4 then a bar of rest: the tone is at 440 Hz and lasts two seconds at 120 qpm."""
    tokens = np.zeros(32, np.uint8)
    tokens[0], tokens[16] = melody.pitch_to_token(69), melody.NOTE_OFF
    sr, x = audio.render(tokens, qpm=120.0, sample_rate=SR, backend=backend)
    seg = x[int(0.2 * sr): int(1.8 * sr)]
    spec = np.abs(np.fft.rfft(seg * np.hanning(len(seg))))
    assert np.fft.rfftfreq(len(seg), 1 / sr)[np.argmax(spec)] == pytest.approx(440.0, abs=3.0)
    assert 2.0 <= len(x) / sr <= 2.0 + audio.DEFAULT_RELEASE + 1 / sr
    # the note-off silences it: the tail after the release is quiet
    tail = x[int((2.0 + 0.4) * sr):]
    assert len(tail) == 0 or np.abs(tail).max() < 0.1


@pytest.mark.parametrize("backend", BACKENDS)
def test_silent_melody(backend):
    for tokens in (np.zeros(64, np.uint8), np.array([0, 1, 0, 0] * 16, np.uint8)):
        sr, x = audio.render(tokens, qpm=120.0, sample_rate=SR, backend=backend)
        assert len(x) == round(64 * seconds_per_step(120.0) * sr)
        assert np.abs(x).max() < 1e-4


@pytest.mark.parametrize("backend", BACKENDS)
def test_score_and_program(backend, bach):
    """A Score renders like its tokens; another GM program changes the sound."""
    score = melody.tokens_to_score(bach, qpm=96.0)
    sr, a = audio.render(score, sample_rate=SR, backend=backend)
    sr, b = audio.render(bach, qpm=96.0, sample_rate=SR, backend=backend)
    assert len(a) == len(b)
    assert np.allclose(a, b, atol=1e-3)
    end = last_note_end(bach, 96.0)
    assert end <= len(b) / sr <= end + audio.DEFAULT_RELEASE + 1 / sr
    if backend != "sine":  # the numpy synth has one timbre
        sr, c = audio.render(bach, qpm=96.0, sample_rate=SR, program=73, backend=backend)  # flute
        n = min(len(b), len(c))
        assert not np.allclose(b[:n], c[:n], atol=0.05)


def test_wav_bytes_and_file(foster, tmp_path):
    sr, x = audio.render(foster, qpm=100.0, sample_rate=16000)
    data = audio.wav_bytes(foster, qpm=100.0, sample_rate=16000)
    with wave.open(io.BytesIO(data)) as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate()) == (1, 2, 16000)
        assert w.getnframes() == len(x)
        pcm = np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16)
    np.testing.assert_allclose(pcm / 32767.0, x, atol=1.0 / 32767)
    path = audio.write_wav(tmp_path / "foster.wav", foster, qpm=100.0, sample_rate=16000)
    assert path.read_bytes() == data


def test_bad_arguments(foster):
    with pytest.raises(ValueError):
        audio.render(foster, sample_rate=1000)
    with pytest.raises(ValueError):
        audio.render(foster, qpm=0)
    with pytest.raises(melody.MelodyError):
        audio.render(np.array([0, 200], np.int64))


def test_playback_tempo_and_duration_are_bounded():
    """Issue 10: a valid 64-bar melody at MIDI's slowest tempo (3.58 qpm) would last 71 minutes;
    the app plays it at audio.PLAYBACK_QPM's lower end, and no render lasts past max_seconds."""
    lo, hi = audio.PLAYBACK_QPM
    assert audio.playback_qpm(3.58) == lo and audio.playback_qpm(1e6) == hi and audio.playback_qpm(97.0) == 97.0
    tokens = np.tile(np.array([melody.pitch_to_token(60)] + [0] * 3, dtype=np.uint8), 64 * 4)  # 64 bars of quarters
    sr, a = audio.render(tokens, qpm=audio.playback_qpm(3.58), backend="sine")
    assert len(a) / sr <= 64 * 4 * 60 / lo + audio.DEFAULT_RELEASE + 0.01
    sr, a = audio.render(tokens, qpm=3.58, backend="sine", max_seconds=30.0)
    assert 29.0 < len(a) / sr <= 30.0 + audio.DEFAULT_RELEASE + 0.01
    with pytest.raises(ValueError, match="max_seconds"):
        audio.render(tokens, backend="sine", max_seconds=0)
