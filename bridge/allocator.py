"""Keep the C allocator from holding on to freed large buffers (glibc only).

Large values pass through the bridge as buffers of megabytes: gRPC's receive buffers, the
parsed response, each value and previous value as ``bytes``, their JSON encodings, the sink
client's request. glibc serves a buffer over its mmap threshold (128 KiB at start) with
``mmap`` and unmaps it when freed, but raises that threshold to the size of every such buffer
freed, up to 32 MiB: after the first few megabyte values, later ones come from the heap of
the thread that allocated them, and freed ones stay there for reuse. With a reader and a
writer thread per pipeline, gRPC's threads and a sink client's, those per-thread heaps
(arenas) grow to the bridge's whole throughput of large values: 400 values of 1 MiB into
three sinks peaked at 365 MiB as a snapshot and 718 MiB as a replay.

Setting the threshold explicitly turns glibc's adjustment off, so every buffer over it is
mapped and unmapped (and it pins the heap's trim threshold, set here too). The threshold is
1 MiB, not lower: gRPC reads the socket into buffers of up to 4 MiB, and at 256 KiB mapping
each of them cost 10-15% of the replay rate of small changes. Measured (bench.shapes, 400
values of 1 MiB into three sinks, with the pump's byte-bounded queue): peak RSS 280 -> 234
MiB as a snapshot and 254 -> 214 MiB as a replay, at a lower rate (76 -> 47 and 23 -> 16
values/s: page faults on freshly mapped buffers); the small-change replay rate unchanged.
"""

import ctypes
import ctypes.util
import platform

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_BYTES = 1024 * 1024
TRIM_THRESHOLD_BYTES = 16 * 1024 * 1024


def release_large_buffers() -> bool:
    """Apply the settings above; False where the C library is not glibc (nothing to do)."""
    if platform.libc_ver()[0] != "glibc":
        return False
    libc = ctypes.CDLL(ctypes.util.find_library("c"))
    mmap = libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES) == 1
    return bool(libc.mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES) == 1 and mmap)
