package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	mdns "github.com/miekg/dns"

	hdns "github.com/holdfast-edge/holdfast/dns"
	"github.com/holdfast-edge/holdfast/health"
	"github.com/holdfast-edge/holdfast/health/members"
	"github.com/holdfast-edge/holdfast/test/harness"
)

// agentSite is what `holdfastd agent` needs on 127.0.0.1 without an
// apiserver: a key, a member list of this node alone, a DNS seed, and a
// port each for health (UDP and TCP) and DNS (UDP and TCP).
type agentSite struct {
	dir, healthAddr, dnsAddr string
}

func newAgentSite(t *testing.T) agentSite {
	t.Helper()
	dir := t.TempDir()
	s := agentSite{dir: dir, healthAddr: freeAddr(t), dnsAddr: freeAddr(t)}
	pub, err := health.GenerateKey(filepath.Join(dir, "node.key"), "n1")
	if err != nil {
		t.Fatal(err)
	}
	list, _ := json.Marshal([]members.Member{{Name: "n1", Address: s.healthAddr, PublicKey: pub}})
	if err := os.WriteFile(filepath.Join(dir, "members.json"), list, 0o644); err != nil {
		t.Fatal(err)
	}
	return s
}

func (s agentSite) args() []string {
	return []string{"--node-name", "n1",
		"--health-listen", s.healthAddr, "--health-members-file", filepath.Join(s.dir, "members.json"),
		"--health-key-file", filepath.Join(s.dir, "node.key"), "--health-state-dir", filepath.Join(s.dir, "health"), "--health-probe-period", "200ms",
		"--dns-listen", s.dnsAddr, "--dns-interface", "", "--dns-state-dir", filepath.Join(s.dir, "dns"), "--dns-seed-file", "../../dns/testdata/seed.json",
		"--dns-upstream", "127.0.0.1:9", "--dns-kubeconfig", filepath.Join(s.dir, "no-kubeconfig"),
		"--dns-verdicts", "http://" + s.healthAddr + "/v1/verdicts", "--dns-verdict-interval", "200ms"}
}

// start runs the agent in this process; the channel gets its result.
func (s agentSite) start(t *testing.T, extra ...string) (context.CancelFunc, chan error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- runAgent(ctx, append(s.args(), extra...)) }()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	return cancel, done
}

// freeAddr is a 127.0.0.1 port free for both UDP and TCP (health and DNS
// each serve both on one port).
func freeAddr(t *testing.T) string {
	t.Helper()
	for range 50 {
		u, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			t.Fatal(err)
		}
		addr := u.LocalAddr().String()
		l, err := net.Listen("tcp", addr)
		u.Close()
		if err == nil {
			l.Close()
			return addr
		}
	}
	t.Fatal("no port free for both UDP and TCP")
	return ""
}

