package health

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/holdfast-edge/holdfast/health/members"
	"github.com/holdfast-edge/holdfast/health/peer"
	"github.com/holdfast-edge/holdfast/health/protocol"
	"github.com/holdfast-edge/holdfast/internal/daemon"
	"github.com/holdfast-edge/holdfast/internal/statefile"
	"github.com/prometheus/client_golang/prometheus"
)

// DefaultPort is the health port (UDP for views, TCP for HTTP).
const DefaultPort = 51005

// VerdictsPath is where the daemon's HTTP server answers with its verdicts.
const VerdictsPath = "/v1/verdicts"

// DefaultLocalVerdictsURL is where a client on this host reads the
// verdicts of a daemon on DefaultPort.
var DefaultLocalVerdictsURL = "http://" + net.JoinHostPort("127.0.0.1", strconv.Itoa(DefaultPort)) + VerdictsPath

// LocalVerdictsURL is the URL a client on this host reads the verdicts
// from, for a daemon listening on listen: an unspecified host (":51005",
// "0.0.0.0:51005", "[::]:51005") is reached on the loopback address.
func LocalVerdictsURL(listen string) (string, error) {
	host, port, err := net.SplitHostPort(listen)
	if err != nil {
		return "", fmt.Errorf("listen address %q: %w", listen, err)
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		host = "127.0.0.1"
	}
	return "http://" + net.JoinHostPort(host, port) + VerdictsPath, nil
}

// DefaultProbePeriod is how often holdfastd health sends its view (its
// heartbeat) to every other member.
const DefaultProbePeriod = 2 * time.Second

// Default paths of holdfastd health's state and key.
const (
	DefaultStateDir = "/var/lib/holdfast/health"
	DefaultKeyFile  = DefaultStateDir + "/node.key"
)

// Config is everything the daemon needs; the command line builds it.
type Config struct {
	NodeName  string
	Listen    string        // host:port; UDP views and TCP HTTP on the same port
	Period    time.Duration // positive (holdfastd: DefaultProbePeriod)
	DeadAfter time.Duration // 0: 2.5 periods
	MaxSkew   time.Duration // positive (holdfastd: peer.DefaultMaxSkew)
	Key       ed25519.PrivateKey
	StateDir  string
	// Members is the full member list (every unit); Source says where it came from.
	Members []members.Member
	Source  string
	// ViewSink, when set, receives this node's signed full view and own
	// view (name → state) once per period (the Lease writer; it decides
	// when to write).
	ViewSink func(fullView []byte, view map[string]string)
	// Log is the daemon's logger; the caller tags it with the node, the
	// daemon adds the unit.
	Log      *slog.Logger
	Registry *prometheus.Registry
	// Healthy, when set, is also checked by /healthz: `holdfastd agent`
	// serves the DNS daemon's health there too (one /healthz a process).
	Healthy daemon.HealthFunc
}

// Check refuses the settings New would refuse before touching anything;
// every error names the setting (as its holdfastd flag).
func (cfg Config) Check() error {
	if cfg.NodeName == "" {
		return errors.New("--node-name (or $NODE_NAME) is required")
	}
	if cfg.Period <= 0 {
		return fmt.Errorf("--probe-period %s must be positive", cfg.Period)
	}
	if cfg.MaxSkew <= 0 {
		return fmt.Errorf("--max-clock-skew %s must be positive", cfg.MaxSkew)
	}
	return nil
}

type metrics struct {
	rejected  *prometheus.CounterVec
	accepted  prometheus.Counter
	sentMsgs  prometheus.Counter
	sentBytes prometheus.Counter
	recvBytes prometheus.Counter
	verdict   *prometheus.GaugeVec
	fresh     prometheus.Gauge
	members   prometheus.Gauge
}

