package webhook

import (
	"encoding/json"
	"fmt"
	"log/slog"

	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"

	"github.com/holdfast-edge/holdfast/health/protocol"
)

// Policy is what to do when a node's unit has no fresh quorum.
type Policy string

const (
	Retain Policy = "retain" // treat as alive: keep the node's pods
	Evict  Policy = "evict"  // treat as dead: normal Kubernetes
)

// ParsePolicy validates a --no-quorum-policy value.
func ParsePolicy(s string) (Policy, error) {
	switch Policy(s) {
	case Retain, Evict:
		return Policy(s), nil
	}
	return "", fmt.Errorf("no-quorum policy %q: want retain or evict", s)
}

// State is what the mutator needs to know about the cluster.
type State interface {
	// Verdict is the peers' verdict on a node (Unknown if none).
	Verdict(node string) protocol.State
	// CloudReady reports the node's Ready condition as the apiserver has it
	// (true only for status True); ok is false when the node is unknown.
	CloudReady(node string) (ready, ok bool)
}

// Op is one RFC 6902 operation.
type Op struct {
	Op    string `json:"op"`
	Path  string `json:"path"`
	Value any    `json:"value,omitempty"`
}

// Mutator computes patches per the decision table.
type Mutator struct {
	State    State
	NoQuorum Policy
	// Log, when set, records the decision on every Node the cloud sees not
	// Ready (the taint it keeps or lets through is what evicts pods).
	Log *slog.Logger
}

// keep reports whether node's pods and schedulability are to be kept by the
// decision table: the cloud says not Ready and the peers say alive (or
// there is no quorum and the policy is retain).
func (m *Mutator) keep(node string, cloudReady bool) bool {
	if node == "" || cloudReady {
		return false
	}
	switch m.State.Verdict(node) {
	case protocol.Alive:
		return true
	case protocol.Unknown:
		return m.NoQuorum == Retain
	}
	return false
}

func (m *Mutator) keepByName(node string) bool {
	ready, ok := m.State.CloudReady(node)
	return ok && m.keep(node, ready)
}

// NodePatch drops the node.kubernetes.io/unreachable and not-ready NoExecute
// taints of a not-Ready node voted alive; NoSchedule taints stay.
func (m *Mutator) NodePatch(n *corev1.Node) []Op {
	ready := nodeReady(n)
	keep := m.keep(n.Name, ready)
	if m.Log != nil && !ready {
		m.Log.Info("node not ready", "node", n.Name, "verdict", m.State.Verdict(n.Name).String(), "keep_pods", keep, "taints", taintKeys(n.Spec.Taints))
	}
	if !keep || len(n.Spec.Taints) == 0 {
		return nil
	}
	var kept []corev1.Taint
	for _, t := range n.Spec.Taints {
		if t.Effect == corev1.TaintEffectNoExecute && (t.Key == corev1.TaintNodeUnreachable || t.Key == corev1.TaintNodeNotReady) {
			continue
		}
		kept = append(kept, t)
	}
	if len(kept) == len(n.Spec.Taints) {
		return nil
	}
	if len(kept) == 0 {
		return []Op{{Op: "remove", Path: "/spec/taints"}}
	}
	return []Op{{Op: "replace", Path: "/spec/taints", Value: kept}}
}

