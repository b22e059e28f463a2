"""Access to ../shared/loki-contract/: real Loki 3.7.6 requests and answers."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

CONTRACT_DIR = Path(__file__).resolve().parents[3] / "shared" / "loki-contract"


def load(name: str) -> dict[str, Any]:
    path = CONTRACT_DIR / f"{name}.json"
    if not path.exists():
        raise FileNotFoundError(
            f"{path} is missing: the tests need ../shared/loki-contract beside the repository"
        )
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def answer(name: str) -> tuple[int, str, dict[str, str]]:
    """(status, body text, headers) exactly as Loki answered in contract file ``name``."""
    data = load(name)
    body = data["body"]
    text = body if isinstance(body, str) else json.dumps(body)
    headers = {k: v for k, v in data.get("headers", {}).items() if k.lower() != "content-type"}
    return data["status"], text, headers
