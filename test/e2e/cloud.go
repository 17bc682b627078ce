//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/holdfast-edge/holdfast/test/harness"
)

const (
	// K8sVersion is the Kubernetes release the e2e runs.
	K8sVersion = "v1.34.4"
	// ServiceCIDR is the ClusterIP range.
	ServiceCIDR = "10.96.0.0/16"
	// ClusterDNS is the node-local DNS address kubelet hands to pods.
	ClusterDNS = "169.254.20.10"
	// APIPort is the apiserver's secure port on harness.CloudIP.
	APIPort = 6443
	// BuildCommand builds every binary Binaries looks for.
	BuildCommand = "test/tools/build.sh"
)

// Bins is where the stock binaries are.
type Bins struct {
	APIServer, ControllerManager, Scheduler, Kubelet, KubeProxy string
	Flanneld, CoreDNS, Etcd                                     string
}

// FindBins locates the cached binaries; a missing one is an error naming
// the command that builds it (the test fails, never skips).
func FindBins() (Bins, error) {
	k8s := filepath.Join(harness.CacheDir(), "k8s-"+K8sVersion)
	tools := filepath.Join(harness.CacheDir(), "tools")
	b := Bins{
		APIServer:         filepath.Join(k8s, "kube-apiserver"),
		ControllerManager: filepath.Join(k8s, "kube-controller-manager"),
		Scheduler:         filepath.Join(k8s, "kube-scheduler"),
		Kubelet:           filepath.Join(k8s, "kubelet"),
		KubeProxy:         filepath.Join(k8s, "kube-proxy"),
		Flanneld:          filepath.Join(tools, "flannel"),
		CoreDNS:           filepath.Join(tools, "coredns"),
		Etcd:              "/usr/bin/etcd",
	}
	var missing []string
	for _, p := range []string{b.APIServer, b.ControllerManager, b.Scheduler, b.Kubelet, b.KubeProxy, b.Flanneld, b.CoreDNS} {
		if st, err := os.Stat(p); err != nil || st.Mode()&0o111 == 0 {
			missing = append(missing, p)
		}
	}
	if len(missing) > 0 {
		return b, fmt.Errorf("e2e binaries missing: %s\nbuild them with: (cd %s && %s)   # or: make e2e",
			strings.Join(missing, ", "), harness.RepoRoot(), BuildCommand)
	}
	if _, err := exec.LookPath(b.Etcd); err != nil {
		return b, fmt.Errorf("etcd missing at %s: install Debian's etcd-server (`apt-get install etcd-server`)", b.Etcd)
	}
	return b, nil
}

// Cloud is the control plane in the site's cloud netns: etcd,
// kube-apiserver, kube-controller-manager and kube-scheduler.
type Cloud struct {
	Node   *harness.Node
	Bins   Bins
	PKI    *PKI
	Server string // https://198.51.100.1:6443
	Admin  string // admin kubeconfig path
	SAKey  string
	// GracePeriod is the controller-manager's --node-monitor-grace-period.
	GracePeriod time.Duration
	// TolerationSeconds is the default not-ready/unreachable toleration the
	// apiserver adds to pods (eviction delay).
	TolerationSeconds int
	holdfastd         string // the webhook's binary (RestartWebhook)
}

// NewCloud makes the PKI and kubeconfigs of a site's control plane.
func NewCloud(node *harness.Node, bins Bins) (*Cloud, error) {
	p, err := NewPKI(filepath.Join(node.EtcDir, "pki"))
	if err != nil {
		return nil, err
	}
	c := &Cloud{Node: node, Bins: bins, PKI: p,
		Server:      fmt.Sprintf("https://%s:%d", harness.CloudIP, APIPort),
		GracePeriod: 20 * time.Second,
		// Short, so the test sees eviction happen (node2 powered off) or
		// not happen (node3 cut off but voted alive) within minutes.
		TolerationSeconds: 30,
	}
	if c.SAKey, err = p.ServiceAccountKey(); err != nil {
		return nil, err
	}
	admin, err := p.Client("admin", "e2e-admin", "system:masters")
	if err != nil {
		return nil, err
	}
	c.Admin = filepath.Join(node.EtcDir, "admin.kubeconfig")
	if err := WriteKubeconfig(c.Admin, c.Server, p.CACert, admin); err != nil {
		return nil, err
	}
	return c, nil
}

// Kubeconfig issues a client cert for user/groups and writes a kubeconfig
// for it under dir.
func (c *Cloud) Kubeconfig(dir, name, user string, groups ...string) (string, error) {
	pair, err := c.PKI.Client(name, user, groups...)
	if err != nil {
		return "", err
	}
	path := filepath.Join(dir, name+".kubeconfig")
	return path, WriteKubeconfig(path, c.Server, c.PKI.CACert, pair)
}

