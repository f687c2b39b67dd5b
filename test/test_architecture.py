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
    (
        "foundation",
        (
            "scr_ros",
            "scr_ros.errors",
            "scr_ros.registry",
            "scr_ros.settings",
            "scr_ros.geometry",
            "scr_ros.evaluation.metrics",
            "scr_ros.fileio",
            "scr_ros.device",
            "scr_ros.progress",
            "scr_ros.distributed",
        ),
    ),
    (
        "data",
        (
            "scr_ros.imaging",
            "scr_ros.messages",
            "scr_ros.datasets",
            "scr_ros.renderer",
            "scr_ros.evaluation.trajectory",
            "scr_ros.evaluation.drift",
        ),
    ),
    (
        "parts",
        (
            "scr_ros.fit_context",
            "scr_ros.labels",
            "scr_ros.encoders",
            "scr_ros.heads",
            "scr_ros.losses",
            "scr_ros.selectors",
            "scr_ros.retrieval",
            "scr_ros.map_parts",
            "scr_ros.ransac",
            "scr_ros.mapfile",
        ),
    ),
    (
        "engines",
        (
            "scr_ros.mapping_config",
            "scr_ros.mapping",
            "scr_ros.relocalize",
            "scr_ros.growth",
            "scr_ros.evaluation",  # localization, reports, rerun_log (metrics, trajectory, drift: above)
            "scr_ros.pretrain",
        ),
    ),
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


LAYER_LIST_BEGIN = "<!-- layers: written from LAYERS by python test/test_architecture.py -->"
LAYER_LIST_END = "<!-- end layers -->"


def layer_list() -> str:
    """LAYERS as docs/architecture.md shows them: top layer first, folders with a slash."""
    lines = ["```"]
    for name, prefixes in reversed(LAYERS):
        names = []
        for prefix in prefixes:
            if prefix == "scr_ros":
                continue  # the package's own __init__
            short = prefix.removeprefix("scr_ros.")
            names.append(short + "/" if (ROOT / "scr_ros" / short.replace(".", "/")).is_dir() else short)
        label, row = f" {name:<26}", []
        for item in names:
            if row and len(label) + len("  ".join(row + [item])) > 100:
                lines.append(label + "  ".join(row))
                label, row = " " * 27, []
            row.append(item)
        lines += [label + "  ".join(row), "        │"]
    lines[-1] = "```"
    return "\n".join(lines) + "\n"


def test_the_architecture_page_lists_the_layers_of_this_test():
    text = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    shown = text.split(LAYER_LIST_BEGIN, 1)[1].split(LAYER_LIST_END, 1)[0].lstrip("\n")
    assert shown == layer_list(), "docs/architecture.md's layer list is stale: run python test/test_architecture.py"


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
                    f"{module}:{line} imports {target} ({LAYERS[layer_of(target)][0]}) from the lower layer "
                    f"{LAYERS[layer_of(module)][0]!r}"
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
    graph = {
        "scr_ros.a": [("scr_ros.b", "", 1)],
        "scr_ros.b": [("scr_ros.c", "", 1)],
        "scr_ros.c": [("scr_ros.a", "", 3)],
    }
    assert import_cycles(graph) == [["scr_ros.a", "scr_ros.b", "scr_ros.c", "scr_ros.a"]]


def _examples() -> dict[str, str]:
    """The worked examples of docs/architecture.md, by the file they say they are."""
    doc = (ROOT / "docs" / "architecture.md").read_text()
    found = dict(re.findall(r"the file\s+`(scr_ros/[a-z_/]+\.py)`:\n\n```python\n(.*?)```", doc, re.S))
    assert set(found) == {"scr_ros/selectors/top_score.py", "scr_ros/map_parts/feature_scale.py"}, (
        "docs/architecture.md lost a worked example"
    )
    return found


