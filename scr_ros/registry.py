"""Registries of interchangeable parts: name -> class, for encoders, heads, losses, selectors
and map parts.

Each paper's idea is one registered class; the trainer, the map file and the relocalizer look
parts up by the name stored in a config or a map header, so adding one never touches them.
Each kind lives in a package (``scr_ros/heads/``, ...) whose ``__init__`` calls
:func:`import_parts`: every module dropped into the folder is imported and registers what it
defines, so adding a part is adding a file.
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import Callable, Iterable

from .errors import SettingsError


class Registry(dict):
    """``{name: class}`` for one ``kind`` of part.

    ``register(name)`` is a class decorator: it refuses a name registered twice and, when
    ``name_attribute`` is given, stores the name on the class (e.g. ``head_type``) so an instance
    can say what it is when it is saved.
    """

    def __init__(self, kind: str, name_attribute: str | None = None):
        super().__init__()
        self.kind = kind
        self.name_attribute = name_attribute

    def register(self, name: str) -> Callable[[type], type]:
        def wrap(cls: type) -> type:
            if name in self:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self[name] = cls
            if self.name_attribute:
                setattr(cls, self.name_attribute, name)
            return cls

        return wrap

    def lookup(self, name: str, also: tuple[str, ...] = ()) -> type:
        """The class registered as ``name``; an unknown name raises :class:`SettingsError`
        listing the known ones (``also``: names the caller resolves itself, such as a
        selector's ``auto``)."""
        if name not in self:
            known = ", ".join([*also, *sorted(self)])
            raise SettingsError(f"unknown {self.kind} {name!r}; registered: {known}")
        return self[name]

    def build(self, name: str, **config):
        """An instance of the class registered as ``name``: the one way every kind of part is
        built from a name and settings. An unknown name, a keyword the class does not take or a
        value it refuses all raise :class:`SettingsError` naming the part."""
        cls = self.lookup(name)
        try:
            return cls(**config)
        except SettingsError:
            raise
        except (TypeError, ValueError) as exc:
            raise SettingsError(f"bad settings for {self.kind} {name!r}: {exc}") from None


def import_parts(package: str, path: Iterable[str]) -> None:
    """Import every module of the parts package ``package`` (its ``__path__``) except ``base``
    and private ones, in name order, so that their registrations run."""
    for info in sorted(pkgutil.iter_modules(list(path)), key=lambda m: m.name):
        if info.name != "base" and not info.name.startswith("_"):
            importlib.import_module(f"{package}.{info.name}")
