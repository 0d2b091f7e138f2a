"""`inr-smooth tune`: one-shot tuning with a smoothing loss, then generation."""

from __future__ import annotations

import argparse

from . import CLIError, user_errors

TUNE_DESCRIPTION = """\
Tune a Stable Diffusion 1.x model on one video (Tune-A-Video's one-shot tuning) with a
smoothing loss, then generate one video per --edit-prompt from the DDIM-inverted source.

Smoothing (--smoothing):
  none                plain Tune-A-Video: the diffusion loss only
  inr                 INR(T): each frame's predicted-noise error is tied to its neighbours'
                      from both ends of the video; lambda default 2.0 (the paper's). With the
                      default --chain adjacent, both directions compare the same frame pairs,
                      so --alpha and --beta only rescale lambda (forward-only and
                      backward-only give the same loss); they differ with --chain anchored or
                      --detach-anchor
  smoothvideo         SmoothVideo's loss (lambda default 0.2, --lambda-factor 1000)
  smoothvideo-simple  SmoothVideo's simple variant

Values come from Tune-A-Video's defaults (24 frames, 500 steps, lr 3e-5, guidance 12.5, 50
DDIM steps) or, where the model folder recommends others (inr_smooth_defaults.json; mini:
8 frames, 60 steps, ...), from the model; the frame size defaults to the model's native size
(SD 1.x: 512, mini: 64); then --config PRESET.yaml, then the flags. log.json records where
each value came from.

The run folder (--output) gets config.yaml (resolved), log.json (losses, time and peak memory
per stage), weights/ (for `inr-smooth generate`; written the moment tuning ends), samples/
(mp4, gif and a side-by-side per prompt) and checkpoint-N/ folders. Ctrl-C stops at the next
step and saves a checkpoint; --resume continues from it (or, after tuning had finished, goes
straight to generation); settings that would change the tuned weights are refused with
--resume. A run that fails before a checkpoint exists leaves nothing behind.

ControlVideo (--controlnet, one --control each): the tuning is conditioned on ControlNet maps
of every frame (canny computed here; hed/depth/pose with the optional detectors; or a video /
folder of your maps), with ControlVideo's key-frame attention, temporal branch, trainable set
and defaults (8 frames spread over the clip, 300 steps, guidance 12, INR lambda 0.2) where
neither you nor the model folder set a value.

examples:
  inr-smooth tune --model mini --video clip.gif \\
      --prompt "a red circle moving right on a blue background" \\
      --edit-prompt "a green square moving right on a blue background" --output runs/mini
  inr-smooth tune --config configs/tune/jeep-car.yaml --video car-turn.mp4 --output runs/jeep-inr
  inr-smooth tune --model mini --controlnet mini-canny --control canny --video clip.gif \\
      --prompt "a red circle moving right on a blue background" \\
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
    io.add_argument("--resume", action="store_true", help="continue the run in --output")
    io.add_argument("--overwrite", action="store_true",
                    help="replace another run in --output (it is deleted once the model "
                    "has loaded)")  # fmt: skip
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
    tr.add_argument("--frames", type=int,
                    help="number of frames (model's recommendation, else 24)")  # fmt: skip
    tr.add_argument("--size", type=int,
                    help="frame side in pixels (the model's native size: SD 512, mini 64)")
    tr.add_argument("--start", type=int, help="first frame index (0)")
    tr.add_argument("--stride", type=int, help="take every N-th frame (model's, else 2)")
    tr.add_argument("--resize", choices=("exact", "crop"),
                    help="exact: squash to the size (Tune-A-Video's); crop: keep the aspect "
                    "ratio and crop the centre (exact)")  # fmt: skip
    tr.add_argument("--latent-sampling", choices=("posterior", "mean"),
                    help="posterior: a new VAE sample of the frames every step "
                    "(Tune-A-Video's); mean: the posterior mean (posterior)")  # fmt: skip
    tr.add_argument("--steps", type=int, help="tuning steps (model's, else 500)")
    tr.add_argument("--lr", dest="learning_rate", type=float,
                    help="learning rate (model's, else 3e-5)")  # fmt: skip
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
    tr.add_argument("--skip-memory-check", action="store_true",
                    help="run even when the up-front estimate says it will not fit")  # fmt: skip
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
    gen.add_argument("--inference-steps", type=int, help="DDIM steps (model's, else 50)")
    gen.add_argument("--guidance-scale", type=float,
                     help="classifier-free guidance (model's, else 12.5)")  # fmt: skip
    gen.add_argument("--seed", type=int, help="seed of noise and timesteps (33)")
    p.set_defaults(handler=_run_tune)


KEYS = (
    "video", "prompt", "edit_prompts", "model", "output", "smoothing", "smooth_weight", "alpha",
    "beta", "chain", "detach_anchor", "lambda_factor", "frames", "size", "start", "stride",
    "resize", "latent_sampling", "steps", "learning_rate", "attention", "mixed_precision",
    "gradient_checkpointing", "use_8bit_adam", "checkpoint_every", "validate_every", "device",
    "inference_steps", "guidance_scale", "seed", "controlnets", "controls", "control_scales",
    "control_guidance_start", "control_guidance_end",
)  # fmt: skip


def _run_tune(args: argparse.Namespace) -> None:
    from ..config import load_config_with_sources
    from ..pipelines.tune_config import TuneConfig, prepare_tune
    from ..pipelines.tune_run import open_run

    try:  # everything that needs no model is checked before torch is imported
        config, sources = load_config_with_sources(
            TuneConfig, args.config, **{k: getattr(args, k) for k in KEYS}
        )
        prepared = prepare_tune(config, sources)
        open_run(prepared, resume=args.resume, overwrite=args.overwrite)
        from ..pipelines.tune import tune

        result = tune(prepared, resume=args.resume, overwrite=args.overwrite,
                      memory_check=not args.skip_memory_check)  # fmt: skip
    except user_errors() as exc:
        raise CLIError(str(exc)) from None
    print(f"tuned weights: {result.weights}")
    for path in result.samples:
        print(f"wrote {path}")
