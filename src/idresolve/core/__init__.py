"""The pure core: identifiers, values, permissions, codecs and node logic.

Nothing in this package imports asyncio, aiohttp, socket or time; every function that needs the current
time takes ``now`` (seconds since the epoch) from its caller.
"""
