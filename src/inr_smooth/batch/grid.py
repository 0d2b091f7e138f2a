"""The grid file of ``inr-smooth batch``: read and checked whole before any job starts (no torch).

A grid is a YAML mapping (see :data:`GRID_KEYS`)::

    model: stable-diffusion-v1-5/stable-diffusion-v1-5   # hub id, folder, or mini
    videos:                                  # paths relative to the grid file
      - {path: clips/bear.mp4, prompt: "a brown bear walking on the rock",
         prompts: ["a tiger walking on the rock", "a bear walking on the rock, Van Gogh style"]}
    prompts: ["..."]                         # edit prompts of the videos without their own
    methods: [tune:none, tune:inr, edit:plain, edit:inr]
    parameters:                              # per host (tune, edit) or method; a list = an axis
      tune:inr: {smooth_weight: [1.0, 2.0]}  # also `lambda`
      edit:inr: {inversion_weight: [0.5, 1.0]}   # also `gamma`
    frames: 8                                # frames, size, steps, inference_steps, seed,
    seed: [0, 1]                             # stride: for every method that has the field
    eval: {clip: openai/clip-vit-large-patch14, flow: raft}

Any value may be a list, which makes it an axis of the grid (one job per value); a field that
holds a list itself (``trainable``, ``blend_words``) takes a list of lists for that. A video
with a ``scene`` (the synthetic world's :class:`~inr_smooth.synthetic.Scene` fields) is also
scored against the exact ground truth of each edit prompt, read as a caption of that world.
Every problem is one :class:`GridError` line that names the grid file and the key.
"""

from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .methods import BATCH_FIELDS, HOSTS, METHODS

__all__ = [
    "GRID_KEYS",
    "SETTINGS",
    "EvalSettings",
    "Grid",
    "GridError",
    "VideoEntry",
    "load_grid",
    "scene_from_caption",
]

SETTINGS = ("frames", "size", "steps", "inference_steps", "seed", "stride")
GRID_KEYS = ("model", "videos", "prompts", "methods", "parameters", *SETTINGS, "eval",
             "keep_weights", "cache_dir")  # fmt: skip
VIDEO_KEYS = ("path", "prompt", "prompts", "name", "scene")
EVAL_KEYS = ("clip", "flow", "raft_weights")
ALIASES = {"lambda": "smooth_weight", "λ": "smooth_weight", "gamma": "inversion_weight",
           "γ": "inversion_weight"}  # fmt: skip


class GridError(ValueError):
    """A grid file that cannot run as written (one line: the file, the key, the problem)."""


@dataclass(frozen=True)
class VideoEntry:
    path: str  # absolute
    prompt: str  # caption of the source video
    prompts: tuple[str, ...]  # its edit prompts
    name: str  # short name in tables
    scene: dict | None = None  # synthetic world: Scene fields, for ground-truth scores
    where: str = "videos[0]"  # its key in the grid, for messages


@dataclass(frozen=True)
class EvalSettings:
    clip: str | None = "default"  # CLIP hub id / folder; "default": the suite's; None: no CLIP
    flow: str = "raft"  # raft | dis
    raft_weights: str | None = None


@dataclass(frozen=True)
class Grid:
    path: Path
    model: str
    videos: tuple[VideoEntry, ...]
    methods: tuple[str, ...]
    settings: dict[str, list]  # top-level SETTINGS given, each a list of values
    parameters: dict[str, dict[str, list]]  # host or method -> field -> values
    eval: EvalSettings = field(default_factory=EvalSettings)
    keep_weights: bool = False
    cache_dir: str | None = None


def _fail(path: Path, key: str, problem: str) -> GridError:
    return GridError(f"{path}: {key}: {problem}")


def _read(path: Path) -> dict:
    import yaml

    if not path.is_file():
        raise FileNotFoundError(f"grid file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise GridError(f"{path}: not valid YAML{where} ({getattr(exc, 'problem', exc)})") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise GridError(f"{path}: cannot read it ({exc})") from None
    if not isinstance(data, dict):
        raise GridError(f"{path}: expected a mapping of {', '.join(GRID_KEYS)}")
    unknown = sorted(set(data) - set(GRID_KEYS), key=str)
    if unknown:
        raise _fail(path, str(unknown[0]), f"unknown key (known: {', '.join(GRID_KEYS)})")
    for key in ("model", "videos", "methods"):
        if data.get(key) in (None, "", []):
            raise _fail(path, key, "required")
    return data


def _strings(path: Path, key: str, value: Any) -> tuple[str, ...]:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(v, str) and v.strip() for v in items):
        raise _fail(path, key, f"expected a list of non-empty strings, got {value!r}"[:200])
    if len(set(items)) != len(items):
        raise _fail(path, key, "holds the same prompt twice")
    return tuple(items)