// Start starts etcd, the apiserver, the controller-manager and the
// scheduler, and waits for the apiserver to be ready.
func (c *Cloud) Start(ctx context.Context) error {
	n := c.Node
	etcdDir := filepath.Join(n.VarDir, "etcd")
	if _, err := n.Start("etcd", c.Bins.Etcd,
		"--name", "e2e",
		"--data-dir", etcdDir,
		"--listen-client-urls", "http://127.0.0.1:2379",
		"--advertise-client-urls", "http://127.0.0.1:2379",
		"--listen-peer-urls", "http://127.0.0.1:2380",
		"--initial-advertise-peer-urls", "http://127.0.0.1:2380",
		"--initial-cluster", "e2e=http://127.0.0.1:2380",
		"--listen-metrics-urls", "http://127.0.0.1:2381",
		"--quota-backend-bytes", "1073741824",
	); err != nil {
		return err
	}

	serving, err := c.PKI.Serving("apiserver",
		[]string{"kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local", "localhost"},
		[]net.IP{net.ParseIP(harness.CloudIP), net.ParseIP("10.96.0.1"), net.ParseIP("127.0.0.1")})
	if err != nil {
		return err
	}
	kubeletClient, err := c.PKI.Client("apiserver-kubelet-client", "kube-apiserver-kubelet-client", "system:masters")
	if err != nil {
		return err
	}
	tol := fmt.Sprint(c.TolerationSeconds)
	if _, err := n.Start("kube-apiserver", c.Bins.APIServer,
		"--etcd-servers", "http://127.0.0.1:2379",
		"--bind-address", harness.CloudIP,
		"--advertise-address", harness.CloudIP,
		"--secure-port", fmt.Sprint(APIPort),
		"--cert-dir", filepath.Join(n.VarDir, "apiserver"),
		"--tls-cert-file", serving.Cert,
		"--tls-private-key-file", serving.Key,
		"--client-ca-file", c.PKI.CACert,
		"--kubelet-client-certificate", kubeletClient.Cert,
		"--kubelet-client-key", kubeletClient.Key,
		"--service-account-key-file", c.SAKey,
		"--service-account-signing-key-file", c.SAKey,
		"--service-account-issuer", "https://kubernetes.default.svc.cluster.local",
		"--service-cluster-ip-range", ServiceCIDR,
		"--authorization-mode", "Node,RBAC",
		"--enable-admission-plugins", "NodeRestriction",
		"--allow-privileged=true",
		"--default-not-ready-toleration-seconds", tol,
		"--default-unreachable-toleration-seconds", tol,
		"--profiling=false",
		"--v=1",
	); err != nil {
		return err
	}
	if err := c.waitReady(ctx, 90*time.Second); err != nil {
		return fmt.Errorf("kube-apiserver not ready: %w\n--- kube-apiserver log (tail)\n%s\n--- etcd log (tail)\n%s",
			err, harness.Tail(n.Logs("kube-apiserver"), 3000), harness.Tail(n.Logs("etcd"), 2000))
	}

	kcm, err := c.Kubeconfig(n.EtcDir, "controller-manager", "system:kube-controller-manager")
	if err != nil {
		return err
	}
	if _, err := n.Start("kube-controller-manager", c.Bins.ControllerManager,
		"--kubeconfig", kcm,
		"--authentication-kubeconfig", kcm,
		"--authorization-kubeconfig", kcm,
		"--bind-address", "127.0.0.1",
		"--leader-elect=false",
		"--use-service-account-credentials=true",
		"--service-account-private-key-file", c.SAKey,
		"--root-ca-file", c.PKI.CACert,
		"--controllers", "*,-csrsigning,-bootstrapsigner,-tokencleaner",
		"--allocate-node-cidrs=false",
		"--cluster-cidr", harness.ClusterCIDR,
		"--service-cluster-ip-range", ServiceCIDR,
		"--node-monitor-period", "2s",
		"--node-monitor-grace-period", c.GracePeriod.String(),
		// The controller retries its NoExecute taint at this rate per
		// zone (default 0.1/s): a taint holdfast stops dropping (autonomy
		// duration expired) lands within 2 s instead of 10 s.
		"--node-eviction-rate", "0.5",
		"--profiling=false",
		"--v=1",
	); err != nil {
		return err
	}
	sched, err := c.Kubeconfig(n.EtcDir, "scheduler", "system:kube-scheduler")
	if err != nil {
		return err
	}
	if _, err := n.Start("kube-scheduler", c.Bins.Scheduler,
		"--kubeconfig", sched,
		"--authentication-kubeconfig", sched,
		"--authorization-kubeconfig", sched,
		"--bind-address", "127.0.0.1",
		"--leader-elect=false",
		"--profiling=false",
		"--v=1",
	); err != nil {
		return err
	}
	return nil
}

// waitReady polls the apiserver's /readyz from inside the cloud netns.
func (c *Cloud) waitReady(ctx context.Context, timeout time.Duration) error {
	cfg, err := c.RESTConfig()
	if err != nil {
		return err
	}
	tr, err := rest.TransportFor(cfg)
	if err != nil {
		return err
	}
	hc := &http.Client{Transport: tr, Timeout: 3 * time.Second}
	return harness.Eventually(timeout, func() error {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, c.Server+"/readyz", nil)
		resp, err := hc.Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("/readyz: %s", resp.Status)
		}
		return nil
	})
}

// RESTConfig is the admin's client config; its connections are made from
// inside the cloud netns (the test process itself lives in the host's).
func (c *Cloud) RESTConfig() (*rest.Config, error) {
	pki := c.PKI
	cfg := &rest.Config{
		Host: c.Server,
		TLSClientConfig: rest.TLSClientConfig{
			CAFile:   pki.CACert,
			CertFile: filepath.Join(pki.Dir, "admin.crt"),
			KeyFile:  filepath.Join(pki.Dir, "admin.key"),
		},
		QPS:   50,
		Burst: 100,
		Dial:  harness.DialIn(c.Node.NSPath),
	}
	return cfg, nil
}

// Client is an admin clientset.
func (c *Cloud) Client() (*kubernetes.Clientset, error) {
	cfg, err := c.RESTConfig()
	if err != nil {
		return nil, err
	}
	return kubernetes.NewForConfig(cfg)
}
