package manifests

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"flag"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	admv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/client-go/kubernetes/scheme"
)

var update = flag.Bool("update", false, "rewrite golden files")

func render(t *testing.T) *Rendered {
	t.Helper()
	r, err := Render(Config{Image: "ghcr.io/holdfast-edge/holdfastd:dev", NodeDNS: "169.254.20.10", UnitLabel: "holdfast.dev/unit",
		Policy: "verdicts", NoQuorumPolicy: "retain", Now: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// TestDecodesWithClientGo decodes every document with client-go's scheme:
// each is a known kind with no unknown fields.
func TestDecodesWithClientGo(t *testing.T) {
	r := render(t)
	docs := strings.Split(string(r.YAML), "\n---\n")
	kinds := map[string]int{}
	for _, d := range docs[1:] {
		obj, gvk, err := scheme.Codecs.UniversalDeserializer().Decode([]byte(d), nil, nil)
		if err != nil {
			t.Fatalf("decode: %v\n%s", err, d)
		}
		kinds[gvk.Kind]++
		if mw, ok := obj.(*admv1.MutatingWebhookConfiguration); ok {
			for _, w := range mw.Webhooks {
				if w.FailurePolicy == nil || *w.FailurePolicy != admv1.Ignore {
					t.Errorf("webhook %s: failurePolicy is not Ignore", w.Name)
				}
				pool := x509.NewCertPool()
				if !pool.AppendCertsFromPEM(w.ClientConfig.CABundle) {
					t.Fatalf("webhook %s: caBundle holds no certificate", w.Name)
				}
				verifyServing(t, pool, r)
			}
		}
		if cr, ok := obj.(*rbacv1.ClusterRole); ok {
			checkLeastPrivilege(t, cr.Name, cr.Rules)
		}
		// The node DNS resolves upstream through the node's resolv.conf:
		// the cluster's would point at itself.
		if ds, ok := obj.(*appsv1.DaemonSet); ok && ds.Name == Agent && ds.Spec.Template.Spec.DNSPolicy != corev1.DNSDefault {
			t.Errorf("DaemonSet %s: dnsPolicy %q, want %q", ds.Name, ds.Spec.Template.Spec.DNSPolicy, corev1.DNSDefault)
		}
		if role, ok := obj.(*rbacv1.Role); ok {
			checkLeastPrivilege(t, role.Name, role.Rules)
		}
	}
	for k, n := range map[string]int{"Namespace": 1, "DaemonSet": 1, "Deployment": 1, "Service": 1, "MutatingWebhookConfiguration": 1,
		"ValidatingAdmissionPolicy": 1, "ValidatingAdmissionPolicyBinding": 1, "Secret": 1, "ServiceAccount": 2, "Lease": 1, "Role": 3} {
		if kinds[k] != n {
			t.Errorf("%d %s, want %d (all: %v)", kinds[k], k, n, kinds)
		}
	}
}

func verifyServing(t *testing.T, pool *x509.CertPool, r *Rendered) {
	t.Helper()
	pair, err := tls.X509KeyPair(r.TLSCert, r.TLSKey)
	if err != nil {
		t.Fatalf("serving key pair: %v", err)
	}
	leaf, _ := x509.ParseCertificate(pair.Certificate[0])
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: pool, DNSName: "holdfast-webhook.holdfast-system.svc",
		CurrentTime: time.Date(2026, 6, 1, 0, 0, 0, 0, time.UTC), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
		t.Fatalf("serving cert does not verify against the caBundle for the Service name: %v", err)
	}
}

func checkLeastPrivilege(t *testing.T, name string, rules []rbacv1.PolicyRule) {
	t.Helper()
	for _, r := range rules {
		for _, list := range [][]string{r.Verbs, r.Resources, r.APIGroups} {
			for _, v := range list {
				if v == "*" {
					t.Errorf("%s: wildcard in %+v", name, r)
				}
			}
		}
		for _, res := range r.Resources {
			if res == "secrets" || res == "pods/exec" {
				t.Errorf("%s: grants %s", name, res)
			}
		}
		for _, v := range r.Verbs {
			if v == "delete" || v == "deletecollection" || v == "escalate" || v == "bind" || v == "impersonate" {
				t.Errorf("%s: grants %s", name, v)
			}
		}
	}
}

// TestLeaseWritesRestrictedToOwnNode: the policy names the Lease prefix
// and the token's node name; the agent's role is the only one that writes
// Leases.
func TestLeaseWritesRestrictedToOwnNode(t *testing.T) {
	r := render(t)
	var vap *admv1.ValidatingAdmissionPolicy
	for _, o := range r.Objects {
		if v, ok := o.(*admv1.ValidatingAdmissionPolicy); ok {
			vap = v
		}
		if role, ok := o.(*rbacv1.Role); ok && role.Name != Agent {
			for _, rule := range role.Rules {
				for _, v := range rule.Verbs {
					// The webhook's leader election updates its own Lease only.
					own := role.Name == Webhook && v == "update" && len(rule.ResourceNames) == 1 && rule.ResourceNames[0] == Webhook
					events := role.Namespace == "default" && rule.Resources[0] == "events"
					if v != "get" && v != "list" && v != "watch" && !own && !events {
						t.Errorf("role %s may %s %v", role.Name, v, rule.ResourceNames)
					}
				}
			}
		}
	}
	if vap == nil {
		t.Fatal("no ValidatingAdmissionPolicy")
	}
	expr := vap.Spec.Validations[0].Expression
	if !strings.Contains(expr, `"holdfast-view-" + request.userInfo.extra[?'authentication.kubernetes.io/node-name']`) {
		t.Fatalf("lease rule does not tie the name to the caller's node: %s", expr)
	}
	if !strings.Contains(vap.Spec.MatchConditions[0].Expression, "system:serviceaccount:holdfast-system:holdfast-agent") {
		t.Fatalf("policy does not match the agent's service account: %s", vap.Spec.MatchConditions[0].Expression)
	}
}

// TestGolden pins the rendered YAML (certificate and key bytes redacted).
func TestGolden(t *testing.T) {
	r := render(t)
	got := regexp.MustCompile(`(caBundle|ca\.crt|tls\.crt|tls\.key): [A-Za-z0-9+/=]+`).ReplaceAll(r.YAML, []byte("$1: REDACTED"))
	p := filepath.Join("testdata", "manifests.golden.yaml")
	if *update {
		os.MkdirAll("testdata", 0o755)
		os.WriteFile(p, got, 0o644)
	}
	want, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("rendered manifests differ from %s (run with -update after checking):\n%s", p, got)
	}
	if blk, _ := pem.Decode(r.TLSKey); blk == nil {
		t.Fatal("no key PEM")
	}
}

func TestRenderRefuses(t *testing.T) {
	for _, c := range []Config{{NodeDNS: "x", NoQuorumPolicy: "retain"}, {Image: "i", NoQuorumPolicy: "retain"}, {Image: "i", NodeDNS: "x", NoQuorumPolicy: "maybe"}} {
		if _, err := Render(c); err == nil {
			t.Errorf("accepted %+v", c)
		}
	}
}

// TestPolicyRendered: --policy and --autonomy-duration reach the webhook's
// arguments; bad values are refused.
func TestPolicyRendered(t *testing.T) {
	c := Config{Image: "x", NodeDNS: "169.254.20.10", UnitLabel: "u", Policy: "always-retain", NoQuorumPolicy: "evict", AutonomyDuration: 90 * time.Minute}
	r, err := Render(c)
	if err != nil {
		t.Fatal(err)
	}
	var args string
	for _, o := range r.Objects {
		if d, ok := o.(*appsv1.Deployment); ok {
			args = strings.Join(d.Spec.Template.Spec.Containers[0].Args, " ")
		}
	}
	if !strings.Contains(args, "--policy always-retain --no-quorum-policy evict --autonomy-duration 1h30m0s") {
		t.Fatalf("webhook args %q", args)
	}
	for _, bad := range []Config{
		{Image: "x", NodeDNS: "a", Policy: "retain", NoQuorumPolicy: "retain"},
		{Image: "x", NodeDNS: "a", Policy: "verdicts", NoQuorumPolicy: "retain", AutonomyDuration: -time.Second},
	} {
		if _, err := Render(bad); err == nil {
			t.Errorf("%+v accepted", bad)
		}
	}
}

// TestWebhookWrites: the webhook may patch Nodes and their status (taint
// holdfast.dev/retained, condition holdfast.dev/PeerVerdict), create
// Events only in default, and nothing else beyond reading.
func TestWebhookWrites(t *testing.T) {
	writes := map[string]bool{}
	for _, o := range render(t).Objects {
		var rules []rbacv1.PolicyRule
		ns := ""
		switch r := o.(type) {
		case *rbacv1.ClusterRole:
			if r.Name != Webhook {
				continue
			}
			rules = r.Rules
		case *rbacv1.Role:
			if !strings.HasPrefix(r.Name, Webhook) {
				continue
			}
			rules, ns = r.Rules, r.Namespace
		default:
			continue
		}
		for _, rule := range rules {
			for _, v := range rule.Verbs {
				if v == "get" || v == "list" || v == "watch" {
					continue
				}
				for _, res := range rule.Resources {
					writes[ns+"/"+res+"/"+v+strings.Join(rule.ResourceNames, ",")] = true
				}
			}
		}
	}
	want := map[string]bool{"/nodes/patch": true, "/nodes/status/patch": true, "holdfast-system/leases/updateholdfast-webhook": true,
		"default/events/create": true, "default/events/patch": true}
	if len(writes) != len(want) {
		t.Fatalf("webhook writes %v, want %v", writes, want)
	}
	for w := range want {
		if !writes[w] {
			t.Fatalf("webhook writes %v, want %v", writes, want)
		}
	}
}
