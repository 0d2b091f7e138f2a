"""What a model name points at, read from its config files alone (no torch, no weights).

A model is ``"mini"`` (the shipped inr-smooth-mini), a local diffusers Stable Diffusion folder,
or a Hugging Face hub id. :func:`describe_model` tells, before anything heavy is imported:

* where it loads from: a local folder (a hub id whose files are all in the local Hugging Face
  cache loads from its cached snapshot, so no network is touched), or the hub;
* its native frame size, ``unet.sample_size x vae scale factor`` (SD 1.x: 64 x 8 = 512 px;
  mini: 16 x 4 = 64 px), and the multiple every frame side must be;
* the recommended settings the folder may carry in ``inr_smooth_defaults.json``
  (``{"tune": {...}, "edit": {...}}``, keys = config fields), applied where the user sets none.

A hub id that is not cached fails here within seconds when the hub cannot be reached (one
short connection attempt instead of minutes of download retries), with the ways forward.
"""

from __future__ import annotations

import json
import os
import socket
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

__all__ = [
    "DEFAULTS_FILE",
    "SUBFOLDERS",
    "ModelInfo",
    "ModelLoadError",
    "check_model_folder",
    "describe_model",
    "hub_reachable",
    "looks_local",
]

DEFAULTS_FILE = "inr_smooth_defaults.json"
SUBFOLDERS = ("tokenizer", "text_encoder", "vae", "unet", "scheduler")
_WEIGHT_SUFFIXES = (".safetensors", ".bin")
_REACH_TIMEOUT_S = 3.0
WAYS_FORWARD = (
    "pass a local diffusers folder (--model PATH), use the shipped offline model (--model "
    "mini), or download it once where there is network and set HF_HUB_OFFLINE=1"
)


class ModelLoadError(ValueError):
    """The model path or hub id does not give a Stable Diffusion model (one line)."""


@dataclass(frozen=True)
class ModelInfo:
    name: str  # as the user gave it
    source: str  # what from_pretrained is given: a folder path or a hub id
    local: bool  # loads from disk (a folder, or a fully cached hub snapshot)
    native_size: int  # pixels: unet.sample_size x VAE scale factor
    size_multiple: int  # frame sides must be multiples of this (VAE scale x UNet downsamplings)
    recommended: dict = field(default_factory=dict)  # {"tune": {...}, "edit": {...}}
    defaults_file: str | None = None  # where `recommended` came from

    def recommended_for(self, command: str) -> dict:
        return dict(self.recommended.get(command, {}))


def looks_local(model: str) -> bool:
    """A path rather than a hub id (``owner/name``)."""
    return (
        Path(model).expanduser().exists()
        or model.startswith((".", "/", "~"))
        or model.count("/") != 1
    )


def check_model_folder(folder: Path) -> None:
    """Raise ModelLoadError unless ``folder`` is a diffusers Stable Diffusion folder."""
    if not folder.is_dir():
        raise ModelLoadError(f"model folder not found: {folder}")
    missing = [name for name in SUBFOLDERS if not (folder / name).is_dir()]
    if missing:
        raise ModelLoadError(
            f"{folder} is not a diffusers Stable Diffusion folder: missing "
            f"{', '.join(name + '/' for name in missing)} (expected {', '.join(SUBFOLDERS)})"
        )


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ModelLoadError(f"cannot read {path}: {exc}") from None
    if not isinstance(data, dict):
        raise ModelLoadError(f"expected a JSON object in {path}")
    return data


def _sizes(unet_config: dict, vae_config: dict, where: str) -> tuple[int, int]:
    try:
        vae_scale = 2 ** (len(vae_config["block_out_channels"]) - 1)
        halvings = len(unet_config["block_out_channels"]) - 1
        sample = unet_config["sample_size"]
    except (KeyError, TypeError):
        raise ModelLoadError(
            f"{where}: expected unet/config.json with block_out_channels and sample_size and "
            "vae/config.json with block_out_channels"
        ) from None
    sample = sample[0] if isinstance(sample, (list, tuple)) else sample
    return int(sample) * vae_scale, vae_scale * 2**halvings


