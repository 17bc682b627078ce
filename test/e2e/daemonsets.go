//go:build e2e

package e2e

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	admv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	coordv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/holdfast-edge/holdfast/install/image"
	"github.com/holdfast-edge/holdfast/install/manifests"
	"github.com/holdfast-edge/holdfast/test/harness"
)

// The node's own plumbing runs as DaemonSet pods, as on a kubeadm node:
// kube-proxy (kubeadm's objects) and flanneld (kube-flannel's), and
// holdfast's agent (health and DNS in one process) from `holdfastd
// manifests`. Their pods
// authenticate with their projected service-account token; the shim
// relaunches them after an offline reboot like any other pod.

const (
	// KubeProxyImage is kube-proxy with the host's iptables (nft backend)
	// and nft userspace.
	KubeProxyImage = "holdfast.test/kube-proxy:" + K8sVersion
	// FlannelImage is flanneld with the same userspace, at kube-flannel's
	// path /opt/bin/flanneld.
	FlannelImage = "holdfast.test/flannel:v0.26.7"
	// HoldfastdImage is the image `make image` builds (install/image) of the tree under test.
	HoldfastdImage = image.DefaultRef
	// NFTablesLabel marks the node whose kube-proxy and flanneld run in
	// nftables mode (kubelet --node-labels): each has a DaemonSet for the
	// nodes with the label and one for those without, as a cluster moving
	// node pools to nftables would.
	NFTablesLabel = "e2e.holdfast.dev/nftables"
	// KubeFlannelNS is kube-flannel's namespace.
	KubeFlannelNS = "kube-flannel"
	// saDir is where kubelet mounts the default projected token.
	saDir = "/var/run/secrets/kubernetes.io/serviceaccount"
	// hostPathMount is where the per-node host dirs appear in the pods
	// (see nodeHostDir).
	hostPathMount = "/var/lib/e2e-nodes"
)

// userspace is the iptables (nft backend, Debian's default) and nft
// userspace kube-proxy and flanneld exec, from the host's Debian packages
// (iptables, nftables, conntrack); their libraries come from ldd.
func userspace() (files, dirs, links map[string]string, err error) {
	files = map[string]string{
		"/usr/sbin/xtables-nft-multi": "/usr/sbin/xtables-nft-multi",
		"/usr/sbin/nft":               "/usr/sbin/nft",
		"/usr/sbin/conntrack":         "/usr/sbin/conntrack",
	}
	for _, f := range []string{"/etc/protocols", "/etc/services", "/etc/ethertypes"} {
		if _, err := os.Stat(f); err == nil {
			files[f] = f
		}
	}
	for in, host := range files {
		if _, err := os.Stat(host); err != nil {
			return nil, nil, nil, fmt.Errorf("%s for the %s image: %w (Debian's iptables, nftables and conntrack: `make deps`)", host, in, err)
		}
	}
	ext := "/usr/lib/x86_64-linux-gnu/xtables"
	if _, err := os.Stat(ext); err != nil {
		return nil, nil, nil, fmt.Errorf("iptables extensions: %w (Debian's iptables)", err)
	}
	dirs = map[string]string{ext: ext}
	links = map[string]string{}
	for _, cmd := range []string{"iptables", "iptables-save", "iptables-restore", "ip6tables", "ip6tables-save", "ip6tables-restore",
		"iptables-nft", "iptables-nft-save", "iptables-nft-restore", "ip6tables-nft", "ip6tables-nft-save", "ip6tables-nft-restore"} {
		links["/usr/sbin/"+cmd] = "xtables-nft-multi"
	}
	return files, dirs, links, nil
}

