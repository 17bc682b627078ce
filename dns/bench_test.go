package dns_test

// Benchmarks of holdfastd dns against CoreDNS v1.11.3 (kubernetes plugin +
// cache), both holding the same Services and EndpointSlices, driven by the
// same load generator in the same run.
//
// CoreDNS's kubernetes plugin needs an apiserver. The full cluster (real
// kube-apiserver) belongs to the e2e suite; here CoreDNS is fed by fakeAPI,
// a minimal list/watch HTTP endpoint in this file that serves the same
// objects as the seed holdfast loads. fakeAPI is the BASELINE's data source
// only: it says nothing about holdfast, which never talks to it.

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/holdfast-edge/holdfast/test/harness"
	"github.com/miekg/dns"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

const coreDNSVersion = "v1.11.3"

var buildOnce struct {
	sync.Mutex
	holdfastd, coredns string
}

// benchBinaries returns holdfastd as shipped (harness.Binaries) and CoreDNS built into the
// git-ignored tool cache (once; `go install` from the module proxy).
func benchBinaries(b testing.TB) (holdfastd, coredns string) {
	b.Helper()
	buildOnce.Lock()
	defer buildOnce.Unlock()
	if buildOnce.holdfastd != "" {
		return buildOnce.holdfastd, buildOnce.coredns
	}
	tools := filepath.Join(harness.CacheDir(), "tools")
	coredns = filepath.Join(tools, "coredns")
	if out, err := exec.Command(coredns, "-version").CombinedOutput(); err != nil || !strings.Contains(string(out), "CoreDNS-"+strings.TrimPrefix(coreDNSVersion, "v")) {
		cmd := exec.Command("go", "install", "github.com/coredns/coredns@"+coreDNSVersion)
		cmd.Env = append(os.Environ(), "GOBIN="+tools, "GOFLAGS=-mod=mod")
		cmd.Dir = os.TempDir()
		if out, err := cmd.CombinedOutput(); err != nil {
			b.Fatalf("build CoreDNS %s into %s: %v\n%s", coreDNSVersion, tools, err, out)
		}
	}
	holdfastd = filepath.Join(harness.Binaries(b), "holdfastd")
	buildOnce.holdfastd, buildOnce.coredns = holdfastd, coredns
	return holdfastd, coredns
}

// cluster is a generated set of objects and the names to ask for.
type cluster struct {
	services   []corev1.Service
	slices     []discoveryv1.EndpointSlice
	namespaces []corev1.Namespace
	queries    []question
	want       map[question]string // rendered expected answer (sorted RRs)
}

// genCluster makes n Services in 10 namespaces: 9 of 10 ClusterIP with two
// ready endpoints, 1 of 10 headless with three; each has a named port.
func genCluster(n int) *cluster {
	c := &cluster{want: map[question]string{}}
	tru := true
	for ns := 0; ns < 10; ns++ {
		c.namespaces = append(c.namespaces, corev1.Namespace{TypeMeta: metav1.TypeMeta{Kind: "Namespace", APIVersion: "v1"}, ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("ns%d", ns)}})
	}
	for i := 0; i < n; i++ {
		ns, name := fmt.Sprintf("ns%d", i%10), fmt.Sprintf("svc%d", i)
		headless := i%10 == 9
		svc := corev1.Service{TypeMeta: metav1.TypeMeta{Kind: "Service", APIVersion: "v1"}, ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, ResourceVersion: "1"},
			Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeClusterIP, Ports: []corev1.ServicePort{{Name: "http", Protocol: corev1.ProtocolTCP, Port: 80}}}}
		fqdn := name + "." + ns + ".svc.cluster.local."
		if headless {
			svc.Spec.ClusterIP, svc.Spec.ClusterIPs = "None", []string{"None"}
		} else {
			ip := fmt.Sprintf("10.96.%d.%d", i/250, i%250+1)
			svc.Spec.ClusterIP, svc.Spec.ClusterIPs = ip, []string{ip}
			c.want[question{fqdn, dns.TypeA}] = "NOERROR " + fqdn + " 5 IN A " + ip
		}
		c.services = append(c.services, svc)
		port, pname, proto := int32(8080), "http", corev1.ProtocolTCP
		sl := discoveryv1.EndpointSlice{TypeMeta: metav1.TypeMeta{Kind: "EndpointSlice", APIVersion: "discovery.k8s.io/v1"},
			ObjectMeta:  metav1.ObjectMeta{Namespace: ns, Name: name + "-x", ResourceVersion: "1", Labels: map[string]string{discoveryv1.LabelServiceName: name}},
			AddressType: discoveryv1.AddressTypeIPv4, Ports: []discoveryv1.EndpointPort{{Name: &pname, Protocol: &proto, Port: &port}}}
		neps := 2
		if headless {
			neps = 3
		}
		var rrs []string
		for e := 0; e < neps; e++ {
			ip := fmt.Sprintf("10.244.%d.%d", (i*3+e)/250+1, (i*3+e)%250+1)
			node := fmt.Sprintf("node%d", e+1)
			sl.Endpoints = append(sl.Endpoints, discoveryv1.Endpoint{Addresses: []string{ip}, NodeName: &node, Conditions: discoveryv1.EndpointConditions{Ready: &tru}})
			rrs = append(rrs, fqdn+" 5 IN A "+ip)
		}
		c.slices = append(c.slices, sl)
		if headless {
			sort.Strings(rrs)
			c.want[question{fqdn, dns.TypeA}] = "NOERROR " + strings.Join(rrs, " | ")
		}
		c.queries = append(c.queries, question{fqdn, dns.TypeA})
		if i%5 == 0 && !headless {
			srv := "_http._tcp." + fqdn
			c.queries = append(c.queries, question{srv, dns.TypeSRV})
			c.want[question{srv, dns.TypeSRV}] = "NOERROR " + srv + " 5 IN SRV 0 100 80 " + fqdn
		}
	}
	return c
}

