//go:build e2e

package e2e

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/holdfast-edge/holdfast/test/harness"
)

// flannelNetConf is kube-flannel's net-conf.json for the harness plan.
var flannelNetConf = fmt.Sprintf(`{"Network":%q,"EnableIPv4":true,"Backend":{"Type":"vxlan","VNI":%d,"Port":%d}}`,
	harness.ClusterCIDR, harness.VXLANVNI, harness.VXLANPort)

// WaitOverlay waits until flanneld has written subnet.env for the node's
// planned subnet and routed every peer's pod subnet over flannel.1.
func (n *Node) WaitOverlay(ctx context.Context, peers []*Node, timeout time.Duration) error {
	err := harness.Eventually(timeout, func() error {
		env, err := os.ReadFile(n.SubnetEnvPath())
		if err != nil {
			return err
		}
		if want := "FLANNEL_SUBNET=" + n.Node.PodGateway().String() + "/24"; !strings.Contains(string(env), want) {
			return fmt.Errorf("subnet.env %q lacks %s", env, want)
		}
		routes, err := n.Exec(ctx, "ip", "route", "show", "dev", harness.VXLANDevice)
		if err != nil {
			return err
		}
		for _, p := range peers {
			if p != n && !strings.Contains(routes, p.PodCIDR().String()) {
				return fmt.Errorf("no route to %s via %s: %q", p.PodCIDR(), harness.VXLANDevice, routes)
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("%s: flannel overlay not ready: %w\n--- flanneld log (tail)\n%s", n.Name, err, harness.Tail(n.podLogs(KubeFlannelNS+"_kube-flannel-ds"), 3000))
	}
	return nil
}

// RouteServices adds the route a node's own connections to a ClusterIP
// need before kube-proxy's OUTPUT DNAT sees them: real nodes use their
// default route, the harness nodes have none (no route out). It stays on
// the site LAN; DNAT re-routes the packet to the pod. It is part of the
// node's network configuration, so every boot adds it before the pods
// (kube-proxy's too, whose own kubeconfig names the apiserver directly)
// start.
func (n *Node) RouteServices(ctx context.Context) error {
	_, err := n.Exec(ctx, "ip", "route", "replace", ServiceCIDR, "dev", n.UnderlayDev, "scope", "link")
	return err
}

// Service is a ClusterIP Service on harness.PodHTTPPort in front of app.
func Service(app string) *corev1.Service {
	return &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: app, Namespace: "default"},
		Spec: corev1.ServiceSpec{
			Type:     corev1.ServiceTypeClusterIP,
			Selector: map[string]string{AppLabel: app},
			Ports: []corev1.ServicePort{{Name: "http", Port: harness.PodHTTPPort,
				TargetPort: intstr.FromInt32(harness.PodHTTPPort), Protocol: corev1.ProtocolTCP}},
		},
	}
}

// HeadlessService is the StatefulSet's governing Service (no ClusterIP:
// its name resolves to the ready pods, <pod>.<name> to each).
func HeadlessService(app string) *corev1.Service {
	svc := Service(app)
	svc.Spec.ClusterIP = corev1.ClusterIPNone
	return svc
}

// reachService checks TCP to the ClusterIP from every node netns and from
// one pod netns of each given pod set (tries each a few times: kube-proxy
// syncs asynchronously).
func reachService(ctx context.Context, clusterIP string, nodes []*Node, podNetns map[string]string) error {
	var errs []error
	try := func(what, netns string) {
		if err := harness.Eventually(15*time.Second, func() error { return harness.HTTP(ctx, netns, clusterIP) }); err != nil {
			errs = append(errs, fmt.Errorf("%s → %s: %w", what, clusterIP, err))
		}
	}
	for _, n := range nodes {
		try(n.Name, n.NSPath)
	}
	for name, netns := range podNetns {
		try("pod "+name, netns)
	}
	return errors.Join(errs...)
}

// podNetns maps pod name → netns path (from the ready sandbox in the shim).
func (s *site) podNetns(ctx context.Context, pods []corev1.Pod) (map[string]string, error) {
	out := map[string]string{}
	for _, p := range pods {
		n := s.node(p.Spec.NodeName)
		if n == nil {
			continue
		}
		c, err := harness.DialCRI(n.ShimSock())
		if err != nil {
			return nil, err
		}
		sbs, err := c.ReadySandboxes(ctx, string(p.UID))
		if err == nil && len(sbs) == 1 {
			_, out[p.Name], err = c.SandboxNet(ctx, sbs[0].Id)
		}
		c.Close()
		if err != nil {
			return nil, err
		}
	}
	return out, nil
}
