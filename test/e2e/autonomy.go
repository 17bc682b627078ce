//go:build e2e

package e2e

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/holdfast-edge/holdfast/health/webhook"
	"github.com/holdfast-edge/holdfast/test/harness"
)

// Issue 19 on the existing phases: the per-pod opt-out and the Node's
// condition and events on node3 across cut, reboot and reconnect (phases
// 2–4); two new phases: an autonomy duration on node3, cut again while
// node1 and node2 (whose Leases make the quorum the webhook counts) stay
// connected (phase 6b, before node2's power-off), and --policy
// always-retain on node1 powered off last (phase 7).

// HoldApp is the Service of the opt-out pair on node3.
const HoldApp = "hold"

// autonomy is what the issue-19 checks share across phases.
type autonomy struct {
	keep, out podView // hold-keep keeps autonomy, hold-out opted out
}

// holdPod is a pod of podTemplate bound to node (no scheduler), behind
// Service hold.
func holdPod(name, node string, optOut bool) *corev1.Pod {
	tpl := podTemplate(map[string]string{AppLabel: HoldApp})
	tpl.Spec.TopologySpreadConstraints = nil
	tpl.Spec.NodeName = node
	p := &corev1.Pod{ObjectMeta: tpl.ObjectMeta, Spec: tpl.Spec}
	p.Name, p.Namespace = name, "default"
	if optOut {
		p.Annotations = map[string]string{webhook.OptOutAnnotation: "false"}
	}
	return p
}

// setupOptOut runs hold-keep and hold-out (annotated holdfast.dev/autonomy:
// "false") on node3 behind Service hold and checks the tolerations the
// webhook gave them at creation.
func (r *run) setupOptOut(ctx context.Context) bool {
	s, rep := r.s, r.rep
	var err error
	for _, p := range []*corev1.Pod{holdPod("hold-keep", r.victim.Name, false), holdPod("hold-out", r.victim.Name, true)} {
		if _, err = s.cs.CoreV1().Pods("default").Create(ctx, p, metav1.CreateOptions{}); err != nil {
			break
		}
	}
	if err == nil {
		_, err = s.cs.CoreV1().Services("default").Create(ctx, Service(HoldApp), metav1.CreateOptions{})
	}
	var pods []corev1.Pod
	if err == nil {
		pods, err = WaitPodsRunning(ctx, s.cs, "default", HoldApp, 2, []string{r.victim.Name}, 90*time.Second)
	}
	if !rep.Check("opt-out: hold-keep and hold-out (holdfast.dev/autonomy: \"false\") Running on node3 behind Service hold", err) {
		return false
	}
	r.auto = &autonomy{}
	for i := range pods {
		if pods[i].Name == "hold-out" {
			r.auto.out = viewOf(&pods[i])
		} else {
			r.auto.keep = viewOf(&pods[i])
		}
	}
	want := map[string]string{"hold-keep": "forever", "hold-out": fmt.Sprint(s.cloud.TolerationSeconds)}
	var errs []error
	for _, p := range pods {
		got := "none"
		for _, t := range p.Spec.Tolerations {
			if t.Key == webhook.RetainedTaint && t.Effect == corev1.TaintEffectNoExecute {
				got = "forever"
				if t.TolerationSeconds != nil {
					got = fmt.Sprint(*t.TolerationSeconds)
				}
			}
		}
		if got != want[p.Name] {
			errs = append(errs, fmt.Errorf("%s tolerates %s for %s, want %s", p.Name, webhook.RetainedTaint, got, want[p.Name]))
		}
	}
	return rep.Check(fmt.Sprintf("opt-out: the webhook gave hold-keep a toleration of %s forever and hold-out one for its unreachable tolerationSeconds (%d)",
		webhook.RetainedTaint, s.cloud.TolerationSeconds), errors.Join(errs...))
}

// describe prints node's `kubectl describe` view into the report.
func (r *run) describe(ctx context.Context, node, when string) {
	text, err := describeNode(ctx, r.s.cs, node)
	if err != nil {
		text = err.Error()
	}
	r.rep.Mark(node+" described ("+when+")", "kubectl describe node "+node+"\n"+text)
}

