// Package watch is the snapshot daemon: it keeps the node's network snapshot
// fresh by capturing on every netlink link, route and neighbour change (at
// most once per MinGap) and periodically, and writes the snapshot only when
// its content changed. It exposes Prometheus metrics and a health check.
//
// It owns nothing but the snapshot directory (through package snapshot) and
// never changes network state. It never overwrites a snapshot with one that
// lacks a device or an nftables table the saved snapshot has (missing live is
// a reboot or a flanneld restart in progress — flanneld deletes its nftables
// tables when it stops — not a state to remember): `holdfastd snapshot save`
// does that on purpose. Besides link, route and neighbour events it follows
// nftables commits (one event per transaction), so kube-proxy's nftables
// table is captured within MinGap of a change. While the nftables ruleset
// generation is unchanged since its last capture (and iptables is on its
// nf_tables backend), a capture keeps the last capture's iptables chains
// and nftables tables instead of running iptables-save and nft again
// (snapshot.RuleCache; holdfast_snapshot_rule_reads_skipped_total).
package watch

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"sync"
	"time"

	"github.com/google/nftables"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/holdfast-edge/holdfast/snapshot"
)

// Config configures a Watcher.
type Config struct {
	// Dir is the snapshot directory.
	Dir string
	// Capture says what to capture (node name, devices, subnet.env, chains,
	// network namespace).
	Capture snapshot.CaptureOptions
	// Interval between full captures without any event; positive
	// (holdfastd: DefaultInterval).
	Interval time.Duration
	// MinGap is the least time between two captures; positive (holdfastd:
	// DefaultMinGap).
	MinGap time.Duration
	Log    *slog.Logger
	// Registry receives the metrics; nil registers nothing.
	Registry prometheus.Registerer
}

// Watcher keeps the snapshot of one node fresh.
type Watcher struct {
	cfg     Config
	log     *slog.Logger
	trigger chan struct{}

	mu        sync.Mutex
	lastKey   []byte
	confirmed time.Time // last time disk was known equal to live
	lastErr   error
	entries   int

	// rules spares the captures of this loop the iptables-save and nft
	// runs while the nftables ruleset generation stays the same.
	rules *snapshot.RuleCache

	captures, writes, errs, events prometheus.Counter
	duration                       prometheus.Histogram
}

// Defaults of the full capture period (without events) and of the least
// time between two captures.
const (
	DefaultInterval = 30 * time.Second
	DefaultMinGap   = time.Second
)

// New builds a Watcher; it does not start it.
func New(cfg Config) (*Watcher, error) {
	if cfg.Dir == "" || cfg.Capture.NodeName == "" {
		return nil, errors.New("watch: snapshot dir and node name are required")
	}
	if cfg.Interval <= 0 {
		return nil, fmt.Errorf("watch: interval %s: want a positive duration", cfg.Interval)
	}
	if cfg.MinGap <= 0 {
		return nil, fmt.Errorf("watch: min gap %s: want a positive duration", cfg.MinGap)
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	w := &Watcher{cfg: cfg, log: cfg.Log.With("node", cfg.Capture.NodeName), trigger: make(chan struct{}, 1), rules: &snapshot.RuleCache{}}
	w.captures = prometheus.NewCounter(prometheus.CounterOpts{Name: "holdfast_snapshot_captures_total", Help: "Captures of live network state."})
	w.writes = prometheus.NewCounter(prometheus.CounterOpts{Name: "holdfast_snapshot_writes_total", Help: "Snapshot files written (content changed)."})
	w.errs = prometheus.NewCounter(prometheus.CounterOpts{Name: "holdfast_snapshot_errors_total", Help: "Failed captures or writes."})
	w.events = prometheus.NewCounter(prometheus.CounterOpts{Name: "holdfast_snapshot_netlink_events_total", Help: "Netlink link/route/neighbour events received."})
	w.duration = prometheus.NewHistogram(prometheus.HistogramOpts{Name: "holdfast_snapshot_capture_seconds", Help: "Time to capture live state.", Buckets: prometheus.ExponentialBuckets(0.001, 2, 12)})
	if cfg.Registry != nil {
		age := prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "holdfast_snapshot_age_seconds", Help: "Seconds since the snapshot on disk was last confirmed equal to live state (-1: never)."}, w.age)
		entries := prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "holdfast_snapshot_entries", Help: "Entries (links, addresses, routes, FDB, neighbours, chains, rules, files) in the snapshot."}, func() float64 {
			w.mu.Lock()
			defer w.mu.Unlock()
			return float64(w.entries)
		})
		skipped := prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "holdfast_snapshot_rule_reads_skipped_total", Help: "Captures that reused the previous capture's iptables and nftables tables (nftables ruleset generation unchanged, iptables on its nf_tables backend) instead of running iptables-save and nft."}, func() float64 {
			return float64(w.rules.Hits())
		})
		for _, c := range []prometheus.Collector{w.captures, w.writes, w.errs, w.events, w.duration, age, entries, skipped} {
			if err := cfg.Registry.Register(c); err != nil {
				return nil, fmt.Errorf("register metrics: %w", err)
			}
		}
	}
	return w, nil
}

