#!/usr/bin/env bash
# Rootful podman for CI on a Debian 12 machine without a Docker engine (run as root):
# installs podman, runc, netavark and debootstrap if missing, and writes a configuration under
# DIR (default /tmp/podman-ci) that keeps podman's state there too; no configuration under
# /etc is written (the packages install as packages do). Afterwards: `source DIR/env.sh`.
set -euo pipefail

DIR=${1:-${PODMAN_CI_DIR:-/tmp/podman-ci}}
# runc named explicitly: podman would otherwise pull in crun, which fails on this cgroup setup.
PACKAGES=(podman runc netavark iptables debootstrap)

missing=()
for package in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q '^install ok installed$' \
        || missing+=("$package")
done
if ((${#missing[@]})); then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

mkdir -p "$DIR"/{storage,run,tmp,networks,imgtmp}

cat >"$DIR/containers.conf" <<CONF
[containers]
# No CAP_SYS_RESOURCE here and a hard open-files limit of 20000: podman's default rlimits
# make runc fail ("error setting rlimits"). Both are needed.
default_ulimits = ["nofile=20000:20000", "nproc=4096:4096"]

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
events_logfile_path = "$DIR/events.log"
tmp_dir = "$DIR/tmp"
volume_path = "$DIR/storage/volumes"
image_copy_tmp_dir = "$DIR/imgtmp"

[network]
network_backend = "netavark"
network_config_dir = "$DIR/networks"
CONF

cat >"$DIR/storage.conf" <<CONF
[storage]
driver = "overlay"
graphroot = "$DIR/storage"
runroot = "$DIR/run"
CONF

# No registry is reachable: images come from `podman import`, and short names such as
# python:3.12-slim-bookworm resolve to the local docker.io/library/ ones.
cat >"$DIR/registries.conf" <<'CONF'
unqualified-search-registries = ["docker.io"]
short-name-mode = "permissive"
CONF

cat >"$DIR/env.sh" <<CONF
export CONTAINERS_CONF="$DIR/containers.conf"
export CONTAINERS_STORAGE_CONF="$DIR/storage.conf"
export CONTAINERS_REGISTRIES_CONF="$DIR/registries.conf"
CONF

# shellcheck disable=SC1091
source "$DIR/env.sh"
podman info --format 'podman {{.Version.Version}}, runtime {{.Host.OCIRuntime.Name}}, storage {{.Store.GraphRoot}}'
