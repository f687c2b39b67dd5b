"""The layer rule of docs/architecture.md, checked on the source: no import cycle, no upward
import (function-local imports included), no private name imported from another module, and
nothing importing the CLI."""

from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# Bottom to top; a module may import from its own layer and the ones below. The first prefix
# that matches a module names its layer (a prefix covers the module and its submodules).
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("foundation", ("scr_ros", "scr_ros.errors", "scr_ros.registry", "scr_ros.geometry", "scr_ros.metrics", "scr_ros.fileio", "scr_ros.device", "scr_ros.progress", "scr_ros.distributed")),
    ("data", ("scr_ros.imaging", "scr_ros.messages", "scr_ros.datasets", "scr_ros.renderer")),
    ("parts", ("scr_ros.labels", "scr_ros.encoders", "scr_ros.heads", "scr_ros.losses", "scr_ros.selectors", "scr_ros.classifier", "scr_ros.pca", "scr_ros.retrieval", "scr_ros.covisibility", "scr_ros.map_parts", "scr_ros.ransac", "scr_ros.mapfile")),
    ("engines", ("scr_ros.mapping_config", "scr_ros.map_builder", "scr_ros.relocalize", "scr_ros.evaluate", "scr_ros.reports", "scr_ros.pretrain")),
    ("pipeline", ("scr_ros.pipeline", "scr_ros.demo")),
    ("node logic and bag tools", ("scr_ros.node_logic", "scr_ros.bag")),
    ("entry points", ("scr_ros.cli", "scr_ros.ros")),
]


def layer_of(module: str) -> int:
    # A prefix covers the module and its submodules; the root package covers only itself.
    for index, (_, prefixes) in enumerate(LAYERS):
        if any(module == p or (p != "scr_ros" and module.startswith(p + ".")) for p in prefixes):
            return index
    raise AssertionError(f"{module} is in no layer; add it to LAYERS and docs/architecture.md")


def module_name(path: Path, root: Path = ROOT) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def internal_imports(path: Path, modules: set[str], root: Path = ROOT) -> list[tuple[str, str, int]]:
    """(imported module, imported name or '', line) for every scr_ros import in ``path``,
    top-level or inside functions (not those under ``if TYPE_CHECKING:``, which never run).
    ``from package import submodule`` counts as the submodule."""
    name = module_name(path, root)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = []
    tree = ast.parse(path.read_text(), str(path))
    # Imports under `if TYPE_CHECKING:` are for annotations only and never run.
    typing_only = {
        id(inner)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and ast.unparse(node.test) in ("TYPE_CHECKING", "typing.TYPE_CHECKING")
        for stmt in node.body
        for inner in ast.walk(stmt)
    }
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.Import):
            out += [(a.name, "", node.lineno) for a in node.names if a.name.split(".")[0] == "scr_ros"]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != "scr_ros":
                continue
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                out.append((sub, "", node.lineno) if sub in modules else (target, alias.name, node.lineno))
    return out


def import_graph(root: Path = ROOT) -> dict[str, list[tuple[str, str, int]]]:
    paths = sorted((root / "scr_ros").rglob("*.py"))
    modules = {module_name(p, root) for p in paths}
    return {module_name(p, root): internal_imports(p, modules, root) for p in paths}


def layer_violations(graph: dict[str, list[tuple[str, str, int]]]) -> list[str]:
    problems = []
    for module, imports in graph.items():
        for target, name, line in imports:
            if target == module:
                continue
            if layer_of(target) > layer_of(module):
                problems.append(
                    f"{module}:{line} imports {target} ({LAYERS[layer_of(target)][0]}) from the lower layer {LAYERS[layer_of(module)][0]!r}"
                )
            if name.startswith("_") and not name.startswith("__"):
                problems.append(f"{module}:{line} imports the private name {name} from {target}")
            if target.startswith("scr_ros.cli") and not module.startswith("scr_ros.cli"):
                problems.append(f"{module}:{line} imports the CLI ({target}); call scr_ros.pipeline instead")
    return problems


def import_cycles(graph: dict[str, list[tuple[str, str, int]]]) -> list[list[str]]:
    """Cycles among modules, a package counting as importing what its ``__init__`` imports."""
    edges = {m: sorted({t for t, _, _ in imports if t != m and t in graph}) for m, imports in graph.items()}
    cycles, state, stack = [], {}, []

    def visit(m: str) -> None:
        state[m] = "open"
        stack.append(m)
        for t in edges[m]:
            if state.get(t) == "open":
                cycles.append(stack[stack.index(t) :] + [t])
            elif t not in state:
                visit(t)
        stack.pop()
        state[m] = "done"

    for m in sorted(edges):
        if m not in state:
            visit(m)
    return cycles


