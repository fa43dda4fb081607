#!/usr/bin/env bash
# Build the Go binaries Sluice's local cluster and tests need, cached by version.
#
#   hack/build-bins.sh [kube|etcd|kwok|helm|all]...
#
# Each binary lands in ~/.cache/sluice/bin/<name>-<version>/<name>; a binary that
# is already there is not rebuilt. k8s.io/kubernetes and etcd's server cannot be
# `go install`ed (their go.mod replaces modules with local paths), so they are
# built through a throwaway wrapper module that requires them and replaces each
# such module with its published version, derived from the go.mod the module
# proxy serves.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=versions.env
source "$here/versions.env"
CACHE=${SLUICE_CACHE:-$HOME/.cache/sluice}
BIN=$CACHE/bin
export CGO_ENABLED=0 GOFLAGS=-buildvcs=false
mkdir -p "$BIN"

log() { printf '[build-bins] %s\n' "$*" >&2; }

have() { [ -x "$BIN/$1-$2/$1" ]; }

# wrapper_module DIR MODULE VERSION STAGING_VERSION
# Create a module in DIR that requires MODULE@VERSION with every local-path
# replace of MODULE's go.mod turned into a replace by the published module at
# STAGING_VERSION (for k8s.io/kubernetes v1.X.Y the staging modules are v0.X.Y).
wrapper_module() {
  local dir=$1 mod=$2 ver=$3 stage_ver=$4
  rm -rf "$dir"; mkdir -p "$dir"
  local gomod
  gomod=$(cd "$dir" && go mod download -json "$mod@$ver" | jq -r .GoMod)
  local gover godebug
  gover=$(awk '$1=="go"{print $2; exit}' "$gomod")
  godebug=$(awk '$1=="godebug"{sub(/^godebug[ \t]+/,""); print}' "$gomod")
  (
    cd "$dir"
    printf 'module sluice.local/wrapper\n\ngo %s\n' "$gover" > go.mod
    # Keep upstream's GODEBUG defaults: without this, a wrapper at a newer go
    # line would switch them to that line's defaults.
    if [ -n "$godebug" ]; then printf 'godebug %s\n' "$godebug" >> go.mod; fi
    go mod edit -require "$mod@$ver"
    # Lines like "	k8s.io/api => ./staging/src/k8s.io/api" (inside a replace block)
    # or "replace go.etcd.io/etcd/api/v3 => ../api". Targets named
    # FORBIDDEN_DEPENDENCY are etcd's guards against bad imports, not modules.
    awk '{sub(/^replace[ \t]+/, "")} $2=="=>" && $3 ~ /^\.\.?\// && $3 !~ /FORBIDDEN/ {print $1}' "$gomod" \
      | sort -u | while read -r m; do
          local v=$stage_ver
          [ "$v" = same ] && v=$ver
          go mod edit -replace "$m=$m@$v"
        done
  )
}

build_kube() {
  local v=$KUBE_VERSION
  if have kube-apiserver "$v" && have kube-controller-manager "$v" && have kube-scheduler "$v"; then
    log "kube $v cached"; return
  fi
  local minor=${v#v1.}; minor=${minor%%.*}
  local stage="v0.${v#v1.}"
  local w=$CACHE/work/kube-$v
  log "building kube $v (staging modules at $stage); a cold build takes a long while"
  wrapper_module "$w" k8s.io/kubernetes "$v" "$stage"
  cat > "$w/tools.go" <<'GO'
//go:build tools

package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
)
GO
  local date; date=$(date -u +%Y-%m-%dT%H:%M:%SZ)
  local ld="-s -w"
  for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ld="$ld -X $p.gitVersion=$v -X $p.gitMajor=1 -X $p.gitMinor=$minor -X $p.gitTreeState=clean -X $p.buildDate=$date"
  done
  (
    cd "$w"
    go mod tidy -e >/dev/null 2>&1 || true
    go get -tags tools "k8s.io/kubernetes/cmd/kube-apiserver@$v" >/dev/null
    for c in kube-apiserver kube-controller-manager kube-scheduler; do
      mkdir -p "$BIN/$c-$v.tmp"
      log "go build $c"
      go build -trimpath -ldflags "$ld" -o "$BIN/$c-$v.tmp/$c" "k8s.io/kubernetes/cmd/$c"
      rm -rf "$BIN/$c-$v"; mv "$BIN/$c-$v.tmp" "$BIN/$c-$v"
    done
  )
}

