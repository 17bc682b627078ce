package webhook

import (
	"encoding/json"
	"fmt"
	"reflect"
	"sort"
	"strings"
	"testing"
	"time"

	jsonpatch "gopkg.in/evanphx/json-patch.v4"
	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/holdfast-edge/holdfast/health/protocol"
)

// cluster is a State: cached Nodes, tallies and opted-out pods.
type cluster struct {
	nodes    map[string]*corev1.Node
	tallies  map[string]Tally
	optedOut map[string]bool // namespace/name
	pods     map[string][]*corev1.Pod
}

func (c *cluster) Tally(n string) Tally          { return c.tallies[n] }
func (c *cluster) Node(n string) *corev1.Node    { return c.nodes[n] }
func (c *cluster) OptedOut(ns, name string) bool { return c.optedOut[ns+"/"+name] }
func (c *cluster) PodsOn(n string) []*corev1.Pod { return c.pods[n] }
func (c *cluster) Nodes() (out []*corev1.Node) {
	for _, n := range c.nodes {
		out = append(out, n)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

var (
	// offline is when the not-Ready nodes' Ready condition left True; the
	// tests' clock is 10 minutes later.
	offline = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	now     = offline.Add(10 * time.Minute)
)

func mkNode(name string, ready bool, duration string) *corev1.Node {
	st := corev1.ConditionUnknown
	if ready {
		st = corev1.ConditionTrue
	}
	n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, ResourceVersion: "7"},
		Status: corev1.NodeStatus{Conditions: []corev1.NodeCondition{{Type: corev1.NodeReady, Status: st, LastTransitionTime: metav1.NewTime(offline)}}}}
	if duration != "" {
		n.Annotations = map[string]string{DurationAnnotation: duration}
	}
	return n
}

var (
	alive3   = Tally{Verdict: protocol.Alive, Alive: 3, Views: 3, Members: 3, Age: 3 * time.Second}
	dead2    = Tally{Verdict: protocol.Dead, Dead: 2, Alive: 1, Views: 3, Members: 3, Age: 4 * time.Second}
	noquorum = Tally{Verdict: protocol.Unknown, Views: 1, Members: 3, Age: time.Second}
)

// newWorld: one node per row of the decision table.
func newWorld() *cluster {
	c := &cluster{nodes: map[string]*corev1.Node{}, tallies: map[string]Tally{}, optedOut: map[string]bool{"shop/web-out": true}, pods: map[string][]*corev1.Pod{}}
	for _, n := range []struct {
		name     string
		ready    bool
		duration string
		t        Tally
	}{
		{"ready", true, "", alive3},          // Ready True → normal Kubernetes
		{"alive", false, "", alive3},         // NotReady, voted alive → keep
		{"dead", false, "", dead2},           // NotReady, voted dead → normal
		{"noquorum", false, "", noquorum},    // no fresh quorum → no-quorum policy
		{"expired", false, "5m", alive3},     // alive, offline 10m > 5m → normal
		{"within", false, "1h", alive3},      // alive, offline 10m < 1h → keep
		{"forever", false, "0", alive3},      // 0 = forever
		{"bad", false, "soon", alive3},       // bad value: default used
		{"nqexpired", false, "5m", noquorum}, // no quorum but expired → normal
	} {
		c.nodes[n.name] = mkNode(n.name, n.ready, n.duration)
		c.tallies[n.name] = n.t
	}
	return c
}

var world = newWorld()

func mutator(p Policy, nq NoQuorumPolicy) *Mutator {
	return &Mutator{State: world, Decider: &Decider{Policy: p, NoQuorum: nq}, Now: func() time.Time { return now }}
}

func review(kind, group, object string) string {
	return fmt.Sprintf(`{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{
	  "uid":"705ab4f5-6393-11e8-b7cc-42010a800002",
	  "kind":{"group":%q,"version":"v1","kind":%q},
	  "resource":{"group":%q,"version":"v1","resource":"x"},
	  "operation":"UPDATE","userInfo":{"username":"system:serviceaccount:kube-system:node-controller"},
	  "object":%s}}`, group, kind, group, object)
}

