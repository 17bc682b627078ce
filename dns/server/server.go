// Package server is the node DNS server: miekg/dns over UDP and TCP on one
// address (by default 169.254.20.10:53 on holdfast-dns0), answering cluster
// names from the resolver index it rebuilds whenever the store, the peers'
// verdicts or the apiserver reachability change, and forwarding everything
// else through dns/forward.
//
// It owns the listening sockets, the holdfast-dns0 link and its address
// (created if missing; see EnsureAddress), and the DNS metrics. It never
// writes state (dns/store does), never talks to the apiserver (dns/watch)
// and never touches any other link, route or firewall rule.
package server

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/holdfast-edge/holdfast/dns/forward"
	"github.com/holdfast-edge/holdfast/dns/resolve"
	"github.com/holdfast-edge/holdfast/dns/store"
	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"
)

// EDNSSize is the UDP payload size this server advertises (DNS flag day 2020).
const EDNSSize = 1232

// Config builds a Server. Components never read flags: holdfastd fills this.
type Config struct {
	Listen       string               // host:port for UDP and TCP
	Zone         string               // cluster domain, required (holdfastd: dns.DefaultZone)
	TTL          uint32               // answer TTL, positive (holdfastd: resolve.DefaultTTL)
	EndpointMode resolve.EndpointMode // required (holdfastd: resolve.EndpointModeOff)
	NodeName     string
	Store        *store.Store
	Forwarder    *forward.Forwarder // nil: names outside the cluster get SERVFAIL
	Registerer   prometheus.Registerer
	Log          *slog.Logger
}

// Server answers DNS queries. Create with New, start with Start.
type Server struct {
	cfg   Config
	log   *slog.Logger
	index atomic.Pointer[resolve.Index]

	mu       sync.Mutex // guards the inputs of the index
	verdicts map[string]string
	online   bool

	srvs    []*dns.Server
	started time.Time

	queries *prometheus.CounterVec
	latency *prometheus.HistogramVec
	rebuilt prometheus.Counter
	records prometheus.Gauge
	cnt     map[string]*boundMetrics // pre-bound children per source, hot path
}

type boundMetrics struct {
	rcode   [6]prometheus.Counter // NOERROR..REFUSED
	latency prometheus.Observer
}

var sources = []string{"cluster", "cache", "upstream", "stale", "servfail", "formerr"}

// New builds the server and its first index from the store's current
// content, so the first query is answered from the snapshot.
func New(cfg Config) (*Server, error) {
	if cfg.Store == nil {
		return nil, errors.New("server: no store")
	}
	if err := CheckZone(cfg.Zone); err != nil {
		return nil, err
	}
	if _, err := resolve.ParseEndpointMode(string(cfg.EndpointMode)); err != nil {
		return nil, fmt.Errorf("server: endpoint mode: %w", err)
	}
	if cfg.TTL == 0 {
		return nil, errors.New("server: TTL 0: want a positive TTL")
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	s := &Server{cfg: cfg, log: cfg.Log, cnt: map[string]*boundMetrics{}}
	s.queries = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "holdfast_dns_queries_total", Help: "DNS queries answered, by how (cluster, cache, upstream, stale, servfail, formerr) and rcode."}, []string{"source", "rcode"})
	s.latency = prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "holdfast_dns_request_seconds", Help: "Time to answer a DNS query, by how it was answered.",
		Buckets: []float64{0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.01, 0.05, 0.25, 1, 2.5}}, []string{"source"})
	s.rebuilt = prometheus.NewCounter(prometheus.CounterOpts{Name: "holdfast_dns_index_rebuilds_total", Help: "Times the answer index was rebuilt (store, verdict or reachability change)."})
	s.records = prometheus.NewGauge(prometheus.GaugeOpts{Name: "holdfast_dns_records", Help: "Records in the answer index."})
	if cfg.Registerer != nil {
		for _, c := range []prometheus.Collector{s.queries, s.latency, s.rebuilt, s.records} {
			if err := cfg.Registerer.Register(c); err != nil {
				return nil, fmt.Errorf("register dns metrics: %w", err)
			}
		}
	}
	for _, src := range sources {
		b := &boundMetrics{latency: s.latency.WithLabelValues(src)}
		for rc := range b.rcode {
			b.rcode[rc] = s.queries.WithLabelValues(src, rcodeName(rc))
		}
		s.cnt[src] = b
	}
	s.rebuild("start")
	return s, nil
}

// CheckZone refuses a cluster domain that is not a domain name.
func CheckZone(zone string) error {
	if _, ok := dns.IsDomainName(zone); !ok || strings.Trim(zone, ".") == "" {
		return fmt.Errorf("cluster domain %q is not a domain name", zone)
	}
	return nil
}

// Index is the current answer index.
func (s *Server) Index() *resolve.Index { return s.index.Load() }

// SetVerdicts replaces the peers' verdicts (nil: no verdict source).
func (s *Server) SetVerdicts(v map[string]string) {
	s.mu.Lock()
	s.verdicts = v
	s.mu.Unlock()
	s.rebuild("verdicts")
}

