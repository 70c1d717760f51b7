#!/usr/bin/env bash
# podman with the settings a machine like this project's needs; the same arguments as podman.
#   bash docker/podman.sh run --rm sugfw-backend:latest sugfw --help
# Used by docker/build_local.sh and tests/live/test_docker_image.py. On a machine with cgroups v2
# and a high open-files limit it adds nothing that changes the result.
set -euo pipefail
global=()
if [ ! -e /sys/fs/cgroup/cgroup.controllers ] && command -v runc >/dev/null 2>&1; then
  # cgroups v1 or hybrid: crun (podman's default runtime) refuses them, runc does not; no systemd
  # runs here to manage the cgroups.
  global=(--runtime "$(command -v runc)" --cgroup-manager=cgroupfs)
fi
case "${1:-}" in
  run | create | build)
    # podman asks for 1048576 open files by default, above this machine's hard limit (20000):
    # the runtime then fails with "error setting rlimit type 7". Ask for what the host allows.
    nofile=$(ulimit -Hn)
    [ "$nofile" = unlimited ] && nofile=1048576
    set -- "$1" --ulimit "nofile=$nofile:$nofile" --ulimit "nproc=4096:4096" "${@:2}"
    ;;
esac
exec podman "${global[@]}" "$@"
