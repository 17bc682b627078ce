package webhook

import (
	"context"
	"io"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/tools/record"

	"github.com/holdfast-edge/holdfast/internal/kubeclient/kubefake"
)

func podOn(node, name string, optOut, tolerates bool) *corev1.Pod {
	p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "shop"}, Spec: corev1.PodSpec{NodeName: node}}
	if optOut {
		p.Annotations = map[string]string{OptOutAnnotation: "false"}
	}
	if tolerates {
		p.Spec.Tolerations = []corev1.Toleration{{Key: RetainedTaint, Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoExecute}}
	}
	return p
}

type ctlFixture struct {
	c      *cluster
	client *fake.Clientset
	rec    *record.FakeRecorder
	ctl    *Controller
	clock  time.Time
}

// newCtl: the cluster's Nodes in a fake apiserver; the controller reads
// the cluster (its cache) and writes to the fake.
func newCtl(t *testing.T, p Policy) *ctlFixture {
	c := newWorld()
	f := &ctlFixture{c: c, client: fake.NewClientset(), rec: record.NewFakeRecorder(100), clock: now}
	for _, n := range c.nodes {
		if _, err := f.client.CoreV1().Nodes().Create(context.Background(), n, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	f.ctl = &Controller{Cluster: c, Decider: &Decider{Policy: p, NoQuorum: Retain}, Client: kubefake.Wrap(f.client), Events: f.rec,
		Log: slog.New(slog.NewTextHandler(io.Discard, nil)), Metrics: NewMetrics(prometheus.NewRegistry()),
		Period: time.Second, Refresh: time.Minute, Now: func() time.Time { return f.clock }}
	return f
}

// sync runs one pass and feeds what the fake apiserver now holds back
// into the cache, as the informer would.
func (f *ctlFixture) sync(t *testing.T) {
	f.ctl.Sync(context.Background())
	list, err := f.client.CoreV1().Nodes().List(context.Background(), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for i := range list.Items {
		f.c.nodes[list.Items[i].Name] = &list.Items[i]
	}
}

func (f *ctlFixture) events() []string {
	var out []string
	for {
		select {
		case e := <-f.rec.Events:
			out = append(out, e)
		default:
			return out
		}
	}
}

func condition(n *corev1.Node) *corev1.NodeCondition {
	for i := range n.Status.Conditions {
		if n.Status.Conditions[i].Type == ConditionType {
			return &n.Status.Conditions[i]
		}
	}
	return nil
}

func TestControllerConditions(t *testing.T) {
	f := newCtl(t, Verdicts)
	f.sync(t)
	for name, want := range map[string][3]string{
		"ready":    {"True", "VotedAlive", "node Ready: alive by 3 of 3 peers, views 3 s old"},
		"alive":    {"True", "VotedAlive", "pods kept: alive by 3 of 3 peers, views 3 s old"},
		"dead":     {"False", "VotedDead", "normal Kubernetes: dead by 2 of 3 peers, views 4 s old"},
		"noquorum": {"Unknown", "NoQuorum", "pods kept (no-quorum-policy retain): no quorum: 1 of 3 peers' views fresh, 2 needed"},
		"expired":  {"True", "DurationExpired", "normal Kubernetes: not Ready since 2026-01-01T00:00:00Z, beyond autonomy-duration 5m0s; alive by 3 of 3 peers, views 3 s old"},
	} {
		c := condition(f.c.nodes[name])
		if c == nil {
			t.Fatalf("%s: no condition", name)
		}
		if got := [3]string{string(c.Status), c.Reason, c.Message}; got != want {
			t.Errorf("%s: condition %q, want %q", name, got, want)
		}
		if ready := readyOf(f.c.nodes[name]); ready == nil || !ready.LastTransitionTime.Time.Equal(offline) {
			t.Errorf("%s: Ready condition lost: %v", name, f.c.nodes[name].Status.Conditions)
		}
	}
	if got := testutil.ToFloat64(f.ctl.Metrics.Nodes.WithLabelValues("VotedAlive")); got != 5 { // ready, alive, within, forever, bad
		t.Errorf("nodes VotedAlive = %v", got)
	}
	ev := strings.Join(f.events(), "\n")
	for _, want := range []string{
		"Normal EndpointsKept endpoints of this node's pods kept ready (VotedAlive): pods kept: alive by 3 of 3 peers",
		"Warning EndpointsReleased endpoints of this node's pods follow Kubernetes (VotedDead)",
		"Warning EndpointsReleased endpoints of this node's pods follow Kubernetes (DurationExpired)",
	} {
		if !strings.Contains(ev, want) {
			t.Errorf("no event %q in\n%s", want, ev)
		}
	}

	// Nothing changed: no write, no event. Views aged: the message would
	// change, the summary does not.
	f.c.tallies["alive"] = Tally{Verdict: alive3.Verdict, Alive: 3, Views: 3, Members: 3, Age: 9 * time.Second}
	f.client.ClearActions()
	f.clock = f.clock.Add(10 * time.Second)
	f.sync(t)
	if a := f.client.Actions(); len(a) != 1 || a[0].GetVerb() != "list" {
		t.Fatalf("unchanged sync wrote: %v", a)
	}
	if ev := f.events(); len(ev) != 0 {
		t.Fatalf("unchanged sync recorded %v", ev)
	}
	// Refresh passed: rewritten with the new age, transition time kept.
	first := condition(f.c.nodes["alive"]).LastTransitionTime
	f.clock = f.clock.Add(time.Minute)
	f.sync(t)
	c := condition(f.c.nodes["alive"])
	if !strings.Contains(c.Message, "views 9 s old") || !c.LastTransitionTime.Equal(&first) || !c.LastHeartbeatTime.Time.Equal(f.clock) {
		t.Fatalf("after refresh: %+v", c)
	}
	// The verdict flips to dead: new status and transition time, and the
	// endpoints are released.
	f.c.tallies["alive"] = dead2
	f.clock = f.clock.Add(time.Second)
	f.sync(t)
	c = condition(f.c.nodes["alive"])
	if c.Status != corev1.ConditionFalse || c.Reason != "VotedDead" || !c.LastTransitionTime.Time.Equal(f.clock) {
		t.Fatalf("after flip: %+v", c)
	}
	if ev := f.events(); len(ev) != 1 || !strings.HasPrefix(ev[0], "Warning EndpointsReleased") {
		t.Fatalf("after flip: events %v", ev)
	}
}

func TestControllerAlwaysRetain(t *testing.T) {
	f := newCtl(t, AlwaysRetain)
	f.sync(t)
	c := condition(f.c.nodes["dead"])
	if c.Status != corev1.ConditionFalse || c.Reason != "AlwaysRetain" || !strings.HasPrefix(c.Message, "pods kept (policy always-retain): dead by 2 of 3") {
		t.Fatalf("dead under always-retain: %+v", c)
	}
}

func readyOf(n *corev1.Node) *corev1.NodeCondition {
	for i := range n.Status.Conditions {
		if n.Status.Conditions[i].Type == corev1.NodeReady {
			return &n.Status.Conditions[i]
		}
	}
	return nil
}

func taintKeysOf(n *corev1.Node) []string { return taintKeys(n.Spec.Taints) }

// TestControllerRetainedTaint: a kept node running an opted-out pod gets
// holdfast.dev/retained:NoExecute when every other pod tolerates it, and
// loses it when the node is Ready again or released.
func TestControllerRetainedTaint(t *testing.T) {
	f := newCtl(t, Verdicts)
	f.c.nodes["alive"].Spec.Taints = []corev1.Taint{{Key: "node.kubernetes.io/unreachable", Effect: corev1.TaintEffectNoSchedule}}
	f.client.CoreV1().Nodes().Update(context.Background(), f.c.nodes["alive"], metav1.UpdateOptions{})
	f.c.pods["alive"] = []*corev1.Pod{podOn("alive", "keep", false, true), podOn("alive", "out", true, false), podOn("alive", "legacy", false, false)}
	f.c.pods["dead"] = []*corev1.Pod{podOn("dead", "out", true, false), podOn("dead", "keep", false, true)}
	f.sync(t)
	if got := taintKeysOf(f.c.nodes["alive"]); len(got) != 1 {
		t.Fatalf("tainted although pod legacy lacks the toleration: %v", got)
	}
	if got := taintKeysOf(f.c.nodes["dead"]); len(got) != 0 {
		t.Fatalf("released node tainted: %v", got)
	}
	ev := strings.Join(f.events(), "\n")
	if !strings.Contains(ev, "Warning OptOutBlocked pods shop/out opted out of autonomy but are kept: pods shop/legacy do not tolerate holdfast.dev/retained") {
		t.Fatalf("no OptOutBlocked event:\n%s", ev)
	}
	f.sync(t)
	if ev := f.events(); len(ev) != 0 {
		t.Fatalf("repeated: %v", ev)
	}

	f.c.pods["alive"] = f.c.pods["alive"][:2] // legacy gone
	f.sync(t)
	got := f.c.nodes["alive"].Spec.Taints
	if len(got) != 2 || got[0].Key != "node.kubernetes.io/unreachable" || got[1].Key != RetainedTaint || got[1].Effect != corev1.TaintEffectNoExecute || !got[1].TimeAdded.Time.Equal(f.clock) {
		t.Fatalf("taints %v", got)
	}
	if ev := f.events(); len(ev) != 1 || !strings.Contains(ev[0], "Normal OptOutEvicting tainted holdfast.dev/retained:NoExecute: pods shop/out opted out") {
		t.Fatalf("events %v", ev)
	}
	f.client.ClearActions()
	f.sync(t)
	if len(f.client.Actions()) != 1 {
		t.Fatalf("second sync wrote again: %v", f.client.Actions())
	}

	// Ready again: the taint goes, the other taints stay.
	readyOf(f.c.nodes["alive"]).Status = corev1.ConditionTrue
	f.sync(t)
	if got := taintKeysOf(f.c.nodes["alive"]); len(got) != 1 || got[0] != "node.kubernetes.io/unreachable:NoSchedule" {
		t.Fatalf("after Ready: taints %v", got)
	}
}

// TestControllerLiftsNoExecuteTaint: the lifecycle controller's NoExecute
// taint that went through while a node was released (voted dead while it
// rebooted) is lifted once the node is kept again; a released node keeps
// it, and NoSchedule taints stay.
func TestControllerLiftsNoExecuteTaint(t *testing.T) {
	f := newCtl(t, Verdicts)
	unreachable := []corev1.Taint{
		{Key: corev1.TaintNodeUnreachable, Effect: corev1.TaintEffectNoSchedule},
		{Key: corev1.TaintNodeUnreachable, Effect: corev1.TaintEffectNoExecute},
	}
	for _, name := range []string{"alive", "dead", "expired"} {
		f.c.nodes[name].Spec.Taints = slices.Clone(unreachable)
		if _, err := f.client.CoreV1().Nodes().Update(context.Background(), f.c.nodes[name], metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	f.sync(t)
	if got := taintKeysOf(f.c.nodes["alive"]); !slices.Equal(got, []string{"node.kubernetes.io/unreachable:NoSchedule"}) {
		t.Errorf("kept node: taints %v, want the NoExecute one lifted", got)
	}
	for _, name := range []string{"dead", "expired"} {
		if got := taintKeysOf(f.c.nodes[name]); len(got) != 2 {
			t.Errorf("released node %s: taints %v, want both kept", name, got)
		}
	}
	ev := strings.Join(f.events(), "\n")
	if !strings.Contains(ev, "Normal NoExecuteTaintLifted removed node.kubernetes.io/unreachable:NoExecute (VotedAlive)") {
		t.Errorf("no NoExecuteTaintLifted event:\n%s", ev)
	}
	f.client.ClearActions()
	f.sync(t)
	if a := f.client.Actions(); len(a) != 1 {
		t.Errorf("second sync wrote again: %v", a)
	}
}

// A stale object (the controller's cache behind the apiserver) is not
// written over: the patch carries its resourceVersion.
func TestControllerTaintConflict(t *testing.T) {
	f := newCtl(t, Verdicts)
	f.c.pods["alive"] = []*corev1.Pod{podOn("alive", "out", true, false)}
	f.c.nodes["alive"].ResourceVersion = "1"
	f.ctl.Sync(context.Background())
	n, _ := f.client.CoreV1().Nodes().Get(context.Background(), "alive", metav1.GetOptions{})
	if len(n.Spec.Taints) != 0 {
		t.Fatalf("stale patch applied: %v", n.Spec.Taints)
	}
}

// A node that just registered has no Ready condition yet: no endpoints
// event for it (it was never Ready, nothing is kept or released).
func TestControllerNewNodeNoEvent(t *testing.T) {
	f := newCtl(t, Verdicts)
	fresh := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "fresh"}}
	f.c.nodes = map[string]*corev1.Node{"fresh": fresh}
	f.client.CoreV1().Nodes().Create(context.Background(), fresh, metav1.CreateOptions{})
	f.sync(t)
	if ev := f.events(); len(ev) != 0 {
		t.Fatalf("events for a just registered node: %v", ev)
	}
	if c := condition(f.c.nodes["fresh"]); c == nil || c.Reason != "NoQuorum" {
		t.Fatalf("condition %+v", c)
	}
}
