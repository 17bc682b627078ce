// Package manifests renders the Kubernetes side of holdfast: the
// holdfast-system namespace, least-privilege RBAC, the agent DaemonSet
// (peer health and the node DNS in one `holdfastd agent` process), and the admission webhook (Deployment, Service, TLS Secret and
// a MutatingWebhookConfiguration with failurePolicy Ignore, so a webhook
// outage never blocks the cluster) with a freshly generated CA and serving
// certificate. Objects are built from the typed k8s.io/api structs. It only
// renders YAML; it never talks to an apiserver.
package manifests

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"time"

	admv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	coordv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/yaml"

	"github.com/holdfast-edge/holdfast/dns"
	"github.com/holdfast-edge/holdfast/health"
)

// Names shared with the components.
const (
	Namespace   = "holdfast-system"
	LeasePrefix = "holdfast-view-"
	Webhook     = "holdfast-webhook"
	// Agent names the DaemonSet of `holdfastd agent` (health and DNS in
	// one process, docs/footprint.md), its ServiceAccount and RBAC.
	Agent       = "holdfast-agent"
	HealthPort  = health.DefaultPort
	WebhookPort = 8443
)

// Config tunes the rendered manifests.
type Config struct {
	// Image is the holdfastd image (built by `make image`).
	Image string
	// NodeDNS is the address the agent's DNS serves on.
	NodeDNS string
	// UnitLabel is the Node label naming a node's unit.
	UnitLabel string
	// Policy is the webhook's --policy: verdicts or always-retain.
	Policy string
	// NoQuorumPolicy is the webhook's policy when a unit has no quorum.
	NoQuorumPolicy string
	// AutonomyDuration is the webhook's default autonomy duration (0: forever).
	AutonomyDuration time.Duration
	// CertValidity is how long the generated certificates last.
	CertValidity time.Duration
	// Now stamps the certificates (tests pin it).
	Now time.Time
}

// Rendered holds the YAML and the generated CA (for tests and rotation).
type Rendered struct {
	YAML    []byte
	CACert  []byte // PEM
	TLSCert []byte // PEM
	TLSKey  []byte // PEM
	Objects []runtime.Object
}

// Render builds every object and returns them as one multi-document YAML.
func Render(c Config) (*Rendered, error) {
	if c.Image == "" {
		return nil, fmt.Errorf("image is empty")
	}
	if c.NodeDNS == "" {
		return nil, fmt.Errorf("node DNS address is empty")
	}
	if c.Policy != "verdicts" && c.Policy != "always-retain" {
		return nil, fmt.Errorf("policy %q: want verdicts or always-retain", c.Policy)
	}
	if c.NoQuorumPolicy != "retain" && c.NoQuorumPolicy != "evict" {
		return nil, fmt.Errorf("no-quorum policy %q: want retain or evict", c.NoQuorumPolicy)
	}
	if c.AutonomyDuration < 0 {
		return nil, fmt.Errorf("autonomy duration %v: negative", c.AutonomyDuration)
	}
	if c.CertValidity <= 0 {
		c.CertValidity = 365 * 24 * time.Hour
	}
	if c.Now.IsZero() {
		c.Now = time.Now()
	}
	caPEM, certPEM, keyPEM, err := certs(c)
	if err != nil {
		return nil, err
	}
	objs := []runtime.Object{
		&corev1.Namespace{TypeMeta: tm("v1", "Namespace"), ObjectMeta: meta(Namespace, "")},
	}
	for _, sa := range []string{Agent, Webhook} {
		objs = append(objs, &corev1.ServiceAccount{TypeMeta: tm("v1", "ServiceAccount"), ObjectMeta: meta(sa, Namespace)})
	}
	objs = append(objs, rbac()...)
	objs = append(objs, leasePolicy()...)
	objs = append(objs, agentDS(c))
	objs = append(objs, webhookObjs(c, caPEM, certPEM, keyPEM)...)

	var buf bytes.Buffer
	buf.WriteString("# Rendered by holdfastd manifests. Contains a generated TLS key: treat as a secret.\n")
	for _, o := range objs {
		b, err := yaml.Marshal(o)
		if err != nil {
			return nil, fmt.Errorf("render %T: %w", o, err)
		}
		buf.WriteString("---\n")
		buf.Write(b)
	}
	return &Rendered{YAML: buf.Bytes(), CACert: caPEM, TLSCert: certPEM, TLSKey: keyPEM, Objects: objs}, nil
}

