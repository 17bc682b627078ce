package peer_test

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"sort"
	"testing"
	"time"

	"github.com/holdfast-edge/holdfast/health/members"
	"github.com/holdfast-edge/holdfast/health/peer"
	"github.com/holdfast-edge/holdfast/health/protocol"
)

const period = time.Second

// bus runs engines on a virtual clock and delivers every message at once to
// every member of the sender's list that has a running engine.
type bus struct {
	t        *testing.T
	now      time.Time
	keys     map[string]ed25519.PrivateKey
	engines  map[string]*peer.Engine
	rejected map[string]int // reason → count, over all receivers
	// watch: observer → members whose verdict must never be dead (or, with
	// strict, never anything but alive) at that observer.
	watch  map[string][]string
	strict bool
	sent   map[string][]*protocol.Message // per sender, decoded
}

func newBus(t *testing.T, names ...string) *bus {
	b := &bus{t: t, now: time.Unix(1_700_000_000, 0), keys: map[string]ed25519.PrivateKey{}, engines: map[string]*peer.Engine{},
		rejected: map[string]int{}, watch: map[string][]string{}, sent: map[string][]*protocol.Message{}}
	for _, n := range names {
		b.rekey(n)
	}
	return b
}

func (b *bus) rekey(name string) {
	_, k, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		b.t.Fatal(err)
	}
	b.keys[name] = k
}

