"""`inr-smooth edit`: training-free, inversion-based video editing with INR inversion noise."""

from __future__ import annotations

import argparse
from pathlib import Path

from . import CLIError, user_errors

EDIT_DESCRIPTION = """\
Edit a video without training (FateZero's recipe): DDIM-invert it with a prompt describing it
(--source-prompt), rebuild the inversion noise with INR(TF), then DDIM-sample with the edit
prompt (--prompt) and classifier-free guidance, keeping the source's structure and motion by
reusing its self-attention (attention fusion) and its cross-attention (prompt-to-prompt).

INR inversion noise (INR(TF)):
  Each frame's inversion noise is rebuilt from its neighbours' (first -> last and last ->
  first, weights --alpha/--beta) plus the differences of a random noise rho, so neighbouring
  frames start the edit from related noise and the result flickers less.
  --inversion-weight GAMMA  eps* = (1 - GAMMA) eps_inv + GAMMA eps_inr; 0 = plain DDIM
                            inversion, 1.0 (default) as the paper uses with FateZero
  --apply-at final_step     (default) only the last inversion step uses eps*: only z_K, the
                            latent sampling starts from, moves, by c_K GAMMA (eps_inr -
                            eps_inv) with c_K about 0.11 for SD 1.x at 50 steps
  --apply-at every_step     every inversion step uses eps* (the model sees the changed path)
  --noise-source gaussian   (default) rho ~ N(0, 1) from --seed
  --noise-source implied    rho = the noise that turns the source into the inverted latent

Attention fusion (FateZero):
  During inversion the self-attention of the smaller-resolution layers is stored (as fp16
  tokens, on the GPU or spilled to disk: --attention-store); during the first --self-replace
  fraction of the sampling steps the edit uses the source's attention maps. --blend-words
  WORD... (words of the source prompt) lets the region those words attend to follow the edit
  (for shape or object changes); without them the whole frame keeps the source's maps.

Prompt-to-prompt (FateZero's p2p_config):
  --cross-replace FRACTION  the first FRACTION of the sampling steps (0.8) use the inversion's
                            cross-attention maps, aligned to the edit prompt: word swap when
                            both prompts have as many words, else refinement (--controller);
                            new words keep their own maps. 0 turns it off
  --reweight WORD=SCALE     multiply the edit prompt's WORD's cross-attention by SCALE inside
                            those steps (FateZero's eq_params, e.g. watercolor=10)
  --attention sparse_causal (default) FateZero's spatio-temporal attention: first + previous
                            frame; middle (its style configs): the middle frame, with
                            --cross-frame-min-channels 640 for per-frame attention in SD's
                            320-channel blocks

Video-P2P (--editor video-p2p; Liu et al. 2023):
  The source is DDIM-inverted (the pivot), then null-text inversion optimises one empty-prompt
  embedding per step (shared by all frames) so that guided sampling reconstructs the source;
  the batch [source, edit] is sampled with decoupled guidance (the source row with the
  optimised embeddings, the edit row with the plain empty prompt) under prompt-to-prompt
  control of the cross-attention, the source's temporal-attention maps for the first
  --self-replace steps and local blending by --blend-words (and --edit-blend-words, the edit
  prompt's words). Defaults where nothing is set: --cross-replace 0.2, frame attention
  (first_frame), --inversion-weight 0.5 (the paper's value for Video-P2P).
  --weights RUN/weights     the weights/ of a T2S tuning run (inr-smooth tune --config
                            configs/tune/video-p2p-rabbit.yaml ...): its base model, video,
                            caption and frames are taken from it unless given; without it the
                            base model is edited training-free
  --fast                    no null-text optimisation (Video-P2P's --fast): the source row is
                            sampled without guidance
  The output folder also gets <prompt>-reconstruction.mp4 (the source row).

Inversion cache:
  With --cache-dir DIR the inverted latents and stored attention are saved there (one
  safetensors file per video, prompt, model, steps and attention settings): trying other edit
  prompts, guidance scales or GAMMA values on the same video skips the inversion.

Values come from the defaults (8 frames, 50 DDIM steps, guidance 7.5; the frame size is the
model's native size: SD 1.x 512, mini 64) or the model folder's recommendations
(inr_smooth_defaults.json; mini: 20 steps), then --config PRESET.yaml (keys = EditConfig
fields), then the flags; log.json records where each value came from. The output folder gets
<prompt>.mp4, <prompt>.gif, <prompt>-side-by-side.mp4 (source | edit), config.yaml and
log.json (time and peak memory per stage); it is written in a temporary folder and appears
only when complete (--overwrite replaces an existing one).

examples:
  inr-smooth edit --model mini --video clip.gif \\
      --source-prompt "a red circle moving right on a blue background" \\
      --prompt "a green square moving right on a blue background" --output runs/mini-edit
  inr-smooth edit --config configs/edit/van-gogh-flower.yaml --video sunflower.mp4 \\
      --output runs/sunflower-van-gogh
  inr-smooth edit --config configs/edit/video-p2p-rabbit.yaml \\
      --weights runs/rabbit-t2s/weights --output runs/origami-rabbit
  inr-smooth edit --video car-turn.mp4 --source-prompt "a jeep car is moving on the road" \\
      --prompt "a jeep car is moving on the road, Van Gogh style" \\
      --model stable-diffusion-v1-5/stable-diffusion-v1-5 --inversion-weight 1.0 \\
      --cache-dir ~/.cache/inr-smooth --output runs/jeep-van-gogh
"""

