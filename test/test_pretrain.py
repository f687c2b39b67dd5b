"""Encoder pretraining: determinism, resuming, weights files checked against their model card,
and the shipped weights."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch

from scr_ros.cli import main as scr_main
from scr_ros.datasets.synthetic import SCENES
from scr_ros.encoders import SiftContextEncoder, load_encoder, load_encoder_for_map
from scr_ros.encoders.weights import card_checksum
from scr_ros.errors import EncoderError, MappingCancelled, ScrError
from scr_ros.pretrain import (
    SCENE_SEED_BASE,
    PretrainConfig,
    Pretrainer,
    photometric,
    replace_comparison,
    scene_config,
    write_model_card,
)

# Two small rooms, two views each, windows of 12 x 12 cells: seconds per run.
SMALL = dict(
    scenes=2,
    frames_per_scene=2,
    crops_per_frame=2,
    window=12,
    batch_scenes=2,
    windows_per_scene=2,
    head_samples=256,
    refresh_every=5,
    warmup_steps=2,
    precision="fp32",
)


def _train(steps: int, **kw) -> Pretrainer:
    t = Pretrainer(PretrainConfig(steps=steps, **{**SMALL, **kw}), "cpu")
    t.run()
    return t


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A 12-step run, written as weights + model card."""
    out = tmp_path_factory.mktemp("pretrain") / "enc.safetensors"
    t = _train(12)
    digest = t.encoder.save_weights(out, metadata={"steps": t.step})
    write_model_card(out.with_suffix(".md"), t, digest, "scr pretrain-encoder --out enc.safetensors (test)")
    return t, out


def _pool_error(t: Pretrainer) -> float:
    """Mean 3D error (m) of every head on all of its scene's pool windows."""
    errors = []
    with torch.no_grad():
        feats = (
            t.init.features(t.encoder, t.pool.inputs.float()).permute(0, 2, 3, 1).reshape(-1, t.encoder.out_channels)
        )
        coords = t.pool.coords.permute(0, 2, 3, 1).reshape(-1, 3)
        scene = np.repeat(t.pool.scene, t.pool.coords.shape[2] * t.pool.coords.shape[3])
        for s in range(t.cfg.scenes):
            rows = torch.as_tensor(np.flatnonzero(scene == s))
            ok = torch.isfinite(coords[rows]).all(1)
            t.heads[s].set_mean(t.pool.centres[s])
            errors.append((t.heads[s](feats[rows][ok]) - coords[rows][ok]).norm(dim=1).mean())
    return float(torch.stack(errors).mean())


@pytest.mark.slow
def test_training_lowers_the_error_on_the_training_scenes(figure):
    t = Pretrainer(PretrainConfig(steps=60, **{**SMALL, "frames_per_scene": 4, "windows_per_scene": 4}), "cpu")
    from scr_ros.pretrain import build_pool

    t.pool = build_pool(t.cfg)
    before = _pool_error(t)
    t.run()
    assert len(t.losses) == 60 and all(np.isfinite(t.losses))
    after = _pool_error(t)
    figure("after_over_before", after / before)
    assert after < 0.75 * before, (before, after)


@pytest.mark.slow
def test_same_seed_same_weights_and_resume_is_exact(tmp_path, trained):
    full, _ = trained
    ckpt = tmp_path / "run.ckpt.safetensors"

    class StopAt:
        def __init__(self, trainer, step):
            self.trainer, self.step = trainer, step

        def is_set(self):
            return self.trainer.step >= self.step

    first = Pretrainer(PretrainConfig(steps=12, **SMALL), "cpu")
    first.cancel = StopAt(first, 7)  # between two cache refreshes (every 5 steps)
    with pytest.raises(MappingCancelled):
        first.run(ckpt)  # a cancelled run leaves a checkpoint
    resumed = Pretrainer.from_checkpoint(ckpt, "cpu")
    assert resumed.step == 7 and len(resumed.losses) == 7
    resumed.run(ckpt)
    assert resumed.losses == full.losses
    for k, v in full.encoder.learned_state().items():
        assert torch.equal(v, resumed.encoder.learned_state()[k]), k
    other_seed = _train(3, seed=1)
    assert other_seed.losses != full.losses[:3]


