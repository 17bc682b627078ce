// Package reboot is holdfast's headline scenario: a node of a three-node
// edge site reboots while cut off from the cloud and comes back with its
// pods, their IPs and MACs, the overlay and its neighbours' reachability,
// with no control plane. The integration test, test/scripts/
// reboot-recovery.sh and `make demo` all run Scenario.
//
// The node boot sequence used here is the one of docs/boot.md, in Boot:
// holdfastd snapshot restore → containerd → holdfastd cri (relaunch) →
// holdfastd snapshot watch.
package reboot
