"""The core and the framework-free integrations never import a web framework."""

from __future__ import annotations

import subprocess
import sys

FRAMEWORKS = ("django", "starlette", "fastapi", "flask", "werkzeug", "asgiref", "celery", "kombu")


def test_core_and_integrations_import_no_framework() -> None:
    script = f"""
import sys
import shipper, shipper.integrations, shipper.redact, shipper.perf, shipper.context
import shipper.integrations.asgi, shipper.integrations.wsgi
loaded = sorted(m for m in sys.modules if m.split(".")[0] in {FRAMEWORKS!r})
print(",".join(loaded))
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == ""


def test_framework_modules_import_their_framework() -> None:
    script = """
import sys
import shipper.integrations.flask
assert "flask" in sys.modules and "django" not in sys.modules
import shipper.integrations.celery
assert "celery" in sys.modules
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            timeout=60, check=False)
    assert result.returncode == 0, result.stderr
