#!/usr/bin/env bash
# Installs what berth needs on a fresh Debian 12 machine, from Debian's
# packages only. Idempotent: it runs apt-get only when something is missing.
#   scripts/install-deps.sh           runtime + test dependencies
#   scripts/install-deps.sh --bench   also hyperfine, to compare
set -euo pipefail

packages=(
  python3-jsonschema python3-yaml          # examples are checked against the Kubernetes schemas
  runc crun runsc nftables iproute2        # what the agent runs on (runsc: gVisor)
  busybox-static skopeo docker-registry    # test and demo images, a real registry
  containernetworking-plugins              # the cni driver's tests
  curl jq                                  # demo and tests talk HTTP
  git                                      # the GitOps example (examples/gitops) and its test
  openssl apache2-utils                    # test registries: TLS certs, htpasswd -B
  podman containerd                        # read `berth export` archives in the tests
  python3-prometheus-client                # the metrics test parses /metrics with a real parser
)
if [[ "${1:-}" == "--bench" ]]; then
  # catatonit: the pause process podman builds its pod infra image from
  packages+=(hyperfine catatonit)
fi

missing=()
for pkg in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
  echo "installing: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # policy-rc.d (if present) keeps the packages' own services (docker-registry
  # on :5000, containerd) from starting: tests start their own, on loopback.
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
command -v cargo-nextest >/dev/null || cargo install --locked cargo-nextest
