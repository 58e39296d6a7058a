"""The ``idresolve`` command line: ``main(argv) -> int``. Each subcommand lives in its own module."""
