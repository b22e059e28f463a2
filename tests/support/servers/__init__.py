"""Apps that the deploy tests run under real servers (uvicorn, gunicorn, Celery) as
subprocesses, each shipping to the fake Loki named by ``LOKI_URL``."""
