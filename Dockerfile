# syntax=docker/dockerfile:1
# The shipper command (`shipper demo`, `shipper spool ...`, `shipper retention ...`) in a small
# image: the package and its runtime dependencies only, run as an unprivileged user.
#
#   docker build -t shipper .                       # core package
#   docker build --build-arg EXTRAS=protobuf -t shipper .   # with optional extras
#   docker run --rm -e LOKI_URL=http://loki:3100 shipper demo --count 100
#
# The sidecar needs the sidecar extra (prometheus-client for /metrics, snappy, msgspec):
#   docker build --build-arg EXTRAS=sidecar -t shipper .
#   docker run --rm -v /var/log/app:/var/log/app:ro -v ./sidecar.yaml:/etc/shipper/sidecar.yaml:ro \
#       -e LOKI_URL=http://loki:3100 shipper sidecar --config /etc/shipper/sidecar.yaml
# /var/lib/shipper (spool, positions) and /var/log/shipper belong to the unprivileged user.

FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY shipper ./shipper
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

FROM python:3.11-slim
ARG EXTRAS=""
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    SHIPPER_SPOOL_DIR=/var/lib/shipper/spool
# A fixed uid, and a spool directory it owns: a named volume mounted there inherits the owner.
RUN groupadd --system --gid 10001 shipper \
    && useradd --system --uid 10001 --gid shipper --home-dir /home/shipper --create-home \
        --shell /usr/sbin/nologin shipper \
    && install -d -o shipper -g shipper /var/lib/shipper /var/lib/shipper/spool \
        /var/log/shipper
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    wheel="$(ls /wheels/shipper-*.whl)" \
    && pip install "${wheel}${EXTRAS:+[$EXTRAS]}"
USER shipper
WORKDIR /home/shipper
ENTRYPOINT ["shipper"]
CMD ["--help"]
