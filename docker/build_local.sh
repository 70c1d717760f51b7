#!/usr/bin/env bash
# Build docker/Dockerfile with podman on a machine that reaches no container registry (like this
# project's): the Dockerfile's base image is replaced by a stand-in made from Debian's own packages.
#
#   bash docker/build_local.sh [IMAGE]        # IMAGE defaults to sugfw-backend:latest (compose's name)
#
# 1. Once: the stand-in base. debootstrap makes a Debian 12 root (its Python is 3.11, as the real
#    base's), given what the official python image has and Debian's lacks: `python` and `pip`
#    commands and a pip that installs into the system (Debian marks its Python externally managed).
#    It also gets what a build on this machine needs to reach packages: the host's CA bundle (the way
#    out goes through a proxy the host trusts) and the host's pip settings for its local wheel
#    folders (mounted read-only during the build). It is tagged with the Dockerfile's FROM name.
# 2. The image, from the repository root, as `docker build -f docker/Dockerfile .` would.
#
# Needs root, podman, runc and debootstrap (apt-get install podman runc debootstrap).
# SUGFW_BUILD_DIR (default /var/tmp/sugfw-podman) holds the root while it is made;
# SUGFW_REBUILD_BASE=1 makes the stand-in again. Build arguments go through SUGFW_BUILD_ARGS.
set -euo pipefail
cd "$(dirname "$0")/.."
IMAGE="${1:-sugfw-backend:latest}"
WORK="${SUGFW_BUILD_DIR:-/var/tmp/sugfw-podman}"
PODMAN=(bash docker/podman.sh)

# FROM python:3.11-slim → docker.io/library/python:3.11-slim, the name podman resolves it to.
base=$(awk 'toupper($1) == "FROM" {print $2; exit}' docker/Dockerfile)
case "$base" in
  */*/*) base_ref="$base" ;;
  */*) base_ref="docker.io/$base" ;;
  *) base_ref="docker.io/library/$base" ;;
esac

# The host's local wheel folders and pip settings, as "pip.conf lines" and "folders to mount".
pip_settings() {
  python3 - <<'EOF'
import os, shlex, subprocess

listed = subprocess.run(["python3", "-m", "pip", "config", "list"], capture_output=True, text=True)
settings = {}
for line in listed.stdout.splitlines():
    key, _, value = line.partition("=")
    settings.setdefault(key.split(".", 1)[1], shlex.split(value)[0] if value else "")
folders, conf = set(), []
for key in ("find-links", "extra-index-url", "constraint"):
    local = []
    for entry in settings.get(key, "").split():
        path = entry.removeprefix("file://")
        if os.path.exists(path):
            local.append(entry)
            # A simple index links to its files with relative paths: mount the folder above it.
            folders.add(os.path.dirname(path) if os.path.basename(path) == "simple" else path)
    if local:
        conf.append(f"{key} = {' '.join(local)}")
for line in conf:
    print("conf", line)
for folder in sorted(folders):
    print("mount", folder)
EOF
}

make_base() {
  local root="$WORK/rootfs"
  echo "build_local: making the stand-in $base_ref from Debian 12 (debootstrap, about a minute)"
  rm -rf "$root" && mkdir -p "$WORK"
  debootstrap --variant=minbase --include=python3,python3-pip,python3-venv bookworm "$root" \
    >"$WORK/debootstrap.log" 2>&1 || { tail -n 20 "$WORK/debootstrap.log" >&2; exit 1; }
  rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
  rm -f "$root"/usr/lib/python3.*/EXTERNALLY-MANAGED
  ln -sf /usr/bin/python3 "$root/usr/local/bin/python"
  ln -sf /usr/bin/pip3 "$root/usr/local/bin/pip"
  cp /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/ca-certificates.crt"
  {
    echo "[global]"
    echo "cert = /etc/ssl/certs/ca-certificates.crt"
    pip_settings | sed -n 's/^conf //p'
  } >"$root/etc/pip.conf"
  tar -C "$root" -c . | "${PODMAN[@]}" import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' --change 'CMD ["python3"]' - "$base_ref" >/dev/null
  rm -rf "$root"
}

if [ "${SUGFW_REBUILD_BASE:-0}" = 1 ] || ! "${PODMAN[@]}" image exists "$base_ref"; then
  make_base
fi

mounts=()
while read -r folder; do
  mounts+=(--volume "$folder:$folder:ro")
done < <(pip_settings | sed -n 's/^mount //p')

# --format docker: the OCI format has no HEALTHCHECK and podman would drop the image's.
# --network host: the build's pip reaches the package index the way the host does.
# shellcheck disable=SC2086  # SUGFW_BUILD_ARGS is a list of --build-arg NAME=VALUE
"${PODMAN[@]}" build --format docker --pull=never --network host \
  --ignorefile docker/Dockerfile.dockerignore -f docker/Dockerfile -t "$IMAGE" \
  "${mounts[@]}" ${SUGFW_BUILD_ARGS:-} .
"${PODMAN[@]}" image inspect "$IMAGE" --format 'build_local: {{.Id}} {{.Size}} bytes'