func tm(apiVersion, kind string) metav1.TypeMeta {
	return metav1.TypeMeta{APIVersion: apiVersion, Kind: kind}
}

func meta(name, ns string) metav1.ObjectMeta {
	return metav1.ObjectMeta{Name: name, Namespace: ns, Labels: map[string]string{"app.kubernetes.io/part-of": "holdfast", "app.kubernetes.io/name": name}}
}

func rbac() []runtime.Object {
	read := []string{"get", "list", "watch"}
	type grant struct {
		name    string
		cluster []rbacv1.PolicyRule
		ns      []rbacv1.PolicyRule
	}
	grants := []grant{
		{Agent,
			[]rbacv1.PolicyRule{
				// Health: members and public keys come from Node objects;
				// each node publishes its own key annotation (patch),
				// restricted to its own Node by the admission policy below.
				{APIGroups: []string{""}, Resources: []string{"nodes"}, Verbs: append(read, "patch")},
				// DNS: namespaces too: a name in an existing namespace
				// without Services is NODATA, in a missing one NXDOMAIN (as
				// CoreDNS).
				{APIGroups: []string{""}, Resources: []string{"services", "namespaces"}, Verbs: []string{"list", "watch"}},
				{APIGroups: []string{"discovery.k8s.io"}, Resources: []string{"endpointslices"}, Verbs: []string{"list", "watch"}},
			},
			// Health's views: read every Lease, write its own (create
			// cannot be restricted by name in RBAC; the admission policy
			// does it).
			[]rbacv1.PolicyRule{{APIGroups: []string{"coordination.k8s.io"}, Resources: []string{"leases"}, Verbs: append(read, "create", "update", "patch")}}},
		{Webhook,
			[]rbacv1.PolicyRule{
				{APIGroups: []string{""}, Resources: []string{"pods"}, Verbs: read},
				// patch: its own taint holdfast.dev/retained (per-pod opt-out).
				{APIGroups: []string{""}, Resources: []string{"nodes"}, Verbs: append(read, "patch")},
				// The condition holdfast.dev/PeerVerdict.
				{APIGroups: []string{""}, Resources: []string{"nodes/status"}, Verbs: []string{"patch"}},
			},
			[]rbacv1.PolicyRule{
				{APIGroups: []string{"coordination.k8s.io"}, Resources: []string{"leases"}, Verbs: read},
				// Leader election on the rendered Lease only (no create).
				{APIGroups: []string{"coordination.k8s.io"}, Resources: []string{"leases"}, ResourceNames: []string{Webhook}, Verbs: []string{"update"}},
			}},
	}
	var out []runtime.Object
	for _, g := range grants {
		subj := []rbacv1.Subject{{Kind: "ServiceAccount", Name: g.name, Namespace: Namespace}}
		out = append(out,
			&rbacv1.ClusterRole{TypeMeta: tm("rbac.authorization.k8s.io/v1", "ClusterRole"), ObjectMeta: meta(g.name, ""), Rules: g.cluster},
			&rbacv1.ClusterRoleBinding{TypeMeta: tm("rbac.authorization.k8s.io/v1", "ClusterRoleBinding"), ObjectMeta: meta(g.name, ""),
				RoleRef: rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: g.name}, Subjects: subj},
			&rbacv1.Role{TypeMeta: tm("rbac.authorization.k8s.io/v1", "Role"), ObjectMeta: meta(g.name, Namespace), Rules: g.ns},
			&rbacv1.RoleBinding{TypeMeta: tm("rbac.authorization.k8s.io/v1", "RoleBinding"), ObjectMeta: meta(g.name, Namespace),
				RoleRef: rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "Role", Name: g.name}, Subjects: subj},
		)
	}
	// Events on Nodes (cluster-scoped) live in namespace default.
	events := Webhook + "-events"
	out = append(out,
		&rbacv1.Role{TypeMeta: tm("rbac.authorization.k8s.io/v1", "Role"), ObjectMeta: meta(events, "default"),
			Rules: []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"events"}, Verbs: []string{"create", "patch"}}}},
		&rbacv1.RoleBinding{TypeMeta: tm("rbac.authorization.k8s.io/v1", "RoleBinding"), ObjectMeta: meta(events, "default"),
			RoleRef:  rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "Role", Name: events},
			Subjects: []rbacv1.Subject{{Kind: "ServiceAccount", Name: Webhook, Namespace: Namespace}}},
	)
	return out
}

