package webhook

import (
	"fmt"
	"log/slog"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/holdfast-edge/holdfast/health/protocol"
)

// Policy is the webhook's policy (--policy).
type Policy string

const (
	// Verdicts applies the decision table: the peers' verdicts decide.
	Verdicts Policy = "verdicts"
	// AlwaysRetain keeps every not-Ready node's pods without consulting
	// health (bounded only by the autonomy duration).
	AlwaysRetain Policy = "always-retain"
)

// ParsePolicy validates a --policy value.
func ParsePolicy(s string) (Policy, error) {
	switch Policy(s) {
	case Verdicts, AlwaysRetain:
		return Policy(s), nil
	}
	return "", fmt.Errorf("policy %q: want verdicts or always-retain", s)
}

// NoQuorumPolicy is what to do when a node's unit has no fresh quorum.
type NoQuorumPolicy string

const (
	Retain NoQuorumPolicy = "retain" // treat as alive: keep the node's pods
	Evict  NoQuorumPolicy = "evict"  // treat as dead: normal Kubernetes
)

// ParseNoQuorumPolicy validates a --no-quorum-policy value.
func ParseNoQuorumPolicy(s string) (NoQuorumPolicy, error) {
	switch NoQuorumPolicy(s) {
	case Retain, Evict:
		return NoQuorumPolicy(s), nil
	}
	return "", fmt.Errorf("no-quorum policy %q: want retain or evict", s)
}

// Reason is the row of the decision table that applies to a node; it is
// the reason of the Node condition holdfast.dev/PeerVerdict.
type Reason string

const (
	VotedAlive         Reason = "VotedAlive"
	VotedDead          Reason = "VotedDead"
	NoQuorum           Reason = "NoQuorum"
	ReasonAlwaysRetain Reason = "AlwaysRetain"
	DurationExpired    Reason = "DurationExpired"
)

// Reasons lists every reason (metrics are labelled by them).
var Reasons = []Reason{VotedAlive, VotedDead, NoQuorum, ReasonAlwaysRetain, DurationExpired}

// Names on the Node and the Pod.
const (
	// DurationAnnotation on a Node bounds how long holdfast keeps its pods
	// after its Ready condition left True (a Go duration; 0: forever).
	DurationAnnotation = "holdfast.dev/autonomy-duration"
	// OptOutAnnotation "false" on a Pod: evicted and dropped from
	// endpoints on the normal schedule even on a node holdfast keeps.
	OptOutAnnotation = "holdfast.dev/autonomy"
	// ConditionType is the Node condition that shows the decision.
	ConditionType corev1.NodeConditionType = "holdfast.dev/PeerVerdict"
	// RetainedTaint is the NoExecute taint a kept node carries while pods
	// that opted out run on it; every other pod tolerates it (see
	// PodPatch), so only the opted-out ones are evicted, by the stock
	// taint-eviction controller.
	RetainedTaint = "holdfast.dev/retained"
)

// NodeInfo is what the decision needs to know about a node.
type NodeInfo struct {
	Name  string
	Ready bool // Ready condition True
	// NotReadySince is the Ready condition's lastTransitionTime when it
	// is not True (zero when the node has no Ready condition).
	NotReadySince time.Time
	// Duration is the holdfast.dev/autonomy-duration annotation ("" when absent).
	Duration string
	Tally    Tally
}

// InfoOf reads a Node object; the tally comes from the Leases.
func InfoOf(n *corev1.Node, t Tally) NodeInfo {
	info := NodeInfo{Name: n.Name, Duration: n.Annotations[DurationAnnotation], Tally: t}
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			info.Ready = c.Status == corev1.ConditionTrue
			if !info.Ready {
				info.NotReadySince = c.LastTransitionTime.Time
			}
		}
	}
	return info
}

// Decision is the outcome of the decision table for one node.
type Decision struct {
	// Keep: drop the controller's NoExecute taints and keep the pods'
	// endpoints ready (only ever true for a not-Ready node).
	Keep   bool
	Ready  bool
	Reason Reason
	// Status is the peers' verdict as a condition status.
	Status corev1.ConditionStatus
	// Summary is the condition message without the views' age (it changes
	// only when the decision does); Message is the full one.
	Summary, Message string
}

