"""Running a topology as a cluster: the plan (``plan``: which node listens where, in which worker),
credentials (``credentials``), the worker process hosting many nodes in one loop (``worker``), start-up
allocation through the nodes' own APIs (``bootstrap``), and the supervisor behind ``idresolve up``."""
