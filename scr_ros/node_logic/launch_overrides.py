"""Which launch arguments become node parameters, without ROS or ``launch``.

A launch argument the user leaves out must not replace what their params file says: every
overriding argument defaults to ``""`` (not passed), and only the ones passed are turned into
parameters here, typed and checked by the parameter's own :class:`~scr_ros.settings.Setting`
(a ``pose_frame: world`` in the params file stays ``world`` unless ``pose_frame:=...`` is given).
The launch files in ``launch/`` call :func:`launch_overrides` from an ``OpaqueFunction``; this
module is what the tests exercise, since ``launch`` is not on PyPI.
"""

from __future__ import annotations

import os
from typing import Any

from ..errors import SettingsError
from ..settings import Setting
from .basic_params import LAUNCH_SETTINGS, specs_by_name

# rclpy's own parameter, declared by every node.
USE_SIM_TIME = Setting("use_sim_time", False, "Use the /clock topic (bag playback, simulation).")

# The node parameters each launch file takes as arguments (besides topics, namespace, log level).
# Taken from basic_params, which imports no registry: launch files import this module, and the
# launch host needs neither torch nor OpenCV.
LAUNCH_PARAMETERS: dict[str, tuple[str, ...]] = {
    node: tuple(s.name for s in settings) + ("use_sim_time",) for node, settings in LAUNCH_SETTINGS.items()
}

LOG_LEVELS = ("debug", "info", "warn", "error", "fatal")


def launch_setting(node: str, name: str) -> Setting:
    """The :class:`Setting` behind launch argument ``name`` of ``node`` (``relocalizer``/``mapping``)."""
    return USE_SIM_TIME if name == "use_sim_time" else specs_by_name(LAUNCH_SETTINGS[node])[name]


def argument_description(node: str, name: str) -> str:
    """The description of the launch argument that sets parameter ``name`` (its help, its
    choices, and that an empty argument keeps the params file's value)."""
    setting = launch_setting(node, name)
    choices = f" ({', '.join(setting.choices)})" if setting.choices else ""
    return f"{setting.help}{choices} Empty: keep the params file's value."


def _parse(setting: Setting, text: str) -> Any:
    """A launch argument's text as the setting's type (launch hands every argument over as text)."""
    t = setting.type
    if t is bool:
        lowered = text.lower()
        if lowered not in ("true", "false"):
            raise SettingsError(f"launch argument {setting.name}:={text!r} must be true or false")
        return lowered == "true"
    if t in (int, float):
        try:
            return t(text)
        except ValueError:
            raise SettingsError(f"launch argument {setting.name}:={text!r} must be a {t.__name__}") from None
    if t is list:
        try:
            return [float(v) for v in text.replace(",", " ").replace("[", " ").replace("]", " ").split()]
        except ValueError:
            raise SettingsError(
                f"launch argument {setting.name}:={text!r} must be numbers, e.g. '[0, 0, 0.5, ...]'"
            ) from None
    if setting.name.endswith(("_path", "_folder")):
        return os.path.expanduser(text)  # a name:=~/x argument reaches the launch file unexpanded
    return text


def launch_overrides(node: str, arguments: dict[str, str]) -> dict[str, Any]:
    """Parameters for the launch arguments the user passed (non-empty text), typed and checked.

    Args:
        node: ``relocalizer`` or ``mapping``.
        arguments: launch argument name -> its text; ``""`` (the default) means not passed.

    Returns:
        name -> value for each passed argument, ready to put after the params file (later wins).
        Raises SettingsError naming the argument when a value is invalid, before the node starts.
    """
    out = {}
    for name in LAUNCH_PARAMETERS[node]:
        text = (arguments.get(name) or "").strip()
        if not text:
            continue
        setting = launch_setting(node, name)
        out[name] = setting.check(_parse(setting, text), owner=f"launch argument {name}")
    return out


def log_level(text: str) -> str:
    """The ``log_level`` launch argument, checked (ROS's names)."""
    level = text.strip().lower() or "info"
    if level not in LOG_LEVELS:
        raise SettingsError(f"launch argument log_level:={text!r} is not one of {', '.join(LOG_LEVELS)}")
    return level
