//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	admv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	authnv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/holdfast-edge/holdfast/health/webhook"
	"github.com/holdfast-edge/holdfast/install/manifests"
	"github.com/holdfast-edge/holdfast/test/harness"
)

// holdfast's own daemons on the site. The Kubernetes side comes from what
// `holdfastd manifests` renders (namespace, ServiceAccounts, RBAC, the
// agent's admission policy, the webhook registration, the agent DaemonSet:
// daemonsets.go); the webhook runs as a process in the cloud
// netns with its ServiceAccount's token.

const (
	// WebhookPort is where `holdfastd webhook` serves in the cloud netns.
	WebhookPort = manifests.WebhookPort
	// HealthPort is the agents' UDP views and HTTP verdicts (and their
	// /healthz and /metrics).
	HealthPort = manifests.HealthPort
)

// ApplyManifests creates the objects of `holdfastd manifests` the site
// needs. The webhook is registered by URL at the cloud's webhook process
// (signed by the site CA) instead of the rendered in-cluster Service; the
// rendered Deployment, Service and Secret are left out (the webhook runs
// as a process), and so are the DaemonSets, which holdfastDaemonSets
// creates once the nodes are up. It returns what was rendered.
func ApplyManifests(ctx context.Context, cs kubernetes.Interface, caPEM []byte, webhookURL string) (*manifests.Rendered, error) {
	r, err := manifests.Render(manifests.Config{Image: HoldfastdImage, NodeDNS: ClusterDNS, UnitLabel: "holdfast.dev/unit", Policy: "verdicts", NoQuorumPolicy: "retain"})
	if err != nil {
		return nil, err
	}
	var objs []any
	for _, o := range r.Objects {
		switch o := o.(type) {
		case *appsv1.DaemonSet, *appsv1.Deployment, *corev1.Service, *corev1.Secret:
			continue
		case *admv1.MutatingWebhookConfiguration:
			for i := range o.Webhooks {
				o.Webhooks[i].ClientConfig = admv1.WebhookClientConfig{URL: &webhookURL, CABundle: caPEM}
			}
		}
		objs = append(objs, o)
	}
	if err := createObjects(ctx, cs, objs); err != nil {
		return nil, err
	}
	return r, nil
}

