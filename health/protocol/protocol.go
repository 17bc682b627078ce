// Package protocol is the wire format of holdfast health views: one signed,
// binary datagram per member per probe period that is at once the member's
// heartbeat and its vote (its view of every member of its unit).
//
// It owns encoding, decoding, Ed25519 signing and verification, and the
// per-sender replay window. It never touches the network, files, clocks
// (callers pass "now") or Kubernetes.
//
// Wire format, version 1 (all integers big-endian):
//
//	0   2  magic "hf"
//	2   1  version (1)
//	3   1  view kind: 0 none, 1 full, 2 delta
//	4   8  sequence (uint64, strictly increasing per sender)
//	12  8  timestamp, Unix milliseconds (int64) of the sender's clock
//	20  4  membership digest (first 4 bytes of SHA-256 of the unit's sorted member names)
//	24  1  sender name length n (1..253), then n bytes of name
//	    1  unit name length u (0..253), then u bytes of unit
//	    view, by kind:
//	      full:  uvarint member count M, then ceil(M/4) bytes, 2 bits per member
//	             in sorted-name order (0 unknown, 1 alive, 2 dead; 3 is invalid)
//	      delta: 8 byte sequence of the full view it applies to,
//	             uvarint change count k, k × (uvarint member index, 1 byte state)
//	    64 Ed25519 signature over every byte before it
//
// A message larger than MaxMessageSize is refused before it is parsed.
package protocol

import (
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"sort"
	"time"
)

// Version is the wire format version this package writes and reads.
const Version = 1

// MaxMessageSize bounds a datagram. A full view costs M/4 bytes, so 8 KiB
// covers units of about 30,000 members.
const MaxMessageSize = 8192

// MaxNameLen is the longest node or unit name accepted (a DNS subdomain).
const MaxNameLen = 253

const (
	headerLen = 24
	sigLen    = ed25519.SignatureSize
	// maxMembers bounds the member count a full view may claim.
	maxMembers = (MaxMessageSize - headerLen) * 4
)

var magic = [2]byte{'h', 'f'}

// State is one member's state in a view.
type State uint8

const (
	Unknown State = 0
	Alive   State = 1
	Dead    State = 2
)

func (s State) String() string {
	switch s {
	case Unknown:
		return "unknown"
	case Alive:
		return "alive"
	case Dead:
		return "dead"
	}
	return fmt.Sprintf("state(%d)", uint8(s))
}

// ViewKind says which view a message carries.
type ViewKind uint8

const (
	ViewNone  ViewKind = 0
	ViewFull  ViewKind = 1
	ViewDelta ViewKind = 2
)

// Change is one entry of a delta view.
type Change struct {
	Index int
	State State
}

// Message is a decoded view message.
type Message struct {
	Seq          uint64
	Time         time.Time // sender's clock, millisecond precision
	MemberDigest uint32
	Sender       string
	Unit         string
	Kind         ViewKind
	Full         []State  // Kind == ViewFull
	DeltaBase    uint64   // Kind == ViewDelta: Seq of the full view it applies to
	Delta        []Change // Kind == ViewDelta

	signed []byte // bytes covered by the signature (aliases the input)
	sig    []byte
}

// Reason classifies a rejected message; it is the label of the rejection metric.
type Reason string

const (
	ReasonOversized     Reason = "oversized"
	ReasonMalformed     Reason = "malformed"
	ReasonVersion       Reason = "version"
	ReasonUnknownSender Reason = "unknown_sender"
	ReasonWrongUnit     Reason = "wrong_unit"
	ReasonForged        Reason = "forged"
	ReasonReplay        Reason = "replay"
	ReasonReordered     Reason = "reordered"
	ReasonClockSkew     Reason = "clock_skew"
	ReasonSelf          Reason = "self"
)

// Reasons lists every rejection reason, so metrics can be pre-created at 0.
var Reasons = []Reason{ReasonOversized, ReasonMalformed, ReasonVersion, ReasonUnknownSender, ReasonWrongUnit, ReasonForged, ReasonReplay, ReasonReordered, ReasonClockSkew, ReasonSelf}

// RejectError is returned for every refused message.
type RejectError struct {
	Reason Reason
	Detail string
}

