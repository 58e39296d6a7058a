"""Benchmarks: load clients, baseline servers, scenarios and reports (``idresolve bench``).

Every figure is printed next to a baseline measured in the same run (DESIGN.md section 3), and every
load loop is bounded by time and by count. Modules:

- ``httpload``  HTTP/1.1 keep-alive client on raw asyncio Protocols; the closed-loop driver
- ``hist``      latency samples -> HdrHistogram -> percentiles in microseconds
- ``procs``     node and baseline server subprocesses: start, wait for readiness, always stop
- ``baselines`` the bare aiohttp server (``python -m idresolve.bench.baselines``), raw SQLite inserts
- ``workload``  identifiers, values and pre-encoded requests
- ``suite``     the scenarios: ``rest``, ``batch``, ``suite``
- ``report``    medians, the printed tables, the JSON report and its environment block
"""
