"""Record storage behind one interface (``Store``): ``MemoryStore`` and the durable ``SqliteStore``.

Stores are synchronous and never import asyncio: a node calls them inline (each call is microseconds)
and the I/O layer decides when a write is acknowledged (after ``put`` returns, the write is durable
against a crash of the process).
"""

from .base import Store, open_store
from .memory import MemoryStore
from .sqlite import SqliteStore

__all__ = ["Store", "MemoryStore", "SqliteStore", "open_store"]
