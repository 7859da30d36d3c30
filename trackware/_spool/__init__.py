"""The durable SQLite spool (``Tracker(spool=...)``): :class:`Spool` (one
folder's file in this process), :class:`SpoolQueue` (a destination's queue in
it) and :class:`SpoolDeadLetter` (dead letters kept beside it).

docs/durable.md says what it guarantees and how to run it;
docs/architecture/spool.md how it works.
"""

from __future__ import annotations

from ._deadletter import SpoolDeadLetter
from ._spool import DURABILITY_MODES, Spool, SpoolQueue, shared_spool

__all__ = ["DURABILITY_MODES", "Spool", "SpoolDeadLetter", "SpoolQueue", "shared_spool"]