// nodeReady reports whether the Node's Ready condition is True (the
// cloud's view of it).
func nodeReady(n *corev1.Node) bool {
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

func taintKeys(ts []corev1.Taint) []string {
	var out []string
	for _, t := range ts {
		out = append(out, t.Key+":"+string(t.Effect))
	}
	return out
}

// EndpointSlicePatch marks ready and serving the endpoints on kept nodes;
// terminating endpoints and endpoints without nodeName are left alone.
func (m *Mutator) EndpointSlicePatch(s *discoveryv1.EndpointSlice) []Op {
	var ops []Op
	t := true
	for i, ep := range s.Endpoints {
		if ep.NodeName == nil || !m.keepByName(*ep.NodeName) {
			continue
		}
		c := ep.Conditions
		if c.Terminating != nil && *c.Terminating {
			continue
		}
		base := fmt.Sprintf("/endpoints/%d/conditions", i)
		if c.Ready == nil && c.Serving == nil && c.Terminating == nil {
			ops = append(ops, Op{Op: "add", Path: base, Value: discoveryv1.EndpointConditions{Ready: &t, Serving: &t}})
			continue
		}
		if c.Ready == nil || !*c.Ready {
			ops = append(ops, Op{Op: "add", Path: base + "/ready", Value: true})
		}
		if c.Serving == nil || !*c.Serving {
			ops = append(ops, Op{Op: "add", Path: base + "/serving", Value: true})
		}
	}
	return ops
}

// EndpointsPatch moves notReadyAddresses on kept nodes to addresses, per
// subset; addresses without nodeName stay where they are.
//
//lint:ignore SA1019 kube-proxy and clients still read v1 Endpoints on 1.34; the webhook keeps both kinds in step
func (m *Mutator) EndpointsPatch(e *corev1.Endpoints) []Op {
	var ops []Op
	for i, sub := range e.Subsets {
		var move, stay []corev1.EndpointAddress
		for _, a := range sub.NotReadyAddresses {
			if a.NodeName != nil && m.keepByName(*a.NodeName) {
				move = append(move, a)
			} else {
				stay = append(stay, a)
			}
		}
		if len(move) == 0 {
			continue
		}
		base := fmt.Sprintf("/subsets/%d", i)
		if len(sub.Addresses) == 0 {
			ops = append(ops, Op{Op: "add", Path: base + "/addresses", Value: move})
		} else {
			ops = append(ops, Op{Op: "replace", Path: base + "/addresses", Value: append(append([]corev1.EndpointAddress{}, sub.Addresses...), move...)})
		}
		if len(stay) == 0 {
			ops = append(ops, Op{Op: "remove", Path: base + "/notReadyAddresses"})
		} else {
			ops = append(ops, Op{Op: "replace", Path: base + "/notReadyAddresses", Value: stay})
		}
	}
	return ops
}

// Review answers one AdmissionReview (v1). Objects it does not handle, and
// objects it cannot decode, are allowed unchanged (the webhook must never
// block the control plane; failurePolicy is Ignore too).
func (m *Mutator) Review(body []byte) ([]byte, error) {
	out, _, _, err := m.review(body)
	return out, err
}

func (m *Mutator) review(body []byte) ([]byte, string, bool, error) {
	var rev admissionv1.AdmissionReview
	if err := json.Unmarshal(body, &rev); err != nil {
		return nil, "", false, fmt.Errorf("request is not an AdmissionReview: %w", err)
	}
	if rev.Request == nil {
		return nil, "", false, fmt.Errorf("AdmissionReview has no request")
	}
	req := rev.Request
	resp := &admissionv1.AdmissionResponse{UID: req.UID, Allowed: true}
	var ops []Op
	var err error
	switch req.Kind.Group + "/" + req.Kind.Kind {
	case "/Node":
		var n corev1.Node
		if err = json.Unmarshal(req.Object.Raw, &n); err == nil {
			ops = m.NodePatch(&n)
		}
	case "discovery.k8s.io/EndpointSlice":
		var s discoveryv1.EndpointSlice
		if err = json.Unmarshal(req.Object.Raw, &s); err == nil {
			ops = m.EndpointSlicePatch(&s)
		}
	case "/Endpoints":
		//lint:ignore SA1019 see EndpointsPatch
		var e corev1.Endpoints
		if err = json.Unmarshal(req.Object.Raw, &e); err == nil {
			ops = m.EndpointsPatch(&e)
		}
	}
	if err != nil {
		resp.Warnings = []string{"holdfast: object not decoded, left unchanged: " + err.Error()}
		ops = nil
	}
	if len(ops) > 0 {
		patch, err := json.Marshal(ops)
		if err != nil {
			return nil, "", false, err
		}
		pt := admissionv1.PatchTypeJSONPatch
		resp.Patch, resp.PatchType = patch, &pt
	}
	out := admissionv1.AdmissionReview{TypeMeta: rev.TypeMeta, Response: resp}
	if out.APIVersion == "" {
		out.APIVersion, out.Kind = "admission.k8s.io/v1", "AdmissionReview"
	}
	data, err := json.Marshal(out)
	return data, req.Kind.Kind, len(ops) > 0, err
}
