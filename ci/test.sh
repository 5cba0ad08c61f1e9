#!/usr/bin/env bash
# The whole test suite, from a fresh Debian machine (run as root):
#   installs docker.io (dockerd 20.10 + CLI 20.10) and busybox-static, starts
#   `dockerd --storage-driver=vfs` if no daemon answers, installs Powerstrip's
#   Python dependencies, then runs ruff, every trial test (unit and end-to-end
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
# Editable, in "compat" mode: the checkout itself goes on sys.path, so twistd finds
# twisted/plugins (powerstrip, powerstrip-adapter) from any directory; the default
# editable mode hides them from twistd's plugin scan outside the checkout.
python3 -m pip install -q --disable-pip-version-check -e '.[test]' --config-settings editable_mode=compat 2>&1 \
    | grep -v -e '^WARNING' -e 'is ignored' || true
python3 -c 'import twisted, treq, yaml, docker, hypothesis'

step "ruff"
ruff check .

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
