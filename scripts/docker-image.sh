#!/usr/bin/env bash
# Builds the tinydfs container image FROM scratch, with no image registry: the image holds the
# `tinydfs` binary, exactly the shared libraries `ldd` names for it (and the dynamic loader) at
# their paths, an /etc/nsswitch.conf (`hosts: files dns`, so compose service names resolve
# through Docker's DNS) and an empty /data owned by uid 10001, the user it runs as. No shell, no
# credentials, no cluster secret: those come from the environment at run time.
#
#   scripts/docker-image.sh [--profile debug|release] [--binary PATH] [--tag IMAGE:TAG]...
#
#   --profile P   package target/P/tinydfs. Default: release if target/release/tinydfs exists and
#                 is newer than target/debug/tinydfs (or there is no debug binary), else debug.
#   --binary PATH package this binary instead (the tests pass the one cargo just built).
#   --tag REF     tag the image REF (repeatable). Default: tinydfs:latest and tinydfs:<version>,
#                 <version> being what `tinydfs --version` prints.
#
# The script does not compile: build first (`cargo build --release --bin tinydfs`). The image
# carries the build machine's glibc, so it runs on any Linux host of the same architecture.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
DOCKERFILE="$ROOT/docker/Dockerfile"
# The user the image runs as (numeric: the image has no /etc/passwd); keep in step with the
# Dockerfile's USER and --chown.
IMAGE_UID=10001

die() { echo "docker-image: ERROR: $*" >&2; exit 1; }
usage() { sed -n '2,17p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit "${1:-0}"; }

profile=""
binary=""
tags=()
while [ $# -gt 0 ]; do
    case "$1" in
        --profile) [ $# -ge 2 ] || die "--profile needs a value"; profile="$2"; shift 2 ;;
        --profile=*) profile="${1#*=}"; shift ;;
        --binary) [ $# -ge 2 ] || die "--binary needs a value"; binary="$2"; shift 2 ;;
        --binary=*) binary="${1#*=}"; shift ;;
        --tag) [ $# -ge 2 ] || die "--tag needs a value"; tags+=("$2"); shift 2 ;;
        --tag=*) tags+=("${1#*=}"); shift ;;
        -h|--help) usage 0 ;;
        *) echo "docker-image: unknown argument: $1" >&2; usage 2 ;;
    esac
done

command -v docker >/dev/null || die "docker not found (the Docker engine and its CLI are needed)"
command -v ldd >/dev/null || die "ldd not found (package libc-bin)"

# --- which binary ----------------------------------------------------------------------------
if [ -n "$binary" ]; then
    [ -z "$profile" ] || die "give --profile or --binary, not both"
else
    debug_bin="$TARGET/debug/tinydfs"
    release_bin="$TARGET/release/tinydfs"
    if [ -z "$profile" ]; then
        if [ -x "$release_bin" ] && { [ ! -e "$debug_bin" ] || [ "$release_bin" -nt "$debug_bin" ]; }; then
            profile=release
        else
            profile=debug
        fi
    fi
    case "$profile" in
        debug|release) ;;
        *) die "--profile must be debug or release, not '$profile'" ;;
    esac
    binary="$TARGET/$profile/tinydfs"
    if [ ! -x "$binary" ]; then
        flag=""; [ "$profile" = release ] && flag=" --release"
        die "$binary not found: build it first with \`cargo build$flag --bin tinydfs\`"
    fi
fi
[ -f "$binary" ] && [ -x "$binary" ] || die "$binary is not an executable file"
[ "$(head -c 4 "$binary" | od -An -c | tr -d ' ')" = "177ELF" ] || die "$binary is not an ELF executable"

version_line="$("$binary" --version)" || die "$binary --version failed"
version="${version_line##* }"
[[ "$version" =~ ^[0-9A-Za-z][0-9A-Za-z._-]*$ ]] || die "cannot read a version from '$version_line'"
if [ "${#tags[@]}" -eq 0 ]; then
    tags=("tinydfs:latest" "tinydfs:$version")
fi

# --- build context ---------------------------------------------------------------------------
ctx="$(mktemp -d "${TMPDIR:-/tmp}/tinydfs-image.XXXXXX")"
trap 'rm -rf "$ctx"' EXIT
rootfs="$ctx/rootfs"
mkdir -p "$rootfs/usr/local/bin" "$rootfs/etc" "$ctx/data"
cp "$binary" "$rootfs/usr/local/bin/tinydfs"
chmod 0755 "$rootfs/usr/local/bin/tinydfs"

# Every library ldd resolves, copied (symlinks followed) to the path it is loaded from; the
# loader line has no "=>". linux-vdso is in the kernel. A statically linked binary needs none.
libs=()
if ldd_out="$(ldd "$binary" 2>&1)"; then
    while read -r line; do
        case "$line" in
            *"not found"*) die "a library of $binary is missing: $line" ;;
            *"=> /"*) path="${line#*=> }"; libs+=("${path%% (*}") ;;
            /*) libs+=("${line%% (*}") ;;
            *) ;;  # linux-vdso.so.1, or a library without a path
        esac
    done <<<"$ldd_out"
else
    case "$ldd_out" in
        *"not a dynamic executable"*|*"statically linked"*) ;;
        *) die "ldd $binary failed: $ldd_out" ;;
    esac
fi
for lib in "${libs[@]}"; do
    [ -e "$lib" ] || die "ldd names $lib, which does not exist"
    mkdir -p "$rootfs$(dirname "$lib")"
    cp -L "$lib" "$rootfs$lib"
done

# glibc 2.34+ has the files and dns NSS modules built in; this names them for host lookups
# (Docker provides /etc/hosts and /etc/resolv.conf with its embedded DNS server).
printf 'hosts: files dns\n' >"$rootfs/etc/nsswitch.conf"
chmod -R u=rwX,go=rX "$rootfs"

cp "$DOCKERFILE" "$ctx/Dockerfile"

echo "docker-image: packaging $binary (tinydfs $version) with ${#libs[@]} libraries:"
for lib in "${libs[@]}"; do echo "  $lib"; done

tag_args=()
for t in "${tags[@]}"; do tag_args+=(-t "$t"); done
docker build --build-arg "VERSION=$version" "${tag_args[@]}" "$ctx" \
    || die "docker build failed"

size="$(docker image inspect --format '{{.Size}}' "${tags[0]}")"
echo "docker-image: built ${tags[*]} ($((size / 1024 / 1024)) MiB, runs as uid $IMAGE_UID)"
