"""The selector registry, :func:`build_selector` and what ``auto`` means.

A selector class sets ``needs`` (the per-correspondence signal it reads: None, ``"score"``,
``"probability"``, ...), ``requires`` (what map provides that signal, for the refusal message)
and ``auto_priority`` (``auto`` picks the usable selector with the highest).
"""

from __future__ import annotations

from ..errors import ScrError
from ..registry import Registry

SELECTORS = Registry("selector", name_attribute="name")
register_selector = SELECTORS.register


def build_selector(name: str, **config):
    cls = SELECTORS.lookup(name, ScrError, also=("auto",))
    try:
        return cls(**config)
    except TypeError as exc:
        raise ScrError(f"bad settings for selector {name!r}: {exc}") from None


def auto_selector_name(signals: set[str]) -> str:
    """The selector ``auto`` means for a map that provides ``signals`` (e.g. {"score"}): of the
    registered selectors whose signal the map has, the one with the highest ``auto_priority``."""
    usable = [cls for cls in SELECTORS.values() if cls.needs is None or cls.needs in signals]
    return max(usable, key=lambda cls: cls.auto_priority).name
