"""idresolve: a simulator of the industrial Internet identifier resolution system.

The package is split into a pure core (``idresolve.core``: model, codecs, node logic, no I/O, no clock)
and thin I/O layers around it (``store``, ``http``, ``net``, ``cluster``, ``bench``, ``cli``).
"""

__version__ = "0.1.0"
