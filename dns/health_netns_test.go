package dns_test

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/holdfast-edge/holdfast/health"
	"github.com/holdfast-edge/holdfast/health/members"
	"github.com/holdfast-edge/holdfast/test/harness"
	"github.com/miekg/dns"
)

// threeNodeSeed: headless "db" with one endpoint per node; the cloud marked
// node2's endpoint not ready (node2 lost its cloud link, not its peers).
const threeNodeSeed = `{"apiVersion":"v1","kind":"List","items":[
 {"apiVersion":"v1","kind":"Service","metadata":{"name":"db","namespace":"default"},"spec":{"clusterIP":"None","ports":[{"name":"pg","port":5432,"protocol":"TCP"}]}},
 {"apiVersion":"discovery.k8s.io/v1","kind":"EndpointSlice","metadata":{"name":"db-x","namespace":"default","labels":{"kubernetes.io/service-name":"db"}},
  "addressType":"IPv4","ports":[{"name":"pg","port":5432,"protocol":"TCP"}],"endpoints":[
   {"addresses":["10.244.1.10"],"hostname":"db-0","nodeName":"node1","conditions":{"ready":true}},
   {"addresses":["10.244.2.10"],"hostname":"db-1","nodeName":"node2","conditions":{"ready":false}},
   {"addresses":["10.244.3.10"],"hostname":"db-2","nodeName":"node3","conditions":{"ready":true}}]}]}`

// TestVerdictsFromRunningHealth: holdfastd health runs on three nodes (members
// file, no apiserver) and holdfastd dns on node1 polls its real
// /v1/verdicts. With every node voted alive, node2's not-ready endpoint is
// answered; once node3's processes are killed and its peers vote it dead,
// node3's ready endpoint is dropped.
func TestVerdictsFromRunningHealth(t *testing.T) {
	harness.RequireRoot(t)
	bin := filepath.Join(harness.Binaries(t), "holdfastd")
	site := harness.NewSite(t, 3)
	var list []members.Member
	keys := map[string]string{}
	for _, n := range site.Nodes {
		kf := filepath.Join(n.VarDir, "holdfast", "health", "node.key")
		if err := os.MkdirAll(filepath.Dir(kf), 0o700); err != nil {
			t.Fatal(err)
		}
		pub, err := health.GenerateKey(kf, n.Name)
		if err != nil {
			t.Fatal(err)
		}
		keys[n.Name] = kf
		list = append(list, members.Member{Name: n.Name, Address: n.UnderlayIP.String(), Unit: "site-a", PublicKey: pub})
	}
	data, _ := json.Marshal(list)
	mfile := filepath.Join(site.Dir, "members.json")
	if err := os.WriteFile(mfile, data, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, n := range site.Nodes {
		if _, err := n.Start("health", bin, "health", "run", "--node-name", n.Name, "--listen", fmt.Sprintf(":%d", health.DefaultPort),
			"--probe-period", "500ms", "--key-file", keys[n.Name], "--members-file", mfile,
			"--state-dir", filepath.Join(n.VarDir, "holdfast", "health")); err != nil {
			t.Fatal(err)
		}
	}
	node1 := site.Node(1)
	seed := filepath.Join(node1.VarDir, "seed.json")
	if err := os.WriteFile(seed, []byte(threeNodeSeed), 0o644); err != nil {
		t.Fatal(err)
	}
	// Default --verdicts URL: http://127.0.0.1:51005/v1/verdicts.
	if _, err := node1.Start("dns", bin, "dns", "--node-name", "node1", "--state-dir", filepath.Join(node1.VarDir, "holdfast", "dns"),
		"--seed-file", seed, "--kubeconfig", "/nonexistent", "--upstream", "127.0.0.1:5399", "--verdict-interval", "200ms"); err != nil {
		t.Fatal(err)
	}
	defer func() {
		if t.Failed() {
			t.Logf("dns log:\n%s\nhealth log (node1):\n%s", node1.Logs("dns"), node1.Logs("health"))
		}
	}()
	want := func(ips ...string) string {
		var rrs []string
		for _, ip := range ips {
			rrs = append(rrs, "db.default.svc.cluster.local. 5 IN A "+ip)
		}
		return "NOERROR " + strings.Join(rrs, " | ")
	}
	wait := func(want string, limit time.Duration) time.Duration {
		t.Helper()
		start := time.Now()
		var got string
		for time.Since(start) < limit {
			for _, network := range []string{"udp", "tcp"} {
				m, err := exchange(node1.NSPath, network, "db.default.svc.cluster.local.", dns.TypeA, time.Second)
				if err != nil {
					got = err.Error()
					break
				}
				if got = render(m); got != want {
					break
				}
				if network == "tcp" {
					return time.Since(start)
				}
			}
			time.Sleep(50 * time.Millisecond)
		}
		t.Fatalf("db answer %q, want %q (after %s)", got, want, limit)
		return 0
	}
	el := wait(want("10.244.1.10", "10.244.2.10", "10.244.3.10"), 20*time.Second)
	t.Logf("all nodes voted alive: node2's not-ready endpoint answered after %s", el)
	site.Node(3).KillAll()
	el = wait(want("10.244.1.10", "10.244.2.10"), 20*time.Second)
	t.Logf("node3 killed: its ready endpoint dropped after %s", el)
}
