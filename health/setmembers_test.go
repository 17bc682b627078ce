package health_test

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/holdfast-edge/holdfast/health"
	"github.com/holdfast-edge/holdfast/health/members"
	"github.com/holdfast-edge/holdfast/health/peer"
)

const udpPeriod = 300 * time.Millisecond

// udpNode is one daemon on 127.0.0.1 with its own port, key, state dir and registry.
type udpNode struct {
	name string
	m    members.Member
	cfg  health.Config
	d    *health.Daemon
	stop context.CancelFunc
	done chan error
}

func newUDPNode(t *testing.T, name string) *udpNode {
	t.Helper()
	key, pub := newKey(t)
	port := freePort(t)
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	return &udpNode{name: name, m: members.Member{Name: name, Address: addr, Unit: "u", PublicKey: pub},
		cfg: health.Config{NodeName: name, Listen: addr, Period: udpPeriod, MaxSkew: peer.DefaultMaxSkew, Key: key, StateDir: t.TempDir(), Source: "test",
			Log: slog.New(slog.DiscardHandler), Registry: prometheus.NewRegistry()}}
}

// freePort finds a port free for both UDP and TCP on 127.0.0.1 (the daemon
// serves views over UDP and HTTP over TCP on the same port).
func freePort(t *testing.T) int {
	t.Helper()
	for range 50 {
		u, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			t.Fatal(err)
		}
		port := u.LocalAddr().(*net.UDPAddr).Port
		l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		u.Close()
		if err == nil {
			l.Close()
			return port
		}
	}
	t.Fatal("no port free for both UDP and TCP")
	return 0
}

func (n *udpNode) start(t *testing.T, list ...*udpNode) {
	t.Helper()
	n.cfg.Members = memberList(list...)
	d, err := health.New(n.cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	n.d, n.stop, n.done = d, cancel, make(chan error, 1)
	go func() { n.done <- d.Run(ctx) }()
	t.Cleanup(n.halt)
}

func (n *udpNode) halt() {
	if n.stop != nil {
		n.stop()
		<-n.done
		n.stop = nil
	}
}

func (n *udpNode) set(t *testing.T, list ...*udpNode) {
	t.Helper()
	if err := n.d.SetMembers(memberList(list...), "test"); err != nil {
		t.Fatalf("%s SetMembers: %v", n.name, err)
	}
}

func memberList(list ...*udpNode) []members.Member {
	var out []members.Member
	for _, n := range list {
		out = append(out, n.m)
	}
	return out
}

// metric reads one series from the node's registry (0 when absent).
func (n *udpNode) metric(t *testing.T, name, reason string) float64 {
	t.Helper()
	mfs, err := n.cfg.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.Metric {
			if reason == "" || labelIs(m, "reason", reason) {
				return m.GetGauge().GetValue() + m.GetCounter().GetValue()
			}
		}
	}
	return 0
}

func labelIs(m *dto.Metric, name, value string) bool {
	for _, l := range m.Label {
		if l.GetName() == name && l.GetValue() == value {
			return true
		}
	}
	return false
}

