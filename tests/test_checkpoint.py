"""The one checkpoint format (symdiff/checkpoint.py): every kind of model saves and loads the
same way, the format-1 configs of the checkpoints shipped before the split still load, and a
wrong or foreign config is one clear error."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from symdiff.atomic import CheckpointError
from symdiff.baselines import TransformerMDN
from symdiff.checkpoint import FORMAT, read_checkpoint_config, upgrade_config
from symdiff.codec import LatentCodec
from symdiff.diffusion import TransformerDDPM
from symdiff.generate import MelodyDiffusion
from symdiff.vae import MusicVAE

REPO = Path(__file__).resolve().parent.parent
CHECKPOINTS = REPO / "checkpoints"
FORMAT1 = Path(__file__).parent / "data" / "format1"  # the shipped config.json files before the split
MODELS = {"diffusion-cpu": TransformerDDPM, "mdn-cpu": TransformerMDN, "musicvae-mel2bar-small": MusicVAE}


def as_format1(name: str, tmp_path: Path) -> Path:
    """The shipped checkpoint `name` with its format-1 config.json (same weights)."""
    folder = tmp_path / name
    folder.mkdir()
    for weights in (CHECKPOINTS / name).glob("*.safetensors"):
        (folder / weights.name).symlink_to(weights)
    shutil.copyfile(FORMAT1 / f"{name}.json", folder / "config.json")
    return folder


@pytest.mark.parametrize("name", list(MODELS))
def test_format1_checkpoints_load_as_the_converted_ones(name, tmp_path):
    cls = MODELS[name]
    old, new = cls.from_pretrained(as_format1(name, tmp_path)), cls.from_pretrained(CHECKPOINTS / name)
    assert old.config == new.config and old.sections == new.sections
    assert all(torch.equal(v, new.state_dict()[k]) for k, v in old.state_dict().items())
    # every field of the flat format-1 config landed in exactly one section
    flat = json.loads((FORMAT1 / f"{name}.json").read_text())
    extra = flat.pop("extra")
    placed = {k for section in ("model", "schedule", "recipe") for k in new.sections.get(section, {})} | set(
        new.config.to_dict())
    assert set(flat) <= placed
    assert set(extra) - {"vae", "silence", "clip"} == set(new.sections["training"])


def test_the_shipped_checkpoints_are_format_2_with_typed_sections():
    for name, kind in (("diffusion-cond", "diffusion"), ("diffusion-cpu", "diffusion"), ("mdn-cpu", "mdn"),
                       ("musicvae-mel2bar-small", "vae")):
        raw = json.loads((CHECKPOINTS / name / "config.json").read_text())
        assert raw["format"] == FORMAT and raw["kind"] == kind and "extra" not in raw
        assert ("codec" in raw) == (kind != "vae") and ("schedule" in raw) == (kind == "diffusion")
    pipe = MelodyDiffusion.from_pretrained(CHECKPOINTS / "diffusion-cond")
    assert pipe.codec.config.posterior == "mean" and pipe.codec.config.silence_rule == "flag"
    assert pipe.schedule.num_steps == 1000 and pipe.sampler("ddim").clip == pipe.codec.config.clip > 1


def test_a_format1_codec_is_the_converted_one(tmp_path):
    old = LatentCodec.from_pretrained(as_format1("diffusion-cpu", tmp_path), CHECKPOINTS / "musicvae-mel2bar-small")
    assert old.config == LatentCodec.from_pretrained(CHECKPOINTS / "diffusion-cpu").config


def test_round_trip_keeps_every_section(tmp_path):
    model = TransformerMDN.from_pretrained(CHECKPOINTS / "mdn-cpu")
    out = model.save_pretrained(tmp_path / "again", model.sections)
    again = TransformerMDN.from_pretrained(out)
    assert again.sections == model.sections and again.config == model.config
    assert torch.equal(again.scaler.dims, model.scaler.dims) and again.scaler.min == model.scaler.min
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in again.state_dict().items())


def test_wrong_configs_are_one_clear_error(tmp_path):
    with pytest.raises(CheckpointError, match="config of a vae model, not of a diffusion"):
        TransformerDDPM.from_pretrained(CHECKPOINTS / "musicvae-mel2bar-small")
    with pytest.raises(CheckpointError, match="not the config of a symdiff model"):
        upgrade_config({"name": "x", "unknown_field": 1})
    with pytest.raises(CheckpointError, match="format 3 is not one this symdiff reads"):
        upgrade_config({"format": 3, "kind": "vae"})
    folder = shutil.copytree(CHECKPOINTS / "mdn-cpu", tmp_path / "mdn")
    raw = json.loads((folder / "config.json").read_text())
    raw["codec"]["version"] = 9
    (folder / "config.json").write_text(json.dumps(raw))
    with pytest.raises(CheckpointError, match="codec version 9"):
        LatentCodec.from_pretrained(folder)
    raw["model"]["layers_typo"] = 4
    (folder / "config.json").write_text(json.dumps(raw))
    with pytest.raises(CheckpointError, match=r"config\.json is not a MDNConfig \(unknown fields: layers_typo\)"):
        TransformerMDN.from_pretrained(folder)
    assert read_checkpoint_config(CHECKPOINTS / "mdn-cpu", "diffusion", "mdn")["kind"] == "mdn"
