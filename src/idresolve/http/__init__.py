"""The HTTP edge: the Handle REST API of an authoritative node (``app``), the recursive node's REST surface
(``recursive_app``), what both share (``edge``: error mapping, load shedding, metrics), sessions and Basic
authentication (``auth``)."""
