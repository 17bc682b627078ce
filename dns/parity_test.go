package dns_test

import (
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// parityCluster holds every record kind: ClusterIP with named TCP and UDP
// ports, a headless StatefulSet-style service (hostnames, one endpoint not
// ready, one without hostname), ExternalName, dual-stack, and an empty
// namespace.
func parityCluster() *cluster {
	c := &cluster{}
	tru, fls := true, false
	str := func(s string) *string { return &s }
	i32 := func(i int32) *int32 { return &i }
	tcp, udp := corev1.ProtocolTCP, corev1.ProtocolUDP
	for _, ns := range []string{"default", "prod", "empty"} {
		c.namespaces = append(c.namespaces, corev1.Namespace{TypeMeta: metav1.TypeMeta{Kind: "Namespace", APIVersion: "v1"}, ObjectMeta: metav1.ObjectMeta{Name: ns}})
	}
	svc := func(ns, name string, spec corev1.ServiceSpec) {
		c.services = append(c.services, corev1.Service{TypeMeta: metav1.TypeMeta{Kind: "Service", APIVersion: "v1"}, ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, ResourceVersion: "1"}, Spec: spec})
	}
	slice := func(ns, name, service string, af discoveryv1.AddressType, ports []discoveryv1.EndpointPort, eps ...discoveryv1.Endpoint) {
		c.slices = append(c.slices, discoveryv1.EndpointSlice{TypeMeta: metav1.TypeMeta{Kind: "EndpointSlice", APIVersion: "discovery.k8s.io/v1"},
			ObjectMeta:  metav1.ObjectMeta{Namespace: ns, Name: name, ResourceVersion: "1", Labels: map[string]string{discoveryv1.LabelServiceName: service}},
			AddressType: af, Ports: ports, Endpoints: eps})
	}
	ep := func(ip, host, node string, ready bool) discoveryv1.Endpoint {
		e := discoveryv1.Endpoint{Addresses: []string{ip}, NodeName: str(node), Conditions: discoveryv1.EndpointConditions{Ready: &tru}}
		if !ready {
			e.Conditions.Ready = &fls
		}
		if host != "" {
			e.Hostname = str(host)
		}
		return e
	}
	svc("default", "web", corev1.ServiceSpec{Type: "ClusterIP", ClusterIP: "10.96.0.10", ClusterIPs: []string{"10.96.0.10"},
		Ports: []corev1.ServicePort{{Name: "http", Protocol: tcp, Port: 80}, {Name: "dns", Protocol: udp, Port: 53}}})
	slice("default", "web-1", "web", "IPv4", []discoveryv1.EndpointPort{{Name: str("http"), Protocol: &tcp, Port: i32(8080)}, {Name: str("dns"), Protocol: &udp, Port: i32(5353)}},
		ep("10.244.1.5", "", "node1", true), ep("10.244.2.6", "", "node2", false))
	svc("default", "db", corev1.ServiceSpec{ClusterIP: "None", ClusterIPs: []string{"None"}, Ports: []corev1.ServicePort{{Name: "pg", Protocol: tcp, Port: 5432}}})
	slice("default", "db-1", "db", "IPv4", []discoveryv1.EndpointPort{{Name: str("pg"), Protocol: &tcp, Port: i32(5432)}},
		ep("10.244.1.10", "db-0", "node1", true), ep("10.244.2.10", "db-1", "node2", false), ep("10.244.1.11", "", "node1", true))
	svc("default", "ext", corev1.ServiceSpec{Type: "ExternalName", ExternalName: "db.example.org"})
	svc("prod", "dual", corev1.ServiceSpec{Type: "ClusterIP", ClusterIP: "10.96.0.20", ClusterIPs: []string{"10.96.0.20", "fd00::20"}})
	return c
}

var parityQuestions = []question{
	{"web.default.svc.cluster.local.", dns.TypeA},
	{"web.default.svc.cluster.local.", dns.TypeAAAA},
	{"web.default.svc.cluster.local.", dns.TypeTXT},
	{"web.default.svc.cluster.local.", dns.TypeSRV},
	{"WeB.default.svc.cluster.local.", dns.TypeA},
	{"_http._tcp.web.default.svc.cluster.local.", dns.TypeSRV},
	{"_dns._udp.web.default.svc.cluster.local.", dns.TypeSRV},
	{"_dns._tcp.web.default.svc.cluster.local.", dns.TypeSRV},
	{"_tcp.web.default.svc.cluster.local.", dns.TypeSRV},
	{"10-244-1-5.web.default.svc.cluster.local.", dns.TypeA},
	{"10-244-2-6.web.default.svc.cluster.local.", dns.TypeA},
	{"db.default.svc.cluster.local.", dns.TypeA},
	{"db.default.svc.cluster.local.", dns.TypeSRV},
	{"_pg._tcp.db.default.svc.cluster.local.", dns.TypeSRV},
	{"db-0.db.default.svc.cluster.local.", dns.TypeA},
	{"db-1.db.default.svc.cluster.local.", dns.TypeA},
	{"10-244-1-11.db.default.svc.cluster.local.", dns.TypeA},
	{"ext.default.svc.cluster.local.", dns.TypeA},
	{"ext.default.svc.cluster.local.", dns.TypeCNAME},
	{"dual.prod.svc.cluster.local.", dns.TypeA},
	{"dual.prod.svc.cluster.local.", dns.TypeAAAA},
	{"nope.default.svc.cluster.local.", dns.TypeA},
	{"default.svc.cluster.local.", dns.TypeA},
	{"empty.svc.cluster.local.", dns.TypeA},
	{"nons.svc.cluster.local.", dns.TypeA},
	{"svc.cluster.local.", dns.TypeA},
	{"cluster.local.", dns.TypeSOA},
	{"cluster.local.", dns.TypeNS},
	{"cluster.local.", dns.TypeA},
	{"dns-version.cluster.local.", dns.TypeTXT},
	{"10-244-7-9.default.pod.cluster.local.", dns.TypeA},
	{"a.b.c.default.svc.cluster.local.", dns.TypeA},
	{"10.0.96.10.in-addr.arpa.", dns.TypePTR},
	{"10.1.244.10.in-addr.arpa.", dns.TypePTR},
	{"5.1.244.10.in-addr.arpa.", dns.TypePTR},
	{"0.2.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.d.f.ip6.arpa.", dns.TypePTR},
}

