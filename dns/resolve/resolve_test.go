package resolve

import (
	"sort"
	"strings"
	"testing"

	"github.com/holdfast-edge/holdfast/dns/store"
	"github.com/miekg/dns"
)

func bp(b bool) *bool { return &b }

// fixture is a small cluster: a ClusterIP service with named ports, a
// headless StatefulSet service with hostnames on two nodes (one endpoint not
// ready), an ExternalName service and a dual-stack service.
func fixture() *store.Snapshot {
	return &store.Snapshot{
		Namespaces: []string{"default", "empty", "prod"},
		Services: []store.Service{
			{Namespace: "default", Name: "web", Type: "ClusterIP", ClusterIPs: []string{"10.96.0.10"},
				Ports: []store.Port{{Name: "http", Protocol: "TCP", Port: 80}, {Name: "dns", Protocol: "UDP", Port: 53}, {Protocol: "TCP", Port: 9000}}},
			{Namespace: "default", Name: "db", Headless: true, Ports: []store.Port{{Name: "pg", Protocol: "TCP", Port: 5432}}},
			{Namespace: "default", Name: "ext", Type: "ExternalName", ExternalName: "example.org"},
			{Namespace: "prod", Name: "dual", ClusterIPs: []string{"10.96.0.20", "fd00::20"}},
		},
		Slices: []store.EndpointSlice{
			{Namespace: "default", Name: "web-abc", Service: "web", AddressType: "IPv4",
				Ports:     []store.Port{{Name: "http", Protocol: "TCP", Port: 8080}},
				Endpoints: []store.Endpoint{{Addresses: []string{"10.244.1.5"}, NodeName: "node1", Ready: bp(true)}}},
			{Namespace: "default", Name: "db-xyz", Service: "db", AddressType: "IPv4",
				Ports: []store.Port{{Name: "pg", Protocol: "TCP", Port: 5432}},
				Endpoints: []store.Endpoint{
					{Addresses: []string{"10.244.1.10"}, Hostname: "db-0", NodeName: "node1", Ready: bp(true)},
					{Addresses: []string{"10.244.2.10"}, Hostname: "db-1", NodeName: "node2", Ready: bp(false)},
					{Addresses: []string{"10.244.3.10"}, Hostname: "db-2", NodeName: "node3", Ready: bp(false), Terminating: bp(true)},
				}},
		},
	}
}

func answers(res Result) []string {
	var out []string
	for _, rr := range res.Answer {
		out = append(out, strings.ReplaceAll(rr.String(), "\t", " "))
	}
	sort.Strings(out)
	return out
}

