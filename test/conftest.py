"""Shared fixtures for the scr_ros unit tests (no ROS needed)."""

import json

import numpy as np
import pytest
import torch

from scr_ros.cli import main
from scr_ros.datasets import open_dataset
from scr_ros.demo import run_demo


def pytest_configure(config):
    # Tests run one at a time, and most of the suite's time is the few map builds, which the
    # machine's cores (two on CI) train about 1.7x faster than one; the node processes the ROS
    # tests start get the same default. At most two threads, so that a large machine running
    # the suite does not make results depend on its core count.
    torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(12345)


@pytest.fixture(scope="session")
def cache(tmp_path_factory):
    path = tmp_path_factory.mktemp("scr_cache")
    mp = pytest.MonkeyPatch()
    mp.setenv("SCR_ROS_CACHE", str(path))
    yield path
    mp.undo()


@pytest.fixture(scope="session")
def tiny(cache):
    return open_dataset("synthetic:tiny")


@pytest.fixture(scope="session")
def mapped(tiny, tmp_path_factory):
    """The one shared map of the test run: `scr demo --quick` (the tiny scene, test preset),
    then `scr localize` of its map on synthetic:tiny with every output. Plumbing tests use this
    map; the tests that check a mapping option build their own."""
    out = tmp_path_factory.mktemp("e2e")
    demo = out / "demo"
    demo_report = run_demo(demo, quick=True, device="cpu", quiet=True)
    map_path, report, poses, csv = demo / "map.safetensors", out / "report.json", out / "poses.txt", out / "frames.csv"
    assert main(["localize", str(map_path), "synthetic:tiny", "--split", "test", "--report", str(report), "--poses", str(poses), "--csv", str(csv), "--device", "cpu"]) == 0
    return {"map": map_path, "report": json.loads(report.read_text()), "poses": poses, "csv": csv, "demo": demo, "demo_report": demo_report}


@pytest.fixture(scope="session")
def tiny_bag(tiny, tmp_path_factory):
    """`scr bag convert synthetic:tiny` (mapping and query frames), read-only for the tests."""
    out = tmp_path_factory.mktemp("tinybag") / "tiny"
    assert main(["bag", "convert", "synthetic:tiny", "--out", str(out)]) == 0
    return out
