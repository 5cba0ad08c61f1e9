# Powerstrip in a container: a Docker API proxy listening on 0.0.0.0:2375.
#
# The build needs no network. The build context must contain a wheels/
# directory holding a wheel of Powerstrip and wheels of all of its dependencies,
# built for the base image's Python (3.11) and platform, for example:
#
#   pip wheel --no-deps -w wheels .
#   pip download -d wheels --only-binary=:all: --python-version 3.11 \
#       --implementation cp --abi cp311 --platform manylinux2014_x86_64 \
#       --platform manylinux_2_34_x86_64 wheels/powerstrip-*.whl
#   docker build --build-arg BASE=python:3.11-slim-bookworm -t powerstrip .
#
# ci/image.sh does all of this offline, including making a Debian bookworm base
# image with debootstrap (--build-arg BASE=powerstrip-base:bookworm).
#
# BASE may be any image with python3 (3.11+) and pip on its PATH, such as
# python:3.11-slim-bookworm or Debian bookworm with python3 and python3-pip.
#
# Run it (mount an adapters file to add hooks; without one it is a pass-through):
#
#   docker run -d --name powerstrip \
#       -v /var/run/docker.sock:/var/run/docker.sock \
#       -v "$PWD/adapters.yml:/etc/powerstrip/adapters.yml:ro" \
#       -p 127.0.0.1:2375:2375 powerstrip
#   export DOCKER_HOST=tcp://127.0.0.1:2375
#
# Arguments after the image name go to `twistd powerstrip`, e.g. --max-json-body 32M.
#
# The proxy runs as root: it must open the Docker socket, which gives full
# control of the host anyway. Do not publish the port beyond localhost unless
# you trust everyone who can reach it.

ARG BASE=python:3.11-slim-bookworm

FROM ${BASE} AS build
COPY wheels/ /wheels/
# A virtualenv (without its own pip) keeps Powerstrip apart from the base's
# Python packages; the base's pip installs into it from /wheels only. The
# dependencies' own test suites go (~19 MB), except twisted/test, which
# treq.testing imports.
RUN python3 -m venv --without-pip /opt/powerstrip \
 && python3 -m pip --python /opt/powerstrip/bin/python install \
        --no-index --find-links /wheels --no-cache-dir powerstrip \
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
ENTRYPOINT ["twistd", "-n", "--pidfile=", "powerstrip"]
CMD []
