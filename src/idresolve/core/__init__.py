"""The pure core: identifiers, values, permissions, records, messages, codecs, sans-I/O connections,
answers, caches, the topology and the latency model.

Nothing in this package imports asyncio, aiohttp, socket or time; every function that needs the current
time takes ``now`` (seconds) from its caller.
"""
