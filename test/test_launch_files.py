"""The launch files, executed against small stand-ins for ``launch`` / ``launch_ros`` (neither is
on PyPI): which arguments they declare, and which parameters, namespace and log level the node
they start gets. The rule under test: a launch argument overrides the params file only when the
user passes it."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
from launch_stubs import LaunchConfiguration as _LaunchConfiguration
from launch_stubs import stub_modules as _stub_modules

from scr_ros.errors import SettingsError
from scr_ros.node_logic.launch_overrides import LAUNCH_PARAMETERS, launch_overrides
from scr_ros.node_logic.params import MAPPING_PARAMS, RELOCALIZER_PARAMS, load_yaml_parameters, validate

ROOT = Path(__file__).resolve().parent.parent


def _run_launch_file(name: str, passed: dict[str, str], monkeypatch, tmp_path):
    """(declared arguments {name: default}, the scr node's keyword arguments) with ``passed`` given."""
    for mod_name, mod in _stub_modules(tmp_path).items():
        monkeypatch.setitem(sys.modules, mod_name, mod)
    spec = importlib.util.spec_from_file_location(f"_launch_{name}", ROOT / "launch" / name)
    launch_file = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(launch_file)
    entities = launch_file.generate_launch_description()
    declared = {e.args[0]: e.kwargs["default_value"] for e in entities if type(e).__name__ == "DeclareLaunchArgument"}
    context = {**declared, **passed}
    (opaque,) = [e for e in entities if type(e).__name__ == "OpaqueFunction"]
    (node,) = opaque.kwargs["function"](context)
    return declared, node.kwargs, context


def _parameters(node_kwargs, context) -> dict:
    """The parameters the node starts with: the params file, then the overrides (later wins)."""
    params_file, overrides = node_kwargs["parameters"]
    node_name = node_kwargs["name"]
    values = load_yaml_parameters(params_file.perform(context), node_name)
    values.update({k: getattr(v, "value", v) for k, v in overrides.items()})
    return values


@pytest.mark.parametrize(
    "launch_name, node, node_name, specs, custom",
    [
        (
            "relocalizer.launch.py",
            "relocalizer",
            "scr_relocalizer",
            RELOCALIZER_PARAMS,
            {"tf_mode": "none", "device": "cuda"},
        ),
        ("mapping.launch.py", "mapping", "scr_mapping", MAPPING_PARAMS, {"pose_frame": "world", "use_depth": True}),
    ],
)
def test_arguments_left_out_keep_the_params_file(launch_name, node, node_name, specs, custom, monkeypatch, tmp_path):
    params_file = tmp_path / "mine.yaml"
    lines = [f"{node_name}:", "  ros__parameters:"]
    lines += [f"    {k}: {str(v).lower() if isinstance(v, bool) else v}" for k, v in custom.items()]
    params_file.write_text("\n".join(lines) + "\n")
    declared, kwargs, context = _run_launch_file(launch_name, {"params_file": str(params_file)}, monkeypatch, tmp_path)
    assert set(LAUNCH_PARAMETERS[node]) | {"namespace", "log_level", "params_file", "rviz"} <= set(declared)
    assert all(declared[name] == "" for name in LAUNCH_PARAMETERS[node])
    values = _parameters(kwargs, context)
    assert {k: values[k] for k in custom} == custom  # nothing the user did not pass replaced their file
    validate(specs, {k: v for k, v in values.items() if k != "use_sim_time"}, partial=True)
    assert kwargs["namespace"].perform(context) == ""
    assert kwargs["arguments"] == ["--ros-args", "--log-level", "info"]


def test_arguments_passed_override_with_their_types(monkeypatch, tmp_path):
    passed = {
        "map_path": "~/maps/lab.safetensors",
        "tf_mode": "none",
        "planar": "true",
        "base_to_camera": "[0.2, 0, 0.5, -0.5, 0.5, -0.5, 0.5]",
        "device": "cpu",
        "namespace": "robot1",
        "log_level": "debug",
    }
    _, kwargs, context = _run_launch_file("relocalizer.launch.py", passed, monkeypatch, tmp_path)
    values = _parameters(
        {**kwargs, "parameters": [_LaunchConfiguration("params_file"), kwargs["parameters"][1]]},
        {**context, "params_file": str(ROOT / "config" / "relocalizer.yaml")},
    )
    assert values["map_path"] == str(Path("~/maps/lab.safetensors").expanduser())
    assert values["tf_mode"] == "none" and values["planar"] is True and values["device"] == "cpu"
    assert values["base_to_camera"] == [0.2, 0.0, 0.5, -0.5, 0.5, -0.5, 0.5]
    # Strings go through ParameterValue(str) so that launch_ros does not read them as YAML.
    assert kwargs["parameters"][1]["map_path"].value_type is str
    assert kwargs["namespace"].perform(context) == "robot1"
    assert kwargs["arguments"] == ["--ros-args", "--log-level", "debug"]


def test_bad_arguments_are_refused_before_the_node_starts(monkeypatch, tmp_path):
    with pytest.raises(SettingsError, match="tf_mode"):
        _run_launch_file("relocalizer.launch.py", {"tf_mode": "map_to_base"}, monkeypatch, tmp_path)
    with pytest.raises(SettingsError, match="log_level"):
        _run_launch_file("mapping.launch.py", {"log_level": "loud"}, monkeypatch, tmp_path)
    with pytest.raises(SettingsError, match="use_depth.*true or false"):
        launch_overrides("mapping", {"use_depth": "maybe"})
    with pytest.raises(SettingsError, match="base_to_camera"):
        launch_overrides("relocalizer", {"base_to_camera": "[0, 0, x]"})


@pytest.mark.parametrize("name", ["relocalizer.launch.py", "mapping.launch.py"])
def test_a_launch_file_imports_neither_torch_nor_opencv(name, tmp_path):
    """``ros2 launch --show-args`` and the launch host need no torch and no OpenCV: executing a
    launch file (arguments, params file, overrides) in a fresh interpreter loads neither."""
    script = f"""
import importlib.util, sys
sys.path.insert(0, {str(ROOT / "test")!r})
from launch_stubs import stub_modules
sys.modules.update(stub_modules(__import__("pathlib").Path({str(tmp_path)!r})))
spec = importlib.util.spec_from_file_location("lf", {str(ROOT / "launch" / name)!r})
lf = importlib.util.module_from_spec(spec)
spec.loader.exec_module(lf)
entities = lf.generate_launch_description()
declared = {{e.args[0]: e.kwargs["default_value"] for e in entities if type(e).__name__ == "DeclareLaunchArgument"}}
(opaque,) = [e for e in entities if type(e).__name__ == "OpaqueFunction"]
opaque.kwargs["function"]({{**declared, "device": "cpu", "map_path": "~/m.safetensors"}})
print(sorted(m for m in ("torch", "cv2", "kornia", "poselib") if m in sys.modules))
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]", out.stdout