func get(url string) (int, string, error) {
	resp, err := http.Get(url)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

// TestAgentServesBoth: one process answers DNS from the seed, votes, and
// serves one /healthz and one /metrics with both components' metrics on
// the health port.
func TestAgentServesBoth(t *testing.T) {
	s := newAgentSite(t)
	s.start(t)
	base := "http://" + s.healthAddr
	err := harness.Eventually(10*time.Second, func() error {
		code, body, err := get(base + "/healthz")
		if err != nil {
			return err
		}
		if code != http.StatusOK {
			return fmt.Errorf("/healthz %d: %s", code, body)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	_, metrics, err := get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range []string{"holdfast_health_unit_members 1", "holdfast_dns_records ", "go_goroutines "} {
		if strings.Count(metrics, "\n"+m) != 1 {
			t.Errorf("/metrics has %d lines %q, want 1", strings.Count(metrics, "\n"+m), m)
		}
	}
	q := new(mdns.Msg)
	q.SetQuestion("web.default.svc.cluster.local.", mdns.TypeA)
	r, err := mdns.Exchange(q, s.dnsAddr)
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Answer) != 1 || !strings.Contains(r.Answer[0].String(), "10.96.0.10") {
		t.Fatalf("web.default: %v", r.Answer)
	}
	if code, body, err := get(base + "/v1/verdicts"); err != nil || code != http.StatusOK || !strings.Contains(body, `"members":1`) {
		t.Fatalf("/v1/verdicts: %d %s %v", code, body, err)
	}
}

// TestAgentEitherFailingEnds: when one component cannot start, the
// agent returns its error and the other component has stopped too (its
// port is free again soon after).
func TestAgentEitherFailingEnds(t *testing.T) {
	for _, tc := range []struct {
		name        string
		taken, kept func(agentSite) string
	}{
		{"dns port taken", func(s agentSite) string { return s.dnsAddr }, func(s agentSite) string { return s.healthAddr }},
		{"health port taken", func(s agentSite) string { return s.healthAddr }, func(s agentSite) string { return s.dnsAddr }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newAgentSite(t)
			ua, _ := net.ResolveUDPAddr("udp", tc.taken(s))
			blocker, err := net.ListenUDP("udp", ua)
			if err != nil {
				t.Fatal(err)
			}
			defer blocker.Close()
			_, done := s.start(t)
			select {
			case err := <-done:
				done <- err // for the cleanup
				if err == nil || !strings.Contains(err.Error(), tc.taken(s)) {
					t.Fatalf("agent returned %v, want the error of the taken port %s", err, tc.taken(s))
				}
			case <-time.After(15 * time.Second):
				t.Fatal("the agent kept running with one component failed")
			}
			// Its listeners close as it returns, not necessarily before.
			err = harness.Eventually(5*time.Second, func() error {
				l, err := net.Listen("tcp", tc.kept(s))
				if err == nil {
					l.Close()
				}
				return err
			})
			if err != nil {
				t.Fatalf("the other component still holds its port after the agent returned: %v", err)
			}
		})
	}
}

// TestAgentRefusesBadFlags: unprefixed component flags are unknown; bad
// values are refused with exit status 2 before anything is written.
func TestAgentRefusesBadFlags(t *testing.T) {
	s := newAgentSite(t)
	if err := runAgent(context.Background(), append(s.args(), "--listen", ":1")); err == nil || !strings.Contains(err.Error(), "-listen") {
		t.Errorf("--listen: %v, want an unknown flag", err)
	}
	for _, extra := range [][]string{{"--dns-listen", "nope"}, {"--health-probe-period", "0s"}, {"stray"}} {
		err := runAgent(context.Background(), append(s.args(), extra...))
		var ec exitCoder
		if !errors.As(err, &ec) || ec.ExitCode() != 2 {
			t.Errorf("%v: %v, want exit status 2", extra, err)
		}
	}
	if _, err := os.Stat(filepath.Join(s.dir, "health")); !os.IsNotExist(err) {
		t.Errorf("a refused start touched the health state dir: %v", err)
	}
}

// TestAgentVerdictsFollowHealthListen: without --dns-verdicts the DNS reads
// the verdicts where --health-listen put the health port; given, it wins.
func TestAgentVerdictsFollowHealthListen(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--health-listen", ":6001"}, "http://127.0.0.1:6001/v1/verdicts"},
		{[]string{"--health-listen", "10.0.0.7:6001"}, "http://10.0.0.7:6001/v1/verdicts"},
		{nil, "http://127.0.0.1:51005/v1/verdicts"},
		{[]string{"--health-listen", "[::]:6001"}, "http://127.0.0.1:6001/v1/verdicts"},
		{[]string{"--health-listen", "[fd00::1]:6001"}, "http://[fd00::1]:6001/v1/verdicts"},
		{[]string{"--health-listen", ":6001", "--dns-verdicts", "http://h:1/v"}, "http://h:1/v"},
		{[]string{"--health-listen", ":6001", "--dns-verdicts", ""}, ""},
	} {
		fs := newFlagSet("agent", "")
		var hf healthFlags
		hf.register(fs, "health-")
		var dc hdns.Config
		registerDNS(fs, "dns-", &dc)
		if err := fs.Parse(tc.args); err != nil {
			t.Fatal(err)
		}
		got, err := agentVerdictsURL(fs, dc.VerdictURL, hf.listen)
		if err != nil || got != tc.want {
			t.Errorf("%q: got %q, %v; want %q", tc.args, got, err, tc.want)
		}
	}
	fs := newFlagSet("agent", "")
	if _, err := agentVerdictsURL(fs, "", "no-port"); err == nil || !strings.Contains(err.Error(), "--health-listen") {
		t.Errorf("a --health-listen without a port: %v, want an error naming the flag", err)
	}
}
