// Package webhook is the cloud-side half of holdfast health: a mutating
// admission webhook that applies the decision table in docs/health.md —
// the unit's verdicts (computed here from the signed views nodes write to
// their Leases holdfast-view-<node> in holdfast-system), the policy and the
// nodes' autonomy durations — to Node taints, EndpointSlices and Endpoints,
// and gives every new Pod its toleration of holdfast.dev/retained (the
// per-pod opt-out). Its Controller, run by one elected replica, shows the
// decision on each Node (condition holdfast.dev/PeerVerdict, Events) and
// keeps the holdfast.dev/retained taint.
//
// It owns the admission responses (JSON patches), that condition and that
// taint. It never trusts a view whose signature does not verify with the
// key published on the writer's Node, never touches the objects of nodes
// whose Ready condition is True (beyond the condition and removing its own
// taint), and never deletes a pod: evictions stay the stock taint-eviction
// controller's.
package webhook

import (
	"crypto/ed25519"
	"encoding/base64"
	"fmt"
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
	// LeaderLease elects the webhook replica that runs the Controller.
	LeaderLease = "holdfast-webhook"
)

// Tally is the vote on one node as the webhook counted it.
type Tally struct {
	Verdict     protocol.State
	Alive, Dead int           // fresh verified views saying so
	Views       int           // fresh verified views of the node's unit
	Members     int           // the unit's keyed members
	Age         time.Duration // of the oldest counted view (0 without views)
}

// String says how the verdict came about, e.g. "alive by 4 of 5 peers,
// views 3 s old" (the Node condition's message).
func (t Tally) String() string {
	if t.Members == 0 {
		return "not a health member (no " + PublicKeyAnnotation + ")"
	}
	age := fmt.Sprintf("views %d s old", int(t.Age.Round(time.Second).Seconds()))
	switch t.Verdict {
	case protocol.Alive:
		return fmt.Sprintf("alive by %d of %d peers, %s", t.Alive, t.Members, age)
	case protocol.Dead:
		return fmt.Sprintf("dead by %d of %d peers, %s", t.Dead, t.Members, age)
	}
	if t.Views < vote.Quorum(t.Members) {
		return fmt.Sprintf("no quorum: %d of %d peers' views fresh, %d needed", t.Views, t.Members, vote.Quorum(t.Members))
	}
	return fmt.Sprintf("no majority: alive %d, dead %d of %d peers, %s", t.Alive, t.Dead, t.Members, age)
}

// ComputeVerdicts returns every keyed node's verdict from the Lease views:
// for node X in unit U of N keyed members, alive (dead) when ⌊N/2⌋+1 fresh,
// verified views of U's members say so, unknown without a fresh quorum.
// A Lease is fresh while renewTime + leaseDurationSeconds is after now.
// Nodes without a key have no entry.
func ComputeVerdicts(nodes []corev1.Node, leases []coordv1.Lease, unitLabel string, now time.Time) map[string]Tally {
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
	// Verified fresh views per unit, and the oldest one's time.
	views := map[string][][]protocol.State{}
	oldest := map[string]time.Time{}
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
		if o, ok := oldest[m.unit]; !ok || msg.Time.Before(o) {
			oldest[m.unit] = msg.Time
		}
	}
	out := map[string]Tally{}
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
			t := Tally{Verdict: vote.Decide(len(names), len(views[u]), alive, dead, protocol.Unknown),
				Alive: alive, Dead: dead, Views: len(views[u]), Members: len(names)}
			if o, ok := oldest[u]; ok && now.After(o) {
				t.Age = now.Sub(o)
			}
			out[n] = t
		}
	}
	return out
}
