package crishim

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/codes"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/holdfast-edge/holdfast/cri-shim/proxy"
	"github.com/holdfast-edge/holdfast/cri-shim/record"
	"github.com/holdfast-edge/holdfast/cri-shim/relaunch"
	"github.com/holdfast-edge/holdfast/cri-shim/volumes"
)

// Config configures the shim. New refuses what Check refuses; only Log,
// RuntimeWait and SuperviseEvery (no holdfastd flag) get defaults when zero.
type Config struct {
	Listen          string // unix socket path for kubelet
	RuntimeEndpoint string // unix:///run/containerd/containerd.sock
	StateDir        string
	Relaunch        bool
	Parallelism     int
	BootIDFile      string
	Kubeconfig      string
	NodeName        string
	// RuntimeWait bounds how long the relaunch waits for containerd to answer.
	RuntimeWait time.Duration
	// BackoffBase/BackoffMax of container restarts before adoption
	// (relaunch.CheckBackoff; holdfastd: relaunch.DefaultBackoffBase/Max).
	BackoffBase, BackoffMax time.Duration
	// SuperviseEvery is the period of the restart supervisor (1 s).
	SuperviseEvery time.Duration
	// RestoreVolumes turns capture and restore of the pods' tmpfs-backed
	// volumes on (DefaultRestoreVolumes); VolumeScanInterval is the rescan
	// period (volumes.DefaultScanInterval).
	RestoreVolumes     bool
	VolumeScanInterval time.Duration
	// MountInfo is the mount table the volume capture reads
	// (volumes.MountInfo when empty; no holdfastd flag).
	MountInfo string
	Log       *slog.Logger
	Registry  prometheus.Registerer
}

// Shim is a running CRI shim.
type Shim struct {
	cfg    Config
	log    *slog.Logger
	store  *record.Store
	proxy  *proxy.Server
	ln     net.Listener
	bootID string
	runner *relaunch.Runner
	ic     *interceptor
	locks  *podLocks
	facts  *factsFetcher
	vols   *volumeKeeper // nil: --restore-volumes=false

	done     chan struct{} // closed when the boot relaunch finished
	badFiles []record.LoadError

	calls     *prometheus.CounterVec
	latency   *prometheus.HistogramVec
	outcomes  *prometheus.CounterVec
	recordErr prometheus.Counter
}

// Check refuses a Config New would refuse, touching nothing; every error
// names the setting (as its holdfastd flag).
func (cfg Config) Check() error {
	if cfg.Listen == "" || cfg.RuntimeEndpoint == "" || cfg.StateDir == "" || cfg.BootIDFile == "" {
		return errors.New("cri shim: listen, runtime endpoint, state dir and boot id file are required")
	}
	if cfg.Parallelism < 1 {
		return fmt.Errorf("--relaunch-parallelism %d: must be at least 1", cfg.Parallelism)
	}
	if err := relaunch.CheckBackoff(cfg.BackoffBase, cfg.BackoffMax); err != nil {
		return fmt.Errorf("--restart-backoff / --restart-backoff-max: %w", err)
	}
	if cfg.RestoreVolumes && cfg.VolumeScanInterval <= 0 {
		return fmt.Errorf("--volume-scan-interval %v: must be positive", cfg.VolumeScanInterval)
	}
	return nil
}

