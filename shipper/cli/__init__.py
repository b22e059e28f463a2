"""The ``shipper`` command and every subcommand: ``main`` builds the parser; ``admin/`` holds
the admin's commands (query, tail, export, stats, delete, import, doctor), ``demo/`` the demo
traffic, ``retention/`` retention as code, ``report`` and ``sidecar`` their own commands, and
``signals`` SIGTERM as a clean stop for the commands that run until stopped.

Tools, not the engine: nothing outside this package imports it.
"""
