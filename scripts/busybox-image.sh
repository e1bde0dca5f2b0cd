#!/usr/bin/env bash
# Builds a small container image from Debian's busybox-static, offline, and
# writes it as an OCI archive (a tar of an OCI image layout) — the format
# `berth import` reads and `skopeo copy oci-archive:` writes.
#
#   scripts/busybox-image.sh OUT.tar [NAME]     NAME: localhost/berth/busybox:1.35
#
# The image: /bin/busybox plus a symlink per applet (sh, httpd, …), /etc
# passwd and group files, empty /tmp, /proc, /sys, /dev. One gzip layer,
# built reproducibly (sorted entries, owner 0, every time the busybox
# binary's own mtime), so the same busybox package gives the same digest.
set -euo pipefail

out=${1:?usage: $0 OUT.tar [NAME]}
name=${2:-localhost/berth/busybox:1.35}
busybox=/bin/busybox
# The dynamic `busybox` package installs /bin/busybox too; an image needs
# the static one.
if ! dpkg -S "$busybox" 2>/dev/null | grep -q '^busybox-static:'; then
  echo "$busybox is not from Debian's busybox-static: apt-get install busybox-static" >&2
  exit 1
fi

case $(dpkg --print-architecture) in
  amd64) arch=amd64 ;;
  arm64) arch=arm64 ;;
  *) echo "unsupported architecture $(dpkg --print-architecture)" >&2; exit 1 ;;
esac

# Dated like the busybox package, which keeps the build reproducible.
epoch=$(stat -c %Y "$busybox")
created=$(date -u -d "@$epoch" +%Y-%m-%dT%H:%M:%SZ)

work=$(mktemp -d -t berth-image.XXXXXX)
trap 'rm -rf "$work"' EXIT
root=$work/rootfs layout=$work/layout
mkdir -p "$root"/{bin,etc,proc,sys,dev,root} "$root/tmp" "$layout/blobs/sha256"
chmod 1777 "$root/tmp"
chmod 700 "$root/root"
cp "$busybox" "$root/bin/busybox"
for applet in $("$busybox" --list); do
  [[ $applet == busybox ]] || ln -s busybox "$root/bin/$applet"
done
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' >"$root/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' >"$root/etc/group"

# A blob into the layout; prints "<hex> <size>".
add_blob() {
  local hex size
  hex=$(sha256sum "$1" | cut -d' ' -f1)
  size=$(stat -c %s "$1")
  mv "$1" "$layout/blobs/sha256/$hex"
  echo "$hex $size"
}

tar --sort=name --owner=0 --group=0 --numeric-owner --mtime=@$epoch \
  -C "$root" -cf "$work/layer.tar" .
diff_id=$(sha256sum "$work/layer.tar" | cut -d' ' -f1)
gzip -n -9 "$work/layer.tar"
read -r layer_hex layer_size < <(add_blob "$work/layer.tar.gz")

cat >"$work/config.json" <<EOF
{"architecture":"$arch","os":"linux","created":"$created","config":{"Env":["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],"Cmd":["sh"]},"rootfs":{"type":"layers","diff_ids":["sha256:$diff_id"]},"history":[{"created":"$created","created_by":"scripts/busybox-image.sh (Debian busybox-static)"}]}
EOF
read -r config_hex config_size < <(add_blob "$work/config.json")

cat >"$work/manifest.json" <<EOF
{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:$config_hex","size":$config_size},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"sha256:$layer_hex","size":$layer_size}]}
EOF
read -r manifest_hex manifest_size < <(add_blob "$work/manifest.json")

tag=${name##*:}
[[ $tag == "$name" || $tag == */* ]] && tag=latest
cat >"$layout/index.json" <<EOF
{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:$manifest_hex","size":$manifest_size,"platform":{"architecture":"$arch","os":"linux"},"annotations":{"io.containerd.image.name":"$name","org.opencontainers.image.ref.name":"$tag"}}]}
EOF
echo '{"imageLayoutVersion":"1.0.0"}' >"$layout/oci-layout"

tar --sort=name --owner=0 --group=0 --numeric-owner --mtime=@$epoch -C "$layout" -cf "$out.tmp" .
mv "$out.tmp" "$out"
echo "$name: $out (manifest sha256:$manifest_hex)"