// New checks cfg, opens the records, reads the boot id and binds the
// socket. Serving and relaunching start with Start.
func New(cfg Config) (*Shim, error) {
	if err := cfg.Check(); err != nil {
		return nil, err
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if cfg.RuntimeWait == 0 {
		cfg.RuntimeWait = 2 * time.Minute
	}
	if cfg.SuperviseEvery == 0 {
		cfg.SuperviseEvery = time.Second
	}
	if cfg.MountInfo == "" {
		cfg.MountInfo = volumes.MountInfo
	}
	log := cfg.Log.With("node", cfg.NodeName)
	bootID, err := record.ReadBootID(cfg.BootIDFile)
	if err != nil {
		return nil, err
	}
	store, bad, err := record.Open(cfg.StateDir)
	if err != nil {
		return nil, err
	}
	for _, b := range bad {
		log.Error("pod record unreadable: that pod will not be relaunched", "file", b.Path, "err", b.Err)
	}
	var s *Shim
	px, err := proxy.New(cfg.RuntimeEndpoint, func(method string, intercepted bool, code codes.Code, d time.Duration) {
		s.calls.WithLabelValues(method, strconv.FormatBool(intercepted), code.String()).Inc()
		s.latency.WithLabelValues(method).Observe(d.Seconds())
	})
	if err != nil {
		return nil, err
	}
	conn := px.Conn()
	s = &Shim{proxy: px, cfg: cfg, log: log, store: store, bootID: bootID, locks: &podLocks{}, done: make(chan struct{}), badFiles: bad}
	if cfg.RestoreVolumes {
		if s.vols, err = openVolumes(cfg.StateDir, cfg.MountInfo, store, bad, log); err != nil {
			conn.Close()
			return nil, err
		}
	}
	s.calls = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "holdfast_cri_calls_total", Help: "CRI calls served, by method, whether the shim intercepted them, and gRPC code."}, []string{"method", "intercepted", "code"})
	s.latency = prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "holdfast_cri_call_seconds", Help: "CRI call latency through the shim.", Buckets: prometheus.ExponentialBuckets(0.0001, 4, 10)}, []string{"method"})
	s.outcomes = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "holdfast_cri_relaunch_total", Help: "Pod relaunches after a reboot, by outcome."}, []string{"outcome"})
	s.recordErr = prometheus.NewCounter(prometheus.CounterOpts{Name: "holdfast_cri_record_errors_total", Help: "Failed record writes."})
	if cfg.Registry != nil {
		for _, c := range []prometheus.Collector{s.calls, s.latency, s.outcomes, s.recordErr,
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "holdfast_cri_pods_recorded", Help: "Pods with a record."}, func() float64 { return float64(s.store.Len()) }),
		} {
			if err := cfg.Registry.Register(c); err != nil {
				return nil, fmt.Errorf("register metrics: %w", err)
			}
		}
		if s.vols != nil {
			for _, c := range s.vols.collectors() {
				if err := cfg.Registry.Register(c); err != nil {
					return nil, fmt.Errorf("register metrics: %w", err)
				}
			}
		}
	}
	rt := runtimeapi.NewRuntimeServiceClient(conn)
	ic := &interceptor{rt: rt, store: store, locks: s.locks, bootID: bootID, log: log, vols: s.vols, onErr: func(string, error) { s.recordErr.Inc() }, unreadable: map[string]bool{}}
	for _, b := range bad {
		ic.unreadable[strings.TrimSuffix(filepath.Base(b.Path), ".json")] = true
	}
	ic.register(s.proxy)
	s.ic = ic
	s.runner = &relaunch.Runner{
		Runtime: rt, Images: runtimeapi.NewImageServiceClient(conn), Store: store, BootID: bootID,
		Parallelism: cfg.Parallelism, Log: log, Lock: s.locks.Lock,
		BackoffBase: cfg.BackoffBase, BackoffMax: cfg.BackoffMax,
	}
	if s.vols != nil {
		s.runner.Prepare = s.vols.prepare
	}
	if cfg.Kubeconfig != "" {
		if s.facts, err = newFactsFetcher(cfg.Kubeconfig, store, log); err != nil {
			conn.Close()
			return nil, err
		}
	}
	ln, err := proxy.Listen(cfg.Listen)
	if err != nil {
		conn.Close()
		return nil, err
	}
	s.ln = ln
	return s, nil
}

// Store returns the record store.
func (s *Shim) Store() *record.Store { return s.store }

// Relaunched is closed once the boot's relaunch is over (at once when there
// was nothing to do).
func (s *Shim) Relaunched() <-chan struct{} { return s.done }

// Healthy reports an error when the runtime does not answer.
func (s *Shim) Healthy(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	_, err := runtimeapi.NewRuntimeServiceClient(s.proxy.Conn()).Version(ctx, &runtimeapi.VersionRequest{})
	if err != nil {
		return fmt.Errorf("runtime %s: %w", s.cfg.RuntimeEndpoint, err)
	}
	return nil
}

