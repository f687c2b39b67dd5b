"""Shared fixtures for the scr_ros unit tests (no ROS needed)."""

import json

import numpy as np
import pytest
import torch

from scr_ros.cli import main
from scr_ros.datasets import open_dataset


def pytest_configure(config):
    # The test machine is shared; the tensors here are tiny, one thread is plenty.
    torch.set_num_threads(1)


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
    """`scr map` + `scr localize` on the tiny scene, run once for the tests below."""
    out = tmp_path_factory.mktemp("e2e")
    map_path, report, poses, csv = out / "tiny.safetensors", out / "report.json", out / "poses.txt", out / "frames.csv"
    assert main(["map", "synthetic:tiny", "--out", str(map_path), "--preset", "test", "--device", "cpu"]) == 0
    assert main(["localize", str(map_path), "synthetic:tiny", "--split", "test", "--report", str(report), "--poses", str(poses), "--csv", str(csv), "--device", "cpu"]) == 0
    return {"map": map_path, "report": json.loads(report.read_text()), "poses": poses, "csv": csv}
