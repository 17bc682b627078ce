// Package resolve turns the DNS snapshot (dns/store) into answers: it builds
// an immutable index of every cluster name and reverse name once per change,
// and answers questions from it with no allocation beyond the reply. It
// decides which endpoints are in answers (readiness, peers' verdicts,
// endpoint mode) and what NXDOMAIN and NODATA mean in the cluster zone.
//
// It is pure: no sockets, no files, no clocks. It never forwards (dns/forward
// does), never reads the apiserver or the verdict source (dns/watch,
// dns/verdicts feed it through Config).
package resolve

import (
	"fmt"
	"net"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/holdfast-edge/holdfast/dns/store"
	"github.com/miekg/dns"
)

// Defaults as CoreDNS's kubernetes plugin has them.
const (
	DefaultTTL = 5 // kubernetes plugin `ttl` default
	// Version is the answer to dns-version.<zone> TXT (the Kubernetes DNS
	// specification version).
	SpecVersion = "1.1.0"
)

// EndpointMode says when a ClusterIP name is answered with its endpoint IPs.
type EndpointMode string

const (
	EndpointModeOff     EndpointMode = "off"     // always the ClusterIP
	EndpointModeOffline EndpointMode = "offline" // endpoint IPs while the apiserver is unreachable
	EndpointModeAlways  EndpointMode = "always"  // always endpoint IPs
)

// ParseEndpointMode checks an --endpoint-mode value.
func ParseEndpointMode(s string) (EndpointMode, error) {
	switch m := EndpointMode(s); m {
	case EndpointModeOff, EndpointModeOffline, EndpointModeAlways:
		return m, nil
	}
	return "", fmt.Errorf("endpoint mode %q: want off, offline or always", s)
}

// Verdict values from the health daemon.
const (
	Alive   = "alive"
	Dead    = "dead"
	Unknown = "unknown"
)

// Config is everything besides the snapshot that shapes answers.
type Config struct {
	Zone         string // cluster domain, e.g. "cluster.local"
	TTL          uint32 // answer TTL; 0 means DefaultTTL
	EndpointMode EndpointMode
	// Online is false while the apiserver is unreachable (EndpointModeOffline).
	Online bool
	// Verdicts maps node name to alive/dead/unknown. Nil means no verdict
	// source: the snapshot's readiness is used as is.
	Verdicts map[string]string
	// NSAddrs are the addresses answered for ns.dns.<zone> (this server).
	NSAddrs []net.IP
}

// Result is an answer: an rcode and the three sections. Slices are shared
// and read-only; callers must not append to or modify them.
type Result struct {
	Rcode  int
	Answer []dns.RR
	Ns     []dns.RR
	Extra  []dns.RR
}

// entry is one name. Maps stay nil until a record is added: most names
// hold one type, and the index is built on the start-up path.
type entry struct {
	rrs   map[uint16][]dns.RR
	extra map[uint16][]dns.RR
	cname dns.RR
}

func (e *entry) set(t uint16, rrs []dns.RR) {
	if e.rrs == nil {
		e.rrs = make(map[uint16][]dns.RR, 1)
	}
	e.rrs[t] = rrs
}

func (e *entry) add(t uint16, rr dns.RR) {
	if e.rrs == nil {
		e.rrs = make(map[uint16][]dns.RR, 1)
	}
	e.rrs[t] = append(e.rrs[t], rr)
}

func (e *entry) addExtra(t uint16, rrs ...dns.RR) {
	if len(rrs) == 0 {
		return
	}
	if e.extra == nil {
		e.extra = make(map[uint16][]dns.RR, 1)
	}
	e.extra[t] = append(e.extra[t], rrs...)
}

// Index is an immutable answer index for one snapshot and config.
type Index struct {
	zone     string // lower-case FQDN with trailing dot
	podZone  string // "pod." + zone
	ttl      uint32
	names    map[string]*entry
	ptr      map[string][]dns.RR
	soa      []dns.RR
	Services int
	Records  int
}

// Zone is the cluster zone as an FQDN.
func (ix *Index) Zone() string { return ix.zone }

