package sim

import (
	"crypto/ed25519"
	"crypto/rand"
	"testing"
	"time"

	"github.com/holdfast-edge/holdfast/health/protocol"
)

const P = 2 * time.Second

func unit(t *testing.T, n int, loss float64) *Network {
	t.Helper()
	net, err := New(Config{N: n, Period: P, Loss: loss, LatencyMin: time.Millisecond, LatencyMax: 5 * time.Millisecond, Seed: 1, Unit: "site-a"})
	if err != nil {
		t.Fatal(err)
	}
	return net
}

// expect checks every up member's verdict on every member.
func expect(t *testing.T, net *Network, observers []int, want func(j int) protocol.State) {
	t.Helper()
	for _, i := range observers {
		for j := 0; j < net.cfg.N; j++ {
			if got := net.Verdict(i, j); got != want(j) {
				t.Fatalf("at %s: %s says %s is %s, want %s", net.Elapsed(), net.Name(i), net.Name(j), got, want(j))
			}
		}
	}
}

func all(n int) []int {
	out := make([]int, n)
	for i := range out {
		out[i] = i
	}
	return out
}

func TestKillRecoverPartition(t *testing.T) {
	net := unit(t, 5, 0)
	if err := net.Run(4 * P); err != nil {
		t.Fatal(err)
	}
	expect(t, net, all(5), func(int) protocol.State { return protocol.Alive })

	// Kill member 4: everyone else says dead within 3 periods.
	var deadAt [5]time.Time
	killAt := net.Now()
	net.OnVerdict = func(at time.Time, i, j int, v protocol.State) {
		if j == 4 && v == protocol.Dead && deadAt[i].IsZero() {
			deadAt[i] = at
		}
	}
	net.Kill(4)
	if err := net.Run(3 * P); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 4; i++ {
		if deadAt[i].IsZero() {
			t.Fatalf("%s never voted %s dead", net.Name(i), net.Name(4))
		}
		t.Logf("%s: dead after %.2f periods", net.Name(i), float64(deadAt[i].Sub(killAt))/float64(P))
	}
	expect(t, net, all(4), func(j int) protocol.State {
		if j == 4 {
			return protocol.Dead
		}
		return protocol.Alive
	})

	// Bring it back (new epoch): alive within 3 periods everywhere, itself included.
	if err := net.Start(4); err != nil {
		t.Fatal(err)
	}
	if err := net.Run(3 * P); err != nil {
		t.Fatal(err)
	}
	expect(t, net, all(5), func(int) protocol.State { return protocol.Alive })

	// Partition 3|2: the three see each other alive and the two dead; the
	// two have no quorum (unknown for everyone, themselves included).
	net.Partition(func(i int) int {
		if i < 3 {
			return 0
		}
		return 1
	})
	if err := net.Run(4 * P); err != nil {
		t.Fatal(err)
	}
	expect(t, net, []int{0, 1, 2}, func(j int) protocol.State {
		if j < 3 {
			return protocol.Alive
		}
		return protocol.Dead
	})
	expect(t, net, []int{3, 4}, func(int) protocol.State { return protocol.Unknown })
	if f := net.Engine(3).FreshVoters(); f != 2 {
		t.Fatalf("minority side counts %d fresh voters, want 2", f)
	}
	net.Heal()
	if err := net.Run(3 * P); err != nil {
		t.Fatal(err)
	}
	expect(t, net, all(5), func(int) protocol.State { return protocol.Alive })
}

// TestNoFlapUnderLoss: 10% loss on every datagram never changes a verdict
// in a healthy unit of 10.
func TestNoFlapUnderLoss(t *testing.T) {
	net := unit(t, 10, 0.10)
	if err := net.Run(4 * P); err != nil {
		t.Fatal(err)
	}
	expect(t, net, all(10), func(int) protocol.State { return protocol.Alive })
	flips := 0
	net.OnVerdict = func(time.Time, int, int, protocol.State) { flips++ }
	if err := net.Run(100 * P); err != nil {
		t.Fatal(err)
	}
	if flips != 0 {
		t.Fatalf("%d verdict changes in a healthy unit under 10%% loss", flips)
	}
}

