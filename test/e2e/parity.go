//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/miekg/dns"
	corev1 "k8s.io/api/core/v1"

	"github.com/holdfast-edge/holdfast/test/harness"
)

// The DNS parity table: the same questions to holdfast DNS (on a node, fed
// by its informers and its health verdicts) and to CoreDNS's kubernetes
// plugin (in the cloud, the same apiserver), comparing rcode, AA and every
// section. dns/parity_test.go pins the resolver to CoreDNS over a fake
// apiserver; this is the same comparison against the real one.

// CoreDNSPort is where the reference CoreDNS listens in the cloud netns.
const CoreDNSPort = 1053

// StartCoreDNS runs CoreDNS in the cloud netns on the admin kubeconfig:
// the kubernetes plugin with pods insecure and a cache capping TTLs at 30 s
// as kubeadm deploys it, and the plugin's default answer TTL (5 s, which is
// also holdfast's --ttl default).
func (c *Cloud) StartCoreDNS() error {
	conf := filepath.Join(c.Node.EtcDir, "Corefile")
	corefile := fmt.Sprintf(`.:%d {
    bind 127.0.0.1
    cache 30
    kubernetes cluster.local in-addr.arpa ip6.arpa {
        kubeconfig %s e2e
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
        ttl 5
    }
}
`, CoreDNSPort, c.Admin)
	if err := os.WriteFile(conf, []byte(corefile), 0o644); err != nil {
		return err
	}
	_, err := c.Node.Start("coredns", c.Bins.CoreDNS, "-conf", conf)
	return err
}

// ask sends one question over UDP from inside a netns.
func ask(ctx context.Context, nsPath, addr, name string, qtype uint16) (*dns.Msg, error) {
	conn, err := harness.DialIn(nsPath)(ctx, "udp", addr)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	co := &dns.Conn{Conn: conn}
	req := new(dns.Msg)
	req.SetQuestion(dns.Fqdn(name), qtype)
	conn.SetDeadline(time.Now().Add(2 * time.Second))
	if err := co.WriteMsg(req); err != nil {
		return nil, err
	}
	return co.ReadMsg()
}

// render is a message without its id and TTL-independent where the two
// servers legitimately differ (SOA serial).
func render(m *dns.Msg) string {
	sec := func(rrs []dns.RR) string {
		var out []string
		for _, rr := range rrs {
			switch rr := rr.(type) {
			case *dns.OPT:
				continue
			case *dns.SOA:
				out = append(out, fmt.Sprintf("SOA(%s %s ttl=%d min=%d)", rr.Ns, rr.Mbox, rr.Hdr.Ttl, rr.Minttl))
			default:
				out = append(out, strings.ReplaceAll(rr.String(), "\t", " "))
			}
		}
		sort.Strings(out)
		return strings.Join(out, " | ")
	}
	return fmt.Sprintf("%s aa=%v ans[%s] ns[%s] extra[%s]", dns.RcodeToString[m.Rcode], m.Authoritative, sec(m.Answer), sec(m.Ns), sec(m.Extra))
}

type question struct {
	name  string
	qtype uint16
}

// parityQuestions are built from the live objects: the ClusterIP Service
// web, the headless db and its pods, their reverse names, names that do
// not exist, and the zone's own records.
func parityQuestions(clusterIP string, db []corev1.Pod) []question {
	qs := []question{
		{"web.default.svc.cluster.local.", dns.TypeA},
		{"web.default.svc.cluster.local.", dns.TypeAAAA},
		{"web.default.svc.cluster.local.", dns.TypeSRV},
		{"_http._tcp.web.default.svc.cluster.local.", dns.TypeSRV},
		{"db.default.svc.cluster.local.", dns.TypeA},
		{"db.default.svc.cluster.local.", dns.TypeSRV},
		{"_http._tcp.db.default.svc.cluster.local.", dns.TypeSRV},
		{"kubernetes.default.svc.cluster.local.", dns.TypeA},
		{"_https._tcp.kubernetes.default.svc.cluster.local.", dns.TypeSRV},
		{"nope.default.svc.cluster.local.", dns.TypeA},
		{"web.nons.svc.cluster.local.", dns.TypeA},
		{"default.svc.cluster.local.", dns.TypeA},
		{"holdfast-system.svc.cluster.local.", dns.TypeA},
		{"cluster.local.", dns.TypeSOA},
		{"dns-version.cluster.local.", dns.TypeTXT},
		{"10-244-1-5.default.pod.cluster.local.", dns.TypeA},
	}
	if rev, err := dns.ReverseAddr(clusterIP); err == nil {
		qs = append(qs, question{rev, dns.TypePTR})
	}
	for _, p := range db {
		qs = append(qs, question{p.Name + ".db.default.svc.cluster.local.", dns.TypeA})
		if rev, err := dns.ReverseAddr(p.Status.PodIP); err == nil {
			qs = append(qs, question{rev, dns.TypePTR})
		}
		qs = append(qs, question{strings.ReplaceAll(p.Status.PodIP, ".", "-") + ".db.default.svc.cluster.local.", dns.TypeA})
	}
	return qs
}

// parityKnownDiffs are the accepted differences (dns/README.md).
var parityKnownDiffs = map[string]string{}

// dnsParity asks both servers every question and returns the table (one
// row each) and the unexpected differences.
func (s *site) dnsParity(ctx context.Context, n *Node, qs []question) (table string, same int, diffs []string) {
	var b strings.Builder
	b.WriteString("| question | holdfast (" + n.Name + ") vs CoreDNS (cloud) |\n|---|---|\n")
	hfAddr := net.JoinHostPort(ClusterDNS, "53")
	cdAddr := fmt.Sprintf("127.0.0.1:%d", CoreDNSPort)
	for _, q := range qs {
		key := q.name + " " + dns.TypeToString[q.qtype]
		var got [2]string
		for i, srv := range []struct{ ns, addr string }{{n.NSPath, hfAddr}, {s.cloud.Node.NSPath, cdAddr}} {
			m, err := ask(ctx, srv.ns, srv.addr, q.name, q.qtype)
			if err != nil {
				got[i] = "error: " + err.Error()
				continue
			}
			got[i] = render(m)
		}
		if got[0] == got[1] {
			same++
			fmt.Fprintf(&b, "| %s | same: %s |\n", key, got[0])
			continue
		}
		fmt.Fprintf(&b, "| %s | DIFF holdfast: %s / coredns: %s |\n", key, got[0], got[1])
		if _, ok := parityKnownDiffs[key]; !ok {
			diffs = append(diffs, fmt.Sprintf("%s: holdfast %s; coredns %s", key, got[0], got[1]))
		}
	}
	return b.String(), same, diffs
}

// waitCoreDNS waits until CoreDNS answers the kubernetes Service (its
// informers synced).
func (s *site) waitCoreDNS(ctx context.Context) error {
	return harness.Eventually(30*time.Second, func() error {
		m, err := ask(ctx, s.cloud.Node.NSPath, fmt.Sprintf("127.0.0.1:%d", CoreDNSPort), "kubernetes.default.svc.cluster.local", dns.TypeA)
		if err != nil {
			return err
		}
		if m.Rcode != dns.RcodeSuccess || len(m.Answer) == 0 {
			return fmt.Errorf("coredns: %s", render(m))
		}
		return nil
	})
}
