"""The generated tables of the docs: each node's parameters and services (docs/ros.md), the
settings of the registered selectors and map parts (docs/methods.md).

``python -m scr_ros.node_logic.doc_tables docs/ros.md docs/methods.md`` rewrites the tables
between their markers; a test fails when a page's tables are stale. The declarations live with
what they declare (:mod:`scr_ros.node_logic.params`, the registries); this module only writes
them out.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import ScrError
from ..fileio import atomic_write_text
from ..map_parts import MAP_PARTS
from ..selectors import SELECTORS
from ..settings import Setting, cell, settings_table
from .params import MAPPING_PARAMS, RELOCALIZER_INTERFACE, RELOCALIZER_PARAMS


def parameter_table(specs: tuple[Setting, ...]) -> str:
    """The markdown table of docs/ros.md for one node's parameters."""
    rows = ["| parameter | default | range / choices | live | description |", "|---|---|---|---|---|"]
    for s in specs:
        rows.append(f"| `{s.name}` | {cell(s.default)} | {s.allowed()} | {'yes' if s.dynamic else ''} | {s.help} |")
    return "\n".join(rows) + "\n"


TABLE_BEGIN = "<!-- {what}: written by python -m scr_ros.node_logic.doc_tables -->"
TABLE_END = "<!-- end {what} -->"
NODE_PARAMS = {"scr_relocalizer": RELOCALIZER_PARAMS, "scr_mapping": MAPPING_PARAMS}


def interface_table(rows: tuple[tuple[str, str, str], ...]) -> str:
    lines = ["| name | type | what |", "|---|---|---|"]
    lines += [f"| `{name}` | {kind} | {what} |" for name, kind, what in rows]
    return "\n".join(lines) + "\n"


def generated_tables() -> dict[str, str]:
    """Every generated table by its marker name: each node's parameters, and the settings of
    the registered selectors and map parts."""
    tables = {f"parameters of {node}": parameter_table(specs) for node, specs in NODE_PARAMS.items()}
    tables["interface of scr_relocalizer"] = interface_table(RELOCALIZER_INTERFACE)
    tables["settings of selectors"] = settings_table(
        ((name, cls.settings) for name, cls in SELECTORS.items() if cls.settings), "selector"
    )
    tables["settings of map parts"] = settings_table(
        ((key, cls.settings) for key, cls in MAP_PARTS.items() if cls.settings), "map part"
    )
    return tables


def write_parameter_tables(text: str) -> str:
    """``text`` with the table between each pair of markers it holds replaced by the current one
    (a page holds the markers of the tables it shows; one without any is refused)."""
    found = 0
    for what, table in generated_tables().items():
        begin, end = TABLE_BEGIN.format(what=what), TABLE_END.format(what=what)
        if begin not in text or end not in text:
            continue
        head, rest = text.split(begin, 1)
        _, tail = rest.split(end, 1)
        text = f"{head}{begin}\n{table}{end}{tail}"
        found += 1
    if not found:
        raise ScrError(
            f"no generated-table markers; expected e.g. {TABLE_BEGIN.format(what='parameters of scr_relocalizer')!r}"
        )
    return text


if __name__ == "__main__":
    import sys

    for name in sys.argv[1:] or ["docs/ros.md", "docs/methods.md"]:
        page = Path(name)
        atomic_write_text(page, write_parameter_tables(page.read_text(encoding="utf-8")))
        print(f"wrote the generated tables of {page}")