// Build indexes a snapshot.
func Build(snap *store.Snapshot, cfg Config) *Index {
	ix := newIndex(snap, cfg)
	if snap == nil {
		ix.clip()
		return ix
	}
	slicesBySvc := map[string][]store.EndpointSlice{}
	for _, sl := range snap.Slices {
		if sl.Service == "" {
			continue
		}
		k := sl.Namespace + "/" + sl.Service
		slicesBySvc[k] = append(slicesBySvc[k], sl)
	}
	for _, ns := range snap.Namespaces {
		if ns = strings.ToLower(ns); validLabel(ns) {
			ix.node(ns + ".svc." + ix.zone)
		}
	}
	useEndpoints := cfg.EndpointMode == EndpointModeAlways || (cfg.EndpointMode == EndpointModeOffline && !cfg.Online)
	for _, svc := range snap.Services {
		ix.addService(svc, slicesBySvc[svc.Namespace+"/"+svc.Name], cfg.Verdicts, useEndpoints)
	}
	ix.clip()
	return ix
}

// newIndex is the index of the zone's fixed names: the apex with its SOA
// and NS, svc and pod, dns-version, and the name server's own name.
func newIndex(snap *store.Snapshot, cfg Config) *Index {
	zone := dns.CanonicalName(cfg.Zone)
	ttl := cfg.TTL
	if ttl == 0 {
		ttl = DefaultTTL
	}
	hint := 16
	if snap != nil {
		hint += 6*len(snap.Services) + 2*len(snap.Slices)
	}
	ix := &Index{zone: zone, podZone: "pod." + zone, ttl: ttl, names: make(map[string]*entry, hint), ptr: make(map[string][]dns.RR, hint/2)}
	var serial uint32
	if snap != nil && !snap.UpdatedAt.IsZero() {
		serial = uint32(snap.UpdatedAt.Unix())
	}
	ix.soa = []dns.RR{&dns.SOA{Hdr: hdr(zone, dns.TypeSOA, ttl), Ns: "ns.dns." + zone, Mbox: "hostmaster." + zone,
		Serial: serial, Refresh: 7200, Retry: 1800, Expire: 86400, Minttl: ttl}}
	apex := ix.node(zone)
	apex.set(dns.TypeSOA, ix.soa)
	apex.set(dns.TypeNS, []dns.RR{&dns.NS{Hdr: hdr(zone, dns.TypeNS, ttl), Ns: "ns.dns." + zone}})
	ix.node("svc." + zone)
	ix.node(ix.podZone)
	// CoreDNS gives this record TTL 28800, which its cache (30 s in the
	// standard Corefile) caps: answer what clients see from CoreDNS.
	ix.node("dns-version."+zone).set(dns.TypeTXT, []dns.RR{&dns.TXT{Hdr: hdr("dns-version."+zone, dns.TypeTXT, 30), Txt: []string{SpecVersion}}})
	if len(cfg.NSAddrs) > 0 {
		ix.node("dns." + zone)
		ix.addAddrs("ns.dns."+zone, cfg.NSAddrs)
		apex.addExtra(dns.TypeNS, ix.addrRRs("ns.dns."+zone, cfg.NSAddrs)...)
	}
	return ix
}

// addService adds a Service's names: its A/AAAA (ClusterIPs, or ready
// endpoint IPs when headless or useEndpoints), its endpoints' names, PTRs
// and SRV records; an ExternalName Service is a CNAME.
func (ix *Index) addService(svc store.Service, slices []store.EndpointSlice, verdicts map[string]string, useEndpoints bool) {
	ns, name := strings.ToLower(svc.Namespace), strings.ToLower(svc.Name)
	if !validLabel(ns) || !validLabel(name) {
		return
	}
	ix.Services++
	nsName := ns + ".svc." + ix.zone
	ix.node(nsName)
	svcName := name + "." + nsName
	if svc.Type == "ExternalName" {
		ix.addExternalName(svc, svcName)
		return
	}
	eps := readyEndpoints(slices, verdicts)
	// Endpoint names (hostname or dashed IP) and PTRs for endpoint IPs.
	for _, ep := range eps {
		epName := ep.label + "." + svcName
		ix.addAddrs(epName, []net.IP{ep.ip})
		ix.addPTR(ep.ip, epName)
	}
	addrs := ix.serviceAddrs(svc, svcName, eps, useEndpoints)
	ix.node(svcName)
	ix.addAddrs(svcName, addrs)
	targets := srvTargets(svc, svcName, eps, addrs)
	for _, p := range svc.Ports {
		if p.Name != "" {
			ix.addSRV(svcName, p, targets)
		}
	}
}

