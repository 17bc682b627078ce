// Package critest runs the CRI validation suite (critest from
// sigs.k8s.io/cri-tools, built by test/tools/build.sh) against a harness
// node's containerd twice — straight to containerd and through
// `holdfastd cri` — and checks the per-spec results are equal. Run it with
// HOLDFAST_CONTAINERD=1.6 or 2.1 to pick the containerd.
package critest
