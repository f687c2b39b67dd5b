"""What precision ``auto`` trains and localizes in, and how a run fixes it (SCR_ROS_CPU_PRECISION)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from scr_ros.device import CPU_PRECISION_ENV, autocast_dtype, cpu_auto_precision, cpu_has_fast_bf16
from scr_ros.errors import ScrError
from scr_ros.mapfile import load_map

CPU, CUDA = torch.device("cpu"), torch.device("cuda")  # autocast_dtype reads the type only


def test_the_environment_fixes_what_auto_means_on_a_cpu(monkeypatch):
    monkeypatch.setenv(CPU_PRECISION_ENV, "fp32")
    assert cpu_auto_precision() == "fp32" and autocast_dtype(CPU, "auto") is None
    monkeypatch.setenv(CPU_PRECISION_ENV, " BF16 ")
    assert cpu_auto_precision() == "bf16" and autocast_dtype(CPU, "auto") is torch.bfloat16
    # A precision asked for by name wins, and CUDA's auto stays fp16.
    assert autocast_dtype(CPU, "fp32") is None and autocast_dtype(CUDA, "auto") is torch.float16
    monkeypatch.delenv(CPU_PRECISION_ENV)
    assert cpu_auto_precision() == ("bf16" if cpu_has_fast_bf16() else "fp32")


def test_a_wrong_value_is_refused_with_the_variable_named(monkeypatch):
    monkeypatch.setenv(CPU_PRECISION_ENV, "fp16")
    with pytest.raises(ScrError, match=f"{CPU_PRECISION_ENV}='fp16': use fp32 or bf16"):
        autocast_dtype(CPU, "auto")
    assert autocast_dtype(CPU, "bf16") is torch.bfloat16  # not read when a precision is named


def test_the_suite_and_the_processes_it_starts_train_in_one_precision(mapped):
    """SCR_TEST_PRECISION (test/conftest.py) reaches the test process, the processes it starts
    (nodes, torchrun workers) and the maps they build."""
    here = cpu_auto_precision()
    child = subprocess.run(
        [sys.executable, "-c", "from scr_ros.device import cpu_auto_precision; print(cpu_auto_precision())"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert child.returncode == 0, child.stderr
    assert child.stdout.strip() == here
    assert load_map(mapped["map"]).training["precision"] == {"fp32": "float32", "bf16": "bfloat16"}[here]


def test_figures_of_two_precisions_are_tabled_side_by_side(tmp_path):
    """benchmarks/test_figures.py: a column per (precision, threads, CPU), a range for a figure
    recorded per frame, and a page rewritten between its markers."""
    import importlib.util
    from pathlib import Path

    script = Path(__file__).resolve().parent.parent / "benchmarks" / "test_figures.py"
    sys.path.insert(0, str(script.parent))
    try:
        spec = importlib.util.spec_from_file_location("bench_test_figures", script)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(script.parent))

    def line(name: str, value: float, precision: str) -> str:
        row = {"test": "test/test_x.py::test_y", "figure": name, "value": value, "threads": 2, "cpu": "C"}
        return json.dumps({**row, "precision": precision}) + "\n"

    fp32, bf16 = tmp_path / "fp32.jsonl", tmp_path / "bf16.jsonl"
    fp32.write_text(line("inliers", 103, "fp32") + line("inliers", 182, "fp32"))
    bf16.write_text(line("median_error_m", 0.162, "bf16"))
    page = tmp_path / "page.md"
    page.write_text(f"before\n{module.BEGIN}\nold\n{module.END}\nafter\n")
    assert module.main([str(fp32), str(bf16), "--doc", str(page)]) == 0
    text = page.read_text()
    assert text.startswith("before\n") and text.endswith("after\n") and "old" not in text
    assert "| test | figure | bf16, 2 threads, C | fp32, 2 threads, C |" in text
    assert "| `test_x.py::test_y` | inliers |  | 103 to 182 (2) |" in text
    assert "| `test_x.py::test_y` | median_error_m | 0.162 |  |" in text
    fp32.write_text("not json\n")
    with pytest.raises(SystemExit, match="fp32.jsonl:1: not a JSON line"):
        module.main([str(fp32)])