// waitAlive waits until every observer's unit is exactly want and all alive.
func waitAlive(t *testing.T, limit time.Duration, observers []*udpNode, want ...*udpNode) time.Duration {
	t.Helper()
	start := time.Now()
	for {
		ok := true
		for _, o := range observers {
			s := o.d.Snapshot()
			ok = ok && s.Members == len(want) && len(s.Verdicts) == len(want)
			for _, w := range want {
				ok = ok && s.Verdicts[w.name] == "alive"
			}
		}
		if ok {
			return time.Since(start)
		}
		if time.Since(start) > limit {
			for _, o := range observers {
				t.Logf("%s: %+v", o.name, o.d.Snapshot())
			}
			t.Fatalf("not all alive within %s", limit)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// flapWatch samples the verdicts of the remaining members at their peers
// every 5 ms and counts every sample that is not alive.
type flapWatch struct {
	mu      sync.Mutex
	dead    []string
	unknown int
	stop    chan struct{}
	done    chan struct{}
}

func watchFlaps(nodes ...*udpNode) *flapWatch {
	w := &flapWatch{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(w.done)
		for {
			select {
			case <-w.stop:
				return
			case <-time.After(5 * time.Millisecond):
			}
			for _, o := range nodes {
				s := o.d.Snapshot()
				for _, n := range nodes {
					w.record(o.name, n.name, s.Verdicts[n.name])
				}
			}
		}
	}()
	return w
}

func (w *flapWatch) record(obs, member, v string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	switch v {
	case "dead":
		w.dead = append(w.dead, obs+" says "+member+" is dead")
	case "unknown":
		w.unknown++
	}
}

func (w *flapWatch) end() (dead []string, unknown int) {
	close(w.stop)
	<-w.done
	return w.dead, w.unknown
}

// TestSetMembersUDP runs real daemons over UDP on 127.0.0.1: a unit of two
// gains a running third member (applied on the two a little apart, as Node
// watches deliver it), then loses it while it keeps sending. The two that
// remain never vote each other dead, no message is refused as a replay
// (sequence numbers carry on), and the new member is alive everywhere soon
// after the last daemon applied the change.
func TestSetMembersUDP(t *testing.T) {
	a, b, c := newUDPNode(t, "a"), newUDPNode(t, "b"), newUDPNode(t, "c")
	a.start(t, a, b)
	b.start(t, a, b)
	el := waitAlive(t, 10*udpPeriod, []*udpNode{a, b}, a, b)
	t.Logf("unit of 2 alive after %s", el)
	flaps := watchFlaps(a, b)

	c.start(t, a, b, c)
	first := time.Now()
	a.set(t, a, b, c)
	time.Sleep(udpPeriod) // the two apply the change a period apart, as Node watches may
	b.set(t, a, b, c)
	el = waitAlive(t, 6*udpPeriod, []*udpNode{a, b, c}, a, b, c)
	t.Logf("unit of 3 alive everywhere %s after the last daemon applied the added member (%s after the first)", el, time.Since(first))
	if got := a.metric(t, "holdfast_health_unit_members", ""); got != 3 {
		t.Fatalf("a's unit_members metric %v, want 3", got)
	}
	st, err := health.LoadMembers(a.cfg.StateDir)
	if err != nil || len(st.Members) != 3 || st.Epoch != 1 || st.Source != "test" {
		t.Fatalf("a's persisted member list after the change: %+v, %v (want 3 members, epoch still 1)", st, err)
	}

	unknownSender := func() float64 {
		return a.metric(t, "holdfast_health_messages_rejected_total", "unknown_sender") + b.metric(t, "holdfast_health_messages_rejected_total", "unknown_sender")
	}
	before := unknownSender()
	a.set(t, a, b)
	time.Sleep(udpPeriod / 2) // applied half a period apart
	b.set(t, a, b)
	el = waitAlive(t, 4*udpPeriod, []*udpNode{a, b}, a, b)
	t.Logf("unit of 2 again %s after the removal", el)
	time.Sleep(4 * udpPeriod) // observation window: c keeps sending to a and b meanwhile
	c.halt()
	time.Sleep(4 * udpPeriod) // observation window: no flap after c is gone
	waitAlive(t, 0, []*udpNode{a, b}, a, b)

	dead, unknown := flaps.end()
	if len(dead) > 0 {
		t.Fatalf("a remaining member was voted dead during the changes: %v", dead)
	}
	t.Logf("samples of a remaining member not alive: %d unknown, 0 dead", unknown)
	for _, n := range []*udpNode{a, b} {
		for _, r := range []string{"replay", "reordered", "forged"} {
			if v := n.metric(t, "holdfast_health_messages_rejected_total", r); v != 0 {
				t.Errorf("%s refused %v messages as %s", n.name, v, r)
			}
		}
	}
	if unknownSender() <= before {
		t.Error("the removed member's messages were not refused as unknown_sender")
	}
}
