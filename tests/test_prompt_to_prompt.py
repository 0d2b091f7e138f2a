"""Prompt-to-prompt's math: token alignment, step windows, controllers, blend masks.

The tokenizer is the real CLIP tokenizer of the tiny SD folder. References written here from
the originals' definitions: prompt-to-prompt's ``seq_aligner`` (global alignment, mappers) and
FateZero's ``SpatialBlender.get_mask`` (the blend mask).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from einops import rearrange

from inr_smooth.pipelines.prompt_to_prompt import (
    MAX_TOKENS,
    LocalBlend,
    build_cross_control,
    choose_controller,
    cross_replace_alpha,
    equalizer,
    pooled_word_map,
    refinement_mapper,
    replacement_mapper,
    self_replace_range,
    threshold_mask,
    token_positions,
    word_token_spans,
)


@pytest.fixture(scope="module")
def tok(tiny_sd_folder):
    from transformers import CLIPTokenizer

    return CLIPTokenizer.from_pretrained(tiny_sd_folder / "tokenizer")


# ---------------------------------------------------------------------- references
def reference_alignment(x, y):
    """prompt-to-prompt's global_align + get_aligned_sequences, as its code defines them."""
    score = np.zeros((len(x) + 1, len(y) + 1), dtype=np.int32)
    trace = np.zeros((len(x) + 1, len(y) + 1), dtype=np.int32)
    trace[0, 1:], trace[1:, 0], trace[0, 0] = 1, 2, 4
    for i in range(1, len(x) + 1):
        for j in range(1, len(y) + 1):
            left, up = score[i, j - 1], score[i - 1, j]
            diag = score[i - 1, j - 1] + (1 if x[i - 1] == y[j - 1] else -1)
            score[i, j] = max(left, up, diag)
            trace[i, j] = 1 if score[i, j] == left else 2 if score[i, j] == up else 3
    out, i, j = [], len(x), len(y)
    while i > 0 or j > 0:
        if trace[i, j] == 3:
            i, j = i - 1, j - 1
            out.append((j, i))
        elif trace[i, j] == 1:
            j -= 1
            out.append((j, -1))
        elif trace[i, j] == 2:
            i -= 1
        else:
            break
    return [x_index for _, x_index in reversed(out)]


def reference_refinement(tok, source, prompt):
    x, y = tok.encode(source), tok.encode(prompt)
    aligned = reference_alignment(x, y)
    mapper = torch.zeros(MAX_TOKENS, dtype=torch.long)
    mapper[: len(aligned)] = torch.tensor(aligned)
    mapper[len(y) :] = len(y) + torch.arange(MAX_TOKENS - len(y))
    alphas = torch.ones(MAX_TOKENS)
    alphas[: len(aligned)] = (torch.tensor(aligned) != -1).float()
    return mapper, alphas


def fatezero_mask(maps, alpha, size, threshold):
    """FateZero's get_mask: maps ``(p, c, heads, res, words)`` per layer, concatenated over
    heads; word-weighted sum, mean over heads, 3x3 max-pool, nearest resize, / max, > th."""
    items = []
    for item in maps:
        res = int(np.sqrt(item.shape[3]))
        items.append(rearrange(item, "p c h (rh rw) w -> p h c rh rw w", rh=res, rw=res))
    maps = torch.cat(items, dim=1)
    maps = (maps * alpha).sum(-1).mean(1)
    maps = F.max_pool2d(maps, (3, 3), (1, 1), padding=(1, 1))
    mask = F.interpolate(maps, size=size)
    mask = mask / mask.max(-2, keepdims=True)[0].max(-1, keepdims=True)[0]
    return mask.gt(threshold)


# ---------------------------------------------------------------------- tokens and mappers
def test_words_and_their_tokens(tok):
    spans = word_token_spans(tok, "a photo by Makoto Shinkai")
    assert spans == [("a", 1, 2), ("photo", 2, 3), ("by", 3, 4), ("Makoto", 4, 6),
                     ("Shinkai", 6, 8)]  # fmt: skip
    assert token_positions(tok, "a photo by Makoto Shinkai", "Shinkai") == (6, 7)
    assert token_positions(tok, "van gogh style painting of a sunflower", "van gogh") == (1, 2)
    assert token_positions(tok, "a yellow sunflower,", "sunflower") == (3,)  # FateZero: none
    assert token_positions(tok, "a jeep car on a jeep road", "jeep") == (2, 6)
    with pytest.raises(ValueError, match="reweight word 'car' is not in the prompt"):
        token_positions(tok, "a cart on the road", "car", what="reweight word")