build_etcd() {
  local v=$ETCD_VERSION
  if have etcd "$v"; then log "etcd $v cached"; return; fi
  local w=$CACHE/work/etcd-$v
  log "building etcd $v"
  wrapper_module "$w" go.etcd.io/etcd/server/v3 "$v" same
  cat > "$w/tools.go" <<'GO'
//go:build tools

package tools

import _ "go.etcd.io/etcd/server/v3"
GO
  local ld="-s -w"
  (
    cd "$w"
    go get -tags tools "go.etcd.io/etcd/server/v3@$v" >/dev/null
    mkdir -p "$BIN/etcd-$v.tmp"
    go build -trimpath -ldflags "$ld" -o "$BIN/etcd-$v.tmp/etcd" go.etcd.io/etcd/server/v3
    rm -rf "$BIN/etcd-$v"; mv "$BIN/etcd-$v.tmp" "$BIN/etcd-$v"
  )
}

go_install() { # name version package [ldflags]
  local name=$1 v=$2 pkg=$3 ld=${4:-}
  if have "$name" "$v"; then log "$name $v cached"; return; fi
  log "go install $pkg@$v"
  mkdir -p "$BIN/$name-$v.tmp"
  GOBIN="$BIN/$name-$v.tmp" go install -trimpath -ldflags "-s -w $ld" "$pkg@$v"
  rm -rf "$BIN/$name-$v"; mv "$BIN/$name-$v.tmp" "$BIN/$name-$v"
}

# Helm's built-in default Kubernetes version (for `helm template` and lint
# without a cluster) is 1.20 unless stamped; stamp the version we run.
helm_kube_ldflags() {
  local minor=${KUBE_VERSION#v1.}; minor=${minor%%.*}
  local p
  for p in helm.sh/helm/v3/pkg/chartutil helm.sh/helm/v3/pkg/lint/rules; do
    printf -- '-X %s.k8sVersionMajor=1 -X %s.k8sVersionMinor=%s ' "$p" "$p" "$minor"
  done
}

build_kwok() {
  go_install kwok "$KWOK_VERSION" sigs.k8s.io/kwok/cmd/kwok
  # The kwok binary does nothing without Stage definitions. Use the ones the
  # kwok module itself ships (node initialise, lease heartbeat, pod lifecycle).
  local stages=$BIN/kwok-$KWOK_VERSION/stages
  if [ ! -s "$stages/stages.yaml" ]; then
    local dir
    dir=$(cd /tmp && go mod download -json "sigs.k8s.io/kwok@$KWOK_VERSION" | jq -r .Dir)
    mkdir -p "$stages"
    for f in "$dir"/kustomize/stage/node/fast/node-*.yaml \
             "$dir"/kustomize/stage/node/heartbeat-with-lease/node-*.yaml \
             "$dir"/kustomize/stage/pod/fast/pod-*.yaml; do
      printf -- '---\n'; cat "$f"
    done > "$stages/stages.yaml.tmp"
    mv "$stages/stages.yaml.tmp" "$stages/stages.yaml"
  fi
}
build_helm() {
  go_install helm "$HELM_VERSION" helm.sh/helm/v3/cmd/helm \
    "-X helm.sh/helm/v3/internal/version.version=$HELM_VERSION -X helm.sh/helm/v3/internal/version.gitTreeState=clean $(helm_kube_ldflags)"
}

# The Gateway API CRDs (standard channel) from the sigs.k8s.io/gateway-api
# module, for tests and the demo; they are installed into the local cluster at
# test time and never copied into the repository.
fetch_gateway_crds() {
  local v=$GATEWAY_API_VERSION out=$CACHE/gateway-api-$GATEWAY_API_VERSION
  if [ -s "$out/standard.yaml" ]; then log "gateway-api $v cached"; return; fi
  local dir
  dir=$(cd /tmp && go mod download -json "sigs.k8s.io/gateway-api@$v" | jq -r .Dir)
  mkdir -p "$out"
  for f in "$dir"/config/crd/standard/*.yaml; do printf -- '---\n'; cat "$f"; done > "$out/standard.yaml.tmp"
  mv "$out/standard.yaml.tmp" "$out/standard.yaml"
}

[ $# -gt 0 ] || set -- all
for what in "$@"; do
  case $what in
    kube) build_kube ;;
    etcd) build_etcd ;;
    kwok) build_kwok ;;
    helm) build_helm ;;
    gateway) fetch_gateway_crds ;;
    all) build_kwok; build_etcd; fetch_gateway_crds; build_helm; build_kube ;;
    *) echo "unknown target: $what" >&2; exit 2 ;;
  esac
done