func (w *Watcher) age() float64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.confirmed.IsZero() {
		return -1
	}
	return time.Since(w.confirmed).Seconds()
}

// Healthy reports an error when the last capture failed or no capture has
// confirmed the snapshot for three intervals.
func (w *Watcher) Healthy() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.lastErr != nil {
		return w.lastErr
	}
	if !w.confirmed.IsZero() && time.Since(w.confirmed) > 3*w.cfg.Interval {
		return fmt.Errorf("snapshot not confirmed for %s", time.Since(w.confirmed).Round(time.Second))
	}
	return nil
}

// Run subscribes to netlink, captures once at once, then on events and
// periodically, until ctx ends.
func (w *Watcher) Run(ctx context.Context) error {
	if l, err := snapshot.Load(w.cfg.Dir); err == nil {
		if l.Snapshot.NodeName != w.cfg.Capture.NodeName {
			return fmt.Errorf("%s holds a snapshot of node %q, this node is %q: refusing to overwrite it", l.Path, l.Snapshot.NodeName, w.cfg.Capture.NodeName)
		}
		w.lastKey = contentKey(l.Snapshot)
		if l.Refused != nil {
			w.log.Warn("current snapshot refused, previous generation kept", "err", l.Refused)
		}
	} else if !errors.Is(err, snapshot.ErrNoSnapshot) && !errors.Is(err, fs.ErrNotExist) {
		w.log.Warn("existing snapshot unreadable; it will be replaced by the next capture", "err", err)
	}
	if err := w.subscribe(ctx); err != nil {
		return err
	}
	w.log.Info("watching network state", "dir", w.cfg.Dir, "interval", w.cfg.Interval)
	tick := time.NewTicker(w.cfg.Interval)
	defer tick.Stop()
	var last time.Time
	for {
		if err := w.Once(ctx); err != nil {
			w.log.Error("snapshot capture failed", "err", err)
		}
		last = time.Now()
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		case <-w.trigger:
			// Coalesce a burst: wait out the gap, then drop queued triggers.
			if d := w.cfg.MinGap - time.Since(last); d > 0 {
				select {
				case <-ctx.Done():
					return nil
				case <-time.After(d):
				}
			}
			select {
			case <-w.trigger:
			default:
			}
		}
	}
}

// Once captures live state and writes the snapshot if it changed.
func (w *Watcher) Once(ctx context.Context) error {
	start := time.Now()
	opts := w.cfg.Capture
	opts.Rules = w.rules
	hits := w.rules.Hits()
	s, warns, err := snapshot.CapturePinned(ctx, w.cfg.Dir, opts, start)
	if err == nil && w.rules.Hits() != hits {
		w.log.Debug("nftables ruleset generation unchanged: kept the iptables and nftables tables of the last capture")
	}
	w.captures.Inc()
	w.duration.Observe(time.Since(start).Seconds())
	if err == nil {
		err = w.maybeWrite(s, warns)
	}
	w.mu.Lock()
	w.lastErr = err
	w.mu.Unlock()
	if err != nil {
		w.errs.Inc()
		w.rules.Invalidate()
	}
	return err
}

