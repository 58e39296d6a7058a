"""The virtual-time simulator: the project's own node logic moved by a discrete-event scheduler.

``idresolve simulate`` (``cli/sim_cmd.py``); ``docs/simulation.md`` describes the model, the workloads and
studies, the reports and where it simplifies. Modules: ``space`` and ``store`` (33 billion identifiers
without storing them), ``build`` (the cluster as ``idresolve up`` plans and allocates it), ``nodes`` (the
real node objects behind a queue), ``engine`` (the scheduler and the resolution path), ``writes``,
``whatif`` and ``events`` (what-ifs), ``links`` (the latency model), ``draw`` and ``workload`` (what
arrives), ``stats``, ``report``, ``html`` and ``study`` (what comes out), ``agree``, ``calibrate`` and
``simbench`` (agreement with emulation, the service-time model, the benchmark). Importing this package
imports none of them.
"""
