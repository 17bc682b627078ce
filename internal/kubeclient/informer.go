package kubeclient

import (
	"context"
	"sync"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/tools/cache"
)

// Informer is a shared index informer of r's objects (example is an empty
// object of the type), resyncing every resync (0: never). It indexes by
// namespace, as client-go's generated informers do, so the listers of
// k8s.io/client-go/listers work on its indexer.
func Informer[T runtime.Object, L runtime.Object](r Resource[T, L], example T, resync time.Duration) cache.SharedIndexInformer {
	lw := &cache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, opts metav1.ListOptions) (runtime.Object, error) {
			return r.List(ctx, opts)
		},
		WatchFuncWithContext: func(ctx context.Context, opts metav1.ListOptions) (watch.Interface, error) {
			return r.Watch(ctx, opts)
		},
	}
	return cache.NewSharedIndexInformer(lw, example, resync, cache.Indexers{cache.NamespaceIndex: cache.MetaNamespaceIndexFunc})
}

// Start runs the informers until ctx ends or the returned stop is
// called; stop returns once all of them have stopped.
func Start(ctx context.Context, infs ...cache.SharedIndexInformer) (stop func()) {
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	for _, inf := range infs {
		wg.Go(func() { inf.RunWithContext(ctx) })
	}
	return func() {
		cancel()
		wg.Wait()
	}
}