func (w *Watcher) maybeWrite(s *snapshot.Snapshot, warns []string) error {
	for _, m := range warns {
		w.log.Warn("VTEP MAC differs from pin", "detail", m)
	}
	key := contentKey(s)
	w.mu.Lock()
	same := bytes.Equal(key, w.lastKey)
	w.mu.Unlock()
	if !same {
		if l, err := snapshot.Load(w.cfg.Dir); err == nil {
			for _, d := range l.Snapshot.Devices {
				if s.Device(d.Name) == nil {
					w.log.Warn("device in snapshot is missing live; not overwriting the snapshot", "device", d.Name)
					return nil
				}
			}
			for _, t := range l.Snapshot.NFTables {
				if s.NFTable(t.Key()) == nil {
					w.log.Warn("nftables table in snapshot is missing live; not overwriting the snapshot", "table", t.Key())
					return nil
				}
			}
		}
		if err := snapshot.Save(w.cfg.Dir, s); err != nil {
			return err
		}
		w.writes.Inc()
		w.log.Info("snapshot written", "devices", len(s.Devices), "entries", s.Entries())
	}
	w.mu.Lock()
	w.lastKey, w.confirmed, w.entries = key, time.Now(), s.Entries()
	w.mu.Unlock()
	return nil
}

// contentKey is the snapshot's content without its timestamp.
func contentKey(s *snapshot.Snapshot) []byte {
	c := *s
	c.CapturedAt = time.Time{}
	b, _ := snapshot.Encode(&c)
	return b
}

func (w *Watcher) poke() {
	w.events.Inc()
	select {
	case w.trigger <- struct{}{}:
	default:
	}
}

func (w *Watcher) subscribe(ctx context.Context) error {
	ns := netns.None()
	if p := w.cfg.Capture.NetNS; p != "" {
		h, err := netns.GetFromPath(p)
		if err != nil {
			return fmt.Errorf("open netns %s: %w", p, err)
		}
		go func() { <-ctx.Done(); h.Close() }()
		ns = h
	}
	var nsp *netns.NsHandle
	if ns.IsOpen() {
		nsp = &ns
	}
	onErr := func(err error) {
		w.log.Error("netlink subscription error", "err", err)
		w.errs.Inc()
		w.poke()
	}
	links := make(chan netlink.LinkUpdate, 64)
	routes := make(chan netlink.RouteUpdate, 256)
	neighs := make(chan netlink.NeighUpdate, 256)
	done := ctx.Done()
	if err := netlink.LinkSubscribeWithOptions(links, done, netlink.LinkSubscribeOptions{Namespace: nsp, ErrorCallback: onErr}); err != nil {
		return fmt.Errorf("subscribe to links: %w", err)
	}
	if err := netlink.RouteSubscribeWithOptions(routes, done, netlink.RouteSubscribeOptions{Namespace: nsp, ErrorCallback: onErr}); err != nil {
		return fmt.Errorf("subscribe to routes: %w", err)
	}
	if err := netlink.NeighSubscribeWithOptions(neighs, done, netlink.NeighSubscribeOptions{Namespace: nsp, ErrorCallback: onErr}); err != nil {
		return fmt.Errorf("subscribe to neighbours: %w", err)
	}
	if err := w.subscribeNFT(ctx, ns, onErr); err != nil {
		return err
	}
	go func() {
		for {
			select {
			case _, ok := <-links:
				if !ok {
					return
				}
				w.poke()
			case _, ok := <-routes:
				if !ok {
					return
				}
				w.poke()
			case u, ok := <-neighs:
				if !ok {
					return
				}
				// Only permanent entries are captured: ARP churn of
				// reachable/stale entries is no reason to capture.
				if u.Neigh.State&netlink.NUD_PERMANENT != 0 || u.Type == 29 /* RTM_DELNEIGH */ {
					w.poke()
				}
			}
		}
	}()
	return nil
}

// subscribeNFT pokes on every committed nftables transaction in the
// namespace (one event per generation, not per object): kube-proxy's and
// flanneld's table updates, and iptables-nft's.
func (w *Watcher) subscribeNFT(ctx context.Context, ns netns.NsHandle, onErr func(error)) error {
	var opts []nftables.ConnOption
	if ns.IsOpen() {
		opts = append(opts, nftables.WithNetNSFd(int(ns)))
	}
	c, err := nftables.New(opts...)
	if err != nil {
		return fmt.Errorf("nftables: %w", err)
	}
	mon := nftables.NewMonitor(nftables.WithMonitorEventBuffer(64))
	gens, err := c.AddGenerationalMonitor(mon)
	if err != nil {
		return fmt.Errorf("subscribe to nftables: %w", err)
	}
	go func() { <-ctx.Done(); mon.Close() }()
	go func() {
		for g := range gens {
			if g.GeneratedBy != nil && g.GeneratedBy.Type == nftables.MonitorEventTypeOOB {
				onErr(fmt.Errorf("nftables monitor: %w", g.GeneratedBy.Error))
				continue
			}
			w.poke()
		}
	}()
	return nil
}