// leasePolicy restricts the agent's ServiceAccount: a pod may write only
// the Lease holdfast-view-<its node> and only its own Node. The node name
// comes from the bound service account token
// (authentication.kubernetes.io/node-name, Kubernetes 1.32+).
func leasePolicy() []runtime.Object {
	fail := admv1.Fail
	deny := []admv1.ValidationAction{admv1.Deny}
	sa := "system:serviceaccount:" + Namespace + ":" + Agent
	policy := Agent + "-own-objects"
	nodeOf := "request.userInfo.extra[?'authentication.kubernetes.io/node-name'].orValue([''])[0]"
	return []runtime.Object{
		&admv1.ValidatingAdmissionPolicy{TypeMeta: tm("admissionregistration.k8s.io/v1", "ValidatingAdmissionPolicy"), ObjectMeta: meta(policy, ""),
			Spec: admv1.ValidatingAdmissionPolicySpec{
				FailurePolicy: &fail,
				MatchConstraints: &admv1.MatchResources{ResourceRules: []admv1.NamedRuleWithOperations{
					{RuleWithOperations: admv1.RuleWithOperations{Operations: []admv1.OperationType{admv1.Create, admv1.Update, admv1.Delete},
						Rule: admv1.Rule{APIGroups: []string{"coordination.k8s.io"}, APIVersions: []string{"v1"}, Resources: []string{"leases"}}}},
					{RuleWithOperations: admv1.RuleWithOperations{Operations: []admv1.OperationType{admv1.Update},
						Rule: admv1.Rule{APIGroups: []string{""}, APIVersions: []string{"v1"}, Resources: []string{"nodes"}}}},
				}},
				MatchConditions: []admv1.MatchCondition{{Name: "agent-service-account", Expression: fmt.Sprintf("request.userInfo.username == %q", sa)}},
				Validations: []admv1.Validation{
					{Expression: fmt.Sprintf("request.resource.resource != 'leases' || (request.namespace == %q && request.name == %q + %s)", Namespace, LeasePrefix, nodeOf),
						Message: "the agent may write only the Lease " + LeasePrefix + "<its own node>"},
					{Expression: fmt.Sprintf("request.resource.resource != 'nodes' || request.name == %s", nodeOf),
						Message: "the agent may annotate only its own Node"},
				},
			}},
		&admv1.ValidatingAdmissionPolicyBinding{TypeMeta: tm("admissionregistration.k8s.io/v1", "ValidatingAdmissionPolicyBinding"), ObjectMeta: meta(policy, ""),
			Spec: admv1.ValidatingAdmissionPolicyBindingSpec{PolicyName: policy, ValidationActions: deny}},
	}
}

func nodeNameEnv() corev1.EnvVar {
	return corev1.EnvVar{Name: "NODE_NAME", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "spec.nodeName"}}}
}

func hostDir(name, p string) (corev1.Volume, corev1.VolumeMount) {
	t := corev1.HostPathDirectoryOrCreate
	return corev1.Volume{Name: name, VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: p, Type: &t}}},
		corev1.VolumeMount{Name: name, MountPath: p}
}

