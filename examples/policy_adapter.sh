#!/bin/sh
# A Powerstrip adapter in POSIX shell, behind socat: proof that adapters need
# no SDK and no particular language, only an answer to an HTTP POST.
#
# Pre-hook on "POST /*/containers/create": refuses privileged containers and
# the host network with a 403 whose message the docker CLI prints; anything
# else goes on unchanged. Run it with
#
#   socat TCP-LISTEN:8081,bind=127.0.0.1,reuseaddr,fork SYSTEM:'sh examples/policy_adapter.sh'
#
# and point an adapter at http://127.0.0.1:8081/policy. One request per
# connection (socat forks a shell for each), answered with Connection: close.

cr=$(printf '\r')
length=0
read -r request_line || exit 0
while IFS= read -r line; do
    line=${line%"$cr"}
    [ -z "$line" ] && break
    case $(printf '%s' "$line" | tr 'A-Z' 'a-z') in
        content-length:*) length=$(printf '%s' "${line#*:}" | tr -d ' ') ;;
    esac
done
payload=$(head -c "$length")

reply() {  # status, JSON body
    printf 'HTTP/1.1 %s\r\nContent-Type: application/json\r\nContent-Length: %s\r\nConnection: close\r\n\r\n%s' \
        "$1" "$(printf '%s' "$2" | wc -c)" "$2"
}

# The container spec is a JSON string inside the payload, so its quotes arrive escaped.
case $payload in
    *'\"Privileged\":true'*)
        reply "403 Forbidden" '{"message": "policy: privileged containers are not allowed here"}'
        exit 0 ;;
    *'\"NetworkMode\":\"host\"'*)
        reply "403 Forbidden" '{"message": "policy: the host network is not allowed here"}'
        exit 0 ;;
esac
# Allowed: answer with the request unchanged. Renaming the payload's
# "ClientRequest" key is enough; Powerstrip ignores the other keys.
reply "200 OK" "$(printf '%s' "$payload" | sed 's/"ClientRequest":/"ModifiedClientRequest":/')"