func node(name, condStatus, taints string) string {
	ann := ""
	if n := world.nodes[name]; n != nil && n.Annotations[DurationAnnotation] != "" {
		ann = fmt.Sprintf(`,"annotations":{%q:%q}`, DurationAnnotation, n.Annotations[DurationAnnotation])
	}
	return fmt.Sprintf(`{"apiVersion":"v1","kind":"Node","metadata":{"name":%q,"labels":{"holdfast.dev/unit":"site-a"}%s},
	  "spec":{"podCIDR":"10.244.1.0/24"%s},
	  "status":{"conditions":[{"type":"MemoryPressure","status":"False"},{"type":"Ready","status":%q,"reason":"NodeStatusUnknown","lastTransitionTime":%q}]}}`,
		name, ann, taints, condStatus, offline.Format(time.RFC3339))
}

const (
	taintsMixed      = `,"taints":[{"key":"node.kubernetes.io/unreachable","effect":"NoSchedule","timeAdded":"2026-01-01T00:00:00Z"},{"key":"node.kubernetes.io/unreachable","effect":"NoExecute","timeAdded":"2026-01-01T00:00:05Z"},{"key":"dedicated","value":"edge","effect":"NoExecute"}]`
	taintsOnlyNoExec = `,"taints":[{"key":"node.kubernetes.io/not-ready","effect":"NoExecute"},{"key":"node.kubernetes.io/unreachable","effect":"NoExecute"}]`
)

func slice(endpoints string) string {
	return `{"apiVersion":"discovery.k8s.io/v1","kind":"EndpointSlice","metadata":{"name":"web-abc12","namespace":"shop","labels":{"kubernetes.io/service-name":"web"}},
	  "addressType":"IPv4","ports":[{"name":"http","port":80,"protocol":"TCP"}],"endpoints":` + endpoints + `}`
}

func endpoints(subsets string) string {
	return `{"apiVersion":"v1","kind":"Endpoints","metadata":{"name":"web","namespace":"shop"},"subsets":` + subsets + `}`
}

// apply runs the webhook on a review and applies its patch to the object.
func apply(t *testing.T, m *Mutator, rev string) (patched map[string]any, ops []Op) {
	t.Helper()
	out, err := m.Review([]byte(rev))
	if err != nil {
		t.Fatal(err)
	}
	var resp admissionv1.AdmissionReview
	if err := json.Unmarshal(out, &resp); err != nil {
		t.Fatal(err)
	}
	if resp.Response == nil || !resp.Response.Allowed || resp.Response.UID != "705ab4f5-6393-11e8-b7cc-42010a800002" || resp.APIVersion != "admission.k8s.io/v1" {
		t.Fatalf("bad response %s", out)
	}
	var in admissionv1.AdmissionReview
	if err := json.Unmarshal([]byte(rev), &in); err != nil {
		t.Fatal(err)
	}
	obj := in.Request.Object.Raw
	if resp.Response.Patch != nil {
		if *resp.Response.PatchType != admissionv1.PatchTypeJSONPatch {
			t.Fatalf("patch type %s", *resp.Response.PatchType)
		}
		p, err := jsonpatch.DecodePatch(resp.Response.Patch)
		if err != nil {
			t.Fatalf("patch does not decode: %v\n%s", err, resp.Response.Patch)
		}
		obj, err = p.Apply(obj)
		if err != nil {
			t.Fatalf("patch does not apply: %v\n%s", err, resp.Response.Patch)
		}
		json.Unmarshal(resp.Response.Patch, &ops)
	}
	if err := json.Unmarshal(obj, &patched); err != nil {
		t.Fatal(err)
	}
	return patched, ops
}

