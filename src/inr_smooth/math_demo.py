"""A small offline demonstration of the INR mathematics (no model weights, seconds on a CPU).

Part 1 (INR(T)) compares the INR smoothing loss with SmoothVideo's on constructed noise
predictions: a perfect denoiser, an error shared by all frames, a flickering error, and an
over-smoothed prediction that repeats one noise map in every frame.

Part 2 (INR(TF)) DDIM-inverts a synthetic latent clip (a blob moving over a gradient) with the
analytic noise model ``eps(z) = 0.5 tanh(z)`` on the Stable Diffusion 1.x schedule, applies
INR inversion noise for several gammas, samples back, and reports how far the final latent
moved and how well the source is reconstructed.

The full pipelines (tune, edit) replace this demonstration once they land.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from diffusers import DDIMScheduler

from .inversion import DDIMSchedule, ddim_invert, ddim_sample
from .relations import inr_smoothing_loss, smoothvideo_loss
from .tiny import SD_SCHEDULER_CONFIG


def synthetic_latents(frames: int = 8, size: int = 32, seed: int = 0) -> torch.Tensor:
    """A smooth latent clip ``(1, 4, f, h, w)``: a Gaussian blob moving right over a gradient."""
    gen = torch.Generator().manual_seed(seed)
    ys, xs = torch.meshgrid(torch.linspace(-1, 1, size), torch.linspace(-1, 1, size), indexing="ij")
    tint = torch.randn(4, 1, 1, generator=gen)
    clip = []
    for n in range(frames):
        cx = -0.6 + 1.2 * n / max(frames - 1, 1)
        blob = torch.exp(-((xs - cx) ** 2 + ys**2) / 0.08)
        clip.append(0.5 * ys + tint * blob)  # (4, h, w)
    return torch.stack(clip, dim=1).unsqueeze(0)  # (1, 4, f, h, w)


def _analytic_noise(latents: torch.Tensor, timestep: int) -> torch.Tensor:
    return 0.5 * torch.tanh(latents)


def inr_t_table(frames: int = 8, size: int = 32, seed: int = 0) -> list[dict]:
    """INR vs SmoothVideo losses on constructed predictions of the noise ``eps``."""
    gen = torch.Generator().manual_seed(seed)
    shape = (1, 4, frames, size, size)
    eps = torch.randn(shape, generator=gen)
    noisy = torch.randn(shape, generator=gen)
    scheduler = DDIMScheduler.from_config(SD_SCHEDULER_CONFIG)
    t = torch.tensor([500])
    shared_error = 0.3 * torch.randn((*shape[:2], 1, *shape[3:]), generator=gen)
    cases = {
        "perfect denoiser (eps_hat = eps)": eps,
        "error shared by all frames": eps + shared_error,
        "flickering error (independent per frame)": eps + 0.3 * torch.randn(shape, generator=gen),
        "over-smoothed (one noise map in every frame)": eps[:, :, :1].expand(shape),
    }
    rows = []
    for name, pred in cases.items():
        rows.append(
            {
                "prediction": name,
                "diffusion_mse": float((pred - eps).square().mean()),
                "inr": float(inr_smoothing_loss(pred, eps)),
                "smoothvideo_simple": float(smoothvideo_loss(pred, simple=True)),
                "smoothvideo_full_t500": float(
                    smoothvideo_loss(
                        pred,
                        noisy_latents=noisy,
                        timesteps=t,
                        alphas_cumprod=scheduler.alphas_cumprod,
                    )
                ),
            }
        )
    return rows


def inr_tf_table(
    frames: int = 8, size: int = 32, steps: int = 50, seed: int = 0
) -> tuple[list[dict], float]:
    """INR(TF) on an analytic inversion: shift of z_K and reconstruction error per setting."""
    source = synthetic_latents(frames, size, seed)
    schedule = DDIMSchedule.from_scheduler(DDIMScheduler.from_config(SD_SCHEDULER_CONFIG), steps)
    rows = []
    plain_final = None
    for apply_at, gamma in [
        ("final_step", 0.0),
        ("final_step", 0.5),
        ("final_step", 1.0),
        ("every_step", 0.5),
        ("every_step", 1.0),
    ]:
        traj = ddim_invert(
            source,
            _analytic_noise,
            schedule,
            inversion_weight=gamma,
            apply_at=apply_at,
            generator=torch.Generator().manual_seed(seed + 1),
        )
        if plain_final is None:
            plain_final = traj.final_latents
        recon = ddim_sample(traj.final_latents, _analytic_noise, schedule)
        rows.append(
            {
                "apply_at": apply_at,
                "gamma": gamma,
                "final_latent_shift_rms": _rms(traj.final_latents - plain_final),
                "reconstruction_rmse": _rms(recon - source),
            }
        )
    return rows, schedule.noise_coefficient(len(schedule) - 1)


def _rms(x: torch.Tensor) -> float:
    return float(x.square().mean().sqrt())


def _markdown(rows: list[dict]) -> str:
    keys = list(rows[0])
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    for row in rows:
        cells = [
            f"{v:.4g}" if isinstance(v, float) and math.isfinite(v) else str(v)
            for v in row.values()
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def run(
    frames: int = 8, size: int = 32, steps: int = 50, seed: int = 0, json_path: Path | None = None
) -> str:
    """Compute both tables, optionally write them as JSON, and return them as markdown."""
    loss_rows = inr_t_table(frames, size, seed)
    inversion_rows, c_k = inr_tf_table(frames, size, steps, seed)
    text = "\n".join(
        [
            "## INR(T): smoothing losses on constructed noise predictions",
            "",
            _markdown(loss_rows),
            "",
            "INR is zero for a perfect denoiser and for an error shared by all frames, and",
            "penalises the over-smoothed prediction that SmoothVideo's simple loss rewards.",
            "",
            f"## INR(TF): DDIM inversion of a synthetic {frames}-frame latent clip, {steps} steps",
            "",
            _markdown(inversion_rows),
            "",
            f"c_K of the final step = {c_k:.4f} (the damping of 'final_step').",
        ]
    )
    if json_path is not None:
        payload = {
            "inr_t": loss_rows,
            "inr_tf": inversion_rows,
            "c_K": c_k,
            "settings": {"frames": frames, "size": size, "steps": steps, "seed": seed},
        }
        from .outputs import write_json_atomic

        write_json_atomic(json_path, payload)  # no partial file; a failure is one OutputError
    return text
