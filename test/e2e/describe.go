//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"fmt"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/holdfast-edge/holdfast/health/webhook"
)

// What `kubectl describe node` shows of holdfast's decision: the taints,
// the conditions (holdfast.dev/PeerVerdict among them) and the Node's events.

// describeNode renders a Node's taints, conditions and events the way
// kubectl describe lays them out.
func describeNode(ctx context.Context, cs kubernetes.Interface, name string) (string, error) {
	n, err := cs.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return "", err
	}
	evs, err := nodeEvents(ctx, cs, name)
	if err != nil {
		return "", err
	}
	var b bytes.Buffer
	fmt.Fprintf(&b, "Name:   %s\nTaints: %s\nConditions:\n", n.Name, strings.Join(taintStrings(n.Spec.Taints), ", "))
	w := tabwriter.NewWriter(&b, 2, 4, 2, ' ', 0)
	fmt.Fprintln(w, "  Type\tStatus\tLastHeartbeatTime\tLastTransitionTime\tReason\tMessage")
	for _, c := range n.Status.Conditions {
		fmt.Fprintf(w, "  %s\t%s\t%s\t%s\t%s\t%s\n", c.Type, c.Status, c.LastHeartbeatTime.UTC().Format(time.TimeOnly),
			c.LastTransitionTime.UTC().Format(time.TimeOnly), c.Reason, c.Message)
	}
	w.Flush()
	fmt.Fprintln(&b, "Events:")
	w = tabwriter.NewWriter(&b, 2, 4, 2, ' ', 0)
	fmt.Fprintln(w, "  Type\tReason\tAge\tFrom\tMessage")
	now := time.Now()
	for _, e := range evs {
		last, from := e.LastTimestamp.Time, e.Source.Component
		if last.IsZero() { // an events.k8s.io event: eventTime, reportingController
			last, from = e.EventTime.Time, e.ReportingController
		}
		age := now.Sub(last).Round(time.Second).String()
		if e.Count > 1 {
			age += fmt.Sprintf(" (x%d over %v)", e.Count, now.Sub(e.FirstTimestamp.Time).Round(time.Second))
		}
		fmt.Fprintf(w, "  %s\t%s\t%s\t%s\t%s\n", e.Type, e.Reason, age, from, e.Message)
	}
	w.Flush()
	return b.String(), nil
}

// nodeEvents are the events about a Node, oldest first.
func nodeEvents(ctx context.Context, cs kubernetes.Interface, name string) ([]corev1.Event, error) {
	list, err := cs.CoreV1().Events("").List(ctx, metav1.ListOptions{FieldSelector: "involvedObject.kind=Node,involvedObject.name=" + name})
	if err != nil {
		return nil, err
	}
	evs := list.Items
	sort.SliceStable(evs, func(i, j int) bool { return evs[i].LastTimestamp.Before(&evs[j].LastTimestamp) })
	return evs, nil
}

func taintStrings(ts []corev1.Taint) []string {
	out := []string{}
	for _, t := range ts {
		out = append(out, t.Key+":"+string(t.Effect))
	}
	if len(out) == 0 {
		return []string{"<none>"}
	}
	return out
}

// peerVerdict is the Node's holdfast.dev/PeerVerdict condition (nil if none).
func peerVerdict(ctx context.Context, cs kubernetes.Interface, name string) (*corev1.NodeCondition, error) {
	n, err := cs.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return nil, err
	}
	for i := range n.Status.Conditions {
		if n.Status.Conditions[i].Type == webhook.ConditionType {
			return &n.Status.Conditions[i], nil
		}
	}
	return nil, nil
}

// wantCondition checks the PeerVerdict condition's status and reason.
func wantCondition(ctx context.Context, cs kubernetes.Interface, name string, status corev1.ConditionStatus, reason webhook.Reason) error {
	c, err := peerVerdict(ctx, cs, name)
	if err != nil {
		return err
	}
	if c == nil {
		return fmt.Errorf("%s has no %s condition", name, webhook.ConditionType)
	}
	if c.Status != status || c.Reason != string(reason) {
		return fmt.Errorf("%s: %s %s %s %q, want %s %s", name, c.Type, c.Status, c.Reason, c.Message, status, reason)
	}
	return nil
}

// wantEvents checks that the Node has an event of each reason from
// holdfast-webhook whose message contains the given text.
func wantEvents(ctx context.Context, cs kubernetes.Interface, name string, want map[string]string) error {
	evs, err := nodeEvents(ctx, cs, name)
	if err != nil {
		return err
	}
	var missing []string
	for reason, text := range want {
		found := false
		for _, e := range evs {
			if e.Source.Component == "holdfast-webhook" && e.Reason == reason && strings.Contains(e.Message, text) {
				found = true
			}
		}
		if !found {
			missing = append(missing, fmt.Sprintf("%s (%q)", reason, text))
		}
	}
	if len(missing) > 0 {
		var have []string
		for _, e := range evs {
			have = append(have, e.Reason+": "+e.Message)
		}
		return fmt.Errorf("%s lacks events %v; has %v", name, missing, have)
	}
	return nil
}
