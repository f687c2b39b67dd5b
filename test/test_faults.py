"""The fault suite: broken inputs, hostile files, impossible outputs and killed processes.

Each case asserts the exit status, the message naming the culprit, and what is on disk
afterwards. Extend it by adding a case to the tables below (or a test beside them); hostile files
are generated here from good ones, never committed as binaries.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from safetensors import safe_open
from safetensors.torch import save

from scr_ros.cli import main
from scr_ros.datasets import open_dataset, render_to_folder
from scr_ros.errors import DatasetError, EncoderError, MapFileError
from scr_ros.fileio import atomic_directory, remove_stale_staging
from scr_ros.mapfile import HEADER_KEY, load_map
from scr_ros.renderer import SceneConfig

SCR = [sys.executable, "-m", "scr_ros.cli"]


def digest(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def run_main(capsys, *argv) -> tuple[int, str, float]:
    t0 = time.monotonic()
    code = main([str(a) for a in argv])
    return code, capsys.readouterr().err, time.monotonic() - t0


@pytest.fixture(scope="module")
def small_folder(tmp_path_factory, cache):
    """A posed folder of a small synthetic room: 24 mapping and 6 query frames at 160x120."""
    out = tmp_path_factory.mktemp("faults") / "room"
    render_to_folder(
        SceneConfig(
            seed=4,
            room_size=(3.5, 3.0, 2.5),
            width=160,
            height=120,
            focal=131.25,
            mapping_frames=24,
            query_frames=6,
            num_objects=6,
            texel_density=160.0,
        ),
        out,
    )
    return out


def copy_folder(src: Path, dst: Path) -> Path:
    import shutil

    shutil.copytree(src, dst)
    return dst


# ------------------------------------------------------------------------------ outputs, checked before the work


def test_impossible_map_outputs_are_refused_before_mapping(capsys, tmp_path, mapped):
    a_file = tmp_path / "a_file"
    a_file.write_text("not a folder")
    a_dir = tmp_path / "a_dir"
    a_dir.mkdir()
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes")
    cases = {
        a_file / "x.safetensors": "is not a directory",
        a_dir: "is a directory",
        notes: "refusing to replace",
    }
    for out, message in cases.items():
        code, err, seconds = run_main(
            capsys, "map", "synthetic:tiny", "--out", out, "--preset", "test", "--device", "cpu"
        )
        assert code == 2 and message in err and str(out) in err and "Traceback" not in err, err
        assert "filling buffer" not in err and seconds < 30  # refused before the work
    assert notes.read_text() == "my notes"
    # Replacing a map with a map is fine: the check reads only its header.
    good = tmp_path / "good.safetensors"
    good.write_bytes(Path(mapped["map"]).read_bytes())
    from scr_ros.fileio import check_output_file
    from scr_ros.mapfile import not_a_map

    assert check_output_file(good, "map", not_a_map) == good


def test_unwritable_folders_are_refused_before_the_work(capsys, tmp_path, monkeypatch, mapped):
    locked = tmp_path / "locked"
    locked.mkdir()
    real_access = os.access
    # Tests may run as root, for whom mode bits do not forbid writing: deny through os.access.
    monkeypatch.setattr(
        os, "access", lambda p, mode, *a, **k: False if Path(p) == locked else real_access(p, mode, *a, **k)
    )
    cases = [
        ("map", "synthetic:tiny", "--out", locked / "m.safetensors", "--preset", "test", "--device", "cpu"),
        ("localize", mapped["map"], "synthetic:tiny", "--report", locked / "r.json", "--device", "cpu"),
        (
            "localize",
            mapped["map"],
            "synthetic:tiny",
            "--report",
            tmp_path / "r.json",
            "--plot",
            locked / "p.png",
            "--device",
            "cpu",
        ),
        ("demo", "--out", locked / "demo", "--quick"),
        ("pretrain-encoder", "--out", locked / "w.safetensors", "--steps", "1"),
        ("bag", "convert", "synthetic:tiny", "--out", locked / "bag"),
    ]
    for argv in cases:
        code, err, seconds = run_main(capsys, *argv)
        assert code == 2 and "no permission to write in" in err and str(locked) in err, (argv, err)
        assert seconds < 30, argv
    assert not (tmp_path / "r.json").exists()  # nothing partial: the report waits for the plot check


def test_os_errors_at_the_end_are_one_line_not_a_traceback(capsys, tmp_path, monkeypatch, mapped):
    import scr_ros.evaluation.reports

    def disk_full(path, data):
        raise OSError(28, "No space left on device", str(path))

    monkeypatch.setattr(scr_ros.evaluation.reports, "atomic_write_bytes", disk_full)
    monkeypatch.setattr(scr_ros.evaluation.reports, "atomic_write_json", lambda path, obj: disk_full(path, b""))
    code, err, _ = run_main(
        capsys, "localize", mapped["map"], "synthetic:tiny", "--report", tmp_path / "r.json", "--device", "cpu"
    )
    assert code == 2 and err.strip().endswith(
        f"scr: error: [Errno 28] No space left on device: '{tmp_path / 'r.json'}'"
    ), err


# ------------------------------------------------------------------------------ datasets, checked when they open


def test_broken_images_are_found_before_mapping(capsys, tmp_path, small_folder):
    cases = {
        "garbage": ("not a readable image", lambda p: p.write_bytes(b"\x00" * 100)),
        "wrong size": ("is 80x60 but the frame's intrinsics are for 160x120", None),
        "dangling link": ("dangling symbolic link", None),
    }
    for label, (message, damage) in cases.items():
        folder = copy_folder(small_folder, tmp_path / label.replace(" ", "_"))
        image = sorted((folder / "train" / "rgb").glob("*.png"))[5]
        if label == "wrong size":
            import cv2

            cv2.imwrite(str(image), np.zeros((60, 80, 3), np.uint8))
        elif label == "dangling link":
            image.unlink()
            image.symlink_to(tmp_path / "nowhere.png")
        else:
            damage(image)
        code, err, seconds = run_main(
            capsys, "map", folder, "--out", tmp_path / f"{label}.safetensors", "--preset", "test", "--device", "cpu"
        )
        assert code == 2 and message in err and image.stem in err, (label, err)
        assert seconds < 30 and not (tmp_path / f"{label}.safetensors").exists()


@pytest.mark.slow
def test_a_frame_that_fails_to_decode_is_skipped_and_recorded_not_fatal(capsys, tmp_path, small_folder):
    folder = copy_folder(small_folder, tmp_path / "room")
    image = sorted((folder / "train" / "rgb").glob("*.png"))[3]
    data = image.read_bytes()
    image.write_bytes(data[: len(data) // 3])  # the header is intact, the pixels are not
    out = tmp_path / "m.safetensors"
    code, err, _ = run_main(capsys, "map", folder, "--out", out, "--preset", "test", "--device", "cpu")
    assert code == 0, err
    unreadable = load_map(out).training["unreadable_frames"]
    assert list(unreadable) == [image.stem] and "cannot decode" in unreadable[image.stem]
    # ... and said at the end of mapping, not only recorded in the map.
    frames = load_map(out).training["frames"]
    assert f"scr: warning: skipped 1 of {frames} mapping frames that could not be read: {image.stem} (" in err, err
    # The library's own warning, when it skipped the frame, through the CLI's log.
    assert f"scr: warning: mapping frame {image.stem} skipped: " in err, err

    # scr localize: one undecodable query image is skipped and counted; the rest are evaluated.
    query = sorted((folder / "test" / "rgb").glob("*.png"))[2]
    query.write_bytes(b"garbage")
    report = tmp_path / "r.json"
    code, err, _ = run_main(capsys, "localize", out, folder, "--report", report, "--device", "cpu")
    assert code == 0, err
    r = json.loads(report.read_text())
    assert r["frames"] == 5 and r["frames_skipped"] == 1 and r["skipped"][0]["frame"] == query.stem
    assert f"scr: warning: frame {query.stem} skipped: " in err, err


def test_a_binary_split_file_is_a_clear_error(tmp_path):
    (tmp_path / "TrainSplit.txt").write_bytes(b"\xff\xfe\x00\x81binary")
    (tmp_path / "TestSplit.txt").write_text("sequence2\n")
    with pytest.raises(DatasetError, match="TrainSplit.txt: not a text file"):
        open_dataset(tmp_path).frames("train")


# ------------------------------------------------------------------------------ hostile maps


def rewrite_header(src: Path, dst: Path, change, extra_tensors: dict | None = None) -> Path:
    """A copy of map ``src`` whose header ``change(header)`` edited (checksums untouched)."""
    with safe_open(str(src), framework="pt") as f:
        header = json.loads(f.metadata()[HEADER_KEY])
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    change(header)
    tensors.update(extra_tensors or {})
    dst.write_bytes(save(tensors, metadata={HEADER_KEY: json.dumps(header)}))
    return dst


def test_hostile_map_headers_are_refused_without_opening_files_or_allocating(tmp_path, mapped):
    import torch

    src = Path(mapped["map"])

    def names_a_file(h):
        h["encoder"].update(name="dsift-ctx-file", source=str(tmp_path / "evil.pt"))

    (tmp_path / "evil.pt").write_bytes(b"would be unpickled")
    m = load_map(rewrite_header(src, tmp_path / "file.safetensors", names_a_file))
    from scr_ros.relocalize import Relocalizer

    with pytest.raises(EncoderError, match="a map does not choose files to open"):
        Relocalizer(m, device="cpu")

    def huge(h):
        h["encoder"]["out_channels"] = 30000
        h["projection"] = {"type": "pca", "in_channels": 30000, "dim": 64}

    t0 = time.monotonic()
    with pytest.raises(MapFileError, match="outside 1..8192"):
        load_map(rewrite_header(src, tmp_path / "huge.safetensors", huge))

    def wide_projection(h):
        h["projection"] = {
            "type": "pca",
            "in_channels": h["encoder"]["out_channels"],
            "dim": h["head"]["config"].get("in_channels", 64),
        }

    # A projection the header declares but whose tensors do not match is refused by shape,
    # with the parts built on the meta device (no memory) until then.
    with pytest.raises(MapFileError, match="projection"):
        load_map(
            rewrite_header(src, tmp_path / "proj.safetensors", wide_projection, {"projection.mean": torch.zeros(3)})
        )
    assert time.monotonic() - t0 < 10

    # A tensor stored in another dtype than the header declares, checksum recomputed to match.
    with safe_open(str(src), framework="pt") as f:
        header = json.loads(f.metadata()[HEADER_KEY])
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    name = next(k for k, v in tensors.items() if v.dtype == torch.float16)
    tensors[name] = tensors[name].float()
    from scr_ros.mapfile import tensors_sha256

    header["weights_sha256"] = tensors_sha256(tensors)
    (tmp_path / "dtype.safetensors").write_bytes(save(tensors, metadata={HEADER_KEY: json.dumps(header)}))
    with pytest.raises(MapFileError, match=f"tensor {name} is float32, but the header says weights_dtype float16"):
        load_map(tmp_path / "dtype.safetensors")

    directory = tmp_path / "a_dir.safetensors"
    directory.mkdir()
    with pytest.raises(MapFileError, match="is a directory, not a map file"):
        load_map(directory)


# ------------------------------------------------------------------------------ kills


def _start(argv, cwd) -> subprocess.Popen:
    return subprocess.Popen(
        [*SCR, *map(str, argv)],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def _wait_for(proc: subprocess.Popen, text: str, timeout: float = 120.0) -> str:
    """Read the process output until ``text`` appears (tqdm lines end in \\r or \\n)."""
    out = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        out += os.read(proc.stdout.fileno(), 4096)
        if text.encode() in out:
            return out.decode(errors="replace")
    raise AssertionError(f"{text!r} never appeared:\n{out.decode(errors='replace')}")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_killing_scr_map_keeps_the_previous_map_and_leaves_nothing(tmp_path, mapped, cache, sig):
    out = tmp_path / "m.safetensors"
    out.write_bytes(Path(mapped["map"]).read_bytes())
    before = digest(out)
    proc = _start(["map", "synthetic:tiny", "--out", out, "--preset", "test", "--device", "cpu"], tmp_path)
    _wait_for(proc, "training head")
    proc.send_signal(sig)
    rest = proc.communicate(timeout=60)[0].decode(errors="replace")
    if sig == signal.SIGTERM:
        assert proc.returncode == 130 and "scr: interrupted" in rest, rest
    else:
        assert proc.returncode == -signal.SIGKILL
    assert digest(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.safetensors"]  # no temporary file left


@pytest.mark.slow
def test_killing_bag_convert_leaves_no_staging_and_the_next_run_cleans_up(tmp_path, cache):
    bag = tmp_path / "tiny_bag"
    proc = _start(["bag", "convert", "synthetic:tiny", "--out", bag], tmp_path)
    _wait_for(proc, "writing bag")
    proc.send_signal(signal.SIGTERM)
    rest = proc.communicate(timeout=60)[0].decode(errors="replace")
    assert proc.returncode == 130, rest
    assert not bag.exists() and not list(tmp_path.glob(".tiny_bag.*")), list(tmp_path.iterdir())

    # SIGKILL cannot be caught: what it leaves is removed by the next run for the same target,
    # and a replace killed between its two renames gets the old bag back first.
    old = tmp_path / "out_bag"
    old.mkdir()
    (old / "metadata.yaml").write_text("old bag")
    stale = tmp_path / ".out_bag.abc.partial"
    stale.mkdir()
    os.replace(old, stale / "out_bag.old")  # the state between the renames
    (stale / "out_bag").mkdir()
    assert remove_stale_staging(old, ".partial", restore="out_bag.old") == [stale]
    assert (old / "metadata.yaml").read_text() == "old bag" and not stale.exists()
    with atomic_directory(tmp_path / "other", replace=False) as staging:
        staging.mkdir()
    assert (tmp_path / "other").is_dir()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_killing_bag_map_keeps_the_previous_map_and_no_session_outlives_the_next_run(tmp_path, tiny_bag, mapped, sig):
    out = tmp_path / "m.safetensors"
    out.write_bytes(Path(mapped["map"]).read_bytes())
    before = digest(out)
    proc = _start(["bag", "map", tiny_bag, "--out", out, "--preset", "test", "--device", "cpu"], tmp_path)
    _wait_for(proc, "training head")
    proc.send_signal(sig)
    rest = proc.communicate(timeout=60)[0].decode(errors="replace")
    assert proc.returncode == (130 if sig == signal.SIGTERM else -signal.SIGKILL), rest
    assert digest(out) == before
    sessions = list(tmp_path.glob(".m.safetensors.session-*"))
    assert (sessions == []) == (sig == signal.SIGTERM), sessions  # SIGKILL cannot be caught...
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "x").write_text("x")
    proc = _start(
        ["bag", "map", tiny_bag, "--out", out, "--session", busy], tmp_path
    )  # refused, but only after cleaning up
    rest = proc.communicate(timeout=120)[0].decode(errors="replace")
    assert proc.returncode == 2 and "is not empty" in rest, rest
    assert not list(tmp_path.glob(".m.safetensors.session-*"))  # ...so the next run removes what it left


@pytest.mark.slow
def test_sigkill_during_bag_convert_is_cleaned_up_by_the_next_run(tmp_path, cache):
    bag = tmp_path / "b"
    proc = _start(["bag", "convert", "synthetic:tiny", "--out", bag], tmp_path)
    _wait_for(proc, "writing bag")
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    assert not bag.exists() and list(tmp_path.glob(".b.*.partial"))
    assert main(["bag", "convert", "synthetic:tiny", "--out", str(bag)]) == 0
    assert bag.is_dir() and not list(tmp_path.glob(".b.*.partial"))
