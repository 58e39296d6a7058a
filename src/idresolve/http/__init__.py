"""The HTTP edge: the Handle REST API (``app``), sessions and Basic authentication (``auth``)."""
