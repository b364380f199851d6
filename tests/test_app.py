"""The real app (`python app.py` on 127.0.0.1) driven with gradio_client: generate, infill a real
multi-track MIDI file, the Learn tab, and every bad input of issue 6 (not a MIDI, corrupt, empty,
drums only, no notes in range, a range outside the melody, absurd settings), each answered with
a clear message while the server keeps running; outputs only in the app's temporary folder,
which is gone after the app stops."""
from __future__ import annotations

import re
import time
import wave
from pathlib import Path

import mido
import numpy as np
import pytest
from midi_bombs import BOMBS
from PIL import Image
from test_arrangement import check_only_range_changed
from test_bars import long_song
from work import cpu_seconds

from symdiff import arrangement, audio, melody

gradio_client = pytest.importorskip("gradio_client")
from gradio_client import Client, handle_file  # noqa: E402
from gradio_client.exceptions import AppError  # noqa: E402

MIDI = Path(__file__).parent / "data" / "midi"
EXAMPLES = Path(__file__).resolve().parent.parent / "assets" / "examples"
SONGS = Path(__file__).parent / "data" / "songs"
ALOHA = MIDI / "liliuokalani_aloha_oe_voice_piano.mid"  # 7 tracks: 4 voices, solo voice, 2 piano


@pytest.fixture(scope="module")
def client(server, tmp_path_factory):
    return Client(server.url, verbose=False, analytics_enabled=False,
                  download_files=str(tmp_path_factory.mktemp("downloads")))


def expect_error(client, server, match: str, *args, api_name: str):
    """The call fails with a message containing `match` (case-insensitive), and the server lives."""
    with pytest.raises(AppError) as err:
        client.predict(*args, api_name=api_name)
    assert match.lower() in str(err.value).lower(), str(err.value)
    assert "traceback" not in str(err.value).lower()
    assert server.alive, server.log()[-2000:]


def wav_seconds(path) -> float:
    with wave.open(str(path)) as w:
        assert w.getnchannels() == 1 and w.getsampwidth() == 2
        return w.getnframes() / w.getframerate()


def write_midi(path: Path, notes, drums: bool = False) -> Path:
    """notes: (start_16th, length_16ths, pitch) on one track."""
    mid = mido.MidiFile(ticks_per_beat=480)
    tr = mido.MidiTrack()
    mid.tracks.append(tr)
    ch = 9 if drums else 0
    events = []
    for s, n, p in notes:
        events += [(s * 120, mido.Message("note_on", note=p, velocity=90, channel=ch)),
                   ((s + n) * 120, mido.Message("note_off", note=p, velocity=0, channel=ch))]
    t = 0
    for tick, msg in sorted(events, key=lambda e: e[0]):
        tr.append(msg.copy(time=tick - t))
        t = tick
    mid.save(path)
    return path


def test_api_lists_every_action(client):
    names = set(client.view_api(print_info=False, return_format="dict")["named_endpoints"])
    assert {"/generate", "/infill", "/load_midi", "/preview", "/learn_noise", "/learn_reverse", "/learn_step",
            "/load_midi_vary", "/vary"} <= names