// agentDS is the DaemonSet of `holdfastd agent`: the health daemon (its
// state dir and key, the health port) and the node DNS (its state dir,
// port 53 on NodeDNS) in one container, after the keygen init container.
func agentDS(c Config) *appsv1.DaemonSet {
	healthVol, healthMount := hostDir("health-state", health.DefaultStateDir)
	dnsVol, dnsMount := hostDir("dns-state", dns.DefaultStateDir)
	f := false
	labels := map[string]string{"app.kubernetes.io/name": Agent}
	sc := func(caps ...corev1.Capability) *corev1.SecurityContext {
		return &corev1.SecurityContext{AllowPrivilegeEscalation: &f, ReadOnlyRootFilesystem: ptr(true),
			Capabilities: &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}, Add: caps}}
	}
	env := []corev1.EnvVar{nodeNameEnv()}
	return &appsv1.DaemonSet{TypeMeta: tm("apps/v1", "DaemonSet"), ObjectMeta: meta(Agent, Namespace),
		Spec: appsv1.DaemonSetSpec{
			Selector:       &metav1.LabelSelector{MatchLabels: labels},
			UpdateStrategy: appsv1.DaemonSetUpdateStrategy{Type: appsv1.RollingUpdateDaemonSetStrategyType},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{
					ServiceAccountName: Agent,
					HostNetwork:        true,
					// The node's resolv.conf, not the cluster's: with
					// ClusterFirstWithHostNet the pod's only nameserver is
					// kubelet's clusterDNS, the node DNS itself, which dns
					// drops as a loop, leaving no upstream at all. (Health
					// resolves no names: members are Node addresses.)
					DNSPolicy:         corev1.DNSDefault,
					PriorityClassName: "system-node-critical",
					Tolerations:       []corev1.Toleration{{Operator: corev1.TolerationOpExists}},
					// The node's signing key is made on the first start and
					// kept after; without it the health daemon exits.
					InitContainers: []corev1.Container{{
						Name: "keygen", Image: c.Image, ImagePullPolicy: corev1.PullIfNotPresent,
						Args: []string{"health", "keygen", "--if-missing", "--out", health.DefaultKeyFile, "--node-name", "$(NODE_NAME)"},
						Env:  env, VolumeMounts: []corev1.VolumeMount{healthMount}, SecurityContext: sc(),
					}},
					Containers: []corev1.Container{{
						Name: "holdfastd", Image: c.Image, ImagePullPolicy: corev1.PullIfNotPresent,
						Args: []string{"agent", "--node-name", "$(NODE_NAME)",
							"--health-kubeconfig", "-", "--health-key-file", health.DefaultKeyFile, "--health-unit-label", c.UnitLabel,
							"--dns-listen", c.NodeDNS + ":53"},
						Env: env,
						Ports: []corev1.ContainerPort{
							{Name: "views", ContainerPort: HealthPort, Protocol: corev1.ProtocolUDP}, {Name: "http", ContainerPort: HealthPort, Protocol: corev1.ProtocolTCP},
							{Name: "dns", ContainerPort: 53, Protocol: corev1.ProtocolUDP}, {Name: "dns-tcp", ContainerPort: 53, Protocol: corev1.ProtocolTCP}},
						VolumeMounts: []corev1.VolumeMount{healthMount, dnsMount},
						// NET_ADMIN puts the DNS link-local address on a node
						// device; binding :53 needs NET_BIND_SERVICE.
						SecurityContext: sc("NET_ADMIN", "NET_BIND_SERVICE"),
					}},
					Volumes: []corev1.Volume{healthVol, dnsVol},
				},
			},
		}}
}

func ptr[T any](v T) *T { return &v }

