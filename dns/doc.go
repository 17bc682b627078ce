// Package dns is holdfast's per-node DNS: a server on a link-local address
// (169.254.20.10 on holdfast-dns0) that answers cluster names from a
// persisted snapshot of Services and EndpointSlices — offline, and right
// after an offline reboot before any apiserver is reachable — keeps
// endpoints on nodes that peers vote alive, and forwards every other name
// upstream with a serve-stale cache. See README.md for syntax and behaviour.
//
// Layers, each its own package:
//
//	store     the snapshot: compact Service/EndpointSlice model, statefile
//	          persistence (debounced, atomic), seed-file loader
//	watch     informers (internal/kubeclient) feeding the store; apiserver reachability
//	verdicts  poller of holdfastd health's verdict endpoint
//	resolve   pure name → records index (no sockets)
//	forward   upstream forwarding with a serve-stale cache
//	server    miekg/dns UDP+TCP server, the holdfast-dns0 link, metrics
//
// It owns /var/lib/holdfast/dns and the holdfast-dns0 link with its address.
// It never touches other links, routes or iptables rules, never writes to
// the apiserver, and never edits resolv.conf or kubelet's configuration
// (holdfastd install points kubelet's clusterDNS at it).
package dns
