"""Re-create the test MIDI files that come from music21 (run from anywhere; needs music21).

Two kinds of source, both shipped inside the music21 wheel (BSD-3-Clause package):
- MIDI files music21 keeps for its own MIDI tests (`music21/midi/testPrimitive/*.mid`,
  `music21/omr/k525short.mid`): copied byte for byte (`k525short_type0.mid` is the same
  file merged into one track with mido, to get a type 0 file with several channels).
- Public-domain compositions from music21's corpus, written to MIDI with
  `score.write('midi')`. What music21 writes can change between its versions, so the
  committed .mid files are the reference; this script documents how they were made.

    python tests/data/midi/make_from_music21.py          # writes next to this file
"""
from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import mido
import music21
from music21 import corpus

HERE = Path(__file__).resolve().parent
M21 = Path(music21.__file__).resolve().parent

COPIED = {
    # our name: path inside the music21 package
    "m21_test01_one_pitch.mid": "midi/testPrimitive/test01.mid",
    "m21_test02_satb_pickup_ts_change.mid": "midi/testPrimitive/test02.mid",
    "m21_test03_piano_4-4_to_3-4.mid": "midi/testPrimitive/test03.mid",
    "m21_test04_orchestra_2-4_tempo_map.mid": "midi/testPrimitive/test04.mid",
    "m21_test05_no_tempo_no_meter.mid": "midi/testPrimitive/test05.mid",
    "m21_test06_type0_melody.mid": "midi/testPrimitive/test06.mid",
    "m21_test07_type0_melody_fast.mid": "midi/testPrimitive/test07.mid",
    "m21_test09_piano_6-8_tempo_changes.mid": "midi/testPrimitive/test09.mid",
    "m21_test10_type0_tempo_changes.mid": "midi/testPrimitive/test10.mid",
    "m21_test11_tempo_changes_3_tracks.mid": "midi/testPrimitive/test11.mid",
    "m21_test12_choir_program52.mid": "midi/testPrimitive/test12.mid",
    "m21_test13_late_tempo.mid": "midi/testPrimitive/test13.mid",
    "m21_test14_6-8_melody.mid": "midi/testPrimitive/test14.mid",
    "m21_test17_3-4_three_channels.mid": "midi/testPrimitive/test17.mid",
    "m21_test18_melody.mid": "midi/testPrimitive/test18.mid",
    "m21_test20_melody.mid": "midi/testPrimitive/test20.mid",
    "m21_k525short_strings.mid": "omr/k525short.mid",
}

# our name: (corpus path, index of the score inside an opus or None)
FROM_CORPUS = {
    "bach_bwv66.6_chorale_pickup.mid": ("bach/bwv66.6", None),
    "bach_bwv7.7_chorale.mid": ("bach/bwv7.7", None),
    "bach_bwv1.6_chorale_with_instrument.mid": ("bach/bwv1.6", None),
    "bach_bwv26.6_chorale.mid": ("bach/bwv26.6", None),
    "foster_brown_hair_lead_sheet.mid": ("leadSheet/fosterBrownHair", None),
    "liliuokalani_aloha_oe_voice_piano.mid": ("liliuokalani/aloha_oe", None),
    "mozart_k545_mvt1_piano.mid": ("mozart/k545/movement1_exposition", None),
    "joplin_maple_leaf_rag_2-4_piano.mid": ("joplin/maple_leaf_rag", None),
    "schubert_lindenbaum_3-4_triplets.mid": ("schubert/Lindenbaum", None),
    "oneills_514_4-4_triplets_pickup.mid": ("oneills1850/0501-0550.abc", 13),
    "oneills_020_jig_6-8.mid": ("oneills1850/0001-0050.abc", 19),
    "oneills_003_4-4_melody.mid": ("oneills1850/0001-0050.abc", 2),
    "nottingham_cuckoos_nest_reel.mid": ("nottingham-dataset/reelsa-c.abc", 0),
}


def to_type0(src: Path, dst: Path) -> None:
    mid = mido.MidiFile(src)
    out = mido.MidiFile(type=0, ticks_per_beat=mid.ticks_per_beat)
    out.tracks.append(mido.merge_tracks(mid.tracks))
    out.save(dst)


def main() -> None:
    warnings.filterwarnings("ignore")
    for name, rel in COPIED.items():
        shutil.copyfile(M21 / rel, HERE / name)
    to_type0(M21 / "omr/k525short.mid", HERE / "m21_k525short_type0_5_channels.mid")
    for name, (path, index) in FROM_CORPUS.items():
        score = corpus.parse(path)
        if index is not None:
            score = score.scores[index]
        score.write("midi", fp=str(HERE / name))
        print(name, sum(1 for _ in score.recurse().notes), "notes")


if __name__ == "__main__":
    main()
