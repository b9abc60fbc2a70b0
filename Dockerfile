# The collector as a sidecar image: Debian bookworm's own python3, the app in a venv, no pip at run time.
# CI builds the same distribution from debootstrap (no registry there) and passes it as BASE_IMAGE.
ARG BASE_IMAGE=debian:bookworm-20250520-slim

FROM ${BASE_IMAGE} AS base
# Debian's python3 and venv, unless the base already has them (CI's debootstrapped base does).
RUN if ! python3 -c 'import ensurepip, venv' 2>/dev/null; then \
        apt-get update \
        && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends python3 python3-venv ca-certificates \
        && rm -rf /var/lib/apt/lists/*; \
    fi

# Stage 1: wheels of the app and its dependencies, then a venv installed from them alone.
FROM base AS build
ARG PIP_INDEX_URL=https://pypi.org/simple
# Extra CA certificates (PEM) for pip, when a TLS-intercepting proxy sits in front of the index.
# Used in this stage only: the final image does not trust them.
ARG BUILD_CA_CERTS=""
# A compiler and Python's headers for the optional accelerator (collector/_speedups.c): this stage only.
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends gcc libc6-dev python3-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml setup.py README.md ./
COPY collector ./collector
RUN set -eu; \
    if [ -n "$BUILD_CA_CERTS" ]; then \
        cat /etc/ssl/certs/ca-certificates.crt > /tmp/ca.pem; \
        printf '%s\n' "$BUILD_CA_CERTS" >> /tmp/ca.pem; \
        export PIP_CERT=/tmp/ca.pem; \
    fi; \
    python3 -m venv /opt/pip; \
    /opt/pip/bin/pip wheel --no-cache-dir --disable-pip-version-check --wheel-dir /wheels .; \
    python3 -m venv --without-pip /opt/collector; \
    /opt/pip/bin/pip --python /opt/collector/bin/python install --no-cache-dir --disable-pip-version-check \
        --no-index --find-links /wheels docker-loki-collector

# Stage 2: the base and the venv; nothing else.
FROM base
COPY --from=build /opt/collector /opt/collector
COPY config.yaml /etc/collector/config.yaml
ENV PATH=/opt/collector/bin:$PATH \
    COLLECTOR_CONFIG=/etc/collector/config.yaml \
    PYTHONDONTWRITEBYTECODE=1
# Root, so Docker's 0640 root log files are readable by owner bits alone: compose drops every capability.
# Positions live on a named volume declared in docker-compose.yml (no anonymous VOLUME here).
EXPOSE 9180
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 CMD ["collector", "health"]
ENTRYPOINT ["collector"]
