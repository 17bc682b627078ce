package webhook

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"time"

	coordv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/record"

	"github.com/holdfast-edge/holdfast/internal/kubeclient"
)

// NewEventRecorder records Events on Nodes as component holdfast-webhook.
func NewEventRecorder(ctx context.Context, cs kubeclient.Interface) record.EventRecorder {
	b := record.NewBroadcaster(record.WithContext(ctx))
	b.StartRecordingToSink(eventSink{ctx: ctx, cs: cs})
	return b.NewRecorder(kubeclient.Scheme, corev1.EventSource{Component: "holdfast-webhook"})
}

// eventSink writes the broadcaster's Events, each in its own namespace.
type eventSink struct {
	ctx context.Context
	cs  kubeclient.Interface
}

func (s eventSink) Create(e *corev1.Event) (*corev1.Event, error) {
	return s.cs.Events(e.Namespace).Create(s.ctx, e, metav1.CreateOptions{})
}

func (s eventSink) Update(e *corev1.Event) (*corev1.Event, error) {
	return s.cs.Events(e.Namespace).Update(s.ctx, e, metav1.UpdateOptions{})
}

func (s eventSink) Patch(e *corev1.Event, data []byte) (*corev1.Event, error) {
	return s.cs.Events(e.Namespace).Patch(s.ctx, e.Name, types.StrategicMergePatchType, data, metav1.PatchOptions{})
}

// RunLeading runs ctl in the replica holding the Lease LeaderLease
// (rendered by the manifests, so the webhook needs no create right) until
// ctx ends; the other replicas only answer admission.
func RunLeading(ctx context.Context, cs kubeclient.Interface, log *slog.Logger, ctl *Controller) {
	host, _ := os.Hostname()
	e := &Elector{Leases: cs.Leases(Namespace), Name: LeaderLease, Identity: fmt.Sprintf("%s_%d", host, os.Getpid()), Log: log}
	e.Run(ctx, func(ctx context.Context) {
		log.Info("leading: writing node conditions and events", "identity", e.Identity)
		ctl.Run(ctx)
	})
}

// Elector holds a Lease for one of several replicas at a time: the holder
// renews it every Retry; another takes it over when the holder released it
// or has not renewed it for the Lease's duration, as this replica's clock
// measures since it last saw the Lease change (so clock skew between
// replicas does not matter). Updates carry the resourceVersion read, so
// two replicas never both win a takeover.
type Elector struct {
	Leases        kubeclient.Resource[*coordv1.Lease, *coordv1.LeaseList]
	Name          string
	Identity      string
	Duration      time.Duration // the Lease's duration; default 15 s
	RenewDeadline time.Duration // the holder stops leading when it could not renew for this long; default 10 s
	Retry         time.Duration // how often to try to take or renew the Lease; default 2 s
	Log           *slog.Logger

	seenVersion string    // resourceVersion of the Lease last seen
	seenAt      time.Time // when it was first seen (this replica's clock)
}

func (e *Elector) defaults() {
	if e.Duration <= 0 {
		e.Duration = 15 * time.Second
	}
	if e.RenewDeadline <= 0 {
		e.RenewDeadline = 10 * time.Second
	}
	if e.Retry <= 0 {
		e.Retry = 2 * time.Second
	}
	if e.Log == nil {
		e.Log = slog.New(slog.DiscardHandler)
	}
}

// Run campaigns until ctx ends. Whenever it holds the Lease it runs lead
// with a context that ends when the Lease is lost; when ctx ends while it
// leads, it waits for lead to return and releases the Lease, so that
// another replica takes over at once.
func (e *Elector) Run(ctx context.Context, lead func(context.Context)) {
	e.defaults()
	for e.campaign(ctx) {
		e.lead(ctx, lead)
	}
}

// campaign tries to take the Lease every Retry; false when ctx ended.
func (e *Elector) campaign(ctx context.Context) bool {
	t := time.NewTicker(e.Retry)
	defer t.Stop()
	for ctx.Err() == nil {
		ok, err := e.tryHold(ctx)
		if ok {
			e.Log.Info("took the leader lease", "lease", e.Name, "identity", e.Identity)
			return true
		}
		if err != nil && ctx.Err() == nil {
			e.Log.Debug("leader lease not taken", "lease", e.Name, "err", err)
		}
		select {
		case <-ctx.Done():
		case <-t.C:
		}
	}
	return false
}

