package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/client-go/tools/leaderelection"
	"k8s.io/client-go/tools/leaderelection/resourcelock"
	"k8s.io/client-go/tools/record"

	"github.com/holdfast-edge/holdfast/health/webhook"
	"github.com/holdfast-edge/holdfast/internal/daemon"
)

// runWebhook: holdfastd webhook [flags].
func runWebhook(ctx context.Context, args []string) error {
	fs := newFlagSet("webhook", "Mutating admission webhook (TLS, POST /mutate) that applies the peers' verdicts, read from the Leases\nholdfast-view-<node> in holdfast-system, to Node taints, EndpointSlices and Endpoints of nodes the cloud sees NotReady.")
	listen := fs.String("listen", ":8443", "TLS address of the admission endpoint (POST /mutate)")
	metricsListen := fs.String("metrics-listen", ":8080", "plain HTTP address of /healthz and /metrics (empty: off)")
	certFile := fs.String("tls-cert-file", "/etc/holdfast/webhook/tls.crt", "serving certificate (PEM), re-read every minute")
	keyFile := fs.String("tls-key-file", "/etc/holdfast/webhook/tls.key", "serving key (PEM)")
	kubeconfig := fs.String("kubeconfig", "", "kubeconfig (empty or \"-\": in-cluster config)")
	unitLabel := fs.String("unit-label", "holdfast.dev/unit", "Node label that names a node's unit (unlabelled nodes form the cluster-wide unit)")
	policy := fs.String("policy", "verdicts", "verdicts: the peers' verdicts decide (docs/health.md); always-retain: keep every not-Ready node's pods and endpoints without consulting health (a really dead node keeps its endpoints until someone acts)")
	noQuorum := fs.String("no-quorum-policy", "retain", "under --policy verdicts, when a node's unit has no fresh quorum of views: retain (keep its pods, drop eviction taints) or evict (normal Kubernetes)")
	duration := fs.Duration("autonomy-duration", 0, "how long after its Ready condition left True a node's pods are kept at most, for nodes without the annotation "+webhook.DurationAnnotation+" (0: forever); applies under every policy")
	debug := fs.Bool("debug", false, "debug logging")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return exitError{2, fmt.Errorf("unexpected arguments %q", fs.Args())}
	}
	pol, err := webhook.ParsePolicy(*policy)
	if err != nil {
		return exitError{2, err}
	}
	nq, err := webhook.ParseNoQuorumPolicy(*noQuorum)
	if err != nil {
		return exitError{2, err}
	}
	if *duration < 0 {
		return exitError{2, fmt.Errorf("--autonomy-duration %v: negative", *duration)}
	}
	if *certFile == "" || *keyFile == "" {
		return exitError{2, errors.New("--tls-cert-file and --tls-key-file are required")}
	}
	log := daemon.NewLogger("webhook", *debug)
	var cfg *rest.Config
	if *kubeconfig == "" || *kubeconfig == "-" {
		cfg, err = rest.InClusterConfig()
	} else {
		cfg, err = clientcmd.BuildConfigFromFlags("", *kubeconfig)
	}
	if err != nil {
		return fmt.Errorf("kubeconfig: %w", err)
	}
	cfg.Timeout = 10 * time.Second
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return err
	}
	state, err := webhook.NewClusterState(ctx, cs, *unitLabel)
	if err != nil {
		return err
	}
	reg := daemon.NewRegistry()
	if _, err := daemon.Serve(ctx, log, *metricsListen, daemon.Mux(reg, nil)); err != nil {
		return err
	}
	metrics := webhook.NewMetrics(reg)
	events := eventRecorder(ctx, cs)
	dec := &webhook.Decider{Policy: pol, NoQuorum: nq, Duration: *duration, Log: log}
	m := &webhook.Mutator{State: state, Decider: dec, Events: events, Observe: metrics.Observe, Log: log}
	ctl := &webhook.Controller{Cluster: state, Decider: dec, Client: cs, Events: events, Log: log, Metrics: metrics,
		Period: 2 * time.Second, Refresh: 5 * time.Minute}
	go leadController(ctx, cs, log, ctl)
	log.Info("webhook serving", "listen", *listen, "policy", pol, "no_quorum_policy", nq, "autonomy_duration", *duration, "unit_label", *unitLabel)
	return webhook.ServeTLS(ctx, *listen, *certFile, *keyFile, webhook.Handler(m, log, reg))
}

// eventRecorder records Events on Nodes as component holdfast-webhook.
func eventRecorder(ctx context.Context, cs kubernetes.Interface) record.EventRecorder {
	b := record.NewBroadcaster(record.WithContext(ctx))
	b.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: cs.CoreV1().Events("")})
	return b.NewRecorder(scheme.Scheme, corev1.EventSource{Component: "holdfast-webhook"})
}

// leadController runs the Controller in the replica holding the Lease
// holdfast-webhook (rendered by the manifests, so the webhook needs no
// create right); the others only answer admission.
func leadController(ctx context.Context, cs kubernetes.Interface, log *slog.Logger, ctl *webhook.Controller) {
	host, _ := os.Hostname()
	id := fmt.Sprintf("%s_%d", host, os.Getpid())
	lock := &resourcelock.LeaseLock{LeaseMeta: metav1.ObjectMeta{Name: webhook.LeaderLease, Namespace: webhook.Namespace},
		Client: cs.CoordinationV1(), LockConfig: resourcelock.ResourceLockConfig{Identity: id}}
	for ctx.Err() == nil {
		leaderelection.RunOrDie(ctx, leaderelection.LeaderElectionConfig{
			Lock: lock, LeaseDuration: 15 * time.Second, RenewDeadline: 10 * time.Second, RetryPeriod: 2 * time.Second,
			ReleaseOnCancel: true, Name: webhook.LeaderLease,
			Callbacks: leaderelection.LeaderCallbacks{
				OnStartedLeading: func(ctx context.Context) {
					log.Info("leading: writing node conditions and events", "identity", id)
					ctl.Run(ctx)
				},
				OnStoppedLeading: func() { log.Info("stopped leading", "identity", id) },
			},
		})
	}
}