def test_generate_outputs_and_seed(client, server):
    status, cv, settled, roll, stages, wav, midi = client.predict(8, "ddim", 12, 5, api_name="/generate")
    assert status.startswith("Done") and "8 bars" in status
    rows = cv["value"]["data"]
    metrics = {r[1] for r in rows}
    assert metrics == {"pitch consistency", "pitch variance", "duration consistency", "duration variance"}
    assert all(0.0 <= r[2] <= 1.0 for r in rows)
    steps = sorted({r[0] for r in rows})
    assert steps[0] == 1 and steps[-1] == 12 and len(steps) >= 4  # measured every few steps
    decided = settled["value"]["data"]  # how much of the guess is decided, from the second look on
    assert {r[1] for r in decided} == {"sixteenths kept from the last look"} and len(decided) == len(steps) - 1
    assert decided[-1][2] > 0.9 and all(0.0 <= r[2] <= 1.0 for r in decided)
    assert Image.open(roll).size[0] == 1000 and Image.open(stages).size[0] == 1000
    assert 0 < wav_seconds(wav) <= 8 * 2.0 + 1.0  # 8 bars at 120 qpm + the release
    tokens = melody.read_midi(midi).chosen.tokens
    assert len(tokens) <= 8 * melody.STEPS_PER_BAR
    again = client.predict(8, "ddim", 12, 5, api_name="/generate")
    assert Path(again[-1]).read_bytes() == Path(midi).read_bytes()  # same seed, same melody
    other = client.predict(8, "ddpm", 12, 6, api_name="/generate")
    assert other[0].startswith("Done")
    folk = client.predict(8, "ddim", 12, 5, "folk", api_name="/generate")  # the default model knows styles
    assert "8 bars of folk" in folk[0] and Path(folk[-1]).read_bytes() != Path(midi).read_bytes()
    plain = client.predict(8, "ddim", 12, 5, "any", 1, api_name="/generate")  # the paper's sampler
    assert plain[0].startswith("Done") and Path(plain[-1]).read_bytes() != Path(midi).read_bytes()


def test_concurrent_generates_are_drawn_as_one_batch(client, server, tmp_path):
    """Issue 26: Generates sent at once share the model's calls (`GenerateBatcher`), and each
    gets the melody its seed gives alone."""
    clients = [Client(server.url, verbose=False, analytics_enabled=False, download_files=str(tmp_path / str(i)))
               for i in range(3)]
    jobs = [c.submit(8, "ddim", 12, seed, api_name="/generate") for c, seed in zip(clients, (21, 22, 23), strict=True)]
    together = [job.result(timeout=300) for job in jobs]
    assert any("drawn together with" in r[0] for r in together), [r[0] for r in together]
    for seed, r in zip((21, 22, 23), together, strict=True):
        alone = client.predict(8, "ddim", 12, seed, api_name="/generate")
        assert "drawn together" not in alone[0]
        assert melody.read_midi(alone[-1]).chosen.tokens.tolist() == melody.read_midi(r[-1]).chosen.tokens.tolist()
    assert server.alive


def test_a_long_generate_says_every_stage(client, server):
    """Issue 26: past the first window (and in the floor's redraws) the status goes on counting:
    the continuation's passes come after the first draw's, never back to 1."""
    job = client.submit(72, "ddim", 4, 0, api_name="/generate")
    job.result(timeout=300)
    said = [str(o[0]) for o in job.outputs()]
    passes = [tuple(map(int, m.groups())) for s in said if (m := re.search(r"pass (\d+) of (\d+)", s))]
    assert passes, said
    assert all(done > 4 for done, _ in passes)  # after the first draw's 4 steps
    assert [d for d, _ in passes] == sorted(d for d, _ in passes) and all(d <= t for d, t in passes)
    assert said[-1].startswith("Done") and "72 bars" in said[-1]


def test_default_generate_is_quick(client, server):
    """Issue 6: the default Generate (64 bars, DDPM 80 steps) answers in under 5 s on 2 idle
    cores (bench/bench_app_load.py measures it); here a loose bound on the server's CPU time,
    which a loaded machine does not make grow."""
    cpu0 = cpu_seconds(server.proc.pid)
    status, *_, wav, midi = client.predict(api_name="/generate")
    cpu_s = cpu_seconds(server.proc.pid) - cpu0
    assert status.startswith("Done") and "64 bars" in status
    assert wav_seconds(wav) <= 64 * 2.0 + 1.0
    assert cpu_s < 30, cpu_s


def test_outputs_live_in_the_apps_temporary_folder(server):
    c = Client(server.url, verbose=False, analytics_enabled=False, download_files=False)
    out = c.predict(4, "ddim", 3, 1, api_name="/generate")
    root = server.tmp_root
    assert root is not None and root.is_dir()
    paths = [Path(o["path"]) for o in out[3:] if isinstance(o, dict)]
    assert len(paths) == 4
    assert all(root in p.parents for p in paths), (root, paths)


