"""Clients: ``rest`` (blocking, stdlib only) for the Handle REST API; the binary protocol clients live in
``idresolve.net``."""
