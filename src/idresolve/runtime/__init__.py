"""Hosting nodes in a process: settings (``config``, ``secrets``), metrics, listeners, the hosted nodes and
the composition root that builds them (``hosted``), and serving one node until a signal (``serve``)."""
