#!/usr/bin/env bash
# reboot-recovery.sh — bring up an edge site in network namespaces, cut
# node2's cloud link, reboot node2 (simulated power cycle) and print the
# recovery timeline. Exits non-zero when any check fails.
set -euo pipefail

usage() {
	cat <<USAGE
Usage: $0 [--nodes N] [--pods-per-node N] [--reboots N] [--json FILE] [--keep]

  --nodes N          nodes in the site (default 3, at least 3)
  --pods-per-node N  pods on every node (default 3)
  --reboots N        offline reboots of node2 in a row (default 1)
  --json FILE        write the report ({"pods", "same_ips", ..., "timeline"}) to FILE
  --keep             leave the site running for inspection (ip netns list | grep hf-);
                     the next test run sweeps it
Needs root; run 'make deps build cni-plugins' first (make demo does).
USAGE
}

nodes=3 pods=3 reboots=1 json="" keep=false
while [ $# -gt 0 ]; do
	case "$1" in
	--nodes) nodes=$2; shift 2 ;;
	--pods-per-node) pods=$2; shift 2 ;;
	--reboots) reboots=$2; shift 2 ;;
	--json) json=$2; shift 2 ;;
	--keep) keep=true; shift ;;
	-h|--help) usage; exit 0 ;;
	*) echo "unknown argument: $1" >&2; usage >&2; exit 2 ;;
	esac
done
if [ "$(id -u)" != 0 ]; then echo "$0: needs root (network namespaces, containerd)" >&2; exit 1; fi

cd "$(dirname "$0")/../.."
mkdir -p _output
go test -c -o _output/reboot.test ./test/reboot
args=(-test.run '^TestOfflineRebootRecovery$' -test.timeout 30m
	-nodes "$nodes" -pods-per-node "$pods" -reboots "$reboots" -narrate -keep="$keep")
[ -n "$json" ] && args+=(-json "$(realpath -m "$json")")
exec _output/reboot.test "${args[@]}"
