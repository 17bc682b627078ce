//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"sort"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"

	"github.com/holdfast-edge/holdfast/test/harness"
)

// SetPodCIDR sets spec.podCIDR(s) of a registered Node to the harness plan
// (the controller-manager runs with --allocate-node-cidrs=false), once the
// kubelet has registered it.
func SetPodCIDR(ctx context.Context, cs kubernetes.Interface, name, cidr string, timeout time.Duration) error {
	return harness.Eventually(timeout, func() error {
		node, err := cs.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return fmt.Errorf("node %s not registered: %w", name, err)
		}
		if node.Spec.PodCIDR == cidr {
			return nil
		}
		patch, _ := json.Marshal(map[string]any{"spec": map[string]any{"podCIDR": cidr, "podCIDRs": []string{cidr}}})
		_, err = cs.CoreV1().Nodes().Patch(ctx, name, types.StrategicMergePatchType, patch, metav1.PatchOptions{})
		return err
	})
}

// NodeReady returns the node's Ready condition status ("" if absent).
func NodeReady(ctx context.Context, cs kubernetes.Interface, name string) (corev1.ConditionStatus, error) {
	node, err := cs.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return "", err
	}
	for _, c := range node.Status.Conditions {
		if c.Type == corev1.NodeReady {
			return c.Status, nil
		}
	}
	return "", nil
}

// WaitNodesReady waits until every named node is Ready.
func WaitNodesReady(ctx context.Context, cs kubernetes.Interface, names []string, timeout time.Duration) error {
	return harness.Eventually(timeout, func() error {
		var notReady []string
		for _, name := range names {
			st, err := NodeReady(ctx, cs, name)
			if err != nil || st != corev1.ConditionTrue {
				notReady = append(notReady, fmt.Sprintf("%s=%s%v", name, st, errSuffix(err)))
			}
		}
		if len(notReady) > 0 {
			return fmt.Errorf("nodes not Ready: %s", strings.Join(notReady, ", "))
		}
		return nil
	})
}

// WaitNodeNotReady waits until the node's Ready condition is no longer True.
func WaitNodeNotReady(ctx context.Context, cs kubernetes.Interface, name string, timeout time.Duration) error {
	return harness.Eventually(timeout, func() error {
		st, err := NodeReady(ctx, cs, name)
		if err == nil && st == corev1.ConditionTrue {
			err = fmt.Errorf("%s still Ready", name)
		}
		return err
	})
}

func errSuffix(err error) string {
	if err == nil {
		return ""
	}
	return " (" + err.Error() + ")"
}

// AppLabel selects the test's workload pods.
const AppLabel = "holdfast.dev/e2e-app"

// WhoPath is the page where a workload pod serves its own name
// (hostname), so a request through a Service says which pod answered.
const WhoPath = "/who"

// podTemplate is a busybox HTTP server on harness.PodHTTPPort (the harness
// page at /, the pod's hostname at WhoPath) spread over every node
// (hostname topology spread), using only the images the harness imported
// into each containerd (no registry: imagePullPolicy Never).
func podTemplate(labels map[string]string) corev1.PodTemplateSpec {
	grace := int64(2)
	serve := fmt.Sprintf("hostname > /var/www%s && exec %s", WhoPath, strings.Join(harness.DefaultCommand, " "))
	return corev1.PodTemplateSpec{
		ObjectMeta: metav1.ObjectMeta{Labels: labels},
		Spec: corev1.PodSpec{
			TerminationGracePeriodSeconds: &grace,
			TopologySpreadConstraints: []corev1.TopologySpreadConstraint{{
				MaxSkew:           1,
				TopologyKey:       corev1.LabelHostname,
				WhenUnsatisfiable: corev1.DoNotSchedule,
				LabelSelector:     &metav1.LabelSelector{MatchLabels: labels},
			}},
			Containers: []corev1.Container{{
				Name:            "app",
				Image:           harness.BusyboxImage,
				ImagePullPolicy: corev1.PullNever,
				Command:         []string{"/bin/sh", "-c", serve},
				Ports:           []corev1.ContainerPort{{Name: "http", ContainerPort: harness.PodHTTPPort}},
				ReadinessProbe: &corev1.Probe{
					ProbeHandler:  corev1.ProbeHandler{TCPSocket: &corev1.TCPSocketAction{Port: intstr.FromInt32(harness.PodHTTPPort)}},
					PeriodSeconds: 2,
				},
			}},
		},
	}
}

// Deployment runs replicas of podTemplate.
func Deployment(name string, replicas int32) *appsv1.Deployment {
	labels := map[string]string{AppLabel: name}
	return &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default", Labels: labels},
		Spec: appsv1.DeploymentSpec{
			Replicas: &replicas,
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: podTemplate(labels),
		},
	}
}