// addExternalName answers an ExternalName Service with a CNAME to its
// target (and SRV records pointing at the target); an invalid target adds
// nothing.
func (ix *Index) addExternalName(svc store.Service, svcName string) {
	target := dns.Fqdn(strings.ToLower(svc.ExternalName))
	if _, ok := dns.IsDomainName(target); !ok || svc.ExternalName == "" {
		return
	}
	e := ix.node(svcName)
	e.cname = &dns.CNAME{Hdr: hdr(svcName, dns.TypeCNAME, ix.ttl), Target: target}
	e.set(dns.TypeCNAME, []dns.RR{e.cname})
	for _, p := range svc.Ports {
		ix.addSRV(svcName, p, []srvTarget{{name: target}})
	}
}

// serviceAddrs is what the Service name answers: the ready endpoint IPs of
// a headless Service; else its ClusterIPs (each with a PTR), replaced by
// the ready endpoint IPs when useEndpoints and there are any.
func (ix *Index) serviceAddrs(svc store.Service, svcName string, eps []endpointAddr, useEndpoints bool) []net.IP {
	var addrs []net.IP
	if svc.Headless {
		for _, ep := range eps {
			addrs = append(addrs, ep.ip)
		}
		return addrs
	}
	for _, s := range svc.ClusterIPs {
		if ip := net.ParseIP(s); ip != nil {
			addrs = append(addrs, ip)
			ix.addPTR(ip, svcName)
		}
	}
	if useEndpoints && len(eps) > 0 {
		addrs = addrs[:0]
		for _, ep := range eps {
			addrs = append(addrs, ep.ip)
		}
	}
	return addrs
}

// srvTargets: a headless Service's SRV records point at each endpoint's
// name, another's at the Service name.
func srvTargets(svc store.Service, svcName string, eps []endpointAddr, addrs []net.IP) []srvTarget {
	var targets []srvTarget
	if svc.Headless {
		for _, ep := range eps {
			targets = append(targets, srvTarget{name: ep.label + "." + svcName, ip: ep.ip, ports: ep.ports})
		}
	} else if len(addrs) > 0 {
		targets = []srvTarget{{name: svcName, ips: addrs}}
	}
	return targets
}

type endpointAddr struct {
	label string
	ip    net.IP
	ports []store.Port
}

// Include says whether an endpoint is answered: endpoints on nodes voted
// alive stay even when not ready (unless terminating), endpoints on nodes
// voted dead are dropped, and otherwise (no verdict source, no verdict for
// the node, or "unknown") the ready condition decides.
func Include(ep store.Endpoint, verdicts map[string]string) bool {
	if verdicts != nil && ep.NodeName != "" {
		switch verdicts[ep.NodeName] {
		case Alive:
			return !ep.IsTerminating() || ep.IsReady()
		case Dead:
			return false
		}
	}
	return ep.IsReady()
}

func readyEndpoints(sls []store.EndpointSlice, verdicts map[string]string) []endpointAddr {
	var out []endpointAddr
	seen := map[string]bool{}
	for _, sl := range sls {
		if sl.AddressType != "IPv4" && sl.AddressType != "IPv6" {
			continue
		}
		for _, ep := range sl.Endpoints {
			if !Include(ep, verdicts) {
				continue
			}
			for _, a := range ep.Addresses {
				ip := net.ParseIP(a)
				if ip == nil || seen[ip.String()] {
					continue
				}
				seen[ip.String()] = true
				label := strings.ToLower(ep.Hostname)
				if label == "" || !validLabel(label) {
					label = dashed(ip)
				}
				out = append(out, endpointAddr{label: label, ip: ip, ports: sl.Ports})
			}
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].label < out[j].label })
	return out
}

// dashed is the CoreDNS endpoint name of an IP: 10-244-1-5, or for IPv6 the
// expanded address with dashes.
func dashed(ip net.IP) string {
	if v4 := ip.To4(); v4 != nil {
		return strings.ReplaceAll(v4.String(), ".", "-")
	}
	var b strings.Builder
	for i := 0; i < 16; i += 2 {
		if i > 0 {
			b.WriteByte('-')
		}
		fmt.Fprintf(&b, "%x", uint16(ip[i])<<8|uint16(ip[i+1]))
	}
	return b.String()
}

type srvTarget struct {
	name  string
	ip    net.IP   // headless: one endpoint
	ips   []net.IP // ClusterIP: the service addresses
	ports []store.Port
}

