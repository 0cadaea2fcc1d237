"""Process-wide tuning for the long-running processes (`modelreg server`, `modelreg agent`).
Called only by their start-up, never when the SDK, the server or the agent is used as a library."""

from __future__ import annotations

import ctypes
import os
import sys


def keep_freed_memory(*, mmap_threshold: int, trim_threshold: int) -> None:
    """Tunes glibc malloc for a process that moves megabytes per request.

    By default glibc hands big freed blocks straight back to the kernel (mmap above a moving
    threshold, trimming the heap top), so every request with megabyte buffers (an agent's
    image-sized tensors, a registry's 1 MiB artifact chunks) maps fresh pages and the kernel
    zeroes them on first touch: for YOLOv8n at 640 (4.9 MB in, 2.8 MB out) that was ~15 ms of
    CPU per Predict, and a download through the registry took ~230 page faults per MiB.
    Keeping blocks up to `mmap_threshold` bytes in the heap and up to `trim_threshold`
    bytes free at its top makes the buffers of one request reuse the pages of the last.
    MALLOC_MMAP_THRESHOLD_, MALLOC_TRIM_THRESHOLD_ or GLIBC_TUNABLES in the environment win:
    then nothing is changed."""
    if not sys.platform.startswith("linux") or any(
        k in os.environ for k in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "GLIBC_TUNABLES")
    ):
        return
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # not glibc (musl has no mallopt)
        return
    m_trim_threshold, m_mmap_threshold = -1, -3
    mallopt(m_mmap_threshold, mmap_threshold)
    mallopt(m_trim_threshold, trim_threshold)