// ClusterImages builds (cached by content) the images of the node
// DaemonSets and returns their tarballs.
func ClusterImages(bins Bins, hfBins string) ([]string, error) {
	files, dirs, links, err := userspace()
	if err != nil {
		return nil, err
	}
	with := func(extra map[string]string) map[string]string {
		out := map[string]string{}
		for k, v := range files {
			out[k] = v
		}
		for k, v := range extra {
			out[k] = v
		}
		return out
	}
	kp, err := harness.BuildImage(harness.ImageSpec{Ref: KubeProxyImage, Files: with(map[string]string{"/usr/local/bin/kube-proxy": bins.KubeProxy}),
		Dirs: dirs, Links: links, Entrypoint: []string{"/usr/local/bin/kube-proxy"}})
	if err != nil {
		return nil, err
	}
	fl, err := harness.BuildImage(harness.ImageSpec{Ref: FlannelImage, Files: with(map[string]string{"/opt/bin/flanneld": bins.Flanneld}),
		Dirs: dirs, Links: links, Entrypoint: []string{"/opt/bin/flanneld"}})
	if err != nil {
		return nil, err
	}
	img, err := image.Build(image.DefaultConfig(hfBins))
	if err != nil {
		return nil, fmt.Errorf("build the holdfastd image: %w", err)
	}
	d, err := img.Digest()
	if err != nil {
		return nil, err
	}
	hf := filepath.Join(harness.CacheDir(), "images", "holdfastd-"+d.Hex[:12]+".tar")
	if _, err := os.Stat(hf); err != nil {
		if err := image.Write(hf+".tmp", HoldfastdImage, img); err != nil {
			return nil, err
		}
		if err := os.Rename(hf+".tmp", hf); err != nil {
			return nil, err
		}
	}
	return []string{kp, fl, hf}, nil
}

// ImportImages imports the tarballs into every node's containerd at once.
func ImportImages(ctx context.Context, nodes []*Node, tars []string) error {
	var wg sync.WaitGroup
	errs := make([]error, len(nodes))
	for i, n := range nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for _, t := range tars {
				if err := n.ImportImage(ctx, t); err != nil {
					errs[i] = err
					return
				}
			}
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// nodeHostDir is the site-wide directory that stands for one host path
// (a component's) on every node: <site>/hostpath/<component>/<node>. A
// DaemonSet's hostPath cannot name the node, and all nodes share the test
// host's file system, so the pods mount <site>/hostpath/<component> and
// their arguments pick $(NODE_NAME)'s subdirectory. Nothing is ever
// mounted below it (a pod's rbind copy of a mount would pin it).
func (n *Node) nodeHostDir(component string) string {
	return filepath.Join(n.Site.Dir, "hostpath", component, n.Name)
}

func siteHostDir(s *harness.Site, component string) string {
	return filepath.Join(s.Dir, "hostpath", component)
}

// linkRunFlannel makes the node's /run/flannel (harness.SubnetEnvPath's
// dir, which the flannel CNI plugin and the snapshot read and write) a
// link to the dir flanneld's pod writes, emptied first: /run is tmpfs, so
// at every boot it starts empty.
func (n *Node) linkRunFlannel() error {
	target := n.nodeHostDir("run-flannel")
	if err := os.RemoveAll(target); err != nil {
		return err
	}
	if err := os.MkdirAll(target, 0o755); err != nil {
		return err
	}
	link := filepath.Dir(n.SubnetEnvPath())
	if err := os.RemoveAll(link); err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(link), 0o755); err != nil {
		return err
	}
	return os.Symlink(target, link)
}

func (n *Node) healthDir() string { return n.nodeHostDir("holdfast-health") }
func (n *Node) dnsDir() string    { return n.nodeHostDir("holdfast-dns") }

// xtablesLock is the pods' /run/xtables.lock: the site's own file, not the
// test host's (iptables' nft backend takes no lock; the legacy one would,
// per host).
func xtablesLock(s *harness.Site) corev1.Volume {
	return hostPathVolume("xtables-lock", filepath.Join(s.Dir, "hostpath", "xtables.lock"), corev1.HostPathFileOrCreate)
}

func hostPathVolume(name, path string, t corev1.HostPathType) corev1.Volume {
	return corev1.Volume{Name: name, VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: path, Type: &t}}}
}

func fieldEnv(name, path string) corev1.EnvVar {
	return corev1.EnvVar{Name: name, ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: path}}}
}

// nftAffinity places a DaemonSet on the nodes with (nft) or without the
// NFTablesLabel.
func nftAffinity(nft bool) *corev1.Affinity {
	req := corev1.NodeSelectorRequirement{Key: NFTablesLabel, Operator: corev1.NodeSelectorOpDoesNotExist}
	if nft {
		req = corev1.NodeSelectorRequirement{Key: NFTablesLabel, Operator: corev1.NodeSelectorOpIn, Values: []string{"true"}}
	}
	return &corev1.Affinity{NodeAffinity: &corev1.NodeAffinity{RequiredDuringSchedulingIgnoredDuringExecution: &corev1.NodeSelector{
		NodeSelectorTerms: []corev1.NodeSelectorTerm{{MatchExpressions: []corev1.NodeSelectorRequirement{req}}}}}}
}