// get walks a decoded JSON document by a dotted path ("spec.taints.1.key").
func get(doc any, path string) any {
	for _, k := range strings.Split(path, ".") {
		switch d := doc.(type) {
		case map[string]any:
			doc = d[k]
		case []any:
			var i int
			fmt.Sscan(k, &i)
			if i >= len(d) {
				return nil
			}
			doc = d[i]
		default:
			return nil
		}
	}
	return doc
}

func TestNodeTaints(t *testing.T) {
	for _, c := range []struct {
		name, node, status, taints string
		policy                     NoQuorumPolicy
		wantTaints                 []string // key/effect left; nil: field absent
		wantPatch                  bool
		always                     bool // --policy always-retain
	}{
		{"row1 ready: untouched", "ready", "True", taintsMixed, Retain, []string{"node.kubernetes.io/unreachable/NoSchedule", "node.kubernetes.io/unreachable/NoExecute", "dedicated/NoExecute"}, false, false},
		{"row2 alive: NoExecute dropped, NoSchedule and foreign kept", "alive", "Unknown", taintsMixed, Retain, []string{"node.kubernetes.io/unreachable/NoSchedule", "dedicated/NoExecute"}, true, false},
		{"row2 alive, NotReady=False", "alive", "False", taintsMixed, Evict, []string{"node.kubernetes.io/unreachable/NoSchedule", "dedicated/NoExecute"}, true, false},
		{"row2 alive: only NoExecute taints → field removed", "alive", "Unknown", taintsOnlyNoExec, Retain, nil, true, false},
		{"row2 alive: no taints", "alive", "Unknown", "", Retain, nil, false, false},
		{"row2 alive: empty taints", "alive", "Unknown", `,"taints":[]`, Retain, []string{}, false, false},
		{"row3 dead: untouched", "dead", "Unknown", taintsMixed, Retain, []string{"node.kubernetes.io/unreachable/NoSchedule", "node.kubernetes.io/unreachable/NoExecute", "dedicated/NoExecute"}, false, false},
		{"row4 no quorum, retain", "noquorum", "Unknown", taintsOnlyNoExec, Retain, nil, true, false},
		{"row4 no quorum, evict", "noquorum", "Unknown", taintsOnlyNoExec, Evict, []string{"node.kubernetes.io/not-ready/NoExecute", "node.kubernetes.io/unreachable/NoExecute"}, false, false},
		{"unknown node, not in any unit", "stranger", "Unknown", taintsOnlyNoExec, Evict, []string{"node.kubernetes.io/not-ready/NoExecute", "node.kubernetes.io/unreachable/NoExecute"}, false, false},
		{"always-retain, dead: dropped", "dead", "Unknown", taintsMixed, Evict, []string{"node.kubernetes.io/unreachable/NoSchedule", "dedicated/NoExecute"}, true, true},
		{"always-retain, no quorum + evict: dropped", "noquorum", "Unknown", taintsOnlyNoExec, Evict, nil, true, true},
		{"always-retain, stranger: dropped", "stranger", "Unknown", taintsOnlyNoExec, Evict, nil, true, true},
		{"always-retain, ready: untouched", "ready", "True", taintsOnlyNoExec, Evict, []string{"node.kubernetes.io/not-ready/NoExecute", "node.kubernetes.io/unreachable/NoExecute"}, false, true},
		{"duration expired, alive: let through", "expired", "Unknown", taintsOnlyNoExec, Retain, []string{"node.kubernetes.io/not-ready/NoExecute", "node.kubernetes.io/unreachable/NoExecute"}, false, false},
		{"duration expired, always-retain: let through", "expired", "Unknown", taintsOnlyNoExec, Retain, []string{"node.kubernetes.io/not-ready/NoExecute", "node.kubernetes.io/unreachable/NoExecute"}, false, true},
		{"duration expired, no quorum + retain: let through", "nqexpired", "Unknown", taintsOnlyNoExec, Retain, []string{"node.kubernetes.io/not-ready/NoExecute", "node.kubernetes.io/unreachable/NoExecute"}, false, false},
		{"duration running: dropped", "within", "Unknown", taintsOnlyNoExec, Retain, nil, true, false},
		{"duration 0 = forever: dropped", "forever", "Unknown", taintsOnlyNoExec, Retain, nil, true, false},
		{"bad duration ignored (default forever): dropped", "bad", "Unknown", taintsOnlyNoExec, Retain, nil, true, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			m := mutator(Verdicts, c.policy)
			if c.always {
				m.Decider.Policy = AlwaysRetain
			}
			doc, ops := apply(t, m, review("Node", "", node(c.node, c.status, c.taints)))
			if (len(ops) > 0) != c.wantPatch {
				t.Fatalf("patch %v, want patch=%v", ops, c.wantPatch)
			}
			raw, present := get(doc, "spec").(map[string]any)["taints"]
			if c.wantTaints == nil {
				if present {
					t.Fatalf("taints %v, want none", raw)
				}
				return
			}
			var got []string
			for _, tt := range raw.([]any) {
				got = append(got, fmt.Sprint(get(tt, "key"), "/", get(tt, "effect")))
			}
			if len(got) != len(c.wantTaints) || (len(got) > 0 && !reflect.DeepEqual(got, c.wantTaints)) {
				t.Fatalf("taints %v, want %v", got, c.wantTaints)
			}
			if get(doc, "spec.podCIDR") != "10.244.1.0/24" || get(doc, "status.conditions.1.status") != c.status {
				t.Fatal("patch touched other fields")
			}
		})
	}
}

