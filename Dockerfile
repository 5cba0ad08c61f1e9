# Powerstrip in a container: a Docker API proxy listening on 0.0.0.0:2375.
#
#   docker build -t powerstrip .
#
# installs Powerstrip from this checkout (the build context) and its
# dependencies from the package index (PyPI, or the one pip is pointed at:
# --build-arg PIP_INDEX_URL=... and, for a plain-HTTP index,
# --build-arg PIP_TRUSTED_HOST=...). The base image comes from the registry.
#
# Offline (no index, no registry): put wheels of Powerstrip and of all its
# dependencies, built for the base image's Python (3.11) and platform, in
# wheels/ in the checkout and build with --build-arg WHEELS=wheels:
#
#   pip wheel --no-deps -w wheels .
#   pip download -d wheels --only-binary=:all: --python-version 3.11 \
#       --implementation cp --abi cp311 --platform manylinux2014_x86_64 \
#       --platform manylinux_2_34_x86_64 wheels/powerstrip-*.whl
#   docker build --build-arg WHEELS=wheels --build-arg BASE=powerstrip-base:bookworm -t powerstrip .
#
# ci/image.sh does all of this offline, including making a Debian bookworm base
# image with debootstrap (BASE=powerstrip-base:bookworm), and proves both routes.
#
# BASE may be any image with python3 (3.11+) and pip on its PATH, such as
# python:3.11-slim-bookworm or Debian bookworm with python3 and python3-pip.
#
# Run it (the README's "Docker image" section says how to give it adapters):
#
#   docker run -d --rm --name powerstrip \
#       -v /var/run/docker.sock:/var/run/docker.sock \
#       -p 127.0.0.1:2375:2375 powerstrip
#   export DOCKER_HOST=tcp://127.0.0.1:2375
#
# Arguments after the image name go to `twistd powerstrip`, e.g. --max-json-body 32M.
# `powerstrip healthcheck` (exit 0/1) is the image's health check.
#
# The proxy runs as root: it must open the Docker socket, which gives full
# control of the host anyway. Do not publish the port beyond localhost unless
# you trust everyone who can reach it.

ARG BASE=python:3.11-slim-bookworm

FROM ${BASE} AS build
# Empty: Powerstrip from /src, its dependencies from the index. A directory of
# the context (e.g. wheels): everything from the wheels there, no index at all.
ARG WHEELS=
# pip reads these from the environment (ARGs are, during RUN).
ARG PIP_INDEX_URL
ARG PIP_EXTRA_INDEX_URL
ARG PIP_TRUSTED_HOST
COPY . /src/
# A virtualenv (without its own pip) keeps Powerstrip apart from the base's
# Python packages; the base's pip installs into it. The dependencies' own test
# suites go (~19 MB), except twisted/test, which treq.testing imports.
RUN python3 -m venv --without-pip /opt/powerstrip \
 && if [ -n "$WHEELS" ]; then \
        set -- --no-index --find-links "/src/$WHEELS" powerstrip; \
    else \
        set -- /src; \
    fi \
 && python3 -m pip --python /opt/powerstrip/bin/python install --no-cache-dir "$@" \
 && find /opt/powerstrip/lib -depth -type d \( -name test -o -name tests \) \
        ! -path '*/site-packages/twisted/test' -exec rm -rf {} + \
 && /opt/powerstrip/bin/python -c "\
from twisted.application.service import IServiceMaker; \
from twisted.plugin import getPlugins; \
names = [p.tapname for p in getPlugins(IServiceMaker)]; \
assert {'powerstrip', 'powerstrip-adapter'} <= set(names), names"
# (getPlugins also writes twisted/plugins/dropin.cache, so startup need not.)

FROM ${BASE}
COPY --from=build /opt/powerstrip /opt/powerstrip
ENV PATH=/opt/powerstrip/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    LANG=C.UTF-8 \
    PYTHONUNBUFFERED=1 \
    POWERSTRIP_LISTEN="tcp:2375:interface=0.0.0.0" \
    DOCKER_HOST=unix:///var/run/docker.sock
EXPOSE 2375
# GET /_ping through Powerstrip: it listens and reaches dockerd.
HEALTHCHECK --interval=5s --timeout=5s --start-period=2s --retries=3 CMD ["powerstrip", "healthcheck"]
ENTRYPOINT ["twistd", "-n", "--pidfile=", "powerstrip"]
CMD []