func (ix *Index) addSRV(svcName string, p store.Port, targets []srvTarget) {
	if p.Name == "" || !validLabel(strings.ToLower(p.Name)) {
		return
	}
	proto := strings.ToLower(p.Protocol)
	if proto == "" {
		proto = "tcp"
	}
	protoName := "_" + proto + "." + svcName
	portName := "_" + strings.ToLower(p.Name) + "." + protoName
	ix.node(protoName)
	pe := ix.node(portName)
	se := ix.node(svcName)
	if len(targets) == 0 {
		return
	}
	for _, t := range targets {
		port := uint16(p.Port)
		// Headless: the endpoint's port of the same name (targetPort).
		for _, ep := range t.ports {
			if ep.Name == p.Name && strings.EqualFold(ep.Protocol, p.Protocol) {
				port = uint16(ep.Port)
			}
		}
		srvAt := func(owner string) dns.RR {
			return &dns.SRV{Hdr: hdr(owner, dns.TypeSRV, ix.ttl), Priority: 0, Weight: 100, Port: port, Target: t.name}
		}
		pe.add(dns.TypeSRV, srvAt(portName))
		se.add(dns.TypeSRV, srvAt(svcName))
		var extra []dns.RR
		if t.ip != nil {
			extra = ix.addrRRs(t.name, []net.IP{t.ip})
		} else if len(t.ips) > 0 {
			extra = ix.addrRRs(t.name, t.ips)
		}
		pe.addExtra(dns.TypeSRV, extra...)
		se.addExtra(dns.TypeSRV, extra...)
	}
}

func (ix *Index) addAddrs(name string, ips []net.IP) {
	e := ix.node(name)
	for _, rr := range ix.addrRRs(name, ips) {
		t := rr.Header().Rrtype
		e.add(t, rr)
	}
}

func (ix *Index) addrRRs(name string, ips []net.IP) []dns.RR {
	var out []dns.RR
	for _, ip := range ips {
		if v4 := ip.To4(); v4 != nil {
			out = append(out, &dns.A{Hdr: hdr(name, dns.TypeA, ix.ttl), A: v4})
		} else {
			out = append(out, &dns.AAAA{Hdr: hdr(name, dns.TypeAAAA, ix.ttl), AAAA: ip})
		}
	}
	return out
}

func (ix *Index) addPTR(ip net.IP, target string) {
	rev, err := dns.ReverseAddr(ip.String())
	if err != nil {
		return
	}
	for _, rr := range ix.ptr[rev] {
		if rr.(*dns.PTR).Ptr == target {
			return
		}
	}
	ix.ptr[rev] = append(ix.ptr[rev], &dns.PTR{Hdr: hdr(rev, dns.TypePTR, ix.ttl), Ptr: target})
}

// node returns the entry for name, creating it and every empty
// non-terminal between it and the zone.
func (ix *Index) node(name string) *entry {
	if e, ok := ix.names[name]; ok {
		return e
	}
	e := &entry{}
	ix.names[name] = e
	if name != ix.zone && strings.HasSuffix(name, "."+ix.zone) {
		if i := strings.IndexByte(name, '.'); i >= 0 {
			ix.node(name[i+1:])
		}
	}
	return e
}

// clip makes every shared slice full (len == cap) so an append by a caller
// can never write into the index.
func (ix *Index) clip() {
	for name, e := range ix.names {
		// Like CoreDNS, "_proto.svc..." (and a port name with no target)
		// is not a name: NXDOMAIN, not NODATA.
		if strings.HasPrefix(name, "_") && len(e.rrs) == 0 {
			delete(ix.names, name)
			continue
		}
		// SRV weights split 100 over all records of the owner, as CoreDNS.
		if srvs := e.rrs[dns.TypeSRV]; len(srvs) > 0 {
			for _, rr := range srvs {
				rr.(*dns.SRV).Weight = uint16(100 / len(srvs))
			}
		}
		for t, rrs := range e.extra {
			e.extra[t] = dedupe(rrs)
		}
		for t, rrs := range e.rrs {
			e.rrs[t] = slices.Clip(rrs)
			ix.Records += len(rrs)
		}
		for t, rrs := range e.extra {
			e.extra[t] = slices.Clip(rrs)
		}
	}
	for k, rrs := range ix.ptr {
		ix.ptr[k] = slices.Clip(rrs)
		ix.Records += len(rrs)
	}
	ix.soa = slices.Clip(ix.soa)
}

