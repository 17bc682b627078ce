package health_test

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/holdfast-edge/holdfast/health"
	"github.com/holdfast-edge/holdfast/health/members"
	"github.com/holdfast-edge/holdfast/health/peer"
	"github.com/holdfast-edge/holdfast/health/protocol"
	"github.com/holdfast-edge/holdfast/test/harness"
)

const period = time.Second

type site struct {
	t     *testing.T
	s     *harness.Site
	bin   string
	mfile string
	keys  map[string]string
}

func (s *site) start(n *harness.Node) {
	s.t.Helper()
	_, err := n.Start("health", filepath.Join(s.bin, "holdfastd"), "health", "run",
		"--node-name", n.Name, "--listen", fmt.Sprintf(":%d", health.DefaultPort),
		"--probe-period", period.String(), "--key-file", s.keys[n.Name],
		"--members-file", s.mfile, "--state-dir", filepath.Join(n.VarDir, "holdfast", "health"))
	if err != nil {
		s.t.Fatal(err)
	}
}

func verdicts(n *harness.Node) (peer.Snapshot, error) {
	var v peer.Snapshot
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	out, err := n.Exec(ctx, "busybox", "wget", "-qO-", fmt.Sprintf("http://127.0.0.1:%d/v1/verdicts", health.DefaultPort))
	if err != nil {
		return v, err
	}
	if err := json.Unmarshal([]byte(out), &v); err != nil {
		return v, fmt.Errorf("%s: /v1/verdicts is not the documented JSON: %v: %q", n.Name, err, out)
	}
	return v, nil
}

// waitVerdicts polls every observer until want holds at all of them and
// returns how long that took.
func (s *site) waitVerdicts(observers []*harness.Node, want func(obs, member string) string, limit time.Duration) time.Duration {
	s.t.Helper()
	start := time.Now()
	pending := map[string]*harness.Node{}
	for _, n := range observers {
		pending[n.Name] = n
	}
	var last string
	for time.Since(start) < limit+10*time.Second {
		for name, n := range pending {
			v, err := verdicts(n)
			if err != nil {
				last = err.Error()
				continue
			}
			ok := v.Self == name && v.Members == len(s.s.Nodes)
			for _, m := range s.s.Nodes {
				if v.Verdicts[m.Name] != want(name, m.Name) {
					ok = false
				}
			}
			if ok {
				delete(pending, name)
			} else {
				last = fmt.Sprintf("%s: %+v", name, v)
			}
		}
		if len(pending) == 0 {
			el := time.Since(start)
			if el > limit {
				s.t.Fatalf("verdicts reached after %s, limit %s", el, limit)
			}
			return el
		}
		time.Sleep(100 * time.Millisecond)
	}
	for _, n := range observers {
		s.t.Logf("%s log:\n%s", n.Name, n.Logs("health"))
	}
	s.t.Fatalf("verdicts not reached within %s; last: %s", limit+10*time.Second, last)
	return 0
}

func metric(t *testing.T, n *harness.Node, reason string) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	out, err := n.Exec(ctx, "busybox", "wget", "-qO-", fmt.Sprintf("http://127.0.0.1:%d/metrics", health.DefaultPort))
	if err != nil {
		t.Fatal(err)
	}
	prefix := fmt.Sprintf(`holdfast_health_messages_rejected_total{reason=%q} `, reason)
	for _, l := range strings.Split(out, "\n") {
		if strings.HasPrefix(l, prefix) {
			var v int
			fmt.Sscan(strings.TrimPrefix(l, prefix), &v)
			return v
		}
	}
	t.Fatalf("%s /metrics has no %s", n.Name, prefix)
	return 0
}

