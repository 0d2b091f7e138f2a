"""Prompt-to-prompt attention control (Hertz et al. 2022) as pure functions on attention maps.

What google/prompt-to-prompt does, and FateZero and Video-P2P reuse, in our own code:

* **Token alignment** of a source and an edit prompt. Word swap (:func:`replacement_mapper`):
  prompts with the same number of words; a ``(77, 77)`` mapper sends each source token to the
  edit token of the same word; a swapped word of another token count spreads its source tokens
  evenly over its edit tokens (``1 / len(edit tokens)`` each). Refinement
  (:func:`refinement_mapper`): a global alignment of the two token sequences (match 1,
  mismatch -1, gap 0, ties broken as prompt-to-prompt's ``seq_aligner``); each edit token takes
  the map of its aligned source token, tokens without one (added words) keep their own
  (``alphas`` 0).
* **Controllers** (:class:`CrossAttentionControl`) on a cross-attention map ``(..., n, 77)``
  (``n`` queries, the 77 prompt tokens as keys): *replace* ``base @ mapper``, *refine*
  ``base[..., mapper] * alphas + own * (1 - alphas)``, then *reweight* multiplies chosen edit
  tokens by a scale (the "equalizer", no renormalisation). At sampling step ``i`` the edit's map
  becomes ``a_i * controlled + (1 - a_i) * own`` with ``a_i`` per edit token from the step
  windows (:func:`cross_replace_alpha`); reweighting therefore acts inside the windows only.
* **Step windows** count sampling steps from the noisiest (``i = 0``), as prompt-to-prompt's
  ``cur_step``: a fraction ``f`` means ``(0, f)``; ``(start, end)`` covers sampling steps
  ``int(start * (N + 1)) <= i < int(end * (N + 1))`` for the cross-attention windows (the
  original's ``N + 1`` rows) and ``int(start * N) <= i < int(end * N)`` for self-attention.
* **Blend masks** (:func:`pooled_word_map`, :func:`threshold_mask`, :class:`LocalBlend`): the
  blend words' cross-attention summed over their tokens, averaged over heads and layers,
  max-pooled 3x3, resized (nearest) to the target size, divided by each frame's maximum and
  thresholded with a strict ``>``.

Words are matched as tokens: a word (or phrase) is found where its own token sequence occurs
in the prompt's, so ``"sunflower"`` is found in ``"a yellow sunflower,"`` (the original matches
space-separated words exactly and would miss it); a word that is not there is an error.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from .p2p_words import ControllerKind, choose_controller

__all__ = [
    "MAX_TOKENS",
    "ControllerKind",
    "CrossAttentionControl",
    "LocalBlend",
    "build_cross_control",
    "choose_controller",
    "config_cross_control",
    "config_windows",
    "cross_replace_alpha",
    "equalizer",
    "global_alignment",
    "pooled_word_map",
    "refinement_mapper",
    "replacement_mapper",
    "self_replace_range",
    "threshold_mask",
    "token_positions",
    "word_token_spans",
]

MAX_TOKENS = 77  # CLIP's context: every cross-attention map has 77 keys
Window = float | tuple[float, float]


# ---------------------------------------------------------------------- tokens
def _ids(tokenizer, text: str, special: bool = True) -> list[int]:
    return tokenizer(text, add_special_tokens=special).input_ids


def prompt_ids(tokenizer, prompt: str) -> list[int]:
    """The prompt's token ids with BOS and EOS, unpadded; at most 77."""
    ids = _ids(tokenizer, prompt)
    if len(ids) > MAX_TOKENS:
        raise ValueError(
            f"prompt-to-prompt needs prompts of at most {MAX_TOKENS - 2} tokens, got "
            f"{len(ids) - 2} in {prompt!r}"
        )
    return ids


def word_token_spans(tokenizer, prompt: str) -> list[tuple[str, int, int]]:
    """Each whitespace-separated word with its token positions ``[start, end)`` (BOS is 0)."""
    ids, spans, position = prompt_ids(tokenizer, prompt), [], 1
    for word in prompt.split():
        count = len(_ids(tokenizer, word, special=False))
        spans.append((word, position, position + count))
        position += count
    if position != len(ids) - 1:
        raise ValueError(
            f"the tokenizer does not split {prompt!r} word by word ({len(ids) - 2} tokens, "
            f"{position - 1} from its words one by one)"
        )
    return spans


