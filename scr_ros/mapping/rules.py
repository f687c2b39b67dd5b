"""Which map parts and heads a mapping run can combine (checked before any work starts)."""

from __future__ import annotations

from typing import Sequence

from ..errors import ScrError
from ..map_parts import MapPart


def check_combination(parts: Sequence[type[MapPart]], head_type: str, head_labels: bool) -> None:
    """Refuse combinations that are not supported yet, saying which and why: two global
    encodings; a global encoding with a part that reads training rows after the head trained,
    or with labelled scene points (whose labelling does not see the encoding); a part that
    trains with the head together with one fitted after it."""
    encoding = [cls.key for cls in parts if cls.gives_global_encoding]
    if len(encoding) > 1:
        raise ScrError(f"map parts {' and '.join(encoding)} both give a global encoding; choose one")
    later = [cls.key for cls in parts if cls.stage == "trained"]
    if encoding and later:
        raise ScrError(
            f"map part {later[0]} reads training rows without their global encoding, so it cannot be combined with "
            f"{encoding[0]} yet"
        )
    adapting = [cls.key for cls in parts if cls.trains_with_head]
    if adapting and later:
        raise ScrError(
            f"map part {later[0]} reads training rows before {adapting[0]} transforms them, so the two cannot be "
            "combined yet"
        )
    labelled = [cls.key for cls in parts if cls.uses_scene_points]
    if head_labels:
        labelled.append(f"head {head_type}")
    if encoding and labelled:
        raise ScrError(
            f"{labelled[0]} labels scene points without the global encoding of {encoding[0]}, so the two cannot be "
            "combined yet"
        )
