//go:build e2e

package e2e

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"

	"github.com/holdfast-edge/holdfast/test/harness"
)

// FlannelUser is the identity of every node's flanneld.
const FlannelUser = "holdfast-e2e:flannel"

// FlannelRBAC grants flanneld (kube subnet manager) what the upstream
// kube-flannel manifest grants it: read nodes and pods, patch node status.
func FlannelRBAC(ctx context.Context, cs kubernetes.Interface) error {
	role := &rbacv1.ClusterRole{
		ObjectMeta: metav1.ObjectMeta{Name: "holdfast-e2e-flannel"},
		Rules: []rbacv1.PolicyRule{
			{APIGroups: []string{""}, Resources: []string{"pods"}, Verbs: []string{"get"}},
			{APIGroups: []string{""}, Resources: []string{"nodes"}, Verbs: []string{"get", "list", "watch"}},
			{APIGroups: []string{""}, Resources: []string{"nodes/status"}, Verbs: []string{"patch"}},
		},
	}
	if _, err := cs.RbacV1().ClusterRoles().Create(ctx, role, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return err
	}
	binding := &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "holdfast-e2e-flannel"},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: role.Name},
		Subjects:   []rbacv1.Subject{{APIGroup: rbacv1.GroupName, Kind: rbacv1.UserKind, Name: FlannelUser}},
	}
	if _, err := cs.RbacV1().ClusterRoleBindings().Create(ctx, binding, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return err
	}
	return nil
}

// flannelNetConf is kube-flannel's net-conf.json for the harness plan.
var flannelNetConf = fmt.Sprintf(`{"Network":%q,"EnableIPv4":true,"Backend":{"Type":"vxlan","VNI":%d,"Port":%d}}`,
	harness.ClusterCIDR, harness.VXLANVNI, harness.VXLANPort)

// StartFlanneld starts flanneld with the kube subnet manager in the node
// netns; it writes subnet.env where the harness and the snapshot expect it.
// It needs the node's spec.podCIDR (SetPodCIDR) and, after an offline boot,
// runs after `holdfastd snapshot restore` so it adopts the restored
// flannel.1 and its pinned MAC.
func (n *Node) StartFlanneld() error {
	conf := filepath.Join(n.EtcDir, "kube-flannel", "net-conf.json")
	if err := os.MkdirAll(filepath.Dir(conf), 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(conf, []byte(n.flannelNetConf()), 0o644); err != nil {
		return err
	}
	kc, err := n.kubeconfig("flannel-"+n.Name, FlannelUser)
	if err != nil {
		return err
	}
	_, err = n.Start("flanneld", "env", "NODE_NAME="+n.Name, n.Cloud.Bins.Flanneld,
		"--kube-subnet-mgr",
		"--kubeconfig-file", kc,
		"--net-config-path", conf,
		"--iface", n.UnderlayDev,
		"--subnet-file", n.SubnetEnvPath(),
		"--ip-masq=false",
	)
	return err
}

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
		return fmt.Errorf("%s: flannel overlay not ready: %w\n--- flanneld log (tail)\n%s", n.Name, err, tail(n.Logs("flanneld"), 3000))
	}
	return nil
}

// StartKubeProxy starts kube-proxy (iptables mode; nftables mode on
// NFTablesNode) in the node netns. It
// leaves every host-wide setting alone: conntrack table size and timeouts
// are not touched (0 = leave as is).
func (n *Node) StartKubeProxy() error {
	kc, err := n.kubeconfig("kube-proxy-"+n.Name, "system:kube-proxy")
	if err != nil {
		return err
	}
	// A node's own connections to a ClusterIP need a route before
	// kube-proxy's OUTPUT DNAT sees them; real nodes use their default
	// route, the harness nodes have none (no route out). This one stays on
	// the site LAN; DNAT re-routes the packet to the pod.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := n.Exec(ctx, "ip", "route", "replace", ServiceCIDR, "dev", n.UnderlayDev, "scope", "link"); err != nil {
		return err
	}
	_, err = n.Start("kube-proxy", n.Cloud.Bins.KubeProxy,
		"--kubeconfig", kc,
		"--hostname-override", n.Name,
		"--cluster-cidr", harness.ClusterCIDR,
		"--proxy-mode", n.proxyMode(),
		"--conntrack-max-per-core", "0",
		"--conntrack-min", "0",
		"--conntrack-tcp-timeout-established", "0",
		"--conntrack-tcp-timeout-close-wait", "0",
		"--metrics-bind-address", "127.0.0.1:10249",
		"--healthz-bind-address", "127.0.0.1:10256",
		"--v=1",
	)
	return err
}

// kubeconfig returns the node's kubeconfig called name (for user), issuing
// it on first use; it lives in the node's etc dir and survives reboots.
func (n *Node) kubeconfig(name, user string, groups ...string) (string, error) {
	path := filepath.Join(n.EtcDir, name+".kubeconfig")
	if _, err := os.Stat(path); err == nil {
		return path, nil
	}
	return n.Cloud.Kubeconfig(n.EtcDir, name, user, groups...)
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