func (e *RejectError) Error() string {
	return fmt.Sprintf("message rejected (%s): %s", e.Reason, e.Detail)
}

func reject(r Reason, format string, args ...any) error {
	return &RejectError{Reason: r, Detail: fmt.Sprintf(format, args...)}
}

// ReasonOf returns the rejection reason of err, or "" if err is not a RejectError.
func ReasonOf(err error) Reason {
	var re *RejectError
	if errors.As(err, &re) {
		return re.Reason
	}
	return ""
}

// MemberDigest is the digest of a unit's member list that every message
// carries, so views (indexed by sorted name) are only read by receivers that
// index them the same way. names need not be sorted.
func MemberDigest(names []string) uint32 {
	s := append([]string(nil), names...)
	sort.Strings(s)
	h := sha256.New()
	for _, n := range s {
		h.Write([]byte(n))
		h.Write([]byte{'\n'})
	}
	var sum [32]byte
	h.Sum(sum[:0])
	return binary.BigEndian.Uint32(sum[:4])
}

// Encode builds and signs a message. Exactly the fields for m.Kind are used.
func Encode(m *Message, key ed25519.PrivateKey) ([]byte, error) {
	if len(m.Sender) == 0 || len(m.Sender) > MaxNameLen {
		return nil, fmt.Errorf("sender name length %d out of range 1..%d", len(m.Sender), MaxNameLen)
	}
	if len(m.Unit) > MaxNameLen {
		return nil, fmt.Errorf("unit name length %d exceeds %d", len(m.Unit), MaxNameLen)
	}
	if len(key) != ed25519.PrivateKeySize {
		return nil, fmt.Errorf("private key has %d bytes, want %d", len(key), ed25519.PrivateKeySize)
	}
	b := make([]byte, 0, headerLen+2+len(m.Sender)+len(m.Unit)+16+len(m.Full)/4+3*len(m.Delta)+sigLen)
	b = append(b, magic[0], magic[1], Version, byte(m.Kind))
	b = binary.BigEndian.AppendUint64(b, m.Seq)
	b = binary.BigEndian.AppendUint64(b, uint64(m.Time.UnixMilli()))
	b = binary.BigEndian.AppendUint32(b, m.MemberDigest)
	b = append(b, byte(len(m.Sender)))
	b = append(b, m.Sender...)
	b = append(b, byte(len(m.Unit)))
	b = append(b, m.Unit...)
	switch m.Kind {
	case ViewNone:
	case ViewFull:
		if len(m.Full) > maxMembers {
			return nil, fmt.Errorf("full view of %d members exceeds %d", len(m.Full), maxMembers)
		}
		b = binary.AppendUvarint(b, uint64(len(m.Full)))
		packed := make([]byte, (len(m.Full)+3)/4)
		for i, s := range m.Full {
			if s > Dead {
				return nil, fmt.Errorf("member %d has invalid state %d", i, s)
			}
			packed[i/4] |= byte(s) << (2 * (i % 4))
		}
		b = append(b, packed...)
	case ViewDelta:
		b = binary.BigEndian.AppendUint64(b, m.DeltaBase)
		b = binary.AppendUvarint(b, uint64(len(m.Delta)))
		for _, c := range m.Delta {
			if c.Index < 0 || c.State > Dead {
				return nil, fmt.Errorf("invalid delta entry %+v", c)
			}
			b = binary.AppendUvarint(b, uint64(c.Index))
			b = append(b, byte(c.State))
		}
	default:
		return nil, fmt.Errorf("invalid view kind %d", m.Kind)
	}
	if len(b)+sigLen > MaxMessageSize {
		return nil, fmt.Errorf("message of %d bytes exceeds the %d byte limit", len(b)+sigLen, MaxMessageSize)
	}
	return append(b, ed25519.Sign(key, b)...), nil
}