def test_word_swap_of_a_noun_maps_every_token_in_place(tok):
    mapper = replacement_mapper(tok, "a cat sitting on the mat", "a dog sitting on the mat")
    assert torch.equal(mapper, torch.eye(MAX_TOKENS))


def test_word_swap_of_multi_token_words_spreads_the_tokens(tok):
    """'Monet' is one token, 'Shinkai' two ('shin', 'kai')."""
    one_to_two = replacement_mapper(tok, "a photo by Monet", "a photo by Shinkai")
    expected = torch.zeros(MAX_TOKENS, MAX_TOKENS)
    for s, t in [(0, 0), (1, 1), (2, 2), (3, 3)]:
        expected[s, t] = 1.0
    expected[4, 4] = expected[4, 5] = 0.5  # monet -> shin, kai
    for s in range(5, MAX_TOKENS - 1):  # EOS and padding follow, one place later
        expected[s, s + 1] = 1.0
    assert torch.equal(one_to_two, expected)
    two_to_one = replacement_mapper(tok, "a photo by Shinkai", "a photo by Monet")
    expected = torch.zeros(MAX_TOKENS, MAX_TOKENS)
    for s, t in [(0, 0), (1, 1), (2, 2), (3, 3), (4, 4), (5, 4)]:  # shin, kai -> monet
        expected[s, t] = 1.0
    for s in range(6, MAX_TOKENS):
        expected[s, s - 1] = 1.0
    assert torch.equal(two_to_one, expected)
    with pytest.raises(ValueError, match=r"same number of words, got 4 .* and 5"):
        replacement_mapper(tok, "a photo by Monet", "a photo by Makoto Shinkai")


@pytest.mark.parametrize(
    ("source", "prompt", "mapper", "new"),
    [
        # an added adjective: 'white' is new, everything after it moves one place
        ("a rabbit is jumping", "a white rabbit is jumping", [0, 1, -1, 2, 3, 4, 5], [2]),
        # a removed word: every edit token has a source token
        ("a silver jeep driving", "a jeep driving", [0, 1, 3, 4, 5], []),
        # a swapped noun (refinement): the new noun keeps its own map
        ("a cat sitting on the mat", "a dog sitting on the mat", [0, 1, -1, 3, 4, 5, 6, 7], [2]),
        # multi-token words added at the end
        ("a photo", "a photo by Makoto Shinkai", [0, 1, 2, -1, -1, -1, -1, -1, 3], [3, 4, 5, 6, 7]),
    ],
)
def test_refinement_on_hand_worked_alignments(tok, source, prompt, mapper, new):
    got, alphas = refinement_mapper(tok, source, prompt)
    n = len(mapper)
    assert got[:n].tolist() == mapper
    assert torch.equal(got[n:], torch.arange(n, MAX_TOKENS))  # past the prompt: itself
    assert [i for i in range(MAX_TOKENS) if alphas[i] == 0] == new
    ref_mapper, ref_alphas = reference_refinement(tok, source, prompt)
    assert torch.equal(got, ref_mapper) and torch.equal(alphas, ref_alphas)


@pytest.mark.parametrize(
    ("source", "prompt"),
    [
        ("a jeep car on a jeep road", "a red jeep car on a road near a jeep"),
        ("the the cat the", "cat the the"),
        ("A rabbit is eating strawberries", "A white rabbit is eating leaves"),
        ("a yellow sunflower", "van gogh style painting of a yellow sunflower"),
    ],
)
def test_refinement_matches_prompt_to_prompt_with_its_tie_breaking(tok, source, prompt):
    got, alphas = refinement_mapper(tok, source, prompt)
    ref_mapper, ref_alphas = reference_refinement(tok, source, prompt)
    assert torch.equal(got, ref_mapper) and torch.equal(alphas, ref_alphas)


def test_the_controller_is_chosen_as_fatezero_does_and_can_be_forced():
    same, longer = ("a cat on a mat", "a dog on a rug"), ("a cat", "a black cat")
    assert choose_controller(*same) == "replace" and choose_controller(*longer) == "refine"
    assert choose_controller(*same, "refine") == "refine"
    with pytest.raises(ValueError, match="needs prompts with the same number of words"):
        choose_controller(*longer, "replace")


