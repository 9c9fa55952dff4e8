"""A child process that ends with its parent: no orphan keeps running a job or a worker."""

from __future__ import annotations

import ctypes
import signal
import sys

PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


def signal_on_parent_death(sig: signal.Signals) -> bool:
    """Ask the kernel to send ``sig`` to this process when its parent dies (Linux only).

    The signal is tied to the parent *thread* that forked or spawned this process: it must
    outlive the child. Return False where the call does not exist, so the caller can poll.
    """
    if sys.platform != "linux":
        return False
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, sig, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    return True
