#!/bin/sh
# A Powerstrip adapter in POSIX shell, behind socat: proof that adapters need
# no SDK and no particular language, only an answer to an HTTP POST (and jq,
# to read JSON as JSON: a regular expression over JSON text is defeated by a
# space, an escape or a different key order).
#
# Pre-hook on "POST /*/containers/create" and "POST /*/containers/*/exec":
# refuses with a 403 whose message the docker CLI prints, failing closed (a
# create or exec with no readable JSON object as body is refused too; other
# calls it is pointed at, which have no body to judge, go on). Checked on
# create, in HostConfig and at the body's top level (dockerd 20.10 reads
# HostConfig fields there when HostConfig is absent): Privileged, NetworkMode,
# PidMode, IpcMode, UTSMode, UsernsMode "host", CapAdd, Devices,
# DeviceCgroupRules, DeviceRequests, SecurityOpt unconfined/label=disable, and
# any bind mount of a host path (Binds "/src:...", Mounts Type bind; this one
# has no allow-list: see examples/policy.py for that and for build, services,
# volumes and plugins). On exec: Privileged. Anything else goes on unchanged.
# Run it with
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

# The first violation, or "" when there is none; jq failing (no readable body) is a refusal too.
verdict=$(printf '%s' "$payload" | jq -r '
  def host: ascii_downcase == "host";
  def hc_violations:
    if (.Privileged // false) != false then "privileged containers are not allowed here"
    elif ((.NetworkMode // "") | host) then "the host network is not allowed here"
    elif ([.PidMode, .IpcMode, .UTSMode, .UsernsMode, .CgroupnsMode] | map(. // "" | host) | any)
      then "host namespaces are not allowed here"
    elif ((.CapAdd // []) | length) > 0 then "added capabilities are not allowed here"
    elif ([.Devices, .DeviceCgroupRules, .DeviceRequests] | map((. // []) | length) | add) > 0
      then "host devices are not allowed here"
    elif ((.SecurityOpt // []) | map(ascii_downcase | test("^(seccomp|apparmor|systempaths)[=:]unconfined$|^label[=:]disable$")) | any)
      then "unconfined security options are not allowed here"
    elif ((.Binds // []) | map(select(type == "string" and startswith("/") and contains(":"))) | length) > 0
      or ((.Mounts // []) | map(select(.Type == "bind")) | length) > 0
      then "bind mounts of host paths are not allowed here"
    else empty end;
  (.ClientRequest.Request | split("?")[0]) as $path
  | if .Type != "pre-hook" or ($path | test("/containers/create$|/containers/[^/]+/exec$") | not)
    then ""  # nothing to judge: not a pre-hook, or a call with no body
    else (.ClientRequest.Body // error("no body")) | fromjson
    | if type != "object" then error("not an object")
      elif ($path | test("/exec$")) then
        (if (.Privileged // false) != false then "privileged exec is not allowed here" else "" end)
      else
        [(.HostConfig // {} | if type == "object" then . else error("HostConfig is not an object") end
          | hc_violations), (. | hc_violations)] | first // ""
      end
    end
' 2>/dev/null) || verdict="the request body is not a JSON object this policy can check"
if [ -n "$verdict" ]; then
    reply "403 Forbidden" "$(jq -cn --arg m "policy: $verdict" '{message: $m}')"
    exit 0
fi
# Allowed: answer with the request unchanged. Renaming the payload's
# "ClientRequest" key is enough; Powerstrip ignores the other keys.
reply "200 OK" "$(printf '%s' "$payload" | jq -c '{PowerstripProtocolVersion, ModifiedClientRequest: .ClientRequest}')"
