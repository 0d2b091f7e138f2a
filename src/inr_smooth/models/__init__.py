"""Video UNets inflated from Stable Diffusion's 2-D UNet (Tune-A-Video style, by composition).

* :func:`inflate_unet` -- a ``UNet2DConditionModel`` -> :class:`VideoUNet` on ``(b, c, f, h, w)``
  latents, with cross-frame attention (:data:`ATTENTION_MODES`) and temporal attention.
* :func:`set_trainable` -- freeze all but the tuned parameters (:data:`DEFAULT_TRAINABLE`).
* :func:`save_video_unet_weights` / :func:`load_video_unet_weights` -- only what differs from
  the base UNet, as safetensors, with a JSON of the inflation settings.
* :func:`load_unet2d` -- the base UNet from a hub id, a diffusers folder or a single file.
* :func:`load_tune_a_video_weights` -- Tune-A-Video checkpoints (``UNet3DConditionModel``).
* :mod:`.controlnet` -- ControlNets run per frame and fed into the video UNet
  (:class:`ControlledVideoUNet`); ``architecture="controlvideo"`` is ControlVideo's UNet.
"""

from .attention import (
    ATTENTION_MODES,
    CrossFrameAttnProcessor,
    ParallelTemporalAttention,
    TemporalAttention,
)
from .controlnet import (
    ControlledVideoUNet,
    ControlWindow,
    VideoControlNet,
    inflate_controlnet,
    set_controlled_trainable,
)
from .tune_a_video import load_tune_a_video_weights, to_tune_a_video_state_dict
from .video_unet import (
    ARCHITECTURES,
    CONTROLVIDEO_TRAINABLE,
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
    "ARCHITECTURES",
    "ATTENTION_MODES",
    "CONTROLVIDEO_TRAINABLE",
    "DEFAULT_TRAINABLE",
    "GROUP_NORM_MODES",
    "TUNE_A_VIDEO_TRAINABLE",
    "ControlWindow",
    "ControlledVideoUNet",
    "CrossFrameAttnProcessor",
    "ParallelTemporalAttention",
    "TemporalAttention",
    "VideoControlNet",
    "VideoUNet",
    "VideoUNetConfig",
    "VideoUNetOutput",
    "inflate_controlnet",
    "inflate_unet",
    "load_tune_a_video_weights",
    "load_unet2d",
    "load_video_unet_weights",
    "save_video_unet_weights",
    "set_controlled_trainable",
    "set_trainable",
    "to_tune_a_video_state_dict",
]
