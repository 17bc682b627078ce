#!/usr/bin/env bash
# demo.sh — `make demo`: holdfast's offline reboot recovery, for a person.
set -euo pipefail
cd "$(dirname "$0")/../.."
cat <<'INTRO'
holdfast demo: a three-node edge site in network namespaces, each node with
its own containerd, the flannel VXLAN overlay, and holdfast (sticky IPAM +
chained CNI plugin, network snapshot, CRI shim). We run three pods on every
node, cut node2 from the cloud, power-cycle it, and time what comes back.

INTRO
start=$(date +%s)
status=0
test/scripts/reboot-recovery.sh --nodes 3 --pods-per-node 3 --reboots 1 --json _output/demo.json "$@" || status=$?
echo
echo "demo took $(( $(date +%s) - start )) s; report in _output/demo.json"
exit $status