def token_positions(tokenizer, prompt: str, word: str, *, what: str = "word") -> tuple[int, ...]:
    """Positions of ``word``'s tokens (every occurrence) in ``prompt``'s token sequence."""
    ids, word_ids = prompt_ids(tokenizer, prompt), _ids(tokenizer, word, special=False)
    n = len(word_ids)
    starts = [i for i in range(1, len(ids) - n) if n and ids[i : i + n] == word_ids]
    if not starts:
        raise ValueError(f"{what} {word!r} is not in the prompt {prompt!r}")
    return tuple(sorted({p for s in starts for p in range(s, s + n)}))


# ---------------------------------------------------------------------- alignment
def replacement_mapper(tokenizer, source: str, prompt: str) -> Tensor:
    """Word-swap mapper ``(77, 77)``: ``M[s, t]`` is the share of source token ``s`` in edit
    token ``t``. Unchanged words map token to token; a swapped word with as many tokens maps
    them in order; otherwise each of its source tokens goes to every edit token with weight
    ``1 / len(edit tokens)``. BOS, EOS and padding follow in order."""
    src, dst = word_token_spans(tokenizer, source), word_token_spans(tokenizer, prompt)
    if len(src) != len(dst):
        raise ValueError(
            f"word swap needs prompts with the same number of words, got {len(src)} in "
            f"{source!r} and {len(dst)} in {prompt!r}"
        )
    mapper = torch.zeros(MAX_TOKENS, MAX_TOKENS)
    mapper[0, 0] = 1.0  # BOS
    for (_, s0, s1), (_, t0, t1) in zip(src, dst, strict=True):
        if s1 - s0 == t1 - t0:
            mapper[range(s0, s1), range(t0, t1)] = 1.0
        else:
            mapper[s0:s1, t0:t1] = 1.0 / (t1 - t0)
    i, j = (src[-1][2], dst[-1][2]) if src else (1, 1)
    while i < MAX_TOKENS and j < MAX_TOKENS:  # EOS, then padding, in order
        mapper[i, j] = 1.0
        i, j = i + 1, j + 1
    return mapper


def global_alignment(x: Sequence[int], y: Sequence[int]) -> list[int]:
    """For each element of ``y``, the index of the element of ``x`` it is aligned with, or -1.

    Needleman-Wunsch with match 1, mismatch -1, gap 0; where several moves score the same, a
    gap in ``x`` beats a gap in ``y``, which beats a (mis)match (prompt-to-prompt's order)."""
    rows, cols = len(x) + 1, len(y) + 1
    score = [[0] * cols for _ in range(rows)]
    move = [[1] * cols for _ in range(rows)]  # 1: left (gap in x), 2: up (gap in y), 3: diagonal
    for i in range(1, rows):
        move[i][0] = 2
    for i in range(1, rows):
        for j in range(1, cols):
            left, up = score[i][j - 1], score[i - 1][j]
            diagonal = score[i - 1][j - 1] + (1 if x[i - 1] == y[j - 1] else -1)
            best = max(left, up, diagonal)
            score[i][j] = best
            move[i][j] = 1 if best == left else 2 if best == up else 3
    aligned, i, j = [], len(x), len(y)
    while i > 0 or j > 0:
        step = move[i][j] if i > 0 and j > 0 else (1 if i == 0 else 2)
        if step == 3:
            i, j = i - 1, j - 1
            aligned.append(i)
        elif step == 1:
            j -= 1
            aligned.append(-1)
        else:
            i -= 1
    return aligned[::-1]


def refinement_mapper(tokenizer, source: str, prompt: str) -> tuple[Tensor, Tensor]:
    """Refinement mapper ``(77,)`` (the source token each edit token reads, -1 for none) and
    ``alphas`` ``(77,)`` (1 aligned, 0 new). Positions past the edit prompt map to themselves."""
    x, y = prompt_ids(tokenizer, source), prompt_ids(tokenizer, prompt)
    aligned = torch.tensor(global_alignment(x, y), dtype=torch.long)
    mapper = torch.arange(MAX_TOKENS)
    mapper[: len(y)] = aligned
    alphas = torch.ones(MAX_TOKENS)
    alphas[: len(y)] = (aligned >= 0).float()
    return mapper, alphas


# ---------------------------------------------------------------------- windows and weights
def _bounds(window: Window) -> tuple[float, float]:
    start, end = (0.0, float(window)) if isinstance(window, (int, float)) else map(float, window)
    if not 0.0 <= start <= end <= 1.0:
        raise ValueError(f"expected a step window 0 <= start <= end <= 1, got {window!r}")
    return start, end


