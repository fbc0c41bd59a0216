# Hydra's server image: `hydra serve` as a non-root user.
#
# Containers here cannot reach the package index over TLS, so the Python wheels are staged on the
# host first: `hydra images build --server` does it (pip wheel into a build context) and builds this
# file with BASE_IMAGE defaulting to the locally built Debian bookworm image.
#
# Reaching Docker: the server starts agent containers, so it needs a Docker API. Mounting the host's
# socket (-v /var/run/docker.sock:/var/run/docker.sock) gives this container root on the host; it is
# the operator's explicit choice, never made by Hydra, and agents never get the socket (see
# docs/security.md). A remote daemon over TLS (DOCKER_HOST=tcp://...:2376) is the alternative.
ARG BASE_IMAGE=hydra-local/debian:bookworm

FROM ${BASE_IMAGE} AS build
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends python3 python3-venv \
 && rm -rf /var/lib/apt/lists/*
COPY wheels /wheels
RUN python3 -m venv /opt/hydra \
 && /opt/hydra/bin/pip install --no-index --find-links /wheels hydra-sandbox \
 && rm -rf /root/.cache

FROM ${BASE_IMAGE}
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends python3 ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --create-home --uid 10001 --shell /usr/sbin/nologin hydra
# The built-in profiles and policies come with the wheel (package data), nothing else to copy.
COPY --from=build /opt/hydra /opt/hydra
ENV PATH=/opt/hydra/bin:$PATH \
    HYDRA_DATA_HOME=/data \
    HYDRA_TRANSPORT=http \
    HYDRA_HTTP_HOST=0.0.0.0
RUN mkdir -p /data && chown hydra:hydra /data
USER hydra
VOLUME ["/data"]
EXPOSE 8765
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s \
  CMD python3 -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8765/healthz', timeout=3)" || exit 1
ENTRYPOINT ["hydra", "serve"]