# ---------------------------------------------------------------------- windows and weights
def test_cross_windows_count_rows_as_prompt_to_prompt():
    alpha = cross_replace_alpha(50, 0.8)  # FateZero's jeep: int(0.8 * 51) = 40 steps
    assert alpha.shape == (51, MAX_TOKENS)
    assert alpha[:40].eq(1).all() and alpha[40:].eq(0).all()
    assert cross_replace_alpha(4, 0.8)[:4].eq(1).all()  # int(0.8 * 5) = 4: every step
    assert cross_replace_alpha(50, 0.0).eq(0).all()
    assert torch.equal(cross_replace_alpha(50, 0.8), cross_replace_alpha(50, (0.0, 0.8)))


def test_per_word_windows_and_the_implicit_default(tok):
    prompt = "van gogh style painting of a yellow sunflower"
    alpha = cross_replace_alpha(50, {"default_": 0.8, "van": (0.2, 0.5)}, tok, prompt)
    assert alpha[:40, 0].eq(1).all() and alpha[40:, 0].eq(0).all()
    assert alpha[:10, 1].eq(0).all() and alpha[10:25, 1].eq(1).all() and alpha[25:, 1].eq(0).all()
    words_only = cross_replace_alpha(10, {"van": 0.5}, tok, prompt)  # default: every step
    assert words_only[:, 2].eq(1).all() and words_only[5:, 1].eq(0).all()
    with pytest.raises(ValueError, match="cross-replace word 'monet' is not in the prompt"):
        cross_replace_alpha(10, {"monet": 0.5}, tok, prompt)


def test_self_windows_and_equalizer(tok):
    assert self_replace_range(50, 0.5) == range(25) and self_replace_range(50, 0.7) == range(35)
    assert self_replace_range(4, 0.7) == range(2)  # int(2.8), FateZero's truncation
    assert self_replace_range(50, (0.2, 0.6)) == range(10, 30)
    weights = equalizer(tok, "a photo by Makoto Shinkai", {"Shinkai": 10.0, "photo": 2.0})
    expected = torch.ones(MAX_TOKENS)
    expected[[6, 7]], expected[2] = 10.0, 2.0
    assert torch.equal(weights, expected)


# ---------------------------------------------------------------------- controllers
def _maps(seed, *shape):
    return torch.rand(*shape, MAX_TOKENS, generator=torch.Generator().manual_seed(seed)).softmax(-1)


def test_replace_with_identical_prompts_gives_exactly_the_source_map(tok):
    prompt = "a red circle moving right"
    control = build_cross_control(tok, prompt, prompt, 4, 1.0, controller="replace")
    base, own = _maps(0, 2, 3, 5), _maps(1, 2, 3, 5)
    for step in range(4):
        assert torch.equal(control(base, own, step), base)


def test_refine_keeps_new_tokens_and_reweight_one_changes_nothing(tok):
    source, prompt = "a rabbit is jumping", "a white rabbit is jumping"
    base, own = _maps(0, 2, 3, 5), _maps(1, 2, 3, 5)
    control = build_cross_control(tok, source, prompt, 4, 0.5)
    assert control.kind == "refine"
    out = control(base, own, 0)
    assert torch.equal(out[..., 2], own[..., 2])  # 'white' is new: its own map
    assert torch.equal(out[..., 3], base[..., 2])  # 'rabbit' reads the source's 'rabbit'
    assert torch.equal(control(base, own, 2), own)  # outside the window (int(0.5 * 5) = 2)
    ones = build_cross_control(tok, source, prompt, 4, 0.5, reweight={"white": 1.0})
    assert torch.equal(ones(base, own, 0), out) and torch.equal(ones(base, own, 3), own)
    strong = build_cross_control(tok, source, prompt, 4, 0.5, reweight={"white": 10.0})
    reweighted = strong(base, own, 0)
    assert torch.allclose(reweighted[..., 2], 10 * own[..., 2])  # no renormalisation
    assert torch.equal(reweighted[..., 3], out[..., 3])
    assert torch.equal(strong(base, own, 3), own)  # only inside the window


