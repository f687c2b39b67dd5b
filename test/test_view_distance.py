"""Accuracy by distance to the nearest similar mapping view: how far a query is from what the map saw."""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest

from scr_ros.evaluation.localization import FrameResult, nearest_view_distances, view_distance_report
from scr_ros.geometry import look_at_rotation, make_pose


def camera(x: float, y: float, yaw_deg: float) -> np.ndarray:
    a = np.radians(yaw_deg)
    return make_pose(look_at_rotation(np.array([np.cos(a), np.sin(a), 0.0])), [x, y, 1.5])


def test_nearest_view_counts_only_cameras_looking_the_same_way():
    mapping = np.stack([camera(0.0, 0.0, 0.0), camera(0.1, 0.0, 180.0), camera(0.0, 0.5, 25.0)])
    queries = np.stack([camera(0.0, 0.05, 0.0), camera(0.1, 0.0, 90.0), camera(0.0, 0.0, 28.0)])
    d = nearest_view_distances(queries, mapping)
    assert d[0] == pytest.approx(0.05)  # the camera behind it, 0.1 m away, looks the other way
    assert math.isinf(d[1])  # nobody looks within 30 deg of +y
    assert d[2] == pytest.approx(0.0)  # 28 deg from the first camera: similar
    assert nearest_view_distances(queries, mapping, max_angle_deg=20.0)[2] == pytest.approx(0.5)


def result(t_cm: float, distance: float) -> FrameResult:
    T = np.eye(4)
    return FrameResult("f", True, "", T, T, t_cm / 100, 0.5, 100, 0.5, {}, nearest_view_m=distance)


def test_bands_split_the_queries_and_score_each():
    results = [result(1.0, 0.1), result(3.0, 0.1), result(8.0, 0.5), result(1.0, 0.55), result(4.0, math.inf)]
    bands = {b["band"]: b for b in view_distance_report(results)}
    assert list(bands) == ["0-0.2 m", "0.4-0.7 m", "no view within 30 deg"]
    assert bands["0-0.2 m"]["queries"] == 2 and bands["0-0.2 m"]["accuracy"]["2cm_2deg"] == 50.0
    assert bands["0.4-0.7 m"]["accuracy"]["5cm_5deg"] == 50.0
    assert bands["0.4-0.7 m"]["median_translation_cm"] == pytest.approx(4.5)
    assert sum(b["queries"] for b in bands.values()) == len(results)


def test_localize_reports_and_writes_the_distance_of_every_query(mapped, tiny):
    """scr localize: a band table in the report, and a CSV column that is the truth's distance."""
    report = mapped["report"]
    assert sum(b["queries"] for b in report["by_view_distance"]) == report["frames"]
    with open(mapped["csv"], newline="") as fh:
        rows = {r["name"]: float(r["nearest_view_m"]) for r in csv.DictReader(fh)}
    queries = tiny.frames("test")
    views = np.stack([f.pose for f in tiny.frames("train")])
    expected = nearest_view_distances(np.stack([f.pose for f in queries]), views)
    assert [rows[f.name] for f in queries] == pytest.approx(expected, abs=1e-3)
