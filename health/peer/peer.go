// Package peer is one member's health engine: it turns received view
// messages and the passage of time into this member's own view (who it has
// heard from recently), its outgoing signed message, and verdicts over the
// unit. It is driven by its caller — Tick(now) and Receive(now, data) — and
// never touches sockets, files, timers or Kubernetes, so the daemon, the
// tests and the simulation benchmark run exactly the same code.
//
// Probing is push-based: every member sends one small signed message per
// period to every other member (its heartbeat, carrying its view as a
// cumulative delta against its last full view); a member is alive in my view
// while its messages keep verifying, dead once none has arrived for
// DeadAfter. A member's view counts as a vote while its messages keep
// arriving (VoteTTL), judged by the receiver's clock, so clock skew between
// nodes never shortens or stretches a vote.
package peer

import (
	"bytes"
	"crypto/ed25519"
	"errors"
	"fmt"
	"time"

	"github.com/holdfast-edge/holdfast/health/members"
	"github.com/holdfast-edge/holdfast/health/protocol"
	"github.com/holdfast-edge/holdfast/health/vote"
)

// Config builds an Engine. Members is the unit (every member of Self's unit,
// including Self); the engine sorts nothing itself, it indexes Members in
// the order given, which must be sorted by name (members.Unit does that).
type Config struct {
	Self    string
	Unit    string
	Members []members.Member
	Key     ed25519.PrivateKey
	Period  time.Duration
	// DeadAfter: a member not heard from for this long is dead in my view.
	// Default 2.5 periods (two lost messages in a row are tolerated).
	DeadAfter time.Duration
	// VoteTTL: a member's view counts while I heard from it this recently.
	// Default DeadAfter.
	VoteTTL time.Duration
	// MaxSkew: messages whose timestamp is further than this from my clock
	// are refused. Positive (holdfastd: DefaultMaxSkew).
	MaxSkew time.Duration
	// FullEvery: a full view is sent at least every FullEvery messages
	// (views of up to FullAlways members are always sent full). Default 16.
	FullEvery int
	// Epoch makes sequence numbers increase across restarts: seq =
	// epoch<<32 | counter. The caller persists it and passes a larger one
	// on every start.
	Epoch uint32
	// Verifier defaults to protocol.Ed25519Verifier.
	Verifier protocol.Verifier
	// Start is when the engine started (members never heard from stay
	// unknown until DeadAfter after Start).
	Start time.Time
}

// FullAlways: units up to this size always send their full view (it costs at
// most 64 bytes).
const FullAlways = 256

type peerState struct {
	key       ed25519.PublicKey
	window    protocol.ReplayWindow
	heard     bool
	lastHeard time.Time // receiver's clock

	// The member's view: base (interned, immutable) at baseSeq plus delta.
	base    []protocol.State
	baseSeq uint64
	delta   []protocol.Change
	valid   bool      // base and delta are consistent and usable
	counted bool      // currently counted in the tally
	lastAt  time.Time // sender timestamp of the newest accepted message
	// lastVote: receiver's clock when the current view arrived; the view
	// counts until VoteTTL after it.
	lastVote time.Time
	// since: when the member joined my list by a member change (zero: at
	// Start); it stays unknown, not dead, until DeadAfter after that.
	since time.Time
}

func (p *peerState) at(i int) protocol.State {
	for j := len(p.delta) - 1; j >= 0; j-- {
		if p.delta[j].Index == i {
			return p.delta[j].State
		}
	}
	return p.base[i]
}

// Engine is one member's protocol state. It is not safe for concurrent use.
type Engine struct {
	cfg      Config
	n        int
	self     int
	index    map[string]int
	names    []string
	digest   uint32
	peers    []peerState
	tally    *vote.Tally
	view     []protocol.State // my view
	interned map[string][]protocol.State

	counter     uint32
	lastFullSeq uint64
	lastFull    []protocol.State
	sinceFull   int
	nextSend    time.Time
	lastSend    time.Time
	dirty       bool
	started     bool

	// prev translates views built on the member list before the last
	// SetMembers (nil before any change).
	prev *remap
}

// DefaultMaxSkew is holdfastd's clock skew bound: nodes each within ±30 s
// of true time, i.e. up to 60 s apart, always accept each other, with
// margin.
const DefaultMaxSkew = 90 * time.Second