def cross_replace_alpha(
    num_steps: int, windows: Window | Mapping[str, Window], tokenizer=None, prompt: str = ""
) -> Tensor:
    """``(num_steps + 1, 77)``: 1 where the edit token's map is controlled at sampling step i.

    ``windows``: a fraction or ``(start, end)`` for every token, or a mapping with an optional
    ``"default_"`` (or ``"default"``) window and per-word windows for words of the edit
    ``prompt``; without a default every other token is controlled at every step (as
    prompt-to-prompt)."""
    if not isinstance(windows, Mapping):
        windows = {"default_": windows}
    rows = num_steps + 1
    default = windows.get("default_", windows.get("default", (0.0, 1.0)))
    alpha = torch.zeros(rows, MAX_TOKENS)

    def fill(window: Window, tokens) -> None:
        start, end = _bounds(window)
        alpha[int(start * rows) : int(end * rows), tokens] = 1.0
        alpha[: int(start * rows), tokens] = 0.0
        alpha[int(end * rows) :, tokens] = 0.0

    fill(default, slice(None))
    for word, window in windows.items():
        if word not in ("default_", "default"):
            fill(window, list(token_positions(tokenizer, prompt, word, what="cross-replace word")))
    return alpha


def self_replace_range(num_steps: int, window: Window) -> range:
    """The sampling steps (0 = noisiest) whose self-attention is replaced: FateZero's and
    prompt-to-prompt's ``int(num_steps * start) <= i < int(num_steps * end)``."""
    start, end = _bounds(window)
    return range(int(num_steps * start), int(num_steps * end))


def equalizer(tokenizer, prompt: str, scales: Mapping[str, float]) -> Tensor:
    """``(77,)`` reweighting factors: ``scale`` on the tokens of each word of ``prompt``."""
    weights = torch.ones(MAX_TOKENS)
    for word, scale in scales.items():
        weights[list(token_positions(tokenizer, prompt, word, what="reweight word"))] = scale
    return weights


# ---------------------------------------------------------------------- controllers
@dataclass(frozen=True, eq=False)
class CrossAttentionControl:
    """A replace or refine controller with optional reweighting and per-token step windows."""

    kind: ControllerKind
    alpha: Tensor  # (num_steps + 1, 77): controlled share per sampling step and edit token
    mapper: Tensor  # replace: (77, 77) float; refine: (77,) long
    alphas: Tensor | None = None  # refine: (77,), 1 = aligned source token, 0 = new token
    equalizer: Tensor | None = None  # (77,) reweighting; None: no reweighting

    def active(self, step: int) -> bool:
        """Whether any token is controlled at sampling step ``step``."""
        return bool(self.alpha[step].any())

    def controlled(self, base: Tensor, own: Tensor) -> Tensor:
        """The controlled map from the source's ``base`` and the edit's ``own`` ``(..., n, 77)``."""
        dtype, device = own.dtype, own.device
        if self.kind == "replace":
            out = base.to(dtype) @ self.mapper.to(device, dtype)  # "...pw,wn->...pn"
        else:
            alphas = self.alphas.to(device, dtype)
            out = base.to(dtype)[..., self.mapper.to(device)] * alphas + own * (1 - alphas)
        if self.equalizer is not None:
            out = out * self.equalizer.to(device, dtype)
        return out

    def __call__(self, base: Tensor, own: Tensor, step: int) -> Tensor:
        """The edit's map at sampling step ``step``: ``a * controlled + (1 - a) * own``."""
        a = self.alpha[step].to(own.device, own.dtype)
        return self.controlled(base, own) * a + (1 - a) * own


def build_cross_control(
    tokenizer,
    source: str,
    prompt: str,
    num_steps: int,
    windows: Window | Mapping[str, Window],
    *,
    controller: str = "auto",
    reweight: Mapping[str, float] | None = None,
) -> CrossAttentionControl:
    """The controller for ``source -> prompt`` over ``num_steps`` sampling steps."""
    kind = choose_controller(source, prompt, controller)
    alpha = cross_replace_alpha(num_steps, windows, tokenizer, prompt)
    weights = equalizer(tokenizer, prompt, reweight) if reweight else None
    if kind == "replace":
        return CrossAttentionControl(kind, alpha, replacement_mapper(tokenizer, source, prompt),
                                     equalizer=weights)  # fmt: skip
    mapper, alphas = refinement_mapper(tokenizer, source, prompt)
    return CrossAttentionControl(kind, alpha, mapper, alphas, weights)


