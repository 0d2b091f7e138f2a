"""Loading the base 2-D UNet, and saving / loading a video UNet's own weights.

A video UNet's weights are stored as the difference to its base Stable Diffusion UNet: a
folder with

* ``video_unet.safetensors`` -- the new tensors (temporal attention) and the base tensors
  that changed (tuned), under the VideoUNet's parameter names;
* ``video_unet.json`` -- how the base was inflated (:class:`VideoUNetConfig`) and the base
  UNet's architecture, checked when loading.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import torch
from diffusers import UNet2DConditionModel
from safetensors.torch import load_file, save_file
from torch import Tensor

from .video_unet import VideoUNet, VideoUNetConfig, inflate_unet, unet2d_key

WEIGHTS_NAME = "video_unet.safetensors"
CONFIG_NAME = "video_unet.json"
FORMAT = "inr_smooth.video_unet"
FORMAT_VERSION = 1
# base UNet config entries that must agree between saving and loading
ARCHITECTURE_KEYS = (
    "in_channels",
    "out_channels",
    "block_out_channels",
    "layers_per_block",
    "down_block_types",
    "up_block_types",
    "mid_block_type",
    "cross_attention_dim",
    "attention_head_dim",
    "num_attention_heads",
    "transformer_layers_per_block",
    "use_linear_projection",
    "norm_num_groups",
)

__all__ = ["load_unet2d", "load_video_unet_weights", "save_video_unet_weights"]


# ----------------------------------------------------------------------------- base UNet


def load_unet2d(
    model: str | Path,
    *,
    subfolder: str = "unet",
    config: str | Path | None = None,
    torch_dtype: torch.dtype | None = None,
) -> UNet2DConditionModel:
    """The Stable Diffusion 2-D UNet from a hub id, a local folder or one ``.safetensors`` file.

    * hub id or diffusers SD folder: ``UNet2DConditionModel.from_pretrained(model,
      subfolder="unet")``; a folder holding the UNet itself (``config.json`` and weights) works
      too.
    * single ``.safetensors`` checkpoint (original SD layout): ``from_single_file``. It needs
      the SD UNet config, which diffusers fetches from the hub; offline, pass ``config=`` a
      local diffusers SD folder (with ``unet/config.json``) or a cached hub id.
    """
    path = Path(model).expanduser()
    if path.is_file():
        return _load_single_file(path, config, torch_dtype)
    if path.is_dir():
        return _load_folder(path, subfolder, torch_dtype)
    text = str(model)
    if text.startswith((".", "/", "~")) or text.endswith(".safetensors") or text.count("/") != 1:
        raise FileNotFoundError(f"no Stable Diffusion folder or checkpoint file at {path}")
    try:  # a hub id
        return UNet2DConditionModel.from_pretrained(
            text, subfolder=subfolder, torch_dtype=torch_dtype
        )
    except OSError as exc:
        raise ValueError(
            f"could not load the UNet of {text!r} from the Hugging Face hub: {_first_line(exc)} "
            "(a hub id needs network access or a filled cache; or pass a local diffusers folder)"
        ) from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _load_folder(path: Path, subfolder: str, torch_dtype) -> UNet2DConditionModel:
    if (path / subfolder / "config.json").is_file():
        root, sub = path, subfolder
    elif (path / "config.json").is_file():
        root, sub = path, None
    else:
        raise ValueError(
            f"{path} is not a diffusers Stable Diffusion folder: expected "
            f"{path / subfolder / 'config.json'} (or a UNet folder with config.json)"
        )
    config_file = root / sub / "config.json" if sub else root / "config.json"
    class_name = json.loads(config_file.read_text()).get("_class_name")
    if class_name != "UNet2DConditionModel":
        hint = (
            " (a Tune-A-Video UNet: load the base Stable Diffusion UNet, inflate it and apply "
            "load_tune_a_video_weights)"
            if class_name == "UNet3DConditionModel"
            else ""
        )
        raise ValueError(
            f"expected a UNet2DConditionModel config in {config_file}, got {class_name!r}{hint}"
        )
    try:
        return UNet2DConditionModel.from_pretrained(root, subfolder=sub, torch_dtype=torch_dtype)
    except OSError as exc:
        raise ValueError(
            f"could not load the UNet in {config_file.parent}: {_first_line(exc)}"
        ) from None


def _load_single_file(path: Path, config, torch_dtype) -> UNet2DConditionModel:
    if path.suffix != ".safetensors":
        raise ValueError(
            f"expected a .safetensors checkpoint file, got {path.name} (pickled .ckpt/.bin files "
            "are not loaded: convert them to safetensors, or use a diffusers folder)"
        )
    if config is not None and Path(config).expanduser().exists():
        config = Path(config).expanduser()
        if not (config / "unet" / "config.json").is_file():
            raise ValueError(
                f"config= must be a diffusers Stable Diffusion folder with unet/config.json, "
                f"got {config}"
            )
        config = str(config)
    try:
        return UNet2DConditionModel.from_single_file(
            str(path),
            config=None if config is None else str(config),
            subfolder=None if config is None else "unet",
            torch_dtype=torch_dtype,
        )
    except Exception as exc:  # diffusers raises OSError, ValueError, KeyError, ... here
        hint = (
            "a single-file load needs the Stable Diffusion UNet config, which diffusers fetches "
            "from the hub: when offline, pass config= a local diffusers SD folder (with "
            "unet/config.json) or a cached hub id"
            if config is None
            else f"is {path.name} a Stable Diffusion checkpoint matching config={config}?"
        )
        raise ValueError(
            f"could not load a UNet from {path}: {_first_line(exc)} ({hint})"
        ) from None


# ----------------------------------------------------------------------------- video UNet


def _architecture(unet: UNet2DConditionModel) -> dict:
    config = unet.config
    return {key: _jsonable(config[key]) for key in ARCHITECTURE_KEYS if key in config}


def _jsonable(value):
    return list(value) if isinstance(value, tuple) else value


def save_video_unet_weights(
    video_unet: VideoUNet,
    directory: str | Path,
    *,
    base_unet: UNet2DConditionModel | None = None,
) -> Path:
    """Write the tensors that differ from the base UNet, and the inflation settings.

    Saved: every tensor the 2-D UNet lacks (temporal attention), plus the base tensors that
    changed. With ``base_unet`` (the untouched 2-D UNet) "changed" is decided by exact
    comparison; without it, the parameters that require gradients (see ``set_trainable``) are
    taken as the changed ones. Returns ``directory``.
    """
    if not isinstance(video_unet, VideoUNet):
        raise ValueError(f"expected a VideoUNet, got {type(video_unet).__name__}")
    state = video_unet.state_dict()
    base = None if base_unet is None else base_unet.state_dict()
    grads = {name for name, p in video_unet.named_parameters() if p.requires_grad}
    tensors = {}
    for name, value in state.items():
        key = unet2d_key(name)
        if key is None:
            changed = True
        elif base is None:
            changed = name in grads
        else:
            if key not in base or base[key].shape != value.shape:
                found = tuple(base[key].shape) if key in base else "nothing"
                raise ValueError(
                    f"base_unet does not match this video UNet: expected {key} of shape "
                    f"{tuple(value.shape)}, found {found}"
                )
            changed = not torch.equal(value.cpu(), base[key].to("cpu", value.dtype))
        if changed:
            tensors[name] = value.detach().to("cpu").contiguous().clone()
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    save_file(tensors, directory / WEIGHTS_NAME, metadata={"format": FORMAT})
    record = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "video_unet": video_unet.config.to_dict(),
        "base_architecture": _architecture(video_unet.unet),
        "changed_from": "base_unet" if base is not None else "requires_grad",
        "num_tensors": len(tensors),
    }
    (directory / CONFIG_NAME).write_text(json.dumps(record, indent=2) + "\n")
    return directory


def _read_record(directory: Path) -> dict:
    config_file, weights_file = directory / CONFIG_NAME, directory / WEIGHTS_NAME
    if not config_file.is_file() or not weights_file.is_file():
        raise FileNotFoundError(
            f"expected {CONFIG_NAME} and {WEIGHTS_NAME} in {directory} "
            "(written by save_video_unet_weights)"
        )
    record = json.loads(config_file.read_text())
    if record.get("format") != FORMAT or record.get("format_version") != FORMAT_VERSION:
        raise ValueError(
            f"expected {config_file} of format {FORMAT!r} version {FORMAT_VERSION}, got "
            f"{record.get('format')!r} version {record.get('format_version')!r}"
        )
    return record


def _check_architecture(unet: UNet2DConditionModel, saved: Mapping) -> None:
    ours = _architecture(unet)
    for key, value in saved.items():
        if ours.get(key) != value:
            raise ValueError(
                f"the weights were saved for a base UNet with {key}={value!r}, "
                f"this UNet has {key}={ours.get(key)!r}"
            )


def load_video_unet_weights(
    unet: UNet2DConditionModel | VideoUNet, directory: str | Path
) -> VideoUNet:
    """Apply weights written by :func:`save_video_unet_weights` to a base or video UNet.

    A ``UNet2DConditionModel`` (the base model) is first inflated with the saved settings, in
    place as by :func:`inflate_unet`. A :class:`VideoUNet` keeps its own attention and
    GroupNorm settings, but must agree on having temporal attention.
    """
    directory = Path(directory)
    record = _read_record(directory)
    config = VideoUNetConfig(**record["video_unet"])
    if isinstance(unet, VideoUNet):
        video_unet = unet
        if video_unet.config.temporal_attention != config.temporal_attention:
            raise ValueError(
                f"the weights were saved with temporal_attention={config.temporal_attention}, "
                f"this video UNet has temporal_attention={video_unet.config.temporal_attention}"
            )
        if video_unet.config.architecture != config.architecture:
            raise ValueError(
                f"the weights were saved with architecture={config.architecture!r}, "
                f"this video UNet has architecture={video_unet.config.architecture!r}"
            )
    elif isinstance(unet, UNet2DConditionModel):
        _check_architecture(unet, record["base_architecture"])
        video_unet = inflate_unet(
            unet,
            attention=config.attention,
            temporal_attention=config.temporal_attention,
            keyframe=config.keyframe,
            group_norm=config.group_norm,
            cross_frame_min_channels=config.cross_frame_min_channels,
            architecture=config.architecture,
        )
    else:
        raise ValueError(
            f"expected a UNet2DConditionModel or a VideoUNet, got {type(unet).__name__}"
        )
    _check_architecture(video_unet.unet, record["base_architecture"])
    copy_tensors(video_unet, load_file(directory / WEIGHTS_NAME), source=str(directory))
    return video_unet


def copy_tensors(video_unet: VideoUNet, tensors: Mapping[str, Tensor], *, source: str) -> None:
    """Copy named tensors into the model's state (cast to its dtype); names must all exist."""
    state = video_unet.state_dict(keep_vars=True)
    unexpected = sorted(set(tensors) - set(state))
    if unexpected:
        raise ValueError(
            f"{source} holds {len(unexpected)} tensors this video UNet does not have, "
            f"e.g. {unexpected[:3]}"
        )
    for name, value in tensors.items():
        if value.shape != state[name].shape:
            raise ValueError(
                f"{source}: expected {name} of shape {tuple(state[name].shape)}, "
                f"got {tuple(value.shape)}"
            )
    with torch.no_grad():
        for name, value in tensors.items():
            state[name].copy_(value)