// New validates cfg and returns an engine.
func New(cfg Config) (*Engine, error) {
	if cfg.Period <= 0 {
		return nil, errors.New("probe period must be positive")
	}
	if cfg.DeadAfter == 0 {
		cfg.DeadAfter = cfg.Period * 5 / 2
	}
	if cfg.DeadAfter <= cfg.Period {
		return nil, fmt.Errorf("dead-after %s must be longer than the probe period %s", cfg.DeadAfter, cfg.Period)
	}
	if cfg.VoteTTL == 0 {
		cfg.VoteTTL = cfg.DeadAfter
	}
	if cfg.MaxSkew <= 0 {
		return nil, fmt.Errorf("max clock skew %s: want a positive duration", cfg.MaxSkew)
	}
	if cfg.FullEvery == 0 {
		cfg.FullEvery = 16
	}
	if cfg.Verifier == nil {
		cfg.Verifier = protocol.Ed25519Verifier{}
	}
	if len(cfg.Key) != ed25519.PrivateKeySize {
		return nil, fmt.Errorf("private key has %d bytes, want %d", len(cfg.Key), ed25519.PrivateKeySize)
	}
	l, err := newLayout(cfg.Self, cfg.Unit, cfg.Members, cfg.Key)
	if err != nil {
		return nil, err
	}
	e := &Engine{cfg: cfg, interned: map[string][]protocol.State{}}
	e.install(l, make([]peerState, l.n), make([]protocol.State, l.n), make([]protocol.State, l.n))
	return e, nil
}

// layout is a unit's member list, checked and indexed for one engine.
type layout struct {
	unit   string
	list   []members.Member
	n      int
	self   int
	index  map[string]int
	names  []string
	keys   []ed25519.PublicKey
	digest uint32
}

// newLayout checks that list is sorted by name, unique, all in unit, and
// publishes key's public half for self.
func newLayout(self, unit string, list []members.Member, key ed25519.PrivateKey) (*layout, error) {
	l := &layout{unit: unit, list: list, n: len(list), self: -1, index: map[string]int{}}
	for i, m := range list {
		if i > 0 && list[i-1].Name >= m.Name {
			return nil, fmt.Errorf("members must be sorted by name and unique (%q before %q)", list[i-1].Name, m.Name)
		}
		if m.Unit != unit {
			return nil, fmt.Errorf("member %q is in unit %q, not %q", m.Name, m.Unit, unit)
		}
		k, err := m.Key()
		if err != nil {
			return nil, err
		}
		l.index[m.Name] = i
		l.names = append(l.names, m.Name)
		l.keys = append(l.keys, k)
		if m.Name == self {
			l.self = i
		}
	}
	if l.self < 0 {
		return nil, fmt.Errorf("node %q is not a member of unit %q", self, unit)
	}
	if !bytes.Equal(l.keys[l.self], key.Public().(ed25519.PublicKey)) {
		return nil, fmt.Errorf("the member list publishes a different public key for %q than the private key in use", self)
	}
	l.digest = protocol.MemberDigest(l.names)
	return l, nil
}

// install makes l the engine's member list, with the given per-member peer
// state, view and starting verdicts (all indexed by l); peers' keys come
// from l, and no peer is counted until Tick finds its view fresh.
func (e *Engine) install(l *layout, peers []peerState, view, verdicts []protocol.State) {
	e.cfg.Unit, e.cfg.Members = l.unit, l.list
	e.n, e.self, e.index, e.names, e.digest = l.n, l.self, l.index, l.names, l.digest
	for i := range peers {
		peers[i].key = l.keys[i]
		peers[i].counted = false
	}
	e.peers = peers
	e.view = view
	e.view[e.self] = protocol.Alive
	e.tally = vote.NewTallyWith(verdicts)
	e.tally.Add(func(i int) protocol.State { return e.view[i] })
}