_KEYS = (
    "video", "source_prompt", "prompt", "model", "output", "inversion_weight", "apply_at",
    "noise_source", "alpha", "beta", "chain", "frames", "size", "start", "stride",
    "inference_steps", "guidance_scale", "attention", "self_replace", "blend_words",
    "blend_threshold", "fusion_min_downsample", "attention_store", "cache_dir", "seed", "fps",
    "dtype", "device", "cross_replace", "controller", "reweight", "cross_frame_min_channels",
    "editor", "weights", "fast", "null_text_iterations", "edit_blend_words",
)  # fmt: skip


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "edit",
        help="training-free editing with INR inversion noise",
        description=EDIT_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    io = p.add_argument_group("input and output")
    io.add_argument("--video", help="source video (mp4/webm/mov/gif or a folder of frames)")
    io.add_argument("--source-prompt", help="what the source video shows (inversion prompt)")
    io.add_argument("--prompt", help="what the edited video should show")
    io.add_argument("--model", help="SD 1.x hub id, local diffusers folder, or 'mini'")
    io.add_argument("--config", help="YAML preset (keys = EditConfig fields)")
    io.add_argument("--output", help="output folder, must not exist or be empty (outputs/edit)")
    io.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    io.add_argument("--cache-dir", help="inversion cache folder (default: no cache)")
    inr = p.add_argument_group("INR inversion noise")
    inr.add_argument("--inversion-weight", type=float, metavar="GAMMA", help="in [0, 1] (1.0)")
    inr.add_argument("--apply-at", choices=("final_step", "every_step"),
                     help="rebuild only the last inversion step's noise, or every step's "
                     "(final_step)")  # fmt: skip
    inr.add_argument("--noise-source", choices=("gaussian", "implied"),
                     help="random noise: seeded N(0, 1), or the noise implied by each "
                     "inverted latent (gaussian)")  # fmt: skip
    inr.add_argument("--alpha", type=float, help="weight of last-to-first (0.5)")
    inr.add_argument("--beta", type=float, help="weight of first-to-last (0.5)")
    inr.add_argument("--chain", choices=("adjacent", "anchored"), help="relation chain")
    inr.add_argument("--seed", type=int, help="seed of the Gaussian noise (0)")
    fr = p.add_argument_group("frames and sampling")
    fr.add_argument("--frames", type=int, help="number of frames, at least 2 (model's, else 8)")
    fr.add_argument("--size", type=int,
                    help="frame side in pixels (the model's native size: SD 512, mini 64)")
    fr.add_argument("--start", type=int, help="first frame index (0)")
    fr.add_argument("--stride", type=int, help="take every N-th frame (1)")
    fr.add_argument("--inference-steps", type=int, help="DDIM steps (model's, else 50)")
    fr.add_argument("--guidance-scale", type=float,
                    help="classifier-free guidance (model's, else 7.5)")  # fmt: skip
    fr.add_argument(
        "--attention",
        choices=("sparse_causal", "middle", "full", "first_frame", "keyframe", "none"),
        help="cross-frame self-attention (sparse_causal: first + previous frame, FateZero's "
        "default; middle: the middle frame, its style configs; full: all frames)",
    )  # fmt: skip
    fr.add_argument(
        "--cross-frame-min-channels", type=int, metavar="N",
        help="blocks with fewer channels attend per frame (FateZero's least_sc_channel; 0)",
    )  # fmt: skip
    fr.add_argument("--fps", type=float, help="frame rate of the written videos (8)")
    fu = p.add_argument_group("attention fusion")
    fu.add_argument(
        "--self-replace",
        type=float,
        metavar="FRACTION",
        help="share of sampling steps using the source's self-attention (0.5)",
    )
    fu.add_argument(
        "--blend-words",
        nargs="+",
        metavar="WORD",
        help="source-prompt words whose region follows the edit",
    )
    fu.add_argument("--blend-threshold", type=float, help="mask threshold in (0, 1] (0.3)")
    fu.add_argument(
        "--fusion-min-downsample",
        type=int,
        metavar="N",
        help="fuse layers at least N times smaller than the latent (2)",
    )
    fu.add_argument(
        "--attention-store",
        choices=("auto", "device", "disk"),
        help="stored attention on the device or spilled to disk (auto)",
    )
    pp = p.add_argument_group("prompt-to-prompt (cross-attention control)")
    pp.add_argument(
        "--cross-replace", type=float, metavar="FRACTION",
        help="share of sampling steps using the source's cross-attention maps (0.8; 0: off)",
    )  # fmt: skip
    pp.add_argument(
        "--controller", choices=("auto", "replace", "refine"),
        help="token alignment: word swap, refinement, or auto (word swap iff the prompts have "
        "as many words)",
    )  # fmt: skip
    pp.add_argument(
        "--reweight", nargs="+", metavar="WORD=SCALE",
        help="scale the cross-attention of edit-prompt words (FateZero's eq_params)",
    )  # fmt: skip
    vp = p.add_argument_group("Video-P2P (--editor video-p2p)")
    vp.add_argument("--editor", choices=("fatezero", "video-p2p"),
                    help="FateZero's editor (fatezero, the default) or Video-P2P's")  # fmt: skip
    vp.add_argument("--weights", metavar="RUN/weights",
                    help="a T2S tuning run's weights/ folder (default: training-free)")  # fmt: skip
    vp.add_argument("--fast", action="store_true", default=None,
                    help="skip the null-text optimisation (Video-P2P's --fast)")  # fmt: skip
    vp.add_argument("--null-text-iterations", type=int, metavar="N",
                    help="Adam iterations per step of the null-text optimisation, at most (10)")
    vp.add_argument("--edit-blend-words", nargs="+", metavar="WORD",
                    help="the edit prompt's blend words (default: --blend-words)")  # fmt: skip
    hw = p.add_argument_group("hardware")
    hw.add_argument("--device", help="auto | cpu | cuda | cuda:N")
    hw.add_argument("--skip-memory-check", action="store_true",
                    help="run even when the up-front estimate says it will not fit")  # fmt: skip
    hw.add_argument(
        "--dtype",
        choices=("auto", "fp16", "bf16", "fp32"),
        help="model precision (auto: fp16 on CUDA, fp32 on CPU)",
    )
    p.set_defaults(handler=_run_edit)


def _run_edit(args: argparse.Namespace) -> None:
    from ..config import load_config_with_sources
    from ..pipelines.edit_config import EditConfig, check_output, prepare_edit, read_source

    overrides = {key: getattr(args, key) for key in _KEYS}
    try:  # everything that needs no model is checked before torch is imported
        config, sources = load_config_with_sources(EditConfig, args.config, **overrides)
        prepared = prepare_edit(config, sources)
        check_output(Path(prepared.config.output).expanduser(), overwrite=args.overwrite)
        read_source(prepared.config)
        from ..pipelines.edit import edit

        result = edit(prepared, overwrite=args.overwrite,
                      memory_check=not args.skip_memory_check)  # fmt: skip
    except user_errors() as exc:
        raise CLIError(str(exc)) from None
    hit = result.log.get("cache", {}).get("hit")
    if hit is not None:
        print(f"inversion cache: {'hit' if hit else 'miss (saved)'}")
    for path in result.files:
        print(f"wrote {path}")
