"""The ``shipper`` command and every subcommand: ``main`` builds the parser; ``admin/`` holds
the admin's commands (query, tail, export, stats, delete, import, doctor), ``demo/`` the demo
traffic, and ``report``, ``retention``, ``sidecar`` their own commands.

Tools, not the engine: nothing outside this package imports it.
"""
