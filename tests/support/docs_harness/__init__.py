"""Harnesses that run the docs' fragments (a settings.py, an app module) the way a deployment
does. Each ``<name>.py`` here is a script: tests/deploy/test_docs.py writes a project's files into a
directory and runs ``python tests/support/docs_harness/<name>.py`` there, in a fresh interpreter,
with the project directory and the repository on ``PYTHONPATH`` and ``LOKI_URL`` pointing at a
fake Loki.
A harness fails (exits non-zero) when the app does not answer as the docs say; what reached Loki
is checked against the block's ``expect:`` lines by the test."""
