"""Smoothing methods compared on the synthetic world, with exact ground truth.

One *case* is a source clip (a scene of :mod:`inr_smooth.synthetic`) and an edit of it (another
colour and shape, same motion). Every method produces the edited clip from the source:

* ``tune:none`` / ``tune:smoothvideo`` / ``tune:inr`` -- one-shot tuning (Tune-A-Video) with
  that smoothing loss, then generation from the inverted source;
* ``edit:plain`` / ``edit:inr`` -- training-free inversion editing with gamma 0 / the default;
* ``tune:controlvideo`` / ``tune:controlvideo+inr`` (not in :data:`METHODS`; select them) --
  ControlVideo's ControlNet-conditioned tuning with the source's Canny maps and the shipped
  ``mini-canny`` ControlNet (:data:`CONTROLVIDEO_METHODS`), without and with INR(T);
* ``edit:video-p2p`` / ``edit:video-p2p+inr`` (not in :data:`METHODS`; select them) -- Video-P2P:
  T2S tuning on the source (shared by the two), then its editor (null-text inversion, decoupled
  guidance, prompt-to-prompt control with the shape words blended) with gamma 0 / the paper's
  0.5 for Video-P2P (:data:`VIDEO_P2P_METHODS`).

Each output is scored against the edited scene without any learned metric (:mod:`.scores`):
colour accuracy and shape IoU where the output object is, colour flicker and the DIS warp
error, and the object's motion (motion ratio, trajectory error) beside them.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from .results_log import ResultsLog
from .scores import METRICS, markdown_table, paired_differences, score_video, summarize
from .synthetic import COLORS, SHAPES, Scene, random_scene, render

__all__ = [
    "METHODS",
    "METRICS",
    "QualitySettings",
    "edit_of",
    "markdown_table",
    "one_torch_thread",
    "paired_differences",
    "run_case",
    "score_video",
    "summarize",
]

METHODS = ("tune:none", "tune:smoothvideo", "tune:inr", "edit:plain", "edit:inr")
CONTROLVIDEO_METHODS = ("tune:controlvideo", "tune:controlvideo+inr")
VIDEO_P2P_METHODS = ("edit:video-p2p", "edit:video-p2p+inr")
WORLDS = ("simple", "rich")  # the splits of the synthetic world (see random_cases)


@dataclass(frozen=True)
class QualitySettings:
    """The demo's settings: sized so that one case runs in minutes on a 2-core CPU."""

    model: str = "mini"
    frames: int = 8
    size: int = 64
    tune_steps: int = 60
    tune_learning_rate: float = 1e-4
    inference_steps: int = 20
    tune_guidance_scale: float = 2.0  # the mini's: see benchmarks/results/motion-diagnosis
    edit_guidance_scale: float = 7.5
    inversion_weight: float = 1.0  # gamma of edit:inr
    smooth_weight: float | None = None  # lambda of tune:inr / smoothvideo; None: the default
    controlnet: str = "mini-canny"  # of tune:controlvideo*; must fit the model
    control: str = "canny"  # its maps: computed from the source clip
    video_p2p_inversion_weight: float = 0.5  # gamma of edit:video-p2p+inr (the paper's)
    seed: int = 0
    device: str = "auto"


def edit_of(scene: Scene, rng: np.random.Generator | None = None) -> Scene:
    """The target of an edit: another colour (not the background's) and another shape."""
    rng = rng or np.random.default_rng(0)
    colors = [c for c in COLORS if c not in (scene.color, scene.background_color)]
    shapes = [s for s in SHAPES if s != scene.shape]
    return scene.edited(color=str(rng.choice(colors)), shape=str(rng.choice(shapes)))