func TestAnswer(t *testing.T) {
	ix := Build(fixture(), Config{Zone: "cluster.local"})
	cases := []struct {
		name  string
		qtype uint16
		rcode int
		want  []string // answer RRs as text; nil = empty answer
		ours  bool
	}{
		{"web.default.svc.cluster.local.", dns.TypeA, 0, []string{"web.default.svc.cluster.local. 5 IN A 10.96.0.10"}, true},
		{"WEB.Default.svc.cluster.local.", dns.TypeA, 0, []string{"web.default.svc.cluster.local. 5 IN A 10.96.0.10"}, true},
		{"web.default.svc.cluster.local.", dns.TypeAAAA, 0, nil, true}, // NODATA
		{"web.default.svc.cluster.local.", dns.TypeTXT, 0, nil, true},  // NODATA
		{"_http._tcp.web.default.svc.cluster.local.", dns.TypeSRV, 0, []string{"_http._tcp.web.default.svc.cluster.local. 5 IN SRV 0 100 80 web.default.svc.cluster.local."}, true},
		{"_dns._udp.web.default.svc.cluster.local.", dns.TypeSRV, 0, []string{"_dns._udp.web.default.svc.cluster.local. 5 IN SRV 0 100 53 web.default.svc.cluster.local."}, true},
		{"_dns._tcp.web.default.svc.cluster.local.", dns.TypeSRV, 3, nil, true},
		{"_tcp.web.default.svc.cluster.local.", dns.TypeSRV, 3, nil, true}, // not a name, as in CoreDNS
		{"web.default.svc.cluster.local.", dns.TypeSRV, 0, []string{
			"web.default.svc.cluster.local. 5 IN SRV 0 50 53 web.default.svc.cluster.local.",
			"web.default.svc.cluster.local. 5 IN SRV 0 50 80 web.default.svc.cluster.local."}, true},
		{"10-244-1-5.web.default.svc.cluster.local.", dns.TypeA, 0, []string{"10-244-1-5.web.default.svc.cluster.local. 5 IN A 10.244.1.5"}, true},
		{"db.default.svc.cluster.local.", dns.TypeA, 0, []string{"db.default.svc.cluster.local. 5 IN A 10.244.1.10"}, true},
		{"db-0.db.default.svc.cluster.local.", dns.TypeA, 0, []string{"db-0.db.default.svc.cluster.local. 5 IN A 10.244.1.10"}, true},
		{"db-1.db.default.svc.cluster.local.", dns.TypeA, 3, nil, true},
		{"_pg._tcp.db.default.svc.cluster.local.", dns.TypeSRV, 0, []string{"_pg._tcp.db.default.svc.cluster.local. 5 IN SRV 0 100 5432 db-0.db.default.svc.cluster.local."}, true},
		{"ext.default.svc.cluster.local.", dns.TypeA, 0, []string{"ext.default.svc.cluster.local. 5 IN CNAME example.org."}, true},
		{"ext.default.svc.cluster.local.", dns.TypeCNAME, 0, []string{"ext.default.svc.cluster.local. 5 IN CNAME example.org."}, true},
		{"dual.prod.svc.cluster.local.", dns.TypeAAAA, 0, []string{"dual.prod.svc.cluster.local. 5 IN AAAA fd00::20"}, true},
		{"dual.prod.svc.cluster.local.", dns.TypeA, 0, []string{"dual.prod.svc.cluster.local. 5 IN A 10.96.0.20"}, true},
		{"nope.default.svc.cluster.local.", dns.TypeA, 3, nil, true},
		{"default.svc.cluster.local.", dns.TypeA, 0, nil, true}, // namespace exists
		{"nons.svc.cluster.local.", dns.TypeA, 3, nil, true},
		{"empty.svc.cluster.local.", dns.TypeA, 0, nil, true}, // namespace without services exists
		{"svc.cluster.local.", dns.TypeA, 0, nil, true},
		{"cluster.local.", dns.TypeNS, 0, []string{"cluster.local. 5 IN NS ns.dns.cluster.local."}, true},
		{"dns-version.cluster.local.", dns.TypeTXT, 0, []string{"dns-version.cluster.local. 30 IN TXT \"1.1.0\""}, true},
		{"10-244-7-9.default.pod.cluster.local.", dns.TypeA, 0, []string{"10-244-7-9.default.pod.cluster.local. 5 IN A 10.244.7.9"}, true},
		{"10-244-7-999.default.pod.cluster.local.", dns.TypeA, 3, nil, true},
		{"10.0.96.10.in-addr.arpa.", dns.TypePTR, 0, []string{"10.0.96.10.in-addr.arpa. 5 IN PTR web.default.svc.cluster.local."}, true},
		{"10.1.244.10.in-addr.arpa.", dns.TypePTR, 0, []string{"10.1.244.10.in-addr.arpa. 5 IN PTR db-0.db.default.svc.cluster.local."}, true},
		{"0.2.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.d.f.ip6.arpa.", dns.TypePTR, 0, []string{"0.2.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.d.f.ip6.arpa. 5 IN PTR dual.prod.svc.cluster.local."}, true},
		{"1.1.1.1.in-addr.arpa.", dns.TypePTR, 0, nil, false},
		{"example.org.", dns.TypeA, 0, nil, false},
	}
	for _, c := range cases {
		res, ours := ix.Answer(c.name, c.qtype)
		if ours != c.ours {
			t.Errorf("%s %s: ours=%v, want %v", c.name, dns.TypeToString[c.qtype], ours, c.ours)
			continue
		}
		if !ours {
			continue
		}
		if res.Rcode != c.rcode {
			t.Errorf("%s %s: rcode %s, want %s", c.name, dns.TypeToString[c.qtype], dns.RcodeToString[res.Rcode], dns.RcodeToString[c.rcode])
		}
		got := answers(res)
		if strings.Join(got, "|") != strings.Join(c.want, "|") {
			t.Errorf("%s %s:\n got  %q\n want %q", c.name, dns.TypeToString[c.qtype], got, c.want)
		}
		if len(got) == 0 && (len(res.Ns) != 1 || res.Ns[0].Header().Rrtype != dns.TypeSOA) {
			t.Errorf("%s %s: NXDOMAIN/NODATA without SOA in authority: %v", c.name, dns.TypeToString[c.qtype], res.Ns)
		}
	}
}

