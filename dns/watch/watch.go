// Package watch feeds dns/store from the apiserver with informers
// for Services, EndpointSlices and Namespaces, and reports whether the apiserver is
// reachable. Until the informers have synced it only adds and updates (the
// snapshot keeps answering); once synced it replaces the store's content
// with the informers' view, so objects deleted while the node was offline
// disappear too. It owns no state of its own and never writes files.
package watch

import (
	"context"
	"errors"
	"log/slog"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/labels"
	corelisters "k8s.io/client-go/listers/core/v1"
	discoverylisters "k8s.io/client-go/listers/discovery/v1"
	"k8s.io/client-go/tools/cache"

	"github.com/holdfast-edge/holdfast/dns/store"
	"github.com/holdfast-edge/holdfast/internal/kubeclient"
)

// Options configure a Watcher.
type Options struct {
	Kubeconfig string // path; empty means in-cluster config
	Store      *store.Store
	Resync     time.Duration // informer resync (default 0: none)
	Probe      time.Duration // reachability probe interval (default 10s)
	OnOnline   func(bool)
	Log        *slog.Logger
}

// Run watches until ctx ends. An error is returned only when no client can
// be built; an unreachable apiserver is not an error (informers retry).
func Run(ctx context.Context, opts Options) error {
	cs, err := kubeclient.Client(opts.Kubeconfig, "holdfastd-dns")
	if err != nil {
		return err
	}
	return RunWithClient(ctx, cs, opts)
}

// RunWithClient is Run with a ready client.
func RunWithClient(ctx context.Context, cs kubeclient.Interface, opts Options) error {
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	if opts.Probe <= 0 {
		opts.Probe = 10 * time.Second
	}
	st := opts.Store
	svcInf := kubeclient.Informer(cs.Services(""), &corev1.Service{}, opts.Resync)
	epsInf := kubeclient.Informer(cs.EndpointSlices(""), &discoveryv1.EndpointSlice{}, opts.Resync)
	nsInf := kubeclient.Informer(cs.Namespaces(), &corev1.Namespace{}, opts.Resync)
	onErr := func(r *cache.Reflector, err error) {
		opts.Log.Warn("apiserver watch failed; answering from snapshot", "err", err)
		if opts.OnOnline != nil {
			opts.OnOnline(false)
		}
	}
	for _, inf := range []cache.SharedIndexInformer{svcInf, epsInf, nsInf} {
		inf.SetWatchErrorHandler(onErr)
		if err := inf.SetTransform(slim); err != nil {
			return err
		}
	}
	nsInf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: func(o any) {
			if ns, ok := o.(*corev1.Namespace); ok {
				st.SetNamespace(ns.Name)
			}
		},
		DeleteFunc: func(o any) {
			if k, err := cache.DeletionHandlingMetaNamespaceKeyFunc(o); err == nil {
				st.DeleteNamespace(k)
			}
		},
	})
	svcInf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(o any) { setService(st, o) },
		UpdateFunc: func(_, o any) { setService(st, o) },
		DeleteFunc: func(o any) {
			if k, err := cache.DeletionHandlingMetaNamespaceKeyFunc(o); err == nil {
				ns, name, _ := cache.SplitMetaNamespaceKey(k)
				st.DeleteService(ns, name)
			}
		},
	})
	epsInf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(o any) { setSlice(st, o) },
		UpdateFunc: func(_, o any) { setSlice(st, o) },
		DeleteFunc: func(o any) {
			if k, err := cache.DeletionHandlingMetaNamespaceKeyFunc(o); err == nil {
				ns, name, _ := cache.SplitMetaNamespaceKey(k)
				st.DeleteSlice(ns, name)
			}
		},
	})
	defer kubeclient.Start(ctx, svcInf, epsInf, nsInf)()
	go probe(ctx, cs, opts)
	if !cache.WaitForCacheSync(ctx.Done(), svcInf.HasSynced, epsInf.HasSynced, nsInf.HasSynced) {
		return nil // ctx ended before the apiserver answered
	}
	svcs, err := corelisters.NewServiceLister(svcInf.GetIndexer()).List(labels.Everything())
	if err == nil {
		var eps []*discoveryv1.EndpointSlice
		eps, err = discoverylisters.NewEndpointSliceLister(epsInf.GetIndexer()).List(labels.Everything())
		var nss []*corev1.Namespace
		if err == nil {
			nss, err = corelisters.NewNamespaceLister(nsInf.GetIndexer()).List(labels.Everything())
		}
		if err == nil {
			snap := &store.Snapshot{Source: "apiserver", UpdatedAt: time.Now().UTC()}
			for _, s := range svcs {
				snap.Services = append(snap.Services, store.FromService(s))
			}
			for _, e := range eps {
				snap.Slices = append(snap.Slices, store.FromEndpointSlice(e))
			}
			for _, ns := range nss {
				snap.Namespaces = append(snap.Namespaces, ns.Name)
			}
			st.Replace(snap)
			opts.Log.Info("informers synced; snapshot replaced with the apiserver's view", "services", len(snap.Services), "endpointslices", len(snap.Slices))
		}
	}
	if opts.OnOnline != nil {
		opts.OnOnline(true)
	}
	<-ctx.Done()
	return nil
}

// slim is the informers' transform: the DNS reads neither managed fields
// nor annotations (kubectl's last-applied copy of each object among them),
// so its cache of 1,000 Services does not keep them.
func slim(o any) (any, error) {
	o, _ = kubeclient.TrimManagedFields(o)
	if m, err := meta.Accessor(o); err == nil {
		m.SetAnnotations(nil)
	}
	return o, nil
}

func setService(st *store.Store, o any) {
	if s, ok := o.(*corev1.Service); ok {
		st.SetService(store.FromService(s))
	}
}

func setSlice(st *store.Store, o any) {
	if s, ok := o.(*discoveryv1.EndpointSlice); ok {
		st.SetSlice(store.FromEndpointSlice(s))
	}
}

// probe asks /version periodically and reports reachability.
func probe(ctx context.Context, cs kubeclient.Interface, opts Options) {
	t := time.NewTicker(opts.Probe)
	defer t.Stop()
	last := -1
	for {
		pctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		err := cs.Reachable(pctx)
		cancel()
		if errors.Is(err, kubeclient.ErrNotProbed) {
			return // a test's fake: informer sync alone says online
		}
		now := 0
		if err == nil {
			now = 1
		}
		if now != last && opts.OnOnline != nil {
			opts.OnOnline(now == 1)
		}
		last = now
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