func (c *cluster) seedFile(b testing.TB) string {
	var items []any
	for i := range c.namespaces {
		items = append(items, &c.namespaces[i])
	}
	for i := range c.services {
		items = append(items, &c.services[i])
	}
	for i := range c.slices {
		items = append(items, &c.slices[i])
	}
	data, err := json.Marshal(map[string]any{"apiVersion": "v1", "kind": "List", "items": items})
	if err != nil {
		b.Fatal(err)
	}
	path := filepath.Join(b.TempDir(), "seed.json")
	if err := os.WriteFile(path, data, 0o644); err != nil {
		b.Fatal(err)
	}
	return path
}

// fakeAPI serves list and (idle) watch for Services, EndpointSlices and
// Namespaces: the baseline's data source (see the file comment).
func fakeAPI(b testing.TB, c *cluster) string {
	b.Helper()
	list := func(kind, apiVersion string, items any) []byte {
		data, _ := json.Marshal(map[string]any{"kind": kind, "apiVersion": apiVersion, "metadata": map[string]string{"resourceVersion": "1"}, "items": items})
		return data
	}
	routes := map[string][]byte{
		"/api/v1/services":                         list("ServiceList", "v1", c.services),
		"/apis/discovery.k8s.io/v1/endpointslices": list("EndpointSliceList", "discovery.k8s.io/v1", c.slices),
		"/api/v1/namespaces":                       list("NamespaceList", "v1", c.namespaces),
		"/version":                                 []byte(`{"major":"1","minor":"34","gitVersion":"v1.34.4"}`),
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, ok := routes[r.URL.Path]
		if !ok {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusNotFound)
			fmt.Fprintf(w, `{"kind":"Status","apiVersion":"v1","status":"Failure","reason":"NotFound","code":404}`)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		if r.URL.Query().Get("watch") == "true" || r.URL.Query().Get("watch") == "1" {
			w.WriteHeader(http.StatusOK)
			w.(http.Flusher).Flush()
			<-r.Context().Done()
			return
		}
		w.Write(body)
	})}
	go srv.Serve(ln)
	b.Cleanup(func() { srv.Close() })
	return "http://" + ln.Addr().String()
}

// proc is a server process under test.
type proc struct {
	cmd *exec.Cmd
	log *os.File
}

