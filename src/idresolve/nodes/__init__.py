"""Node logic, pure and synchronous: each node turns a request (and ``now``) into an answer or a next hop.

- ``authoritative``: the record-holding role (secondary and enterprise nodes, and the top-level
  registry), with the Handle authority rules of ``auth``.
- ``toplevel``, ``recursive``: the hierarchy's other roles.

Nodes use a ``Store`` but never sockets, asyncio or clocks.
"""
