"""The package's version, in a module of its own so that any module can name it while the
package is still loading."""

from __future__ import annotations

__all__ = ["__version__"]

__version__ = "0.1.0"
