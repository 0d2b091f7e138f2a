"""Tiny Stable-Diffusion-shaped models built from configs (tests, benchmarks, smoke runs).

:func:`save_tiny_stable_diffusion` writes a complete diffusers folder (``tokenizer/``,
``text_encoder/``, ``vae/``, ``unet/``, ``scheduler/``) with seeded random weights, so that
tests load it back through exactly the code path real Stable Diffusion folders take.

The tokenizer is the real CLIP BPE vocabulary (49,408 tokens), written as ``vocab.json`` +
``merges.txt`` from the ``bpe_simple_vocab_16e6.txt.gz`` file that the ``open_clip_torch``
wheel ships (found by path; open_clip is not imported).
"""

from __future__ import annotations

import gzip
import importlib.util
import json
from pathlib import Path

import torch

__all__ = [
    "SD_SCHEDULER_CONFIG",
    "TINY_TEXT_CONFIG",
    "TINY_UNET_CONFIG",
    "TINY_VAE_CONFIG",
    "clip_bpe_path",
    "save_tiny_stable_diffusion",
    "write_clip_tokenizer",
    "write_model_index",
]

TINY_UNET_CONFIG = {
    "sample_size": 8,
    "in_channels": 4,
    "out_channels": 4,
    "block_out_channels": (32, 64),
    "layers_per_block": 1,
    "down_block_types": ("CrossAttnDownBlock2D", "DownBlock2D"),
    "up_block_types": ("UpBlock2D", "CrossAttnUpBlock2D"),
    "cross_attention_dim": 32,
    "attention_head_dim": 8,
    "norm_num_groups": 32,
}
TINY_VAE_CONFIG = {  # two levels: latents are 1/2 of the pixels (SD's VAE: 1/8)
    "in_channels": 3,
    "out_channels": 3,
    "down_block_types": ("DownEncoderBlock2D", "DownEncoderBlock2D"),
    "up_block_types": ("UpDecoderBlock2D", "UpDecoderBlock2D"),
    "block_out_channels": (32, 32),
    "layers_per_block": 1,
    "latent_channels": 4,
    "norm_num_groups": 32,
    "sample_size": 32,
}
TINY_TEXT_CONFIG = {
    "vocab_size": 49408,
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "max_position_embeddings": 77,
    "projection_dim": 32,
}
SD_SCHEDULER_CONFIG = {  # Stable Diffusion 1.x's scheduler settings
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "clip_sample": False,
    "set_alpha_to_one": False,
    "steps_offset": 1,
    "prediction_type": "epsilon",
}
_NUM_MERGES = 49152 - 256 - 2  # as in CLIP: the vocabulary holds 49,408 tokens


def clip_bpe_path() -> Path:
    """Path of CLIP's BPE merges file inside the installed ``open_clip_torch`` wheel."""
    spec = importlib.util.find_spec("open_clip")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "the CLIP BPE vocabulary comes from the open_clip_torch wheel: "
            "pip install 'inr-smooth[dev]'"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "bpe_simple_vocab_16e6.txt.gz"


def _bytes_to_unicode() -> dict[int, str]:
    # CLIP / GPT-2 byte-level BPE alphabet, in vocabulary order: the printable bytes map to
    # themselves and come first, the others follow mapped to chr(256 + n)
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1)]
    printable += range(ord("®"), ord("ÿ") + 1)
    chars = {byte: chr(byte) for byte in printable}
    others = [byte for byte in range(256) if byte not in chars]
    chars.update({byte: chr(256 + n) for n, byte in enumerate(others)})
    return chars


def write_clip_tokenizer(folder: str | Path, bpe_path: str | Path | None = None) -> Path:
    """Write CLIP's tokenizer (``vocab.json``, ``merges.txt``, configs) into ``folder``."""
    from transformers import CLIPTokenizer

    with gzip.open(bpe_path or clip_bpe_path(), "rt", encoding="utf-8") as handle:
        lines = handle.read().split("\n")
    merges = lines[1 : _NUM_MERGES + 1]
    alphabet = list(_bytes_to_unicode().values())
    tokens = alphabet + [c + "</w>" for c in alphabet] + ["".join(m.split()) for m in merges]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(tokens)}))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    tokenizer = CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"))
    tokenizer.model_max_length = 77
    tokenizer.save_pretrained(folder)
    return folder


MODEL_INDEX = {  # what diffusers' StableDiffusionPipeline.from_pretrained reads
    "_class_name": "StableDiffusionPipeline",
    "feature_extractor": [None, None],
    "image_encoder": [None, None],
    "requires_safety_checker": False,
    "safety_checker": [None, None],
    "scheduler": ["diffusers", "DDIMScheduler"],
    "text_encoder": ["transformers", "CLIPTextModel"],
    "tokenizer": ["transformers", "CLIPTokenizer"],
    "unet": ["diffusers", "UNet2DConditionModel"],
    "vae": ["diffusers", "AutoencoderKL"],
}


def write_model_index(folder: str | Path) -> Path:
    """``model_index.json``: makes the folder a complete diffusers pipeline folder."""
    import diffusers

    path = Path(folder) / "model_index.json"
    index = {"_class_name": MODEL_INDEX["_class_name"], "_diffusers_version": diffusers.__version__}
    path.write_text(json.dumps({**index, **MODEL_INDEX}, indent=2) + "\n")
    return path


def save_tiny_stable_diffusion(folder: str | Path, *, seed: int = 0) -> Path:
    """Write a tiny, seeded Stable Diffusion 1.x-shaped diffusers folder and return it."""
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    folder = Path(folder)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        unet = UNet2DConditionModel(**TINY_UNET_CONFIG)
        vae = AutoencoderKL(**TINY_VAE_CONFIG)
        text_encoder = CLIPTextModel(CLIPTextConfig(**TINY_TEXT_CONFIG))
    write_clip_tokenizer(folder / "tokenizer")
    text_encoder.save_pretrained(folder / "text_encoder")
    vae.save_pretrained(folder / "vae")
    unet.save_pretrained(folder / "unet")
    DDIMScheduler(**SD_SCHEDULER_CONFIG).save_pretrained(folder / "scheduler")
    write_model_index(folder)
    return folder