func dedupe(rrs []dns.RR) []dns.RR {
	if len(rrs) < 2 {
		return rrs
	}
	seen := make(map[string]bool, len(rrs))
	out := rrs[:0]
	for _, rr := range rrs {
		var k string
		switch r := rr.(type) {
		case *dns.A:
			k = r.Hdr.Name + "/A/" + string(r.A)
		case *dns.AAAA:
			k = r.Hdr.Name + "/AAAA/" + string(r.AAAA)
		default:
			k = rr.String()
		}
		if !seen[k] {
			seen[k] = true
			out = append(out, rr)
		}
	}
	return out
}

func hdr(name string, t uint16, ttl uint32) dns.RR_Header {
	return dns.RR_Header{Name: name, Rrtype: t, Class: dns.ClassINET, Ttl: ttl}
}

func validLabel(s string) bool {
	if s == "" || len(s) > 63 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

// InZone reports whether a lower-case FQDN is in the cluster zone.
func (ix *Index) InZone(name string) bool {
	return name == ix.zone || strings.HasSuffix(name, "."+ix.zone)
}

// Answer answers qname/qtype. ours is false for names the cluster does not
// own: outside the zone, or a reverse name that is no Service or endpoint IP
// (the caller forwards those). Within the zone it returns NOERROR with
// records, NODATA (NOERROR, no answer, SOA) for a name that exists without
// that type, or NXDOMAIN with the SOA. Like CoreDNS, answers carry the
// lower-case owner name whatever the question's case (the question section
// echoes the asker's case, which is what DNS 0x20 checks).
func (ix *Index) Answer(qname string, qtype uint16) (res Result, ours bool) {
	name := strings.ToLower(qname)
	if strings.HasSuffix(name, ".in-addr.arpa.") || strings.HasSuffix(name, ".ip6.arpa.") {
		ptrs, ok := ix.ptr[name]
		if !ok {
			return Result{}, false
		}
		if qtype != dns.TypePTR && qtype != dns.TypeANY {
			return Result{Rcode: dns.RcodeSuccess, Ns: ix.soa}, true
		}
		return Result{Rcode: dns.RcodeSuccess, Answer: ptrs}, true
	}
	if !ix.InZone(name) {
		return Result{}, false
	}
	e, ok := ix.names[name]
	if !ok {
		if rrs, ok := ix.podAnswer(name, qtype); ok {
			if len(rrs) == 0 {
				return Result{Rcode: dns.RcodeSuccess, Ns: ix.soa}, true
			}
			return Result{Rcode: dns.RcodeSuccess, Answer: rrs}, true
		}
		return Result{Rcode: dns.RcodeNameError, Ns: ix.soa}, true
	}
	if e.cname != nil && qtype != dns.TypeCNAME {
		return Result{Rcode: dns.RcodeSuccess, Answer: []dns.RR{e.cname}}, true
	}
	rrs := e.rrs[qtype]
	if qtype == dns.TypeANY {
		rrs = append(append([]dns.RR(nil), e.rrs[dns.TypeA]...), e.rrs[dns.TypeAAAA]...)
	}
	if len(rrs) == 0 {
		return Result{Rcode: dns.RcodeSuccess, Ns: ix.soa}, true
	}
	return Result{Rcode: dns.RcodeSuccess, Answer: rrs, Extra: e.extra[qtype]}, true
}

// podAnswer answers <a-b-c-d>.<ns>.pod.<zone> like CoreDNS's `pods
// insecure`: the address is read from the name.
func (ix *Index) podAnswer(name string, qtype uint16) ([]dns.RR, bool) {
	if !strings.HasSuffix(name, "."+ix.podZone) {
		return nil, false
	}
	rest := strings.TrimSuffix(name, "."+ix.podZone)
	labels := strings.Split(rest, ".")
	if len(labels) != 2 || !validLabel(labels[1]) {
		return nil, false
	}
	var ip net.IP
	parts := strings.Split(labels[0], "-")
	if len(parts) == 4 {
		b := make([]byte, 4)
		for i, p := range parts {
			n, err := strconv.ParseUint(p, 10, 8)
			if err != nil || p == "" || (len(p) > 1 && p[0] == '0') {
				return nil, false
			}
			b[i] = byte(n)
		}
		ip = net.IP(b)
	} else if len(parts) == 8 {
		ip = net.ParseIP(strings.ReplaceAll(labels[0], "-", ":"))
	}
	if ip == nil {
		return nil, false
	}
	rrs := ix.addrRRs(name, []net.IP{ip})
	if rrs[0].Header().Rrtype != qtype {
		return []dns.RR{}, true
	}
	return rrs, true
}
