"""Strict JAX for the whole suite (Equinox's habit): implicit rank promotion raises.

Warnings are errors too (pyproject's filterwarnings). The fake-device count is set before JAX
starts so the sharded code paths can be tested on CPU; single-device tests are unaffected
because arrays land on device 0 unless a mesh says otherwise.
"""

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")

import jax  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

jax.config.update("jax_numpy_rank_promotion", "raise")


@pytest.fixture
def rng():
    return np.random.default_rng(20261122)