// lead runs lead while renewing the Lease; it returns once lead returned.
func (e *Elector) lead(ctx context.Context, lead func(context.Context)) {
	lctx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		lead(lctx)
	}()
	t := time.NewTicker(e.Retry)
	defer t.Stop()
	renewed := time.Now()
	for {
		select {
		case <-ctx.Done():
			stop()
			<-done
			e.release()
			return
		case <-done:
			stop()
			if ctx.Err() != nil {
				// ctx ended and lead, seeing it first, returned before
				// this select did: release all the same.
				e.release()
			}
			return
		case <-t.C:
		}
		rctx, cancel := context.WithTimeout(ctx, e.Retry)
		ok, err := e.tryHold(rctx)
		cancel()
		if ok {
			renewed = time.Now()
			continue
		}
		if err == nil || time.Since(renewed) > e.RenewDeadline {
			// Another replica holds it, or this one could not renew in
			// time: the others may take over now.
			e.Log.Warn("stopped leading", "lease", e.Name, "identity", e.Identity, "lastRenewed", renewed, "err", err)
			stop()
			<-done
			return
		}
	}
}

// tryHold takes the Lease if it is free or expired, or renews it if this
// replica holds it. false with a nil error: another replica holds it.
func (e *Elector) tryHold(ctx context.Context) (bool, error) {
	now := time.Now()
	l, err := e.Leases.Get(ctx, e.Name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		l = &coordv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: e.Name}}
		e.stamp(l, now)
		l, err = e.Leases.Create(ctx, l, metav1.CreateOptions{})
		return e.saw(l, err, now)
	}
	if err != nil {
		return false, err
	}
	if l.ResourceVersion != e.seenVersion {
		e.seenVersion, e.seenAt = l.ResourceVersion, now
	}
	holder := ""
	if l.Spec.HolderIdentity != nil {
		holder = *l.Spec.HolderIdentity
	}
	dur := e.Duration
	if s := l.Spec.LeaseDurationSeconds; s != nil && *s > 0 {
		dur = time.Duration(*s) * time.Second
	}
	if holder != "" && holder != e.Identity && now.Before(e.seenAt.Add(dur)) {
		return false, nil
	}
	e.stamp(l, now)
	l, err = e.Leases.Update(ctx, l, metav1.UpdateOptions{})
	return e.saw(l, err, now)
}

// stamp makes l held by this replica, renewed now.
func (e *Elector) stamp(l *coordv1.Lease, now time.Time) {
	mt := metav1.NewMicroTime(now)
	if l.Spec.HolderIdentity == nil || *l.Spec.HolderIdentity != e.Identity {
		n := int32(1)
		if l.Spec.LeaseTransitions != nil {
			n = *l.Spec.LeaseTransitions + 1
		}
		l.Spec.AcquireTime, l.Spec.LeaseTransitions = &mt, &n
	}
	id, secs := e.Identity, int32(e.Duration/time.Second)
	l.Spec.HolderIdentity, l.Spec.LeaseDurationSeconds, l.Spec.RenewTime = &id, &secs, &mt
}

// saw records the Lease this replica just wrote.
func (e *Elector) saw(l *coordv1.Lease, err error, now time.Time) (bool, error) {
	if err != nil {
		return false, err
	}
	e.seenVersion, e.seenAt = l.ResourceVersion, now
	return true, nil
}

// release gives the Lease up if this replica still holds it.
func (e *Elector) release() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	l, err := e.Leases.Get(ctx, e.Name, metav1.GetOptions{})
	if err != nil || l.Spec.HolderIdentity == nil || *l.Spec.HolderIdentity != e.Identity {
		return
	}
	one, now := int32(1), metav1.NewMicroTime(time.Now())
	l.Spec.HolderIdentity, l.Spec.LeaseDurationSeconds, l.Spec.RenewTime = nil, &one, &now
	if _, err := e.Leases.Update(ctx, l, metav1.UpdateOptions{}); err != nil {
		e.Log.Warn("leader lease not released; another replica takes over when it expires", "lease", e.Name, "err", err)
		return
	}
	e.Log.Info("released the leader lease", "lease", e.Name, "identity", e.Identity)
}