func TestSRVAdditional(t *testing.T) {
	ix := Build(fixture(), Config{Zone: "cluster.local"})
	res, _ := ix.Answer("_pg._tcp.db.default.svc.cluster.local.", dns.TypeSRV)
	if len(res.Extra) != 1 || res.Extra[0].(*dns.A).A.String() != "10.244.1.10" || res.Extra[0].Header().Name != "db-0.db.default.svc.cluster.local." {
		t.Fatalf("extra = %v", res.Extra)
	}
}

func TestVerdictRetention(t *testing.T) {
	q := func(v map[string]string) []string {
		res, _ := Build(fixture(), Config{Zone: "cluster.local", Verdicts: v}).Answer("db.default.svc.cluster.local.", dns.TypeA)
		return answers(res)
	}
	a := func(ip string) string { return "db.default.svc.cluster.local. 5 IN A " + ip }
	cases := []struct {
		name     string
		verdicts map[string]string
		want     []string
	}{
		{"no source: readiness as is", nil, []string{a("10.244.1.10")}},
		{"node2 alive: not-ready endpoint kept", map[string]string{"node1": Alive, "node2": Alive, "node3": Alive}, []string{a("10.244.1.10"), a("10.244.2.10")}},
		{"node1 dead: ready endpoint dropped", map[string]string{"node1": Dead, "node2": Unknown}, nil},
		{"unknown: readiness", map[string]string{"node1": Unknown, "node2": Unknown}, []string{a("10.244.1.10")}},
		{"terminating never retained", map[string]string{"node3": Alive}, []string{a("10.244.1.10")}},
	}
	for _, c := range cases {
		if got := q(c.verdicts); strings.Join(got, "|") != strings.Join(c.want, "|") {
			t.Errorf("%s: got %q want %q", c.name, got, c.want)
		}
	}
}

func TestEndpointMode(t *testing.T) {
	for _, c := range []struct {
		mode   EndpointMode
		online bool
		want   string
	}{
		{EndpointModeOff, false, "10.96.0.10"},
		{EndpointModeOffline, true, "10.96.0.10"},
		{EndpointModeOffline, false, "10.244.1.5"},
		{EndpointModeAlways, true, "10.244.1.5"},
	} {
		res, _ := Build(fixture(), Config{Zone: "cluster.local", EndpointMode: c.mode, Online: c.online}).Answer("web.default.svc.cluster.local.", dns.TypeA)
		if len(res.Answer) != 1 || res.Answer[0].(*dns.A).A.String() != c.want {
			t.Errorf("mode %s online %v: %v, want %s", c.mode, c.online, res.Answer, c.want)
		}
	}
	if _, err := ParseEndpointMode("sometimes"); err == nil || !strings.Contains(err.Error(), "sometimes") {
		t.Fatalf("ParseEndpointMode(sometimes) = %v", err)
	}
}

func TestSharedSlicesAreClipped(t *testing.T) {
	ix := Build(fixture(), Config{Zone: "cluster.local"})
	res, _ := ix.Answer("web.default.svc.cluster.local.", dns.TypeA)
	_ = append(res.Answer, &dns.A{})
	res2, _ := ix.Answer("web.default.svc.cluster.local.", dns.TypeA)
	if len(res2.Answer) != 1 || cap(res.Answer) != len(res.Answer) {
		t.Fatalf("index slices not clipped: len %d cap %d", len(res.Answer), cap(res.Answer))
	}
}

func FuzzAnswer(f *testing.F) {
	ix := Build(fixture(), Config{Zone: "cluster.local", Verdicts: map[string]string{"node2": Alive}})
	for _, s := range []string{"web.default.svc.cluster.local.", "1-2-3-4.x.pod.cluster.local.", "10.0.96.10.in-addr.arpa.", "a..b.cluster.local.", "-.pod.cluster.local."} {
		f.Add(s, uint16(dns.TypeA))
	}
	f.Fuzz(func(t *testing.T, name string, qtype uint16) {
		res, ours := ix.Answer(name, qtype)
		if !ours {
			return
		}
		m := new(dns.Msg)
		m.Rcode = res.Rcode
		m.Answer, m.Ns, m.Extra = res.Answer, res.Ns, res.Extra
		if _, err := m.Pack(); err != nil && len(name) < 256 && func() bool { _, ok := dns.IsDomainName(name); return ok }() {
			t.Fatalf("answer for %q does not pack: %v", name, err)
		}
	})
}