// nodeDaemonSet is the pod shape kubeadm's kube-proxy and kube-flannel
// share: host network, every taint tolerated, system-node-critical.
func nodeDaemonSet(name, ns string, nft bool, sa string, c corev1.Container, vols []corev1.Volume) *appsv1.DaemonSet {
	if nft {
		name += "-nftables"
	}
	labels := map[string]string{"k8s-app": name}
	grace := int64(2)
	return &appsv1.DaemonSet{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Labels: labels},
		Spec: appsv1.DaemonSetSpec{
			Selector:       &metav1.LabelSelector{MatchLabels: labels},
			UpdateStrategy: appsv1.DaemonSetUpdateStrategy{Type: appsv1.RollingUpdateDaemonSetStrategyType},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{
					ServiceAccountName:            sa,
					HostNetwork:                   true,
					PriorityClassName:             "system-node-critical",
					Tolerations:                   []corev1.Toleration{{Operator: corev1.TolerationOpExists}},
					NodeSelector:                  map[string]string{corev1.LabelOSStable: "linux"},
					Affinity:                      nftAffinity(nft),
					TerminationGracePeriodSeconds: &grace,
					Containers:                    []corev1.Container{c},
					Volumes:                       vols,
				},
			},
		},
	}
}

// kubeProxyConfig is kubeadm's config.conf for the mode. Conntrack sizes
// and timeouts are host-wide: 0 leaves them alone.
func kubeProxyConfig(mode string) string {
	return fmt.Sprintf(`apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection:
  kubeconfig: /var/lib/kube-proxy/kubeconfig.conf
clusterCIDR: %s
mode: %s
conntrack:
  maxPerCore: 0
  min: 0
  tcpEstablishedTimeout: 0s
  tcpCloseWaitTimeout: 0s
metricsBindAddress: 127.0.0.1:10249
healthzBindAddress: 127.0.0.1:10256
`, harness.ClusterCIDR, mode)
}