// TestClockSkew: nodes whose clocks are +30 s and −30 s off (60 s apart)
// accept each other (the default window is ±90 s, and freshness is judged
// on the receiver's clock); a node 150 s off is refused by everyone,
// counted as clock_skew, and voted dead.
func TestClockSkew(t *testing.T) {
	net, err := New(Config{N: 5, Period: P, LatencyMin: time.Millisecond, LatencyMax: 2 * time.Millisecond, Unit: "u", Skew: func(i int) time.Duration {
		switch i {
		case 0:
			return 30 * time.Second
		case 1:
			return -30 * time.Second
		case 4:
			return 150 * time.Second
		}
		return 0
	}})
	if err != nil {
		t.Fatal(err)
	}
	if err := net.Run(5 * P); err != nil {
		t.Fatal(err)
	}
	expect(t, net, []int{0, 1, 2, 3}, func(j int) protocol.State {
		if j == 4 {
			return protocol.Dead
		}
		return protocol.Alive
	})
	if net.Rejects(2)[protocol.ReasonClockSkew] == 0 {
		t.Fatal("no clock_skew rejections counted for the 90 s node")
	}
	for i := 0; i < 4; i++ {
		if r := net.Rejects(i); len(r) != 1 || r[protocol.ReasonClockSkew] == 0 {
			t.Fatalf("%s rejections %v, want only clock_skew", net.Name(i), r)
		}
	}
}

// TestAttacks injects forged, replayed, reordered, oversized, malformed,
// wrong-unit and unknown-sender messages into a live unit: each is refused
// with its reason, counted, and changes no verdict.
func TestAttacks(t *testing.T) {
	net := unit(t, 5, 0)
	if err := net.Run(3 * P); err != nil {
		t.Fatal(err)
	}
	victim := 0
	eng := net.Engine(victim)
	now := net.Now()

	_, otherKey, _ := ed25519.GenerateKey(rand.Reader)
	digest := protocol.MemberDigest(eng.Names())
	deadView := []protocol.State{protocol.Dead, protocol.Dead, protocol.Dead, protocol.Dead, protocol.Dead}
	mk := func(seq uint64, at time.Time, sender, unit string, key ed25519.PrivateKey) []byte {
		d, err := protocol.Encode(&protocol.Message{Seq: seq, Time: at, MemberDigest: digest, Sender: sender, Unit: unit, Kind: protocol.ViewFull, Full: deadView}, key)
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	// A genuine message of member 1 (signed with its key) saying everyone is
	// dead, then its replay and an older one. Its high sequence number makes
	// member 0 refuse member 1's real traffic as reordered afterwards, so
	// member 1 is dead in member 0's own view — one vote of five.
	genuine := mk(1<<62, now, net.Name(1), "site-a", net.Key(1))
	older := mk(1<<62-1, now, net.Name(1), "site-a", net.Key(1))
	if err := net.Inject(victim, genuine); err != nil {
		t.Fatalf("genuine message refused: %v", err)
	}
	cases := []struct {
		name string
		data []byte
		want protocol.Reason
	}{
		{"forged: member 2's name, attacker key", mk(1<<62, now, net.Name(2), "site-a", otherKey), protocol.ReasonForged},
		{"forged: member 3 signs as member 2", mk(1<<62, now, net.Name(2), "site-a", net.Key(3)), protocol.ReasonForged},
		{"replayed", genuine, protocol.ReasonReplay},
		{"reordered", older, protocol.ReasonReordered},
		{"oversized", make([]byte, protocol.MaxMessageSize+1), protocol.ReasonOversized},
		{"malformed", []byte("hf\x01\x00garbage"), protocol.ReasonMalformed},
		{"truncated", genuine[:len(genuine)-1], protocol.ReasonMalformed},
		{"wrong unit", mk(1<<62+5, now, net.Name(1), "site-b", net.Key(1)), protocol.ReasonWrongUnit},
		{"unknown sender", mk(1, now, "intruder", "site-a", otherKey), protocol.ReasonUnknownSender},
		{"clock skew", mk(1<<62+6, now.Add(5*time.Minute), net.Name(1), "site-a", net.Key(1)), protocol.ReasonClockSkew},
		{"claims to be me", mk(1<<62, now, net.Name(victim), "site-a", net.Key(victim)), protocol.ReasonSelf},
	}
	for _, c := range cases {
		before := net.Rejects(victim)[c.want]
		err := net.Inject(victim, c.data)
		if got := protocol.ReasonOf(err); got != c.want {
			t.Errorf("%s: reason %q (%v), want %q", c.name, got, err, c.want)
		}
		if net.Rejects(victim)[c.want] != before+1 {
			t.Errorf("%s: not counted", c.name)
		}
	}
	// One genuine "everyone dead" view is one vote: no verdict moves.
	if err := net.Run(P); err != nil {
		t.Fatal(err)
	}
	expect(t, net, all(5), func(int) protocol.State { return protocol.Alive })
}