// cutShown: after the cut, node3's condition and events say the peers
// keep it.
func (r *run) cutShown(ctx context.Context) {
	cs, rep, n := r.s.cs, r.rep, r.victim.Name
	rep.Check("cut: node3's condition holdfast.dev/PeerVerdict is True, VotedAlive", harness.Eventually(15*time.Second, func() error {
		return wantCondition(ctx, cs, n, corev1.ConditionTrue, webhook.VotedAlive)
	}))
	rep.Check("cut: node3's events say the unreachable taint was dropped and the endpoints kept", harness.Eventually(15*time.Second, func() error {
		return wantEvents(ctx, cs, n, map[string]string{"NoExecuteTaintDropped": "node.kubernetes.io/unreachable:NoExecute (VotedAlive): pods kept: alive by",
			"EndpointsKept": "(VotedAlive)"})
	}))
	r.describe(ctx, n, "cut")
}

// optOutShown runs when tolerationSeconds have passed since node3 went
// NotReady (phase 3): hold-out was evicted by the stock taint-eviction
// controller through holdfast.dev/retained and left the endpoints;
// hold-keep and the workloads stay.
func (r *run) optOutShown(ctx context.Context) {
	if r.auto == nil {
		return
	}
	cs, rep, n := r.s.cs, r.rep, r.victim.Name
	rep.Check("opt-out: node3 carries "+webhook.RetainedTaint+":NoExecute and no unreachable NoExecute taint", func() error {
		node, err := cs.CoreV1().Nodes().Get(ctx, n, metav1.GetOptions{})
		if err != nil {
			return err
		}
		ts := taintStrings(node.Spec.Taints)
		if !slices.Contains(ts, webhook.RetainedTaint+":NoExecute") || slices.Contains(ts, corev1.TaintNodeUnreachable+":NoExecute") {
			return fmt.Errorf("taints %v", ts)
		}
		return nil
	}())
	rep.Check("opt-out: hold-out evicted (deletion started), hold-keep not", harness.Eventually(20*time.Second, func() error {
		out, err1 := cs.CoreV1().Pods("default").Get(ctx, "hold-out", metav1.GetOptions{})
		keep, err2 := cs.CoreV1().Pods("default").Get(ctx, "hold-keep", metav1.GetOptions{})
		switch {
		case err1 != nil && !apierrors.IsNotFound(err1):
			return err1
		case err2 != nil:
			return err2
		case err1 == nil && out.DeletionTimestamp == nil:
			return fmt.Errorf("hold-out not evicted")
		case keep.DeletionTimestamp != nil || string(keep.UID) != r.auto.keep.UID:
			return fmt.Errorf("hold-keep evicted")
		}
		return nil
	}))
	rep.Check("opt-out: in Service hold, hold-keep's endpoint is ready and hold-out's is not", harness.Eventually(20*time.Second, func() error {
		ready, err := holdEndpoints(ctx, r)
		if err != nil {
			return err
		}
		if !ready[r.auto.keep.IP] || ready[r.auto.out.IP] {
			return fmt.Errorf("ready by IP %v (hold-keep %s, hold-out %s)", ready, r.auto.keep.IP, r.auto.out.IP)
		}
		return nil
	}))
	rep.Check("opt-out: node3's events name the opted-out pod", wantEvents(ctx, cs, n, map[string]string{"OptOutEvicting": "default/hold-out"}))
	rep.Check("reboot: node3's condition is still True, VotedAlive", wantCondition(ctx, cs, n, corev1.ConditionTrue, webhook.VotedAlive))
	r.describe(ctx, n, "rebooted offline, tolerationSeconds past")
}

// holdEndpoints maps each IP in Service hold's EndpointSlices to whether
// it is ready.
func holdEndpoints(ctx context.Context, r *run) (map[string]bool, error) {
	list, err := r.s.cs.DiscoveryV1().EndpointSlices("default").List(ctx, metav1.ListOptions{LabelSelector: discoveryv1.LabelServiceName + "=" + HoldApp})
	if err != nil {
		return nil, err
	}
	ready := map[string]bool{}
	for _, sl := range list.Items {
		for _, ep := range sl.Endpoints {
			for _, a := range ep.Addresses {
				ready[a] = ready[a] || ep.Conditions.Ready == nil || *ep.Conditions.Ready
			}
		}
	}
	return ready, nil
}

