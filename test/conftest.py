"""Shared fixtures for the scr_ros unit tests (no ROS needed)."""

import numpy as np
import pytest
import torch


def pytest_configure(config):
    # The test machine is shared; the tensors here are tiny, one thread is plenty.
    torch.set_num_threads(1)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(12345)
