// Package forward sends questions outside the cluster domain to upstream
// resolvers and caches the answers, serving a stale answer (RFC 8767 style,
// TTL 30 s) for up to the stale window after expiry while no upstream
// answers. It owns only its in-memory cache; it never answers cluster names
// and never touches disk.
package forward

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/miekg/dns"
)

// StaleAnswerTTL is the TTL of records served stale (RFC 8767 §4).
const StaleAnswerTTL = 30

// Source says where an answer came from.
type Source string

const (
	FromUpstream Source = "upstream"
	FromCache    Source = "cache"
	FromStale    Source = "stale"
	Failed       Source = "servfail"
)

// Defaults of the Options holdfastd passes (New fills nothing in).
const (
	DefaultTimeout    = 2 * time.Second
	DefaultStaleTTL   = time.Hour
	DefaultMaxTTL     = time.Hour
	DefaultMaxEntries = 10000
)

// Options configure a Forwarder. The durations and MaxEntries must be
// positive; holdfastd passes the Default constants above.
type Options struct {
	Upstreams  []string      // host or host:port; port 53 if absent
	Timeout    time.Duration // per upstream try
	StaleTTL   time.Duration // serve expired answers this long after expiry
	MaxTTL     time.Duration // cap on cached TTLs
	MaxEntries int           // cache size bound
	Now        func() time.Time
	Log        *slog.Logger
}

type cached struct {
	msg     *dns.Msg
	stored  time.Time
	expires time.Time
}

// Forwarder forwards and caches. Safe for concurrent use.
type Forwarder struct {
	opts      Options
	upstreams []string
	udp, tcp  *dns.Client

	mu    sync.Mutex
	cache map[string]*cached
}

