// Package harness builds throwaway multi-node edge sites out of network
// namespaces for holdfast's integration tests, with a real containerd per
// node.
//
// Topology (id is a short random id per site, so parallel runs never meet):
//
//	netns hf-<id>-lan     the site LAN: bridge "lan0", no address, no route out
//	  ├── veth ── netns hf-<id>-node1  eth0 198.51.100.11/24, pods 10.244.1.0/24
//	  ├── veth ── netns hf-<id>-node2  eth0 198.51.100.12/24, pods 10.244.2.0/24
//	  ├── ...
//	  └── veth ── netns hf-<id>-cloud  eth0 198.51.100.1/24 (WithCloud only)
//
// Every link is created from inside the LAN namespace, so the host's own
// interfaces, routes and iptables are never touched, and no namespace has a
// default route. Each node has a directory tree under the site directory:
//
//	<site>/<node>/run   the node's /run: containerd's config and state,
//	                    sockets, pod netns mounts, subnet.env (wiped by
//	                    Reboot, like tmpfs; StartContainerd rewrites the config)
//	<site>/<node>/var   the node's /var/lib: containerd root, holdfast state
//	                    (kept by Reboot)
//	<site>/<node>/etc   CNI config
//	<site>/<node>/logs  logs of processes started through Node.Start
//	<site>/<node>/boot_id  the node's boot id (changed by Reboot)
//
// Every node runs the containerd HOLDFAST_CONTAINERD picks: "1.6" (default,
// Debian's package, config version 2) or "2.1" (v2.1.5 from
// test/tools/build.sh, config version 3, its own runc shim first on PATH).
//
// Processes run inside a node with `nsenter --net=<netns path>`, never
// `ip netns exec`: the latter also unshares the mount namespace and remounts
// /sys, which hides the cgroup mounts runc needs.
//
// Cleanup always runs: through t.Cleanup, on SIGINT/SIGTERM, and — for runs
// that were SIGKILLed — through a sweep at the start of every NewSite that
// removes sites whose owning test process is gone. A site's owner is
// recorded in /run/hf-harness/<id>.json.
package harness
