// Package webhook is the cloud-side half of holdfast health: a mutating
// admission webhook that applies the unit's verdicts (computed here from the
// signed views nodes write to their Leases holdfast-view-<node> in
// holdfast-system) to Node taints, EndpointSlices and Endpoints, per the
// decision table in docs/health.md.
//
// It owns the admission responses (JSON patches). It never writes to the
// apiserver itself, never trusts a view whose signature does not verify
// with the key published on the writer's Node, and never touches objects of
// nodes whose Ready condition is True.
package webhook

import (
	"crypto/ed25519"
	"encoding/base64"
	"sort"
	"time"

	coordv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"

	"github.com/holdfast-edge/holdfast/health/protocol"
	"github.com/holdfast-edge/holdfast/health/vote"
)

// Names shared with the daemon (health package).
const (
	Namespace           = "holdfast-system"
	LeasePrefix         = "holdfast-view-"
	PublicKeyAnnotation = "holdfast.dev/health-public-key"
	ViewAnnotation      = "holdfast.dev/view"
)

// ComputeVerdicts returns every keyed node's verdict from the Lease views:
// for node X in unit U of N keyed members, alive (dead) when ⌊N/2⌋+1 fresh,
// verified views of U's members say so, unknown without a fresh quorum.
// A Lease is fresh while renewTime + leaseDurationSeconds is after now.
func ComputeVerdicts(nodes []corev1.Node, leases []coordv1.Lease, unitLabel string, now time.Time) map[string]protocol.State {
	type member struct {
		unit string
		key  ed25519.PublicKey
	}
	mem := map[string]member{}
	units := map[string][]string{}
	for _, n := range nodes {
		k, err := base64.StdEncoding.DecodeString(n.Annotations[PublicKeyAnnotation])
		if err != nil || len(k) != ed25519.PublicKeySize {
			continue
		}
		u := n.Labels[unitLabel]
		mem[n.Name] = member{u, ed25519.PublicKey(k)}
		units[u] = append(units[u], n.Name)
	}
	index := map[string]int{}
	digests := map[string]uint32{}
	for u, names := range units {
		sort.Strings(names)
		for i, n := range names {
			index[n] = i
		}
		digests[u] = protocol.MemberDigest(names)
	}
	// Verified fresh views per unit.
	views := map[string][][]protocol.State{}
	for _, l := range leases {
		if l.Namespace != Namespace || len(l.Name) <= len(LeasePrefix) || l.Name[:len(LeasePrefix)] != LeasePrefix {
			continue
		}
		writer := l.Name[len(LeasePrefix):]
		m, ok := mem[writer]
		if !ok || l.Spec.RenewTime == nil || l.Spec.LeaseDurationSeconds == nil {
			continue
		}
		if !l.Spec.RenewTime.Add(time.Duration(*l.Spec.LeaseDurationSeconds) * time.Second).After(now) {
			continue
		}
		raw, err := base64.StdEncoding.DecodeString(l.Annotations[ViewAnnotation])
		if err != nil {
			continue
		}
		msg, err := protocol.Decode(raw)
		if err != nil || msg.Sender != writer || msg.Unit != m.unit || msg.Kind != protocol.ViewFull ||
			msg.MemberDigest != digests[m.unit] || len(msg.Full) != len(units[m.unit]) {
			continue
		}
		if msg.Verify(protocol.Ed25519Verifier{}, m.key) != nil {
			continue
		}
		views[m.unit] = append(views[m.unit], msg.Full)
	}
	out := map[string]protocol.State{}
	for u, names := range units {
		for _, n := range names {
			alive, dead := 0, 0
			for _, v := range views[u] {
				switch v[index[n]] {
				case protocol.Alive:
					alive++
				case protocol.Dead:
					dead++
				}
			}
			out[n] = vote.Decide(len(names), len(views[u]), alive, dead, protocol.Unknown)
		}
	}
	return out
}
