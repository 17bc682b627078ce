package webhook

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	coordv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	coordlisters "k8s.io/client-go/listers/coordination/v1"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"

	"github.com/holdfast-edge/holdfast/internal/kubeclient"
)

// ClusterState implements State from Node, Lease and Pod informers,
// caching the computed tallies for a second.
type ClusterState struct {
	nodeLister corelisters.NodeLister
	podLister  corelisters.PodLister
	podIndex   cache.Indexer
	leases     func() ([]*coordv1.Lease, error)
	unitLabel  string
	mu         sync.Mutex
	at         time.Time
	tallies    map[string]Tally
}

const podsByNode = "spec.nodeName"

// NewClusterState starts informers on Nodes, Pods (only the fields the
// opt-out needs are kept) and Leases in holdfast-system, and waits for
// their caches.
func NewClusterState(ctx context.Context, cs kubeclient.Interface, unitLabel string) (*ClusterState, error) {
	const resync = 10 * time.Minute
	ni := kubeclient.Informer(cs.Nodes(), &corev1.Node{}, resync)
	pi := kubeclient.Informer(cs.Pods(""), &corev1.Pod{}, resync)
	li := kubeclient.Informer(cs.Leases(Namespace), &coordv1.Lease{}, resync)
	if err := pi.SetTransform(slimPod); err != nil {
		return nil, err
	}
	if err := pi.AddIndexers(cache.Indexers{podsByNode: func(o any) ([]string, error) {
		return []string{o.(*corev1.Pod).Spec.NodeName}, nil
	}}); err != nil {
		return nil, err
	}
	kubeclient.Start(ctx, ni, pi, li) // they stop with ctx
	for name, inf := range map[string]cache.SharedIndexInformer{"Nodes": ni, "Pods": pi, "Leases": li} {
		if !cache.WaitForCacheSync(ctx.Done(), inf.HasSynced) {
			return nil, fmt.Errorf("cache of %s did not sync", name)
		}
	}
	ll := coordlisters.NewLeaseLister(li.GetIndexer())
	return &ClusterState{
		nodeLister: corelisters.NewNodeLister(ni.GetIndexer()),
		podLister:  corelisters.NewPodLister(pi.GetIndexer()),
		podIndex:   pi.GetIndexer(),
		leases:     func() ([]*coordv1.Lease, error) { return ll.Leases(Namespace).List(labels.Everything()) },
		unitLabel:  unitLabel,
	}, nil
}

// slimPod keeps what the webhook reads of a Pod: name, namespace, UID,
// the opt-out annotation, node and tolerations.
func slimPod(o any) (any, error) {
	p, ok := o.(*corev1.Pod)
	if !ok {
		return o, nil
	}
	out := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: p.Name, Namespace: p.Namespace, UID: p.UID, ResourceVersion: p.ResourceVersion},
		Spec: corev1.PodSpec{NodeName: p.Spec.NodeName, Tolerations: p.Spec.Tolerations}}
	if v, ok := p.Annotations[OptOutAnnotation]; ok {
		out.Annotations = map[string]string{OptOutAnnotation: v}
	}
	return out, nil
}

func (c *ClusterState) refresh() map[string]Tally {
	c.mu.Lock()
	defer c.mu.Unlock()
	if time.Since(c.at) < time.Second && c.tallies != nil {
		return c.tallies
	}
	np, _ := c.nodeLister.List(labels.Everything())
	lp, _ := c.leases()
	nodes := make([]corev1.Node, 0, len(np))
	for _, n := range np {
		nodes = append(nodes, *n)
	}
	leases := make([]coordv1.Lease, 0, len(lp))
	for _, l := range lp {
		leases = append(leases, *l)
	}
	c.tallies = ComputeVerdicts(nodes, leases, c.unitLabel, time.Now())
	c.at = time.Now()
	return c.tallies
}

func (c *ClusterState) Tally(node string) Tally { return c.refresh()[node] }

func (c *ClusterState) Node(name string) *corev1.Node {
	n, err := c.nodeLister.Get(name)
	if err != nil {
		return nil
	}
	return n
}

// Nodes lists the cached Nodes.
func (c *ClusterState) Nodes() []*corev1.Node {
	ns, _ := c.nodeLister.List(labels.Everything())
	return ns
}

func (c *ClusterState) OptedOut(namespace, name string) bool {
	p, err := c.podLister.Pods(namespace).Get(name)
	return err == nil && OptedOut(p.Annotations)
}

// PodsOn lists the cached pods bound to node.
func (c *ClusterState) PodsOn(node string) []*corev1.Pod {
	objs, _ := c.podIndex.ByIndex(podsByNode, node)
	out := make([]*corev1.Pod, 0, len(objs))
	for _, o := range objs {
		out = append(out, o.(*corev1.Pod))
	}
	return out
}

// MaxReviewSize bounds an AdmissionReview body.
const MaxReviewSize = 8 << 20

// Handler serves POST /mutate.
func Handler(m *Mutator, log *slog.Logger, reg prometheus.Registerer) http.Handler {
	reviews := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "holdfast_webhook_reviews_total", Help: "AdmissionReviews answered, by kind and whether a patch was returned."}, []string{"kind", "patched"})
	errs := prometheus.NewCounter(prometheus.CounterOpts{Name: "holdfast_webhook_bad_requests_total", Help: "Requests that were not AdmissionReviews."})
	reg.MustRegister(reviews, errs)
	mux := http.NewServeMux()
	// The Deployment's readiness probe asks the TLS port: without this the
	// webhook pods never turn ready and the apiserver, failing open, never
	// applies a verdict.
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok\n") })
	mux.HandleFunc("POST /mutate", func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(io.LimitReader(r.Body, MaxReviewSize+1))
		if err == nil && len(body) > MaxReviewSize {
			err = errors.New("request body too large")
		}
		if err != nil {
			errs.Inc()
			http.Error(w, err.Error(), http.StatusRequestEntityTooLarge)
			return
		}
		out, kind, patched, err := m.review(body)
		if err != nil {
			errs.Inc()
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		reviews.WithLabelValues(kind, fmt.Sprint(patched)).Inc()
		if patched {
			log.Info("patched", "kind", kind, "object", r.URL.Query().Get("name"))
		}
		w.Header().Set("Content-Type", "application/json")
		w.Write(out)
	})
	return mux
}

// ServeTLS serves handler with a certificate reloaded from disk when it
// changes (cert-manager style rotation).
func ServeTLS(ctx context.Context, addr, certFile, keyFile string, h http.Handler) error {
	var mu sync.Mutex
	var cached *tls.Certificate
	var loaded time.Time
	getCert := func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
		mu.Lock()
		defer mu.Unlock()
		if cached == nil || time.Since(loaded) > time.Minute {
			c, err := tls.LoadX509KeyPair(certFile, keyFile)
			if err != nil {
				if cached != nil {
					return cached, nil
				}
				return nil, err
			}
			cached, loaded = &c, time.Now()
		}
		return cached, nil
	}
	if _, err := tls.LoadX509KeyPair(certFile, keyFile); err != nil {
		return fmt.Errorf("TLS key pair %s, %s: %w", certFile, keyFile, err)
	}
	srv := &http.Server{Addr: addr, Handler: h, ReadHeaderTimeout: 5 * time.Second, TLSConfig: &tls.Config{GetCertificate: getCert, MinVersion: tls.VersionTLS12}}
	go func() {
		<-ctx.Done()
		c, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		srv.Shutdown(c)
	}()
	if err := srv.ListenAndServeTLS("", ""); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