// SetOnline records whether the apiserver is reachable (endpoint mode offline).
func (s *Server) SetOnline(online bool) {
	s.mu.Lock()
	changed := s.online != online
	s.online = online
	s.mu.Unlock()
	if changed {
		s.log.Info("apiserver reachability changed", "node", s.cfg.NodeName, "online", online)
		s.rebuild("reachability")
	}
}

func (s *Server) rebuild(why string) {
	s.mu.Lock()
	cfg := resolve.Config{Zone: s.cfg.Zone, TTL: s.cfg.TTL, EndpointMode: s.cfg.EndpointMode, Online: s.online, Verdicts: s.verdicts}
	if ip := listenIP(s.cfg.Listen); ip != nil {
		cfg.NSAddrs = []net.IP{ip}
	}
	ix := resolve.Build(s.cfg.Store.View(), cfg)
	s.index.Store(ix)
	s.mu.Unlock()
	s.rebuilt.Inc()
	s.records.Set(float64(ix.Records))
	s.log.Debug("answer index rebuilt", "node", s.cfg.NodeName, "why", why, "services", ix.Services, "records", ix.Records)
}

func listenIP(addr string) net.IP {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil
	}
	ip := net.ParseIP(host)
	if ip == nil || ip.IsUnspecified() {
		return nil
	}
	return ip
}

// Start binds UDP and TCP on cfg.Listen and serves until ctx ends. It
// returns once both sockets are bound, with their addresses. A goroutine
// rebuilds the index on every store change.
func (s *Server) Start(ctx context.Context) (udp, tcp net.Addr, err error) {
	s.started = time.Now()
	pc, err := net.ListenPacket("udp", s.cfg.Listen)
	if err != nil {
		return nil, nil, fmt.Errorf("listen udp %s: %w", s.cfg.Listen, err)
	}
	// Same port for TCP when the caller asked for port 0.
	ln, err := net.Listen("tcp", pc.LocalAddr().String())
	if err != nil {
		pc.Close()
		return nil, nil, fmt.Errorf("listen tcp %s: %w", pc.LocalAddr(), err)
	}
	// miekg/dns writes the replies to refused and unparsable requests
	// itself, without calling ServeDNS: count them where it decides.
	accept := func(dh dns.Header) dns.MsgAcceptAction {
		action := acceptAction(dh)
		switch action {
		case dns.MsgReject:
			s.observe("formerr", dns.RcodeFormatError, time.Now())
		case dns.MsgRejectNotImplemented:
			s.observe("formerr", dns.RcodeNotImplemented, time.Now())
		}
		return action
	}
	invalid := func(m []byte, err error) {
		// Called for a request too short for a header (no reply: any
		// reply could amplify) and for one whose body does not unpack
		// (FORMERR reply).
		if len(m) >= headerSize {
			s.observe("formerr", dns.RcodeFormatError, time.Now())
		}
	}
	var wg sync.WaitGroup
	s.srvs = []*dns.Server{
		{PacketConn: pc, Handler: s, UDPSize: 65535, MsgAcceptFunc: accept, MsgInvalidFunc: invalid, ReusePort: false},
		{Listener: ln, Handler: s, MsgAcceptFunc: accept, MsgInvalidFunc: invalid, ReadTimeout: 5 * time.Second, IdleTimeout: func() time.Duration { return 10 * time.Second }},
	}
	for _, srv := range s.srvs {
		wg.Add(1)
		srv.NotifyStartedFunc = wg.Done
		go func(srv *dns.Server) {
			if err := srv.ActivateAndServe(); err != nil && ctx.Err() == nil {
				s.log.Error("dns server stopped", "node", s.cfg.NodeName, "err", err)
			}
		}(srv)
	}
	wg.Wait()
	sub := s.cfg.Store.Subscribe()
	go func() {
		for {
			select {
			case <-ctx.Done():
				for _, srv := range s.srvs {
					srv.Shutdown()
				}
				return
			case <-sub:
				s.rebuild("store")
			}
		}
	}()
	return pc.LocalAddr(), ln.Addr(), nil
}

// ServeDNS answers one query.
func (s *Server) ServeDNS(w dns.ResponseWriter, req *dns.Msg) {
	start := time.Now()
	_, tcp := w.RemoteAddr().(*net.TCPAddr)
	resp, source := s.Respond(context.Background(), req, tcp)
	if err := w.WriteMsg(resp); err != nil {
		s.log.Debug("write dns reply", "node", s.cfg.NodeName, "err", err)
	}
	s.observe(source, resp.Rcode, start)
}

// headerSize is the length of a DNS message header.
const headerSize = 12

// acceptAction is the server's accept policy: miekg/dns's default, and
// NOTIFY (which this server does not serve) answered NOTIMP.
func acceptAction(dh dns.Header) dns.MsgAcceptAction {
	if int(dh.Bits>>11)&0xF == dns.OpcodeNotify {
		return dns.MsgRejectNotImplemented
	}
	return dns.DefaultMsgAcceptFunc(dh)
}