func newMetrics(reg *prometheus.Registry) *metrics {
	m := &metrics{
		rejected:  prometheus.NewCounterVec(prometheus.CounterOpts{Name: "holdfast_health_messages_rejected_total", Help: "View messages refused, by reason (forged, replay, reordered, oversized, malformed, clock_skew, ...)."}, []string{"reason"}),
		accepted:  prometheus.NewCounter(prometheus.CounterOpts{Name: "holdfast_health_messages_accepted_total", Help: "View messages accepted."}),
		sentMsgs:  prometheus.NewCounter(prometheus.CounterOpts{Name: "holdfast_health_datagrams_sent_total", Help: "Datagrams sent (one per peer per message)."}),
		sentBytes: prometheus.NewCounter(prometheus.CounterOpts{Name: "holdfast_health_sent_bytes_total", Help: "UDP payload bytes sent."}),
		recvBytes: prometheus.NewCounter(prometheus.CounterOpts{Name: "holdfast_health_received_bytes_total", Help: "UDP payload bytes received."}),
		verdict:   prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "holdfast_health_verdict", Help: "Current verdict per member: 1 for the verdict label that holds."}, []string{"member", "verdict"}),
		fresh:     prometheus.NewGauge(prometheus.GaugeOpts{Name: "holdfast_health_fresh_voters", Help: "Views (this node's included) currently counted."}),
		members:   prometheus.NewGauge(prometheus.GaugeOpts{Name: "holdfast_health_unit_members", Help: "Members of this node's unit."}),
	}
	reg.MustRegister(m.rejected, m.accepted, m.sentMsgs, m.sentBytes, m.recvBytes, m.verdict, m.fresh, m.members)
	for _, r := range protocol.Reasons {
		m.rejected.WithLabelValues(string(r))
	}
	return m
}

// Daemon is a running health daemon.
type Daemon struct {
	cfg  Config
	log  *slog.Logger
	met  *metrics
	port string // of --listen: the port of members whose address has none
	conn *net.UDPConn
	http net.Addr
	// epoch of this start: a member change keeps it (the engine's counter
	// carries on), so sequence numbers stay increasing.
	epoch uint32

	// setMu orders member changes, so members.json ends with the last one.
	setMu sync.Mutex

	mu       sync.Mutex // guards the engine and the fields below
	eng      *peer.Engine
	unit     []members.Member
	unitName string
	addrs    []*net.UDPAddr // per unit member (nil for self)
}

