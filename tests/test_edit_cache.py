"""The inversion cache and the attention store's files: hits are exact, changes miss."""

from __future__ import annotations

import hashlib

import pytest
import torch
from safetensors.torch import load_file

from edit_helpers import make_pipeline, source_frames
from inr_smooth.pipelines import edit as edit_module
from inr_smooth.pipelines.attention_store import AttentionStore
from inr_smooth.pipelines.components import load_parts
from inr_smooth.pipelines.inversion_cache import cache_key, load_inversion

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def parts(tiny_sd_folder):
    return load_parts(str(tiny_sd_folder))


@pytest.fixture(scope="module")
def frames():
    return source_frames()


def test_a_cache_hit_gives_the_identical_edit_without_inverting(
    parts, frames, tmp_path, monkeypatch
):
    cache = tmp_path / "cache"
    settings = dict(cache_dir=str(cache), blend_words=("circle",))
    first = make_pipeline(parts, output=str(tmp_path / "a"), **settings)(frames)
    assert not first.cache_hit and len(list(cache.glob("inversion-*.safetensors"))) == 1

    def no_inversion(*args, **kwargs):
        raise AssertionError("the inversion ran despite the cache")

    monkeypatch.setattr(edit_module, "ddim_invert", no_inversion)
    again = make_pipeline(parts, output=str(tmp_path / "b"), **settings)(frames)
    assert again.cache_hit and again.log["cache"]["hit"]
    assert torch.equal(again.start_latents, first.start_latents)
    assert torch.equal(again.latents, first.latents)
    # edit prompt, guidance, gamma, noise source and seed do not touch the inversion
    other = make_pipeline(
        parts, output=str(tmp_path / "c"), prompt="a blue circle", guidance_scale=5.0,
        inversion_weight=0.3, noise_source="implied", seed=9, **settings,
    )(frames)  # fmt: skip
    assert other.cache_hit and not torch.equal(other.latents, first.latents)
    assert not list(cache.glob(".*"))  # no temporary or spill files left


def test_a_changed_setting_misses_the_cache(parts, frames, tmp_path):
    def key(frames=frames, **change):
        return cache_key(make_pipeline(parts, **change).cache_material(frames))

    base = key()
    misses = [
        dict(source_prompt="a red disc"), dict(inference_steps=5), dict(self_replace=0.75),
        dict(fusion_min_downsample=2), dict(blend_words=("circle",)), dict(attention="first_frame"),
        dict(apply_at="every_step"), dict(frames=frames[::-1].copy()),
    ]  # fmt: skip
    for change in misses:
        assert key(**change) != base, change
    every = dict(apply_at="every_step")
    assert key(**every, seed=1) != key(**every, seed=2)
    assert key(**every, inversion_weight=0.5) != key(**every)
    hits = [
        dict(prompt="a blue square"), dict(guidance_scale=3.0), dict(inversion_weight=0.2),
        dict(seed=4), dict(noise_source="implied"), dict(blend_threshold=0.5),
    ]  # fmt: skip
    for change in hits:
        assert key(**change) == base, change
    # and for real: another step count inverts again into a second file
    cache = tmp_path / "cache"
    make_pipeline(parts, cache_dir=str(cache), output=str(tmp_path / "a"))(frames)
    changed = make_pipeline(parts, cache_dir=str(cache), output=str(tmp_path / "b"),
                            inference_steps=3)(frames)  # fmt: skip
    assert not changed.cache_hit and len(list(cache.glob("inversion-*.safetensors"))) == 2


def test_an_unreadable_or_foreign_cache_file_is_a_miss(parts, frames, tmp_path):
    pipe = make_pipeline(parts, cache_dir=str(tmp_path))
    material = pipe.cache_material(frames)
    path = tmp_path / "inversion-x.safetensors"
    path.write_bytes(b"not a safetensors file")
    assert load_inversion(path, material) is None
    store = AttentionStore()
    store.save(path, {name: torch.zeros(1) for name in ("source_latents", "final_latents")}, {})
    assert load_inversion(path, material) is None  # no recorded settings, missing tensors


@pytest.mark.parametrize("location", ["device", "disk"])
def test_store_files_round_trip_through_safetensors(location, tmp_path):
    store = AttentionStore(location, spill_dir=tmp_path)
    g = torch.Generator().manual_seed(0)
    entries = {f"self/{i}/layer": torch.randn(2, 3, 4, generator=g) for i in range(3)}
    for name, tensor in entries.items():
        store.put(name, tensor)
    latents = {"final_latents": torch.randn(1, 4, 2, 2, 2, generator=g)}
    path = tmp_path / "sub" / "cache.safetensors"
    digest = store.save(path, latents, {"key": "value"})
    store.close()
    assert digest == hashlib.sha256(path.read_bytes()).hexdigest()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sub"]  # spill file gone
    assert [p.name for p in path.parent.iterdir()] == ["cache.safetensors"]
    raw = load_file(path)  # the file is plain safetensors
    assert torch.equal(raw["final_latents"], latents["final_latents"])
    opened, tensors, metadata = AttentionStore.open(path)
    assert metadata == {"key": "value"} and torch.equal(
        tensors["final_latents"], raw["final_latents"]
    )
    assert sorted(opened.names()) == sorted(entries) and opened.location == "file"
    for name, tensor in entries.items():
        assert torch.equal(opened.get(name), tensor.half())
        assert opened.get(name, dtype=torch.float32).dtype == torch.float32
    with pytest.raises(RuntimeError, match="read-only"):
        opened.put("new", torch.zeros(1))
    twice = AttentionStore()
    twice.put("a", torch.zeros(1))
    with pytest.raises(KeyError, match="already set"):
        twice.put("a", torch.zeros(1))


def test_an_interrupted_save_leaves_no_file(tmp_path, monkeypatch):
    store = AttentionStore()
    store.put("self/0/layer", torch.ones(3))

    def interrupted(self, name, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(AttentionStore, "get", interrupted)
    with pytest.raises(KeyboardInterrupt):
        store.save(tmp_path / "cache.safetensors", {}, {})
    assert list(tmp_path.iterdir()) == []
