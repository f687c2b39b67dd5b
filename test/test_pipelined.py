"""The pipelined relocalizer (each frame's RANSAC beside the next frame's encoder and head) gives
the sequential path's poses, bit for bit, and keeps the frame order and the skipped frames."""

from __future__ import annotations

import numpy as np
import torch

from scr_ros.errors import DatasetError
from scr_ros.evaluate import localize_frames
from scr_ros.mapfile import load_map
from scr_ros.relocalize import Relocalizer


class Unreadable:
    """A frame whose image cannot be decoded."""

    def __init__(self, frame):
        self._frame = frame
        self.name, self.pose, self.camera = frame.name + "-broken", frame.pose, frame.camera

    def load_image(self):
        raise DatasetError(f"cannot decode image of {self.name}")


def test_pipelined_poses_are_the_sequential_ones(mapped, tiny):
    reloc = Relocalizer(load_map(mapped["map"]), device="cpu")
    assert reloc.splits_in_two
    frames = tiny.frames("test")
    frames = frames[:6] + [Unreadable(frames[6])] + frames[7:]
    threads = torch.get_num_threads()
    skipped_a, skipped_b, seen = [], [], []
    sequential = localize_frames(reloc, frames, on_skip=lambda n, r: skipped_a.append(n))
    pipelined = localize_frames(
        reloc,
        frames,
        on_skip=lambda n, r: skipped_b.append(n),
        pipelined=True,
        progress=lambda i, n, r: seen.append(i),
    )
    assert torch.get_num_threads() == threads  # the pipelined run gives its threads back
    assert skipped_a == skipped_b == [frames[6].name]
    assert seen == list(range(1, len(frames) + 1))  # progress in frame order, the skipped one too
    assert [r.name for r in pipelined] == [r.name for r in sequential]
    assert sum(r.success for r in sequential) >= len(sequential) // 2  # poses worth comparing
    for a, b in zip(sequential, pipelined):
        assert a.success == b.success and a.num_inliers == b.num_inliers
        assert (a.T_est is None and b.T_est is None) or np.array_equal(a.T_est, b.T_est)


def test_localize_reports_whether_it_pipelined(mapped):
    assert mapped["report"]["pipelined"] is True  # scr localize's default


class OneAtATime:
    """A relocalizer whose map weighs several hypotheses: it cannot be split in two."""

    splits_in_two = False

    def __init__(self, real: Relocalizer) -> None:
        self.real, self.calls = real, 0

    def localize(self, image, camera):
        self.calls += 1
        return self.real.localize(image, camera)

    def front(self, image, camera):
        raise AssertionError("front() of a map that needs RANSAC between its hypotheses")


def test_maps_weighing_hypotheses_fall_back_to_one_frame_at_a_time(mapped, tiny):
    reloc = OneAtATime(Relocalizer(load_map(mapped["map"]), device="cpu"))
    results = localize_frames(reloc, tiny.frames("test")[:3], pipelined=True)
    assert reloc.calls == 3 and len(results) == 3
