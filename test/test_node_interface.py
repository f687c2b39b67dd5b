"""The nodes' interface as installed files describe it: parameters (spec table, YAML, docs/ros.md),
launch files, rviz config, entry points, and the ROS layer's imports of ROS-free code. Checked
without ROS; the running nodes are covered by test/ros/ on a ROS 2 machine."""

from __future__ import annotations

import ast
import importlib
import re
from pathlib import Path

import pytest
import yaml

from scr_ros.node_logic.doc_tables import parameter_table, write_parameter_tables
from scr_ros.node_logic.params import (
    MAPPING_PARAMS,
    RELOCALIZER_PARAMS,
    ParameterError,
    load_yaml_parameters,
    part_parameters,
    selector_parameters,
    validate,
)

ROOT = Path(__file__).resolve().parent.parent
NODES = {"scr_relocalizer": ("relocalizer", RELOCALIZER_PARAMS), "scr_mapping": ("mapping", MAPPING_PARAMS)}


@pytest.mark.parametrize("node", NODES)
def test_yaml_holds_the_declared_parameters_with_their_defaults(node):
    """Every parameter of the node itself is in its YAML; those of a selector's or map part's
    settings may be (a part added as one file is not), and nothing else is."""
    name, specs = NODES[node]
    values = load_yaml_parameters(ROOT / "config" / f"{name}.yaml", node)
    generated = {s.name for s in selector_parameters() + part_parameters()}
    assert {s.name for s in specs} - generated <= set(values) <= {s.name for s in specs}
    checked = validate(specs, values, partial=True)
    assert checked == {s.name: s.default for s in specs if s.name in values}, (
        "config YAML and the declared defaults disagree"
    )


@pytest.mark.parametrize("node", NODES)
def test_every_parameter_has_a_description_a_valid_default_and_a_row_in_the_docs(node):
    page = (ROOT / "docs" / "ros.md").read_text()
    for spec in NODES[node][1]:
        assert len(spec.help) > 20, spec.name
        assert spec.check(spec.default) == spec.default
        assert (spec.min is None) == (spec.max is None), f"{spec.name}: the ROS descriptor range needs both bounds"
        assert re.search(rf"^\| `{spec.name}` \|", page, re.M), (
            f"docs/ros.md lacks a table row for {node} parameter {spec.name}"
        )


@pytest.mark.parametrize("page", ["ros.md", "methods.md"])
def test_the_generated_tables_in_the_docs_are_current(page):
    text = (ROOT / "docs" / page).read_text()
    assert write_parameter_tables(text) == text, (
        f"docs/{page} is stale: run python -m scr_ros.node_logic.doc_tables docs/ros.md docs/methods.md"
    )


def test_the_parameter_table_format():
    table = parameter_table(RELOCALIZER_PARAMS)
    assert (
        "| `classifier_min_keep` | 200 | 0 – 1000000 | yes | Classifier selector: keep at least" in table
    )  # from the selector's own declaration
    assert "| `min_inliers` | 100 | 4 – 100000 | yes |" in table  # the format: default, range, live
    assert '| `tf_mode` | "map_to_odom" | map_to_odom, map_to_camera, none |  |' in table


def test_validation_messages_name_the_parameter():
    with pytest.raises(ParameterError, match="'tf_mode' = 'map_to_base' is not one of"):
        validate(RELOCALIZER_PARAMS, {"tf_mode": "map_to_base"})
    with pytest.raises(ParameterError, match="'min_inliers' must be int"):
        validate(RELOCALIZER_PARAMS, {"min_inliers": "many"})
    with pytest.raises(ParameterError, match="outside"):
        validate(MAPPING_PARAMS, {"min_rotation_deg": 360.0})
    assert validate(MAPPING_PARAMS, {"min_translation": 1})["min_translation"] == 1.0  # YAML ints for floats are fine


def test_rviz_config_shows_the_relocalizer_outputs():
    cfg = yaml.safe_load((ROOT / "config" / "scr_ros.rviz").read_text())
    displays = cfg["Visualization Manager"]["Displays"]
    topics = {d.get("Topic", {}).get("Value"): d for d in displays if isinstance(d.get("Topic"), dict)}
    assert cfg["Visualization Manager"]["Global Options"]["Fixed Frame"] == "map"
    assert "/scr_relocalizer/pose" in topics and "/scr_relocalizer/scene_points" in topics
    assert topics["/scr_relocalizer/map_cloud"]["Topic"]["Durability Policy"] == "Transient Local"
    assert any(d["Class"] == "rviz_default_plugins/TF" for d in displays)
    assert any(d["Class"] in ("rviz_default_plugins/Image", "rviz_default_plugins/Camera") for d in displays)


