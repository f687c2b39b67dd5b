"""Settings declared once: name, default, type, range and help of one value.

Map parts and selectors list their settings as a tuple of :class:`Setting`; the node parameters
are :class:`Setting` tuples too. Everything that shows or takes a setting reads that one
declaration: :func:`resolve` (defaults filled in, values checked, unknown names refused), the
``scr`` options (``--part KEY=JSON``, ``--selector-config``, the per-setting flags), the nodes'
parameters (declared with their ranges), the docs tables (:func:`settings_table`) and the map
header (which records the resolved settings of every part it was built with).

A setting's type is the type of its default: ``bool``, ``int``, ``float``, ``str``, a list of
floats (with ``length``) or a ``dict`` (a JSON object, e.g. a nested configuration).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

from .errors import SettingsError


@dataclass(frozen=True)
class Setting:
    name: str
    default: Any  # its Python type is the setting's type
    help: str
    min: float | None = None
    max: float | None = None
    choices: tuple = ()
    dynamic: bool = False  # node parameters: a change takes effect while the node runs
    length: int | None = None  # list settings: the number of values

    @property
    def type(self) -> type:
        return type(self.default)

    def check(self, value: Any, owner: str | None = None, error: type[SettingsError] = SettingsError) -> Any:
        """``value`` converted to this setting's type, or ``error`` saying what is wrong.
        ``owner`` names what the setting belongs to (``map part 'pca'``); None: a parameter."""
        what = f"parameter {self.name!r}" if owner is None else f"{owner}: {self.name}"
        t = self.type
        if t is list:
            return self._check_list(value, what, error)
        if t is dict:
            if isinstance(value, str):  # a node parameter or option carries the object as JSON text
                value = json_object(value, what, error)
            if not isinstance(value, dict):
                raise error(f"{what} must be a JSON object, got {value!r}")
            return dict(value)
        if t is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, t) or (t is int and isinstance(value, bool)):
            raise error(f"{what} must be {t.__name__}, got {type(value).__name__} {value!r}")
        if t in (int, float):
            if value != value:  # NaN
                raise error(f"{what} is NaN")
            if self.min is not None and value < self.min or self.max is not None and value > self.max:
                raise error(f"{what} = {value} is outside [{_number(self.min)}, {_number(self.max)}]")
        if self.choices and value not in self.choices:
            raise error(f"{what} = {value!r} is not one of {', '.join(map(str, self.choices))}")
        return value

    def _check_list(self, value: Any, what: str, error: type[SettingsError]) -> list[float]:
        """A float array (rclpy gives array.array('d') or a list; YAML may write ints)."""
        try:
            items = list(value)
        except TypeError:
            raise error(f"{what} must be a list of numbers, got {type(value).__name__} {value!r}") from None
        if isinstance(value, (str, bytes)) or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in items
        ):
            raise error(f"{what} must be a list of numbers, got {value!r}")
        out = [float(v) for v in items]
        if self.length is not None and len(out) != self.length:
            raise error(f"{what} needs {self.length} numbers, got {len(out)}")
        if not all(v == v and abs(v) != float("inf") for v in out):
            raise error(f"{what} contains NaN or infinite values")
        return out

    def allowed(self) -> str:
        """The range or choices, as the docs tables write them."""
        if self.choices:
            return ", ".join(map(str, self.choices))
        if self.length is not None:
            return f"{self.length} numbers"
        if self.min is not None or self.max is not None:
            return f"{_number(self.min)} – {_number(self.max)}"
        return ""


def json_object(text: str, what: str, error: type[Exception] = SettingsError) -> dict:
    """``text`` as a JSON object (blank text: an empty one), or ``error`` saying what is wrong
    with ``what`` (``parameter 'growth'``, ``--part KEY``): the one reader of the settings that
    options and node parameters carry as JSON."""
    try:
        value = json.loads(text) if text.strip() else {}
    except json.JSONDecodeError as exc:
        raise error(f"{what} is not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise error(f"{what} must be a JSON object, got {text!r}")
    return value


def _number(x: float | None) -> str:
    if x is None:
        return ""
    return str(int(x)) if float(x).is_integer() and abs(x) < 1e15 else f"{x:g}"


def resolve(settings: Sequence[Setting], given: dict | None, owner: str) -> dict:
    """The defaults of ``settings`` updated by ``given``, every value checked; a name that is
    not declared is refused with the known ones (a typo must not pass silently)."""
    given = dict(given or {})
    known = {s.name: s for s in settings}
    unknown = sorted(set(given) - set(known))
    if unknown:
        listed = ", ".join(known) or "none"
        raise SettingsError(f"{owner}: unknown settings {', '.join(unknown)} (known: {listed})")
    return {name: s.check(given[name], owner) if name in given else _copy(s.default) for name, s in known.items()}


def _copy(value: Any) -> Any:
    return json.loads(json.dumps(value)) if isinstance(value, (dict, list)) else value


def cell(value: Any) -> str:
    """A value as the docs tables write it."""
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list):
        return "[" + ", ".join(f"{v:g}" for v in value) + "]"
    if isinstance(value, dict):
        return json.dumps(value)
    return str(value)


def settings_table(owners: Iterable[tuple[str, Sequence[Setting]]], owner_column: str) -> str:
    """A markdown table of every owner's settings (``owners``: (name, settings) pairs)."""
    rows = [f"| {owner_column} | setting | default | range / choices | description |", "|---|---|---|---|---|"]
    for owner, settings in owners:
        for s in settings:
            rows.append(f"| `{owner}` | `{s.name}` | {cell(s.default)} | {s.allowed()} | {s.help} |")
    return "\n".join(rows) + "\n"


def settings_help(settings: Sequence[Setting]) -> str:
    """One line of ``name (default; range)`` entries, for option help texts."""
    out = []
    for s in settings:
        rng = s.allowed()
        out.append(f"{s.name} ({cell(s.default)}{'; ' + rng if rng else ''})")
    return ", ".join(out) or "no settings"
