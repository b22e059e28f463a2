"""The admin's command line: ``shipper query``, ``tail``, ``labels``, ``series``, ``export``,
``stats``, ``delete``, ``import`` and ``doctor``.

Every query is built by :mod:`shipper.loki.logql` (filters → escaped LogQL); every call to
Loki goes through :class:`shipper.loki.LokiClient`; events written (audit events, imported
rows, the doctor's marker) go through :class:`shipper.delivery.pipeline.Pipeline`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from shipper.cli.help import Subparsers

__all__ = ["add_parser"]


def add_parser(sub: Subparsers) -> None:
    """Register the admin commands on ``shipper``'s subparsers (one line in cli.py)."""
    from shipper.cli.admin import delete, discover, doctor, export, importer, query, stats

    query.add_parser(sub)
    discover.add_parser(sub)
    export.add_parser(sub)
    stats.add_parser(sub)
    delete.add_parser(sub)
    importer.add_parser(sub)
    doctor.add_parser(sub)