def test_entry_points_name_modules_with_a_main():
    src = (ROOT / "setup.py").read_text()
    for script in ("relocalizer_node", "mapping_node"):
        m = re.search(rf'"{script} = (scr_ros\.ros\.\w+):main"', src)
        assert m, script
        module = ROOT / (m.group(1).replace(".", "/") + ".py")
        assert "main" in {n.name for n in ast.parse(module.read_text()).body if isinstance(n, ast.FunctionDef)}
    assert 'glob("config/*.yaml") + glob("config/*.rviz")' in src and 'glob("launch/*.launch.py")' in src
    for pattern in ("config/*.yaml", "config/*.rviz", "launch/*.launch.py"):
        assert list(ROOT.glob(pattern)), pattern


def test_ros_layer_imports_only_names_that_exist_in_the_ros_free_code():
    """The nodes cannot run here, so at least every name they take from scr_ros must exist."""
    for path in (ROOT / "scr_ros" / "ros").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level > 0:
                base = "scr_ros" if node.level == 2 else "scr_ros.ros"
                module = f"{base}.{node.module}" if node.module else base
                if module.startswith("scr_ros.ros"):
                    target = ROOT / (module.replace(".", "/") + ".py")
                    body = ast.parse(target.read_text()).body
                    defined = {n.name for n in body if isinstance(n, (ast.FunctionDef, ast.ClassDef))} | {
                        t.id for n in body if isinstance(n, ast.Assign) for t in n.targets if isinstance(t, ast.Name)
                    }
                    missing = [a.name for a in node.names if a.name not in defined]
                else:
                    mod = importlib.import_module(module)
                    missing = [a.name for a in node.names if not hasattr(mod, a.name)]
                assert not missing, f"{path.name}: {module} has no {missing}"


def _yaml_blocks(page: str) -> list[dict]:
    return [yaml.safe_load(b) for b in re.findall(r"```yaml\n(.*?)```", (ROOT / "docs" / page).read_text(), re.S)]


def test_the_ros_docs_yaml_recipes_hold_valid_parameters_in_namespace_proof_keys():
    """Every relocalizer section in docs/ros.md's YAML recipes validates against the parameter
    table and is keyed /**/scr_relocalizer, as config/*.yaml are (a plain key is ignored in a
    namespace)."""
    sections = [(k, v) for block in _yaml_blocks("ros.md") for k, v in block.items() if "scr_relocalizer" in k]
    assert len(sections) >= 3
    for key, section in sections:
        assert key == "/**/scr_relocalizer", key
        params = {k: v for k, v in section["ros__parameters"].items() if k != "qos_overrides"}
        validate(RELOCALIZER_PARAMS, params, partial=True)
    for name in ("relocalizer", "mapping"):
        keys = list(yaml.safe_load((ROOT / "config" / f"{name}.yaml").read_text()))
        assert keys == [f"/**/scr_{name}"], keys


def test_the_nav2_recipe_gives_the_relocalizer_a_manager_of_its_own_without_a_bond():
    """navigation2's lifecycle manager (nav2_lifecycle_manager/src/lifecycle_manager.cpp) waits for
    a bond from each node it activates when bond_timeout > 0 (default 4 s) and aborts bring-up
    without one; an rclpy lifecycle node has none (bondpy is not on PyPI). The recipe must set
    bond_timeout 0.0 and use its own manager, leaving Nav2's localization manager (map_server,
    amcl) as it is."""
    managers = [
        (k, v["ros__parameters"]) for block in _yaml_blocks("ros.md") for k, v in block.items() if "lifecycle" in k
    ]
    assert managers, "docs/ros.md has no lifecycle manager recipe"
    for name, params in managers:
        assert name not in ("lifecycle_manager_localization", "lifecycle_manager_navigation"), name
        assert params["node_names"] == ["scr_relocalizer"]
        assert params["bond_timeout"] == 0.0 and params["autostart"] is True
