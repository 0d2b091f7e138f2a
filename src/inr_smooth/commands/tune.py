"""`inr-smooth tune`: one-shot tuning with a smoothing loss, then generation."""

from __future__ import annotations

import argparse
from pathlib import Path

from . import CLIError, user_errors

TUNE_DESCRIPTION = """\
Tune a Stable Diffusion 1.x model on one video (Tune-A-Video's one-shot tuning) with a
smoothing loss, then generate one video per --edit-prompt from the DDIM-inverted source.

Smoothing (--smoothing):
  none                plain Tune-A-Video: the diffusion loss only
  inr                 INR(T): each frame's predicted noise is tied to its neighbours' from both
                      ends of the video (weights --alpha, --beta); lambda default 2.0
  smoothvideo         SmoothVideo's loss (lambda default 0.2, --lambda-factor 1000)
  smoothvideo-simple  SmoothVideo's simple variant

Values come from the defaults (Tune-A-Video's), then --config PRESET.yaml, then the flags.
The run folder (--output) gets config.yaml, log.json (losses, time and peak memory per
stage), weights/ (for `inr-smooth generate`), samples/*.mp4|gif with side-by-sides, and
checkpoint-N/ folders; Ctrl-C saves a checkpoint, --resume continues from it.

ControlVideo (--controlnet, one --control each): the tuning is conditioned on ControlNet maps
of every frame (canny computed here; hed/depth/pose with the optional detectors; or a video /
folder of your maps), with ControlVideo's key-frame attention, temporal branch, trainable set
and defaults (8 frames, 300 steps, guidance 12, INR lambda 0.2) unless given.

example:
  inr-smooth tune --config configs/tune/jeep-snow.yaml --video car-turn.mp4 \\
      --model stable-diffusion-v1-5/stable-diffusion-v1-5 --output runs/jeep-inr
  inr-smooth tune --model mini --controlnet mini-canny --control canny --video clip.gif \\
      --prompt "a red circle moving right on a blue background" --size 64 \\
      --edit-prompt "a green square moving right on a blue background" --output runs/cv
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "tune",
        help="one-shot tuning with none | smoothvideo | inr smoothing, then generation",
        description=TUNE_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    io = p.add_argument_group("input and output")
    io.add_argument("--video", help="source video (mp4/webm/mov/gif or a folder of frames)")
    io.add_argument("--prompt", help="caption of the source video")
    io.add_argument(
        "--edit-prompt", dest="edit_prompts", action="append", metavar="TEXT",
        help="prompt of a video to generate after tuning (repeatable)",
    )  # fmt: skip
    io.add_argument("--model", help="SD 1.x hub id, local diffusers folder, or 'mini'")
    io.add_argument("--config", help="YAML preset (keys = TuneConfig fields)")
    io.add_argument("--output", help="run folder (default outputs/tune)")
    io.add_argument("--resume", action="store_true", help="continue from the last checkpoint")
    sm = p.add_argument_group("smoothing")
    sm.add_argument(
        "--smoothing", choices=("none", "smoothvideo", "smoothvideo-simple", "inr"),
        help="extra loss: inr = INR(T); smoothvideo = SmoothVideo's (-simple: mean |second "
        "difference of the predicted noise|); none = plain tuning (inr)",
    )  # fmt: skip
    sm.add_argument("--smooth-weight", type=float, metavar="LAMBDA", help="weight of the term")
    sm.add_argument("--alpha", type=float, help="INR: weight of last-to-first (0.5)")
    sm.add_argument("--beta", type=float, help="INR: weight of first-to-last (0.5)")
    sm.add_argument("--chain", choices=("adjacent", "anchored"), help="INR relation chain")
    sm.add_argument("--detach-anchor", action="store_true", default=None,
                    help="INR: neighbour term as a constant (one-way gradients)")  # fmt: skip
    sm.add_argument("--lambda-factor", type=float, help="SmoothVideo factor (1000)")
    tr = p.add_argument_group("frames and tuning (defaults: Tune-A-Video's)")
    tr.add_argument("--frames", type=int, help="number of frames (24; 8 when memory is short)")
    tr.add_argument("--size", type=int, help="frame side in pixels, a multiple of 8 (512)")
    tr.add_argument("--start", type=int, help="first frame index (0)")
    tr.add_argument("--stride", type=int, help="take every N-th frame (2)")
    tr.add_argument("--steps", type=int, help="tuning steps (500)")
    tr.add_argument("--lr", dest="learning_rate", type=float, help="learning rate (3e-5)")
    tr.add_argument(
        "--attention",
        choices=("sparse_causal", "first_frame", "keyframe", "full", "none"),
        help="cross-frame self-attention (sparse_causal: Tune-A-Video's first + previous frame)",
    )
    tr.add_argument("--mixed-precision", choices=("auto", "no", "fp16", "bf16"),
                    help="autocast dtype (auto: bf16 or fp16 on CUDA, none on CPU)")  # fmt: skip
    tr.add_argument(
        "--no-gradient-checkpointing", dest="gradient_checkpointing", action="store_false",
        default=None, help="faster, more memory",
    )  # fmt: skip
    tr.add_argument("--use-8bit-adam", action="store_true", default=None, help="needs bitsandbytes")
    tr.add_argument("--checkpoint-every", type=int, help="steps between checkpoints (100)")
    tr.add_argument("--validate-every", type=int, help="steps between validation samples (off)")
    tr.add_argument("--device", help="auto | cpu | cuda | cuda:N")
    cv = p.add_argument_group("ControlVideo (ControlNet-conditioned tuning)")
    cv.add_argument(
        "--controlnet", dest="controlnets", action="append", metavar="PATH_OR_ID",
        help="a diffusers ControlNet (hub id or folder; mini-canny / mini-depth for --model "
        "mini); repeatable, one --control each",
    )  # fmt: skip
    cv.add_argument(
        "--control", dest="controls", action="append", metavar="canny|hed|depth|pose|PATH",
        help="the maps of the matching --controlnet: a detector run on the source frames, or a "
        "video / folder of maps (one per tuned frame or per source frame)",
    )  # fmt: skip
    cv.add_argument("--control-scale", dest="control_scales", action="append", type=float,
                    metavar="S", help="conditioning scale: one for all or one per ControlNet "
                    "(1.0)")  # fmt: skip
    cv.add_argument("--control-guidance-start", type=float, metavar="FRACTION",
                    help="ControlNets act from this fraction of the sampling steps (0)")
    cv.add_argument("--control-guidance-end", type=float, metavar="FRACTION",
                    help="... up to this fraction (1)")  # fmt: skip
    gen = p.add_argument_group("generation")
    gen.add_argument("--inference-steps", type=int, help="DDIM steps (50)")
    gen.add_argument("--guidance-scale", type=float, help="classifier-free guidance (12.5)")
    gen.add_argument("--seed", type=int, help="seed of noise and timesteps (33)")
    p.set_defaults(handler=_run_tune)


def _run_tune(args: argparse.Namespace) -> None:
    from ..config import load_config
    from ..pipelines.tune import TuneConfig, tune

    keys = [
        "video", "prompt", "edit_prompts", "model", "output", "smoothing", "smooth_weight",
        "alpha", "beta", "chain", "detach_anchor", "lambda_factor", "frames", "size", "start",
        "stride", "steps", "learning_rate", "attention", "mixed_precision",
        "gradient_checkpointing", "use_8bit_adam", "checkpoint_every", "validate_every",
        "device", "inference_steps", "guidance_scale", "seed", "controlnets", "controls",
        "control_scales", "control_guidance_start", "control_guidance_end",
    ]  # fmt: skip
    try:
        config = load_config(TuneConfig, args.config, **{k: getattr(args, k) for k in keys})
        if config.controlnets:  # ControlVideo's defaults under the preset's keys and the flags
            config = _controlvideo(config, args, keys)
        if not config.video or not config.prompt:
            raise CLIError("--video and --prompt are required (or set them in --config)")
        result = tune(config, resume=args.resume)
    except user_errors() as exc:
        raise CLIError(str(exc)) from None
    print(f"tuned weights: {result.weights}")
    for path in result.samples:
        print(f"wrote {path}")


def _controlvideo(config, args: argparse.Namespace, keys: list[str]):
    import yaml

    from ..pipelines.controlvideo import controlvideo_config

    explicit = {k for k in keys if getattr(args, k) is not None}
    if args.config:
        explicit |= set(yaml.safe_load(Path(args.config).read_text()) or {})
    return controlvideo_config(explicit, **{k: getattr(config, k) for k in explicit})
