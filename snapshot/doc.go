// Package snapshot captures a node's overlay network and puts it back after
// an offline reboot, with no control plane.
//
// It owns: the snapshot files in its directory (snapshot.json, the previous
// good generation snapshot.prev.json, and the VTEP MAC pins of
// internal/vtepmac), and, when restoring, the creation of what is missing in
// the node's network namespace: each VXLAN device (created with its pinned
// MAC in the link-add request), its addresses, the routes through it, its FDB
// entries, its permanent neighbour entries, flannel's subnet.env and the
// selected iptables chains (FLANNEL-* and KUBE-* in nat and filter, with the
// jump rules into them from the built-in chains) and the selected nftables
// tables, whole (kube-proxy's ip/ip6 kube-proxy, flannel's ip flannel-ipv4 /
// ip6 flannel-ipv6).
//
// It never touches: any other link, route, neighbour, iptables chain or
// nftables table; a nftables table that exists live (it is its owner's); a live
// entry that differs from the snapshot (live state is newer: it is kept and
// reported as skipped); anything outside the network namespace it runs in.
// It never deletes anything.
//
// Layout: types.go is the schema, store.go the files, the kernel_*.go and
// iptables.go / subnetenv.go files are the device layer (one small unit per
// kernel entry kind: read the live entries, add one entry), plan.go is the
// pure "what belongs to this node / what is missing" logic, and capture.go /
// restore.go put them together. The package imports no grpc, client-go or
// prometheus so that the chained CNI plugin can call Restore; the watch
// daemon lives in snapshot/watch.
package snapshot