// New validates cfg, persists the member list with a new epoch and builds the engine.
func New(cfg Config) (*Daemon, error) {
	if err := cfg.Check(); err != nil {
		return nil, err
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if cfg.Registry == nil {
		cfg.Registry = prometheus.NewRegistry()
	}
	if err := members.Validate(cfg.Members); err != nil {
		return nil, fmt.Errorf("member list from %s: %w", cfg.Source, err)
	}
	unit, unitName, err := members.Unit(cfg.Members, cfg.NodeName)
	if err != nil {
		return nil, fmt.Errorf("member list from %s: %w", cfg.Source, err)
	}
	_, port, err := net.SplitHostPort(cfg.Listen)
	if err != nil {
		return nil, fmt.Errorf("--listen %q: %w", cfg.Listen, err)
	}
	d := &Daemon{cfg: cfg, unit: unit, unitName: unitName, port: port, log: cfg.Log.With("unit", unitName)}
	if d.addrs, err = resolveAddrs(unit, cfg.NodeName, port); err != nil {
		return nil, err
	}
	if err := CleanStateDir(cfg.StateDir); err != nil {
		return nil, fmt.Errorf("state dir: %w", err)
	}
	epoch, err := NextEpoch(cfg.StateDir)
	if err != nil {
		return nil, fmt.Errorf("state dir: %w", err)
	}
	d.epoch = epoch
	if err := SaveMembers(cfg.StateDir, MembersState{Node: cfg.NodeName, Unit: unitName, Epoch: epoch, Source: cfg.Source, Updated: time.Now().UTC(), Members: cfg.Members}); err != nil {
		return nil, fmt.Errorf("persist member list: %w", err)
	}
	d.eng, err = peer.New(peer.Config{Self: cfg.NodeName, Unit: unitName, Members: unit, Key: cfg.Key, Period: cfg.Period, DeadAfter: cfg.DeadAfter, MaxSkew: cfg.MaxSkew, Epoch: epoch})
	if err != nil {
		return nil, err
	}
	d.met = newMetrics(cfg.Registry)
	d.met.members.Set(float64(len(unit)))
	return d, nil
}

// resolveAddrs resolves every unit member's UDP address (nil for self); an
// address without a port gets port.
func resolveAddrs(unit []members.Member, self, port string) ([]*net.UDPAddr, error) {
	addrs := make([]*net.UDPAddr, 0, len(unit))
	for _, m := range unit {
		if m.Name == self {
			addrs = append(addrs, nil)
			continue
		}
		hostport := m.Address
		if _, _, err := net.SplitHostPort(m.Address); err != nil {
			hostport = net.JoinHostPort(m.Address, port)
		}
		a, err := net.ResolveUDPAddr("udp", hostport)
		if err != nil {
			return nil, fmt.Errorf("member %q address %q: %w", m.Name, m.Address, err)
		}
		addrs = append(addrs, a)
	}
	return addrs, nil
}

// SetMembers applies a new member list (every unit, as Config.Members) to
// the running daemon when this node's unit changed — names, addresses, keys
// or unit name; otherwise it does nothing. The engine keeps its sequence
// counter and what it heard from the members that remain (see
// peer.Engine.SetMembers), and the list is persisted so that an offline
// reboot starts from it. On error the daemon keeps its current list.
func (d *Daemon) SetMembers(list []members.Member, source string) error {
	if err := members.Validate(list); err != nil {
		return fmt.Errorf("member list from %s: %w", source, err)
	}
	unit, unitName, err := members.Unit(list, d.cfg.NodeName)
	if err != nil {
		return fmt.Errorf("member list from %s: %w", source, err)
	}
	addrs, err := resolveAddrs(unit, d.cfg.NodeName, d.port)
	if err != nil {
		return fmt.Errorf("member list from %s: %w", source, err)
	}
	d.setMu.Lock()
	defer d.setMu.Unlock()
	d.mu.Lock()
	prev := d.unit
	if unitName == d.unitName && slices.Equal(unit, prev) {
		d.mu.Unlock()
		return nil
	}
	if err := d.eng.SetMembers(time.Now(), unitName, unit); err != nil {
		d.mu.Unlock()
		return fmt.Errorf("member list from %s: %w", source, err)
	}
	d.unit, d.unitName, d.addrs = unit, unitName, addrs
	d.mu.Unlock()
	d.membersChanged(prev, unit, unitName, source)
	st := MembersState{Node: d.cfg.NodeName, Unit: unitName, Epoch: d.epoch, Source: source, Updated: time.Now().UTC(), Members: list}
	if err := SaveMembers(d.cfg.StateDir, st); err != nil {
		return fmt.Errorf("member list applied but not persisted: %w", err)
	}
	return nil
}

// membersChanged logs a member change and updates the metrics.
func (d *Daemon) membersChanged(prev, unit []members.Member, unitName, source string) {
	added, removed, changed := members.Diff(prev, unit)
	d.log.Info("member list changed", "unit_now", unitName, "members", len(unit), "added", added, "removed", removed, "changed", changed, "source", source)
	d.met.members.Set(float64(len(unit)))
	for _, name := range removed {
		for _, s := range verdictNames {
			d.met.verdict.DeleteLabelValues(name, s)
		}
	}
}

var verdictNames = []string{"alive", "dead", "unknown"}

// Snapshot returns the current verdicts.
func (d *Daemon) Snapshot() peer.Snapshot {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.eng.Snapshot()
}

// Handler serves /v1/verdicts, /healthz and /metrics.
func (d *Daemon) Handler() http.Handler {
	mux := daemon.Mux(d.cfg.Registry, func() error {
		if d.conn == nil {
			return errors.New("health socket not open")
		}
		if d.cfg.Healthy != nil {
			return d.cfg.Healthy()
		}
		return nil
	})
	mux.HandleFunc("GET "+VerdictsPath, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(d.Snapshot())
	})
	return mux
}