// New checks opts (every error names the setting) and builds a Forwarder.
func New(opts Options) (*Forwarder, error) {
	if err := checkOptions(opts); err != nil {
		return nil, err
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	f := &Forwarder{opts: opts, cache: map[string]*cached{},
		udp: &dns.Client{Net: "udp", Timeout: opts.Timeout, UDPSize: dns.DefaultMsgSize},
		tcp: &dns.Client{Net: "tcp", Timeout: opts.Timeout}}
	for _, u := range opts.Upstreams {
		addr, err := NormalizeUpstream(u)
		if err != nil {
			return nil, err
		}
		f.upstreams = append(f.upstreams, addr)
	}
	return f, nil
}

func checkOptions(opts Options) error {
	for _, d := range []struct {
		name string
		v    time.Duration
	}{{"timeout", opts.Timeout}, {"stale TTL", opts.StaleTTL}, {"max TTL", opts.MaxTTL}} {
		if d.v <= 0 {
			return fmt.Errorf("forward: %s %s: want a positive duration", d.name, d.v)
		}
	}
	if opts.MaxEntries <= 0 {
		return fmt.Errorf("forward: max entries %d: want a positive count", opts.MaxEntries)
	}
	return nil
}

// NormalizeUpstream turns "1.2.3.4" or "[fd00::1]:5353" into host:port.
func NormalizeUpstream(u string) (string, error) {
	if ip := net.ParseIP(strings.Trim(u, "[]")); ip != nil {
		return net.JoinHostPort(ip.String(), "53"), nil
	}
	host, port, err := net.SplitHostPort(u)
	if err != nil || net.ParseIP(host) == nil || port == "" {
		return "", fmt.Errorf("upstream %q: want an IP address or IP:port", u)
	}
	return net.JoinHostPort(host, port), nil
}

// Upstreams lists the normalized upstream addresses.
func (f *Forwarder) Upstreams() []string { return append([]string(nil), f.upstreams...) }

func key(req *dns.Msg) string {
	q := req.Question[0]
	do := false
	if o := req.IsEdns0(); o != nil {
		do = o.Do()
	}
	return fmt.Sprintf("%s/%d/%d/%t/%t", strings.ToLower(q.Name), q.Qtype, q.Qclass, do, req.CheckingDisabled)
}

// Forward answers req from the cache or upstream. It always returns a reply
// for req (SERVFAIL when nothing else is possible) and where it came from.
func (f *Forwarder) Forward(ctx context.Context, req *dns.Msg) (*dns.Msg, Source) {
	if len(req.Question) != 1 {
		m := new(dns.Msg)
		m.SetRcodeFormatError(req)
		return m, Failed
	}
	k := key(req)
	now := f.opts.Now()
	f.mu.Lock()
	c := f.cache[k]
	f.mu.Unlock()
	if c != nil && now.Before(c.expires) {
		return reply(req, c.msg, uint32(max(c.expires.Sub(now)/time.Second, 1)), false), FromCache
	}
	resp, err := f.exchange(ctx, req)
	if err == nil && (resp.Rcode == dns.RcodeSuccess || resp.Rcode == dns.RcodeNameError) {
		f.store(k, resp, now)
		return reply(req, resp, 0, false), FromUpstream
	}
	if c != nil && now.Before(c.expires.Add(f.opts.StaleTTL)) {
		f.opts.Log.Debug("serving stale answer", "name", req.Question[0].Name, "age", now.Sub(c.stored).Round(time.Second), "err", err)
		return reply(req, c.msg, StaleAnswerTTL, true), FromStale
	}
	if err == nil {
		return reply(req, resp, 0, false), FromUpstream // upstream's own SERVFAIL/REFUSED
	}
	f.opts.Log.Debug("no upstream answer", "name", req.Question[0].Name, "err", err)
	m := new(dns.Msg)
	m.SetRcode(req, dns.RcodeServerFailure)
	m.RecursionAvailable = true
	return m, Failed
}

func (f *Forwarder) exchange(ctx context.Context, req *dns.Msg) (*dns.Msg, error) {
	if len(f.upstreams) == 0 {
		return nil, errors.New("no upstream configured")
	}
	var errs []error
	for _, up := range f.upstreams {
		out := req.Copy()
		out.Id = dns.Id()
		resp, _, err := f.udp.ExchangeContext(ctx, out, up)
		if err == nil && resp.Truncated {
			resp, _, err = f.tcp.ExchangeContext(ctx, out, up)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", up, err))
			continue
		}
		if resp.Rcode == dns.RcodeServerFailure || resp.Rcode == dns.RcodeRefused {
			errs = append(errs, fmt.Errorf("%s: %s", up, dns.RcodeToString[resp.Rcode]))
			if up == f.upstreams[len(f.upstreams)-1] {
				return resp, errors.Join(errs...)
			}
			continue
		}
		return resp, nil
	}
	return nil, errors.Join(errs...)
}

// ttlOf is the cache lifetime of a response: its smallest TTL, or for a
// negative answer the SOA's minimum (RFC 2308).
func ttlOf(m *dns.Msg) uint32 {
	min := uint32(0)
	first := true
	for _, sec := range [][]dns.RR{m.Answer, m.Ns} {
		for _, rr := range sec {
			t := rr.Header().Ttl
			if soa, ok := rr.(*dns.SOA); ok && len(m.Answer) == 0 && soa.Minttl < t {
				t = soa.Minttl
			}
			if first || t < min {
				min, first = t, false
			}
		}
	}
	return min
}

func (f *Forwarder) store(k string, resp *dns.Msg, now time.Time) {
	if resp.Truncated {
		return
	}
	ttl := time.Duration(ttlOf(resp)) * time.Second
	if ttl > f.opts.MaxTTL {
		ttl = f.opts.MaxTTL
	}
	c := &cached{msg: resp.Copy(), stored: now, expires: now.Add(ttl)}
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.cache[k]; !ok && len(f.cache) >= f.opts.MaxEntries {
		// Evict entries past their stale window first, then any one.
		for kk, v := range f.cache {
			if now.After(v.expires.Add(f.opts.StaleTTL)) {
				delete(f.cache, kk)
			}
		}
		for kk := range f.cache {
			if len(f.cache) < f.opts.MaxEntries {
				break
			}
			delete(f.cache, kk)
		}
	}
	f.cache[k] = c
}

// Len is the number of cached answers.
func (f *Forwarder) Len() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.cache)
}

// reply copies a cached or upstream message as the answer to req. ttl > 0
// caps every record's TTL (the remaining lifetime); with stale, every
// record gets exactly ttl (RFC 8767: stale answers carry a fixed TTL).
func reply(req, src *dns.Msg, ttl uint32, stale bool) *dns.Msg {
	m := src.Copy()
	m.Id = req.Id
	m.Response = true
	m.Opcode = req.Opcode
	m.RecursionDesired = req.RecursionDesired
	m.Question = []dns.Question{req.Question[0]}
	if ttl > 0 {
		for _, sec := range [][]dns.RR{m.Answer, m.Ns, m.Extra} {
			for _, rr := range sec {
				if rr.Header().Rrtype != dns.TypeOPT && (stale || rr.Header().Ttl > ttl) {
					rr.Header().Ttl = ttl
				}
			}
		}
	}
	return m
}
