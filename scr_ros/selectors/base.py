"""The selector registry, the :class:`Selector` base class and what ``auto`` means.

A selector class declares ``settings`` (a tuple of :class:`~scr_ros.settings.Setting`: the
relocalizer node's ``NAME_SETTING`` parameters, ``scr localize --NAME-SETTING`` and
``--selector-config``, and the docs table all read them), ``needs`` (the per-correspondence
signal it reads: None, ``"score"``, ``"probability"``, ...), ``requires`` (what map provides that
signal, for the refusal message) and ``auto_priority`` (``auto`` picks the usable selector with
the highest).
"""

from __future__ import annotations

import numpy as np

from ..registry import Registry
from ..settings import Setting, resolve

SELECTORS = Registry("selector", name_attribute="name")
register_selector = SELECTORS.register


class Selector:
    """Base class: ``selector(n, score=None, probability=None, pixels=None)`` -> the indices
    (M,) of the correspondences RANSAC sees, best first. Construction resolves the declared
    settings (defaults filled in, values checked) into attributes of the same names."""

    name = ""
    settings: tuple[Setting, ...] = ()
    needs: str | None = None
    requires = ""
    auto_priority = 0

    def __init__(self, **values) -> None:
        for key, value in resolve(self.settings, values, f"selector {self.name!r}").items():
            setattr(self, key, value)

    def values(self) -> dict:
        """The resolved settings, by name."""
        return {s.name: getattr(self, s.name) for s in self.settings}

    def __call__(self, n: int, score=None, probability=None, pixels=None) -> np.ndarray:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in self.values().items())})"


def build_selector(name: str, **settings) -> Selector:
    """A registered selector with ``settings`` (the rest its defaults); an unknown name or a bad
    setting raises :class:`~scr_ros.errors.SettingsError`."""
    SELECTORS.lookup(name, also=("auto",))
    return SELECTORS.build(name, **settings)


def auto_selector_name(signals: set[str]) -> str:
    """The selector ``auto`` means for a map that provides ``signals`` (e.g. {"score"}): of the
    registered selectors whose signal the map has, the one with the highest ``auto_priority``."""
    usable = [cls for cls in SELECTORS.values() if cls.needs is None or cls.needs in signals]
    return max(usable, key=lambda cls: cls.auto_priority).name
