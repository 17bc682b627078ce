package webhook

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/tools/leaderelection"
	"k8s.io/client-go/tools/leaderelection/resourcelock"
	"k8s.io/client-go/tools/record"
)

// NewEventRecorder records Events on Nodes as component holdfast-webhook.
func NewEventRecorder(ctx context.Context, cs kubernetes.Interface) record.EventRecorder {
	b := record.NewBroadcaster(record.WithContext(ctx))
	b.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: cs.CoreV1().Events("")})
	return b.NewRecorder(scheme.Scheme, corev1.EventSource{Component: "holdfast-webhook"})
}

// RunLeading runs ctl in the replica holding the Lease LeaderLease
// (rendered by the manifests, so the webhook needs no create right) until
// ctx ends; the other replicas only answer admission.
func RunLeading(ctx context.Context, cs kubernetes.Interface, log *slog.Logger, ctl *Controller) {
	host, _ := os.Hostname()
	id := fmt.Sprintf("%s_%d", host, os.Getpid())
	lock := &resourcelock.LeaseLock{LeaseMeta: metav1.ObjectMeta{Name: LeaderLease, Namespace: Namespace},
		Client: cs.CoordinationV1(), LockConfig: resourcelock.ResourceLockConfig{Identity: id}}
	for ctx.Err() == nil {
		leaderelection.RunOrDie(ctx, leaderelection.LeaderElectionConfig{
			Lock: lock, LeaseDuration: 15 * time.Second, RenewDeadline: 10 * time.Second, RetryPeriod: 2 * time.Second,
			ReleaseOnCancel: true, Name: LeaderLease,
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