@pytest.mark.slow
def test_a_part_with_a_setting_is_one_file(tmp_path):
    """The worked examples of docs/architecture.md, dropped into a copy of the package as the one
    file each says it is: the registries, the CLI's help, the node parameters, the docs tables,
    a map build and the Relocalizer see them and their settings."""
    shutil.copytree(ROOT / "scr_ros", tmp_path / "scr_ros", ignore=shutil.ignore_patterns("__pycache__"))
    for path, text in _examples().items():
        (tmp_path / path).write_text(text)
    check = """
import numpy as np, pytest, torch
from scr_ros.cli import make_parser
from scr_ros.encoders import load_encoder
from scr_ros.errors import ScrError
from scr_ros.heads import build_head
from scr_ros.mapfile import SceneMap, load_map
from scr_ros.node_logic.doc_tables import generated_tables
from scr_ros.node_logic.params import MAPPING_PARAMS, RELOCALIZER_PARAMS, mapping_methods, validate
from scr_ros.pipeline import build_map
from scr_ros.relocalize import Relocalizer, RelocalizerConfig
from scr_ros.selectors import SELECTORS
from scr_ros.datasets import open_dataset

def help_of(command):
    parser = make_parser()
    sub = next(a for a in parser._actions if a.dest == "command").choices[command]
    return " ".join(sub.format_help().split())

# The selector and its setting k.
assert "top-score" in SELECTORS
assert "top-score" in next(s for s in RELOCALIZER_PARAMS if s.name == "selector").choices
k = next(s for s in RELOCALIZER_PARAMS if s.name == "top_score_k")
assert k.default == 1000 and (k.min, k.max) == (4, 100000) and k.dynamic
assert "--top-score-k K" in help_of("localize") and "top-score selector: correspondences kept" in help_of("localize")
assert "| `top-score` | `k` | 1000 | 4 – 100000 |" in generated_tables()["settings of selectors"]
args = make_parser().parse_args(
    ["localize", "m", "d", "--report", "r.json", "--selector", "top-score", "--top-score-k", "500"]
)
from scr_ros.cli.options import relocalizer_config
config = relocalizer_config(args)
assert config.selector_settings == {"top-score": {"k": 500}}
with pytest.raises(ScrError, match="top_score.*k = 2 is outside|k = 2 is outside"):
    relocalizer_config(make_parser().parse_args(["localize", "m", "d", "--report", "r.json", "--top-score-k", "2"]))
encoder = load_encoder("dsift")
def small_map(**head):
    ace = build_head("ace", in_channels=encoder.out_channels, width=32, **head)
    return SceneMap(head=ace, encoder=encoder.describe(), image_height=120)
plain = small_map()
with pytest.raises(ScrError, match="needs a map whose head predicts a discriminability score"):
    Relocalizer(plain, encoder, device="cpu", config=config)
scored = small_map(score=True)
reloc = Relocalizer(scored, encoder, device="cpu", config=config)
assert reloc.selector.k == 500
image = (np.random.default_rng(0).random((120, 160, 3)) * 255).astype(np.uint8)
pixels, coords, signals, _ = reloc.correspondences(image, reloc.selector)
picked = reloc.selector(len(coords), **signals)
assert len(picked) == min(500, len(coords)) and np.all(np.diff(signals["score"][picked]) <= 0)

# The map part and its settings.
assert "feature-scale: target (1.0; 0.01 – 100), samples (20000; 100 – 10000000)" in help_of("map")
target = next(s for s in MAPPING_PARAMS if s.name == "feature_scale_target")
assert target.default == 1.0 and (target.min, target.max) == (0.01, 100.0)
assert "| `feature-scale` | `target` | 1.0 | 0.01 – 100 |" in generated_tables()["settings of map parts"]
methods = mapping_methods(validate(MAPPING_PARAMS, {"map_parts": '{"feature-scale": {}}', "feature_scale_target": 2.0}))
assert methods["parts"] == {"feature-scale": {"target": 2.0}}, methods
scene = build_map("synthetic:tiny", "m.safetensors", preset_name="test", device="cpu", encoder_spec="dsift",
                  buffer_size=4000, samples_per_image=256, epochs=1.0, batch_size=512, cloud_frames=2, **methods)
loaded = load_map("m.safetensors")
part = loaded.parts["feature-scale"]
assert loaded.training["config"]["parts"]["feature-scale"] == {"target": 2.0, "samples": 20000}
# The factor's tensor went through the file (as fp16).
assert abs(float(part.module.factor) - part.info["factor"]) < 1e-2 and part.info["factor"] > 0
frame = open_dataset("synthetic:tiny").frames("test")[0]
feats, _, _ = Relocalizer(loaded, device="cpu").encode(frame.load_image())
rows, _ = Relocalizer(loaded, device="cpu").local_rows(feats)
assert 1.5 < float(rows.float().pow(2).mean().sqrt()) < 2.5  # the query's rows come out near the target
print("ok")
"""
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", check], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip().endswith("ok"), out.stderr[-3000:]