// Run serves until ctx ends: the socket, the directory flusher, the
// boot relaunch (when the boot id changed) and the restart supervisor.
func (s *Shim) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); s.flusher(ctx) }()

	prev, err := s.store.LoadBoot()
	if err != nil {
		s.log.Error("boot marker unreadable: treating this as a new boot", "err", err)
	}
	rebooted := prev.BootID != s.bootID
	if rebooted {
		s.log.Info("boot id changed", "previous", prev.BootID, "current", s.bootID)
	}
	if s.facts != nil {
		wg.Add(1)
		go func() { defer wg.Done(); s.facts.run(ctx, 30*time.Second) }()
	}
	if s.vols != nil {
		wg.Add(1)
		go func() { defer wg.Done(); s.vols.run(ctx, s.cfg.VolumeScanInterval) }()
	}
	serveErr := make(chan error, 1)
	go func() { serveErr <- s.proxy.Serve(s.ln) }()
	s.log.Info("serving CRI", "listen", s.cfg.Listen, "runtime", s.cfg.RuntimeEndpoint)

	if rebooted && s.cfg.Relaunch {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.bootRelaunch(ctx)
			if err := s.store.SaveBoot(s.bootID); err != nil {
				s.log.Error("save boot marker", "err", err)
			}
		}()
	} else {
		if rebooted {
			s.log.Info("relaunch disabled (--relaunch never)")
		}
		if err := s.store.SaveBoot(s.bootID); err != nil {
			s.log.Error("save boot marker", "err", err)
		}
		close(s.done)
	}
	// After the boot's relaunch: the restart supervisor, and the records of
	// pods running without one (never racing a relaunch).
	for _, f := range []func(){func() { s.runner.Supervise(ctx, s.cfg.SuperviseEvery) }, func() { s.recordRunning(ctx) }} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			select {
			case <-s.done:
				f()
			case <-ctx.Done():
			}
		}()
	}

	select {
	case <-ctx.Done():
		err = nil
	case err = <-serveErr:
	}
	s.proxy.Stop(5 * time.Second)
	cancel()
	wg.Wait()
	if ferr := s.store.Flush(); ferr != nil {
		s.log.Error("flush records", "err", ferr)
	}
	s.proxy.Conn().Close()
	return err
}

func (s *Shim) flusher(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.store.Dirty():
		}
		// Coalesce: let concurrent writers publish, then one dir fsync.
		time.Sleep(5 * time.Millisecond)
		if err := s.store.Flush(); err != nil {
			s.log.Error("flush record dir", "err", err)
		}
	}
}

func (s *Shim) bootRelaunch(ctx context.Context) {
	defer close(s.done)
	todo, skipped := relaunch.Plan(s.store.List(), s.bootID)
	for _, sk := range skipped {
		s.log.Info("not relaunching pod", "pod", sk.Pod.Key(), "uid", sk.Pod.UID, "reason", sk.Reason)
	}
	for _, b := range s.badFiles {
		s.outcomes.WithLabelValues("unreadable").Inc()
		s.log.Error("skipping pod with an unreadable record", "file", b.Path, "err", b.Err)
	}
	if len(todo) == 0 {
		return
	}
	if err := s.waitRuntime(ctx); err != nil {
		s.log.Error("runtime never answered: no pod relaunched", "err", err)
		return
	}
	s.log.Info("relaunching pods", "count", len(todo), "parallelism", s.cfg.Parallelism)
	start := time.Now()
	res := s.runner.Run(ctx, todo)
	ok := 0
	for _, r := range res {
		if r.Err != nil {
			s.outcomes.WithLabelValues(record.OutcomeFailed).Inc()
		} else {
			ok++
			s.outcomes.WithLabelValues(record.OutcomeRelaunched).Inc()
		}
	}
	s.log.Info("relaunch done", "relaunched", ok, "failed", len(res)-ok, "took", time.Since(start).Round(time.Millisecond))
}

// recordRunning records the pods running without a record (import.go).
func (s *Shim) recordRunning(ctx context.Context) {
	if err := s.waitRuntime(ctx); err != nil {
		s.log.Error("runtime never answered: running pods not checked for records", "err", err)
		return
	}
	n, err := s.ic.importUnrecorded(ctx)
	if err != nil {
		s.log.Error("running pods not checked for records", "err", err)
		return
	}
	s.log.Info("running pods checked for records", "recorded", n)
}

func (s *Shim) waitRuntime(ctx context.Context) error {
	deadline := time.Now().Add(s.cfg.RuntimeWait)
	delay := 100 * time.Millisecond
	for {
		err := s.Healthy(ctx)
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return err
		}
		s.log.Info("waiting for the runtime", "err", err)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(delay):
		}
		delay = min(delay*2, 5*time.Second)
	}
}
