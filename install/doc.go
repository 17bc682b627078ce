// Package install wires holdfast into a node that already runs kubelet,
// containerd and a CNI network (flannel or bridge), and undoes it exactly.
//
// It owns: the holdfast binaries it copies (CNI bin dir, holdfastd), the
// chained conflist it adds before the runtime's current one, the two kubelet
// values it edits (CRI endpoint, clusterDNS) in the KubeletConfiguration or
// kubeadm's flags file, the holdfast systemd units and their enablement
// symlinks, and its install record (/var/lib/holdfast/install/record.json,
// a statefile) with byte-exact backups of every file it changed.
//
// It never touches: the original conflist (left byte-identical), any other
// kubelet field or comment, containerd's config, other components' state
// under /var/lib/holdfast, or running services (it does not call systemctl
// or restart kubelet; it prints what to run).
//
// Every run first computes a complete plan from the files on disk and
// refuses, changing nothing, if any input is malformed. A plan is applied by
// writing backups, then the record, then each file atomically; a failure
// half-way rolls back what was applied.
package install
