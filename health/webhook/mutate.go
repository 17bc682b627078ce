package webhook

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/client-go/tools/record"
)

// State is what the mutator needs to know about the cluster.
type State interface {
	// Tally is the peers' vote on a node (zero: the node has no key).
	Tally(node string) Tally
	// Node is the cached Node object (nil when unknown).
	Node(name string) *corev1.Node
	// OptedOut reports whether the pod carries holdfast.dev/autonomy: "false".
	OptedOut(namespace, name string) bool
}

// Op is one RFC 6902 operation.
type Op struct {
	Op    string `json:"op"`
	Path  string `json:"path"`
	Value any    `json:"value,omitempty"`
}

// Mutator computes patches per the decision table.
type Mutator struct {
	State   State
	Decider *Decider
	// Events, when set, records on the Node when a controller NoExecute
	// taint is dropped or let through (once per outage and decision).
	Events record.EventRecorder
	// Observe, when set, counts each decision on a not-Ready node's
	// object (metrics).
	Observe func(object string, r Reason)
	// Log, when set, records the decision on every Node the cloud sees not
	// Ready (the taint it keeps or lets through is what evicts pods).
	Log *slog.Logger
	// Now is the clock (nil: time.Now).
	Now func() time.Time

	mu          sync.Mutex
	taintEvents map[string]string // node → what the last taint event said
}

func (m *Mutator) now() time.Time {
	if m.Now != nil {
		return m.Now()
	}
	return time.Now()
}

// decideNode applies the decision table to a node by name, from the cache.
func (m *Mutator) decideNode(name string) (Decision, bool) {
	n := m.State.Node(name)
	if n == nil {
		return Decision{}, false
	}
	return m.Decider.Decide(InfoOf(n, m.State.Tally(name)), m.now()), true
}

// keepEndpoint reports whether an endpoint of pod ns/pod (empty: none
// named) on node is to be kept ready.
func (m *Mutator) keepEndpoint(object, node, ns string, ref *corev1.ObjectReference) bool {
	d, ok := m.decideNode(node)
	if !ok {
		return false
	}
	m.observe(object, d)
	if !d.Keep {
		return false
	}
	if ref != nil && ref.Kind == "Pod" {
		if ref.Namespace != "" {
			ns = ref.Namespace
		}
		return !m.State.OptedOut(ns, ref.Name)
	}
	return true
}

func (m *Mutator) observe(object string, d Decision) {
	if m.Observe != nil && !d.Ready {
		m.Observe(object, d.Reason)
	}
}

func escape(s string) string {
	return strings.NewReplacer("~", "~0", "/", "~1").Replace(s)
}

// NodePatch drops the node.kubernetes.io/unreachable and not-ready NoExecute
// taints of a node the decision table keeps; NoSchedule taints stay. old is
// the object before the update (nil on create); events are not recorded
// for a dry run.
func (m *Mutator) NodePatch(n, old *corev1.Node, dryRun bool) []Op {
	d := m.Decider.Decide(InfoOf(n, m.State.Tally(n.Name)), m.now())
	if !d.Ready && m.Log != nil {
		m.Log.Info("node not ready", "node", n.Name, "reason", d.Reason, "keep_pods", d.Keep, "decision", d.Message, "taints", taintKeys(n.Spec.Taints))
	}
	var adding []string // controller taints this update adds
	var kept []corev1.Taint
	for _, t := range n.Spec.Taints {
		if !isControllerTaint(t) {
			kept = append(kept, t)
			continue
		}
		if old == nil || !hasTaint(old.Spec.Taints, t.Key, t.Effect) {
			adding = append(adding, t.Key+":"+string(t.Effect))
		}
	}
	if len(adding) > 0 {
		m.observe("Node", d)
		if !dryRun {
			m.taintEvent(n, d, adding)
		}
	}
	if !d.Keep || len(kept) == len(n.Spec.Taints) {
		return nil
	}
	if len(kept) == 0 {
		return []Op{{Op: "remove", Path: "/spec/taints"}}
	}
	return []Op{{Op: "replace", Path: "/spec/taints", Value: kept}}
}

// isControllerTaint: the node lifecycle controller's NoExecute taints.
func isControllerTaint(t corev1.Taint) bool {
	return t.Effect == corev1.TaintEffectNoExecute && (t.Key == corev1.TaintNodeUnreachable || t.Key == corev1.TaintNodeNotReady)
}

func hasTaint(ts []corev1.Taint, key string, effect corev1.TaintEffect) bool {
	for _, t := range ts {
		if t.Key == key && t.Effect == effect {
			return true
		}
	}
	return false
}

// taintEvent records that the controller's taint was dropped or let
// through. The controller retries the taint every monitor period while it
// is missing, so only the first attempt of each outage and decision is
// recorded.
func (m *Mutator) taintEvent(n *corev1.Node, d Decision, taints []string) {
	if m.Events == nil || d.Ready {
		return
	}
	since, _ := notReadySince(n)
	key := fmt.Sprintf("%s|%s|%v|%v", since, d.Reason, d.Keep, taints)
	m.mu.Lock()
	if m.taintEvents == nil {
		m.taintEvents = map[string]string{}
	}
	same := m.taintEvents[n.Name] == key
	m.taintEvents[n.Name] = key
	m.mu.Unlock()
	if same {
		return
	}
	what := strings.Join(taints, ", ")
	if d.Keep {
		m.Events.Eventf(n, corev1.EventTypeNormal, "NoExecuteTaintDropped", "dropped %s (%s): %s", what, d.Reason, d.Message)
	} else {
		m.Events.Eventf(n, corev1.EventTypeWarning, "NoExecuteTaintAllowed", "let %s through (%s): %s", what, d.Reason, d.Message)
	}
}

func notReadySince(n *corev1.Node) (time.Time, bool) {
	i := InfoOf(n, Tally{})
	return i.NotReadySince, !i.Ready
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
		if ep.NodeName == nil || !m.keepEndpoint("EndpointSlice", *ep.NodeName, s.Namespace, ep.TargetRef) {
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
func (m *Mutator) EndpointsPatch(e *corev1.Endpoints) []Op {
	var ops []Op
	for i, sub := range e.Subsets {
		var move, stay []corev1.EndpointAddress
		for _, a := range sub.NotReadyAddresses {
			if a.NodeName != nil && m.keepEndpoint("Endpoints", *a.NodeName, e.Namespace, a.TargetRef) {
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
		var old *corev1.Node
		if err = json.Unmarshal(req.Object.Raw, &n); err == nil && len(req.OldObject.Raw) > 0 {
			old = &corev1.Node{}
			err = json.Unmarshal(req.OldObject.Raw, old)
		}
		if err == nil {
			ops = m.NodePatch(&n, old, req.DryRun != nil && *req.DryRun)
		}
	case "/Pod":
		var p corev1.Pod
		if err = json.Unmarshal(req.Object.Raw, &p); err == nil {
			ops = m.PodPatch(&p)
		}
	case "discovery.k8s.io/EndpointSlice":
		var s discoveryv1.EndpointSlice
		if err = json.Unmarshal(req.Object.Raw, &s); err == nil {
			ops = m.EndpointSlicePatch(&s)
		}
	case "/Endpoints":
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