def check_download(src: Path, midi, track: int, first: int, last: int) -> None:
    """The app's MIDI is `src` with only candidate `track`'s notes inside bars first..last new
    (`check_only_range_changed`, the library's test of the same), and those bars differ."""
    found = melody.read_midi(src)
    line, (lo, hi) = found.pick(track), found.bars.steps(first, last)
    got = melody.read_midi(midi).pick(track).tokens  # the new bars, read back (a single line)
    where = arrangement._find_line(mido.MidiFile(src), src.read_bytes(), line)
    check_only_range_changed(src, Path(midi), *where, lo, hi, got)
    assert len(got) == len(line.tokens) and not np.array_equal(got[lo:hi], line.tokens[lo:hi])


def test_infill_real_multitrack_midi(client, server):
    """Issue 12: the range picker starts at the file's bars 9-16, the app regenerates exactly the
    bars asked for and says so, and the download is the whole 7-track arrangement with only the
    chosen track's notes inside those bars new."""
    tracks, first, last, preview, text = client.predict(handle_file(str(ALOHA)), api_name="/load_midi")
    assert len(tracks["choices"]) == 1 + 7 and tracks["value"] == "auto"
    assert ["4: Solo Voice, Voice Oohs, D4-C5, 36 notes to bar 12", "4"] in tracks["choices"]
    assert (first, last) == (9, 16) and "Bars **9-16**" in text and "20 bars of 4/4" in text
    assert Image.open(preview).size[0] == 1000
    img, text = client.predict(handle_file(str(ALOHA)), "4", 4, 7, api_name="/preview")
    assert "Bars **4-7**" in text  # exactly the bars asked for, not the model's 2-bar chunks
    status, rows, wav_orig, wav_new, midi = client.predict(
        handle_file(str(ALOHA)), "4", 4, 7, "ddim", 10, 2, api_name="/infill")
    assert "Track 4, bars 4-7 regenerated" in status and "whole arrangement" in status
    assert "style (heard in your piece)" in status  # the style dropdown's default
    assert Image.open(rows).size[0] == 1000
    assert wav_seconds(wav_orig) > 0 and wav_seconds(wav_new) > 0
    check_download(ALOHA, midi, 4, 4, 7)  # the whole 7-track file, only the solo voice's bars 4-7 new
    # a game song with no single-line melody: the default track is named as a chord part
    tracks, *_ = client.predict(handle_file(str(SONGS / "blupi_music008.mid")), api_name="/load_midi")
    assert tracks["choices"][0][0] == "auto: track 1, in chords (this file has no single-line melody)"
    # the piano's chords: the top line rewritten at the rate asked for, the harmony under it kept
    status, *_ = client.predict(handle_file(str(ALOHA)), "5", 9, 12, "ddim", 5, 0, "piece", "notes per bar:", 2,
                                api_name="/infill")
    assert "track 5 plays chords: the new bars replace its top line" in status and "notes under it are kept" in status
    # the default track of a 65-bar lead sheet with a pickup (bar 0): its last 8 bars, in the
    # model's 32-chunk window, and the pickup bar itself
    foster = handle_file(str(EXAMPLES / "foster_brown_hair_lead_sheet.mid"))
    status, *_ = client.predict(foster, "auto", 57, 64, "ddim", 5, 0, "folk", api_name="/infill")
    assert "Track 0, bars 57-64 regenerated" in status and "folk style)" in status
    img, text = client.predict(foster, "auto", 0, 0, api_name="/preview")
    assert "Bars **0-0**" in text and "64 bars of 4/4 and a pickup (bar 0)" in text
    assert server.alive


