# etcd-bridge: build wheels in one stage, run as a non-root user in a slim one.
# Configure with BRIDGE_* environment variables (see README.md).

FROM python:3.11.11-slim-bookworm AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY bridge ./bridge
COPY sinks ./sinks
COPY config ./config
RUN pip wheel --no-cache-dir --wheel-dir /wheels ".[all]"

FROM python:3.11.11-slim-bookworm
RUN groupadd --system --gid 10001 bridge \
 && useradd --system --uid 10001 --gid bridge --home-dir /var/lib/etcd-bridge --create-home bridge
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir --no-index --find-links /wheels "etcd-bridge[all]" \
 && rm -rf /wheels
ENV BRIDGE_STDOUT__CHECKPOINT_DIR=/var/lib/etcd-bridge \
    BRIDGE_JOURNAL__PATH=/var/lib/etcd-bridge/journal \
    BRIDGE_LOG__FORMAT=json \
    PYTHONUNBUFFERED=1
VOLUME ["/var/lib/etcd-bridge"]
EXPOSE 8080
HEALTHCHECK --interval=15s --timeout=3s --start-period=30s --retries=3 \
  CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=2)"]
USER 10001:10001
WORKDIR /var/lib/etcd-bridge
ENTRYPOINT ["etcd-bridge"]
CMD ["run"]
