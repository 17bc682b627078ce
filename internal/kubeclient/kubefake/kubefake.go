// Package kubefake adapts client-go's fake clientset to kubeclient.Interface
// for unit tests. Only tests import it: holdfastd links no clientset.
package kubefake

import (
	"context"

	coordv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/holdfast-edge/holdfast/internal/kubeclient"
)

// Wrap serves kubeclient.Interface from cs (typically
// k8s.io/client-go/kubernetes/fake's clientset). Reachable answers
// kubeclient.ErrNotProbed.
func Wrap(cs kubernetes.Interface) kubeclient.Interface { return wrapped{cs} }

type wrapped struct{ cs kubernetes.Interface }

func (w wrapped) Nodes() kubeclient.Resource[*corev1.Node, *corev1.NodeList] {
	return w.cs.CoreV1().Nodes()
}

func (w wrapped) Pods(ns string) kubeclient.Resource[*corev1.Pod, *corev1.PodList] {
	return w.cs.CoreV1().Pods(ns)
}

func (w wrapped) Namespaces() kubeclient.Resource[*corev1.Namespace, *corev1.NamespaceList] {
	return w.cs.CoreV1().Namespaces()
}

func (w wrapped) Services(ns string) kubeclient.Resource[*corev1.Service, *corev1.ServiceList] {
	return w.cs.CoreV1().Services(ns)
}

func (w wrapped) Events(ns string) kubeclient.Resource[*corev1.Event, *corev1.EventList] {
	return w.cs.CoreV1().Events(ns)
}

func (w wrapped) Leases(ns string) kubeclient.Resource[*coordv1.Lease, *coordv1.LeaseList] {
	return w.cs.CoordinationV1().Leases(ns)
}

func (w wrapped) EndpointSlices(ns string) kubeclient.Resource[*discoveryv1.EndpointSlice, *discoveryv1.EndpointSliceList] {
	return w.cs.DiscoveryV1().EndpointSlices(ns)
}

func (wrapped) Reachable(context.Context) error { return kubeclient.ErrNotProbed }