# ---------------------------------------------------------------------- blend masks
def pooled_word_map(maps: Tensor) -> Tensor:
    """3x3 max-pool (stride 1, padding 1) of word maps ``(..., h, w)``."""
    shape = maps.shape
    pooled = F.max_pool2d(maps.reshape(-1, 1, *shape[-2:]).float(), 3, stride=1, padding=1)
    return pooled.reshape(shape)


def threshold_mask(pooled: Tensor, size: tuple[int, int], threshold: float) -> Tensor:
    """Boolean mask ``(..., *size)``: nearest resize, divide by each map's maximum, ``> th``."""
    shape = pooled.shape
    maps = F.interpolate(pooled.reshape(-1, 1, *shape[-2:]).float(), size=size, mode="nearest")
    peak = maps.amax(dim=(-2, -1), keepdim=True)
    return (maps / peak > threshold).reshape(*shape[:-2], *size)


def word_maps(probs: Tensor, token_weights: Tensor) -> Tensor:
    """Blend words' attention per query, summed over their tokens: ``(..., n, 77) -> (..., n)``."""
    return probs.float() @ token_weights.to(probs.device, torch.float32)


class LocalBlend:
    """Prompt-to-prompt's local blending of latents, for a batch of ``p`` prompts whose row 0 is
    the source: ``z_i <- z_0 + M_i (z_i - z_0)`` with ``M_i = mask_0 | mask_i``; each mask from
    the running sum over sampling steps of the blend words' maps (:meth:`add`, per step and
    layer), blended after sampling steps ``i`` with ``start <= i + 1 < end`` where
    ``start = int(start_blend * N)`` (prompt-to-prompt and Video-P2P: from 20 %, no end;
    FateZero's latent blend: 20 % to 80 %)."""

    def __init__(
        self, token_weights: Tensor, num_steps: int, *, threshold: float = 0.3,
        start_blend: float = 0.2, end_blend: float | None = None,
    ):  # fmt: skip
        self.token_weights = token_weights  # (p, 77): 1 on each prompt's blend-word tokens
        self.threshold = threshold
        self.start = int(start_blend * num_steps)
        self.end = None if end_blend is None else int(end_blend * num_steps)
        self._sum: Tensor | None = None  # (p, f, h, w): running sum over steps
        self._step: list[Tensor] = []

    def add(self, probs: Tensor, size: tuple[int, int]) -> None:
        """One layer's cross-attention ``(p, f, heads, h w, 77)`` at the current step."""
        maps = torch.einsum("pfhnk,pk->pfhn", probs.float(), self.token_weights.float())
        self._step.append(maps.reshape(*maps.shape[:3], *size))

    def end_step(self) -> None:
        """Fold the step's layers into the running sum (mean over layers and heads)."""
        step = torch.cat(self._step, dim=2).mean(dim=2)  # (p, f, h, w)
        self._sum = step if self._sum is None else self._sum + step
        self._step = []

    def mask(self, size: tuple[int, int]) -> Tensor:
        """``(p, f, *size)`` float: each prompt's mask, united with the source's."""
        mask = threshold_mask(pooled_word_map(self._sum), size, self.threshold)
        return (mask | mask[:1]).float()

    def __call__(self, latents: Tensor, step: int) -> Tensor:
        """Blend ``latents (p, c, f, h, w)`` after sampling step ``step`` (0 = noisiest)."""
        count = step + 1
        if count <= self.start or (self.end is not None and count >= self.end):
            return latents
        mask = self.mask(tuple(latents.shape[-2:]))[:, None].to(latents)  # (p, 1, f, h, w)
        return latents[:1] + mask * (latents - latents[:1])


def config_windows(cross_replace):
    """An edit config's ``cross_replace`` (a fraction, or ``{word: window}`` with the key
    ``default``) as :func:`cross_replace_alpha` takes it (``default_``)."""
    if isinstance(cross_replace, dict):
        return {("default_" if k == "default" else k): v for k, v in cross_replace.items()}
    return cross_replace


def config_cross_control(tokenizer, config, n: int, log: dict) -> CrossAttentionControl:
    """:func:`build_cross_control` from an edit config's prompts, windows, controller and
    reweighting; records the controller and the reweighted tokens in ``log``."""
    control = build_cross_control(
        tokenizer, config.source_prompt, config.prompt, n, config_windows(config.cross_replace),
        controller=config.controller, reweight=config.reweight,
    )  # fmt: skip
    log["controller"] = control.kind
    if control.equalizer is not None:
        log["reweight_tokens"] = {
            str(i): float(s) for i, s in enumerate(control.equalizer.tolist()) if s != 1.0
        }
    return control