// SetMembers switches a running engine to a new member list of its unit
// (sorted by name, Self included; unit may change too) without a restart.
// Receivers keep a replay window per sender, so the sequence counter carries
// on in the same epoch. A member that remains with the same key keeps its
// replay window, last-heard time, state in my view and verdict, and its last
// view is translated to the new indices and keeps counting; a new member (or
// one whose key changed) starts unknown and is dead in my view only if not
// heard within DeadAfter from now. Until the next change, views that
// senders still build on the previous list are translated too, so the
// unit's votes keep counting while its members pick up the change one by
// one. The next message is sent at the next Tick and carries a full view on
// the new list. On error the engine is unchanged.
func (e *Engine) SetMembers(now time.Time, unit string, list []members.Member) error {
	l, err := newLayout(e.cfg.Self, unit, list, e.cfg.Key)
	if err != nil {
		return err
	}
	r := &remap{digest: e.digest, to: make([]int, e.n)}
	for j, name := range e.names {
		r.to[j] = -1
		if i, ok := l.index[name]; ok && bytes.Equal(l.keys[i], e.peers[j].key) {
			r.to[j] = i
		}
	}
	peers := make([]peerState, l.n)
	for i := range peers {
		peers[i].since = now
	}
	view := make([]protocol.State, l.n)
	verdicts := make([]protocol.State, l.n)
	for j, i := range r.to {
		if i >= 0 {
			peers[i] = r.carry(e.peers[j], l.n)
			view[i] = e.view[j]
			verdicts[i] = e.tally.Verdict(j)
		}
	}
	e.install(l, peers, view, verdicts)
	e.prev = r
	clear(e.interned)
	// The next message is a full view on the new list, sent right away so
	// that peers count this member's vote again without waiting a period.
	e.lastFull, e.lastFullSeq, e.sinceFull = nil, 0, 0
	e.nextSend = time.Time{}
	return nil
}

// remap translates views indexed by a previous member list into the current one.
type remap struct {
	digest uint32 // of the previous list
	to     []int  // previous index → current index, -1 when gone
}

// full translates a full view; members new to the list are unknown in it.
func (r *remap) full(old []protocol.State, n int) []protocol.State {
	out := make([]protocol.State, n)
	for j, s := range old {
		if i := r.to[j]; i >= 0 {
			out[i] = s
		}
	}
	return out
}

// delta translates changes, dropping those on members that left; ok is
// false when an index is outside the previous list.
func (r *remap) delta(old []protocol.Change) (out []protocol.Change, ok bool) {
	out = make([]protocol.Change, 0, len(old))
	for _, c := range old {
		if c.Index >= len(r.to) {
			return nil, false
		}
		if i := r.to[c.Index]; i >= 0 {
			out = append(out, protocol.Change{Index: i, State: c.State})
		}
	}
	return out, true
}

// carry is a remaining member's state under the new list: replay window and
// last-heard time unchanged, its view translated (an unusable one is
// dropped, so no later delta can apply to a base on the old indices).
func (r *remap) carry(p peerState, n int) peerState {
	if !p.valid {
		p.base, p.baseSeq, p.delta = nil, 0, nil
		return p
	}
	p.base = r.full(p.base, n)
	p.delta, _ = r.delta(p.delta)
	return p
}

// current makes m's view index the current member list, translating a view
// built on the previous list (its sender has not picked up the last change
// yet); it reports false for a view on any other list.
func (e *Engine) current(m *protocol.Message) bool {
	if m.MemberDigest == e.digest {
		return true
	}
	if e.prev == nil || m.MemberDigest != e.prev.digest {
		return false
	}
	switch m.Kind {
	case protocol.ViewFull:
		if len(m.Full) != len(e.prev.to) {
			return false
		}
		m.Full = e.prev.full(m.Full, e.n)
	case protocol.ViewDelta:
		d, ok := e.prev.delta(m.Delta)
		if !ok {
			return false
		}
		m.Delta = d
	}
	return true
}

// Names returns the unit's member names in index order.
func (e *Engine) Names() []string { return e.names }

// Tick advances the engine to now: it refreshes my view and the freshness of
// every vote, recomputes verdicts, and returns the message to send to every
// other member when one is due (once per period, or early — at most every
// quarter period — when a member became dead in my view). changed lists members whose
// verdict changed.
func (e *Engine) Tick(now time.Time) (msg []byte, changed []int, err error) {
	if !e.started {
		e.started = true
		if e.cfg.Start.IsZero() {
			e.cfg.Start = now
		}
	}
	for i := range e.peers {
		if i == e.self {
			continue
		}
		p := &e.peers[i]
		var s protocol.State
		switch {
		case p.heard && now.Sub(p.lastHeard) <= e.cfg.DeadAfter:
			s = protocol.Alive
		case p.heard || now.Sub(e.startOf(p)) > e.cfg.DeadAfter:
			s = protocol.Dead
		}
		if old := e.view[i]; old != s {
			e.view[i] = s
			e.tally.Move(i, old, s)
			// Only a death is sent early: it is what the unit waits for.
			// Other changes ride on the next periodic message, so that
			// loss-induced flips cost no extra datagrams on recovery.
			if s == protocol.Dead {
				e.dirty = true
			}
		}
		fresh := p.valid && now.Sub(p.lastVote) <= e.cfg.VoteTTL
		if fresh != p.counted {
			if fresh {
				e.tally.Add(p.at)
			} else {
				e.tally.Remove(p.at)
			}
			p.counted = fresh
		}
	}
	changed = e.tally.Decide()
	due := !now.Before(e.nextSend)
	early := e.dirty && now.Sub(e.lastSend) >= e.cfg.Period/4
	if !due && !early {
		return nil, changed, nil
	}
	msg, err = e.encode(now)
	if err != nil {
		return nil, changed, err
	}
	e.lastSend = now
	e.nextSend = now.Add(e.cfg.Period)
	e.dirty = false
	return msg, changed, nil
}