// Run serves until ctx ends.
func (d *Daemon) Run(ctx context.Context) error {
	ua, err := net.ResolveUDPAddr("udp", d.cfg.Listen)
	if err != nil {
		return fmt.Errorf("--listen %q: %w", d.cfg.Listen, err)
	}
	conn, err := net.ListenUDP("udp", ua)
	if err != nil {
		return fmt.Errorf("listen udp %s: %w", d.cfg.Listen, err)
	}
	defer conn.Close()
	d.conn = conn
	// HTTP on the same port number over TCP.
	tcpAddr := net.JoinHostPort(ua.IP.String(), strconv.Itoa(conn.LocalAddr().(*net.UDPAddr).Port))
	if ua.IP == nil {
		tcpAddr = ":" + strconv.Itoa(conn.LocalAddr().(*net.UDPAddr).Port)
	}
	if d.http, err = daemon.Serve(ctx, d.log, tcpAddr, d.Handler()); err != nil {
		return err
	}
	d.mu.Lock()
	n := len(d.unit)
	d.mu.Unlock()
	d.log.Info("health daemon started", "listen", conn.LocalAddr().String(), "members", n, "epoch", d.epoch, "period", d.cfg.Period, "source", d.cfg.Source)
	go func() {
		<-ctx.Done()
		conn.Close()
	}()
	go d.readLoop(conn)
	tick := time.NewTicker(d.cfg.Period / 8)
	defer tick.Stop()
	d.tick(time.Now())
	for {
		select {
		case <-ctx.Done():
			d.saveVerdicts()
			return nil
		case now := <-tick.C:
			d.tick(now)
		}
	}
}

func (d *Daemon) readLoop(conn *net.UDPConn) {
	buf := make([]byte, 65536)
	for {
		n, from, err := conn.ReadFromUDP(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			d.log.Warn("read view", "err", err)
			continue
		}
		d.met.recvBytes.Add(float64(n))
		d.mu.Lock()
		sender, err := d.eng.Receive(time.Now(), buf[:n])
		d.mu.Unlock()
		if err != nil {
			reason := protocol.ReasonOf(err)
			if reason == "" {
				reason = protocol.ReasonMalformed
			}
			d.met.rejected.WithLabelValues(string(reason)).Inc()
			d.log.Debug("view rejected", "from", from.String(), "claimed_sender", sender, "reason", reason, "err", err)
			continue
		}
		d.met.accepted.Inc()
	}
}

func (d *Daemon) tick(now time.Time) {
	// Everything indexed by the engine's member list is read under the
	// lock: a member change may swap the list between two ticks.
	d.mu.Lock()
	msg, changed, err := d.eng.Tick(now)
	fresh := d.eng.FreshVoters()
	names, addrs := d.eng.Names(), d.addrs
	var snap peer.Snapshot
	if len(changed) > 0 {
		snap = d.eng.Snapshot()
	}
	d.mu.Unlock()
	if err != nil {
		d.log.Error("build view", "err", err)
		return
	}
	d.met.fresh.Set(float64(fresh))
	if len(changed) > 0 {
		d.verdictsChanged(changed, names, snap, fresh)
	}
	if msg != nil {
		d.send(now, msg, addrs)
	}
}

// verdictsChanged logs, exports and persists changed verdicts (indices into names).
func (d *Daemon) verdictsChanged(changed []int, names []string, snap peer.Snapshot, fresh int) {
	for _, i := range changed {
		name := names[i]
		v := snap.Verdicts[name]
		d.log.Info("verdict changed", "member", name, "verdict", v, "fresh_voters", fresh, "quorum", len(names)/2+1)
		for _, s := range verdictNames {
			val := 0.0
			if s == v {
				val = 1
			}
			d.met.verdict.WithLabelValues(name, s).Set(val)
		}
	}
	d.saveVerdicts()
}

// send sends msg to every other member and hands the full view to the ViewSink.
func (d *Daemon) send(now time.Time, msg []byte, addrs []*net.UDPAddr) {
	for _, a := range addrs {
		if a == nil {
			continue
		}
		if _, err := d.conn.WriteToUDP(msg, a); err != nil {
			d.log.Debug("send view", "to", a.String(), "err", err)
			continue
		}
		d.met.sentMsgs.Inc()
		d.met.sentBytes.Add(float64(len(msg)))
	}
	if d.cfg.ViewSink != nil {
		d.mu.Lock()
		full, err := d.eng.SignedFullView(now)
		view := d.eng.View()
		d.mu.Unlock()
		if err != nil {
			d.log.Error("sign full view", "err", err)
			return
		}
		d.cfg.ViewSink(full, view)
	}
}

func (d *Daemon) saveVerdicts() {
	d.mu.Lock()
	s := VerdictsState{Snapshot: d.eng.Snapshot(), Updated: time.Now().UTC(), FreshVoters: d.eng.FreshVoters()}
	d.mu.Unlock()
	if err := statefile.Save(d.cfg.StateDir+"/"+VerdictsFile, KindVerdicts, StateVersion, s); err != nil {
		d.log.Error("persist verdicts", "err", err)
	}
}