def _tune_method(smoothing: str) -> Callable:
    def run(source: Path, scene: Scene, target: Scene, s: QualitySettings, work: Path):
        from .pipelines.tune import TuneConfig, tune

        config = TuneConfig(
            video=str(source), prompt=scene.caption, edit_prompts=(target.caption,),
            model=s.model, output=str(work / f"tune-{smoothing}"), smoothing=smoothing,
            smooth_weight=s.smooth_weight if smoothing != "none" else None,
            frames=s.frames, size=s.size, stride=1, steps=s.tune_steps,
            learning_rate=s.tune_learning_rate, gradient_checkpointing=False,
            checkpoint_every=0, guidance_scale=s.tune_guidance_scale,
            inference_steps=s.inference_steps, seed=s.seed, device=s.device,
        )  # fmt: skip
        result = tune(config, progress=False)
        return _read(result.samples[0]), result.log

    return run


def _edit_method(gamma_of: Callable[[QualitySettings], float], name: str) -> Callable:
    def run(source: Path, scene: Scene, target: Scene, s: QualitySettings, work: Path):
        from .pipelines.edit import EditConfig, edit

        config = EditConfig(
            video=str(source), source_prompt=scene.caption, prompt=target.caption,
            model=s.model, output=str(work / f"edit-{name}"), inversion_weight=gamma_of(s),
            frames=s.frames, size=s.size, inference_steps=s.inference_steps,
            guidance_scale=s.edit_guidance_scale, seed=s.seed, device=s.device,
        )  # fmt: skip
        result = edit(config, progress=False)
        return _read(result.files[0]), result.log

    return run


def _controlvideo_method(smoothing: str) -> Callable:
    def run(source: Path, scene: Scene, target: Scene, s: QualitySettings, work: Path):
        from .pipelines.controlvideo import controlvideo_config
        from .pipelines.tune import tune

        # given only when set: an explicit field overrides ControlVideo's default
        weight = {} if s.smooth_weight is None or smoothing == "none" else {
            "smooth_weight": s.smooth_weight}  # fmt: skip

        config = controlvideo_config(
            video=str(source), prompt=scene.caption, edit_prompts=(target.caption,),
            model=s.model, output=str(work / f"controlvideo-{smoothing}"), smoothing=smoothing,
            controlnets=(s.controlnet,), controls=(s.control,), frames=s.frames, size=s.size,
            stride=1, steps=s.tune_steps, learning_rate=s.tune_learning_rate,
            gradient_checkpointing=False, checkpoint_every=0,
            guidance_scale=s.tune_guidance_scale, inference_steps=s.inference_steps,
            seed=s.seed, device=s.device, **weight,
        )  # fmt: skip
        result = tune(config, progress=False)
        return _read(result.samples[0]), result.log

    return run


def _t2s_weights(source: Path, scene: Scene, s: QualitySettings, work: Path) -> tuple[Path, dict]:
    """Video-P2P's first stage on the source, once per case (``work/t2s``): the weights folder
    and the tuning run's stages."""
    import json

    from .pipelines.tune import tune
    from .pipelines.video_p2p_config import t2s_config

    run = work / "t2s"
    if not (run / "log.json").is_file():
        tune(t2s_config(
            video=str(source), prompt=scene.caption, model=s.model, output=str(run),
            smoothing="none", frames=s.frames, size=s.size, steps=s.tune_steps,
            learning_rate=s.tune_learning_rate, gradient_checkpointing=False,
            checkpoint_every=0, inference_steps=s.inference_steps, seed=s.seed, device=s.device,
        ), progress=False)  # fmt: skip
    stages = json.loads((run / "log.json").read_text()).get("stages", {})
    return run / "weights", {f"t2s_{name}": stage for name, stage in stages.items()}


def _video_p2p_method(gamma_of: Callable[[QualitySettings], float], name: str) -> Callable:
    def run(source: Path, scene: Scene, target: Scene, s: QualitySettings, work: Path):
        from .pipelines.edit import edit
        from .pipelines.video_p2p_config import video_p2p_config

        weights, tuning = _t2s_weights(source, scene, s, work)
        swapped = {w: 2.0 for w in (target.color, target.shape)}  # the new words, x 2
        prepared = video_p2p_config(
            video=str(source), source_prompt=scene.caption, prompt=target.caption,
            model=s.model, weights=str(weights), output=str(work / f"video-p2p-{name}"),
            inversion_weight=gamma_of(s), frames=s.frames, size=s.size, start=0, stride=1,
            inference_steps=s.inference_steps, guidance_scale=s.edit_guidance_scale,
            blend_words=(scene.shape,), edit_blend_words=(target.shape,), reweight=swapped,
            seed=s.seed, device=s.device,
        )  # fmt: skip
        result = edit(prepared, progress=False)
        return _read(result.files[0]), {"stages": {**tuning, **result.log["stages"]}}

    return run


