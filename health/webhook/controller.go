package webhook

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/record"

	"github.com/holdfast-edge/holdfast/internal/kubeclient"
)

// Cluster is what the Controller reads: the mutator's State plus lists.
type Cluster interface {
	State
	Nodes() []*corev1.Node
	PodsOn(node string) []*corev1.Pod
}

// Controller shows on every Node what holdfast decided and carries out
// what admission alone cannot: it writes the condition
// holdfast.dev/PeerVerdict, records EndpointsKept/EndpointsReleased events,
// lifts the lifecycle controller's NoExecute taint from a node kept again,
// and puts the holdfast.dev/retained taint on a kept node that runs
// opted-out pods (and takes it away). One replica runs it (leader
// election in cmd/holdfastd).
type Controller struct {
	Cluster  Cluster
	Decider  *Decider
	Client   kubeclient.Interface
	Events   record.EventRecorder
	Log      *slog.Logger
	Metrics  *Metrics // nil: none
	Period   time.Duration
	Refresh  time.Duration // rewrite an unchanged condition this often
	Now      func() time.Time
	written  map[string]string // node → summary of the condition written
	epEvents map[string]string // node → what the last endpoints event said
	blocked  map[string]string // node → last opt-out-blocked event
}

// Run syncs every Period until ctx ends.
func (c *Controller) Run(ctx context.Context) {
	t := time.NewTicker(c.Period)
	defer t.Stop()
	for {
		c.Sync(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (c *Controller) now() time.Time {
	if c.Now != nil {
		return c.Now()
	}
	return time.Now()
}

// Sync applies the decision of every Node once.
func (c *Controller) Sync(ctx context.Context) {
	if c.written == nil {
		c.written, c.epEvents, c.blocked = map[string]string{}, map[string]string{}, map[string]string{}
	}
	now := c.now()
	count := map[Reason]int{}
	for _, n := range c.Cluster.Nodes() {
		d := c.Decider.Decide(InfoOf(n, c.Cluster.Tally(n.Name)), now)
		count[d.Reason]++
		if err := c.writeCondition(ctx, n, d, now); err != nil {
			c.Log.Warn("write node condition", "node", n.Name, "err", err)
		}
		c.endpointsEvent(n, d)
		if err := c.syncTaints(ctx, n, d, now); err != nil {
			c.Log.Warn("sync node taints", "node", n.Name, "err", err)
		}
	}
	if c.Metrics != nil {
		for _, r := range Reasons {
			c.Metrics.Nodes.WithLabelValues(string(r)).Set(float64(count[r]))
		}
	}
}

// writeCondition patches the node's status with the decision when its
// status, reason or summary changed, or when it is older than Refresh.
func (c *Controller) writeCondition(ctx context.Context, n *corev1.Node, d Decision, now time.Time) error {
	var cur *corev1.NodeCondition
	for i := range n.Status.Conditions {
		if n.Status.Conditions[i].Type == ConditionType {
			cur = &n.Status.Conditions[i]
		}
	}
	if cur != nil && cur.Status == d.Status && cur.Reason == string(d.Reason) && c.written[n.Name] == d.Summary &&
		now.Sub(cur.LastHeartbeatTime.Time) < c.Refresh {
		return nil
	}
	transition := metav1.NewTime(now)
	if cur != nil && cur.Status == d.Status {
		transition = cur.LastTransitionTime
	}
	cond := corev1.NodeCondition{Type: ConditionType, Status: d.Status, Reason: string(d.Reason), Message: d.Message,
		LastHeartbeatTime: metav1.NewTime(now), LastTransitionTime: transition}
	patch, err := json.Marshal(map[string]any{"status": map[string]any{"conditions": []corev1.NodeCondition{cond}}})
	if err != nil {
		return err
	}
	if _, err := c.Client.Nodes().Patch(ctx, n.Name, types.StrategicMergePatchType, patch, metav1.PatchOptions{}, "status"); err != nil {
		return err
	}
	c.written[n.Name] = d.Summary
	return nil
}

// endpointsEvent records, once per outage and decision, whether the
// pods' endpoints of a not-Ready node are kept ready or released.
func (c *Controller) endpointsEvent(n *corev1.Node, d Decision) {
	since, notReady := notReadySince(n)
	if !notReady || since.IsZero() { // Ready, or just registered (no Ready condition yet)
		delete(c.epEvents, n.Name)
		return
	}
	key := fmt.Sprintf("%s|%v|%s", since, d.Keep, d.Reason)
	if c.epEvents[n.Name] == key {
		return
	}
	c.epEvents[n.Name] = key
	if d.Keep {
		c.Events.Eventf(n, corev1.EventTypeNormal, "EndpointsKept", "endpoints of this node's pods kept ready (%s): %s", d.Reason, d.Message)
	} else {
		c.Events.Eventf(n, corev1.EventTypeWarning, "EndpointsReleased", "endpoints of this node's pods follow Kubernetes (%s): %s", d.Reason, d.Message)
	}
}

// syncTaints carries out the decision on the node's NoExecute taints.
//
// The node lifecycle controller's unreachable/not-ready NoExecute taint is
// lifted from a node the decision keeps. Admission drops it when it is
// added to a kept node, but a node can be released for a moment and kept
// again: its peers vote it dead while it reboots offline, and the taint
// the lifecycle controller retries then goes through. Without this the
// taint would stay, and its pods be evicted tolerationSeconds later,
// although the node is voted alive again.
//
// holdfast.dev/retained:NoExecute is kept on a kept node while opted-out
// pods run on it and every other pod tolerates the taint (a pod created
// before the webhook, or while it was down, lacks the toleration and would
// be evicted too: then nothing is tainted and a Warning event names it).
// Anywhere else it is removed.
func (c *Controller) syncTaints(ctx context.Context, n *corev1.Node, d Decision, now time.Time) (err error) {
	var lifted []string
	if d.Keep {
		for _, t := range n.Spec.Taints {
			if isControllerTaint(t) {
				lifted = append(lifted, t.Key+":"+string(t.Effect))
			}
		}
		defer func() {
			if len(lifted) > 0 && err == nil {
				c.Log.Info("lifted the NoExecute taint of a kept node", "node", n.Name, "taints", lifted, "reason", d.Reason)
				c.Events.Eventf(n, corev1.EventTypeNormal, "NoExecuteTaintLifted", "removed %s (%s): %s", strings.Join(lifted, ", "), d.Reason, d.Message)
			}
		}()
	}
	want := false
	if d.Keep {
		var out, lacking []string
		for _, p := range c.Cluster.PodsOn(n.Name) {
			switch {
			case OptedOut(p.Annotations):
				out = append(out, p.Namespace+"/"+p.Name)
			case !tolerates(p.Spec.Tolerations, RetainedTaint):
				lacking = append(lacking, p.Namespace+"/"+p.Name)
			}
		}
		sort.Strings(out)
		sort.Strings(lacking)
		want = len(out) > 0 && len(lacking) == 0
		if len(out) > 0 && len(lacking) > 0 {
			msg := fmt.Sprintf("pods %s opted out of autonomy but are kept: pods %s do not tolerate %s", strings.Join(out, ", "), strings.Join(lacking, ", "), RetainedTaint)
			if c.blocked[n.Name] != msg {
				c.blocked[n.Name] = msg
				c.Events.Event(n, corev1.EventTypeWarning, "OptOutBlocked", msg)
			}
		}
		defer func() {
			if want && err == nil && !hasTaint(n.Spec.Taints, RetainedTaint, corev1.TaintEffectNoExecute) {
				c.Events.Eventf(n, corev1.EventTypeNormal, "OptOutEvicting", "tainted %s:NoExecute: pods %s opted out of autonomy and are evicted on their own unreachable toleration", RetainedTaint, strings.Join(out, ", "))
			}
		}()
	} else {
		delete(c.blocked, n.Name)
	}
	has := hasTaint(n.Spec.Taints, RetainedTaint, corev1.TaintEffectNoExecute)
	if want == has && len(lifted) == 0 {
		return nil
	}
	var taints []corev1.Taint
	for _, t := range n.Spec.Taints {
		if t.Key != RetainedTaint && (!d.Keep || !isControllerTaint(t)) {
			taints = append(taints, t)
		}
	}
	if want {
		added := metav1.NewTime(now)
		taints = append(taints, corev1.Taint{Key: RetainedTaint, Effect: corev1.TaintEffectNoExecute, TimeAdded: &added})
	}
	// The patch tests the resourceVersion first: after a concurrent change
	// of the node (the node lifecycle controller's taints) it fails, and
	// the next sync tries again on the new object.
	if taints == nil {
		taints = []corev1.Taint{}
	}
	patch, perr := json.Marshal([]Op{
		{Op: "test", Path: "/metadata/resourceVersion", Value: n.ResourceVersion},
		{Op: "add", Path: "/spec/taints", Value: taints},
	})
	if perr != nil {
		return perr
	}
	_, err = c.Client.Nodes().Patch(ctx, n.Name, types.JSONPatchType, patch, metav1.PatchOptions{})
	return err
}

// Metrics are the webhook's decision metrics.
type Metrics struct {
	Decisions *prometheus.CounterVec
	Nodes     *prometheus.GaugeVec
}

// NewMetrics registers them.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		Decisions: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "holdfast_webhook_decisions_total",
			Help: "Decisions on objects of not-Ready nodes (a Node update adding the controller's NoExecute taint, an endpoint), by object kind and reason."}, []string{"object", "reason"}),
		Nodes: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "holdfast_webhook_nodes",
			Help: "Nodes by the reason of their holdfast.dev/PeerVerdict condition (the leader's last sync)."}, []string{"reason"}),
	}
	reg.MustRegister(m.Decisions, m.Nodes)
	return m
}

// Observe counts one decision (Mutator.Observe).
func (m *Metrics) Observe(object string, r Reason) {
	m.Decisions.WithLabelValues(object, string(r)).Inc()
}
