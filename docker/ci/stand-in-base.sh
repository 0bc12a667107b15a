#!/usr/bin/env bash
# A local stand-in for the CPU image's base, since CI reaches no container registry:
# debootstrap of Debian bookworm (minbase) with python3 and venv, imported into podman as
# TAG (default docker.io/library/python:3.12-slim-bookworm, the name Dockerfile.cpu's FROM
# uses). Its Python is Debian's 3.11, not 3.12: only the name stands in. About a minute.
# Needs setup-podman.sh's env.sh sourced.
set -euo pipefail

TAG=${1:-docker.io/library/python:3.12-slim-bookworm}
SUITE=bookworm
MIRROR=${MIRROR:-http://deb.debian.org/debian}
PACKAGES=python3,python3-venv,ca-certificates

ROOTFS=$(mktemp -d)
trap 'rm -rf "$ROOTFS" "$ROOTFS.log"' EXIT

debootstrap --variant=minbase --include="$PACKAGES" "$SUITE" "$ROOTFS" "$MIRROR" \
    >"$ROOTFS.log" 2>&1 || { tail -30 "$ROOTFS.log"; exit 1; }
# Image-like: no package caches, no host identity, no docs.
rm -rf "$ROOTFS"/var/lib/apt/lists/* "$ROOTFS"/var/cache/apt/*.bin \
    "$ROOTFS"/var/cache/apt/archives/*.deb "$ROOTFS"/var/log/* "$ROOTFS"/usr/share/doc/* \
    "$ROOTFS"/usr/share/man/* "$ROOTFS"/usr/share/locale/*
rm -f "$ROOTFS/etc/hostname" "$ROOTFS/etc/resolv.conf"
echo "deb $MIRROR $SUITE main" >"$ROOTFS/etc/apt/sources.list"

podman rmi -f "$TAG" >/dev/null 2>&1 || true
tar --numeric-owner -C "$ROOTFS" -c . | podman import -q \
    --change 'ENV LANG=C.UTF-8' \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'CMD ["python3"]' \
    - "$TAG" >/dev/null
podman run --rm --pull=never "$TAG" python3 -c 'import sys, venv; print("stand-in base:", sys.version.split()[0])'
