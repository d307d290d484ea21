"""Fresh ids: of build requests and job runs (random), and of events (ordered by time).

Both draw their bits from one generator, seeded from the OS and again in a forked child: not
secret, only unique, and without a system call per id (``uuid.uuid4`` makes one, and gives up
the GIL for it: a 100,000-run build makes as many ids on the reactor's thread).
"""

from __future__ import annotations

import os
import random
import time

_LOW_62 = (1 << 62) - 1
_V4 = 0x4 << 76 | 0x2 << 62
_NOT_V4 = ~(0xF << 76 | 0x3 << 62) & ((1 << 128) - 1)

_bits = random.Random()
"""Apart from the ``random`` module's own generator, which tests (Hypothesis) seed to repeat
themselves."""
os.register_at_fork(after_in_child=_bits.seed)


def new_id() -> str:
    """A fresh id of a build request, a job run or a child process's marker: a random UUID
    (version 4) in hex.

    Random, so that the first few characters tell ids apart: people type them by prefix.
    """
    return f"{_bits.getrandbits(128) & _NOT_V4 | _V4:032x}"


def new_event_id() -> str:
    """A fresh event id: a UUID of version 7 (RFC 9562) in hex, which begins with the time.

    Ids made one after another sort together, so each commit adds its events' ids to the last
    page or two of the log's index of event ids, where random (version 4) ids landed on one
    page each: a fifth of the pages a commit of 50 events wrote (docs/performance.md).
    """
    rand = _bits.getrandbits(74)
    ms = time.time_ns() // 1_000_000
    # 48 bits of milliseconds, the version (7), 12 random bits, the variant (0b10), 62 more.
    value = ms << 80 | 0x7 << 76 | (rand >> 62) << 64 | 0x2 << 62 | (rand & _LOW_62)
    return f"{value:032x}"