// Decode parses a message without checking its signature (see Verify). The
// returned Message aliases data.
func Decode(data []byte) (*Message, error) {
	m, err := decodeHeader(data)
	if err != nil {
		return nil, err
	}
	d := &decoder{body: m.signed, p: headerLen}
	if m.Sender, err = d.str("sender", 1); err != nil {
		return nil, err
	}
	if m.Unit, err = d.str("unit", 0); err != nil {
		return nil, err
	}
	switch m.Kind {
	case ViewNone:
	case ViewFull:
		m.Full, err = d.full()
	case ViewDelta:
		m.DeltaBase, m.Delta, err = d.delta()
	default:
		return nil, reject(ReasonMalformed, "unknown view kind %d", m.Kind)
	}
	if err != nil {
		return nil, err
	}
	if d.p != len(d.body) {
		return nil, reject(ReasonMalformed, "%d trailing bytes", len(d.body)-d.p)
	}
	return m, nil
}

// decodeHeader checks the size, magic and version and reads the fixed
// header; the signed body and the signature alias data.
func decodeHeader(data []byte) (*Message, error) {
	if len(data) > MaxMessageSize {
		return nil, reject(ReasonOversized, "%d bytes exceeds the %d byte limit", len(data), MaxMessageSize)
	}
	if len(data) < headerLen+2+sigLen {
		return nil, reject(ReasonMalformed, "%d bytes is shorter than the smallest message", len(data))
	}
	if data[0] != magic[0] || data[1] != magic[1] {
		return nil, reject(ReasonMalformed, "bad magic %q", data[:2])
	}
	if data[2] != Version {
		return nil, reject(ReasonVersion, "wire version %d, this binary speaks %d", data[2], Version)
	}
	return &Message{
		Kind:         ViewKind(data[3]),
		Seq:          binary.BigEndian.Uint64(data[4:]),
		Time:         time.UnixMilli(int64(binary.BigEndian.Uint64(data[12:]))),
		MemberDigest: binary.BigEndian.Uint32(data[20:]),
		signed:       data[:len(data)-sigLen],
		sig:          data[len(data)-sigLen:],
	}, nil
}

// decoder reads a message body from position p on; every read checks the
// bounds and refuses with ReasonMalformed.
type decoder struct {
	body []byte
	p    int
}

// str reads a length-prefixed name of min..MaxNameLen bytes.
func (d *decoder) str(what string, min int) (string, error) {
	if d.p >= len(d.body) {
		return "", reject(ReasonMalformed, "truncated before %s", what)
	}
	n := int(d.body[d.p])
	d.p++
	if n < min || n > MaxNameLen || d.p+n > len(d.body) {
		return "", reject(ReasonMalformed, "%s length %d out of range", what, n)
	}
	s := string(d.body[d.p : d.p+n])
	d.p += n
	return s, nil
}

// uvarint reads a canonical (shortest) uvarint.
func (d *decoder) uvarint(what string) (uint64, error) {
	v, n := binary.Uvarint(d.body[d.p:])
	if n <= 0 || n != len(binary.AppendUvarint(nil, v)) {
		return 0, reject(ReasonMalformed, "bad or non-canonical %s", what)
	}
	d.p += n
	return v, nil
}

// full reads a full view: a member count, then 2 bits a member.
func (d *decoder) full() ([]State, error) {
	cnt, err := d.uvarint("member count")
	if err != nil {
		return nil, err
	}
	if cnt > maxMembers {
		return nil, reject(ReasonMalformed, "member count %d exceeds %d", cnt, maxMembers)
	}
	nb := (int(cnt) + 3) / 4
	if d.p+nb != len(d.body) {
		return nil, reject(ReasonMalformed, "full view of %d members needs %d bytes, have %d", cnt, nb, len(d.body)-d.p)
	}
	full := make([]State, cnt)
	for i := range full {
		s := State(d.body[d.p+i/4] >> (2 * (i % 4)) & 3)
		if s > Dead {
			return nil, reject(ReasonMalformed, "member %d has invalid state %d", i, s)
		}
		full[i] = s
	}
	// Padding bits must be zero so that one view has one encoding.
	if cnt%4 != 0 && d.body[d.p+nb-1]>>(2*(cnt%4)) != 0 {
		return nil, reject(ReasonMalformed, "non-zero padding bits")
	}
	d.p += nb
	return full, nil
}