def _resolve(base: Path, value: str) -> str:
    path = Path(value).expanduser()
    return str(path if path.is_absolute() else (base / path).resolve())


def _videos(path: Path, data: dict) -> tuple[VideoEntry, ...]:
    from ..metrics.inputs import short_names

    entries, shared = data["videos"], data.get("prompts")
    if not isinstance(entries, list):
        raise _fail(path, "videos", "expected a list of {path, prompt[, prompts, name, scene]}")
    shared = _strings(path, "prompts", shared) if shared is not None else ()
    videos = []
    for i, entry in enumerate(entries):
        where = f"videos[{i}]"
        if not isinstance(entry, dict):
            raise _fail(path, where, f"expected a mapping with path and prompt, got {entry!r}")
        unknown = sorted(set(entry) - set(VIDEO_KEYS), key=str)
        if unknown:
            raise _fail(path, f"{where}.{unknown[0]}",
                        f"unknown key (known: {', '.join(VIDEO_KEYS)})")  # fmt: skip
        for key in ("path", "prompt"):
            if not isinstance(entry.get(key), str) or not entry[key].strip():
                raise _fail(path, f"{where}.{key}", "required (a non-empty string)")
        own = entry.get("prompts")
        prompts = _strings(path, f"{where}.prompts", own) if own is not None else shared
        if not prompts:
            raise _fail(path, f"{where}.prompts", "no edit prompts: give the video its own "
                        "prompts or the grid a top-level prompts list")  # fmt: skip
        video = _resolve(path.parent, entry["path"])
        if not Path(video).exists():
            raise _fail(path, f"{where}.path", f"video not found: {video}")
        scene = _scene(path, where, entry.get("scene"), prompts)
        videos.append(VideoEntry(video, entry["prompt"], prompts, str(entry.get("name") or ""),
                                 scene, where))  # fmt: skip
    names = short_names([v.path for v in videos])
    videos = [v if v.name else _named(v, n) for v, n in zip(videos, names, strict=True)]
    if len({v.name for v in videos}) != len(videos):
        raise _fail(path, "videos", "two videos have the same name: give them distinct names")
    return tuple(videos)


def _named(video: VideoEntry, name: str) -> VideoEntry:
    from dataclasses import replace

    return replace(video, name=name)


_CAPTION = re.compile(
    r"^a (\w+) (\w+) (?:moving (\w+)|(growing)) on a (striped )?(\w+) background$"
)


def scene_from_caption(caption: str, base):
    """The synthetic world's scene a caption describes (object, motion, background), with the
    rest (size, travel) from ``base``; None when it is not such a caption."""
    from ..synthetic import Scene

    match = _CAPTION.match(caption.strip().lower())
    if match is None:
        return None
    color, shape, direction, growing, striped, background = match.groups()
    try:
        return Scene(color=color, shape=shape, motion=growing or direction,
                     background_color=background, background="striped" if striped else "plain",
                     radius=base.radius, travel=base.travel)  # fmt: skip
    except ValueError:
        return None


def _scene(path: Path, where: str, scene: Any, prompts: tuple[str, ...]) -> dict | None:
    if scene is None:
        return None
    from ..synthetic import Scene

    if not isinstance(scene, dict):
        raise _fail(path, f"{where}.scene", f"expected a mapping of Scene fields, got {scene!r}")
    try:
        base = Scene(**scene)
    except (TypeError, ValueError) as exc:
        raise _fail(path, f"{where}.scene", str(exc)) from None
    for j, prompt in enumerate(prompts):
        if scene_from_caption(prompt, base) is None:
            raise _fail(path, f"{where}.prompts[{j}]",
                        f"{prompt!r} is not a caption of the synthetic world ('a <colour> "
                        "<shape> moving <direction> on a [striped ]<colour> background'), as "
                        "ground-truth scores need (the video has a scene)")  # fmt: skip
    return dict(base.__dict__)


def _axis(value: Any, is_tuple: bool) -> list:
    """A grid value as the list of its alternatives (a list is an axis; for a field that holds
    a list, a list of lists is)."""
    if not isinstance(value, list):
        return [value]
    if is_tuple and not any(isinstance(v, list) for v in value):
        return [value]
    return list(value)


def _numbers(values: list, host, name: str) -> list:
    """YAML 1.1 reads ``1e-4`` as a string: a float field takes it as the number it says."""
    if "float" not in str(host.fields()[name].type):
        return values
    out = []
    for value in values:
        if isinstance(value, str):
            with contextlib.suppress(ValueError):
                value = float(value)
        out.append(value)
    return out


def _tuple_field(host_names: list[str], name: str) -> bool:
    return any("tuple" in str(HOSTS[h].fields()[name].type) for h in host_names
               if name in HOSTS[h].fields())  # fmt: skip


