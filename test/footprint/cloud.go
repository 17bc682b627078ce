package footprint

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/holdfast-edge/holdfast/test/harness"
)

const (
	// k8sVersion is the Kubernetes release (test/tools/build.sh builds it
	// into .cache, as for the e2e).
	k8sVersion  = "v1.34.4"
	apiPort     = 6443
	serviceCIDR = "10.96.0.0/16"
	etcdBin     = "/usr/bin/etcd"
)

// bins are the stock binaries the benchmark runs.
type bins struct{ APIServer, Kubelet string }

// findBins locates kube-apiserver and kubelet in the cache; a missing one is
// an error naming what builds it.
func findBins() (bins, error) {
	dir := filepath.Join(harness.CacheDir(), "k8s-"+k8sVersion)
	b := bins{APIServer: filepath.Join(dir, "kube-apiserver"), Kubelet: filepath.Join(dir, "kubelet")}
	for _, p := range []string{b.APIServer, b.Kubelet} {
		if st, err := os.Stat(p); err != nil || st.Mode()&0o111 == 0 {
			return b, fmt.Errorf("%s missing: build it with `make e2e-tools` (test/tools/build.sh)", p)
		}
	}
	if _, err := exec.LookPath(etcdBin); err != nil {
		return b, fmt.Errorf("etcd missing at %s: `make deps` installs Debian's etcd-server", etcdBin)
	}
	return b, nil
}

// cloud is etcd and kube-apiserver in the site's cloud netns, with one
// static admin token (AlwaysAllow authorization): the least control plane
// a kubelet, the health daemon and the DNS daemon need.
type cloud struct {
	node       *harness.Node
	server     string
	token      string
	kubeconfig string // for processes in the node netns
}

func startCloud(ctx context.Context, n *harness.Node, b bins) (*cloud, error) {
	c := &cloud{node: n, server: fmt.Sprintf("https://%s:%d", harness.CloudIP, apiPort)}
	tok := make([]byte, 16)
	if _, err := rand.Read(tok); err != nil {
		return nil, err
	}
	c.token = hex.EncodeToString(tok)
	tokenFile := filepath.Join(n.EtcDir, "tokens.csv")
	if err := os.WriteFile(tokenFile, []byte(c.token+`,footprint-admin,footprint-admin,"system:masters"`+"\n"), 0o600); err != nil {
		return nil, err
	}
	saKey := filepath.Join(n.EtcDir, "sa.key")
	if err := writeRSAKey(saKey); err != nil {
		return nil, err
	}
	c.kubeconfig = filepath.Join(n.EtcDir, "node.kubeconfig")
	kc := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: footprint
  cluster: {server: %q, insecure-skip-tls-verify: true}
users:
- name: admin
  user: {token: %q}
contexts:
- name: footprint
  context: {cluster: footprint, user: admin}
current-context: footprint
`, c.server, c.token)
	if err := os.WriteFile(c.kubeconfig, []byte(kc), 0o600); err != nil {
		return nil, err
	}
	if _, err := n.Start("etcd", etcdBin,
		"--name", "footprint", "--data-dir", filepath.Join(n.VarDir, "etcd"),
		"--listen-client-urls", "http://127.0.0.1:2379", "--advertise-client-urls", "http://127.0.0.1:2379",
		"--listen-peer-urls", "http://127.0.0.1:2380", "--initial-advertise-peer-urls", "http://127.0.0.1:2380",
		"--initial-cluster", "footprint=http://127.0.0.1:2380"); err != nil {
		return nil, err
	}
	if _, err := n.Start("kube-apiserver", b.APIServer,
		"--etcd-servers", "http://127.0.0.1:2379",
		"--bind-address", harness.CloudIP, "--advertise-address", harness.CloudIP,
		"--secure-port", fmt.Sprint(apiPort),
		"--cert-dir", filepath.Join(n.VarDir, "apiserver"), // self-signed serving cert
		"--token-auth-file", tokenFile,
		"--authorization-mode", "AlwaysAllow",
		"--service-account-key-file", saKey, "--service-account-signing-key-file", saKey,
		"--service-account-issuer", "https://kubernetes.default.svc.cluster.local",
		"--service-cluster-ip-range", serviceCIDR,
		"--allow-privileged=true", "--profiling=false", "--v=1"); err != nil {
		return nil, err
	}
	if err := c.waitReady(ctx, 120*time.Second); err != nil {
		return nil, fmt.Errorf("kube-apiserver not ready: %w\n--- kube-apiserver log (tail)\n%s\n--- etcd log (tail)\n%s",
			err, harness.Tail(n.Logs("kube-apiserver"), 3000), harness.Tail(n.Logs("etcd"), 1500))
	}
	return c, nil
}

func writeRSAKey(path string) error {
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return err
	}
	return os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(k)}), 0o600)
}

// restConfig is the admin's client config; its sockets are made inside the
// cloud netns (the benchmark process lives in the host's).
func (c *cloud) restConfig() *rest.Config {
	return &rest.Config{Host: c.server, BearerToken: c.token,
		TLSClientConfig: rest.TLSClientConfig{Insecure: true},
		QPS:             200, Burst: 400, Timeout: 30 * time.Second,
		Dial: harness.DialIn(c.node.NSPath)}
}

func (c *cloud) client() (*kubernetes.Clientset, error) {
	return kubernetes.NewForConfig(c.restConfig())
}

// waitReady polls the apiserver's /readyz until it answers ok.
func (c *cloud) waitReady(ctx context.Context, timeout time.Duration) error {
	cs, err := c.client()
	if err != nil {
		return err
	}
	return harness.Eventually(timeout, func() error {
		rctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		defer cancel()
		body, err := cs.Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(rctx)
		if err != nil {
			return fmt.Errorf("/readyz: %w: %s", err, body)
		}
		return nil
	})
}