func start(b testing.TB, logName, bin string, args ...string) *proc {
	b.Helper()
	logf, err := os.Create(filepath.Join(b.TempDir(), logName+".log"))
	if err != nil {
		b.Fatal(err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	p := &proc{cmd: cmd, log: logf}
	b.Cleanup(p.stop)
	return p
}

func (p *proc) stop() {
	if p.cmd.ProcessState != nil {
		return
	}
	syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
	p.cmd.Wait()
	p.log.Close()
}

func (p *proc) logs() string { data, _ := os.ReadFile(p.log.Name()); return string(data) }

func freePort(b testing.TB) int {
	b.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer pc.Close()
	ln, err := net.Listen("tcp", pc.LocalAddr().String())
	if err != nil {
		return freePort(b)
	}
	ln.Close()
	return pc.LocalAddr().(*net.UDPAddr).Port
}

func ask(addr string, q question, timeout time.Duration) (string, error) {
	c := &dns.Client{Net: "udp", Timeout: timeout}
	req := new(dns.Msg)
	req.SetQuestion(q.name, q.qtype)
	m, _, err := c.Exchange(req, addr)
	if err != nil {
		return "", err
	}
	return render(m), nil
}

// waitAnswer polls q until the wanted answer arrives; it returns the time
// from t0, or false at the deadline.
func waitAnswer(addr string, q question, want string, t0 time.Time, limit time.Duration) (time.Duration, bool) {
	for time.Since(t0) < limit {
		if got, err := ask(addr, q, 20*time.Millisecond); err == nil && got == want {
			return time.Since(t0), true
		}
		time.Sleep(500 * time.Microsecond)
	}
	return limit, false
}

func startHoldfast(b testing.TB, bin, stateDir, seed, apiURL string, port int) *proc {
	kc := filepath.Join(b.TempDir(), "kubeconfig")
	os.WriteFile(kc, []byte("apiVersion: v1\nkind: Config\nclusters: [{name: c, cluster: {server: \""+apiURL+"\"}}]\ncontexts: [{name: c, context: {cluster: c}}]\ncurrent-context: c\n"), 0o600)
	args := []string{"dns", "--listen", fmt.Sprintf("127.0.0.1:%d", port), "--interface", "", "--state-dir", stateDir,
		"--kubeconfig", kc, "--verdicts", "", "--upstream", "127.0.0.1:9", "--metrics-addr", "", "--node-name", "bench"}
	if seed != "" {
		args = append(args, "--seed-file", seed)
	}
	return start(b, "holdfastd", bin, args...)
}

func startCoreDNS(b testing.TB, bin, apiURL string, port int) *proc {
	conf := filepath.Join(b.TempDir(), "Corefile")
	os.WriteFile(conf, []byte(fmt.Sprintf(`.:%d {
    bind 127.0.0.1
    cache 30
    kubernetes cluster.local in-addr.arpa ip6.arpa {
        endpoint %s
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
        ttl 5
    }
}
`, port, apiURL)), 0o644)
	return start(b, "coredns", bin, "-conf", conf)
}

// load runs the same closed-loop load generator against addr: conc
// goroutines, one UDP socket each, total queries spread over them, each
// checked against the expected answer. It returns QPS and p50/p99.
func load(b *testing.B, addr string, c *cluster, total, conc int) (qps float64, p50, p99 time.Duration) {
	b.Helper()
	lat := make([][]time.Duration, conc)
	var wg sync.WaitGroup
	var bad sync.Map
	start := time.Now()
	for g := 0; g < conc; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			conn, err := net.Dial("udp", addr)
			if err != nil {
				bad.Store("dial", err.Error())
				return
			}
			defer conn.Close()
			co := &dns.Conn{Conn: conn}
			req := new(dns.Msg)
			for i := g; i < total; i += conc {
				q := c.queries[i%len(c.queries)]
				req.SetQuestion(q.name, q.qtype)
				req.Id = uint16(i)
				t0 := time.Now()
				conn.SetDeadline(t0.Add(2 * time.Second))
				if err := co.WriteMsg(req); err != nil {
					bad.Store(q, err.Error())
					continue
				}
				m, err := co.ReadMsg()
				lat[g] = append(lat[g], time.Since(t0))
				if err != nil {
					bad.Store(q, err.Error())
					continue
				}
				if i < len(c.queries) { // first pass: check every answer
					if got := render(m); got != c.want[q] {
						bad.Store(q, got)
					}
				}
			}
		}(g)
	}
	wg.Wait()
	elapsed := time.Since(start)
	bad.Range(func(k, v any) bool { b.Fatalf("wrong answer for %v: %v", k, v); return false })
	var all []time.Duration
	for _, l := range lat {
		all = append(all, l...)
	}
	sort.Slice(all, func(i, j int) bool { return all[i] < all[j] })
	return float64(len(all)) / elapsed.Seconds(), all[len(all)/2], all[len(all)*99/100]
}