def _parameters(path: Path, data: dict, methods: tuple[str, ...]) -> dict[str, dict[str, list]]:
    given = data.get("parameters") or {}
    if not isinstance(given, dict):
        raise _fail(path, "parameters", "expected a mapping of host or method -> {field: value}")
    hosts = {METHODS[m].host for m in methods}
    out = {}
    for owner, values in given.items():
        key = f"parameters.{owner}"
        if owner not in methods and owner not in hosts:
            raise _fail(path, key, f"not a method or host of this grid (methods: "
                        f"{', '.join(methods)}; hosts: {', '.join(sorted(hosts))})")  # fmt: skip
        if not isinstance(values, dict):
            raise _fail(path, key, f"expected a mapping of field -> value, got {values!r}")
        host = HOSTS[METHODS[owner].host if owner in METHODS else owner]
        fixed = [METHODS[m].fixed for m in methods
                 if owner in (m, METHODS[m].host)]  # fmt: skip
        out[owner] = {}
        for name, value in values.items():
            field_name = ALIASES.get(str(name), str(name))
            where = f"{key}.{name}"
            if field_name not in host.fields():
                raise _fail(path, where, f"not a {host.config_cls.__name__} field (known: "
                            f"{', '.join(sorted(set(host.fields()) - BATCH_FIELDS))})")
            if field_name in BATCH_FIELDS:
                raise _fail(path, where, "set by the batch itself (from videos, prompts, model)")
            for f in fixed:
                if field_name in f and owner in METHODS:
                    raise _fail(path, where, f"{owner} fixes {field_name} = {f[field_name]!r}")
            if owner in METHODS and field_name in METHODS[owner].ignores:
                raise _fail(path, where, f"the outputs of {owner} do not depend on it")
            values = _axis(value, _tuple_field([host.name], field_name))
            out[owner][field_name] = _numbers(values, host, field_name)
    return out


def _eval(path: Path, data: dict) -> EvalSettings:
    given = data.get("eval") or {}
    if not isinstance(given, dict):
        raise _fail(path, "eval", f"expected a mapping of {', '.join(EVAL_KEYS)}")
    unknown = sorted(set(given) - set(EVAL_KEYS), key=str)
    if unknown:
        raise _fail(path, f"eval.{unknown[0]}", f"unknown key (known: {', '.join(EVAL_KEYS)})")
    clip = given.get("clip", "default")
    if clip is False or clip is None:
        clip = None
    elif not isinstance(clip, str) or not clip:
        raise _fail(path, "eval.clip", f"expected a CLIP hub id or folder, or false; got {clip!r}")
    elif clip != "default":
        from ..metrics.inputs import check_clip_name

        try:
            check_clip_name(_resolve(path.parent, clip) if clip.startswith(".") else clip)
        except FileNotFoundError as exc:
            raise _fail(path, "eval.clip", str(exc)) from None
    flow = given.get("flow", "raft")
    if flow not in ("raft", "dis"):
        raise _fail(path, "eval.flow", f"expected raft or dis, got {flow!r}")
    weights = given.get("raft_weights")
    if weights is not None:
        weights = _resolve(path.parent, str(weights))
        if not Path(weights).is_file():
            raise _fail(path, "eval.raft_weights", f"RAFT weights not found: {weights}")
    return EvalSettings(clip, flow, weights)


def load_grid(path: str | Path) -> Grid:
    """Read and check a grid file: keys, videos (they must exist), methods, parameters."""
    path = Path(path).expanduser()
    data = _read(path)
    model = data["model"]
    if not isinstance(model, str):
        raise _fail(path, "model", f"expected a hub id, a folder or mini, got {model!r}")
    if model != "mini" and (path.parent / model).exists():
        model = _resolve(path.parent, model)
    methods = _strings(path, "methods", data["methods"])
    for i, name in enumerate(methods):
        if name not in METHODS:
            raise _fail(path, f"methods[{i}]", f"unknown method {name!r} (known: "
                        f"{', '.join(METHODS)})")  # fmt: skip
    hosts = sorted({METHODS[m].host for m in methods})
    settings = {}
    for key in SETTINGS:
        if key in data:
            if data[key] is None or data[key] == []:
                raise _fail(path, key, "expected a value or a list of values")
            if not any(key in HOSTS[h].fields() for h in hosts):
                raise _fail(path, key, f"no method of this grid has it (hosts: {hosts})")
            settings[key] = _axis(data[key], False)
    keep = data.get("keep_weights", False)
    if not isinstance(keep, bool):
        raise _fail(path, "keep_weights", f"expected true or false, got {keep!r}")
    cache_dir = data.get("cache_dir")
    if cache_dir is not None:
        cache_dir = _resolve(path.parent, str(cache_dir))
    return Grid(path, model, _videos(path, data), methods, settings,
                _parameters(path, data, methods), _eval(path, data), keep, cache_dir)  # fmt: skip