// Decider applies the decision table of docs/health.md.
type Decider struct {
	Policy   Policy
	NoQuorum NoQuorumPolicy
	// Duration is the autonomy duration of nodes without the annotation
	// (0: forever).
	Duration time.Duration
	// Log records each bad annotation value once.
	Log    *slog.Logger
	logged sync.Map // node name → bad value already logged
}

// Decide is the decision table, in order: Ready → normal Kubernetes;
// offline beyond the autonomy duration → DurationExpired (every policy,
// quorum or not); always-retain → kept; else the verdict: alive kept, dead
// released, none by the no-quorum policy.
func (d *Decider) Decide(n NodeInfo, now time.Time) Decision {
	t := n.Tally
	dec := Decision{Ready: n.Ready, Status: conditionStatus(t.Verdict), Reason: verdictReason(t.Verdict)}
	votes := t.String()
	if n.Ready {
		dec.Summary, dec.Message = "node Ready: "+stable(t), "node Ready: "+votes
		return dec
	}
	limit := d.duration(n)
	var left time.Duration
	if limit > 0 && !n.NotReadySince.IsZero() {
		off := now.Sub(n.NotReadySince)
		if off >= limit {
			dec.Reason = DurationExpired
			head := fmt.Sprintf("normal Kubernetes: not Ready since %s, beyond autonomy-duration %v", n.NotReadySince.UTC().Format(time.RFC3339), limit)
			dec.Summary, dec.Message = head+"; "+stable(t), head+"; "+votes
			return dec
		}
		left = limit - off
	}
	switch {
	case d.Policy == AlwaysRetain:
		dec.Keep, dec.Reason = true, ReasonAlwaysRetain
	case t.Verdict == protocol.Alive:
		dec.Keep = true
	case t.Verdict == protocol.Unknown:
		dec.Keep = d.NoQuorum == Retain
	}
	head := "normal Kubernetes"
	if dec.Keep {
		head = "pods kept"
	}
	switch {
	case dec.Reason == ReasonAlwaysRetain:
		head += " (policy always-retain)"
	case dec.Reason == NoQuorum:
		head += fmt.Sprintf(" (no-quorum-policy %s)", d.NoQuorum)
	}
	tail := ""
	if dec.Keep && limit > 0 && left > 0 {
		tail = fmt.Sprintf("; autonomy-duration %v", limit)
	}
	dec.Summary, dec.Message = head+": "+stable(t)+tail, head+": "+votes+tail
	return dec
}

// duration is the node's autonomy duration: its annotation, or the
// default when absent or bad (a bad value is logged once per node and value).
func (d *Decider) duration(n NodeInfo) time.Duration {
	if n.Duration == "" {
		return d.Duration
	}
	v, err := time.ParseDuration(n.Duration)
	if err == nil && v < 0 {
		err = fmt.Errorf("negative")
	}
	if err != nil {
		if prev, ok := d.logged.Swap(n.Name, n.Duration); (!ok || prev != n.Duration) && d.Log != nil {
			d.Log.Warn("bad "+DurationAnnotation+" ignored, default used", "node", n.Name, "value", n.Duration, "err", err, "default", d.Duration)
		}
		return d.Duration
	}
	d.logged.Delete(n.Name)
	return v
}

// stable is the tally without the views' age, for change detection.
func stable(t Tally) string {
	t.Age = 0
	return t.String()
}

func conditionStatus(v protocol.State) corev1.ConditionStatus {
	switch v {
	case protocol.Alive:
		return corev1.ConditionTrue
	case protocol.Dead:
		return corev1.ConditionFalse
	}
	return corev1.ConditionUnknown
}

func verdictReason(v protocol.State) Reason {
	switch v {
	case protocol.Alive:
		return VotedAlive
	case protocol.Dead:
		return VotedDead
	}
	return NoQuorum
}
