"""The environment of a child process that a test starts as a user would run the command.

One CPU device (no ``--xla_force_host_platform_device_count``: on the suite's 8 fake devices a
child's collectives can time out when the CPUs are shared), the repository importable, the
suite's compilation cache (``JAX_COMPILATION_CACHE_DIR``, inherited) and its cheap LLVM
pipeline (:data:`COMPILE_FLAGS`, see conftest).
"""

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

COMPILE_FLAGS = ("--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true "
                 "--xla_cpu_use_fusion_emitters=false")


def one_device_env(**extra: str) -> dict:
    """os.environ for a one-device child, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    return env | {"XLA_FLAGS": COMPILE_FLAGS, "PYTHONPATH": str(ROOT)} | extra