// knownDiffs are differences from CoreDNS's kubernetes plugin that are
// deliberate or accepted; each is justified in dns/README.md ("Differences
// from CoreDNS").
var knownDiffs = map[string]string{
	"cluster.local. NS": "holdfast names itself (its listen address) as the zone's server; CoreDNS answers ns.dns with the kube-dns Service's addresses, and here (no kube-dns Service) with NODATA",
}

func renderFull(m *dns.Msg) string {
	sec := func(rrs []dns.RR) string {
		var out []string
		for _, rr := range rrs {
			if rr.Header().Rrtype == dns.TypeOPT {
				continue
			}
			if soa, ok := rr.(*dns.SOA); ok {
				out = append(out, fmt.Sprintf("SOA(%s %s ttl=%d min=%d)", soa.Ns, soa.Mbox, soa.Hdr.Ttl, soa.Minttl))
				continue
			}
			out = append(out, strings.ReplaceAll(rr.String(), "\t", " "))
		}
		sort.Strings(out)
		return strings.Join(out, " | ")
	}
	return fmt.Sprintf("%s aa=%v ans[%s] ns[%s] extra[%s]", dns.RcodeToString[m.Rcode], m.Authoritative, sec(m.Answer), sec(m.Ns), sec(m.Extra))
}

// TestParityWithCoreDNS asks holdfastd dns and CoreDNS v1.11.3 (kubernetes
// plugin, fed by fakeAPI with the same objects) the same questions and
// compares rcode, AA and all three sections. This is not the parity table
// against a real kube-apiserver (that belongs to the full-cluster e2e); it
// pins the resolver's semantics to CoreDNS's.
func TestParityWithCoreDNS(t *testing.T) {
	hf, cd := benchBinaries(t)
	c := parityCluster()
	api := fakeAPI(t, c)
	hport, cport := freePort(t), freePort(t)
	hp := startHoldfast(t, hf, t.TempDir(), c.seedFile(t), "http://127.0.0.1:1", hport)
	cp := startCoreDNS(t, cd, api, cport)
	haddr, caddr := fmt.Sprintf("127.0.0.1:%d", hport), fmt.Sprintf("127.0.0.1:%d", cport)
	probe := question{"web.default.svc.cluster.local.", dns.TypeA}
	want := "NOERROR web.default.svc.cluster.local. 5 IN A 10.96.0.10"
	if _, ok := waitAnswer(haddr, probe, want, time.Now(), 10*time.Second); !ok {
		t.Fatalf("holdfastd never answered:\n%s", hp.logs())
	}
	if _, ok := waitAnswer(caddr, probe, want, time.Now(), 20*time.Second); !ok {
		t.Fatalf("coredns never answered:\n%s", cp.logs())
	}
	var table strings.Builder
	same := 0
	for _, q := range parityQuestions {
		var got [2]string
		for i, addr := range []string{haddr, caddr} {
			cl := &dns.Client{Net: "udp", Timeout: 2 * time.Second}
			req := new(dns.Msg)
			req.SetQuestion(q.name, q.qtype)
			m, _, err := cl.Exchange(req, addr)
			if err != nil {
				t.Fatalf("%s %s: %v", q.name, dns.TypeToString[q.qtype], err)
			}
			got[i] = renderFull(m)
		}
		key := q.name + " " + dns.TypeToString[q.qtype]
		if got[0] == got[1] {
			same++
			fmt.Fprintf(&table, "| %s | same | %s |\n", key, got[0])
			continue
		}
		fmt.Fprintf(&table, "| %s | DIFF | holdfast: %s<br>coredns: %s |\n", key, got[0], got[1])
		if _, ok := knownDiffs[key]; !ok {
			t.Errorf("%s differs:\n holdfast %s\n coredns  %s", key, got[0], got[1])
		}
	}
	t.Logf("parity: %d of %d questions answered identically\n%s", same, len(parityQuestions), table.String())
}