// list is the unit "u" made of names, sorted, with the current keys.
func (b *bus) list(names ...string) []members.Member {
	var out []members.Member
	for _, n := range names {
		pub := base64.StdEncoding.EncodeToString(b.keys[n].Public().(ed25519.PublicKey))
		out = append(out, members.Member{Name: n, Address: "127.0.0.1", Unit: "u", PublicKey: pub})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

func (b *bus) start(name string, list []members.Member, epoch uint32) *peer.Engine {
	b.t.Helper()
	e, err := peer.New(peer.Config{Self: name, Unit: "u", Members: list, Key: b.keys[name], Period: period, MaxSkew: peer.DefaultMaxSkew, Epoch: epoch, Start: b.now})
	if err != nil {
		b.t.Fatal(err)
	}
	b.engines[name] = e
	return e
}

func (b *bus) set(name string, list []members.Member) {
	b.t.Helper()
	if err := b.engines[name].SetMembers(b.now, "u", list); err != nil {
		b.t.Fatalf("%s SetMembers: %v", name, err)
	}
}

// run advances the clock by d in eighths of a period, ticking every engine
// and delivering what it sends, and checks the watched verdicts after each step.
func (b *bus) run(d time.Duration) {
	b.t.Helper()
	for end := b.now.Add(d); b.now.Before(end); b.now = b.now.Add(period / 8) {
		for _, name := range sortedKeys(b.engines) {
			b.step(name)
		}
		b.check()
	}
}

func (b *bus) step(name string) {
	b.t.Helper()
	e := b.engines[name]
	msg, _, err := e.Tick(b.now)
	if err != nil {
		b.t.Fatal(err)
	}
	if msg == nil {
		return
	}
	m, err := protocol.Decode(msg)
	if err != nil {
		b.t.Fatal(err)
	}
	b.sent[name] = append(b.sent[name], m)
	for _, to := range e.Names() {
		r, ok := b.engines[to]
		if to == name || !ok {
			continue
		}
		if _, err := r.Receive(b.now, msg); err != nil {
			b.rejected[string(protocol.ReasonOf(err))]++
		}
	}
}

func (b *bus) check() {
	b.t.Helper()
	for obs, names := range b.watch {
		snap := b.engines[obs].Snapshot()
		for _, n := range names {
			v := snap.Verdicts[n]
			if v == "dead" || (b.strict && v != "alive") {
				b.t.Fatalf("at %s: %s says %s is %s", b.now.Format("15:04:05.000"), obs, n, v)
			}
		}
	}
}

// verdicts is every running engine's verdicts, "obs: name=verdict ...".
func (b *bus) verdicts(obs string) string {
	snap := b.engines[obs].Snapshot()
	s := fmt.Sprintf("%s(%d):", obs, snap.Members)
	for _, n := range sortedKeys(snap.Verdicts) {
		s += " " + n + "=" + snap.Verdicts[n]
	}
	return s
}

// until runs until every observer sees want for every name, and returns how long it took.
func (b *bus) until(limit time.Duration, observers, names []string, want string) time.Duration {
	b.t.Helper()
	start := b.now
	for b.now.Sub(start) <= limit {
		ok := true
		for _, o := range observers {
			for _, n := range names {
				if b.engines[o].Snapshot().Verdicts[n] != want {
					ok = false
				}
			}
		}
		if ok {
			return b.now.Sub(start)
		}
		b.run(period / 8)
	}
	for _, o := range observers {
		b.t.Log(b.verdicts(o))
	}
	b.t.Fatalf("%v not %s at %v within %s", names, want, observers, limit)
	return 0
}

func sortedKeys[V any](m map[string]V) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// TestSetMembersAddRemove: a unit of two gains a running third member, then
// loses it while it keeps sending. The two that remain never stop being
// alive at each other (their votes keep counting through the change-over),
// sequence numbers are never refused, and the third is alive everywhere
// within a few periods.
func TestSetMembersAddRemove(t *testing.T) {
	b := newBus(t, "a", "b", "c")
	ab, abc := b.list("a", "b"), b.list("a", "b", "c")
	b.start("a", ab, 1)
	b.start("b", ab, 1)
	b.until(3*period, []string{"a", "b"}, []string{"a", "b"}, "alive")
	b.watch = map[string][]string{"a": {"a", "b"}, "b": {"a", "b"}}
	b.strict = true
	b.run(2 * period)

	b.start("c", abc, 1)
	b.set("a", abc)
	if got := b.engines["a"].Snapshot(); got.Members != 3 || got.Verdicts["b"] != "alive" || got.Verdicts["c"] != "unknown" {
		t.Fatalf("right after the change: %+v", got)
	}
	b.run(period / 2)
	// b is still on the old list: its view is translated and still counts
	// at a (with a's own and c's), and a's last view on the old list still
	// counts at b.
	if f := b.engines["a"].FreshVoters(); f != 3 {
		t.Fatalf("a counts %d views after its change, want 3", f)
	}
	if f := b.engines["b"].FreshVoters(); f != 2 {
		t.Fatalf("b counts %d views after a's change, want 2", f)
	}
	b.run(period / 2)
	b.set("b", abc)
	el := b.until(4*period, []string{"a", "b", "c"}, []string{"a", "b", "c"}, "alive")
	t.Logf("added member alive everywhere %s after the last change", el)
	b.watch["c"] = []string{"a", "b", "c"}
	b.run(3 * period)

	// Remove c (its engine keeps sending on the old list).
	b.watch = map[string][]string{"a": {"a", "b"}, "b": {"a", "b"}}
	b.set("a", ab)
	b.run(period / 3)
	b.set("b", ab)
	before := b.rejected[string(protocol.ReasonUnknownSender)]
	b.run(4 * period)
	for _, o := range []string{"a", "b"} {
		snap := b.engines[o].Snapshot()
		if snap.Members != 2 || len(snap.Verdicts) != 2 || snap.Verdicts["a"] != "alive" || snap.Verdicts["b"] != "alive" {
			t.Fatalf("after removal: %s", b.verdicts(o))
		}
	}
	if b.rejected[string(protocol.ReasonUnknownSender)] <= before {
		t.Fatal("the removed member's messages were not refused as unknown_sender")
	}
	for _, r := range []protocol.Reason{protocol.ReasonReplay, protocol.ReasonReordered, protocol.ReasonForged} {
		if n := b.rejected[string(r)]; n != 0 {
			t.Fatalf("%d messages refused as %s across the changes", n, r)
		}
	}
	checkSeqIncreasing(t, b.sent)
}

func checkSeqIncreasing(t *testing.T, sent map[string][]*protocol.Message) {
	t.Helper()
	for name, msgs := range sent {
		for i := 1; i < len(msgs); i++ {
			if msgs[i].Seq <= msgs[i-1].Seq {
				t.Fatalf("%s sent seq %#x after %#x", name, msgs[i].Seq, msgs[i-1].Seq)
			}
		}
	}
}

// TestSetMembersSilentNewMember: a member added but never heard from is
// unknown for DeadAfter after the change (not dead at once, although the
// engines started long before), then dead; the others stay alive.
func TestSetMembersSilentNewMember(t *testing.T) {
	b := newBus(t, "a", "b", "c")
	ab, abc := b.list("a", "b"), b.list("a", "b", "c")
	b.start("a", ab, 1)
	b.start("b", ab, 1)
	b.run(10 * period)
	b.watch = map[string][]string{"a": {"a", "b"}, "b": {"a", "b"}}
	b.strict = true
	b.set("a", abc)
	b.set("b", abc)
	changed := b.now
	b.run(2 * period)
	if s := b.engines["a"].View()["c"]; s != "unknown" {
		t.Fatalf("2 periods after the change a's view of c is %s, want unknown", s)
	}
	b.until(3*period, []string{"a", "b"}, []string{"c"}, "dead")
	total := b.now.Sub(changed)
	if total <= 5*period/2 {
		t.Fatalf("c dead after %s, before DeadAfter", total)
	}
	t.Logf("silent new member dead %s after the change", total)
}

// TestSetMembersKeyChange: a remaining name with a new key is a new member:
// its old-key messages are forged and it starts unknown.
func TestSetMembersKeyChange(t *testing.T) {
	b := newBus(t, "a", "b")
	b.start("a", b.list("a", "b"), 1)
	b.start("b", b.list("a", "b"), 1)
	b.until(3*period, []string{"a"}, []string{"b"}, "alive")
	b.rekey("b")
	b.set("a", b.list("a", "b"))
	if v := b.engines["a"].View()["b"]; v != "unknown" {
		t.Fatalf("a's view of b with a new key: %s, want unknown", v)
	}
	b.run(period + period/8)
	if b.rejected[string(protocol.ReasonForged)] == 0 {
		t.Fatal("messages signed with b's old key were accepted after its key changed")
	}
}

// TestSetMembersErrors: a refused list leaves the engine as it was.
func TestSetMembersErrors(t *testing.T) {
	b := newBus(t, "a", "b", "c")
	e := b.start("a", b.list("a", "b"), 1)
	b.run(period)
	other := b.list("a", "b")
	_, k, _ := ed25519.GenerateKey(rand.Reader)
	other[0].PublicKey = base64.StdEncoding.EncodeToString(k.Public().(ed25519.PublicKey))
	unsorted := b.list("a", "b", "c")
	unsorted[0], unsorted[2] = unsorted[2], unsorted[0]
	wrongUnit := b.list("a", "b")
	wrongUnit[1].Unit = "v"
	for name, list := range map[string][]members.Member{"without self": b.list("b", "c"), "other key for self": other, "unsorted": unsorted, "mixed units": wrongUnit} {
		if err := e.SetMembers(b.now, "u", list); err == nil {
			t.Errorf("%s: accepted", name)
		}
		if got := e.Names(); len(got) != 2 || got[0] != "a" || got[1] != "b" {
			t.Fatalf("%s: names now %v", name, got)
		}
	}
}

// TestSetMembersTranslatesDeltas: in a unit over FullAlways members views
// travel as deltas against a full view; a receiver that changed its list
// keeps counting a sender still on the old list, deltas included.
func TestSetMembersTranslatesDeltas(t *testing.T) {
	names := []string{"a", "b"}
	for i := 0; i < peer.FullAlways; i++ {
		names = append(names, fmt.Sprintf("s%03d", i)) // silent members
	}
	b := newBus(t, append(names, "t")...)
	old := b.list(names...)
	b.start("a", old, 1)
	b.start("b", old, 1)
	b.run(5 * period) // the silent ones are dead in both views by now
	b.set("a", b.list(append(names, "t")...))
	nb := len(b.sent["b"])
	b.run(2 * period) // less than DeadAfter: t is still unknown in a's view
	deltas := 0
	for _, m := range b.sent["b"][nb:] {
		if m.Kind == protocol.ViewDelta {
			deltas++
		}
	}
	if deltas == 0 {
		t.Fatal("b sent no delta view after a's change; the test does not exercise delta translation")
	}
	e := b.engines["a"]
	if f := e.FreshVoters(); f != 2 {
		t.Fatalf("a counts %d views, want 2 (b's on the old list translated)", f)
	}
	for _, n := range []string{"s000", "s255"} {
		i, _ := e.Index(n)
		if alive, dead := e.Counts(i); alive != 0 || dead != 2 {
			t.Fatalf("counts on %s: alive %d dead %d, want 0 and 2", n, alive, dead)
		}
	}
	i, _ := e.Index("b")
	if alive, _ := e.Counts(i); alive != 2 {
		t.Fatalf("alive votes on b: %d, want 2", alive)
	}
	ti, _ := e.Index("t")
	if alive, dead := e.Counts(ti); alive != 0 || dead != 0 {
		t.Fatalf("counts on the new member t: alive %d dead %d, want none yet", alive, dead)
	}
}

// TestForeignListViewExpires: a sender that moved to a list the receiver
// does not know keeps its last view counted only until VoteTTL after it
// arrived (its heartbeats still keep it alive in the receiver's view).
func TestForeignListViewExpires(t *testing.T) {
	b := newBus(t, "a", "b", "c")
	b.start("a", b.list("a", "b"), 1)
	b.start("b", b.list("a", "b"), 1)
	b.until(3*period, []string{"b"}, []string{"a", "b"}, "alive")
	b.set("a", b.list("a", "b", "c"))
	b.run(2 * period)
	if f := b.engines["b"].FreshVoters(); f != 2 {
		t.Fatalf("2 periods after a's change b counts %d views, want 2", f)
	}
	b.run(period)
	if f := b.engines["b"].FreshVoters(); f != 1 {
		t.Fatalf("3 periods after a's change b counts %d views, want 1 (a's view on the old list expired)", f)
	}
	if v := b.engines["b"].View()["a"]; v != "alive" {
		t.Fatalf("b's view of a: %s, want alive (its heartbeats still count)", v)
	}
}