def test_vary_real_multitrack_midi(client, server):
    """Issue 27: the Vary tab starts with the whole song, gives N variations side by side, each
    with its audio and its whole arrangement (only the bars asked for new), the other slots hidden."""
    tracks, first, last, preview, text = client.predict(handle_file(str(ALOHA)), api_name="/load_midi_vary")
    assert (first, last) == (1, 20) and "Bars **1-20**" in text
    status, rows, wav_orig, *slots = client.predict(handle_file(str(ALOHA)), "auto", 13, 16, 0.5, 2, "ddim", 10, 3,
                                                    api_name="/vary")
    assert "Track 0, bars 13-16: 2 variations at strength 0.5" in status and "whole arrangement" in status
    assert Image.open(rows).size[0] == 1000 and wav_seconds(wav_orig) > 0
    assert len(slots) == 8 and slots[4:] == [None] * 4  # variations 3 and 4 not asked for
    for wav, midi in (slots[0:2], slots[2:4]):
        assert wav_seconds(wav) > 0
        check_download(ALOHA, midi, 0, 13, 16)
    assert Path(slots[1]).read_bytes() != Path(slots[3]).read_bytes()
    for strength, num, match in ((0, 2, "less than minimum value 0.05"), (0.5, 9, "greater than maximum value 4")):
        expect_error(client, server, match, handle_file(str(ALOHA)), "auto", 13, 16, strength, num, "ddim", 10, 3,
                     api_name="/vary")


@pytest.mark.slow
def test_an_800_bar_song_loads_and_infills(client, server, tmp_path):
    """Issue 12, part 5: an 832-bar song loads with bars 9-16 to start from; bars near bar 700
    are infilled in the model's 64-bar window around them (what the audio plays), and the
    download is the whole file with only those bars new."""
    path = long_song(tmp_path / "long.mid")
    tracks, first, last, preview, text = client.predict(handle_file(str(path)), api_name="/load_midi")
    assert (first, last) == (9, 16) and "832 bars of 4/4" in text
    status, rows, wav_orig, wav_new, midi = client.predict(handle_file(str(path)), "auto", 700, 705, "ddim", 5, 0,
                                                           api_name="/infill")
    assert "Track 0, bars 700-705 regenerated" in status
    qpm = melody.read_midi(path).qpm
    assert 64 * 4 * 60 / qpm <= wav_seconds(wav_orig) <= 64 * 4 * 60 / qpm + 1.0  # the window, not 832 bars
    check_download(path, midi, 0, 700, 705)
    assert server.alive


def test_learn_tab(client):
    img, wav, caption = client.predict("oneills_003_4-4_melody.mid", 300, 0, api_name="/learn_noise")
    assert "Step 300 of 1000" in caption and wav_seconds(wav) > 0 and Image.open(img).size[0] == 1000
    _, _, caption0 = client.predict("oneills_003_4-4_melody.mid", 0, 0, api_name="/learn_noise")
    assert "the melody's own latents" in caption0 and re.search(r"give back \d+% of the melody's", caption0)
    # (the run itself is session state, which gradio_client does not return)
    step, film, img, wav, caption = client.predict("oneills_003_4-4_melody.mid", 1000, 6, 0,
                                                   api_name="/learn_reverse")
    assert step["maximum"] == 6 and step["value"] == 0 and "Start" in caption and Image.open(film).size[0] == 1000
    img, wav, caption = client.predict(3, api_name="/learn_step")  # the same session's run
    assert "Step 3 of 6" in caption
    img, wav, caption = client.predict(6, api_name="/learn_step")
    assert "Done" in caption
    step, img, caption = client.predict(api_name="/learn_play")  # plays through to the end
    assert step == 6 and "Done" in caption and "a new melody" in caption
    # issue 27: how much of the melody reverse runs bring back, measured for the chosen melody
    curve, caption = client.predict("oneills_003_4-4_melody.mid", api_name="/learn_curve")
    start, end = map(int, re.search(r"from 20: (\d+)% -> (\d+)%", caption).groups())
    vae = int(re.search(r"reconstruction keeps (\d+)%", caption).group(1))
    assert Image.open(curve).size[0] == 1000 and end >= vae  # from step 20 the run keeps what the VAE keeps


