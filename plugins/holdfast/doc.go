// Command holdfast is a chained CNI plugin (the shape of the reference
// tuning plugin) that runs after the main plugin (bridge, or flannel which
// delegates to bridge) and:
//
//   - pins the pod interface's MAC to a locally administered unicast address
//     derived from network + pod namespace + pod name (internal/stablemac),
//     inside the pod netns, and reports it in the result, so peers' ARP
//     caches stay right when the pod's sandbox is re-created;
//   - records the attachment (pod, container ID, ifname, IPs, MAC, netns) as a
//     versioned statefile under <dataDir>/<network>/ (default dataDir
//     /var/lib/holdfast/cni) for the snapshot and for `holdfastd ipam show`;
//     DEL removes it, CHECK verifies the netns still has the recorded IP and
//     MAC, GC prunes records not in cni.dev/valid-attachments;
//   - with "overlay": {"device": "flannel.1"} configured, STATUS fails with
//     code 50 when the overlay device is missing or carries a MAC other than
//     the pinned VTEP MAC, and ADD first restores a missing overlay from the
//     network snapshot (once, under a file lock, however many ADDs arrive
//     together).
//
// It owns <dataDir> (records, holdfast.log, overlay.lock) and the MAC of the
// pod interface it is called for. It never touches other interfaces,
// addresses, routes or the IPAM state, and it never creates or deletes
// links; stdout carries only the CNI result or error.
package main
