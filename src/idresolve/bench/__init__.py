"""Benchmarks: load clients, baseline servers, scenarios and reports (``idresolve bench``).

Every figure is printed next to a baseline measured in the same run (docs/architecture.md, "Performance facts"), and every
load loop is bounded by time and by count. Modules:

- ``httpload``  HTTP/1.1 keep-alive client on raw asyncio Protocols; the closed-loop driver of ``bench rest``
- ``binload``   the binary-protocol load client (pipelined, request ids, answers read as far as their code)
- ``loadgen``   open-loop and closed-loop drivers over either client, and the per-run ``Recorder``
- ``hist``      latency samples -> HdrHistogram -> percentiles and percentile distributions in microseconds
- ``procs``     node and baseline server subprocesses: start, wait for readiness, always stop; /proc readings
- ``baselines`` the bare aiohttp server (``python -m idresolve.bench.baselines``), raw SQLite inserts
- ``echo``      the bare asyncio msgpack echo server (``python -m idresolve.bench.echo``)
- ``cluster``   the cluster ``bench run`` drives: an existing one, or one it starts, seeds and stops
- ``scrape``    the nodes' /metrics before and after a run, and the cross-check with the client's counts
- ``scenarios`` what ``bench run`` measures (cached, cold, latency-on/off, kill-top) and the arithmetic
- ``runner``    ``bench run``: scenarios x protocols x modes against a cluster, with baselines
- ``runreport`` figures, CSV, the printed summary and the targets; ``htmlreport`` the HTML with SVG charts
- ``compare``   ``bench compare A.json B.json``
- ``workload``  identifiers, values and pre-encoded requests of ``bench rest``/``batch``
- ``suite``     the scenarios ``rest``, ``batch`` and ``suite``
- ``report``    medians, the printed tables, the JSON report and its environment block
- ``templates`` template validation per record beside ``check_values`` (``python -m idresolve.bench.templates``)
"""
