"""`inr-smooth generate`: sample videos from the weights of a tuning run."""

from __future__ import annotations

import argparse

from . import CLIError, user_errors

GENERATE_DESCRIPTION = """\
Generate videos from the weights/ folder of an `inr-smooth tune` run. By default sampling
starts from the DDIM-inverted source latent stored with the weights (as Tune-A-Video does);
--from-noise starts from seeded Gaussian noise. With another --inference-steps than the run
used, the source video is inverted again with the tuned model (from the path recorded at
tuning time, or --source). Videos go into the run's samples/ folder (--output to change);
existing files are never replaced without --overwrite.

example:
  inr-smooth generate --weights runs/mini/weights \\
      --prompt "a yellow triangle moving right on a blue background"
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "generate",
        help="sample videos from a tuned model",
        description=GENERATE_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--weights", required=True, help="the weights/ folder of a tuning run")
    p.add_argument("--prompt", dest="prompts", action="append", required=True, metavar="TEXT",
                   help="prompt of a video to generate (repeatable)")  # fmt: skip
    p.add_argument("--output", help="folder for the videos (default: RUN/samples)")
    p.add_argument("--overwrite", action="store_true", help="replace videos of the same prompt")
    p.add_argument("--model", help="base model (default: the one the weights were tuned from)")
    p.add_argument("--source", help="source video: side-by-sides, and re-inversion if needed")
    p.add_argument("--from-noise", action="store_true", help="start from noise, not the source")
    p.add_argument("--inference-steps", type=int, help="DDIM steps (default: as tuned)")
    p.add_argument("--guidance-scale", type=float, help="guidance (default: as tuned)")
    p.add_argument("--seed", type=int, default=33, help="seed of --from-noise (33)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (auto)")
    p.set_defaults(handler=_run_generate)


def _run_generate(args: argparse.Namespace) -> None:
    from ..pipelines.generate import GenerateConfig, prepare_generate

    try:  # the weights folder, values and outputs are checked before torch is imported
        config = GenerateConfig(
            weights=args.weights, prompts=tuple(args.prompts), output=args.output,
            model=args.model, guidance_scale=args.guidance_scale,
            inference_steps=args.inference_steps, from_noise=args.from_noise,
            source=args.source, seed=args.seed, device=args.device, overwrite=args.overwrite,
        )  # fmt: skip
        prepare_generate(config)
        from ..pipelines.generate import generate

        paths = generate(config)
    except user_errors() as exc:
        raise CLIError(str(exc)) from None
    for path in paths:
        print(f"wrote {path}")
