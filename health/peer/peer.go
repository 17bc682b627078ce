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
	// are refused. Default 90 s (so nodes each within ±30 s of true time,
	// i.e. up to 60 s apart, always accept each other, with margin).
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
}

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
	if cfg.MaxSkew == 0 {
		cfg.MaxSkew = 90 * time.Second
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
	e := &Engine{cfg: cfg, n: len(cfg.Members), self: -1, index: map[string]int{}, interned: map[string][]protocol.State{}}
	for i, m := range cfg.Members {
		if i > 0 && cfg.Members[i-1].Name >= m.Name {
			return nil, fmt.Errorf("members must be sorted by name and unique (%q before %q)", cfg.Members[i-1].Name, m.Name)
		}
		if m.Unit != cfg.Unit {
			return nil, fmt.Errorf("member %q is in unit %q, not %q", m.Name, m.Unit, cfg.Unit)
		}
		e.index[m.Name] = i
		e.names = append(e.names, m.Name)
		if m.Name == cfg.Self {
			e.self = i
		}
	}
	if e.self < 0 {
		return nil, fmt.Errorf("node %q is not a member of unit %q", cfg.Self, cfg.Unit)
	}
	pub := cfg.Key.Public().(ed25519.PublicKey)
	e.peers = make([]peerState, e.n)
	for i, m := range cfg.Members {
		k, err := m.Key()
		if err != nil {
			return nil, err
		}
		e.peers[i].key = k
		if i == e.self && !bytes.Equal(k, pub) {
			return nil, fmt.Errorf("the member list publishes a different public key for %q than the private key in use", cfg.Self)
		}
	}
	e.digest = protocol.MemberDigest(e.names)
	e.tally = vote.NewTally(e.n)
	e.view = make([]protocol.State, e.n)
	e.view[e.self] = protocol.Alive
	e.tally.Add(func(i int) protocol.State { return e.view[i] })
	return e, nil
}

// Names returns the unit's member names in index order.
func (e *Engine) Names() []string { return e.names }

// Self returns this member's name.
func (e *Engine) Self() string { return e.cfg.Self }

// Unit returns the unit name.
func (e *Engine) Unit() string { return e.cfg.Unit }

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
		case p.heard || now.Sub(e.cfg.Start) > e.cfg.DeadAfter:
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
		fresh := p.valid && p.heard && now.Sub(p.lastHeard) <= e.cfg.VoteTTL
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
	e.applyView(i, p, m)
	return m.Sender, nil
}

// applyView updates the sender's view and, when it is counted, the tally.
func (e *Engine) applyView(i int, p *peerState, m *protocol.Message) {
	usable := m.MemberDigest == e.digest
	switch {
	case !usable || m.Kind == protocol.ViewNone:
		usable = false
	case m.Kind == protocol.ViewFull:
		usable = len(m.Full) == e.n
	case m.Kind == protocol.ViewDelta:
		usable = p.base != nil && p.baseSeq == m.DeltaBase
		for _, c := range m.Delta {
			if c.Index >= e.n {
				usable = false
			}
		}
	}
	if !usable {
		if p.counted {
			e.tally.Remove(p.at)
			p.counted = false
		}
		p.valid = false
		return
	}
	if !p.counted || !p.valid {
		// Not counted yet: just install the view; Tick decides freshness.
		e.install(p, m)
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

func (e *Engine) install(p *peerState, m *protocol.Message) {
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
