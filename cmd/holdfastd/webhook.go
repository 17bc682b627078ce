package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/holdfast-edge/holdfast/health/webhook"
	"github.com/holdfast-edge/holdfast/internal/daemon"
	"github.com/holdfast-edge/holdfast/internal/kubeclient"
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
	cs, err := kubeclient.Client(*kubeconfig, "holdfastd-webhook")
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
	events := webhook.NewEventRecorder(ctx, cs)
	dec := &webhook.Decider{Policy: pol, NoQuorum: nq, Duration: *duration, Log: log}
	m := &webhook.Mutator{State: state, Decider: dec, Events: events, Observe: metrics.Observe, Log: log}
	ctl := &webhook.Controller{Cluster: state, Decider: dec, Client: cs, Events: events, Log: log, Metrics: metrics,
		Period: 2 * time.Second, Refresh: 5 * time.Minute}
	go webhook.RunLeading(ctx, cs, log, ctl)
	go daemon.ReleaseStartupPages(ctx, log)
	log.Info("webhook serving", "listen", *listen, "policy", pol, "no_quorum_policy", nq, "autonomy_duration", *duration, "unit_label", *unitLabel)
	return webhook.ServeTLS(ctx, *listen, *certFile, *keyFile, webhook.Handler(m, log, reg))
}