// BenchmarkClusterQueries: QPS and p99 for cluster names, holdfastd dns vs
// CoreDNS (kubernetes + cache), same objects, same load generator, same run.
func BenchmarkClusterQueries(b *testing.B) {
	hf, cd := benchBinaries(b)
	const services, conc = 1000, 8
	c := genCluster(services)
	api := fakeAPI(b, c)
	seed := c.seedFile(b)
	servers := []struct {
		name  string
		start func(port int) *proc
	}{
		{"holdfast", func(port int) *proc { return startHoldfast(b, hf, b.TempDir(), seed, "http://127.0.0.1:1", port) }},
		{"coredns", func(port int) *proc { return startCoreDNS(b, cd, api, port) }},
	}
	for _, s := range servers {
		b.Run(fmt.Sprintf("%s/services=%d/conc=%d", s.name, services, conc), func(b *testing.B) {
			port := freePort(b)
			p := s.start(port)
			addr := fmt.Sprintf("127.0.0.1:%d", port)
			q := c.queries[0]
			if _, ok := waitAnswer(addr, q, c.want[q], time.Now(), 20*time.Second); !ok {
				b.Fatalf("%s never answered %s:\n%s", s.name, q.name, p.logs())
			}
			load(b, addr, c, len(c.queries), conc) // warm up (fills CoreDNS's cache) and check every answer
			b.ResetTimer()
			qps, p50, p99 := load(b, addr, c, max(b.N, 1), conc)
			b.StopTimer()
			b.ReportMetric(qps, "qps")
			b.ReportMetric(float64(p50.Microseconds()), "p50-µs")
			b.ReportMetric(float64(p99.Microseconds()), "p99-µs")
			p.stop()
		})
	}
}

// BenchmarkStartToFirstAnswer: from process start to the first correct
// answer for a cluster name with the apiserver unreachable (holdfast answers
// from its snapshot; CoreDNS's kubernetes plugin has nothing to answer
// from). For reference, CoreDNS with its apiserver (fakeAPI) reachable.
func BenchmarkStartToFirstAnswer(b *testing.B) {
	hf, cd := benchBinaries(b)
	const offlineAPI = "http://127.0.0.1:1" // nothing listens there
	const limit = 3 * time.Second

	type bcase struct {
		name  string
		start func(port int) *proc
		q     question
		want  string
	}
	var cases []bcase
	for _, n := range []int{1000, 5000} {
		c := genCluster(n)
		q := c.queries[0]
		stateDir := b.TempDir()
		// Seed the snapshot once, as a node that was online before.
		port := freePort(b)
		p := startHoldfast(b, hf, stateDir, c.seedFile(b), offlineAPI, port)
		if _, ok := waitAnswer(fmt.Sprintf("127.0.0.1:%d", port), q, c.want[q], time.Now(), 10*time.Second); !ok {
			b.Fatalf("seeding holdfastd failed:\n%s", p.logs())
		}
		p.stop()
		cases = append(cases, bcase{fmt.Sprintf("holdfast/offline/services=%d", n), func(port int) *proc { return startHoldfast(b, hf, stateDir, "", offlineAPI, port) }, q, c.want[q]})
	}
	c := genCluster(1000)
	api := fakeAPI(b, c)
	q := c.queries[0]
	cases = append(cases,
		bcase{"coredns/offline/services=1000", func(port int) *proc { return startCoreDNS(b, cd, offlineAPI, port) }, q, c.want[q]},
		bcase{"coredns/online-fakeapi/services=1000", func(port int) *proc { return startCoreDNS(b, cd, api, port) }, q, c.want[q]})
	for _, cs := range cases {
		b.Run(cs.name, func(b *testing.B) {
			var sum time.Duration
			answered := 0
			for i := 0; i < b.N; i++ {
				port := freePort(b)
				t0 := time.Now()
				p := cs.start(port)
				d, ok := waitAnswer(fmt.Sprintf("127.0.0.1:%d", port), cs.q, cs.want, t0, limit)
				p.stop()
				sum += d
				if ok {
					answered++
				}
			}
			b.ReportMetric(float64(sum.Microseconds())/1000/float64(b.N), "ms-to-answer")
			b.ReportMetric(float64(answered)/float64(b.N), "answered")
			if answered < b.N {
				b.Logf("%s: %d of %d starts gave no correct answer within %s", cs.name, b.N-answered, b.N, limit)
			}
		})
	}
}
