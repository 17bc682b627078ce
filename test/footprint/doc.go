// Package footprint measures what holdfast costs a node at rest, each
// figure beside its baseline from the same run (docs/footprint.md):
//
//   - BenchmarkNodeFootprint: one harness node (real containerd) running
//     what a node runs: `holdfastd node` (the CRI shim and the snapshot
//     watcher) with a stock kubelet through the shim and 50 pods, and
//     `holdfastd agent` (the node DNS with 1,000 Services and a health unit
//     of 10 members; nine peers in the cloud netns). After an idle window it
//     reports the RSS, PSS and CPU of every holdfast process on the node, and kubelet's CPU through the shim
//     against kubelet's CPU straight to containerd (a second idle window,
//     same node, same pods).
//   - BenchmarkBinarySize: the sizes of bin/holdfastd, bin/holdfast,
//     bin/holdfast-ipam (what `make build` made) and of the compressed
//     image `make image` writes from them (install/image).
//
// The control plane is as small as the node needs: etcd and kube-apiserver
// in the cloud netns, a static token, no controller-manager or scheduler
// (the pods are created bound to the node).
package footprint