func TestEndpointSlices(t *testing.T) {
	eps := `[
	  {"addresses":["10.244.1.5"],"conditions":{"ready":false,"serving":false,"terminating":false},"nodeName":"alive","targetRef":{"kind":"Pod","namespace":"shop","name":"web-1"}},
	  {"addresses":["10.244.1.6"],"nodeName":"alive"},
	  {"addresses":["10.244.1.7"],"conditions":{"ready":false,"serving":false,"terminating":true},"nodeName":"alive"},
	  {"addresses":["10.244.1.8"],"conditions":{"ready":false},"nodeName":"alive"},
	  {"addresses":["10.244.2.5"],"conditions":{"ready":false,"serving":false},"nodeName":"dead"},
	  {"addresses":["10.244.3.5"],"conditions":{"ready":true,"serving":true},"nodeName":"ready"},
	  {"addresses":["10.244.4.5"],"conditions":{"ready":false,"serving":false},"nodeName":"noquorum"},
	  {"addresses":["10.244.9.9"],"conditions":{"ready":false}},
	  {"addresses":["10.244.1.9"],"conditions":{"ready":false,"serving":true},"nodeName":"alive"}
	]`
	type cond struct{ ready, serving any }
	for _, c := range []struct {
		name   string
		eps    string
		policy NoQuorumPolicy
		want   []cond
	}{
		{"every shape, retain", eps, Retain, []cond{
			{true, true},   // alive: both set
			{true, true},   // alive, conditions missing entirely: object added
			{false, false}, // alive but terminating: left alone
			{true, true},   // alive, serving missing
			{false, false}, // dead
			{true, true},   // ready node
			{true, true},   // no quorum + retain
			{false, nil},   // no nodeName
			{true, true},   // alive, serving already true
		}},
		{"every shape, evict", eps, Evict, []cond{{true, true}, {true, true}, {false, false}, {true, true}, {false, false}, {true, true}, {false, false}, {false, nil}, {true, true}}},
		{"empty endpoints list", `[]`, Retain, nil},
		{"null endpoints", `null`, Retain, nil},
	} {
		t.Run(c.name, func(t *testing.T) {
			m := mutator(Verdicts, c.policy)
			doc, _ := apply(t, m, review("EndpointSlice", "discovery.k8s.io", slice(c.eps)))
			list, _ := get(doc, "endpoints").([]any)
			if len(list) != len(c.want) {
				t.Fatalf("%d endpoints after patch, want %d", len(list), len(c.want))
			}
			for i, w := range c.want {
				got := cond{get(list[i], "conditions.ready"), get(list[i], "conditions.serving")}
				if got != w {
					t.Errorf("endpoint %d (%v): conditions %v, want %v", i, get(list[i], "addresses"), got, w)
				}
				if i == 2 && get(list[i], "conditions.terminating") != true {
					t.Error("terminating flag lost")
				}
			}
			if get(doc, "ports.0.port") != float64(80) {
				t.Fatal("ports changed")
			}
		})
	}
}