func webhookObjs(c Config, ca, cert, key []byte) []runtime.Object {
	labels := map[string]string{"app.kubernetes.io/name": Webhook}
	f := false
	secret := Webhook + "-tls"
	ignore := admv1.Ignore
	none := admv1.SideEffectClassNone
	// The node hook records Events (not on a dry run).
	onDryRun := admv1.SideEffectClassNoneOnDryRun
	timeout := int32(5)
	path := "/mutate"
	rule := func(group, res string, ops ...admv1.OperationType) admv1.RuleWithOperations {
		return admv1.RuleWithOperations{Operations: ops, Rule: admv1.Rule{APIGroups: []string{group}, APIVersions: []string{"v1"}, Resources: []string{res}}}
	}
	hook := func(name string, side admv1.SideEffectClass, rules ...admv1.RuleWithOperations) admv1.MutatingWebhook {
		return admv1.MutatingWebhook{
			Name: name,
			ClientConfig: admv1.WebhookClientConfig{Service: &admv1.ServiceReference{Namespace: Namespace, Name: Webhook, Path: &path, Port: ptr(int32(443))},
				CABundle: ca},
			Rules: rules, FailurePolicy: &ignore, SideEffects: &side, TimeoutSeconds: &timeout,
			AdmissionReviewVersions: []string{"v1"},
			ReinvocationPolicy:      ptr(admv1.NeverReinvocationPolicy),
		}
	}
	return []runtime.Object{
		// The replicas elect the one that writes Node conditions and events.
		&coordv1.Lease{TypeMeta: tm("coordination.k8s.io/v1", "Lease"), ObjectMeta: meta(Webhook, Namespace)},
		&corev1.Secret{TypeMeta: tm("v1", "Secret"), ObjectMeta: meta(secret, Namespace), Type: corev1.SecretTypeTLS,
			Data: map[string][]byte{corev1.TLSCertKey: cert, corev1.TLSPrivateKeyKey: key, "ca.crt": ca}},
		&appsv1.Deployment{TypeMeta: tm("apps/v1", "Deployment"), ObjectMeta: meta(Webhook, Namespace),
			Spec: appsv1.DeploymentSpec{Replicas: ptr(int32(2)), Selector: &metav1.LabelSelector{MatchLabels: labels},
				Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labels}, Spec: corev1.PodSpec{
					ServiceAccountName: Webhook,
					Containers: []corev1.Container{{Name: "holdfastd", Image: c.Image, ImagePullPolicy: corev1.PullIfNotPresent,
						Args: []string{"webhook", "--listen", fmt.Sprintf(":%d", WebhookPort), "--tls-cert-file", "/etc/holdfast/tls/tls.crt",
							"--tls-key-file", "/etc/holdfast/tls/tls.key", "--kubeconfig", "-", "--unit-label", c.UnitLabel,
							"--policy", c.Policy, "--no-quorum-policy", c.NoQuorumPolicy, "--autonomy-duration", c.AutonomyDuration.String()},
						Ports:        []corev1.ContainerPort{{Name: "https", ContainerPort: WebhookPort}},
						VolumeMounts: []corev1.VolumeMount{{Name: "tls", MountPath: "/etc/holdfast/tls", ReadOnly: true}},
						ReadinessProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/healthz",
							Port: intstr.FromInt32(WebhookPort), Scheme: corev1.URISchemeHTTPS}}},
						SecurityContext: &corev1.SecurityContext{AllowPrivilegeEscalation: &f, ReadOnlyRootFilesystem: ptr(true), RunAsNonRoot: ptr(true), RunAsUser: ptr(int64(65532)),
							Capabilities: &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}}},
					}},
					Volumes: []corev1.Volume{{Name: "tls", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{SecretName: secret}}}},
				}}}},
		&corev1.Service{TypeMeta: tm("v1", "Service"), ObjectMeta: meta(Webhook, Namespace),
			Spec: corev1.ServiceSpec{Selector: labels, Ports: []corev1.ServicePort{{Name: "https", Port: 443, TargetPort: intstr.FromInt32(WebhookPort)}}}},
		&admv1.MutatingWebhookConfiguration{TypeMeta: tm("admissionregistration.k8s.io/v1", "MutatingWebhookConfiguration"), ObjectMeta: meta(Webhook, ""),
			Webhooks: []admv1.MutatingWebhook{
				hook("nodes.holdfast.dev", onDryRun, rule("", "nodes", admv1.Update)),
				hook("endpoints.holdfast.dev", none, rule("discovery.k8s.io", "endpointslices", admv1.Create, admv1.Update), rule("", "endpoints", admv1.Create, admv1.Update)),
				// Every new pod's toleration of holdfast.dev/retained.
				hook("pods.holdfast.dev", none, rule("", "pods", admv1.Create)),
			}},
	}
}

// certs makes a CA and a serving certificate for the webhook Service.
func certs(c Config) (caPEM, certPEM, keyPEM []byte, err error) {
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, nil, err
	}
	serial := func() *big.Int {
		n, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 120))
		return n
	}
	notBefore := c.Now.Add(-5 * time.Minute)
	caTmpl := &x509.Certificate{SerialNumber: serial(), Subject: pkix.Name{CommonName: "holdfast-webhook-ca"},
		NotBefore: notBefore, NotAfter: c.Now.Add(c.CertValidity), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("create CA: %w", err)
	}
	caCert, _ := x509.ParseCertificate(caDER)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, nil, err
	}
	svc := Webhook + "." + Namespace + ".svc"
	tmpl := &x509.Certificate{SerialNumber: serial(), Subject: pkix.Name{CommonName: svc},
		DNSNames:  []string{Webhook, Webhook + "." + Namespace, svc, svc + ".cluster.local"},
		NotBefore: notBefore, NotAfter: c.Now.Add(c.CertValidity),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &key.PublicKey, caKey)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("create serving cert: %w", err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, nil, nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}),
		pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), nil
}
