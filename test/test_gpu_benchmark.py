"""``benchmarks/gpu.py --tiny`` on the CPU: every step of the GPU benchmark runs and writes its
JSON and table, so the minutes of a lent GPU go to measuring, not to debugging the script."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


@pytest.fixture(scope="module")
def gpu_benchmark():
    sys.path.insert(0, str(BENCHMARKS))  # the script imports its neighbours, as when run
    try:
        spec = importlib.util.spec_from_file_location("bench_gpu", BENCHMARKS / "gpu.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.path.remove(str(BENCHMARKS))


@pytest.mark.slow
def test_tiny_run_measures_every_step(gpu_benchmark, tmp_path, capsys):
    out = tmp_path / "gpu"
    assert gpu_benchmark.main(["--tiny", "--device", "cpu", "--out-dir", str(out), "--frames", "8"]) == 0
    result = json.loads((out / "gpu.json").read_text())
    assert result["tiny"] is True and "CPU" in result["hardware"] and not result["skipped"]
    mapping = {r["case"]: r for r in result["rows"] if r["step"] == "mapping"}
    assert set(mapping) == {"demo", "cpu", "sun3d"}
    assert mapping["sun3d"]["dataset"].endswith("sun3d") and mapping["sun3d"]["mapping_frames"] > 0
    for r in mapping.values():
        assert r["iterations"] > 0 and r["iterations_per_s"] > 0 and r["frames"] > 0
        assert r["mapping_s"] >= r["train_s"] > 0 and r["buffer_s"] > 0
    reloc = {r["case"]: r for r in result["rows"] if r["step"] == "relocalization"}
    assert set(reloc) == {"sequential", "pipelined", "fp32", "fp16", "bf16"}
    seq, pipe = reloc["sequential"], reloc["pipelined"]
    assert seq["frames"] == pipe["frames"] == 8 and seq["frames_per_s"] > 0
    assert seq["5cm_5deg"] == pipe["5cm_5deg"]  # the same poses, so the same accuracy
    assert {"encoder", "head", "ransac", "total"} <= set(seq["stage_ms"])
    assert seq["latency_p99_ms"] >= seq["latency_p50_ms"] > 0
    table = (out / "gpu.md").read_text()
    assert "| relocalization |" in table and "| pipelined |" in table and result["command"] in table


def test_budget_skips_the_steps_it_has_no_time_for(gpu_benchmark, tmp_path):
    out = tmp_path / "gpu"
    assert gpu_benchmark.main(["--tiny", "--device", "cpu", "--out-dir", str(out), "--budget-s", "0"]) == 0
    result = json.loads((out / "gpu.json").read_text())
    assert result["rows"] == [] and {s["case"] for s in result["skipped"]} == {"demo", "cpu", "sun3d"}
    assert "skipped demo: the 0 s budget was spent" in (out / "gpu.md").read_text()


def test_refusals(gpu_benchmark, tmp_path, capsys):
    with pytest.raises(SystemExit):
        gpu_benchmark.main(["--tiny", "--out-dir", str(tmp_path), "--doc", str(tmp_path / "page.md")])
    assert "--doc with --tiny" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        gpu_benchmark.main(["--device", "cpu", "--out-dir", str(tmp_path)])
    assert "no CUDA device" in capsys.readouterr().err