// startOf is when the wait for p's first message began.
func (e *Engine) startOf(p *peerState) time.Time {
	if p.since.After(e.cfg.Start) {
		return p.since
	}
	return e.cfg.Start
}

func (e *Engine) encode(now time.Time) ([]byte, error) {
	e.counter++
	seq := uint64(e.cfg.Epoch)<<32 | uint64(e.counter)
	m := &protocol.Message{Seq: seq, Time: now, MemberDigest: e.digest, Sender: e.cfg.Self, Unit: e.cfg.Unit}
	var delta []protocol.Change
	full := e.n <= FullAlways || e.lastFull == nil || e.sinceFull+1 >= e.cfg.FullEvery
	if !full {
		for i, s := range e.view {
			if e.lastFull[i] != s {
				delta = append(delta, protocol.Change{Index: i, State: s})
			}
		}
		// A change costs about 3 bytes and is repeated in every message
		// until the next full view; a full view costs n/4 once. Re-base as
		// soon as the delta costs an eighth of a full view, so a stale base
		// (e.g. the first full view, sent before every peer was heard) is
		// not paid for on every message.
		full = 3*len(delta) >= (e.n+3)/4/8
	}
	if full {
		m.Kind = protocol.ViewFull
		m.Full = e.view
	} else {
		m.Kind = protocol.ViewDelta
		m.DeltaBase = e.lastFullSeq
		m.Delta = delta
	}
	out, err := protocol.Encode(m, e.cfg.Key)
	if err != nil {
		return nil, err
	}
	if full {
		e.lastFullSeq = seq
		e.lastFull = append(e.lastFull[:0], e.view...)
		e.sinceFull = 0
	} else {
		e.sinceFull++
	}
	return out, nil
}

// Receive checks and applies one message. It returns the sender's name when
// the sender is known, and a *protocol.RejectError (see protocol.ReasonOf)
// when the message is refused; a refused message changes nothing.
func (e *Engine) Receive(now time.Time, data []byte) (sender string, err error) {
	m, err := protocol.Decode(data)
	if err != nil {
		return "", err
	}
	i, ok := e.index[m.Sender]
	if !ok {
		return m.Sender, &protocol.RejectError{Reason: protocol.ReasonUnknownSender, Detail: fmt.Sprintf("%q is not a member of unit %q", m.Sender, e.cfg.Unit)}
	}
	if i == e.self {
		return m.Sender, &protocol.RejectError{Reason: protocol.ReasonSelf, Detail: "message claims to come from this node"}
	}
	if m.Unit != e.cfg.Unit {
		return m.Sender, &protocol.RejectError{Reason: protocol.ReasonWrongUnit, Detail: fmt.Sprintf("sender says unit %q, this node is in %q", m.Unit, e.cfg.Unit)}
	}
	p := &e.peers[i]
	if err := p.window.Check(m.Seq); err != nil {
		return m.Sender, err
	}
	if err := protocol.CheckClock(m, now, e.cfg.MaxSkew); err != nil {
		return m.Sender, err
	}
	if err := m.Verify(e.cfg.Verifier, p.key); err != nil {
		return m.Sender, err
	}
	p.window.Accept(m.Seq)
	p.heard = true
	p.lastHeard = now
	p.lastAt = m.Time
	e.applyView(now, p, m)
	return m.Sender, nil
}

