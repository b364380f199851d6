"""One checkpoint format for every model (MusicVAE, TransformerDDPM, TransformerMDN).

A checkpoint is a folder:

    model.safetensors   the weights (float32; never pickles)
    config.json         {"format": 2, "kind": "vae" | "diffusion" | "mdn",
                         "model":    the architecture (the model class's config dataclass),
                         "schedule": the noise schedule (diffusion models: `schedulers.ScheduleConfig`),
                         "codec":    tokens <-> model space (latent models: `codec.CodecConfig`),
                         "recipe":   the training recipe it was trained with (for the card),
                         "training": provenance and figures (data, steps, time, held-out figure)}
    scaler.safetensors  the `codec.LatentScaler` (latent models)
    extra.safetensors   what a resumed run needs besides (the EMA weights), if any

Every file is written to a temporary name and renamed (`symdiff.atomic`), and every read error
is one `CheckpointError` naming the file. `upgrade_config` is the converter from the format-1
config.json (one flat dataclass: architecture, schedule and recipe mixed, provenance in an
untyped `extra` dict); it runs on every load, so checkpoints written before the split load as
they are.
"""
from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any, TypeVar

import torch

from .atomic import CheckpointError, read_json, read_tensors, save_tensors, state_dict_mismatch, write_text

FORMAT = 2
KINDS = ("vae", "diffusion", "mdn")

C = TypeVar("C", bound="ConfigIO")


class ConfigIO:
    """Plain-JSON storage for the config dataclasses (fields of str, numbers, bools, tuples)."""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)  # type: ignore[call-overload]

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1) + "\n"

    @classmethod
    def from_dict(cls: type[C], d: dict[str, Any], where: str = "config") -> C:
        """The config from its fields; CheckpointError for a field this class does not have
        (another model's config). List values become tuples where the default is a tuple."""
        fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        unknown = sorted(set(d) - set(fields))
        if unknown:
            raise CheckpointError(f"{where} is not a {cls.__name__} (unknown fields: {', '.join(unknown)})")
        values = {}
        for k, v in d.items():
            default = fields[k].default
            values[k] = tuple(v) if isinstance(v, list) and isinstance(default, tuple) else v
        return cls(**values)


def save_checkpoint(directory: str | Path, kind: str, model: torch.nn.Module, sections: dict[str, Any],
                    tensors: dict[str, dict[str, torch.Tensor]] | None = None) -> Path:
    """Write `model` (its `.config` is the "model" section) and the `sections` (ConfigIO or
    plain dicts) as a checkpoint folder; `tensors` adds files NAME.safetensors (scaler, extra)."""
    if kind not in KINDS:
        raise ValueError(f"unknown checkpoint kind {kind!r}")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().float().contiguous().cpu() for k, v in model.state_dict().items()}
    save_tensors(state, directory / "model.safetensors", f"symdiff-{kind}")
    for name, group in (tensors or {}).items():
        save_tensors({k: v.detach().contiguous().cpu() for k, v in group.items()}, directory / f"{name}.safetensors",
                     f"symdiff-{kind}-{name}")
    model_config = model.config
    assert isinstance(model_config, ConfigIO), "a model's .config is one of the config dataclasses"
    config: dict[str, Any] = {"format": FORMAT, "kind": kind, "model": model_config.to_dict()}
    for name, value in sections.items():
        if value is not None:
            config[name] = value.to_dict() if isinstance(value, ConfigIO) else value
    write_text(directory / "config.json", json.dumps(config, indent=1) + "\n")
    return directory


def read_checkpoint_config(directory: str | Path, *kinds: str) -> dict[str, Any]:
    """config.json of a checkpoint of one of `kinds`, in the current format (`upgrade_config`
    applied); CheckpointError for a missing file or another kind of model."""
    directory = Path(directory)
    path = directory / "config.json"
    if not path.is_file():
        raise CheckpointError(f"{directory}: no config.json (not a symdiff {' or '.join(kinds)} checkpoint)")
    config = upgrade_config(read_json(path), path)
    if config.get("kind") not in kinds:
        raise CheckpointError(f"{path} is the config of a {config.get('kind')} model, "
                              f"not of a {' or '.join(kinds)} model")
    if not isinstance(config.get("model"), dict):
        raise CheckpointError(f"{path} is corrupt (no model section)")
    return config


def load_weights(model: torch.nn.Module, directory: str | Path) -> None:
    weights = Path(directory) / "model.safetensors"
    try:
        model.load_state_dict(read_tensors(weights))
    except RuntimeError as e:  # missing, unexpected or misshapen tensors
        raise state_dict_mismatch(weights, e) from None