@pytest.mark.parametrize("name, match", [
    ("bad/not_midi.mid", "not a MIDI file"),
    ("bad/corrupt_truncated.mid", "corrupt MIDI"),
    ("bad/empty.mid", "empty"),
    ("synthetic/syn_drums_only.mid", "only drums"),
])
def test_bad_files(client, server, name, match):
    for api in ("/load_midi", "/infill"):
        args = (handle_file(str(MIDI / name)),) if api == "/load_midi" else \
            (handle_file(str(MIDI / name)), "auto", 1, 2, "ddim", 5, 0)
        expect_error(client, server, match, *args, api_name=api)


def test_no_notes_in_range(client, server, tmp_path):
    path = write_midi(tmp_path / "out_of_range.mid", [(0, 4, 12), (4, 4, 15), (8, 4, 115), (12, 4, 120)])
    expect_error(client, server, "outside the range the model knows", handle_file(str(path)),
                 api_name="/load_midi")


def test_wrong_file_type_and_missing_file(client, server, tmp_path):
    txt = tmp_path / "notes.txt"
    txt.write_text("C D E F G")
    expect_error(client, server, "invalid file type", handle_file(str(txt)), "auto", 1, 2, "ddim", 5, 0,
                 api_name="/infill")
    expect_error(client, server, "upload a midi file", None, "auto", 1, 2, "ddim", 5, 0, api_name="/infill")


def test_upload_size_limit(client, server, tmp_path):
    big = tmp_path / "big.mid"
    big.write_bytes(ALOHA.read_bytes() + b"\0" * (3 * 1024 * 1024))
    with pytest.raises(Exception) as err:
        client.predict(handle_file(str(big)), api_name="/load_midi")
    assert "size" in str(err.value).lower() or "large" in str(err.value).lower(), str(err.value)
    assert server.alive


@pytest.mark.parametrize("first, last, match", [
    (30, 40, "bars 30-40: the music ends at bar 20"),
    (21, 21, "the music ends at bar 20"),
    (9, 4, "the last bar comes before the first"),
    (0, 2, "this file has no pickup"),
    (1, 80, "choose bars 1-20"),
])
def test_bad_ranges(client, server, first, last, match):
    expect_error(client, server, match, handle_file(str(ALOHA)), "5", first, last, "ddim", 5, 0, api_name="/infill")


def test_a_bad_range_is_said_at_the_range_field(client, server):
    """Issue 27: a range that cannot be regenerated is explained where the range is shown, not as
    a red "Error" in every output box; the preview keeps the last good range."""
    _, text = client.predict(handle_file(str(ALOHA)), "auto", 3, 90, api_name="/preview")
    assert text.startswith("**This range cannot be regenerated:**") and "choose bars 3-20" in text
    _, text = client.predict(handle_file(str(ALOHA)), "auto", 9, 4, api_name="/preview")
    assert "the last bar comes before the first" in text and server.alive
    img, text = client.predict(handle_file(str(ALOHA)), "auto", 3, 6, api_name="/preview")
    assert text.startswith("Bars **3-6**") and Image.open(img).size[0] == 1000


@pytest.mark.parametrize("args, match", [
    # slider bounds are checked by gradio itself ("Value 0 is less than minimum value 1.")
    ((0, "ddim", 10, 0), "less than minimum value 1"),
    ((257, "ddim", 10, 0), "greater than maximum value 256"),
    ((10_000, "ddim", 10, 0), "greater than maximum value 256"),
    ((8, "ddim", 0, 0), "less than minimum value 1"),
    ((8, "ddim", 100_000, 0), "greater than maximum value 1000"),
    ((8, "ddim", 2.5, 0), "whole number"),
    ((8, "ddim", 10, -1), "seed"),
    ((8, "ddim", 10, 2**40), "seed"),
    ((8, "magic", 10, 0), "magic"),
    ((8, "ddim", 10, 0, "rock"), "not in the list of choices"),
    ((8, "ddim", 10, 0, "any", 9), "greater than maximum value 4"),
])
def test_absurd_generate_settings(client, server, args, match):
    expect_error(client, server, match, *args, api_name="/generate")