def test_every_import_points_down_and_none_is_private():
    assert layer_violations(import_graph()) == []


def test_no_import_cycle():
    assert import_cycles(import_graph()) == []


def test_benchmarks_use_the_library_not_the_cli():
    users = [p.name for p in (ROOT / "benchmarks").glob("*.py") if "scr_ros.cli" in p.read_text()]
    assert users == []


@pytest.mark.parametrize(
    "source, expected",
    [
        ("from .pipeline import build_map\n", "from the lower layer 'foundation'"),
        ("from .errors import _private\n", "private name _private"),
        ("from .cli import main\n", "imports the CLI"),
    ],
)
def test_the_checker_catches_what_it_forbids(tmp_path, source, expected):
    """The rule must be able to fail: a planted upward, private or CLI import is reported."""
    pkg = tmp_path / "scr_ros"
    (pkg / "cli").mkdir(parents=True)
    for name in ("__init__.py", "cli/__init__.py", "pipeline.py", "errors.py"):
        (pkg / name).write_text("")
    (pkg / "geometry.py").write_text(source)  # the bottom layer importing
    problems = layer_violations(import_graph(tmp_path))
    assert any(expected in p for p in problems), problems


def test_the_checker_finds_a_cycle():
    graph = {"scr_ros.a": [("scr_ros.b", "", 1)], "scr_ros.b": [("scr_ros.c", "", 1)], "scr_ros.c": [("scr_ros.a", "", 3)]}
    assert import_cycles(graph) == [["scr_ros.a", "scr_ros.b", "scr_ros.c", "scr_ros.a"]]


def test_a_part_is_one_file(tmp_path):
    """The worked example of docs/architecture.md, dropped into a copy of the package as the one
    file it says it is: the registry, the CLI, the node parameters and the Relocalizer see it."""
    doc = (ROOT / "docs" / "architecture.md").read_text()
    example = re.search(r"`scr_ros/selectors/top_score\.py`:\n\n```python\n(.*?)```", doc, re.S)
    assert example, "docs/architecture.md lost its worked example"
    shutil.copytree(ROOT / "scr_ros", tmp_path / "scr_ros", ignore=shutil.ignore_patterns("__pycache__"))
    (tmp_path / "scr_ros" / "selectors" / "top_score.py").write_text(example.group(1))
    check = """
import numpy as np, pytest, torch
from scr_ros.cli import make_parser
from scr_ros.encoders import load_encoder
from scr_ros.errors import ScrError
from scr_ros.heads import build_head
from scr_ros.mapfile import SceneMap
from scr_ros.node_logic.params import RELOCALIZER_PARAMS
from scr_ros.relocalize import Relocalizer, RelocalizerConfig
from scr_ros.selectors import SELECTORS

assert "top-score" in SELECTORS
assert "top-score" in next(s for s in RELOCALIZER_PARAMS if s.name == "selector").choices
assert make_parser().parse_args(["localize", "m", "d", "--report", "r.json", "--selector", "top-score"]).selector == "top-score"
encoder = load_encoder("dsift")
config = RelocalizerConfig(selector="top-score")
plain = SceneMap(head=build_head("ace", in_channels=encoder.out_channels, width=32), encoder=encoder.describe(), image_height=120)
with pytest.raises(ScrError, match="needs a map whose head predicts a discriminability score"):
    Relocalizer(plain, encoder, device="cpu", config=config)
scored = SceneMap(head=build_head("ace", in_channels=encoder.out_channels, width=32, score=True), encoder=encoder.describe(), image_height=120)
reloc = Relocalizer(scored, encoder, device="cpu", config=config)
image = (np.random.default_rng(0).random((120, 160, 3)) * 255).astype(np.uint8)
pixels, coords, signals, _ = reloc.correspondences(image, reloc.selector)
picked = reloc.selector(len(coords), **signals)
assert len(picked) == min(1000, len(coords)) and np.all(np.diff(signals["score"][picked]) <= 0)
print("ok")
"""
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", check], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip().endswith("ok"), out.stderr[-3000:]