# ------------------------------------------------------------------------------ the parts' context


def context_members() -> set[str]:
    """What :class:`FitContext` offers: its annotated fields and its methods."""
    from scr_ros.fit_context import FitContext

    methods = {name for name, value in vars(FitContext).items() if callable(value) and not name.startswith("_")}
    return set(FitContext.__annotations__) | methods


def context_reaches(source: str, members: set[str]) -> list[str]:
    """Every use of a parameter annotated ``FitContext`` in ``source`` that is neither one of
    ``members`` read as an attribute nor the context passed on whole to a call."""
    tree = ast.parse(source)
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    problems = []
    for fn in ast.walk(tree):
        if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        names = {
            a.arg
            for a in fn.args.args + fn.args.kwonlyargs
            if a.annotation is not None and "FitContext" in ast.unparse(a.annotation)
        }
        for node in ast.walk(fn):
            if not (isinstance(node, ast.Name) and node.id in names):
                continue
            parent = parents.get(node)
            if isinstance(parent, ast.Attribute) and parent.value is node:
                if parent.attr not in members:
                    problems.append(
                        f"line {node.lineno}: {fn.name} reads {node.id}.{parent.attr}, which FitContext does not offer"
                    )
            elif not (isinstance(parent, ast.Call) and node in parent.args + [k.value for k in parent.keywords]):
                problems.append(f"line {node.lineno}: {fn.name} uses {node.id} other than through FitContext's members")
    return sorted(problems, key=lambda p: int(p.split(":")[0].split()[1]))


def test_heads_and_map_parts_read_only_what_their_context_offers():
    members = context_members()
    assert {"seed", "device", "report", "scene_points", "fine_tune"} <= members
    problems = {}
    for folder in ("heads", "map_parts"):
        for path in sorted((ROOT / "scr_ros" / folder).glob("*.py")):
            found = context_reaches(path.read_text(), members)
            if found:
                problems[path.name] = found
    assert problems == {}


def test_the_context_check_catches_a_part_that_reaches_beyond_it():
    members = context_members()
    planted = (
        "def fit(cls, context: FitContext, settings):\n"
        "    context.report(None)\n"  # offered
        "    head = context._builder.config\n"  # the builder behind it: refused
        "    x = context.train\n"  # not offered: refused
        "    keep = context\n"  # the context itself, kept aside: refused
        "    helper(context)\n"  # passed on whole: fine (the helper is checked in its own right)
    )
    problems = context_reaches(planted, members)
    assert (
        len(problems) == 3
        and "_builder" in problems[0]
        and "context.train" in problems[1]
        and "other than" in problems[2]
    ), problems


def test_the_builder_hands_out_exactly_the_context():
    """At run time too a part gets an object with FitContext's members, not the builder."""
    from scr_ros.encoders import load_encoder
    from scr_ros.mapping import MapBuilder
    from scr_ros.mapping.builder import _Context  # noqa: PLC2701 - the class under test
    from scr_ros.mapping_config import preset

    builder = MapBuilder(load_encoder("dsift"), preset("test"), device="cpu")
    context = _Context(builder)
    offered = {name for name in dir(context) if not name.startswith("_")}
    assert offered == context_members()


if __name__ == "__main__":
    page = ROOT / "docs" / "architecture.md"
    text = page.read_text(encoding="utf-8")
    head, rest = text.split(LAYER_LIST_BEGIN, 1)
    page.write_text(f"{head}{LAYER_LIST_BEGIN}\n{layer_list()}{LAYER_LIST_END}{rest.split(LAYER_LIST_END, 1)[1]}")
    print(f"wrote the layer list of {page}")
