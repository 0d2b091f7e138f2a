"""Editing when things go wrong: outputs, a cache that cannot be trusted, nonsense values."""

from __future__ import annotations

import errno
import json
import os
import shutil

import pytest
import torch

from edit_helpers import EDIT, SOURCE, make_pipeline, source_frames
from inr_smooth.cli import main
from inr_smooth.pipelines import edit as edit_module
from inr_smooth.pipelines.attention_store import AttentionStore
from inr_smooth.pipelines.components import load_parts
from inr_smooth.synthetic import Scene, render
from inr_smooth.video_io import write_video

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def parts(tiny_sd_folder):
    return load_parts(str(tiny_sd_folder))


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    frames = render(Scene(color="red", shape="circle", motion="right"), frames=4, size=16)
    return write_video(tmp_path_factory.mktemp("video") / "clip.gif", frames)


def argv(model, video, output, *extra) -> list[str]:
    return ["edit", "--video", str(video), "--source-prompt", SOURCE, "--prompt", EDIT,
            "--model", str(model), "--frames", "4", "--size", "16", "--inference-steps", "2",
            "--fusion-min-downsample", "1", "--output", str(output), *extra]  # fmt: skip


def last_line(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    return err.strip().splitlines()[-1]


def test_outputs_are_checked_before_the_model_loads(tiny_sd_folder, video, tmp_path, capsys,
                                                    monkeypatch):  # fmt: skip
    monkeypatch.setattr(edit_module, "load_parts", lambda *a, **k: pytest.fail("loaded"))
    (tmp_path / "file").write_text("x")
    assert main(argv(tiny_sd_folder, video, tmp_path / "file")) == 2
    assert "is a file, expected a folder" in last_line(capsys)
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "x").write_text("x")
    assert main(argv(tiny_sd_folder, video, tmp_path / "used")) == 2
    assert "exists and is not empty (choose another --output, or pass --overwrite" in last_line(
        capsys
    )


def test_a_read_only_output_is_one_line(tiny_sd_folder, video, readonly_dir, capsys):
    assert main(argv(tiny_sd_folder, video, readonly_dir / "out")) == 2
    assert "not writable" in last_line(capsys)


@pytest.mark.parametrize("value", ["inf", "nan"])
def test_a_non_finite_guidance_is_refused(tiny_sd_folder, video, tmp_path, capsys, value):
    assert main(argv(tiny_sd_folder, video, tmp_path / "o", "--guidance-scale", value)) == 2
    assert "guidance_scale must be a finite number" in last_line(capsys)


def test_overwrite_replaces_the_output_folder(tiny_sd_folder, video, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "old.txt").write_text("old")
    assert main(argv(tiny_sd_folder, video, out, "--overwrite")) == 0, capsys.readouterr().err
    assert "old.txt" not in {p.name for p in out.iterdir()} and (out / "log.json").is_file()


def test_a_cache_that_cannot_be_written_is_only_a_warning(tiny_sd_folder, video, tmp_path,
                                                          readonly_dir, capsys):  # fmt: skip
    out = tmp_path / "out"
    assert main(argv(tiny_sd_folder, video, out, "--cache-dir", str(readonly_dir))) == 0
    err = capsys.readouterr().err
    assert "warning: cannot write the cache folder" in err and "without the inversion cache" in err
    assert (out / "log.json").is_file()


def test_a_cache_write_that_fails_late_is_only_a_warning(parts, tmp_path, monkeypatch):
    def disk_full(path, inverted, material):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    monkeypatch.setattr(edit_module, "save_inversion", disk_full)
    pipeline = make_pipeline(parts, cache_dir=str(tmp_path / "c"), output=str(tmp_path / "o"))
    with pytest.warns(UserWarning, match="could not write the inversion cache .* No space left"):
        result = pipeline(source_frames())
    assert result.log["cache"]["saved"] is False and (tmp_path / "o" / "log.json").is_file()


def _cache_file(folder):
    (path,) = folder.glob("inversion-*.safetensors")
    return path


