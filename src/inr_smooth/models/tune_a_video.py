"""Tune-A-Video checkpoints (its ``UNet3DConditionModel``) on the inflated video UNet.

What Tune-A-Video's model is (github.com/showlab/Tune-A-Video, ``tuneavideo/models/``, read
for these facts only), and how it maps here:

* Its parameter names are those of the diffusers 2-D UNet (it loads the Stable Diffusion UNet
  into itself with a strict ``load_state_dict``), plus, inside every
  ``transformer_blocks.<i>``, ``attn_temp`` (an attention over frames) and ``norm_temp`` (its
  LayerNorm): here ``transformer_blocks.<i>.temporal.attn`` / ``.temporal.norm``, the 2-D
  block's own modules under ``transformer_blocks.<i>.spatial``, everything under ``unet.``.
* The temporal attention runs inside the transformer block, after the feed-forward:
  ``x + attn_temp(norm_temp(x))`` over the frames at each spatial position, without positional
  encoding, before the transformer's ``proj_out``: where :class:`VideoTransformerBlock` puts it.
* Its spatial self-attention is sparse-causal: keys and values of frame ``i`` are the tokens
  of frame 0 followed by those of frame ``max(i - 1, 0)`` (``attention="sparse_causal"``).
* Its ResnetBlock3D norms and its ``conv_norm_out`` are ``nn.GroupNorm`` applied to the 5-D
  ``(b, c, f, h, w)`` tensor, so their statistics pool over all frames
  (``group_norm="video"``); the transformers' input GroupNorm runs per frame.
* It zero-initialises only the weight of ``attn_temp``'s output projection, not its bias; a
  tuned checkpoint carries both, so this does not matter when loading one.

Loading a checkpoint therefore switches the video UNet to ``attention="sparse_causal"`` and
``group_norm="video"`` (with a warning when that changes them), so that with the same weights
and inputs it computes what Tune-A-Video computes.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import Tensor

from .video_unet import VideoUNet
from .weights import copy_tensors

logger = logging.getLogger(__name__)

_WEIGHT_FILES = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin")
_TAV_BLOCK = re.compile(r"(transformer_blocks\.\d+)\.(?:(attn_temp|norm_temp)\.)?")
_OUR_BLOCK = re.compile(r"(transformer_blocks\.\d+)\.(spatial|temporal\.attn|temporal\.norm)\.")
_TO_OURS = {None: "spatial", "attn_temp": "temporal.attn", "norm_temp": "temporal.norm"}
_TO_TAV = {"spatial": None, "temporal.attn": "attn_temp", "temporal.norm": "norm_temp"}

__all__ = [
    "load_tune_a_video_weights",
    "read_tune_a_video_state_dict",
    "to_tune_a_video_state_dict",
    "tune_a_video_key",
    "video_unet_key_from_tune_a_video",
]


def video_unet_key_from_tune_a_video(key: str) -> str:
    """``down_blocks.0.attentions.0.transformer_blocks.0.attn_temp.to_q.weight`` ->
    ``unet.down_blocks.0.attentions.0.transformer_blocks.0.temporal.attn.to_q.weight``."""

    def block(match: re.Match) -> str:
        return f"{match.group(1)}.{_TO_OURS[match.group(2)]}."

    return "unet." + _TAV_BLOCK.sub(block, key)


def tune_a_video_key(name: str) -> str:
    """Inverse of :func:`video_unet_key_from_tune_a_video`."""
    if not name.startswith("unet."):
        raise ValueError(f"expected a VideoUNet tensor name starting with 'unet.', got {name!r}")

    def block(match: re.Match) -> str:
        tav = _TO_TAV[match.group(2)]
        return f"{match.group(1)}." + (f"{tav}." if tav else "")

    return _OUR_BLOCK.sub(block, name[len("unet.") :])


def read_tune_a_video_state_dict(path: str | Path) -> dict[str, Tensor]:
    """Tensors of a Tune-A-Video UNet from a file or a folder.

    ``path`` is a ``.safetensors`` / ``.bin`` file, a UNet folder holding
    ``diffusion_pytorch_model.{safetensors,bin}``, or a pipeline folder with it under ``unet/``.
    ``.bin`` pickles are read with ``torch.load(weights_only=True)`` (tensors only).
    """
    path = Path(path).expanduser()
    if path.is_dir():
        candidates = [path / sub / name for sub in ("unet", "") for name in _WEIGHT_FILES]
        found = next((c for c in candidates if c.is_file()), None)
        if found is None:
            raise FileNotFoundError(
                f"expected a Tune-A-Video UNet in {path}: none of "
                f"{', '.join(str(c.relative_to(path)) for c in candidates)} exists"
            )
        path = found
    if not path.is_file():
        raise FileNotFoundError(f"no Tune-A-Video checkpoint at {path}")
    if path.suffix == ".safetensors":
        return load_file(path)
    if path.suffix in (".bin", ".pt", ".pth"):
        state = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(state, Mapping):
            raise ValueError(f"expected a state dict in {path}, got {type(state).__name__}")
        return dict(state)
    raise ValueError(f"expected a .safetensors or .bin checkpoint, got {path.name}")


def load_tune_a_video_weights(
    video_unet: VideoUNet,
    state_dict_or_path: Mapping[str, Tensor] | str | Path,
    *,
    strict: bool = True,
) -> list[str]:
    """Load a Tune-A-Video ``UNet3DConditionModel`` checkpoint into ``video_unet``.

    Accepts a state dict, a ``.safetensors`` / ``.bin`` file or a (pipeline or UNet) folder
    (:func:`read_tune_a_video_state_dict`). The video UNet must have temporal attention; it is
    switched to Tune-A-Video's behaviour (``sparse_causal`` attention, ``video`` GroupNorm).
    With ``strict`` every tensor of the model must be in the checkpoint and vice versa.
    Returns the names of the tensors that were set.
    """
    if not isinstance(video_unet, VideoUNet):
        raise ValueError(
            f"expected a VideoUNet (see inflate_unet), got {type(video_unet).__name__}"
        )
    if not video_unet.config.temporal_attention:
        raise ValueError(
            "expected a video UNet with temporal attention (Tune-A-Video checkpoints have "
            "attn_temp), got one inflated with temporal_attention=False"
        )
    if isinstance(state_dict_or_path, Mapping):
        state, source = dict(state_dict_or_path), "the Tune-A-Video state dict"
    else:
        state, source = read_tune_a_video_state_dict(state_dict_or_path), str(state_dict_or_path)
    if not any(".attn_temp." in key for key in state):
        raise ValueError(
            f"expected a Tune-A-Video UNet3DConditionModel checkpoint with attn_temp tensors in "
            f"{source}, found none (a 2-D Stable Diffusion UNet? load it with load_unet2d)"
        )
    tensors = {video_unet_key_from_tune_a_video(key): value for key, value in state.items()}
    if strict:
        missing = sorted(set(video_unet.state_dict()) - set(tensors))
        if missing:
            raise ValueError(
                f"{source} lacks {len(missing)} tensors of the video UNet, e.g. "
                f"{[tune_a_video_key(m) for m in missing[:3]]}"
            )
    copy_tensors(video_unet, tensors, source=source)
    _use_tune_a_video_behaviour(video_unet)
    return sorted(tensors)


def _use_tune_a_video_behaviour(video_unet: VideoUNet) -> None:
    config = video_unet.config
    if config.attention != "sparse_causal" or config.group_norm != "video":
        logger.warning(
            "Tune-A-Video weights: switching the video UNet from attention=%r, group_norm=%r "
            "to Tune-A-Video's attention='sparse_causal', group_norm='video'",
            config.attention,
            config.group_norm,
        )
    video_unet.set_cross_frame_attention("sparse_causal")
    video_unet.set_group_norm("video")


def to_tune_a_video_state_dict(video_unet: VideoUNet) -> dict[str, Tensor]:
    """The video UNet's tensors under Tune-A-Video's names (e.g. to compare with its code)."""
    return {tune_a_video_key(name): value for name, value in video_unet.state_dict().items()}
