"""jaxemb.timing.keep_freed_memory and keep_training_buffers: freed blocks are reused instead
of given back to the OS.

Measured as the kernel counts it: the minor page faults of allocating, touching and freeing a
64 MiB block again and again (above glibc's adaptive mmap threshold, which stops at 32 MiB, so
by default every round maps fresh pages and faults on each), in a child process so the
suite's own allocator settings are untouched.
"""

import subprocess
import sys

import pytest

from tests.childenv import one_device_env

CHILD = r"""
import resource, sys
import numpy as np
if sys.argv[1] != "default":
    from jaxemb import timing
    print(getattr(timing, sys.argv[1])(), file=sys.stderr)
n = 16 << 20  # float32s: 64 MiB
np.ones(n, np.float32)  # the first round may fault either way
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(4):
    a = np.ones(n, np.float32)
    del a
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _faults(mode: str) -> int:
    # Small pages, so the count does not depend on transparent huge pages.
    out = subprocess.run([sys.executable, "-c", CHILD, mode], capture_output=True, text=True,
                         env=one_device_env(NUMPY_MADVISE_HUGEPAGE="0"), timeout=60)
    assert out.returncode == 0, out.stderr
    return int(out.stdout.split()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_freed_blocks_are_reused_not_faulted_in_again():
    pages = 4 * (64 << 20) // 4096  # four rounds of 64 MiB in 4 KiB pages
    default = _faults("default")
    assert default > pages // 2, default  # the default gives each block back: ~16k faults a round
    for setting in ("keep_freed_memory", "keep_training_buffers"):
        kept = _faults(setting)
        assert kept < pages // 50, (setting, kept)  # kept: the same pages, reused