@pytest.mark.parametrize("damage", ["flip", "nan"])
def test_a_damaged_cache_file_is_named_recomputed_and_replaced(parts, tmp_path, damage):
    cache = tmp_path / "cache"
    frames = source_frames()
    fresh = make_pipeline(parts, output=str(tmp_path / "fresh"))(frames)
    make_pipeline(parts, cache_dir=str(cache), output=str(tmp_path / "a"))(frames)
    path = _cache_file(cache)
    data = bytearray(path.read_bytes())
    if damage == "flip":  # same size, other bytes: caught by the checksum
        data[-64:] = os.urandom(64)
        path.write_bytes(bytes(data))
        message = "damaged \\(checksum mismatch\\)"
    else:  # a well-formed file with NaN latents (and a matching checksum)
        from safetensors.torch import load_file, save_file

        tensors = load_file(path)
        tensors["final_latents"] = torch.full_like(tensors["final_latents"], float("nan"))
        with open(path, "rb") as f:
            header = json.loads(f.read(int.from_bytes(f.read(8), "little")))
        save_file(tensors, path, metadata=header["__metadata__"])
        import hashlib

        path.with_suffix(".sha256").write_text(hashlib.sha256(path.read_bytes()).hexdigest())
        message = "holding NaN or infinite latents"
    with pytest.warns(UserWarning, match=rf"inversion cache file {path} is {message}"):
        again = make_pipeline(parts, cache_dir=str(cache), output=str(tmp_path / "b"))(frames)
    assert not again.cache_hit and torch.equal(again.latents, fresh.latents)
    hit = make_pipeline(parts, cache_dir=str(cache), output=str(tmp_path / "c"))(frames)
    assert hit.cache_hit and torch.equal(hit.latents, fresh.latents)  # replaced, and sound


def test_the_cache_key_covers_every_model_component(parts, tiny_sd_folder, tmp_path):
    from inr_smooth.pipelines.inversion_cache import cache_key, model_identity

    base = cache_key(model_identity(str(tiny_sd_folder)))
    for changed in ("text_encoder/config.json", "scheduler/scheduler_config.json",
                    "tokenizer/vocab.json"):  # fmt: skip
        folder = shutil.copytree(tiny_sd_folder, tmp_path / changed.replace("/", "-"))
        assert cache_key(model_identity(str(folder))) == cache_key(
            {**model_identity(str(folder)), "model": str(folder)}
        )
        path = folder / changed
        path.write_text(path.read_text().replace("}", ', "edited": 1}', 1))
        identity = {**model_identity(str(folder)), "model": str(tiny_sd_folder.resolve())}
        assert cache_key(identity) != base, changed


def test_a_closed_store_says_so_and_stale_spill_files_are_removed(tmp_path):
    store = AttentionStore("disk", spill_dir=tmp_path)
    store.put("a", torch.ones(2))
    store.close()
    with pytest.raises(RuntimeError, match="closed"):
        store.get("a")
    stale = tmp_path / ".attention-999999999-x.spill"
    stale.write_bytes(b"left by a killed run")
    AttentionStore("disk", spill_dir=tmp_path).close()
    assert not stale.exists()


def test_a_prompt_longer_than_clip_reads_is_a_warning_saying_what_is_cut(parts):
    from inr_smooth.pipelines.components import encode_prompts

    long = "a red circle on a blue background, " * 12 + "and a cat"
    with pytest.warns(UserWarning, match=r"the prompt is 101 tokens, the text encoder reads 77: "
                                         r"the end '.*\.\.\.' is ignored"):  # fmt: skip
        encode_prompts(parts, [long])


def test_an_impossible_size_is_refused_at_once_saying_what_fits(video, tmp_path, capsys):
    args = ["edit", "--video", str(video), "--source-prompt", SOURCE, "--prompt", EDIT,
            "--model", "mini", "--frames", "4", "--size", "8192",
            "--output", str(tmp_path / "o")]  # fmt: skip
    assert main(args) == 2
    line = last_line(capsys)
    assert "this run needs about" in line and "would fit: --size" in line
    assert "--skip-memory-check" in line


def test_the_memory_estimate_scales_with_frames_and_pixels(tiny_sd_folder):
    from inr_smooth.model_info import describe_model
    from inr_smooth.models import inflate_unet, set_trainable
    from inr_smooth.pipelines.memory import RunMemory, meta_parts, unet_activation_bytes

    parts = meta_parts(describe_model(str(tiny_sd_folder)).source)
    video_unet = inflate_unet(parts.unet)
    assert {p.device.type for p in video_unet.parameters()} == {"meta"}  # no memory, no weights
    set_trainable(video_unet)
    sample = RunMemory(parts, video_unet, batch=2, training=False)
    # the scaled estimate is what a meta forward at that shape measures
    for frames, size in ((8, 48), (3, 96)):
        assert sample.estimate(frames, size).unet == pytest.approx(
            unet_activation_bytes(video_unet, 2, frames, (size // 2, size // 2),
                                  training=False, checkpointing=False), rel=0.05,
        )  # fmt: skip
    assert sample.estimate(8, 32).unet == pytest.approx(2 * sample.estimate(4, 32).unet, abs=1)
    assert sample.estimate(4, 64).unet > 3 * sample.estimate(4, 32).unet
    train = RunMemory(parts, video_unet, batch=1, training=True)
    light = RunMemory(parts, video_unet, batch=1, training=True, checkpointing=True)
    assert train.estimate(4, 32).unet > light.estimate(4, 32).unet > 0
    assert train.weights > sample.weights  # gradients and the optimizer's moments
