#!/usr/bin/env bash
# Build the Powerstrip image with no registry access and prove that it works:
#
#   1. make a Debian bookworm base image (Python 3.11) with debootstrap from the
#      Debian mirror apt already uses here, unless $BASE_IMAGE already exists;
#   2. on the host, build a Powerstrip wheel from this checkout and download its
#      dependencies as wheels for the base image's Python and platform;
#   3. docker build the image from a temporary context (Dockerfile + wheels/);
#   4. run it with the Docker socket mounted, wait for GET /_ping, run
#      `docker run --rm busybox echo ...` through it and check its log;
#   5. bring up examples/docker-compose.yml (Powerstrip + the env_inject and
#      policy example adapters) with docker-compose, check that a variable is
#      injected and `--privileged` is refused, and take it down.
#
# Needs: root, a running dockerd, docker CLI, python3 with pip (3.11 here, as it
# builds the wheel), network access to PyPI and the Debian mirror (not to any
# container registry), a local image $TEST_IMAGE (busybox:latest), and
# docker-compose (v1; installed with apt-get if missing).
#
# Environment knobs:
#   BASE_IMAGE   base image to use or create    [powerstrip-base:bookworm]
#   IMAGE        tag of the image built          [powerstrip:test]
#   TEST_IMAGE   local image run through the proxy [busybox:latest]
#   DEBIAN_MIRROR  mirror for debootstrap        [read from apt's sources]
#   CI_NETWORK   "publish" (-p 127.0.0.1:PORT:2375) or "host"; unset: try
#                publish and fall back to host networking if it fails
#   PYTHON       host Python                     [python3]
set -euo pipefail

BASE_IMAGE=${BASE_IMAGE:-powerstrip-base:bookworm}
IMAGE=${IMAGE:-powerstrip:test}
TEST_IMAGE=${TEST_IMAGE:-busybox:latest}
PYTHON=${PYTHON:-python3}
SUITE=bookworm          # Debian 12: python3 is 3.11
GREETING=hello-through-image

START=$SECONDS
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
WORK=$(mktemp -d "${TMPDIR:-/tmp}/powerstrip-image.XXXXXX")
CONTAINER=powerstrip-ci-$$
ROOTFS=
EXAMPLE_COMPOSE=$REPO/examples/docker-compose.yml
COMPOSE_PORT=
COMPOSE_UP=

say() { printf '\n=== %s (%ds)\n' "$*" "$((SECONDS - START))"; }
die() { printf '\nFAIL: %s\n' "$*" >&2; exit 1; }

cleanup() {
    local rc=$?
    set +e
    if docker container inspect "$CONTAINER" >/dev/null 2>&1; then
        if [ "$rc" -ne 0 ]; then
            echo "--- log of $CONTAINER:" >&2
            docker logs "$CONTAINER" 2>&1 | tail -n 50 >&2
        fi
        docker rm -f "$CONTAINER" >/dev/null
    fi
    if [ -n "$COMPOSE_UP" ]; then
        [ "$rc" -ne 0 ] && compose logs --tail=30 >&2
        compose down >/dev/null 2>&1
    fi
    [ -n "$ROOTFS" ] && remove_rootfs "$ROOTFS"
    rm -rf "$WORK"
    if [ "$rc" -eq 0 ]; then
        printf '\nPASS: %s works through the proxy (%ds)\n' "$IMAGE" "$((SECONDS - START))"
    else
        printf '\nFAIL: ci/image.sh exited with status %d (%ds)\n' "$rc" "$((SECONDS - START))" >&2
    fi
}
trap cleanup EXIT

# docker-compose on the example, with the image just built, published on $COMPOSE_PORT.
compose() {
    POWERSTRIP_IMAGE="$IMAGE" POWERSTRIP_PORT="$COMPOSE_PORT" \
        docker-compose -f "$EXAMPLE_COMPOSE" -p powerstrip-example "$@"
}