// applyView updates the sender's view and, when it is counted, the tally.
func (e *Engine) applyView(now time.Time, p *peerState, m *protocol.Message) {
	if !e.current(m) {
		// A view on another member list is not counted. The sender's last
		// view on my list keeps counting until VoteTTL after it arrived,
		// as if this message had been lost: members pick up a member
		// change one after the other, and the change-over must not
		// interrupt the vote.
		return
	}
	if !e.usable(p, m) {
		if p.counted {
			e.tally.Remove(p.at)
			p.counted = false
		}
		p.valid = false
		return
	}
	p.lastVote = now
	if !p.counted || !p.valid {
		// Not counted yet: just install the view; Tick decides freshness.
		e.installView(p, m)
		p.valid = true
		return
	}
	// Counted: move only the entries that differ between old and new view.
	if m.Kind == protocol.ViewFull {
		base := e.intern(m.Full)
		for t := 0; t < e.n; t++ {
			e.tally.Move(t, p.at(t), base[t])
		}
		p.base, p.baseSeq, p.delta = base, m.Seq, nil
		return
	}
	touched := make([]int, 0, len(p.delta)+len(m.Delta))
	old := make([]protocol.State, 0, cap(touched))
	for _, c := range p.delta {
		touched = append(touched, c.Index)
		old = append(old, p.at(c.Index))
	}
	for _, c := range m.Delta {
		touched = append(touched, c.Index)
		old = append(old, p.at(c.Index))
	}
	p.delta = append(p.delta[:0], m.Delta...)
	seen := map[int]bool{}
	for k, t := range touched {
		if seen[t] {
			continue
		}
		seen[t] = true
		e.tally.Move(t, old[k], p.at(t))
	}
}

// usable reports whether m's view (on my member list) can be applied to p.
func (e *Engine) usable(p *peerState, m *protocol.Message) bool {
	switch m.Kind {
	case protocol.ViewFull:
		return len(m.Full) == e.n
	case protocol.ViewDelta:
		for _, c := range m.Delta {
			if c.Index >= e.n {
				return false
			}
		}
		return p.base != nil && p.baseSeq == m.DeltaBase
	}
	return false
}

func (e *Engine) installView(p *peerState, m *protocol.Message) {
	if m.Kind == protocol.ViewFull {
		p.base, p.baseSeq, p.delta = e.intern(m.Full), m.Seq, nil
		return
	}
	p.delta = append(p.delta[:0], m.Delta...)
}

// intern shares identical full views between senders (in a healthy unit
// every member sends the same one), so memory stays O(N) rather than O(N²).
func (e *Engine) intern(v []protocol.State) []protocol.State {
	b := make([]byte, len(v))
	for i, s := range v {
		b[i] = byte(s)
	}
	if s, ok := e.interned[string(b)]; ok {
		return s
	}
	// Views in use stay referenced by their peers; the map only has to
	// catch the common ones, so it is kept small.
	if len(e.interned) >= 16 {
		clear(e.interned)
	}
	e.interned[string(b)] = v
	return v
}

// Verdict returns the current verdict on member i.
func (e *Engine) Verdict(i int) protocol.State { return e.tally.Verdict(i) }

// Index returns a member's index.
func (e *Engine) Index(name string) (int, bool) {
	i, ok := e.index[name]
	return i, ok
}

// Snapshot is the engine's state for /v1/verdicts and persistence.
type Snapshot struct {
	Self     string            `json:"self"`
	Unit     string            `json:"unit"`
	Members  int               `json:"members"`
	Verdicts map[string]string `json:"verdicts"`
}

// Snapshot returns current verdicts.
func (e *Engine) Snapshot() Snapshot {
	s := Snapshot{Self: e.cfg.Self, Unit: e.cfg.Unit, Members: e.n, Verdicts: make(map[string]string, e.n)}
	for i, n := range e.names {
		s.Verdicts[n] = e.tally.Verdict(i).String()
	}
	return s
}

// View returns a copy of my own current view by member name.
func (e *Engine) View() map[string]string {
	out := make(map[string]string, e.n)
	for i, n := range e.names {
		out[n] = e.view[i].String()
	}
	return out
}

// FreshVoters is how many views (mine included) currently count.
func (e *Engine) FreshVoters() int { return e.tally.Active() }

// Counts returns how many fresh views say member i is alive and dead.
func (e *Engine) Counts(i int) (alive, dead int) { return e.tally.Counts(i) }

// SignedFullView encodes and signs my current full view with a new sequence
// number, for publication outside the peer exchange (the Lease). It does not
// change what peers receive.
func (e *Engine) SignedFullView(now time.Time) ([]byte, error) {
	e.counter++
	seq := uint64(e.cfg.Epoch)<<32 | uint64(e.counter)
	return protocol.Encode(&protocol.Message{Seq: seq, Time: now, MemberDigest: e.digest, Sender: e.cfg.Self, Unit: e.cfg.Unit, Kind: protocol.ViewFull, Full: e.view}, e.cfg.Key)
}