// kubeProxyObjects are what kubeadm deploys for kube-proxy: the
// ServiceAccount, the binding to system:node-proxier, the ConfigMap with
// config.conf and kubeconfig.conf (the apiserver's address, the pod's
// projected token and CA), and the DaemonSets.
func kubeProxyObjects(s *harness.Site, server string) []any {
	kubeconfig := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- cluster:
    certificate-authority: %s/ca.crt
    server: %s
  name: default
contexts:
- context:
    cluster: default
    namespace: default
    user: default
  name: default
current-context: default
users:
- name: default
  user:
    tokenFile: %s/token
`, saDir, server, saDir)
	objs := []any{
		&corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "kube-proxy", Namespace: "kube-system"}},
		&rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "kubeadm:node-proxier"},
			RoleRef:  rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "system:node-proxier"},
			Subjects: []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: "kube-proxy", Namespace: "kube-system"}}},
		&corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "kube-proxy", Namespace: "kube-system"},
			Data: map[string]string{"config.conf": kubeProxyConfig("iptables"), "config-nftables.conf": kubeProxyConfig("nftables"), "kubeconfig.conf": kubeconfig}},
	}
	t := true
	for _, nft := range []bool{false, true} {
		conf := "config.conf"
		if nft {
			conf = "config-nftables.conf"
		}
		c := corev1.Container{
			Name: "kube-proxy", Image: KubeProxyImage, ImagePullPolicy: corev1.PullIfNotPresent,
			Command:         []string{"/usr/local/bin/kube-proxy", "--config=/var/lib/kube-proxy/" + conf, "--hostname-override=$(NODE_NAME)"},
			Env:             []corev1.EnvVar{fieldEnv("NODE_NAME", "spec.nodeName")},
			SecurityContext: &corev1.SecurityContext{Privileged: &t},
			VolumeMounts: []corev1.VolumeMount{
				{Name: "kube-proxy", MountPath: "/var/lib/kube-proxy"},
				{Name: "xtables-lock", MountPath: "/run/xtables.lock"},
			},
		}
		vols := []corev1.Volume{
			{Name: "kube-proxy", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{LocalObjectReference: corev1.LocalObjectReference{Name: "kube-proxy"}}}},
			xtablesLock(s),
		}
		// kubeadm mounts /lib/modules; a host without it (a kernel with no
		// modules) would get an empty dir created by the runtime.
		if _, err := os.Stat("/lib/modules"); err == nil {
			c.VolumeMounts = append(c.VolumeMounts, corev1.VolumeMount{Name: "lib-modules", MountPath: "/lib/modules", ReadOnly: true})
			vols = append(vols, hostPathVolume("lib-modules", "/lib/modules", corev1.HostPathDirectory))
		}
		objs = append(objs, nodeDaemonSet("kube-proxy", "kube-system", nft, "kube-proxy", c, vols))
	}
	return objs
}

// flannelObjects are kube-flannel's: namespace, ServiceAccount, ClusterRole
// and binding, the ConfigMap with net-conf.json (and the nftables
// variant), and the DaemonSets (kube subnet manager, NET_ADMIN and
// NET_RAW as upstream). kube-flannel's install-cni init containers are
// left out: the stock node already has the flannel plugin and
// 10-flannel.conflist (prepareStock), and `holdfastd install` must find
// them as they are. subnet.env goes to the node's run-flannel host dir.
func flannelObjects(s *harness.Site) []any {
	netConf := func(nft bool) string {
		if nft {
			return strings.Replace(flannelNetConf, `"EnableIPv4":true`, `"EnableIPv4":true,"EnableNFTables":true`, 1)
		}
		return flannelNetConf
	}
	objs := []any{
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: KubeFlannelNS, Labels: map[string]string{"pod-security.kubernetes.io/enforce": "privileged"}}},
		&corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "flannel", Namespace: KubeFlannelNS}},
		&rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: "flannel"}, Rules: []rbacv1.PolicyRule{
			{APIGroups: []string{""}, Resources: []string{"pods"}, Verbs: []string{"get"}},
			{APIGroups: []string{""}, Resources: []string{"nodes"}, Verbs: []string{"get", "list", "watch"}},
			{APIGroups: []string{""}, Resources: []string{"nodes/status"}, Verbs: []string{"patch"}},
		}},
		&rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "flannel"},
			RoleRef:  rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "flannel"},
			Subjects: []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: "flannel", Namespace: KubeFlannelNS}}},
	}
	f := false
	for _, nft := range []bool{false, true} {
		cm := "kube-flannel-cfg"
		if nft {
			cm += "-nftables"
		}
		objs = append(objs, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: cm, Namespace: KubeFlannelNS},
			Data: map[string]string{"net-conf.json": netConf(nft)}})
		c := corev1.Container{
			Name: "kube-flannel", Image: FlannelImage, ImagePullPolicy: corev1.PullIfNotPresent,
			Command: []string{"/opt/bin/flanneld"},
			Args: []string{"--ip-masq=false", "--kube-subnet-mgr", "--iface=eth0",
				"--subnet-file=" + hostPathMount + "/$(NODE_NAME)/subnet.env"},
			Env: []corev1.EnvVar{fieldEnv("POD_NAME", "metadata.name"), fieldEnv("POD_NAMESPACE", "metadata.namespace"),
				fieldEnv("NODE_NAME", "spec.nodeName"), {Name: "EVENT_QUEUE_DEPTH", Value: "5000"}},
			SecurityContext: &corev1.SecurityContext{Privileged: &f, Capabilities: &corev1.Capabilities{Add: []corev1.Capability{"NET_ADMIN", "NET_RAW"}}},
			VolumeMounts: []corev1.VolumeMount{
				{Name: "run", MountPath: hostPathMount},
				{Name: "flannel-cfg", MountPath: "/etc/kube-flannel/"},
				{Name: "xtables-lock", MountPath: "/run/xtables.lock"},
			},
		}
		objs = append(objs, nodeDaemonSet("kube-flannel-ds", KubeFlannelNS, nft, "flannel", c, []corev1.Volume{
			hostPathVolume("run", siteHostDir(s, "run-flannel"), corev1.HostPathDirectoryOrCreate),
			{Name: "flannel-cfg", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{LocalObjectReference: corev1.LocalObjectReference{Name: cm}}}},
			xtablesLock(s),
		}))
	}
	return objs
}

// holdfastDaemonSets is the agent DaemonSet `holdfastd manifests` renders
// (health and DNS in one process), changed only where one test host stands
// for three nodes: the state hostPaths are the site's per-node dirs (the
// state and key flags pick $(NODE_NAME)'s), and DNS's upstream is a closed
// local port (the site never sends traffic outside).
func holdfastDaemonSets(s *harness.Site, r *manifests.Rendered) ([]*appsv1.DaemonSet, error) {
	var out []*appsv1.DaemonSet
	for _, o := range r.Objects {
		ds, ok := o.(*appsv1.DaemonSet)
		if !ok {
			continue
		}
		if ds.Name != manifests.Agent {
			return nil, fmt.Errorf("rendered DaemonSet %s: unknown", ds.Name)
		}
		ds = ds.DeepCopy()
		spec := &ds.Spec.Template.Spec
		healthDir := "/var/lib/holdfast/health/$(NODE_NAME)"
		for i := range spec.InitContainers {
			spec.InitContainers[i].Args = append(spec.InitContainers[i].Args, "--out", healthDir+"/node.key")
		}
		spec.Containers[0].Args = append(spec.Containers[0].Args,
			"--health-state-dir", healthDir, "--health-key-file", healthDir+"/node.key",
			"--dns-state-dir", "/var/lib/holdfast/dns/$(NODE_NAME)", "--dns-upstream", "127.0.0.1:5399")
		for stateDir, component := range map[string]string{"/var/lib/holdfast/health": "holdfast-health", "/var/lib/holdfast/dns": "holdfast-dns"} {
			found := false
			for i := range spec.Volumes {
				if hp := spec.Volumes[i].HostPath; hp != nil && hp.Path == stateDir {
					hp.Path, found = siteHostDir(s, component), true
				}
			}
			if !found {
				return nil, fmt.Errorf("rendered DaemonSet %s has no hostPath volume %s", ds.Name, stateDir)
			}
		}
		out = append(out, ds)
	}
	if len(out) != 1 {
		return nil, fmt.Errorf("manifests render %d DaemonSets, want the agent's", len(out))
	}
	return out, nil
}

// createObjects creates typed objects (already-existing ones are kept):
// the node DaemonSets' and those of `holdfastd manifests`.
func createObjects(ctx context.Context, cs kubernetes.Interface, objs []any) error {
	opts := metav1.CreateOptions{}
	for _, o := range objs {
		var err error
		switch o := o.(type) {
		case *corev1.Namespace:
			_, err = cs.CoreV1().Namespaces().Create(ctx, o, opts)
		case *corev1.ServiceAccount:
			_, err = cs.CoreV1().ServiceAccounts(o.Namespace).Create(ctx, o, opts)
		case *corev1.ConfigMap:
			_, err = cs.CoreV1().ConfigMaps(o.Namespace).Create(ctx, o, opts)
		case *rbacv1.ClusterRole:
			_, err = cs.RbacV1().ClusterRoles().Create(ctx, o, opts)
		case *rbacv1.ClusterRoleBinding:
			_, err = cs.RbacV1().ClusterRoleBindings().Create(ctx, o, opts)
		case *rbacv1.Role:
			_, err = cs.RbacV1().Roles(o.Namespace).Create(ctx, o, opts)
		case *rbacv1.RoleBinding:
			_, err = cs.RbacV1().RoleBindings(o.Namespace).Create(ctx, o, opts)
		case *coordv1.Lease:
			_, err = cs.CoordinationV1().Leases(o.Namespace).Create(ctx, o, opts)
		case *admv1.ValidatingAdmissionPolicy:
			_, err = cs.AdmissionregistrationV1().ValidatingAdmissionPolicies().Create(ctx, o, opts)
		case *admv1.ValidatingAdmissionPolicyBinding:
			_, err = cs.AdmissionregistrationV1().ValidatingAdmissionPolicyBindings().Create(ctx, o, opts)
		case *admv1.MutatingWebhookConfiguration:
			_, err = cs.AdmissionregistrationV1().MutatingWebhookConfigurations().Create(ctx, o, opts)
		case *appsv1.DaemonSet:
			_, err = cs.AppsV1().DaemonSets(o.Namespace).Create(ctx, o, opts)
		default:
			err = fmt.Errorf("unhandled %T", o)
		}
		if err != nil && !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("create %T: %w", o, err)
		}
	}
	return nil
}

// nodePod is one DaemonSet pod of the site.
type nodePod struct {
	DS, NS string
	Apps   []string // its app containers' names (not the init containers')
	podView
}

// dsPodsOn lists the DaemonSet pods on node (by their controller).
func dsPodsOn(ctx context.Context, cs kubernetes.Interface, node string) ([]nodePod, error) {
	var out []nodePod
	for _, ns := range []string{"kube-system", KubeFlannelNS, manifests.Namespace} {
		list, err := cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{FieldSelector: "spec.nodeName=" + node})
		if err != nil {
			return nil, err
		}
		for i := range list.Items {
			p := &list.Items[i]
			for _, ref := range p.OwnerReferences {
				if ref.Kind == "DaemonSet" && p.DeletionTimestamp == nil {
					np := nodePod{DS: ref.Name, NS: ns, podView: viewOf(p)}
					for _, c := range p.Spec.Containers {
						np.Apps = append(np.Apps, c.Name)
					}
					out = append(out, np)
				}
			}
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].DS < out[j].DS })
	return out, nil
}

// WaitDaemonPods waits until each node runs one Ready pod of each of the
// given DaemonSet kinds (kube-proxy, kube-flannel-ds, holdfast-agent;
// either mode's DaemonSet).
func WaitDaemonPods(ctx context.Context, cs kubernetes.Interface, nodes []string, kinds []string, timeout time.Duration) error {
	return harness.Eventually(timeout, func() error {
		var bad []string
		for _, node := range nodes {
			for _, kind := range kinds {
				list, err := cs.CoreV1().Pods("").List(ctx, metav1.ListOptions{FieldSelector: "spec.nodeName=" + node})
				if err != nil {
					return err
				}
				ok, seen := false, "no pod"
				for i := range list.Items {
					p := &list.Items[i]
					if strings.TrimSuffix(dsOf(p), "-nftables") != kind {
						continue
					}
					seen = fmt.Sprintf("%s %s%s", p.Name, p.Status.Phase, podWhy(p))
					ok = ok || p.Status.Phase == corev1.PodRunning && podReady(p)
				}
				if !ok {
					bad = append(bad, fmt.Sprintf("%s %s: %s", node, kind, seen))
				}
			}
		}
		if len(bad) > 0 {
			return fmt.Errorf("DaemonSet pods not ready: %s", strings.Join(bad, "; "))
		}
		return nil
	})
}

// WaitAPIServiceIP waits until every node reaches the kubernetes
// Service's ClusterIP (10.96.0.1:443, what in-cluster config dials): its
// kube-proxy has synced. flanneld started before that exits and waits out
// kubelet's crash-loop back-off.
func WaitAPIServiceIP(ctx context.Context, nodes []*Node, timeout time.Duration) error {
	for _, n := range nodes {
		err := harness.Eventually(timeout, func() error {
			c, err := harness.DialIn(n.NSPath)(ctx, "tcp", "10.96.0.1:443")
			if err != nil {
				return fmt.Errorf("%s → 10.96.0.1:443: %w", n.Name, err)
			}
			return c.Close()
		})
		if err != nil {
			return fmt.Errorf("%w\n--- kube-proxy pod log (tail)\n%s", err, harness.Tail(n.podLogs("kube-system_kube-proxy"), 3000))
		}
	}
	return nil
}

func dsOf(p *corev1.Pod) string {
	for _, ref := range p.OwnerReferences {
		if ref.Kind == "DaemonSet" {
			return ref.Name
		}
	}
	return ""
}

// podLogs returns the kubelet-written logs of the node's pods whose
// directory name (namespace_name_uid) starts with prefix, newest last.
func (n *Node) podLogs(prefix string) string {
	dirs, _ := filepath.Glob(filepath.Join(n.VarDir, "log", "pods", prefix+"*", "*", "*.log"))
	sort.Strings(dirs)
	var b strings.Builder
	for _, f := range dirs {
		data, _ := os.ReadFile(f)
		fmt.Fprintf(&b, "--- %s\n%s", strings.TrimPrefix(f, n.VarDir), data)
	}
	return b.String()
}