func TestEndpoints(t *testing.T) {
	addr := func(ip, node string) string {
		if node == "" {
			return fmt.Sprintf(`{"ip":%q}`, ip)
		}
		return fmt.Sprintf(`{"ip":%q,"nodeName":%q,"targetRef":{"kind":"Pod","namespace":"shop","name":"p-%s"}}`, ip, node, ip)
	}
	ports := `"ports":[{"name":"http","port":80,"protocol":"TCP"}]`
	for _, c := range []struct {
		name       string
		subsets    string
		policy     NoQuorumPolicy
		wantReady  [][]string // per subset
		wantNotRdy [][]string // nil entry: field absent
	}{
		{"only notReady, all alive → addresses added, notReady removed",
			`[{"notReadyAddresses":[` + addr("10.244.1.5", "alive") + `,` + addr("10.244.1.6", "alive") + `],` + ports + `}]`, Retain,
			[][]string{{"10.244.1.5", "10.244.1.6"}}, [][]string{nil}},
		{"many addresses, mixed notReady",
			`[{"addresses":[` + addr("10.244.3.1", "ready") + `,` + addr("10.244.3.2", "ready") + `,` + addr("10.244.3.3", "") + `],"notReadyAddresses":[` +
				addr("10.244.2.5", "dead") + `,` + addr("10.244.1.5", "alive") + `,` + addr("10.244.9.9", "") + `,` + addr("10.244.4.5", "noquorum") + `],` + ports + `}]`, Retain,
			[][]string{{"10.244.3.1", "10.244.3.2", "10.244.3.3", "10.244.1.5", "10.244.4.5"}}, [][]string{{"10.244.2.5", "10.244.9.9"}}},
		{"evict policy keeps no-quorum node not ready",
			`[{"addresses":[` + addr("10.244.3.1", "ready") + `],"notReadyAddresses":[` + addr("10.244.4.5", "noquorum") + `],` + ports + `}]`, Evict,
			[][]string{{"10.244.3.1"}}, [][]string{{"10.244.4.5"}}},
		{"two subsets, second one patched",
			`[{"addresses":[` + addr("10.244.3.1", "ready") + `],` + ports + `},{"notReadyAddresses":[` + addr("10.244.1.7", "alive") + `],"ports":[{"port":8080}]}]`, Retain,
			[][]string{{"10.244.3.1"}, {"10.244.1.7"}}, [][]string{nil, nil}},
		{"empty addresses list (not absent)",
			`[{"addresses":[],"notReadyAddresses":[` + addr("10.244.1.5", "alive") + `],` + ports + `}]`, Retain,
			[][]string{{"10.244.1.5"}}, [][]string{nil}},
		{"missing nodeName and targetRef stay not ready",
			`[{"notReadyAddresses":[` + addr("10.244.9.9", "") + `],` + ports + `}]`, Retain,
			[][]string{nil}, [][]string{{"10.244.9.9"}}},
		{"empty subsets", `[]`, Retain, nil, nil},
	} {
		t.Run(c.name, func(t *testing.T) {
			m := mutator(Verdicts, c.policy)
			doc, _ := apply(t, m, review("Endpoints", "", endpoints(c.subsets)))
			subs, _ := get(doc, "subsets").([]any)
			if len(subs) != len(c.wantReady) {
				t.Fatalf("%d subsets, want %d", len(subs), len(c.wantReady))
			}
			ips := func(v any) []string {
				l, ok := v.([]any)
				if !ok {
					return nil
				}
				out := []string{}
				for _, a := range l {
					out = append(out, get(a, "ip").(string))
				}
				return out
			}
			for i := range subs {
				sub := subs[i].(map[string]any)
				if got := ips(sub["addresses"]); !reflect.DeepEqual(got, c.wantReady[i]) && !(len(got) == 0 && len(c.wantReady[i]) == 0) {
					t.Errorf("subset %d addresses %v, want %v", i, got, c.wantReady[i])
				}
				_, present := sub["notReadyAddresses"]
				if c.wantNotRdy[i] == nil {
					if present {
						t.Errorf("subset %d notReadyAddresses %v, want absent", i, sub["notReadyAddresses"])
					}
				} else if got := ips(sub["notReadyAddresses"]); !reflect.DeepEqual(got, c.wantNotRdy[i]) {
					t.Errorf("subset %d notReadyAddresses %v, want %v", i, got, c.wantNotRdy[i])
				}
				addrs, _ := sub["addresses"].([]any)
				for _, a := range addrs {
					if get(a, "ip") == "10.244.1.5" && get(a, "targetRef.name") != "p-10.244.1.5" {
						t.Error("moved address lost its targetRef")
					}
				}
				if sub["ports"] == nil {
					t.Error("ports lost")
				}
			}
		})
	}
}