// delta reads a delta view: its base sequence number and the changes.
func (d *decoder) delta() (uint64, []Change, error) {
	if d.p+8 > len(d.body) {
		return 0, nil, reject(ReasonMalformed, "truncated delta base")
	}
	base := binary.BigEndian.Uint64(d.body[d.p:])
	d.p += 8
	cnt, err := d.uvarint("change count")
	if err != nil {
		return 0, nil, err
	}
	if cnt > uint64(len(d.body)-d.p)/2 {
		return 0, nil, reject(ReasonMalformed, "change count %d larger than the message", cnt)
	}
	changes := make([]Change, 0, cnt)
	for i := uint64(0); i < cnt; i++ {
		c, err := d.change(i)
		if err != nil {
			return 0, nil, err
		}
		changes = append(changes, c)
	}
	return base, changes, nil
}

// change reads delta entry i: a member index and its state.
func (d *decoder) change(i uint64) (Change, error) {
	idx, err := d.uvarint("change index")
	if err != nil {
		return Change{}, err
	}
	if idx >= maxMembers || d.p >= len(d.body) {
		return Change{}, reject(ReasonMalformed, "change %d truncated or index %d out of range", i, idx)
	}
	s := State(d.body[d.p])
	d.p++
	if s > Dead {
		return Change{}, reject(ReasonMalformed, "change %d has invalid state %d", i, s)
	}
	return Change{Index: int(idx), State: s}, nil
}

// Verifier checks signatures. Ed25519Verifier is the real one; the
// simulation benchmark shares a CachingVerifier between simulated nodes.
type Verifier interface {
	Verify(pub ed25519.PublicKey, msg, sig []byte) bool
}

// Ed25519Verifier verifies with crypto/ed25519.
type Ed25519Verifier struct{}

func (Ed25519Verifier) Verify(pub ed25519.PublicKey, msg, sig []byte) bool {
	return len(pub) == ed25519.PublicKeySize && ed25519.Verify(pub, msg, sig)
}

// Verify checks m's signature against the sender's public key.
func (m *Message) Verify(v Verifier, pub ed25519.PublicKey) error {
	if !v.Verify(pub, m.signed, m.sig) {
		return reject(ReasonForged, "signature of %q does not verify with its published key", m.Sender)
	}
	return nil
}

// WindowSize is how many sequence numbers below the highest accepted one the
// replay window remembers.
const WindowSize = 64

// ReplayWindow accepts each sequence number of one sender at most once and
// only in increasing order: a number equal to or seen below the highest is a
// replay; an unseen number below the highest arrived late (reordered) and is
// refused too, because a view older than one already applied must not win.
type ReplayWindow struct {
	highest uint64
	seen    uint64 // bit i: highest-i was accepted
	any     bool
}

// Check classifies seq without recording it.
func (w *ReplayWindow) Check(seq uint64) error {
	if !w.any || seq > w.highest {
		return nil
	}
	d := w.highest - seq
	if d < WindowSize && w.seen&(1<<d) != 0 {
		return reject(ReasonReplay, "sequence %d already accepted", seq)
	}
	if d >= WindowSize {
		return reject(ReasonReplay, "sequence %d is %d behind the newest %d, outside the replay window", seq, d, w.highest)
	}
	return reject(ReasonReordered, "sequence %d arrived after %d", seq, w.highest)
}

// Accept records seq; call only after Check returned nil and the message verified.
func (w *ReplayWindow) Accept(seq uint64) {
	if !w.any {
		w.highest, w.seen, w.any = seq, 1, true
		return
	}
	if seq <= w.highest {
		return
	}
	d := seq - w.highest
	if d >= WindowSize {
		w.seen = 1
	} else {
		w.seen = w.seen<<d | 1
	}
	w.highest = seq
}

// Highest is the newest accepted sequence number (0 if none).
func (w *ReplayWindow) Highest() uint64 { return w.highest }

// CheckClock refuses a message whose timestamp is more than maxSkew away
// from now (the receiver's clock).
func CheckClock(m *Message, now time.Time, maxSkew time.Duration) error {
	d := m.Time.Sub(now)
	if d > maxSkew || d < -maxSkew {
		return reject(ReasonClockSkew, "timestamp %s is %s from local time, more than the allowed ±%s", m.Time.UTC().Format(time.RFC3339Nano), d.Round(time.Millisecond), maxSkew)
	}
	return nil
}
