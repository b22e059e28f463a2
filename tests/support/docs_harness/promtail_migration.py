"""docs/promtail.md's example, in the project directory: Promtail's promtail.yaml converted, the
result loaded, the sidecar run on the log file with Promtail's positions file (see
tests/support/promtail_example.py); what reaches Loki is checked by the page's expect: lines,
the debug line the converted drop stage keeps out by their absence and the sidecar's log."""

import sys
from pathlib import Path

from tests.support.promtail_example import lay_out, run

work = Path.cwd()
files = {str(p.relative_to(work)): p.read_text(encoding="utf-8")
         for p in work.rglob("*") if p.is_file()}
lay_out(work, files)
result = run(work)
if result.convert_status != 3:
    sys.exit(f"convert-promtail exited {result.convert_status}, the page says 3:\n"
             f"{result.convert_stderr}")
if result.sidecar_status != 0 or "1 file started where Promtail stopped" not in \
        result.sidecar_stderr:
    sys.exit(f"the sidecar exited {result.sidecar_status}:\n{result.sidecar_stderr}")
if "drop rule 0" not in result.sidecar_stderr or \
        'reason="drop_stage"' not in result.sidecar_stderr:
    sys.exit(f"the sidecar did not say its drop rule dropped the debug line:\n"
             f"{result.sidecar_stderr}")
