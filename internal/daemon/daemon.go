// Package daemon holds what every holdfastd daemon shares: the /healthz and
// /metrics HTTP endpoint and the slog logger. It keeps no package state: each
// daemon builds its own registry and server.
package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"runtime/debug"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// DefaultGCPercent is the garbage collector's target (GOGC) in every
// holdfastd process unless $GOGC is set: collect when the heap has grown by
// half since the last collection, not doubled (Go's 100). An idle daemon
// allocates little, so this costs next to no CPU, and the heap is most of
// a daemon's private memory (docs/footprint.md).
const DefaultGCPercent = 50

// TuneGC applies DefaultGCPercent unless gogcSet (the runtime has already
// applied $GOGC, which wins).
func TuneGC(gogcSet bool) {
	if !gogcSet {
		debug.SetGCPercent(DefaultGCPercent)
	}
}

// NewLogger returns a text slog logger on stderr tagged with the component.
func NewLogger(component string, debug bool) *slog.Logger {
	lvl := slog.LevelInfo
	if debug {
		lvl = slog.LevelDebug
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: lvl})).With("component", component)
}

// NewRegistry returns a Prometheus registry with Go and process collectors.
func NewRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
}

// HealthFunc reports nil when the daemon is healthy.
type HealthFunc func() error

// Mux returns a ServeMux with /healthz and /metrics; callers may add routes.
func Mux(reg *prometheus.Registry, health HealthFunc) *http.ServeMux {
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) {
		if health != nil {
			if err := health(); err != nil {
				http.Error(w, err.Error(), http.StatusServiceUnavailable)
				return
			}
		}
		fmt.Fprintln(w, "ok")
	})
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	return mux
}

// Serve listens on addr and serves handler until ctx ends. An empty addr
// disables the endpoint. It returns once the listener is bound, so callers
// know the port is taken; serving continues in the background.
func Serve(ctx context.Context, log *slog.Logger, addr string, handler http.Handler) (net.Addr, error) {
	if addr == "" {
		return nil, nil
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", addr, err)
	}
	srv := &http.Server{Handler: handler, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		<-ctx.Done()
		shut, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		srv.Shutdown(shut)
	}()
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("http server stopped", "addr", addr, "err", err)
		}
	}()
	log.Info("serving /healthz and /metrics", "addr", ln.Addr().String())
	return ln.Addr(), nil
}
