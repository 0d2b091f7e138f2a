"""Video UNets inflated from Stable Diffusion's 2-D UNet (Tune-A-Video style, by composition).

* :func:`inflate_unet` -- a ``UNet2DConditionModel`` -> :class:`VideoUNet` on ``(b, c, f, h, w)``
  latents, with cross-frame attention (:data:`ATTENTION_MODES`) and temporal attention.
* :func:`set_trainable` -- freeze all but the tuned parameters (:data:`DEFAULT_TRAINABLE`).
* :func:`save_video_unet_weights` / :func:`load_video_unet_weights` -- only what differs from
  the base UNet, as safetensors, with a JSON of the inflation settings.
* :func:`load_unet2d` -- the base UNet from a hub id, a diffusers folder or a single file.
* :func:`load_tune_a_video_weights` -- Tune-A-Video checkpoints (``UNet3DConditionModel``).
"""

from .attention import ATTENTION_MODES, CrossFrameAttnProcessor, TemporalAttention
from .tune_a_video import load_tune_a_video_weights, to_tune_a_video_state_dict
from .video_unet import (
    DEFAULT_TRAINABLE,
    GROUP_NORM_MODES,
    TUNE_A_VIDEO_TRAINABLE,
    VideoUNet,
    VideoUNetConfig,
    VideoUNetOutput,
    inflate_unet,
    set_trainable,
)
from .weights import load_unet2d, load_video_unet_weights, save_video_unet_weights

__all__ = [
    "ATTENTION_MODES",
    "DEFAULT_TRAINABLE",
    "GROUP_NORM_MODES",
    "TUNE_A_VIDEO_TRAINABLE",
    "CrossFrameAttnProcessor",
    "TemporalAttention",
    "VideoUNet",
    "VideoUNetConfig",
    "VideoUNetOutput",
    "inflate_unet",
    "load_tune_a_video_weights",
    "load_unet2d",
    "load_video_unet_weights",
    "save_video_unet_weights",
    "set_trainable",
    "to_tune_a_video_state_dict",
]