RUNNERS = {
    "tune:none": _tune_method("none"),
    "tune:smoothvideo": _tune_method("smoothvideo"),
    "tune:inr": _tune_method("inr"),
    "edit:plain": _edit_method(lambda s: 0.0, "plain"),
    "edit:inr": _edit_method(lambda s: s.inversion_weight, "inr"),
    "tune:controlvideo": _controlvideo_method("none"),
    "tune:controlvideo+inr": _controlvideo_method("inr"),
    "edit:video-p2p": _video_p2p_method(lambda s: 0.0, "plain"),
    "edit:video-p2p+inr": _video_p2p_method(lambda s: s.video_p2p_inversion_weight, "inr"),
}


def _read(path: Path) -> np.ndarray:
    from .video_io import read_video

    if path.suffix != ".gif":  # gif frames are exact; mp4 would add coding noise to the scores
        path = path.with_suffix(".gif")
    return read_video(path)


def run_case(
    scene: Scene,
    target: Scene,
    settings: QualitySettings,
    *,
    methods: Sequence[str] = METHODS,
    workdir: Path | None = None,
    on_method: Callable[[str], None] | None = None,
) -> dict[str, dict]:
    """Run each method on one source/edit pair: ``{method: {"video", "scores", "seconds"}}``."""
    from .video_io import write_video

    unknown = [m for m in methods if m not in RUNNERS]
    if unknown:
        raise ValueError(f"unknown methods {unknown}; expected some of {list(RUNNERS)}")
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        work = Path(tmp)
        clip = render_scene(scene, settings.frames, settings.size)
        source = write_video(work / "source.gif", clip)
        results = {"source": {"video": _read(source), "scores": score_video(_read(source), scene)}}
        for method in methods:
            if on_method:
                on_method(method)
            video, log = RUNNERS[method](source, scene, target, settings, work)
            seconds = sum(stage["seconds"] for stage in log.get("stages", {}).values())
            results[method] = {
                "video": video, "scores": score_video(video, target), "seconds": seconds
            }  # fmt: skip
            if log.get("loss"):
                results[method]["losses"] = loss_means(log["loss"])
    return results


def loss_means(rows: Sequence[Sequence[float]]) -> dict[str, float]:
    """Mean diffusion and (unweighted) smoothing loss over a tuning run's ``[step, loss,
    diffusion, smoothing]`` rows: what lambda weighs the smoothing term against."""
    columns = np.asarray(rows, dtype=float)
    return {"diffusion": float(columns[:, 2].mean()), "smoothing": float(columns[:, 3].mean())}


