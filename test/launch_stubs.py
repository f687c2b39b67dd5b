"""Small stand-ins for ``launch``, ``launch_ros`` and ``ament_index_python`` (none is on PyPI),
enough to execute the launch files: test_launch_files.py uses them in-process, and in a fresh
interpreter to check what a launch file imports. Imports nothing heavy itself."""

from __future__ import annotations

import types
from pathlib import Path


class _Recorded:
    def __init__(self, *args, **kwargs):
        self.args, self.kwargs = args, kwargs


class LaunchConfiguration:
    def __init__(self, name):
        self.name = name

    def perform(self, context):
        return context[self.name]


def stub_modules(share: Path) -> dict[str, types.ModuleType]:
    def module(name, **attrs):
        m = types.ModuleType(name)
        m.__dict__.update(attrs)
        return m

    class ParameterValue(_Recorded):
        def __init__(self, value, value_type=None):
            super().__init__(value, value_type=value_type)
            self.value, self.value_type = value, value_type

    return {
        "launch": module("launch", LaunchDescription=lambda entities: list(entities)),
        "launch.actions": module(
            "launch.actions",
            DeclareLaunchArgument=type("DeclareLaunchArgument", (_Recorded,), {}),
            OpaqueFunction=type("OpaqueFunction", (_Recorded,), {}),
        ),
        "launch.conditions": module("launch.conditions", IfCondition=_Recorded),
        "launch.substitutions": module("launch.substitutions", LaunchConfiguration=LaunchConfiguration),
        "launch_ros": module("launch_ros"),
        "launch_ros.actions": module("launch_ros.actions", Node=type("Node", (_Recorded,), {})),
        "launch_ros.parameter_descriptions": module("launch_ros.parameter_descriptions", ParameterValue=ParameterValue),
        "ament_index_python": module("ament_index_python"),
        "ament_index_python.packages": module(
            "ament_index_python.packages", get_package_share_directory=lambda package: str(share)
        ),
    }