def test_word_swap_controller_moves_the_swapped_words_map(tok):
    control = build_cross_control(tok, "a photo by Monet", "a photo by Shinkai", 4, 1.0)
    base, own = _maps(0, 1, 3), _maps(1, 1, 3)
    out = control(base, own, 0)
    assert control.kind == "replace"
    torch.testing.assert_close(out[..., 4], 0.5 * base[..., 4])  # shin
    torch.testing.assert_close(out[..., 5], 0.5 * base[..., 4])  # kai
    assert torch.equal(out[..., 6], base[..., 5])  # EOS


# ---------------------------------------------------------------------- blend masks
def _crafted_layers(frames=2, heads=2):
    """Five 16x16 cross-attention layers whose word token (index 3) attends to a 3x3 square at
    rows 4-6, columns 8-10 in frame 0 and rows 9-11, columns 2-4 in frame 1."""
    g = torch.Generator().manual_seed(0)
    layers = []
    for _ in range(5):
        probs = torch.rand(1, frames, heads, 256, MAX_TOKENS, generator=g) * 1e-3
        grid = probs[..., 3].view(1, frames, heads, 16, 16)
        grid[:, 0, :, 4:7, 8:11] += 0.5
        grid[:, 1, :, 9:12, 2:5] += 0.5
        layers.append(probs)
    return layers


def test_blend_mask_is_fatezeros_recipe_location_and_area():
    layers, weights = _crafted_layers(), torch.zeros(MAX_TOKENS)
    weights[3] = 1.0
    reference = fatezero_mask(layers, weights, (64, 64), 0.3)[0]  # (frames, 64, 64)
    word = torch.stack([(p[0] @ weights) for p in layers], dim=1)  # (f, layers, heads, 256)
    maps = rearrange(word, "f l h (y x) -> f (l h) y x", y=16).mean(dim=1)
    ours = threshold_mask(pooled_word_map(maps), (64, 64), 0.3)
    assert torch.equal(ours, reference)
    # the pooled 5x5 square, each cell 4x4 latent pixels: 20x20 at the crafted place
    expected = torch.zeros(2, 64, 64, dtype=torch.bool)
    expected[0, 12:32, 28:48] = True
    expected[1, 32:52, 4:24] = True
    assert torch.equal(ours, expected) and int(ours[0].sum()) == 400
    # the recipe we had before (bilinear, no pool, >=) covered a 12x12 square
    old = F.interpolate(maps[:, None], size=(64, 64), mode="bilinear", align_corners=False)[:, 0]
    old = old / old.amax(dim=(-2, -1), keepdim=True) >= 0.3
    assert int(old[0].sum()) < 0.5 * int(ours[0].sum())
    small = threshold_mask(pooled_word_map(maps), (8, 8), 0.3)  # a layer 8x smaller
    assert torch.equal(small, fatezero_mask(layers, weights, (8, 8), 0.3)[0])


def test_local_blend_unites_source_and_edit_masks_from_its_start_step():
    frames = 1
    weights = torch.zeros(2, MAX_TOKENS)
    weights[0, 2], weights[1, 5] = 1.0, 1.0  # the source's word, the edit's word
    blend = LocalBlend(weights, num_steps=10, threshold=0.3, start_blend=0.2)
    probs = torch.full((2, frames, 1, 256, MAX_TOKENS), 1e-4)
    probs[0, :, :, :, 2].view(frames, 1, 16, 16)[:, :, 0:3, 0:3] = 1.0  # source word top left
    probs[1, :, :, :, 5].view(frames, 1, 16, 16)[:, :, 10:13, 10:13] = 1.0  # edit word
    for _ in range(2):
        blend.add(probs, (16, 16))
        blend.end_step()
    latents = torch.randn(2, 4, frames, 16, 16, generator=torch.Generator().manual_seed(0))
    assert torch.equal(blend(latents, 1), latents)  # steps 0, 1: before int(0.2 * 10) = 2
    out = blend(latents, 2)
    mask = torch.zeros(16, 16, dtype=torch.bool)
    mask[0:4, 0:4] = mask[9:14, 9:14] = True  # each square, max-pooled (clipped at the border)
    assert torch.equal(out[0], latents[0])  # the source row is kept
    torch.testing.assert_close(out[1][..., mask], latents[1][..., mask], atol=1e-6, rtol=0)
    assert torch.equal(out[1][..., ~mask], latents[0][..., ~mask])