// TestFiveNodes is the acceptance run: 5 node netns, holdfastd health from
// a members file, no apiserver.
func TestFiveNodes(t *testing.T) {
	harness.RequireRoot(t)
	hs := harness.NewSite(t, 5)
	s := &site{t: t, s: hs, bin: harness.Binaries(t), keys: map[string]string{}}
	var list []members.Member
	for _, n := range hs.Nodes {
		kf := filepath.Join(n.VarDir, "holdfast", "health", "node.key")
		if err := os.MkdirAll(filepath.Dir(kf), 0o700); err != nil {
			t.Fatal(err)
		}
		pub, err := health.GenerateKey(kf, n.Name)
		if err != nil {
			t.Fatal(err)
		}
		s.keys[n.Name] = kf
		list = append(list, members.Member{Name: n.Name, Address: n.UnderlayIP.String(), Unit: "site-a", PublicKey: pub})
	}
	data, _ := json.Marshal(list)
	s.mfile = filepath.Join(hs.Dir, "members.json")
	if err := os.WriteFile(s.mfile, data, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, n := range hs.Nodes {
		s.start(n)
	}
	alive := func(string, string) string { return "alive" }
	el := s.waitVerdicts(hs.Nodes, alive, 10*period)
	t.Logf("all alive after %s", el)

	// Kill node5's processes: every other node says dead within 3 periods.
	others := hs.Nodes[:4]
	hs.Node(5).KillAll()
	el = s.waitVerdicts(others, func(_, m string) string {
		if m == "node5" {
			return "dead"
		}
		return "alive"
	}, 3*period)
	t.Logf("node5 dead everywhere %s (%.2f periods) after the kill", el, float64(el)/float64(period))

	// Back: alive within 3 periods everywhere (node5 included).
	s.start(hs.Node(5))
	el = s.waitVerdicts(hs.Nodes, alive, 3*period+time.Second) // + process start
	t.Logf("node5 alive everywhere %s after restart", el)

	// Partition 3|2.
	if err := hs.Partition(hs.Nodes[:3], hs.Nodes[3:]); err != nil {
		t.Fatal(err)
	}
	el = s.waitVerdicts(hs.Nodes, func(obs, m string) string {
		if obs == "node4" || obs == "node5" {
			return "unknown" // no quorum for the two, themselves included
		}
		if m == "node4" || m == "node5" {
			return "dead"
		}
		return "alive"
	}, 4*period)
	t.Logf("partition 3|2 settled after %s", el)
	if err := hs.Heal(); err != nil {
		t.Fatal(err)
	}
	s.waitVerdicts(hs.Nodes, alive, 4*period)

	// Attacks against node1, sent from node2's netns over the LAN.
	target := hs.Node(1)
	key2, err := health.LoadKey(s.keys["node2"])
	if err != nil {
		t.Fatal(err)
	}
	_, attacker, _ := ed25519.GenerateKey(nil)
	names := []string{"node1", "node2", "node3", "node4", "node5"}
	mk := func(seq uint64, sender string, key ed25519.PrivateKey, at time.Time) []byte {
		full := []protocol.State{protocol.Dead, protocol.Dead, protocol.Dead, protocol.Dead, protocol.Dead}
		d, err := protocol.Encode(&protocol.Message{Seq: seq, Time: at, MemberDigest: protocol.MemberDigest(names), Sender: sender, Unit: "site-a", Kind: protocol.ViewFull, Full: full}, key)
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	send := func(data []byte) {
		t.Helper()
		f := filepath.Join(hs.Dir, "inject.bin")
		if err := os.WriteFile(f, data, 0o600); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		// bash's /dev/udp: cat writes the file in one write, one datagram
		if out, err := hs.Node(2).Exec(ctx, "bash", "-c", fmt.Sprintf("cat %s > /dev/udp/%s/%d", f, target.UnderlayIP, health.DefaultPort)); err != nil {
			t.Fatalf("inject: %v %s", err, out)
		}
	}
	now := time.Now()
	genuine := mk(1<<62, "node2", key2, now)
	cases := []struct {
		reason string
		data   []byte
	}{
		{"forged", mk(1<<62, "node3", key2, now)}, // node2's key, node3's name
		{"forged", mk(1<<62, "node3", attacker, now)},
		{"oversized", make([]byte, protocol.MaxMessageSize+100)},
		{"malformed", []byte("hf\x01\x01this is not a view at all, but long enough to parse................................................................")},
		{"clock_skew", mk(1<<62+10, "node2", key2, now.Add(-5*time.Minute))},
		{"replay", genuine}, // sent twice below: the second is the replay
		{"reordered", mk(1<<62-1, "node2", key2, now)},
	}
	before := map[string]int{}
	for _, c := range cases {
		before[c.reason] = metric(t, target, c.reason)
	}
	send(genuine)
	for _, c := range cases {
		send(c.data)
	}
	// The daemon counts each datagram once it has read it: poll.
	if err := harness.Eventually(10*time.Second, func() error {
		var short []string
		for _, c := range cases {
			want := before[c.reason] + 1
			if c.reason == "forged" {
				want = before[c.reason] + 2
			}
			if got := metric(t, target, c.reason); got < want {
				short = append(short, fmt.Sprintf("rejected{reason=%q} = %d, want ≥ %d", c.reason, got, want))
			}
		}
		if len(short) > 0 {
			return errors.New(strings.Join(short, "; "))
		}
		return nil
	}); err != nil {
		t.Error(err)
	}
	// One node's lying view is one vote: nothing changed.
	s.waitVerdicts([]*harness.Node{hs.Node(3), hs.Node(4), hs.Node(5)}, alive, period)

	// show reads the persisted state.
	out := hs.Node(3).MustExec(filepath.Join(s.bin, "holdfastd"), "health", "show", "--state-dir", filepath.Join(hs.Node(3).VarDir, "holdfast", "health"))
	if !strings.Contains(out, `"unit": "site-a"`) || !strings.Contains(out, `"node5": "alive"`) {
		t.Fatalf("health show:\n%s", out)
	}
}
