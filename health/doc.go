// Package health is the holdfastd health daemon: it wires the member list
// (health/members; from a file, or from Node objects and then kept current
// by following Node changes, applied without a restart), the peer engine (health/peer over health/protocol and
// health/vote), a UDP socket for views and an HTTP server for /v1/verdicts,
// /healthz and /metrics, both on the health port; it persists the member
// list, the sequence epoch and the last verdicts under the state dir.
//
// It owns /var/lib/holdfast/health and the health port. It never touches
// Node taints or endpoints (the webhook, health/webhook, does that on the
// cloud side) and never reads other nodes' Leases.
package health