def test_weights_load_only_with_their_card(tmp_path, trained):
    t, out = trained
    enc = load_encoder(str(out))
    assert isinstance(enc, SiftContextEncoder) and enc.name == "dsift-ctx-file" and enc.out_channels == 512
    assert card_checksum(out.with_suffix(".md")) == hashlib.sha256(out.read_bytes()).hexdigest()
    image = torch.rand(1, 1, 96, 128)
    with torch.no_grad():
        expected = t.encoder.cpu().eval()(image)
        got = enc(image)
    assert got.shape == (1, 512, 12, 16)
    assert torch.allclose(got, expected, atol=2e-2), (got - expected).abs().max()  # fp16 storage
    # A map built with a weights file finds it again through its header, checksum-verified.
    with pytest.raises(EncoderError, match="does not choose files to open: give that file with --encoder PATH"):
        load_encoder_for_map(enc.describe())  # the header names the file, but is never followed
    assert load_encoder_for_map(enc.describe(), override=str(out)).checksum() == enc.checksum()

    tampered = tmp_path / "enc.safetensors"
    data = bytearray(out.read_bytes())
    data[-3] ^= 0x40
    tampered.write_bytes(bytes(data))
    (tmp_path / "enc.md").write_text(out.with_suffix(".md").read_text())
    with pytest.raises(EncoderError, match="model card"):
        load_encoder(str(tampered))
    (tmp_path / "enc.md").unlink()
    with pytest.raises(EncoderError, match="model card .* not found"):
        load_encoder(str(tampered))


def test_model_card_records_the_run_and_takes_a_comparison(trained):
    t, out = trained
    card = out.with_suffix(".md")
    text = card.read_text()
    for needle in (
        "scr pretrain-encoder",
        "steps: 12",
        "wall time",
        "final loss",
        "hardware",
        '"texture_families"',
        '"jpeg_quality"',
    ):
        assert needle in text, needle
    replace_comparison(card, "| encoder | 5cm/5° |\n|---|---|\n| `dsift-ctx` | 99 % |")
    assert "| `dsift-ctx` | 99 % |" in card.read_text()
    assert load_encoder(str(out)).name == "dsift-ctx-file"  # the card's checksum line survives


def test_training_scenes_are_randomized_and_never_evaluation_scenes():
    configs = [scene_config(0, i, 4) for i in range(8)]
    assert len({c.focal for c in configs}) == 8 and len({c.room_size for c in configs}) == 8
    assert all(c.seed >= SCENE_SEED_BASE for c in configs)
    evaluation_seeds = {
        room.seed for c in SCENES.values() for room in getattr(c, "rooms", (c,))
    }  # integrated scenes: their rooms
    assert not {c.seed for c in configs} & evaluation_seeds
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "bench_encoders", Path(__file__).parent.parent / "benchmarks" / "encoders.py"
    )
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    assert all(c.seed < SCENE_SEED_BASE for c in bench.UNSEEN_SCENES.values())
    img = np.full((64, 64), 0.5, np.float32)
    outs = [photometric(img, np.random.default_rng(i)) for i in range(6)]
    assert all(o.dtype == np.float32 and o.min() >= 0 and o.max() <= 1 for o in outs)
    assert len({round(float(o.mean()), 3) for o in outs}) > 3  # exposure and gamma vary


def test_cli_refuses_to_resume_with_other_settings(tmp_path, capsys):
    t = Pretrainer(PretrainConfig(steps=4, **SMALL), "cpu")
    t.step = 0
    ckpt = tmp_path / "c.ckpt.safetensors"
    t.save_checkpoint(ckpt)
    code = scr_main(
        ["pretrain-encoder", "--out", str(tmp_path / "w.safetensors"), "--resume", str(ckpt), "--steps", "9"]
    )
    assert code == 2 and "--steps 4 (asked 9)" in capsys.readouterr().err
    assert scr_main(["pretrain-encoder", "--out", str(tmp_path / "w.pt")]) == 2
    (tmp_path / "bad.ckpt.safetensors").write_bytes(b"not a checkpoint")
    with pytest.raises(ScrError, match="cannot read pretraining checkpoint"):
        Pretrainer.from_checkpoint(tmp_path / "bad.ckpt.safetensors", "cpu")


@pytest.mark.slow
def test_cli_writes_weights_card_and_checkpoint(tmp_path, capsys):
    out = tmp_path / "w.safetensors"
    code = scr_main(
        [
            "pretrain-encoder",
            "--out",
            str(out),
            "--scenes",
            "2",
            "--steps",
            "3",
            "--frames-per-scene",
            "1",
            "--batch-scenes",
            "2",
            "--device",
            "cpu",
        ]
    )
    assert code == 0, capsys.readouterr().err
    assert out.is_file() and (tmp_path / "w.md").is_file() and (tmp_path / "w.ckpt.safetensors").is_file()
    assert load_encoder(str(out)).out_channels == 512
    resumed = Pretrainer.from_checkpoint(tmp_path / "w.ckpt.safetensors", "cpu")
    assert resumed.step == 3 and resumed.cfg.scenes == 2


def test_shipped_weights_load_by_name_and_match_their_card():
    from scr_ros.encoders import PRETRAINED_WEIGHTS

    assert PRETRAINED_WEIGHTS.is_file(), "the package ships its pretrained encoder"
    card = PRETRAINED_WEIGHTS.with_suffix(".md")
    assert card_checksum(card) == hashlib.sha256(PRETRAINED_WEIGHTS.read_bytes()).hexdigest()
    assert "scr pretrain-encoder" in card.read_text()
    enc = load_encoder("dsift-ctx")
    assert enc.name == "dsift-ctx" and enc.out_channels == 512
    assert load_encoder_for_map(enc.describe()).checksum() == enc.checksum()
    with torch.no_grad():
        f = enc(torch.rand(1, 1, 64, 80))
    assert f.shape == (1, 512, 8, 10) and torch.isfinite(f).all()
    # pretraining left the learned channels alive (not constant over the image)
    assert f[0, 384:].std(dim=(1, 2)).gt(1e-3).float().mean() > 0.5