def _recommended(folder: Path) -> tuple[dict, str | None]:
    path = folder / DEFAULTS_FILE
    if not path.is_file():
        return {}, None
    data = _read_json(path)
    unknown = sorted(set(data) - {"tune", "edit", "description"})
    if unknown or not all(isinstance(data.get(k, {}), dict) for k in ("tune", "edit")):
        raise ModelLoadError(
            f"{path}: expected {{'tune': {{...}}, 'edit': {{...}}}} of config fields, found "
            f"keys {sorted(data)}"
        )
    return {k: data[k] for k in ("tune", "edit") if k in data}, str(path)


def _from_folder(name: str, folder: Path) -> ModelInfo:
    check_model_folder(folder)
    unet, vae = (_read_json(folder / sub / "config.json") for sub in ("unet", "vae"))
    native, multiple = _sizes(unet, vae, str(folder))
    recommended, source = _recommended(folder)
    return ModelInfo(name, str(folder), True, native, multiple, recommended, source)


def _cached_snapshot(hub_id: str) -> Path | None:
    """The local snapshot folder of ``hub_id`` when every part of the model is cached."""
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(hub_id, "unet/config.json")
    if not isinstance(found, str):
        return None
    folder = Path(found).parent.parent
    for sub in SUBFOLDERS:
        if not (folder / sub).is_dir():
            return None
    for sub in ("text_encoder", "vae", "unet"):
        if not any(p.suffix in _WEIGHT_SUFFIXES and p.exists() for p in (folder / sub).iterdir()):
            return None
    return folder


def hub_reachable(timeout: float = _REACH_TIMEOUT_S) -> bool:
    """One TCP connection to the hub's endpoint (``HF_ENDPOINT``), within ``timeout``."""
    from huggingface_hub import constants

    url = urlparse(constants.ENDPOINT)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((url.hostname, port), timeout=timeout):
            return True
    except OSError:
        return False


def _from_hub(hub_id: str) -> ModelInfo:
    from huggingface_hub import constants, hf_hub_download

    snapshot = _cached_snapshot(hub_id)
    if snapshot is not None:
        info = _from_folder(hub_id, snapshot)
        return ModelInfo(hub_id, info.source, True, info.native_size, info.size_multiple,
                         info.recommended, info.defaults_file)  # fmt: skip
    offline = constants.HF_HUB_OFFLINE or os.environ.get("HF_HUB_OFFLINE", "") in ("1", "true")
    if offline or not hub_reachable():
        why = "HF_HUB_OFFLINE is set" if offline else f"{constants.ENDPOINT} cannot be reached"
        raise ModelLoadError(
            f"model {hub_id!r} is not in the local Hugging Face cache and {why}: {WAYS_FORWARD}"
        )
    try:
        configs = [json.loads(Path(hf_hub_download(hub_id, f"{sub}/config.json")).read_text())
                   for sub in ("unet", "vae")]  # fmt: skip
    except Exception as exc:  # RepositoryNotFoundError, EntryNotFoundError, HTTP errors, ...
        raise ModelLoadError(
            f"could not read {hub_id!r} from the hub ({type(exc).__name__}): is it a diffusers "
            f"Stable Diffusion repository? Or {WAYS_FORWARD}"
        ) from None
    native, multiple = _sizes(*configs, hub_id)
    return ModelInfo(hub_id, hub_id, False, native, multiple)


def describe_model(model: str) -> ModelInfo:
    """Where ``model`` loads from, its native size and its recommended settings (see module)."""
    from .mini import resolve_model

    if not model:
        raise ModelLoadError("expected a model: a hub id, a local diffusers folder, or 'mini'")
    try:
        resolved = resolve_model(model)
    except FileNotFoundError as exc:
        raise ModelLoadError(str(exc)) from None
    if looks_local(resolved):
        return _from_folder(model, Path(resolved).expanduser())
    return _from_hub(resolved)
