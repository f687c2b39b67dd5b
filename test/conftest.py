"""Shared fixtures for the scr_ros unit tests (no ROS needed)."""

import json
import os

import numpy as np
import pytest
import torch

from scr_ros.cli import main
from scr_ros.datasets import open_dataset
from scr_ros.demo import run_demo
from scr_ros.device import CPU_PRECISION_ENV, CPU_PRECISIONS, cpu_auto_precision, cpu_name


def pytest_configure(config):
    # Tests run one at a time, and most of the suite's time is the few map builds, which the
    # machine's cores (two on CI) train about 1.7x faster than one; the node processes the ROS
    # tests start get the same number, so that they compute what the test process does. At
    # most two threads, so that a large machine running the suite does not make results depend
    # on its core count. SCR_TEST_THREADS=N runs the suite, and the processes it starts, with N
    # threads instead (the accuracy checks' margins must hold for another thread count's
    # numerics too).
    threads = int(os.environ.get("SCR_TEST_THREADS") or min(2, torch.get_num_threads()))
    torch.set_num_threads(threads)
    os.environ["OMP_NUM_THREADS"] = str(threads)  # what torch takes in the processes tests start
    # A CPU without native bf16 trains in fp32 and one with it in bf16 (precision "auto"), and a
    # map's accuracy figures differ between the two. SCR_TEST_PRECISION=fp32|bf16 makes "auto"
    # train and localize in that precision, here and in the processes tests start (through
    # SCR_ROS_CPU_PRECISION, which they inherit), so that one machine checks the other's bounds;
    # unset or "auto", the CPU decides. bf16 on a CPU without native bf16 is emulated and slow.
    forced = (os.environ.get("SCR_TEST_PRECISION") or "auto").strip().lower()
    if forced not in ("auto", *CPU_PRECISIONS):
        raise pytest.UsageError(f"SCR_TEST_PRECISION={forced!r}: use auto, fp32 or bf16")
    if forced != "auto":
        os.environ[CPU_PRECISION_ENV] = forced


# The quick loop, ``pytest -m "not slow"``, leaves out what takes minutes: a test marked slow
# (it builds a map, trains an encoder or starts ROS nodes), and every test that needs one of these
# shared fixtures (they build the shared maps and bags, or bring up ROS; the first test to ask
# pays for them, the others only look fast).
SLOW_FIXTURES = frozenset(
    {
        "mapped",
        "tiny_bag",
        "small_bag",
        "method_map",
        "hscnet_map",
        "partition_map",
        "glace_map",
        "trained",
        "xfeat_trained",
        "ros_env",
    }
)


def pytest_collection_modifyitems(config, items):
    for item in items:
        if SLOW_FIXTURES & set(item.fixturenames):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(autouse=True)
def suite_threads():
    """Every test starts with the suite's thread count: one that changes it (the in-process
    one-worker reference of the torchrun tests takes one thread) would otherwise leave the rest
    of the run on one thread, slower and with other numerics than its figures were measured in."""
    threads = torch.get_num_threads()
    yield
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)


def pytest_report_header(config):
    return f"scr_ros: {torch.get_num_threads()} torch threads, training precision {cpu_auto_precision()} on the CPU"


@pytest.fixture
def figure(request):
    """``figure(name, value)``: record a figure the test measured (an accuracy, an error, an
    inlier count) before it asserts a bound on it. With SCR_TEST_FIGURES=FILE set, each is
    appended to FILE as a JSON line with the thread count and training precision, so that a run on
    another machine, thread count or precision shows how far each measurement sits from its
    bound."""
    path = os.environ.get("SCR_TEST_FIGURES")

    def record(name: str, value) -> None:
        if path:
            with open(path, "a", encoding="utf-8") as f:
                f.write(
                    json.dumps(
                        {
                            "test": request.node.nodeid,
                            "figure": name,
                            "value": value,
                            "threads": torch.get_num_threads(),
                            "precision": cpu_auto_precision(),
                            "cpu": cpu_name(),
                        }
                    )
                    + "\n"
                )

    return record


@pytest.fixture
def rerun_entities():
    """The entity paths in a rerun recording (.rrd), read back with rerun-sdk's own CLI (what a
    person opening the file with ``rerun FILE.rrd`` sees)."""
    import subprocess
    import sys
    from pathlib import Path

    def read(path) -> set[str]:
        printed = subprocess.run(
            [str(Path(sys.executable).parent / "rerun"), "rrd", "print", str(path)],
            capture_output=True,
            text=True,
            timeout=120,
            env={**os.environ, "RERUN_ANALYTICS": "0"},
        )
        assert printed.returncode == 0, printed.stderr
        # "Chunk(...) with 1 rows (2.1 KiB) - /map/cloud - data columns: [...]"
        return {line.split(" - ")[1] for line in printed.stdout.splitlines() if line.startswith("Chunk(")}

    return read


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
    demo_report = run_demo(demo, quick=True, device="cpu")
    map_path, report, poses, csv = demo / "map.safetensors", out / "report.json", out / "poses.txt", out / "frames.csv"
    assert (
        main(
            [
                "localize",
                str(map_path),
                "synthetic:tiny",
                "--split",
                "test",
                "--report",
                str(report),
                "--poses",
                str(poses),
                "--csv",
                str(csv),
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    return {
        "map": map_path,
        "report": json.loads(report.read_text()),
        "poses": poses,
        "csv": csv,
        "demo": demo,
        "demo_report": demo_report,
    }


@pytest.fixture(scope="session")
def tiny_bag(tiny, tmp_path_factory):
    """`scr bag convert synthetic:tiny` (mapping and query frames), read-only for the tests."""
    out = tmp_path_factory.mktemp("tinybag") / "tiny"
    assert main(["bag", "convert", "synthetic:tiny", "--out", str(out)]) == 0
    return out
