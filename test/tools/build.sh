#!/bin/sh
# Builds the stock binaries the full e2e (test/e2e) runs, into a git-ignored
# cache under the repository root, and skips whatever is already built:
#
#   .cache/k8s-v1.34.4/{kube-apiserver,kube-controller-manager,kube-scheduler,kubelet,kube-proxy}
#       from k8s.io/kubernetes v1.34.4 (this module's go.mod, with the staging
#       replace lines; kept apart so k8s.io/kubernetes never enters the main
#       module's graph)
#   .cache/tools/flannel   github.com/flannel-io/flannel@v0.26.7
#   .cache/tools/coredns   github.com/coredns/coredns@v1.11.3
#   .cache/containerd-v2.1.5/{containerd,containerd-shim-runc-v2,ctr}
#       from test/tools/containerd/go.mod (HOLDFAST_CONTAINERD=2.1; a
#       wrapper module because `go install …@version` refuses containerd's,
#       which has exclude directives)
#   .cache/critest-v1.34.0/critest.test
#       sigs.k8s.io/cri-tools v1.34.0's cmd/critest as a test binary, built
#       in a copy of its module from the module cache (critest is a Ginkgo
#       suite in a _test package)
#
# etcd is Debian's etcd-server (/usr/bin/etcd).
#
# Usage: test/tools/build.sh [PART...]   (from anywhere; default: every part)
#        HOLDFAST_CACHE=/some/dir test/tools/build.sh
# PART is k8s, tools (flannel, coredns), containerd or critest.
# A cold build takes several minutes on 2 cores; a warm run (everything
# present, go.mod unchanged) returns in well under a second.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
cache=${HOLDFAST_CACHE:-$root/.cache}
k8sver=v1.34.4
k8sdir=$cache/k8s-$k8sver
tooldir=$cache/tools
mkdir -p "$k8sdir" "$tooldir"

export CGO_ENABLED=0 GOWORK=off GOFLAGS=-buildvcs=false
ldflags='-s -w'

start=$(date +%s)
built=""

# The k8s binaries are stamped with the go.mod/go.sum they were built from,
# so changing the pins rebuilds them.
build_k8s() {
stamp=$(cat "$here/go.mod" "$here/go.sum" | sha256sum | cut -c1-16)
for cmd in kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy; do
	if [ -x "$k8sdir/$cmd" ] && [ "$(cat "$k8sdir/.$cmd.stamp" 2>/dev/null)" = "$stamp" ]; then
		continue
	fi
	echo "building $cmd $k8sver ..." >&2
	t0=$(date +%s)
	(cd "$here" && go build -trimpath -ldflags="$ldflags" -o "$k8sdir/$cmd.tmp" "k8s.io/kubernetes/cmd/$cmd")
	mv "$k8sdir/$cmd.tmp" "$k8sdir/$cmd"
	echo "$stamp" >"$k8sdir/.$cmd.stamp"
	echo "built $cmd in $(($(date +%s) - t0))s" >&2
	built="$built $cmd"
done
}

# go install names the binary after the module's last path element.
install_tool() { # name module@version [CGO_ENABLED]
	if [ -x "$tooldir/$1" ]; then
		return
	fi
	echo "installing $2 ..." >&2
	t0=$(date +%s)
	(cd "$tooldir" && CGO_ENABLED=${3:-0} GOBIN="$tooldir" go install -trimpath -ldflags="$ldflags" "$2")
	echo "built $1 in $(($(date +%s) - t0))s" >&2
	built="$built $1"
}
build_tools() {
# flannel's udp backend is cgo on amd64 (gcc and libc6-dev come from make deps).
install_tool flannel github.com/flannel-io/flannel@v0.26.7 1
install_tool coredns github.com/coredns/coredns@v1.11.3
}

# containerd 2.x, stamped like the k8s binaries: a changed pin rebuilds it.
build_containerd() {
ctrmod=$here/containerd
ctrver=$(awk '$1 == "github.com/containerd/containerd/v2" { print $2 }' "$ctrmod/go.mod")
ctrdir=$cache/containerd-$ctrver
ctrstamp=$(cat "$ctrmod/go.mod" "$ctrmod/go.sum" | sha256sum | cut -c1-16)
mkdir -p "$ctrdir"
for cmd in containerd containerd-shim-runc-v2 ctr; do
	if [ -x "$ctrdir/$cmd" ] && [ "$(cat "$ctrdir/.$cmd.stamp" 2>/dev/null)" = "$ctrstamp" ]; then
		continue
	fi
	echo "building $cmd $ctrver ..." >&2
	t0=$(date +%s)
	(cd "$ctrmod" && go build -trimpath -tags "no_btrfs no_devmapper no_zfs" -ldflags="$ldflags" \
		-o "$ctrdir/$cmd.tmp" "github.com/containerd/containerd/v2/cmd/$cmd")
	mv "$ctrdir/$cmd.tmp" "$ctrdir/$cmd"
	echo "$ctrstamp" >"$ctrdir/.$cmd.stamp"
	echo "built $cmd in $(($(date +%s) - t0))s" >&2
	built="$built $cmd"
done
}

# critest: a Ginkgo test binary, so `go test -c` in a writable copy of the
# module (the module cache is read-only).
build_critest() {
	critestver=v1.34.0
	critestdir=$cache/critest-$critestver
	if [ -x "$critestdir/critest.test" ]; then
		return
	fi
	echo "building critest $critestver ..." >&2
	t0=$(date +%s)
	src=$(cd /tmp && GOFLAGS=-mod=mod go mod download -json "sigs.k8s.io/cri-tools@$critestver" | awk -F'"' '$2 == "Dir" { print $4 }')
	work=$(mktemp -d)
	trap 'rm -rf "$work"' EXIT
	cp -r "$src/." "$work/" && chmod -R u+w "$work"
	mkdir -p "$critestdir"
	(cd "$work" && GOFLAGS="-mod=mod -buildvcs=false" go test -c -trimpath -ldflags="$ldflags" -o "$critestdir/critest.test.tmp" ./cmd/critest)
	mv "$critestdir/critest.test.tmp" "$critestdir/critest.test"
	echo "built critest in $(($(date +%s) - t0))s" >&2
	built="$built critest"
}

for part in ${@:-k8s tools containerd critest}; do
	case $part in
	k8s | tools | containerd | critest) "build_$part" ;;
	*) echo "build.sh: unknown part $part (want k8s, tools, containerd or critest)" >&2; exit 2 ;;
	esac
done

echo "e2e tools ready in $cache (built:${built:- nothing}; $(($(date +%s) - start))s)" >&2
