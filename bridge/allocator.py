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

The trim threshold applies to every arena: each keeps up to that much free memory at its
top, and glibc makes up to 8 arenas per core (16 here) as the bridge's 20-odd threads
contend. At 16 MiB a threshold each, the arenas held most of the peak: 150-190 MiB of the
276-304 MiB that 400 values of 1 MiB into three sinks reached, and Kafka's 1M-key snapshot
(librdkafka's threads allocate beside gRPC's and the pump's) peaked at 212-219 MiB against
196-199 MiB with glibc's defaults. Hence at most two arenas: the main heap and one shared by
every other thread. Measured in A/B pairs, same session: 400 values of 1 MiB into three sinks
276-304 -> 173-217 MiB at the same rate; Kafka's 1M-key snapshot 212-219 -> 108-117 MiB, its
CPU within noise (two interleaved rounds disagreed in sign; librdkafka's broker thread may
contend for the shared arena). A lower trim threshold instead (1 MiB or 128 KiB) gave
212-229 MiB on the large values, but at 25-29 instead of 33-40 values/s with 35% more CPU:
every batch grew and shrank the heaps again.
"""

import ctypes
import ctypes.util
import platform

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8
MMAP_THRESHOLD_BYTES = 1024 * 1024
TRIM_THRESHOLD_BYTES = 16 * 1024 * 1024
ARENA_MAX = 2


def release_large_buffers() -> bool:
    """Apply the settings above; False where the C library is not glibc (nothing to do).

    Called before the bridge starts its threads: an arena made before the cap stays."""
    if platform.libc_ver()[0] != "glibc":
        return False
    libc = ctypes.CDLL(ctypes.util.find_library("c"))
    mmap = libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES) == 1
    arenas = libc.mallopt(_M_ARENA_MAX, ARENA_MAX) == 1
    return bool(libc.mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES) == 1 and mmap and arenas)