@contextmanager
def one_torch_thread():
    """Run the block on one torch CPU thread (the count is restored after it).

    Every random draw of a case is seeded, but with two threads tuning on the CPU is not
    bitwise repeatable (the demo's tuned videos differed by ~1e-6 between runs, which moved
    the DIS flow of flat colours by up to 0.14 px); on one thread a case gives the same scores
    every time, in this process or in a worker."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _scores_only(case: dict[str, dict]) -> dict[str, dict]:
    keep = ("scores", "seconds", "losses")
    return {k: {key: v[key] for key in keep if key in v} for k, v in case.items()}


def _score_case(job: tuple) -> dict[str, dict]:
    """One case in a worker process of :func:`run_cases` (one torch thread each)."""
    from transformers.utils import logging

    logging.disable_progress_bar()  # one "Loading weights" bar per worker and method: noise
    scene, target, settings, methods = job
    with one_torch_thread():
        return _scores_only(run_case(scene, target, settings, methods=methods))


def case_key(scene, target, settings: QualitySettings, methods: Sequence[str]) -> str:
    """What a case's scores depend on, hashed: a resumed run reuses a stored case only for
    the same scenes, settings and methods (the scores are repeatable: one torch thread)."""
    blob = json.dumps({"scene": scene_record(scene), "target": scene_record(target),
                       "settings": settings.__dict__, "methods": list(methods)},
                      sort_keys=True)  # fmt: skip
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


def run_cases(
    pairs: Sequence[tuple[Scene, Scene]],
    settings: QualitySettings,
    *,
    jobs: int = 1,
    progress: bool = True,
    methods: Sequence[str] = METHODS,
    log: ResultsLog | None = None,
) -> list[dict[str, dict]]:
    """Scores (no videos) of every method on each (source, edit) pair, in order.

    Every case runs on one CPU thread: ``jobs > 1`` runs that many at once in worker
    processes, ``jobs=1`` one after the other in this one. The scores do not depend on
    ``jobs`` (see :func:`one_torch_thread`). With a ``log``, each case is appended to it the
    moment it is scored and the cases found there (by :func:`case_key`) are not run again.
    """
    from tqdm.auto import tqdm

    keys = [case_key(s, t, settings, methods) for s, t in pairs]
    stored = log.read() if log is not None else {}
    done = {i: stored[k]["case"] for i, k in enumerate(keys) if k in stored}
    todo = [i for i in range(len(pairs)) if i not in done]
    bar = tqdm(total=len(pairs), initial=len(done), desc="quality bench", unit="clip",
               disable=not progress)  # fmt: skip

    def finish(i: int, case: dict[str, dict]) -> None:
        if log is not None:
            log.append({"key": keys[i], "case": case})
        done[i] = case
        bar.update(1)

    try:
        if jobs <= 1 or len(todo) <= 1:
            with one_torch_thread():
                for i in todo:
                    scene, target = pairs[i]
                    finish(i, _scores_only(run_case(scene, target, settings, methods=methods)))
        else:
            _in_workers(jobs, {i: (*pairs[i], settings, methods) for i in todo}, finish)
    finally:
        bar.close()
    return [done[i] for i in range(len(pairs))]


def _in_workers(jobs: int, work: dict[int, tuple], finish: Callable) -> None:
    """:func:`_score_case` on each job in ``jobs`` worker processes, ``finish(i, case)`` in
    this one as each ends; an error or Ctrl-C cancels the jobs not started."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    context = multiprocessing.get_context("spawn")  # no forked torch thread pools
    pool = ProcessPoolExecutor(min(jobs, len(work)), mp_context=context)
    try:
        futures = {pool.submit(_score_case, job): i for i, job in work.items()}
        for future in as_completed(futures):
            finish(futures[future], future.result())
    except BaseException:
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown()


def random_cases(n: int, seed: int, world: str = "simple") -> list[tuple[Scene, Scene]]:
    """``n`` seeded (source, edit) pairs of the ``"simple"`` world (one flat object) or the
    ``"rich"`` one (:mod:`.synthetic_rich`: textures, two objects, occlusion, pan, scale)."""
    if world not in WORLDS:
        raise ValueError(f"world must be one of {WORLDS}, got {world!r}")
    rng = np.random.default_rng(seed)
    if world == "rich":
        from .synthetic_rich import random_rich_scene, rich_edit_of

        return [(scene := random_rich_scene(rng), rich_edit_of(scene, rng)) for _ in range(n)]
    return [(scene := random_scene(rng), edit_of(scene, rng)) for _ in range(n)]


def render_scene(scene, frames: int, size: int) -> np.ndarray:
    """:func:`~inr_smooth.synthetic.render` or, for a rich scene, its rich renderer."""
    from .synthetic_rich import RichScene, render_rich

    return (render_rich if isinstance(scene, RichScene) else render)(scene, frames, size)


def scene_record(scene) -> dict:
    """A scene of either world as JSON values (a simple scene: its fields, as before)."""
    from .synthetic_rich import RichScene, scene_fields

    return scene_fields(scene) if isinstance(scene, RichScene) else scene.__dict__


def with_overrides(settings: QualitySettings, **changes) -> QualitySettings:
    return replace(settings, **{k: v for k, v in changes.items() if v is not None})
