"""gunicorn hooks as docs/frameworks.md shows them: deliver before a worker or the master
process ends."""

import shipper


def worker_exit(server, worker):  # a worker stops: SIGTERM, --max-requests, a reload
    shipper.shutdown()


def on_exit(server):  # the master stops
    shipper.shutdown()