// StatefulSet runs replicas of podTemplate as <name>-<i>, named in DNS
// through the headless Service of the same name.
func StatefulSet(name string, replicas int32) *appsv1.StatefulSet {
	labels := map[string]string{AppLabel: name}
	return &appsv1.StatefulSet{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default", Labels: labels},
		Spec: appsv1.StatefulSetSpec{
			Replicas:            &replicas,
			ServiceName:         name,
			PodManagementPolicy: appsv1.ParallelPodManagement,
			Selector:            &metav1.LabelSelector{MatchLabels: labels},
			Template:            podTemplate(labels),
		},
	}
}

// CreateDeployment creates (or replaces) d.
func CreateDeployment(ctx context.Context, cs kubernetes.Interface, d *appsv1.Deployment) error {
	_, err := cs.AppsV1().Deployments(d.Namespace).Create(ctx, d, metav1.CreateOptions{})
	if apierrors.IsAlreadyExists(err) {
		_, err = cs.AppsV1().Deployments(d.Namespace).Update(ctx, d, metav1.UpdateOptions{})
	}
	return err
}

// CreateStatefulSet creates (or replaces) st.
func CreateStatefulSet(ctx context.Context, cs kubernetes.Interface, st *appsv1.StatefulSet) error {
	_, err := cs.AppsV1().StatefulSets(st.Namespace).Create(ctx, st, metav1.CreateOptions{})
	if apierrors.IsAlreadyExists(err) {
		_, err = cs.AppsV1().StatefulSets(st.Namespace).Update(ctx, st, metav1.UpdateOptions{})
	}
	return err
}

// PodsOf lists the pods of an app label, sorted by name.
func PodsOf(ctx context.Context, cs kubernetes.Interface, ns, app string) ([]corev1.Pod, error) {
	list, err := cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: AppLabel + "=" + app})
	if err != nil {
		return nil, err
	}
	pods := list.Items
	sort.Slice(pods, func(i, j int) bool { return pods[i].Name < pods[j].Name })
	return pods, nil
}

// WaitPodsRunning waits until want pods of app are Running and Ready, and
// spread so that every node in nodes has at least one. It returns them.
func WaitPodsRunning(ctx context.Context, cs kubernetes.Interface, ns, app string, want int, nodes []string, timeout time.Duration) ([]corev1.Pod, error) {
	var pods []corev1.Pod
	err := harness.Eventually(timeout, func() error {
		var err error
		pods, err = PodsOf(ctx, cs, ns, app)
		if err != nil {
			return err
		}
		perNode := map[string]int{}
		var bad []string
		running := 0
		for _, p := range pods {
			if p.DeletionTimestamp != nil {
				continue
			}
			if p.Status.Phase != corev1.PodRunning || !podReady(&p) {
				bad = append(bad, fmt.Sprintf("%s on %q: %s%s", p.Name, p.Spec.NodeName, p.Status.Phase, podWhy(&p)))
				continue
			}
			running++
			perNode[p.Spec.NodeName]++
		}
		if running != want {
			return fmt.Errorf("%d/%d pods of %s running and ready; not: %s", running, want, app, strings.Join(bad, "; "))
		}
		for _, n := range nodes {
			if perNode[n] == 0 {
				return fmt.Errorf("no running pod of %s on %s (%v)", app, n, perNode)
			}
		}
		return nil
	})
	return pods, err
}

func podReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// podWhy summarises why a pod is not running (condition and container
// waiting reasons).
func podWhy(p *corev1.Pod) string {
	var why []string
	for _, c := range p.Status.Conditions {
		if c.Status != corev1.ConditionTrue && c.Reason != "" {
			why = append(why, fmt.Sprintf("%s=%s:%s", c.Type, c.Reason, c.Message))
		}
	}
	for _, s := range p.Status.ContainerStatuses {
		if s.State.Waiting != nil {
			why = append(why, fmt.Sprintf("%s waiting %s: %s", s.Name, s.State.Waiting.Reason, s.State.Waiting.Message))
		}
	}
	if len(why) == 0 {
		return ""
	}
	return " (" + strings.Join(why, ", ") + ")"
}

// Events returns the recent events of a namespace, oldest first, for
// failure output.
func Events(ctx context.Context, cs kubernetes.Interface, ns string) string {
	list, err := cs.CoreV1().Events(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		return err.Error()
	}
	sort.Slice(list.Items, func(i, j int) bool { return list.Items[i].LastTimestamp.Before(&list.Items[j].LastTimestamp) })
	var b strings.Builder
	for _, e := range list.Items {
		fmt.Fprintf(&b, "%s %s/%s %s: %s (x%d)\n", e.LastTimestamp.Format(time.TimeOnly), e.InvolvedObject.Kind, e.InvolvedObject.Name, e.Reason, e.Message, e.Count)
	}
	return b.String()
}

func parseIP(s string) net.IP { return net.ParseIP(s) }
