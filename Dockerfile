# syntax=docker/dockerfile:1
# idresolve: one image for every node role. docker-compose.yml (written by `idresolve compose`) and the
# manifests of `idresolve k8s` run one node per container with `python -m idresolve.cluster.worker --node
# NAME ...`; by itself the image prints the CLI's help. Build-time only from the network: PyPI for the
# dependencies.
#
#   docker build -t idresolve .                           # nodes and `idresolve bootstrap`
#   docker build -t idresolve-load --build-arg EXTRAS=load .   # plus Locust (the `locust` service, k8s Jobs)
#
# Layers, from least to most often changed: the dependencies (rebuilt only when pyproject.toml or EXTRAS
# change), the package, then config/ and loadtests/ (a topology edit rebuilds nothing but its copy).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore

# The uid is fixed: docker-compose.yml gives the cluster secret file to uid 10001 (cluster/compose.py APP_UID).
ARG APP_UID=10001
RUN groupadd --system --gid "${APP_UID}" idresolve \
 && useradd --system --uid "${APP_UID}" --gid idresolve --home-dir /app --no-create-home --shell /usr/sbin/nologin idresolve \
 && mkdir -p /data \
 && chown idresolve:idresolve /data

WORKDIR /app

# 1. Dependencies only. A stand-in package with the real pyproject.toml pulls them in; it is removed at once.
ARG EXTRAS=""
COPY pyproject.toml README.md ./
RUN mkdir -p src/idresolve \
 && echo '__version__ = "0"' > src/idresolve/__init__.py \
 && pip install ".${EXTRAS:+[${EXTRAS}]}" \
 && pip uninstall -y idresolve \
 && rm -rf src build

# 2. The package itself (its dependencies are in place already).
COPY src ./src
RUN pip install --no-deps . && rm -rf build src/*.egg-info

# 3. Topologies: the compose file and the manifests name /app/config/<file>.toml; Locust reads it too.
COPY config ./config

# 4. The Locust load test (run by the idresolve-load image; a few kB in the other).
COPY loadtests ./loadtests

USER idresolve
# Each node's store (SQLite under /data/nodes/<name>/) and the cluster secret file live here.
VOLUME ["/data"]
CMD ["idresolve", "--help"]