# Unmount anything debootstrap left mounted (proc, sys) before deleting a rootfs.
remove_rootfs() {
    local dir=$1 m
    [ -d "$dir" ] || return 0
    findmnt -R -n -l -o TARGET --target "$dir" 2>/dev/null | tac | while read -r m; do
        case "$m" in "$dir"/*) umount -l "$m" ;; esac
    done
    rm -rf --one-file-system "$dir"
}

# The URI of the first enabled "deb" source for $SUITE in apt's configuration
# (one-line *.list files and deb822 *.sources files).
apt_mirror() {
    local f uri
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [ -f "$f" ] || continue
        uri=$(awk -v suite="$SUITE" '
            $1 == "deb" {
                i = 2
                if ($i ~ /^\[/) { while ($i !~ /\]$/) i++; i++ }
                if ($(i + 1) == suite) { print $i; exit }
            }' "$f")
        [ -n "$uri" ] && { echo "$uri"; return 0; }
    done
    for f in /etc/apt/sources.list.d/*.sources; do
        [ -f "$f" ] || continue
        uri=$(awk -v suite="$SUITE" '
            BEGIN { RS = ""; FS = "\n" }
            {
                types = uris = suites = ""; enabled = "yes"
                for (i = 1; i <= NF; i++) {
                    line = $i
                    if (line ~ /^[ \t]*#/ || line !~ /:/) continue
                    key = tolower(substr(line, 1, index(line, ":") - 1))
                    val = " " substr(line, index(line, ":") + 1) " "
                    gsub(/[ \t]+/, " ", val)
                    if (key == "types") types = val
                    else if (key == "uris") uris = val
                    else if (key == "suites") suites = val
                    else if (key == "enabled") enabled = tolower(val)
                }
                if (types ~ / deb / && suites ~ (" " suite " ") && enabled !~ /no/) {
                    split(uris, u, " "); print u[1]; exit
                }
            }' "$f")
        [ -n "$uri" ] && { echo "$uri"; return 0; }
    done
    return 1
}

free_port() {
    "$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Succeeds once GET http://127.0.0.1:$1/_ping answers "OK".
ping_ok() {
    "$PYTHON" - "$1" <<'EOF' >/dev/null 2>&1
import sys, urllib.request
with urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/_ping", timeout=2) as r:
    sys.exit(0 if r.status == 200 and r.read().strip() == b"OK" else 1)
EOF
}

# start_container MODE PORT: run the image; MODE is "publish" or "host".
start_container() {
    local mode=$1 port=$2
    docker rm -f "$CONTAINER" >/dev/null 2>&1 || true
    if [ "$mode" = publish ]; then
        docker run -d --name "$CONTAINER" \
            -v /var/run/docker.sock:/var/run/docker.sock \
            -p "127.0.0.1:$port:2375" "$IMAGE" >/dev/null
    else
        # Host networking: the proxy listens on the host's loopback itself.
        docker run -d --name "$CONTAINER" --network host \
            -e "POWERSTRIP_LISTEN=tcp:$port:interface=127.0.0.1" \
            -v /var/run/docker.sock:/var/run/docker.sock "$IMAGE" >/dev/null
    fi
}

# wait_ping PORT SECONDS: wait for /_ping; fails early if the container stops.
wait_ping() {
    local port=$1 deadline=$((SECONDS + $2))
    while [ "$SECONDS" -lt "$deadline" ]; do
        ping_ok "$port" && return 0
        [ "$(docker container inspect -f '{{.State.Running}}' "$CONTAINER" 2>/dev/null)" = true ] ||
            die "container $CONTAINER stopped before answering /_ping"
        sleep 0.5
    done
    return 1
}

# --- preflight ---------------------------------------------------------------
say "preflight"
[ "$(id -u)" -eq 0 ] || die "run as root (debootstrap and docker need it)"
case "${CI_NETWORK:-}" in ""|publish|host) ;; *) die "CI_NETWORK must be publish or host" ;; esac
command -v docker >/dev/null || die "no docker CLI on PATH"
docker version >/dev/null 2>&1 ||
    die "dockerd is not answering on ${DOCKER_HOST:-unix:///var/run/docker.sock} (start it: dockerd --storage-driver=vfs)"
"$PYTHON" -m pip --version >/dev/null 2>&1 || die "$PYTHON has no pip"
docker image inspect "$TEST_IMAGE" >/dev/null 2>&1 ||
    die "test image $TEST_IMAGE is not present locally (it cannot be pulled here)"

# --- 1. base image -----------------------------------------------------------
if docker image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
    say "base image $BASE_IMAGE exists: not rebuilding it"
else
    say "creating base image $BASE_IMAGE with debootstrap"
    if ! command -v debootstrap >/dev/null; then
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null ||
            die "could not install debootstrap"
    fi
    MIRROR=${DEBIAN_MIRROR:-$(apt_mirror)} ||
        die "no enabled 'deb' source for $SUITE in /etc/apt/sources.list{,.d/}: set DEBIAN_MIRROR"
    echo "mirror: $MIRROR"
    ROOTFS=$(mktemp -d /var/tmp/powerstrip-rootfs.XXXXXX)
    debootstrap --variant=minbase --include=python3,python3-pip,ca-certificates \
        "$SUITE" "$ROOTFS" "$MIRROR" >"$WORK/debootstrap.log" 2>&1 || {
        tail -n 30 "$WORK/debootstrap.log" >&2
        [ -f "$ROOTFS/debootstrap/debootstrap.log" ] && tail -n 30 "$ROOTFS/debootstrap/debootstrap.log" >&2
        die "debootstrap failed"
    }
    # Nothing the image needs: package caches, apt lists, documentation, message
    # translations.
    rm -rf "$ROOTFS"/var/cache/apt/archives/*.deb "$ROOTFS"/var/cache/apt/*.bin \
        "$ROOTFS"/var/lib/apt/lists/* "$ROOTFS"/usr/share/doc/* "$ROOTFS"/usr/share/man/* \
        "$ROOTFS"/usr/share/info/* "$ROOTFS"/var/log/*.log "$ROOTFS"/debootstrap
    find "$ROOTFS"/usr/share/locale -mindepth 1 -maxdepth 1 ! -name locale.alias -exec rm -rf {} +
    tar --numeric-owner -C "$ROOTFS" -c . |
        docker import \
            --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
            --change 'ENV LANG=C.UTF-8' \
            --change 'CMD ["/bin/bash"]' \
            --message "debootstrap --variant=minbase $SUITE from $MIRROR" \
            - "$BASE_IMAGE" >/dev/null || die "docker import of the base failed"
    remove_rootfs "$ROOTFS"; ROOTFS=
fi

# What the base runs: CPython version tag, glibc version, machine.
read -r PYTAG GLIBC ARCH < <(docker run --rm --entrypoint python3 "$BASE_IMAGE" -c '
import platform, sys
print(f"{sys.version_info[0]}{sys.version_info[1]}", platform.libc_ver()[1], platform.machine())') ||
    die "cannot run python3 in $BASE_IMAGE"
echo "base: CPython $PYTAG, glibc $GLIBC, $ARCH"

# --- 2. wheels ---------------------------------------------------------------
say "building wheels for cp$PYTAG / glibc $GLIBC / $ARCH"
CTX=$WORK/context
SRC=$WORK/src
mkdir -p "$CTX/wheels" "$SRC"
cp "$REPO/Dockerfile" "$CTX/"
# A clean copy of the checkout (tracked and unignored files): no stale build/.
if git -C "$REPO" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    (cd "$REPO" && git ls-files -z --cached --others --exclude-standard |
        while IFS= read -r -d '' f; do [ -e "$f" ] && printf '%s\0' "$f"; done |
        xargs -0 cp --parents -t "$SRC")
else
    (cd "$REPO" && cp -r --parents setup.py README.md powerstrip twisted/plugins "$SRC")
fi
# A fixed timestamp makes the wheel byte-identical for identical sources, so
# docker build's layer cache holds on warm runs.
SOURCE_DATE_EPOCH=315532800 "$PYTHON" -m pip wheel -q --no-deps -w "$CTX/wheels" "$SRC" ||
    die "building the Powerstrip wheel failed"
WHEEL=$(ls "$CTX"/wheels/powerstrip-*.whl)

# pip does not widen manylinux_2_X to older glibcs itself: list every one.
PLATFORMS=()
GLIBC_MINOR=${GLIBC#2.}
for ((m = GLIBC_MINOR; m >= 17; m--)); do PLATFORMS+=(--platform "manylinux_2_${m}_$ARCH"); done
PLATFORMS+=(--platform "manylinux2014_$ARCH")
"$PYTHON" -m pip download -q -d "$CTX/wheels" --only-binary=:all: \
    --implementation cp --python-version "$PYTAG" --abi "cp$PYTAG" "${PLATFORMS[@]}" \
    "$WHEEL" || die "downloading dependency wheels failed"
ls "$CTX/wheels"

# --- 3. image ----------------------------------------------------------------
say "building $IMAGE"
OLD_ID=$(docker image inspect -f '{{.Id}}' "$IMAGE" 2>/dev/null || true)
docker build --build-arg "BASE=$BASE_IMAGE" -t "$IMAGE" "$CTX" || die "docker build failed"
NEW_ID=$(docker image inspect -f '{{.Id}}' "$IMAGE")
# Drop the image this tag pointed to before, unless something else uses it.
if [ -n "$OLD_ID" ] && [ "$OLD_ID" != "$NEW_ID" ] &&
    [ "$(docker image inspect -f '{{len .RepoTags}}' "$OLD_ID" 2>/dev/null)" = 0 ]; then
    docker rmi "$OLD_ID" >/dev/null 2>&1 || true
fi
SIZE=$(docker image inspect -f '{{.Size}}' "$IMAGE")
echo "$IMAGE: $((SIZE / 1000000)) MB (base $(($(docker image inspect -f '{{.Size}}' "$BASE_IMAGE") / 1000000)) MB)"

# --- 4. run it ---------------------------------------------------------------
PORT=$(free_port)
MODE=${CI_NETWORK:-publish}
say "running $IMAGE ($MODE networking, 127.0.0.1:$PORT)"
if ! { start_container "$MODE" "$PORT" && wait_ping "$PORT" 30; }; then
    [ -z "${CI_NETWORK:-}" ] || die "$MODE networking: no answer to GET http://127.0.0.1:$PORT/_ping within 30s"
    # Port publishing (docker-proxy / iptables) may not work in some sandboxes;
    # it did work where this script was written. Host networking needs neither.
    echo "no answer through -p publishing; retrying with --network host" >&2
    docker logs "$CONTAINER" 2>&1 | tail -n 20 >&2 || true
    MODE=host
    PORT=$(free_port)
    start_container host "$PORT" || die "docker run --network host $IMAGE failed"
    wait_ping "$PORT" 30 || die "no answer to GET http://127.0.0.1:$PORT/_ping within 30s (host networking)"
fi
echo "GET /_ping: OK"

say "docker run --rm $TEST_IMAGE through the proxy"
OUT=$(env -u DOCKER_CONTEXT -u DOCKER_TLS_VERIFY -u DOCKER_CERT_PATH DOCKER_HOST="tcp://127.0.0.1:$PORT" \
    docker run --rm "$TEST_IMAGE" echo "$GREETING" 2>&1) ||
    die "docker run through the proxy failed: $OUT"
[ "$OUT" = "$GREETING" ] || die "expected output '$GREETING', got: $OUT"
echo "output: $OUT"

LOG=$(docker logs "$CONTAINER" 2>&1)
grep -q 'export DOCKER_HOST=' <<<"$LOG" || die "container log lacks the 'export DOCKER_HOST=' line"
[ "$(docker container inspect -f '{{.State.Running}}' "$CONTAINER")" = true ] ||
    die "container stopped after the test"
echo "--- container log:"
echo "$LOG"

# --- 5. the docker-compose example -------------------------------------------
if [ "$MODE" != publish ]; then
    # The example publishes Powerstrip's port; without working -p there is nothing to reach.
    say "examples/docker-compose.yml: skipped (port publishing does not work here)"
else
    say "examples/docker-compose.yml: Powerstrip with the env_inject and policy adapters"
    if ! command -v docker-compose >/dev/null; then
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker-compose >/dev/null ||
            die "could not install docker-compose"
    fi
    # Not 2375: something else (another test, dockerd itself) may hold it.
    COMPOSE_PORT=$(free_port)
    compose down >/dev/null 2>&1 || true   # leftovers of an interrupted run
    COMPOSE_UP=1
    compose up -d || die "docker-compose up failed"
    deadline=$((SECONDS + 60))
    until ping_ok "$COMPOSE_PORT"; do
        [ "$SECONDS" -lt "$deadline" ] || die "the compose example's Powerstrip did not answer GET /_ping within 60s"
        sleep 0.5
    done
    through_example() {
        env -u DOCKER_CONTEXT -u DOCKER_TLS_VERIFY -u DOCKER_CERT_PATH DOCKER_HOST="tcp://127.0.0.1:$COMPOSE_PORT" \
            docker "$@"
    }
    OUT=$(through_example run --rm "$TEST_IMAGE" env 2>&1) || die "docker run through the compose example failed: $OUT"
    grep -qx 'DEPLOY_ENV=example' <<<"$OUT" || die "env_inject did not add DEPLOY_ENV=example; env was: $OUT"
    echo "injected by env_inject: DEPLOY_ENV=example"
    if OUT=$(through_example run --rm --privileged "$TEST_IMAGE" true 2>&1); then
        die "docker run --privileged was not refused through the compose example"
    fi
    grep -q 'policy: privileged containers are not allowed' <<<"$OUT" ||
        die "docker run --privileged failed without the policy message: $OUT"
    echo "refused: $(grep -m1 'policy:' <<<"$OUT")"
    compose down || die "docker-compose down failed"
    COMPOSE_UP=
fi
