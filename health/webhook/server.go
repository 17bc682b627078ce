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
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"

	"github.com/holdfast-edge/holdfast/health/protocol"
)

// ClusterState implements State from Node and Lease informers, caching the
// computed verdicts for a second.
type ClusterState struct {
	nodes     func() ([]*corev1.Node, error)
	leases    func() ([]*coordv1.Lease, error)
	unitLabel string
	mu        sync.Mutex
	at        time.Time
	verdicts  map[string]protocol.State
	ready     map[string]bool
}

// NewClusterState starts informers on Nodes and on Leases in holdfast-system
// and waits for their caches.
func NewClusterState(ctx context.Context, cs kubernetes.Interface, unitLabel string) (*ClusterState, error) {
	all := informers.NewSharedInformerFactory(cs, 10*time.Minute)
	ns := informers.NewSharedInformerFactoryWithOptions(cs, 10*time.Minute, informers.WithNamespace(Namespace))
	nl := all.Core().V1().Nodes().Lister()
	ll := ns.Coordination().V1().Leases().Lister()
	all.Start(ctx.Done())
	ns.Start(ctx.Done())
	for typ, ok := range all.WaitForCacheSync(ctx.Done()) {
		if !ok {
			return nil, fmt.Errorf("cache of %v did not sync", typ)
		}
	}
	for typ, ok := range ns.WaitForCacheSync(ctx.Done()) {
		if !ok {
			return nil, fmt.Errorf("cache of %v did not sync", typ)
		}
	}
	return &ClusterState{
		nodes:     func() ([]*corev1.Node, error) { return nl.List(labels.Everything()) },
		leases:    func() ([]*coordv1.Lease, error) { return ll.List(labels.Everything()) },
		unitLabel: unitLabel,
	}, nil
}

func (c *ClusterState) refresh() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if time.Since(c.at) < time.Second && c.verdicts != nil {
		return
	}
	np, _ := c.nodes()
	lp, _ := c.leases()
	nodes := make([]corev1.Node, 0, len(np))
	c.ready = map[string]bool{}
	for _, n := range np {
		nodes = append(nodes, *n)
		c.ready[n.Name] = nodeReady(n)
	}
	leases := make([]coordv1.Lease, 0, len(lp))
	for _, l := range lp {
		leases = append(leases, *l)
	}
	c.verdicts = ComputeVerdicts(nodes, leases, c.unitLabel, time.Now())
	c.at = time.Now()
}

func (c *ClusterState) Verdict(node string) protocol.State {
	c.refresh()
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.verdicts[node]
}

func (c *ClusterState) CloudReady(node string) (bool, bool) {
	c.refresh()
	c.mu.Lock()
	defer c.mu.Unlock()
	r, ok := c.ready[node]
	return r, ok
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