def test_absurd_infill_and_learn_settings(client, server):
    aloha = handle_file(str(ALOHA))
    expect_error(client, server, "no melody track 99", aloha, "99", 1, 2, "ddim", 5, 0, api_name="/infill")
    expect_error(client, server, "track must be", aloha, "piano please", 1, 2, "ddim", 5, 0, api_name="/infill")
    expect_error(client, server, "greater than maximum value 1000", aloha, "auto", 1, 2, "ddim", 1001, 0,
                 api_name="/infill")
    expect_error(client, server, "less than minimum value 0", aloha, "auto", -1, 2, "ddim", 5, 0, api_name="/infill")
    expect_error(client, server, "seed must be between", aloha, "auto", 1, 2, "ddim", 5, -3, api_name="/infill")
    expect_error(client, server, "not in the list of choices", aloha, "auto", 1, 2, "ddim", 5, 0, "piece", "loud",
                 api_name="/infill")
    expect_error(client, server, "greater than maximum value 1000", "oneills_003_4-4_melody.mid", 5000, 0,
                 api_name="/learn_noise")
    expect_error(client, server, "not in the list of choices", "../../etc/passwd", 10, 0, api_name="/learn_noise")
    expect_error(client, server, "greater than maximum value 100", "oneills_003_4-4_melody.mid", 1000, 500, 0,
                 api_name="/learn_reverse")
    fresh = Client(server.url, verbose=False, analytics_enabled=False, download_files=False)
    expect_error(fresh, server, "run the reverse process first", 0, api_name="/learn_step")


@pytest.mark.parametrize("name", list(BOMBS))
def test_tiny_hostile_files(client, server, tmp_path, name):
    """Issue 10: each tiny file that once cost gigabytes is read or refused quickly through the
    upload path (in the server's CPU time, which a loaded machine does not make grow), and the
    server lives."""
    path = tmp_path / f"{name}.mid"
    path.write_bytes(BOMBS[name]())
    cpu0 = cpu_seconds(server.proc.pid)
    if name.startswith("far_event"):
        expect_error(client, server, "no notes", handle_file(str(path)), api_name="/load_midi")
    else:
        tracks, first, last, preview, text = client.predict(handle_file(str(path)), api_name="/load_midi")
        assert "will be regenerated" in text
    assert cpu_seconds(server.proc.pid) - cpu0 < 10, "a tiny file took long"
    assert server.alive


@pytest.mark.slow
def test_slowest_tempo_plays_at_a_sane_tempo(client, server, tmp_path):
    """A valid 64-bar file at 3.58 qpm once made two 71-minute WAVs: now the audio plays at the
    lowest playback tempo, and the status says so."""
    path = tmp_path / "slow.mid"
    path.write_bytes(BOMBS["slowest_tempo_64_bars"]())
    status, rows, wav_orig, wav_new, midi = client.predict(handle_file(str(path)), "auto", 1, 2, "ddim", 2, 0,
                                                           api_name="/infill")
    lo = audio.PLAYBACK_QPM[0]
    assert f"plays at {lo:.0f} qpm" in status
    for wav in (wav_orig, wav_new):
        assert wav_seconds(wav) <= 64 * 4 * 60 / lo + 1.0
    assert abs(melody.read_midi(midi).qpm - 3.576) < 0.01  # the MIDI keeps the file's own tempo


def test_server_still_serves_after_all_that(client, server):
    status, *_ = client.predict(4, "ddim", 3, 0, api_name="/generate")
    assert status.startswith("Done") and server.alive
    log = server.log()
    assert "internal error" not in log  # every failure above was an expected, explained one
    # gradio logs its own validation errors (slider bounds, choices) with a traceback; nothing else
    assert log.count("Traceback") == log.count("gradio.exceptions.Error: "), log[-3000:]


