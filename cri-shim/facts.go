package crishim

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/holdfast-edge/holdfast/cri-shim/record"
	"github.com/holdfast-edge/holdfast/internal/kubeclient"
)

// FactsFromPod extracts what kubelet does not put into CRI.
func FactsFromPod(pod *corev1.Pod, now time.Time) *record.Facts {
	f := &record.Facts{Source: "apiserver", RestartPolicy: string(pod.Spec.RestartPolicy), Fetched: now.UTC()}
	if f.RestartPolicy == "" {
		f.RestartPolicy = record.RestartAlways
	}
	for _, c := range pod.Spec.InitContainers {
		// Sidecars (restartPolicy Always init containers) keep running:
		// they are started like app containers.
		if c.RestartPolicy != nil && *c.RestartPolicy == corev1.ContainerRestartPolicyAlways {
			continue
		}
		f.InitContainers = append(f.InitContainers, c.Name)
	}
	for _, o := range pod.OwnerReferences {
		if o.Controller != nil && *o.Controller {
			f.OwnerKind, f.OwnerName = o.Kind, o.Name
		}
	}
	return f
}

// factsFetcher reads the Pod object of every recorded pod that has no
// apiserver facts yet and persists them. Offline it fails quietly and
// retries; the persisted copy then serves the relaunch.
type factsFetcher struct {
	client kubeclient.Interface
	store  *record.Store
	log    *slog.Logger
}

func newFactsFetcher(kubeconfig string, store *record.Store, log *slog.Logger) (*factsFetcher, error) {
	client, err := kubeclient.Client(kubeconfig, "holdfastd-cri")
	if err != nil {
		return nil, err
	}
	return &factsFetcher{client: client, store: store, log: log}, nil
}

// once fetches facts for every pod lacking them; it returns how many it
// stored and the first error talking to the apiserver.
func (f *factsFetcher) once(ctx context.Context) (int, error) {
	n := 0
	// Every 30 s, and nearly all records have their facts: copy only the rest.
	lacking := f.store.Select(func(p *record.Pod) bool { return p.Facts == nil || p.Facts.Source != "apiserver" })
	for _, p := range lacking {
		pod, err := f.client.Pods(p.Namespace).Get(ctx, p.Name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			continue
		}
		if err != nil {
			return n, fmt.Errorf("get pod %s: %w", p.Key(), err)
		}
		if string(pod.UID) != p.UID {
			continue // a newer pod of the same name
		}
		facts := FactsFromPod(pod, time.Now())
		if err := f.store.Update(p.UID, false, func(rec *record.Pod) (bool, error) {
			rec.Facts = facts
			return true, nil
		}); err != nil {
			return n, err
		}
		f.log.Info("pod facts read from the apiserver", "pod", p.Key(), "restartPolicy", facts.RestartPolicy, "initContainers", facts.InitContainers, "owner", facts.OwnerKind+"/"+facts.OwnerName)
		n++
	}
	return n, nil
}

func (f *factsFetcher) run(ctx context.Context, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		if _, err := f.once(ctx); err != nil {
			f.log.Debug("pod facts not refreshed (apiserver unreachable?)", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
