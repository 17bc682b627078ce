//go:build e2e

package e2e

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"time"

	"github.com/miekg/dns"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/holdfast-edge/holdfast/test/harness"
)

// What the cloud and the nodes' DNS say about a set of pods.

// onNode filters views by node.
func onNode(vs []podView, node string) []podView {
	var out []podView
	for _, v := range vs {
		if v.Node == node {
			out = append(out, v)
		}
	}
	return out
}

// podByUID finds a pod by UID (nil if gone).
func podByUID(pods []corev1.Pod, uid string) *corev1.Pod {
	i := slices.IndexFunc(pods, func(p corev1.Pod) bool { return string(p.UID) == uid })
	if i < 0 {
		return nil
	}
	return &pods[i]
}

// dbTargets are each given StatefulSet pod by its DNS name.
func dbTargets(db []podView) []target {
	var ts []target
	for _, v := range db {
		ts = append(ts, target{host: v.Name + "." + DBApp + ".default.svc.cluster.local", want: v.Name})
	}
	return ts
}

// podsReady checks each pod's Ready condition in the apiserver against want.
func podsReady(ctx context.Context, s *site, vs []podView, want bool) error {
	pods, err := s.workloadPods(ctx)
	if err != nil {
		return err
	}
	var errs []error
	for _, v := range vs {
		p := podByUID(pods, v.UID)
		if p == nil {
			errs = append(errs, fmt.Errorf("%s gone", v.Name))
		} else if podReady(p) != want {
			errs = append(errs, fmt.Errorf("%s Ready=%v, want %v", v.Name, !want, want))
		}
	}
	return errors.Join(errs...)
}

// endpointsReady checks each pod's IP in the EndpointSlices of the
// workloads' Services: with want, present and ready; without, absent or
// not ready.
func endpointsReady(ctx context.Context, s *site, vs []podView, want bool) error {
	list, err := s.cs.DiscoveryV1().EndpointSlices("default").List(ctx, metav1.ListOptions{})
	if err != nil {
		return err
	}
	ready := map[string]bool{} // ip → ready in some slice
	seen := map[string]bool{}
	for _, sl := range list.Items {
		svc := sl.Labels[discoveryv1.LabelServiceName]
		if svc != WebApp && svc != DBApp {
			continue
		}
		for _, ep := range sl.Endpoints {
			r := ep.Conditions.Ready == nil || *ep.Conditions.Ready
			for _, a := range ep.Addresses {
				seen[a] = true
				ready[a] = ready[a] || r
			}
		}
	}
	var errs []error
	for _, v := range vs {
		switch {
		case want && !seen[v.IP]:
			errs = append(errs, fmt.Errorf("%s (%s) is in no EndpointSlice", v.Name, v.IP))
		case ready[v.IP] != want:
			errs = append(errs, fmt.Errorf("%s (%s) ready=%v in the EndpointSlices, want %v", v.Name, v.IP, ready[v.IP], want))
		}
	}
	return errors.Join(errs...)
}

// noExecuteTaints checks whether the node carries the node lifecycle
// controller's NoExecute taints (unreachable or not-ready).
func noExecuteTaints(ctx context.Context, s *site, node string, want bool) error {
	n, err := s.cs.CoreV1().Nodes().Get(ctx, node, metav1.GetOptions{})
	if err != nil {
		return err
	}
	var found []string
	for _, t := range n.Spec.Taints {
		if t.Effect == corev1.TaintEffectNoExecute && (t.Key == corev1.TaintNodeUnreachable || t.Key == corev1.TaintNodeNotReady) {
			found = append(found, t.Key)
		}
	}
	if (len(found) > 0) != want {
		return fmt.Errorf("%s NoExecute taints %v (want present=%v); all taints %v", node, found, want, n.Spec.Taints)
	}
	return nil
}

// deletionStarted checks that every pod is gone or has a deletion
// timestamp (evicted).
func deletionStarted(ctx context.Context, s *site, vs []podView) error {
	pods, err := s.workloadPods(ctx)
	if err != nil {
		return err
	}
	var errs []error
	for _, v := range vs {
		if p := podByUID(pods, v.UID); p != nil && p.DeletionTimestamp == nil {
			errs = append(errs, fmt.Errorf("%s not evicted", v.Name))
		}
	}
	return errors.Join(errs...)
}

// dbAnswer asks node n's holdfast DNS for the headless db Service and
// checks that subject's pods are (present) or are not (!present) in the
// answer, while the other db pods on live nodes are.
func dbAnswer(ctx context.Context, n *Node, db []corev1.Pod, subject []podView, present bool) error {
	if len(subject) == 0 {
		return fmt.Errorf("no db pod to look for")
	}
	return harness.Eventually(20*time.Second, func() error {
		m, err := ask(ctx, n.NSPath, net.JoinHostPort(ClusterDNS, "53"), DBApp+".default.svc.cluster.local", dns.TypeA)
		if err != nil {
			return err
		}
		got := map[string]bool{}
		for _, rr := range m.Answer {
			if a, ok := rr.(*dns.A); ok {
				got[a.A.String()] = true
			}
		}
		for _, v := range subject {
			if got[v.IP] != present {
				return fmt.Errorf("%s (%s) in %s's answer: %v, want %v; answer %s", v.Name, v.IP, n.Name, got[v.IP], present, render(m))
			}
		}
		return nil
	})
}
