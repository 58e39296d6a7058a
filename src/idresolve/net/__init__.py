"""Asyncio shells for the binary protocol: servers (``server``) around the sans-I/O connections of
``core``, the services they host (``services``), clients (``client``) and the resolve pipeline's mover
(``upstream``), a blocking client for scripts and load tests (``blocking``), the link latency model applied
in the transport (``links``, ``delays``), load shedding (``admission``) and registry replication
(``replicator``)."""
