"""The registries of heads, losses, selectors, descriptors and map parts: one name each, one way
to build, one error; a new part is one file the engines never name."""

import re

import numpy as np
import pytest
import torch

from scr_ros.cli import make_parser
from scr_ros.cli.options import overrides_from_options
from scr_ros.encoders import load_encoder
from scr_ros.errors import ScrError
from scr_ros.heads import build_head
from scr_ros.map_parts import MAP_PARTS, MapPart
from scr_ros.mapfile import load_map
from scr_ros.mapping import MapBuilder
from scr_ros.node_logic.params import MAPPING_PARAMS, mapping_methods, validate
from scr_ros.pipeline import mapping_config
from scr_ros.relocalize import Relocalizer
from scr_ros.selectors import build_selector
from scr_ros.settings import Setting


def test_registries_refuse_a_name_twice_and_list_the_known_ones():
    from scr_ros.heads import HEADS, AceHead
    from scr_ros.registry import Registry
    from scr_ros.selectors import SELECTORS

    with pytest.raises(ValueError, match="head 'ace' is already registered"):
        HEADS.register("ace")(type("Other", (AceHead,), {}))
    assert HEADS["ace"] is AceHead and AceHead.head_type == "ace"
    parts = Registry("widget", name_attribute="kind")
    made = parts.register("w")(type("W", (), {}))
    assert made.kind == "w" and parts.lookup("w") is made
    with pytest.raises(ScrError, match=r"unknown selector 'x'; registered: auto, all, classifier, score"):
        SELECTORS.lookup("x", also=("auto",))


def test_every_registry_builds_one_way_with_one_error():
    """Heads, losses and selectors are built by Registry.build, whose only error is SettingsError
    (an unknown name, a keyword the part does not take, a value it refuses), a ScrError the CLI
    prints as one line."""
    from scr_ros.errors import SettingsError
    from scr_ros.heads import HEADS
    from scr_ros.losses import LOSSES
    from scr_ros.retrieval import DESCRIPTORS
    from scr_ros.selectors import SELECTORS

    for registry, name, required in (
        (HEADS, "ace", {}),
        (LOSSES, "ace", {"total_iterations": 1}),
        (SELECTORS, "classifier", {}),
        (DESCRIPTORS, "vlad", {"channels": 8}),
    ):
        with pytest.raises(SettingsError, match=f"unknown {registry.kind} 'nope'"):
            registry.build("nope")
        with pytest.raises(SettingsError, match=f"{registry.kind} '{name}'.*bogus"):
            registry.build(name, **required, bogus=1)
        assert isinstance(registry.build(name, **required), registry[name])
    with pytest.raises(SettingsError, match="bad settings for head 'ace': width must be an integer"):
        build_head("ace", width=-1)
    with pytest.raises(SettingsError, match="selector 'classifier': top_k = -1 is outside"):
        build_selector("classifier", top_k=-1)


class _RowCounter(MapPart):
    """A map part as a new file would add one: it records how many buffer rows the head was
    trained on, as a one-weight module, and hands the selectors a constant signal."""

    key, stage, provides = "row-counter", "trained", "rows"
    settings = (Setting("label", "", "a text stored with the part"),)

    @classmethod
    def fit(cls, context, settings, frames=None, head=None, buffer=None):
        module = torch.nn.Linear(1, 1, bias=False)
        with torch.no_grad():
            module.weight.fill_(float(buffer.size))
        return cls(module, {"rows": int(buffer.size), "label": settings["label"]})

    def header(self):
        return dict(self.info)

    @classmethod
    def from_header(cls, entry, in_channels):
        return cls(torch.nn.Linear(1, 1, bias=False), entry)

    def signal(self, features):
        return np.full(len(features), float(self.module.weight.detach()), np.float32)


def test_a_new_map_part_is_switched_on_fitted_stored_and_loaded_without_touching_the_engines(
    monkeypatch, tiny, tmp_path
):
    monkeypatch.setitem(MAP_PARTS, "row-counter", _RowCounter)
    args = make_parser().parse_args(["map", "synthetic:tiny", "--out", "m", "--part", 'row-counter={"label": "x"}'])
    overrides = overrides_from_options(args)
    assert overrides == {"parts": {"row-counter": {"label": "x"}}}
    config = mapping_config("test", buffer_size=4000, samples_per_image=256, epochs=1.0, batch_size=512, **overrides)
    built = MapBuilder(load_encoder("dsift"), config, device="cpu").build(tiny.frames("train")[:6])
    path = built.save(tmp_path / "m.safetensors")
    loaded = load_map(path)
    part = loaded.parts["row-counter"]
    assert part.info == {"rows": built.training["buffer_size"], "label": "x"}
    assert float(part.module.weight.detach()) == built.training["buffer_size"]  # its tensor went through the file
    assert Relocalizer(loaded, load_encoder("dsift"), device="cpu").signals == {"rows"}
    # Refused with a reason: an unknown key, settings that are not an object or not JSON.
    for bad, message in (
        ("nope", "unknown map part 'nope'"),
        ("row-counter=[1]", "must be a JSON object"),
        ("row-counter={", "not JSON"),
    ):
        with pytest.raises(ScrError, match=re.escape(message)):
            overrides_from_options(make_parser().parse_args(["map", "d", "--out", "m", "--part", bad]))
    with pytest.raises(ScrError, match="'map_parts' must be a JSON object"):
        mapping_methods(validate(MAPPING_PARAMS, {"map_parts": "[1]"}))
    assert mapping_methods(validate(MAPPING_PARAMS, {"map_parts": '{"row-counter": {}}'}))["parts"] == {
        "row-counter": {}
    }
    # The PCA's own shorthand and --part give the same settings; a contradiction is refused.
    assert overrides_from_options(make_parser().parse_args(["map", "d", "--out", "m", "--pca", "32"])) == {
        "parts": {"pca": {"dim": 32}}
    }
    assert overrides_from_options(
        make_parser().parse_args(["map", "d", "--out", "m", "--part", 'pca={"dim": 32, "samples": 5000}'])
    ) == {"parts": {"pca": {"dim": 32, "samples": 5000}}}
    with pytest.raises(ScrError, match="given twice"):
        overrides_from_options(
            make_parser().parse_args(["map", "d", "--out", "m", "--pca", "16", "--part", 'pca={"dim": 32}'])
        )
