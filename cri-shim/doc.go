// Package crishim is holdfast's CRI shim: a CRI gRPC proxy between kubelet
// and containerd that records every pod sandbox and container config per pod
// UID and, after an offline reboot, relaunches the pods that were running,
// with the labels and annotations kubelet needs to adopt them when the cloud
// returns.
//
// Layers: proxy (the gRPC relay, knows nothing of pods), record (the durable
// per-pod records), relaunch (planning and running relaunches, restarting
// exited containers until kubelet adopts the pod). This package wires them:
// it intercepts the mutating CRI calls to record them and to answer kubelet
// with an already-relaunched sandbox or container instead of a duplicate.
//
// With --restore-volumes it also captures the pods' tmpfs-backed volumes
// (cri-shim/volumes, sealed with cri-shim/seal) and restores them before a
// relaunch: it reads, and after a reboot mounts, only the volume paths
// kubelet's own CreateContainer calls named.
//
// It owns the shim's socket (--listen) and its state dir (--state-dir). It
// never touches containerd's own state, CNI state or the network: pod IPs
// come back because holdfast-ipam pins them by pod name.
package crishim