// reconnectShown: node3 Ready again; the condition says so, the
// holdfast taint is gone, hold-keep was adopted.
func (r *run) reconnectShown(ctx context.Context) {
	cs, rep, n := r.s.cs, r.rep, r.victim.Name
	rep.Check("reconnect: node3's condition is True, VotedAlive, \"node Ready\"", harness.Eventually(15*time.Second, func() error {
		c, err := peerVerdict(ctx, cs, n)
		if err == nil && (c == nil || !strings.HasPrefix(c.Message, "node Ready")) {
			err = fmt.Errorf("condition %+v", c)
		}
		if err != nil {
			return err
		}
		return wantCondition(ctx, cs, n, corev1.ConditionTrue, webhook.VotedAlive)
	}))
	if r.auto != nil {
		rep.Check("reconnect: "+webhook.RetainedTaint+" removed from node3, hold-out gone, hold-keep Running and Ready", harness.Eventually(30*time.Second, func() error {
			node, err := cs.CoreV1().Nodes().Get(ctx, n, metav1.GetOptions{})
			if err != nil {
				return err
			}
			if slices.Contains(taintStrings(node.Spec.Taints), webhook.RetainedTaint+":NoExecute") {
				return fmt.Errorf("taints %v", taintStrings(node.Spec.Taints))
			}
			if _, err := cs.CoreV1().Pods("default").Get(ctx, "hold-out", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
				return fmt.Errorf("hold-out still there (%v)", err)
			}
			keep, err := cs.CoreV1().Pods("default").Get(ctx, "hold-keep", metav1.GetOptions{})
			if err != nil {
				return err
			}
			if string(keep.UID) != r.auto.keep.UID || !podReady(keep) {
				return fmt.Errorf("hold-keep %s ready=%v", keep.UID, podReady(keep))
			}
			return nil
		}))
	}
	r.describe(ctx, n, "reconnected")
}

// durationWatch follows node3 through an outage bounded by its autonomy
// duration: when the unreachable taint first appeared, when each pod's
// deletion was first seen, and the condition's reasons in order.
type durationWatch struct {
	mu        sync.Mutex
	since     time.Time // Ready's lastTransitionTime
	taintAt   time.Time
	deletedAt map[string]time.Time
	reasons   []string
	done      chan struct{}
	stop      context.CancelFunc
}

// AutonomyDuration is node3's holdfast.dev/autonomy-duration in phase 6b.
const AutonomyDuration = 10 * time.Second

// autonomyDuration is phase 6b: node3 cut again, with a short autonomy
// duration, while its peers vote it alive.
func (r *run) autonomyDuration(ctx context.Context) {
	if r.startDuration(ctx) {
		r.finishDuration(ctx)
	}
}

// startDuration annotates node3 with a short autonomy duration, cuts its
// cloud link and watches it.
func (r *run) startDuration(ctx context.Context) bool {
	cs, n := r.s.cs, r.victim.Name
	patch := fmt.Sprintf(`{"metadata":{"annotations":{%q:%q}}}`, webhook.DurationAnnotation, AutonomyDuration.String())
	_, err := cs.CoreV1().Nodes().Patch(ctx, n, types.MergePatchType, []byte(patch), metav1.PatchOptions{})
	if err == nil {
		err = r.victim.CutCloud()
	}
	if !r.rep.Check("duration: node3 annotated "+webhook.DurationAnnotation+"="+AutonomyDuration.String()+" and cut from the cloud again", err) {
		return false
	}
	pods, err := r.s.workloadPods(ctx)
	if err != nil {
		r.rep.Check("duration: list node3's pods", err)
		return false
	}
	on3 := onNode(views(pods), n)
	wctx, cancel := context.WithCancel(ctx)
	w := &durationWatch{deletedAt: map[string]time.Time{}, done: make(chan struct{}), stop: cancel}
	r.duration, r.durationPods = w, on3
	r.rep.Mark("node3 cut (autonomy-duration)", fmt.Sprintf("%s, pods %v", AutonomyDuration, names(on3)))
	go w.run(wctx, r, on3)
	return true
}

func (w *durationWatch) run(ctx context.Context, r *run, pods []podView) {
	defer close(w.done)
	cs, n := r.s.cs, r.victim.Name
	for ctx.Err() == nil {
		now := time.Now()
		if node, err := cs.CoreV1().Nodes().Get(ctx, n, metav1.GetOptions{}); err == nil {
			w.mu.Lock()
			for _, c := range node.Status.Conditions {
				if c.Type == corev1.NodeReady && c.Status != corev1.ConditionTrue {
					w.since = c.LastTransitionTime.Time
				}
				if c.Type == webhook.ConditionType && (len(w.reasons) == 0 || w.reasons[len(w.reasons)-1] != c.Reason) {
					w.reasons = append(w.reasons, c.Reason)
				}
			}
			if w.taintAt.IsZero() && hasNoExecute(node.Spec.Taints) {
				w.taintAt = now
			}
			w.mu.Unlock()
		}
		if all, err := r.s.workloadPods(ctx); err == nil {
			w.mu.Lock()
			for _, v := range pods {
				if p := podByUID(all, v.UID); (p == nil || p.DeletionTimestamp != nil) && w.deletedAt[v.Name].IsZero() {
					w.deletedAt[v.Name] = now
				}
			}
			w.mu.Unlock()
		}
		select {
		case <-ctx.Done():
		case <-time.After(500 * time.Millisecond):
		}
	}
}

