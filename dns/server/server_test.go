package server

import (
	"context"
	"fmt"
	"net"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/holdfast-edge/holdfast/dns/forward"
	"github.com/holdfast-edge/holdfast/dns/resolve"
	"github.com/holdfast-edge/holdfast/dns/store"
	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// seededStore is a store loaded from dns/testdata/seed.json.
func seededStore(t testing.TB) *store.Store {
	t.Helper()
	st, err := store.Open(store.Options{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	// Before TempDir's removal: a debounced save into the removed dir made
	// RemoveAll fail ("directory not empty") on a loaded box.
	t.Cleanup(func() { st.Close() })
	snap, err := store.LoadSeed("../testdata/seed.json")
	if err != nil {
		t.Fatal(err)
	}
	st.Replace(snap)
	return st
}

// upstream is a real DNS server on loopback for names outside the cluster.
func startUpstream(t testing.TB) string {
	t.Helper()
	h := dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(r)
		m.RecursionAvailable = true
		if strings.EqualFold(r.Question[0].Name, "www.example.org.") && r.Question[0].Qtype == dns.TypeA {
			m.Answer = []dns.RR{&dns.A{Hdr: dns.RR_Header{Name: r.Question[0].Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 300}, A: net.ParseIP("203.0.113.7")}}
		} else {
			m.Rcode = dns.RcodeNameError
		}
		w.WriteMsg(m)
	})
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &dns.Server{PacketConn: pc, Handler: h}
	started := make(chan struct{})
	srv.NotifyStartedFunc = func() { close(started) }
	go srv.ActivateAndServe()
	<-started
	t.Cleanup(func() { srv.Shutdown() })
	return pc.LocalAddr().String()
}

func startServer(t testing.TB, st *store.Store, fwd *forward.Forwarder) (*Server, string) {
	t.Helper()
	s, err := New(Config{Listen: "127.0.0.1:0", Zone: "cluster.local", TTL: resolve.DefaultTTL, EndpointMode: resolve.EndpointModeOff, Store: st, Forwarder: fwd, Registerer: prometheus.NewRegistry(), NodeName: "node1"})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	udp, _, err := s.Start(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return s, udp.String()
}

func query(t testing.TB, network, addr, name string, qtype uint16) *dns.Msg {
	t.Helper()
	c := &dns.Client{Net: network, Timeout: 2 * time.Second}
	req := new(dns.Msg)
	req.SetQuestion(name, qtype)
	resp, _, err := c.Exchange(req, addr)
	if err != nil {
		t.Fatalf("%s %s %s: %v", network, name, dns.TypeToString[qtype], err)
	}
	return resp
}

func rrText(rrs []dns.RR) string {
	var out []string
	for _, rr := range rrs {
		out = append(out, strings.ReplaceAll(rr.String(), "\t", " "))
	}
	sort.Strings(out)
	return strings.Join(out, " | ")
}

// TestRealQueries asks every record kind over real UDP and TCP sockets.
func TestRealQueries(t *testing.T) {
	up := startUpstream(t)
	fwd, err := forward.New(forward.Options{Upstreams: []string{up}, Timeout: forward.DefaultTimeout, StaleTTL: forward.DefaultStaleTTL, MaxTTL: forward.DefaultMaxTTL, MaxEntries: forward.DefaultMaxEntries})
	if err != nil {
		t.Fatal(err)
	}
	_, addr := startServer(t, seededStore(t), fwd)
	cases := []struct {
		name   string
		qtype  uint16
		rcode  int
		answer string
		auth   bool
	}{
		{"web.default.svc.cluster.local.", dns.TypeA, 0, "web.default.svc.cluster.local. 5 IN A 10.96.0.10", true},
		{"web.default.svc.cluster.local.", dns.TypeAAAA, 0, "", true},
		{"_http._tcp.web.default.svc.cluster.local.", dns.TypeSRV, 0, "_http._tcp.web.default.svc.cluster.local. 5 IN SRV 0 100 80 web.default.svc.cluster.local.", true},
		{"db.default.svc.cluster.local.", dns.TypeA, 0, "db.default.svc.cluster.local. 5 IN A 10.244.1.10", true},
		{"db-0.db.default.svc.cluster.local.", dns.TypeA, 0, "db-0.db.default.svc.cluster.local. 5 IN A 10.244.1.10", true},
		{"_pg._tcp.db.default.svc.cluster.local.", dns.TypeSRV, 0, "_pg._tcp.db.default.svc.cluster.local. 5 IN SRV 0 100 5432 db-0.db.default.svc.cluster.local.", true},
		{"ext.default.svc.cluster.local.", dns.TypeA, 0, "ext.default.svc.cluster.local. 5 IN CNAME db.example.org.", true},
		{"10.0.96.10.in-addr.arpa.", dns.TypePTR, 0, "10.0.96.10.in-addr.arpa. 5 IN PTR web.default.svc.cluster.local.", true},
		{"10.1.244.10.in-addr.arpa.", dns.TypePTR, 0, "10.1.244.10.in-addr.arpa. 5 IN PTR db-0.db.default.svc.cluster.local.", true},
		{"missing.default.svc.cluster.local.", dns.TypeA, dns.RcodeNameError, "", true},
		{"www.example.org.", dns.TypeA, 0, "www.example.org. 300 IN A 203.0.113.7", false},
		{"nx.example.org.", dns.TypeA, dns.RcodeNameError, "", false},
	}
	for _, network := range []string{"udp", "tcp"} {
		for _, c := range cases {
			resp := query(t, network, addr, c.name, c.qtype)
			for _, rr := range resp.Answer {
				if !c.auth && rr.Header().Ttl > 290 && rr.Header().Ttl <= 300 {
					rr.Header().Ttl = 300 // second ask comes from the cache, TTL counting down
				}
			}
			if resp.Rcode != c.rcode || rrText(resp.Answer) != c.answer || resp.Authoritative != c.auth {
				t.Errorf("%s %s %s: rcode %s aa %v answer %q; want %s aa %v %q", network, c.name, dns.TypeToString[c.qtype],
					dns.RcodeToString[resp.Rcode], resp.Authoritative, rrText(resp.Answer), dns.RcodeToString[c.rcode], c.auth, c.answer)
			}
			if c.auth && c.answer == "" && (len(resp.Ns) != 1 || resp.Ns[0].Header().Rrtype != dns.TypeSOA) {
				t.Errorf("%s %s: negative answer without SOA", network, c.name)
			}
		}
	}
}

func TestStoreChangeAndVerdictsChangeAnswers(t *testing.T) {
	st := seededStore(t)
	s, addr := startServer(t, st, nil)
	st.SetService(store.Service{Namespace: "prod", Name: "api", ClusterIPs: []string{"10.96.5.5"}})
	deadline := time.Now().Add(2 * time.Second)
	for rrText(query(t, "udp", addr, "api.prod.svc.cluster.local.", dns.TypeA).Answer) == "" {
		if time.Now().After(deadline) {
			t.Fatal("new service never answered")
		}
		time.Sleep(5 * time.Millisecond)
	}
	headless := func() string { return rrText(query(t, "udp", addr, "db.default.svc.cluster.local.", dns.TypeA).Answer) }
	if got := headless(); got != "db.default.svc.cluster.local. 5 IN A 10.244.1.10" {
		t.Fatalf("no verdicts: %q", got)
	}
	s.SetVerdicts(map[string]string{"node1": resolve.Alive, "node2": resolve.Alive})
	if got := headless(); got != "db.default.svc.cluster.local. 5 IN A 10.244.1.10 | db.default.svc.cluster.local. 5 IN A 10.244.2.10" {
		t.Fatalf("node2 alive: %q", got)
	}
	s.SetVerdicts(map[string]string{"node1": resolve.Dead, "node2": resolve.Alive})
	if got := headless(); got != "db.default.svc.cluster.local. 5 IN A 10.244.2.10" {
		t.Fatalf("node1 dead: %q", got)
	}
	s.SetVerdicts(nil)
	if got := headless(); got != "db.default.svc.cluster.local. 5 IN A 10.244.1.10" {
		t.Fatalf("verdicts gone: %q", got)
	}
}

func TestTruncationUDPFullTCP(t *testing.T) {
	st := seededStore(t)
	sl := store.EndpointSlice{Namespace: "default", Name: "big-1", Service: "big", AddressType: "IPv4"}
	for i := 0; i < 200; i++ {
		sl.Endpoints = append(sl.Endpoints, store.Endpoint{Addresses: []string{fmt.Sprintf("10.244.%d.%d", i/250+1, i%250+1)}})
	}
	st.SetService(store.Service{Namespace: "default", Name: "big", Headless: true})
	st.SetSlice(sl)
	_, addr := startServer(t, st, nil)
	udp := query(t, "udp", addr, "big.default.svc.cluster.local.", dns.TypeA)
	if !udp.Truncated || len(udp.Answer) >= 200 {
		t.Fatalf("udp: TC=%v with %d answers", udp.Truncated, len(udp.Answer))
	}
	tcp := query(t, "tcp", addr, "big.default.svc.cluster.local.", dns.TypeA)
	if tcp.Truncated || len(tcp.Answer) != 200 {
		t.Fatalf("tcp: TC=%v with %d answers", tcp.Truncated, len(tcp.Answer))
	}
}

// TestMalformedPacketsOverUDP sends broken packets to the real socket: the
// server answers FORMERR where a header can be read, stays silent otherwise,
// and keeps answering.
func TestMalformedPacketsOverUDP(t *testing.T) {
	_, addr := startServer(t, seededStore(t), nil)
	conn, err := net.Dial("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	good := new(dns.Msg)
	good.SetQuestion("web.default.svc.cluster.local.", dns.TypeA)
	good.Id = 0x4242
	goodWire, _ := good.Pack()
	loop := append([]byte{0x42, 0x43, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0}, 0xC0, 12, 0, 1, 0, 1) // name points at itself
	twoQ := append([]byte(nil), goodWire...)
	twoQ[5] = 2
	notify := append([]byte(nil), goodWire...)
	notify[2] = 4 << 3 // opcode NOTIFY
	huge := []byte{0x42, 0x44, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0}
	for i := 0; i < 10; i++ { // 10 labels of 63 bytes: 640 > 255
		huge = append(huge, 63)
		huge = append(huge, []byte(strings.Repeat("a", 63))...)
	}
	huge = append(huge, 0, 0, 1, 0, 1)
	cases := []struct {
		name  string
		pkt   []byte
		rcode int // -1: no reply expected
	}{
		{"short header", []byte{1, 2, 3}, -1},
		{"truncated question", goodWire[:len(goodWire)-3], dns.RcodeFormatError},
		{"compression loop", loop, dns.RcodeFormatError},
		{"two questions", twoQ, dns.RcodeFormatError},
		{"name longer than 255", huge, dns.RcodeFormatError},
		{"notify", notify, dns.RcodeNotImplemented},
		{"a response", append([]byte{0x42, 0x45, 0x80, 0}, goodWire[4:]...), -1},
	}
	buf := make([]byte, 65535)
	for _, c := range cases {
		conn.Write(c.pkt)
		conn.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
		n, err := conn.Read(buf)
		if c.rcode < 0 {
			if err == nil {
				t.Errorf("%s: got a %d byte reply, want silence", c.name, n)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: no reply: %v", c.name, err)
			continue
		}
		var m dns.Msg
		if err := m.Unpack(buf[:n]); err != nil && n < 12 {
			t.Errorf("%s: unreadable reply: %v", c.name, err)
			continue
		}
		if m.Rcode != c.rcode {
			t.Errorf("%s: rcode %s, want %s", c.name, dns.RcodeToString[m.Rcode], dns.RcodeToString[c.rcode])
		}
	}
	if resp := query(t, "udp", addr, "web.default.svc.cluster.local.", dns.TypeA); len(resp.Answer) != 1 {
		t.Fatalf("server stopped answering after malformed input: %v", resp)
	}
}

func TestNewRejectsBadZone(t *testing.T) {
	if _, err := New(Config{Zone: "bad..zone", TTL: resolve.DefaultTTL, EndpointMode: resolve.EndpointModeOff, Store: seededStore(t)}); err == nil || !strings.Contains(err.Error(), "bad..zone") {
		t.Fatalf("bad zone: %v", err)
	}
}

// TestNewRefusesZeroSettings: an empty zone, endpoint mode or TTL is
// refused with the setting's name, not replaced by a default.
func TestNewRefusesZeroSettings(t *testing.T) {
	st := seededStore(t)
	for name, mod := range map[string]func(*Config){
		"cluster domain": func(c *Config) { c.Zone = "" },
		"endpoint mode":  func(c *Config) { c.EndpointMode = "" },
		"TTL":            func(c *Config) { c.TTL = 0 },
	} {
		c := Config{Listen: "127.0.0.1:0", Zone: "cluster.local", TTL: resolve.DefaultTTL, EndpointMode: resolve.EndpointModeOff, Store: st}
		mod(&c)
		if _, err := New(c); err == nil || !strings.Contains(err.Error(), name) {
			t.Errorf("%s: got %v, want an error naming it", name, err)
		}
	}
}

// FuzzHandlePacket runs arbitrary bytes through the request path (header
// check, accept policy, unpack, answer, pack). It fails on a panic, a reply
// that does not unpack, or a reply with another ID.
func FuzzHandlePacket(f *testing.F) {
	st, err := store.Open(store.Options{Dir: f.TempDir()})
	if err != nil {
		f.Fatal(err)
	}
	snap, err := store.LoadSeed("../testdata/seed.json")
	if err != nil {
		f.Fatal(err)
	}
	st.Replace(snap)
	s, err := New(Config{Listen: "127.0.0.1:0", Zone: "cluster.local", TTL: resolve.DefaultTTL, EndpointMode: resolve.EndpointModeOff, Store: st})
	if err != nil {
		f.Fatal(err)
	}
	for _, q := range []struct {
		n string
		t uint16
	}{{"web.default.svc.cluster.local.", dns.TypeA}, {"_pg._tcp.db.default.svc.cluster.local.", dns.TypeSRV}, {"10.0.96.10.in-addr.arpa.", dns.TypePTR}, {"Ext.default.svc.cluster.local.", dns.TypeANY}} {
		m := new(dns.Msg)
		m.SetQuestion(q.n, q.t)
		m.SetEdns0(600, true)
		b, _ := m.Pack()
		f.Add(b, false)
	}
	f.Add([]byte{0x42, 0x43, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0xC0, 12, 0, 1, 0, 1}, true)
	f.Fuzz(func(t *testing.T, pkt []byte, tcp bool) {
		out := s.HandlePacket(pkt, tcp)
		if out == nil {
			return
		}
		var m dns.Msg
		if err := m.Unpack(out); err != nil {
			t.Fatalf("reply does not unpack: %v", err)
		}
		if m.Id != uint16(pkt[0])<<8|uint16(pkt[1]) || !m.Response {
			t.Fatalf("reply id %d response %v", m.Id, m.Response)
		}
		if !tcp && len(out) > 65535 {
			t.Fatalf("udp reply of %d bytes", len(out))
		}
	})
}

// queryCounts reads holdfast_dns_queries_total by "source/rcode".
func queryCounts(t testing.TB, s *Server) map[string]float64 {
	t.Helper()
	ch := make(chan prometheus.Metric, 256)
	go func() { s.queries.Collect(ch); close(ch) }()
	out := map[string]float64{}
	for m := range ch {
		var d dto.Metric
		if err := m.Write(&d); err != nil {
			t.Fatal(err)
		}
		l := map[string]string{}
		for _, p := range d.GetLabel() {
			l[p.GetName()] = p.GetValue()
		}
		if v := d.GetCounter().GetValue(); v > 0 {
			out[l["source"]+"/"+l["rcode"]] = v
		}
	}
	return out
}

// TestEveryReplyCounted sends requests the server answers itself with an
// error (refused by the accept policy, unparsable, a bad EDNS version) over
// real UDP and checks that each reply moves exactly one counter, labelled
// with the reply's own rcode, and that silence moves none.
func TestEveryReplyCounted(t *testing.T) {
	s, addr := startServer(t, seededStore(t), nil)
	conn, err := net.Dial("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	good := new(dns.Msg)
	good.SetQuestion("web.default.svc.cluster.local.", dns.TypeA)
	goodWire, _ := good.Pack()
	withHeader := func(edit func(h []byte)) []byte {
		p := append([]byte(nil), goodWire...)
		edit(p)
		return p
	}
	badVers := good.Copy()
	badVers.SetEdns0(1232, false)
	badVers.IsEdns0().SetVersion(1)
	badVersWire, _ := badVers.Pack()
	cases := []struct {
		name, want string // want: "source/rcode", "" for no reply
		pkt        []byte
	}{
		{"short header", "", []byte{1, 2, 3}},
		{"no question", "formerr/FORMERR", withHeader(func(h []byte) { h[5] = 0 })[:12]},
		{"two questions", "formerr/FORMERR", withHeader(func(h []byte) { h[5] = 2 })},
		{"truncated question", "formerr/FORMERR", goodWire[:len(goodWire)-3]},
		{"notify", "formerr/NOTIMP", withHeader(func(h []byte) { h[2] = 4 << 3 })},
		{"update", "formerr/NOTIMP", withHeader(func(h []byte) { h[2] = 5 << 3 })},
		{"status opcode", "formerr/NOTIMP", withHeader(func(h []byte) { h[2] = 2 << 3 })},
		{"EDNS version 1", "formerr/BADVERS", badVersWire},
		{"a good query", "cluster/NOERROR", goodWire},
	}
	buf := make([]byte, 65535)
	for _, c := range cases {
		before := queryCounts(t, s)
		conn.Write(c.pkt)
		conn.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
		_, rerr := conn.Read(buf)
		if (rerr == nil) != (c.want != "") {
			t.Errorf("%s: reply error %v, want a reply: %v", c.name, rerr, c.want != "")
			continue
		}
		// The counter moves after the reply is written: poll to a deadline.
		var moved map[string]float64
		for deadline := time.Now().Add(2 * time.Second); ; time.Sleep(5 * time.Millisecond) {
			moved = map[string]float64{}
			for k, v := range queryCounts(t, s) {
				if d := v - before[k]; d != 0 {
					moved[k] = d
				}
			}
			if len(moved) > 0 || c.want == "" || time.Now().After(deadline) {
				break
			}
		}
		want := map[string]float64{}
		if c.want != "" {
			want[c.want] = 1
		}
		if fmt.Sprint(moved) != fmt.Sprint(want) {
			t.Errorf("%s: counters moved %v, want %v", c.name, moved, want)
		}
	}
}