func TestReviewIgnoresOthersAndGarbage(t *testing.T) {
	m := mutator(Verdicts, Retain)
	doc, ops := apply(t, m, review("Service", "", `{"apiVersion":"v1","kind":"Service","metadata":{"name":"x"}}`))
	if len(ops) != 0 || get(doc, "metadata.name") != "x" {
		t.Fatal("service was patched")
	}
	if _, err := m.Review([]byte(`{"request":`)); err == nil {
		t.Fatal("truncated review accepted")
	}
	if _, err := m.Review([]byte(`{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}`)); err == nil {
		t.Fatal("review without request accepted")
	}
	out, err := m.Review([]byte(review("Node", "", `{"spec":{"taints":"not-a-list"}}`)))
	if err != nil || !strings.Contains(string(out), `"allowed":true`) || strings.Contains(string(out), `"patch"`) {
		t.Fatalf("undecodable node: %s %v", out, err)
	}
}

func FuzzReview(f *testing.F) {
	f.Add([]byte(review("Node", "", node("alive", "Unknown", taintsMixed))))
	f.Add([]byte(review("Endpoints", "", endpoints(`[{"notReadyAddresses":[{"ip":"1.2.3.4","nodeName":"alive"}]}]`))))
	f.Add([]byte(review("EndpointSlice", "discovery.k8s.io", slice(`[{"addresses":["1.2.3.4"],"nodeName":"alive"}]`))))
	f.Add([]byte(review("Pod", "", `{"metadata":{"name":"p","annotations":{"holdfast.dev/autonomy":"false"}},"spec":{"tolerations":[{"key":"node.kubernetes.io/unreachable","operator":"Exists","effect":"NoExecute","tolerationSeconds":300}]}}`)))
	f.Fuzz(func(t *testing.T, data []byte) {
		m := mutator(Verdicts, Retain)
		out, err := m.Review(data)
		if err != nil {
			return
		}
		var resp admissionv1.AdmissionReview
		if err := json.Unmarshal(out, &resp); err != nil {
			t.Fatalf("response not JSON: %v", err)
		}
		if resp.Response.Patch == nil {
			return
		}
		var in admissionv1.AdmissionReview
		json.Unmarshal(data, &in)
		p, err := jsonpatch.DecodePatch(resp.Response.Patch)
		if err != nil {
			t.Fatalf("invalid patch: %v", err)
		}
		if _, err := p.Apply(in.Request.Object.Raw); err != nil {
			t.Fatalf("patch does not apply: %v\npatch %s\nobject %s", err, resp.Response.Patch, in.Request.Object.Raw)
		}
	})
}