@pytest.mark.slow
def test_stop_removes_the_temporary_folder(server):
    root = server.tmp_root
    assert root is not None and root.is_dir()
    server.stop()
    assert not root.exists()


@pytest.mark.slow
def test_time_limit_and_sweep(tmp_path):
    """A server started with a 3 s limit per model run stops a long infill and a long generate
    with a message (and serves on); uploads, outputs and their folders older than --max-age are
    swept while nobody asks anything; what the page itself shows (the example run, the restoration
    curve: gradio's copies of the blocks' first values) stays."""
    from app_server import start_app

    # --max-age 10: long enough for a slowed client to fetch its result before the sweep
    srv = start_app(tmp_path / "app.log", "--time-limit", "3", "--max-age", "10", "--sweep-every", "1")
    try:
        assert srv.tmp_root is not None
        page = {p for p in (srv.tmp_root / "gradio").rglob("*")}  # the page's own files, there at start
        assert any(p.name == "restoration.png" for p in page)
        c = Client(srv.url, verbose=False, analytics_enabled=False, download_files=str(tmp_path / "dl"))
        expect_error(c, srv, "limit of 3 s", handle_file(str(ALOHA)), "auto", 1, 20, "ddpm", 1000, 0,
                     api_name="/infill")
        expect_error(c, srv, "limit of 3 s", 64, "ddpm", 1000, 0, api_name="/generate")
        status, *_ = c.predict(4, "ddim", 2, 0, api_name="/generate")
        assert status.startswith("Done")
        c.predict(handle_file(str(ALOHA)), api_name="/load_midi")
        root = srv.tmp_root
        assert any(p.suffix == ".mid" for p in root.rglob("*"))  # the upload, the generated MIDI
        deadline = time.monotonic() + 60
        def left() -> list[Path]:
            return [p for p in root.rglob("*") if p not in (root / "requests", root / "gradio") and p not in page]

        while time.monotonic() < deadline and left():
            time.sleep(1)
        assert left() == [], left()
        assert any(p.name == "restoration.png" and p.exists() for p in page)  # kept: the page shows it
        assert srv.alive
    finally:
        srv.stop()


def test_model_runs_take_turns_on_one_thread():
    """Issue 26: every model run of the app (`app.ModelThread`) runs on one long-lived thread, one
    at a time, hands back what it returned or raised to its caller, and leaves the process'
    default at one torch thread, so no other thread starts an OpenMP team of its own."""
    import threading

    import torch

    from app import ModelThread

    before = torch.get_num_threads()
    runner, lock = ModelThread(), threading.Lock()
    ran_on, running, most = [], [0], [0]

    def work(i: int) -> int:
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
            ran_on.append(threading.get_ident())
        time.sleep(0.05)
        with lock:
            running[0] -= 1
        if i == 3:
            raise ValueError("run 3 failed")
        return i * 10

    got: dict[int, object] = {}

    def ask(i: int) -> None:
        try:
            got[i] = runner.on_free_cores(lambda: work(i))()
        except ValueError as e:
            got[i] = str(e)

    try:
        callers = [threading.Thread(target=ask, args=(i,)) for i in range(4)]
        for t in callers:
            t.start()
        for t in callers:
            t.join(10)
        assert got == {0: 0, 1: 10, 2: 20, 3: "run 3 failed"}
        assert most[0] == 1 and len(set(ran_on)) == 1  # one at a time, all on one thread
        assert ran_on[0] not in {t.ident for t in callers} | {threading.get_ident()}
        fresh: list[int] = []
        t = threading.Thread(target=lambda: fresh.append(torch.get_num_threads()))
        t.start()
        t.join()
        assert fresh == [1]
    finally:
        torch.set_num_threads(before)
