#!/usr/bin/env bash
# CI's image step: build the CPU image with rootful podman and run it as SageMaker would
# (docker/tests). Needs root on Debian 12; a few minutes, most of it debootstrap and pip.
set -euo pipefail
cd "$(dirname "$0")/../.."

export PODMAN_CI_DIR=${PODMAN_CI_DIR:-/tmp/podman-ci}
docker/ci/setup-podman.sh "$PODMAN_CI_DIR"
# shellcheck disable=SC1091
source "$PODMAN_CI_DIR/env.sh"
BASE=docker.io/library/$(sed -n 's/^ARG BASE_IMAGE=//p' docker/Dockerfile.cpu)
podman image exists "$BASE" || docker/ci/stand-in-base.sh "$BASE"
.venv/bin/python -m pytest docker/tests "$@"
