"""inr-smooth-mini: a small text-to-image latent diffusion model of the synthetic shapes world.

It ships inside the package as a diffusers folder and loads through the same code path as
Stable Diffusion (``--model mini`` or ``--model`` the folder). Trained by
``python -m inr_smooth.mini.train`` (see that module and ``model/training.json``).
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["MINI_CONTROLNETS", "MINI_CONTROLNET_DIR", "MINI_MODEL_DIR", "resolve_controlnet",
           "resolve_model"]  # fmt: skip

MINI_MODEL_DIR = Path(__file__).resolve().parent / "model"
MINI_CONTROLNET_DIR = Path(__file__).resolve().parent / "controlnets"
# the mini ControlNets (python -m inr_smooth.mini.train_controlnet) and the condition each reads
MINI_CONTROLNETS = {"mini-canny": "canny", "mini-depth": "depth"}


def resolve_model(name_or_path: str) -> str:
    """``"mini"`` -> the shipped model folder; anything else is returned unchanged."""
    if name_or_path != "mini":
        return name_or_path
    if not (MINI_MODEL_DIR / "unet" / "config.json").is_file():
        raise FileNotFoundError(
            f"the shipped inr-smooth-mini model is missing from {MINI_MODEL_DIR} (a broken "
            "install? reinstall inr-smooth, or train it: python -m inr_smooth.mini.train)"
        )
    return str(MINI_MODEL_DIR)


def resolve_controlnet(name_or_path: str) -> str:
    """``"mini-canny"`` / ``"mini-depth"`` -> the shipped ControlNet folder; anything else is
    returned unchanged."""
    if name_or_path not in MINI_CONTROLNETS:
        return name_or_path
    folder = MINI_CONTROLNET_DIR / MINI_CONTROLNETS[name_or_path]
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(
            f"the shipped ControlNet {name_or_path} is missing from {folder} (a broken install? "
            f"reinstall inr-smooth, or train it: python -m inr_smooth.mini.train_controlnet "
            f"--condition {MINI_CONTROLNETS[name_or_path]})"
        )
    return str(folder)