// TokenKubeconfig writes a kubeconfig at path holding a token of the
// ServiceAccount sa in holdfast-system.
func (c *Cloud) TokenKubeconfig(ctx context.Context, cs kubernetes.Interface, path, sa string) error {
	exp := int64(12 * 3600)
	req := &authnv1.TokenRequest{Spec: authnv1.TokenRequestSpec{ExpirationSeconds: &exp}}
	tok, err := cs.CoreV1().ServiceAccounts(manifests.Namespace).CreateToken(ctx, sa, req, metav1.CreateOptions{})
	if err != nil {
		return fmt.Errorf("token for %s: %w", sa, err)
	}
	cfg := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: e2e
  cluster: {server: %q, certificate-authority: %q}
users:
- name: %s
  user: {token: %q}
contexts:
- name: e2e
  context: {cluster: e2e, user: %s}
current-context: e2e
`, c.Server, c.PKI.CACert, sa, tok.Status.Token, sa)
	return os.WriteFile(path, []byte(cfg), 0o600)
}

// StartWebhook runs `holdfastd webhook` in the cloud netns with the
// webhook ServiceAccount's token and a serving certificate of the site CA;
// extra are further flags (the policies).
func (c *Cloud) StartWebhook(ctx context.Context, cs kubernetes.Interface, holdfastd string, extra ...string) error {
	c.holdfastd = holdfastd
	pair, err := c.PKI.Serving("webhook", nil, []net.IP{net.ParseIP(harness.CloudIP)})
	if err != nil {
		return err
	}
	kc := filepath.Join(c.Node.EtcDir, "webhook.kubeconfig")
	if err := c.TokenKubeconfig(ctx, cs, kc, manifests.Webhook); err != nil {
		return err
	}
	if _, err := c.Node.Start("webhook", holdfastd, append([]string{"webhook",
		"--listen", fmt.Sprintf("%s:%d", harness.CloudIP, WebhookPort),
		"--metrics-listen", "127.0.0.1:8080",
		"--tls-cert-file", pair.Cert, "--tls-key-file", pair.Key,
		"--kubeconfig", kc}, extra...)...); err != nil {
		return err
	}
	return harness.Eventually(15*time.Second, func() error {
		_, err := getIn(ctx, c.Node.NSPath, "http://127.0.0.1:8080/healthz")
		return err
	})
}

// RestartWebhook stops the webhook (SIGTERM: it hands its leader Lease
// back) and starts it again with extra flags.
func (c *Cloud) RestartWebhook(ctx context.Context, cs kubernetes.Interface, extra ...string) error {
	c.Node.Stop("webhook", 10*time.Second)
	return c.StartWebhook(ctx, cs, c.holdfastd, extra...)
}

// WebhookURL is where the apiserver calls the webhook.
func WebhookURL() string { return fmt.Sprintf("https://%s:%d/mutate", harness.CloudIP, WebhookPort) }

// WebhookPatches returns how many AdmissionReviews of kind the webhook
// answered with a patch (from its metrics).
func (c *Cloud) WebhookPatches(ctx context.Context, kind string) (int, error) {
	return c.webhookCounter(ctx, fmt.Sprintf(`holdfast_webhook_reviews_total{kind=%q,patched="true"} `, kind))
}

// WebhookDecisions returns how many decisions of reason the webhook made
// on objects of kind (from its metrics).
func (c *Cloud) WebhookDecisions(ctx context.Context, kind string, reason webhook.Reason) (int, error) {
	return c.webhookCounter(ctx, fmt.Sprintf(`holdfast_webhook_decisions_total{object=%q,reason=%q} `, kind, reason))
}

func (c *Cloud) webhookCounter(ctx context.Context, prefix string) (int, error) {
	body, err := getIn(ctx, c.Node.NSPath, "http://127.0.0.1:8080/metrics")
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(body, "\n") {
		if v, ok := strings.CutPrefix(line, prefix); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			return int(f), err
		}
	}
	return 0, nil
}

func (n *Node) holdfastd() string { return filepath.Join(n.Bins, "holdfastd") }

// Verdicts is a health daemon's GET /v1/verdicts.
type Verdicts struct {
	Self     string            `json:"self"`
	Members  int               `json:"members"`
	Verdicts map[string]string `json:"verdicts"`
}

// Verdicts asks the node's health daemon.
func (n *Node) Verdicts(ctx context.Context) (Verdicts, error) {
	var v Verdicts
	body, err := getIn(ctx, n.NSPath, fmt.Sprintf("http://127.0.0.1:%d/v1/verdicts", HealthPort))
	if err != nil {
		return v, err
	}
	if err := json.Unmarshal([]byte(body), &v); err != nil {
		return v, fmt.Errorf("%s verdicts %q: %w", n.Name, body, err)
	}
	return v, nil
}

// WaitVerdicts waits until every node in from holds want (member →
// verdict) and reports what they held last on timeout.
func WaitVerdicts(ctx context.Context, from []*Node, want map[string]string, timeout time.Duration) error {
	return harness.Eventually(timeout, func() error {
		var bad []string
		for _, n := range from {
			v, err := n.Verdicts(ctx)
			if err != nil {
				bad = append(bad, err.Error())
				continue
			}
			for m, w := range want {
				if v.Verdicts[m] != w {
					bad = append(bad, fmt.Sprintf("%s says %s is %q (want %s; %d members)", n.Name, m, v.Verdicts[m], w, v.Members))
				}
			}
		}
		if len(bad) > 0 {
			return fmt.Errorf("%s", strings.Join(bad, "; "))
		}
		return nil
	})
}

// getIn does an HTTP GET from inside a netns (harness.GetIn, as a string).
func getIn(ctx context.Context, nsPath, url string) (string, error) {
	body, err := harness.GetIn(ctx, nsPath, url)
	return string(body), err
}
