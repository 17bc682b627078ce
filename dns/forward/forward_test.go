package forward

import (
	"context"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// upstream is a real miekg/dns server on loopback UDP+TCP answering
// www.example.org A 203.0.113.7 with TTL 60 and NXDOMAIN for the rest.
type upstream struct {
	addr    string
	queries atomic.Int64
	srvs    []*dns.Server
}

func startUpstream(t *testing.T) *upstream {
	t.Helper()
	u := &upstream{}
	h := dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
		u.queries.Add(1)
		m := new(dns.Msg)
		m.SetReply(r)
		if r.Question[0].Name == "www.example.org." {
			m.Answer = []dns.RR{&dns.A{Hdr: dns.RR_Header{Name: "www.example.org.", Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 60}, A: net.ParseIP("203.0.113.7")}}
		} else {
			m.Rcode = dns.RcodeNameError
			m.Ns = []dns.RR{&dns.SOA{Hdr: dns.RR_Header{Name: "example.org.", Rrtype: dns.TypeSOA, Class: dns.ClassINET, Ttl: 300}, Ns: "ns.example.org.", Mbox: "h.example.org.", Minttl: 10}}
		}
		w.WriteMsg(m)
	})
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", pc.LocalAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for _, s := range []*dns.Server{{PacketConn: pc, Handler: h}, {Listener: ln, Handler: h}} {
		wg.Add(1)
		s.NotifyStartedFunc = wg.Done
		go s.ActivateAndServe()
		u.srvs = append(u.srvs, s)
	}
	wg.Wait()
	u.addr = pc.LocalAddr().String()
	t.Cleanup(u.stop)
	return u
}

func (u *upstream) stop() {
	for _, s := range u.srvs {
		s.Shutdown()
	}
}

func TestForwardCacheAndServeStale(t *testing.T) {
	up := startUpstream(t)
	now := time.Unix(1_700_000_000, 0)
	o := defaults(up.addr)
	o.Timeout, o.Now = 300*time.Millisecond, func() time.Time { return now }
	f, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	q := func() (*dns.Msg, Source) {
		req := new(dns.Msg)
		req.SetQuestion("www.example.org.", dns.TypeA)
		resp, src := f.Forward(context.Background(), req)
		if resp.Id != req.Id {
			t.Fatalf("reply id %d for request %d", resp.Id, req.Id)
		}
		return resp, src
	}
	if resp, src := q(); src != FromUpstream || len(resp.Answer) != 1 {
		t.Fatalf("first: %s %v", src, resp)
	}
	now = now.Add(20 * time.Second)
	resp, src := q()
	if src != FromCache || resp.Answer[0].Header().Ttl != 40 {
		t.Fatalf("second: %s ttl %d, want cache ttl 40", src, resp.Answer[0].Header().Ttl)
	}
	if n := up.queries.Load(); n != 1 {
		t.Fatalf("upstream saw %d queries, want 1", n)
	}
	up.stop()
	now = now.Add(10 * time.Minute) // expired, within the stale window
	resp, src = q()
	// 30, not StaleAnswerTTL: the documented value (README, RFC 8767), so a
	// changed constant fails here instead of agreeing with itself.
	if src != FromStale || resp.Rcode != dns.RcodeSuccess || resp.Answer[0].Header().Ttl != 30 || resp.Answer[0].(*dns.A).A.String() != "203.0.113.7" {
		t.Fatalf("upstream down: %s %v, want stale answer with TTL 30", src, resp)
	}
	// A stale answer carries exactly the stale TTL, also when the record's
	// own TTL was lower.
	f.mu.Lock()
	for _, c := range f.cache {
		c.msg.Answer[0].Header().Ttl = 1
	}
	f.mu.Unlock()
	if resp, src = q(); src != FromStale || resp.Answer[0].Header().Ttl != 30 {
		t.Fatalf("stale answer of a TTL-1 record: %s ttl %d, want 30", src, resp.Answer[0].Header().Ttl)
	}
	now = now.Add(2 * time.Hour) // past the stale window
	resp, src = q()
	if src != Failed || resp.Rcode != dns.RcodeServerFailure {
		t.Fatalf("past stale window: %s rcode %s, want SERVFAIL", src, dns.RcodeToString[resp.Rcode])
	}
}

func TestForwardNegativeCache(t *testing.T) {
	up := startUpstream(t)
	now := time.Unix(1_700_000_000, 0)
	o := defaults(up.addr)
	o.Now = func() time.Time { return now }
	f, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	req := new(dns.Msg)
	req.SetQuestion("nope.example.org.", dns.TypeA)
	for i := 0; i < 2; i++ {
		resp, _ := f.Forward(context.Background(), req)
		if resp.Rcode != dns.RcodeNameError {
			t.Fatalf("rcode %s", dns.RcodeToString[resp.Rcode])
		}
	}
	if n := up.queries.Load(); n != 1 {
		t.Fatalf("NXDOMAIN not cached: upstream saw %d", n)
	}
	now = now.Add(11 * time.Second) // SOA minimum 10 s
	f.Forward(context.Background(), req)
	if n := up.queries.Load(); n != 2 {
		t.Fatalf("negative entry outlived SOA minimum: upstream saw %d", n)
	}
}

func TestNewRejectsBadUpstream(t *testing.T) {
	for _, u := range []string{"resolver.example", "1.2.3.4:", "nameserver 1.1.1.1"} {
		if _, err := New(defaults(u)); err == nil {
			t.Errorf("upstream %q accepted", u)
		}
	}
	if _, err := New(defaults("127.0.0.1", "[::1]:5353")); err != nil {
		t.Fatal(err)
	}
}

// defaults are the Options holdfastd passes, for the upstreams ups.
func defaults(ups ...string) Options {
	return Options{Upstreams: ups, Timeout: DefaultTimeout, StaleTTL: DefaultStaleTTL, MaxTTL: DefaultMaxTTL, MaxEntries: DefaultMaxEntries}
}

// TestNewRefusesZeroSettings: a zero setting is refused with its name, not
// replaced by a default behind the caller's back.
func TestNewRefusesZeroSettings(t *testing.T) {
	for name, mod := range map[string]func(*Options){
		"timeout":     func(o *Options) { o.Timeout = 0 },
		"stale TTL":   func(o *Options) { o.StaleTTL = 0 },
		"max TTL":     func(o *Options) { o.MaxTTL = -time.Second },
		"max entries": func(o *Options) { o.MaxEntries = 0 },
	} {
		o := defaults("127.0.0.1")
		mod(&o)
		if _, err := New(o); err == nil || !strings.Contains(err.Error(), name) {
			t.Errorf("%s: got %v, want an error naming it", name, err)
		}
	}
}
