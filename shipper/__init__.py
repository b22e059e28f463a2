"""shipper: labeled system logs from Python apps to Grafana Loki."""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