# ------------------------------------------------------------------------------ --init xfeat


@pytest.fixture(scope="module")
def xfeat_trained(tmp_path_factory):
    """XFeat's backbone fine-tuned for 8 steps, written as weights + model card."""
    out = tmp_path_factory.mktemp("pretrain-xfeat") / "xf.safetensors"
    t = _train(8, init="xfeat", window=8)
    digest = t.encoder.save_weights(out, metadata={"steps": t.step})
    write_model_card(out.with_suffix(".md"), t, digest, "scr pretrain-encoder --init xfeat --out xf.safetensors (test)")
    return t, out


def test_xfeat_init_trains_the_whole_backbone_with_frozen_statistics(xfeat_trained):
    from scr_ros.encoders import XFeatEncoder

    t, _ = xfeat_trained
    base = XFeatEncoder.from_package()
    assert t.cfg.lr_encoder == 5e-5 and t.encoder.out_channels == 64 and t.heads[0].config["in_channels"] == 64
    assert t.pool.inputs.shape[1:] == (1, 64, 64) and t.pool.coords.shape[1:] == (3, 8, 8)  # pixels, 8 per cell
    assert len(t.losses) == 8 and all(np.isfinite(t.losses))
    tuned, start = t.encoder.state_dict(), base.state_dict()
    convs = [k for k, v in start.items() if k.endswith(".weight") and v.ndim == 4]
    assert sum(not torch.equal(tuned[k].cpu(), start[k]) for k in convs) == len(convs)  # every layer learned
    for k in start:
        if "running_" in k:
            assert torch.equal(tuned[k].cpu(), start[k]), k  # BatchNorm kept XFeat's statistics
    assert t.encoder.checksum() != base.checksum()


@pytest.mark.slow
def test_xfeat_weights_load_with_their_card_and_resume_is_exact(tmp_path, xfeat_trained):
    from scr_ros.encoders import XFeatEncoder

    t, out = xfeat_trained
    enc = load_encoder(str(out))
    assert isinstance(enc, XFeatEncoder) and enc.name == "xfeat-file" and enc.source == str(out.resolve())
    assert "fine-tuned XFeat backbone" in out.with_suffix(".md").read_text()
    image = torch.rand(1, 1, 100, 130)
    with torch.no_grad():
        expected = t.encoder.cpu().eval()(image)
        got = enc(image)
    assert got.shape == (1, 64, 13, 17) and torch.allclose(got, expected, atol=1e-5)
    assert (
        load_encoder_for_map(enc.describe(), override=str(out)).checksum()
        == enc.checksum()
        != load_encoder("xfeat").checksum()
    )
    data = bytearray(out.read_bytes())
    data[-5] ^= 0x10
    (tmp_path / "xf.safetensors").write_bytes(bytes(data))
    (tmp_path / "xf.md").write_text(out.with_suffix(".md").read_text())
    with pytest.raises(EncoderError, match="model card"):
        load_encoder(str(tmp_path / "xf.safetensors"))

    class StopAt:
        def is_set(self):
            return resumed_from.step >= 3

    ckpt = tmp_path / "xf.ckpt.safetensors"
    resumed_from = Pretrainer(PretrainConfig(steps=8, **{**SMALL, "init": "xfeat", "window": 8}), "cpu")
    resumed_from.cancel = StopAt()
    with pytest.raises(MappingCancelled):
        resumed_from.run(ckpt)
    resumed = Pretrainer.from_checkpoint(ckpt, "cpu")
    assert resumed.cfg.init == "xfeat" and resumed.step == 3
    resumed.run()
    assert resumed.losses == t.losses
    assert resumed.encoder.checksum() == t.encoder.checksum()


def test_cli_pretrains_xfeat_and_refuses_an_unknown_init(tmp_path, capsys):
    out = tmp_path / "x.safetensors"
    code = scr_main(
        [
            "pretrain-encoder",
            "--init",
            "xfeat",
            "--out",
            str(out),
            "--scenes",
            "2",
            "--steps",
            "2",
            "--frames-per-scene",
            "1",
            "--batch-scenes",
            "2",
            "--device",
            "cpu",
        ]
    )
    err = capsys.readouterr().err
    assert code == 0, err
    assert "xfeat-backbone" in err
    assert load_encoder(str(out)).out_channels == 64
    with pytest.raises(SystemExit):
        scr_main(["pretrain-encoder", "--init", "ace", "--out", str(out)])
    with pytest.raises(ScrError, match="unknown --init"):
        PretrainConfig(init="ace").validate()
