#!/usr/bin/env bash
# Builds rattle's OCI image from an already-built rattle binary, with buildah, from scratch: no
# base image, no registry, no network. The image holds the binary, the shared libraries it
# links (found with ldd), a passwd/group naming the non-root user, and the directories its
# volumes mount on; nothing else (no shell, no package manager).
#
#   deploy/image/build.sh                                 # target/release/rattle → rattle:<version>
#   deploy/image/build.sh --binary PATH --tag NAME:TAG
#   deploy/image/build.sh --output docker-archive:rattle.tar   # also write an archive, e.g. for
#                                                              # `kind load image-archive`
#   deploy/image/build.sh --strip-debug        # drop any debug info from the image's copy (the
#                                              # release profile has none; for other builds)
#
# The image runs as uid/gid 65532 (`rattle`; the uid distroless's `nonroot` uses, so the
# Dockerfile's image and this one are interchangeable) in /var/lib/rattle: reports go to
# /var/lib/rattle/reports (a volume; `rattle run` writes reports/<name>-<time>/ relative to the
# working directory), the journal of active faults to /var/lib/rattle/state (a volume,
# RATTLE_STATE_DIR). Needs root, or run it as `buildah unshare deploy/image/build.sh ...`.
# Storage is buildah's usual; CONTAINERS_STORAGE_CONF points it elsewhere.
set -euo pipefail
# Whatever the caller's umask, the image's directories and files must be readable by its user.
umask 022

usage() {
  sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'
  echo
  echo "options: --binary PATH  --tag NAME[:TAG]  --output TRANSPORT:DEST  --strip-debug  -h|--help"
}

binary=""
tag=""
output=""
strip_debug=""
while [ $# -gt 0 ]; do
  case "$1" in
    --binary) binary="${2:?--binary needs a path}"; shift 2 ;;
    --tag) tag="${2:?--tag needs a name}"; shift 2 ;;
    --output) output="${2:?--output needs TRANSPORT:DEST (oci-archive:, docker-archive:, oci:)}"; shift 2 ;;
    --strip-debug) strip_debug=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "build.sh: unknown argument: $1 (see --help)" >&2; exit 2 ;;
  esac
done

root="$(cd "$(dirname "$0")/../.." && pwd)"
if [ -z "$binary" ]; then
  binary="${CARGO_TARGET_DIR:-$root/target}/release/rattle"
fi
if [ ! -f "$binary" ] || [ ! -x "$binary" ]; then
  echo "build.sh: $binary is not an executable file; build it first (cargo build --release --locked)" >&2
  exit 2
fi
if ! command -v buildah >/dev/null 2>&1; then
  echo "build.sh: buildah is not installed (Debian: apt-get install buildah)" >&2
  exit 2
fi
if [ "$(id -u)" != 0 ] && [ -z "${_CONTAINERS_USERNS_CONFIGURED:-}" ]; then
  echo "build.sh: needs root to mount the image's filesystem; run: buildah unshare $0 $*" >&2
  exit 2
fi

# `rattle --version` prints "rattle X.Y.Z" (perhaps followed by more): the tag and the label.
version="$("$binary" --version | head -n 1 | awk '{print $2}')"
if [ -z "$version" ]; then
  echo "build.sh: $binary --version printed no version" >&2
  exit 2
fi
tag="${tag:-rattle:$version}"
case "$(uname -m)" in
  x86_64) arch=amd64 ;;
  aarch64) arch=arm64 ;;
  *) arch="$(uname -m)" ;;
esac

ctr="$(buildah from --quiet scratch)"
cleanup() { buildah rm "$ctr" >/dev/null 2>&1 || true; }
trap cleanup EXIT
rootfs="$(buildah mount "$ctr")"

if [ -n "$strip_debug" ]; then
  command -v objcopy >/dev/null 2>&1 || { echo "build.sh: --strip-debug needs objcopy (binutils)" >&2; exit 2; }
  mkdir -p "$rootfs/usr/local/bin"
  objcopy --strip-debug "$binary" "$rootfs/usr/local/bin/rattle"
  chmod 0755 "$rootfs/usr/local/bin/rattle"
else
  install -D -m 0755 "$binary" "$rootfs/usr/local/bin/rattle"
fi
# The shared libraries and the dynamic loader, at the paths the binary looks for them. A static
# binary has none ("not a dynamic executable" / "statically linked").
if ldd_out="$(ldd "$binary" 2>&1)"; then
  if printf '%s\n' "$ldd_out" | grep -q 'not found'; then
    echo "build.sh: $binary needs libraries this machine lacks:" >&2
    printf '%s\n' "$ldd_out" | grep 'not found' >&2
    exit 2
  fi
  libs="$(printf '%s\n' "$ldd_out" | grep -o '/[^ ]*' || true)"
else
  case "$ldd_out" in
    *"not a dynamic executable"*|*"statically linked"*) libs="" ;;
    *) echo "build.sh: ldd $binary failed: $ldd_out" >&2; exit 2 ;;
  esac
fi
for lib in $libs; do
  install -D -m 0755 "$(readlink -f "$lib")" "$rootfs$lib"
done

mkdir -p "$rootfs/etc" "$rootfs/tmp" "$rootfs/var/lib/rattle/reports" "$rootfs/var/lib/rattle/state"
chmod 1777 "$rootfs/tmp"
cat > "$rootfs/etc/passwd" <<'PASSWD'
root:x:0:0:root:/root:/sbin/nologin
rattle:x:65532:65532:rattle:/var/lib/rattle:/sbin/nologin
PASSWD
cat > "$rootfs/etc/group" <<'GROUP'
root:x:0:
rattle:x:65532:
GROUP
chown -R 65532:65532 "$rootfs/var/lib/rattle"
chmod 0755 "$rootfs/var/lib/rattle" "$rootfs/var/lib/rattle/reports"
# The journal refuses a state directory that others can write (issue #19).
chmod 0700 "$rootfs/var/lib/rattle/state"
buildah unmount "$ctr" >/dev/null

buildah config \
  --os linux --arch "$arch" \
  --entrypoint '["/usr/local/bin/rattle"]' \
  --cmd '["--help"]' \
  --user 65532:65532 \
  --workingdir /var/lib/rattle \
  --env PATH=/usr/local/bin \
  --env HOME=/var/lib/rattle \
  --env RATTLE_STATE_DIR=/var/lib/rattle/state \
  --volume /var/lib/rattle/reports \
  --volume /var/lib/rattle/state \
  --label org.opencontainers.image.title=rattle \
  --label org.opencontainers.image.description="Chaos engineering and resilience testing" \
  --label org.opencontainers.image.version="$version" \
  --label org.opencontainers.image.licenses=Apache-2.0 \
  --created-by "deploy/image/build.sh" \
  "$ctr"
buildah commit --quiet --format oci "$ctr" "$tag" >/dev/null
if [ -n "$output" ]; then
  buildah push --quiet "$tag" "$output"
fi
echo "built $tag from $binary"
buildah images --noheading --format '{{.Name}}:{{.Tag}} {{.ID}} {{.Size}}' "$tag"
