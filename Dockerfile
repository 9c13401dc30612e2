# hmls controller image: ghcr.io/tensorstack/hmls:<version> (config/manager/deployment.yaml).
#
#   docker build -t ghcr.io/tensorstack/hmls:0.1.0 .     (any OCI builder)
#   make image                                           (podman without a daemon, this file
#                                                         unmodified: devenv/hmls_devenv/image.py)
#
# `make image-test` builds it and runs it as config/manager/deployment.yaml does (tests/image/).
#
# The image runs as the non-root user 65532 with a read-only root filesystem (only /tmp, an
# emptyDir in the Deployment, is writable).

FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
# only what `pip install .` needs (see .dockerignore); the local environment (devenv/, its own
# package) is not in the image
COPY pyproject.toml README.md ./
COPY hmls ./hmls
RUN python -m venv /opt/hmls \
 && /opt/hmls/bin/pip install . \
 && /opt/hmls/bin/python -m compileall -q /opt/hmls

FROM python:3.11-slim
COPY --from=build /opt/hmls /opt/hmls
ENV PATH=/opt/hmls/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
# a passwd entry for 65532: the Kubernetes client resolves the home directory at import time
RUN groupadd --system --gid 65532 hmls \
 && useradd --system --uid 65532 --gid 65532 --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin hmls
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["hmls"]
CMD ["controller"]
