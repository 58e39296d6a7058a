"""Asyncio glue for the binary protocol: servers (``server``), clients (``client``), a blocking client
for load tests (``blocking``), and the link latency model applied in the transport (``links``)."""
