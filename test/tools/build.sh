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
#
# etcd is Debian's etcd-server (/usr/bin/etcd).
#
# Usage: test/tools/build.sh            (from anywhere)
#        HOLDFAST_CACHE=/some/dir test/tools/build.sh
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
# flannel's udp backend is cgo on amd64 (gcc and libc6-dev come from make deps).
install_tool flannel github.com/flannel-io/flannel@v0.26.7 1
install_tool coredns github.com/coredns/coredns@v1.11.3

echo "e2e tools ready in $cache (built:${built:- nothing}; $(($(date +%s) - start))s)" >&2