func hasNoExecute(ts []corev1.Taint) bool {
	return slices.ContainsFunc(ts, func(t corev1.Taint) bool {
		return t.Effect == corev1.TaintEffectNoExecute && (t.Key == corev1.TaintNodeUnreachable || t.Key == corev1.TaintNodeNotReady)
	})
}

// finishDuration waits for node3's pods to be evicted and checks they were
// kept until the duration had passed: the unreachable taint lands only
// after it, eviction follows it by tolerationSeconds, the condition went
// VotedAlive → DurationExpired; then node3 is reconnected.
func (r *run) finishDuration(ctx context.Context) {
	w := r.duration
	if w == nil {
		return
	}
	s, rep, n := r.s, r.rep, r.victim.Name
	tol := time.Duration(s.cloud.TolerationSeconds) * time.Second
	rep.Check("duration: node3 goes NotReady", WaitNodeNotReady(ctx, s.cs, n, s.cloud.GracePeriod+40*time.Second))
	rep.Check("duration: node1 and node2 vote node3 alive", WaitVerdicts(ctx, []*Node{s.node("node1"), s.node("node2")}, map[string]string{n: "alive"}, 15*time.Second))
	rep.Check("duration: node3's condition is True, VotedAlive while the duration runs", harness.Eventually(10*time.Second, func() error {
		return wantCondition(ctx, s.cs, n, corev1.ConditionTrue, webhook.VotedAlive)
	}))
	err := harness.Eventually(s.cloud.GracePeriod+AutonomyDuration+tol+60*time.Second, func() error {
		w.mu.Lock()
		defer w.mu.Unlock()
		if len(w.deletedAt) < len(r.durationPods) {
			return fmt.Errorf("evicted so far %v of %v", w.deletedAt, names(r.durationPods))
		}
		return nil
	})
	w.stop()
	<-w.done
	rep.Check("duration: node3's pods evicted", err)
	w.mu.Lock()
	expiry := w.since.Add(AutonomyDuration)
	var early []string
	first := time.Time{}
	for name, at := range w.deletedAt {
		// The stock taint-eviction controller evicts tolerationSeconds
		// after it sees the taint; the taint can only come after expiry.
		if at.Before(expiry.Add(tol)) {
			early = append(early, fmt.Sprintf("%s at %v", name, at.Sub(w.since).Round(100*time.Millisecond)))
		}
		if first.IsZero() || at.Before(first) {
			first = at
		}
	}
	taint, reasons, since := w.taintAt, w.reasons, w.since
	w.mu.Unlock()
	rep.Check(fmt.Sprintf("duration: the unreachable NoExecute taint landed after the duration (%v after NotReady, duration %v)", taint.Sub(since).Round(100*time.Millisecond), AutonomyDuration),
		condErr(!since.IsZero() && !taint.IsZero() && !taint.Before(expiry), fmt.Sprintf("NotReady since %v, taint seen %v, expiry %v", since, taint, expiry)))
	rep.Check(fmt.Sprintf("duration: no pod evicted before duration + tolerationSeconds (first at %v after NotReady)", first.Sub(since).Round(100*time.Millisecond)),
		condErr(len(early) == 0, fmt.Sprintf("evicted early: %v", early)))
	rep.Check("duration: node3's condition went VotedAlive → DurationExpired", condErr(slices.Equal(lastTwo(reasons), []string{string(webhook.VotedAlive), string(webhook.DurationExpired)}),
		fmt.Sprintf("reasons seen %v", reasons)))
	rep.Check("duration: node3's condition is True (still voted alive), DurationExpired", wantCondition(ctx, s.cs, n, corev1.ConditionTrue, webhook.DurationExpired))
	rep.Check("duration: node3's events say the taint was let through and the endpoints released (DurationExpired)", wantEvents(ctx, s.cs, n, map[string]string{
		"NoExecuteTaintAllowed": "(DurationExpired): normal Kubernetes: not Ready since", "EndpointsReleased": "(DurationExpired)"}))
	rep.Check("duration: node3's endpoints no longer ready", harness.Eventually(30*time.Second, func() error {
		return endpointsReady(ctx, s, r.durationPods, false)
	}))
	rep.Mark("node3 pods evicted (duration)", fmt.Sprintf("taint %.1fs, first eviction %.1fs after NotReady", taint.Sub(since).Seconds(), first.Sub(since).Seconds()))
	r.describe(ctx, n, "autonomy-duration expired")
	patch := fmt.Sprintf(`{"metadata":{"annotations":{%q:null}}}`, webhook.DurationAnnotation)
	_, err = s.cs.CoreV1().Nodes().Patch(ctx, n, types.MergePatchType, []byte(patch), metav1.PatchOptions{})
	if err == nil {
		err = r.victim.RestoreCloud()
	}
	if err == nil {
		err = WaitNodesReady(ctx, s.cs, []string{n}, 60*time.Second)
	}
	rep.Check("duration: node3 reconnected and Ready", err)
}