def load_tensors(directory: str | Path, name: str) -> dict[str, torch.Tensor]:
    """NAME.safetensors of a checkpoint ({} when it has none)."""
    path = Path(directory) / f"{name}.safetensors"
    return read_tensors(path) if path.is_file() else {}


class Pretrained:
    """`save_pretrained` / `from_pretrained` for a model (an nn.Module whose `.config` is its
    `config_class`) in the one checkpoint format. A loaded model keeps the other sections of its
    config.json in `.sections` (schedule, codec, recipe, training)."""

    kind: str = ""
    config_class: type[ConfigIO] = ConfigIO
    sections: Mapping[str, Any] = MappingProxyType({})  # a model built in code has none

    def save_pretrained(self, directory: str | Path, sections: dict[str, Any] | None = None,
                        tensors: dict[str, dict[str, torch.Tensor]] | None = None) -> Path:
        assert isinstance(self, torch.nn.Module)
        return save_checkpoint(directory, self.kind, self, sections or {}, tensors)

    @classmethod
    def from_pretrained(cls, directory: str | Path):
        """The model in eval mode; CheckpointError (one line naming the file) for anything wrong."""
        directory = Path(directory)
        config = read_checkpoint_config(directory, cls.kind)
        model = cls(cls.config_class.from_dict(config["model"], str(directory / "config.json")))  # type: ignore[call-arg]
        load_weights(model, directory)  # type: ignore[arg-type]
        model.sections = {k: v for k, v in config.items() if k not in ("format", "kind", "model")}
        return model.eval()  # type: ignore[attr-defined]


# --- the converter from format 1 ----------------------------------------------------------------

# Format 1 kept these fields in the one config dataclass; format 2 moves them out of "model".
_SCHEDULE_FIELDS = ("beta_start", "beta_end", "num_steps")
_RECIPE_FIELDS = {
    "diffusion": ("learning_rate", "lr_decay", "lr_decay_every", "grad_clip", "batch_size", "max_steps"),
    "mdn": ("learning_rate", "lr_decay", "lr_decay_every", "grad_clip", "batch_size", "max_steps"),
    "vae": ("max_beta", "beta_rate", "free_bits", "learning_rate", "decay_rate", "min_learning_rate", "grad_clip",
            "batch_size", "sampling_rate"),
}
# Provenance keys of format 1's `extra` that name the codec; the rest is training provenance.
_CODEC_KEYS = ("vae", "silence", "clip")


def _kind_of(flat: dict[str, Any], path: Path | str) -> str:
    """Which model a format-1 config describes, by a field only that model has."""
    for field, kind in (("enc_size", "vae"), ("mixtures", "mdn"), ("noise_dim", "diffusion")):
        if field in flat:
            return kind
    raise CheckpointError(f"{path} is not the config of a symdiff model")


def upgrade_config(raw: dict[str, Any], path: Path | str = "config.json") -> dict[str, Any]:
    """A config.json of any format as format 2 (`raw` itself when it is already); `path` names
    the file in errors."""
    if raw.get("format") == FORMAT:
        return raw
    if "format" in raw:
        raise CheckpointError(f"{path}: checkpoint format {raw['format']!r} is not one this symdiff reads ({FORMAT})")
    flat = dict(raw)
    extra = dict(flat.pop("extra", {}) or {})
    kind = _kind_of(flat, path)
    recipe = {k: flat.pop(k) for k in _RECIPE_FIELDS[kind] if k in flat}
    schedule = {k: flat.pop(k) for k in _SCHEDULE_FIELDS if k in flat} if kind == "diffusion" else None
    out: dict[str, Any] = {"format": FORMAT, "kind": kind, "model": flat}
    if schedule is not None:
        out["schedule"] = schedule
    if kind != "vae" and "vae" in extra:
        vae, silence = extra["vae"], extra.get("silence", {})
        codec = {"vae_path": vae.get("path"), "vae_sha256": vae.get("sha256"), "z_size": vae.get("z_size"),
                 "silence_rule": silence.get("rule"), "silence_value": silence.get("value"),
                 "silence_threshold": silence.get("threshold"), "clip": extra.get("clip"),
                 "posterior": extra.get("latents", {}).get("settings", {}).get("posterior"), "version": 1}
        out["codec"] = {k: v for k, v in codec.items() if v is not None}
    out["recipe"] = recipe
    out["training"] = {k: v for k, v in extra.items() if k not in _CODEC_KEYS}
    return out
