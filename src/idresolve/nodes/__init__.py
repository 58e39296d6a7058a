"""Node logic, pure and synchronous: each role turns a request (and ``now``) into an answer or a next hop.

- ``authoritative``: the record-holding role (secondary and enterprise nodes, the top-level registry),
  its answer cache, and the Handle authority rules of ``auth``; ``dispatch`` maps opcodes onto it.
- ``recursive``: the resolution algorithm (walk, cache, fail over); ``pipeline``: the one driver of it for
  every surface and every mover of messages.
- ``replication``: the registry replication handler of top-level nodes; ``bootstrap``: a node's own
  prefix records.

Nodes use a ``Store`` but never sockets, asyncio or clocks.
"""