func lastTwo(s []string) []string {
	if len(s) < 2 {
		return s
	}
	return s[len(s)-2:]
}

// alwaysRetain is phase 7: the webhook restarted with --policy
// always-retain and --no-quorum-policy evict (so without always-retain
// the node would be released), node1 powered off. With node2 off too,
// node3 alone has no quorum; node1 keeps its pods and endpoints past
// tolerationSeconds, and its condition says AlwaysRetain.
func (r *run) alwaysRetain(ctx context.Context) {
	s, rep := r.s, r.rep
	n1 := s.node("node1")
	err := s.cloud.RestartWebhook(ctx, s.cs, "--policy", "always-retain", "--no-quorum-policy", "evict")
	if !rep.Check("always-retain: webhook restarted with --policy always-retain --no-quorum-policy evict", err) {
		return
	}
	pods, err := s.workloadPods(ctx)
	on1 := onNode(views(pods), n1.Name)
	if err == nil && len(on1) == 0 {
		err = fmt.Errorf("node1 runs no workload pod")
	}
	if err == nil {
		err = n1.PowerOff()
	}
	if !rep.Check("always-retain: node1 (running "+strings.Join(names(on1), ",")+") powered off", err) {
		return
	}
	at := time.Now()
	rep.Mark("node1 powered off (always-retain)", fmt.Sprintf("pods %v", names(on1)))
	rep.Check("always-retain: node1 goes NotReady", WaitNodeNotReady(ctx, s.cs, n1.Name, s.cloud.GracePeriod+40*time.Second))
	notReady := time.Now()
	rep.Mark("node1 not ready", fmt.Sprintf("%.1fs after power-off", time.Since(at).Seconds()))
	rep.Check("always-retain: node1's condition is Unknown (no quorum), AlwaysRetain", harness.Eventually(15*time.Second, func() error {
		return wantCondition(ctx, s.cs, n1.Name, corev1.ConditionUnknown, webhook.ReasonAlwaysRetain)
	}))
	if wait := time.Duration(s.cloud.TolerationSeconds+5)*time.Second - time.Since(notReady); wait > 0 {
		time.Sleep(wait) // the eviction would be due by now
	}
	since := time.Since(notReady).Round(time.Second)
	err = noExecuteTaints(ctx, s, n1.Name, false)
	if err == nil {
		err = samePods(ctx, s, on1)
	}
	rep.Check(fmt.Sprintf("always-retain: no NoExecute taint, no eviction of node1's pods %v after NotReady (tolerationSeconds %d)", since, s.cloud.TolerationSeconds), err)
	rep.Check("always-retain: node1's endpoints still ready in the EndpointSlices", endpointsReady(ctx, s, on1, true))
	rep.Check("always-retain: node1's events say the taint was dropped and the endpoints kept (AlwaysRetain)", wantEvents(ctx, s.cs, n1.Name, map[string]string{
		"NoExecuteTaintDropped": "(AlwaysRetain): pods kept (policy always-retain)", "EndpointsKept": "(AlwaysRetain)"}))
	n, err := s.cloud.WebhookDecisions(ctx, "Node", webhook.ReasonAlwaysRetain)
	if err == nil && n == 0 {
		err = fmt.Errorf("holdfast_webhook_decisions_total{object=Node,reason=AlwaysRetain} is 0")
	}
	rep.Check(fmt.Sprintf("always-retain: the webhook's metrics count the decisions (%d on Node updates)", n), err)
	rep.Mark("node1 kept (always-retain)", fmt.Sprintf("%v after NotReady", since))
	r.describe(ctx, n1.Name, "powered off, always-retain")
}