// rcodeName names an rcode for the metrics. 16 is BADSIG in TSIG and
// BADVERS in EDNS; this server signs nothing, so a 16 it sends (or relays,
// in a reply carrying an OPT record) is BADVERS, which miekg/dns's table
// calls BADSIG.
func rcodeName(rcode int) string {
	if rcode == dns.RcodeBadVers {
		return "BADVERS"
	}
	if n, ok := dns.RcodeToString[rcode]; ok {
		return n
	}
	return fmt.Sprintf("RCODE%d", rcode)
}

func (s *Server) observe(source string, rcode int, start time.Time) {
	b := s.cnt[source] // read-only after New
	if b == nil || rcode < 0 || rcode >= len(b.rcode) {
		s.queries.WithLabelValues(source, rcodeName(rcode)).Inc()
		s.latency.WithLabelValues(source).Observe(time.Since(start).Seconds())
		return
	}
	b.rcode[rcode].Inc()
	b.latency.Observe(time.Since(start).Seconds())
}

// Respond builds the reply to one well-formed request and says how it was
// answered. tcp selects the size limit (65535, else the client's EDNS size
// or 512 with TC set when the answer does not fit).
func (s *Server) Respond(ctx context.Context, req *dns.Msg, tcp bool) (*dns.Msg, string) {
	if len(req.Question) != 1 || req.Opcode != dns.OpcodeQuery {
		m := new(dns.Msg)
		m.SetRcodeFormatError(req)
		if req.Opcode != dns.OpcodeQuery {
			m.Rcode = dns.RcodeNotImplemented
		}
		return m, "formerr"
	}
	q := req.Question[0]
	opt := req.IsEdns0()
	if opt != nil && opt.Version() != 0 {
		m := new(dns.Msg)
		m.SetReply(req)
		m.SetEdns0(EDNSSize, false)
		m.Rcode = dns.RcodeBadVers
		return m, "formerr"
	}
	if q.Qclass == dns.ClassINET || q.Qclass == dns.ClassANY {
		if res, ours := s.index.Load().Answer(q.Name, q.Qtype); ours {
			m := new(dns.Msg)
			m.SetReply(req)
			m.Authoritative = true
			m.RecursionAvailable = true
			m.Rcode = res.Rcode
			m.Answer, m.Ns, m.Extra = res.Answer, res.Ns, res.Extra
			size := dns.MinMsgSize
			if opt != nil {
				m.SetEdns0(EDNSSize, opt.Do())
				size = int(max(opt.UDPSize(), dns.MinMsgSize))
			}
			if tcp {
				size = dns.MaxMsgSize
			}
			m.Truncate(size)
			return m, "cluster"
		}
	}
	if s.cfg.Forwarder == nil {
		m := new(dns.Msg)
		m.SetRcode(req, dns.RcodeServerFailure)
		return m, "servfail"
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	m, src := s.cfg.Forwarder.Forward(ctx, req)
	if !tcp {
		size := dns.MinMsgSize
		if opt != nil {
			size = int(max(opt.UDPSize(), dns.MinMsgSize))
		}
		m.Truncate(size)
	}
	return m, string(src)
}

// HandlePacket runs one raw request through the same steps as the socket
// path (header check, accept policy, unpack, Respond, pack) and returns the
// raw reply, or nil where the server stays silent (no header, or a
// response). It is the fuzzing entry point of the request path.
func (s *Server) HandlePacket(buf []byte, tcp bool) []byte {
	if len(buf) < headerSize {
		return nil
	}
	var dh dns.Header
	dh.Id = binary.BigEndian.Uint16(buf[0:])
	dh.Bits = binary.BigEndian.Uint16(buf[2:])
	dh.Qdcount = binary.BigEndian.Uint16(buf[4:])
	dh.Ancount = binary.BigEndian.Uint16(buf[6:])
	dh.Nscount = binary.BigEndian.Uint16(buf[8:])
	dh.Arcount = binary.BigEndian.Uint16(buf[10:])
	req := new(dns.Msg)
	action := acceptAction(dh)
	var resp *dns.Msg
	switch action {
	case dns.MsgIgnore:
		return nil
	case dns.MsgAccept:
		if err := req.Unpack(buf); err == nil {
			resp, _ = s.Respond(context.Background(), req, tcp)
			break
		}
		fallthrough
	default:
		resp = new(dns.Msg)
		resp.Id = dh.Id
		resp.Response = true
		resp.Opcode = int(dh.Bits>>11) & 0xF
		resp.Rcode = dns.RcodeFormatError
		if action == dns.MsgRejectNotImplemented {
			resp.Rcode = dns.RcodeNotImplemented
		}
	}
	out, err := resp.Pack()
	if err != nil {
		panic(fmt.Sprintf("reply does not pack: %v\n%v", err, resp))
	}
	return out
}
