package protocol

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"strings"
	"testing"
	"time"
)

func key(t testing.TB) (ed25519.PublicKey, ed25519.PrivateKey) {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return pub, priv
}

var now = time.UnixMilli(1_700_000_000_123)

func TestRoundTrip(t *testing.T) {
	pub, priv := key(t)
	for _, m := range []*Message{
		{Seq: 1, Time: now, MemberDigest: 7, Sender: "node1", Unit: "", Kind: ViewNone},
		{Seq: 2, Time: now, MemberDigest: 7, Sender: "node1", Unit: "site-a", Kind: ViewFull, Full: []State{Alive, Dead, Unknown, Alive, Alive}},
		{Seq: 3, Time: now, MemberDigest: 7, Sender: "node1", Unit: "site-a", Kind: ViewFull, Full: []State{}},
		{Seq: 4, Time: now, MemberDigest: 7, Sender: strings.Repeat("n", 253), Unit: "u", Kind: ViewDelta, DeltaBase: 2, Delta: []Change{{1, Alive}, {300, Dead}}},
		{Seq: 5, Time: now, MemberDigest: 7, Sender: "n", Unit: "u", Kind: ViewDelta, DeltaBase: 2},
	} {
		data, err := Encode(m, priv)
		if err != nil {
			t.Fatalf("encode %+v: %v", m, err)
		}
		got, err := Decode(data)
		if err != nil {
			t.Fatalf("decode: %v", err)
		}
		if err := got.Verify(Ed25519Verifier{}, pub); err != nil {
			t.Fatalf("verify: %v", err)
		}
		if got.Seq != m.Seq || !got.Time.Equal(m.Time) || got.Sender != m.Sender || got.Unit != m.Unit || got.Kind != m.Kind || got.DeltaBase != m.DeltaBase || got.MemberDigest != m.MemberDigest {
			t.Fatalf("header mismatch: got %+v want %+v", got, m)
		}
		if len(got.Full) != len(m.Full) || len(got.Delta) != len(m.Delta) {
			t.Fatalf("view length mismatch: got %+v want %+v", got, m)
		}
		for i := range m.Full {
			if got.Full[i] != m.Full[i] {
				t.Fatalf("full[%d] = %v, want %v", i, got.Full[i], m.Full[i])
			}
		}
		for i := range m.Delta {
			if got.Delta[i] != m.Delta[i] {
				t.Fatalf("delta[%d] = %v, want %v", i, got.Delta[i], m.Delta[i])
			}
		}
	}
}

func TestSize1000(t *testing.T) {
	_, priv := key(t)
	full := make([]State, 1000)
	for i := range full {
		full[i] = Alive
	}
	data, err := Encode(&Message{Seq: 1, Time: now, Sender: "edge-node-0001", Unit: "factory-a", Kind: ViewFull, Full: full}, priv)
	if err != nil {
		t.Fatal(err)
	}
	if len(data) > 400 {
		t.Fatalf("full view of 1000 members is %d bytes, want ≤ 400", len(data))
	}
	data, err = Encode(&Message{Seq: 2, Time: now, Sender: "edge-node-0001", Unit: "factory-a", Kind: ViewDelta, DeltaBase: 1, Delta: []Change{{17, Dead}}}, priv)
	if err != nil {
		t.Fatal(err)
	}
	if len(data) > 130 {
		t.Fatalf("delta message is %d bytes, want ≤ 130", len(data))
	}
}

func TestRejections(t *testing.T) {
	pub, priv := key(t)
	_, other := key(t)
	good, err := Encode(&Message{Seq: 9, Time: now, Sender: "node1", Unit: "u", Kind: ViewFull, Full: []State{Alive, Alive}}, priv)
	if err != nil {
		t.Fatal(err)
	}
	forged, _ := Encode(&Message{Seq: 9, Time: now, Sender: "node1", Unit: "u", Kind: ViewFull, Full: []State{Alive, Dead}}, other)
	flipped := bytes.Clone(good)
	flipped[len(flipped)-70] ^= 1 // inside the view bitmap area / names
	badVersion := bytes.Clone(good)
	badVersion[2] = 9
	cases := []struct {
		name string
		data []byte
		want Reason
	}{
		{"oversized", make([]byte, MaxMessageSize+1), ReasonOversized},
		{"empty", nil, ReasonMalformed},
		{"short", good[:40], ReasonMalformed},
		{"bad magic", append([]byte("xx"), good[2:]...), ReasonMalformed},
		{"version", badVersion, ReasonVersion},
		{"trailing", append(append(bytes.Clone(good[:len(good)-64]), 0), good[len(good)-64:]...), ReasonMalformed},
		{"wrong key", forged, ReasonForged},
		{"tampered", flipped, ReasonForged},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			m, err := Decode(c.data)
			if err == nil {
				err = m.Verify(Ed25519Verifier{}, pub)
			}
			if got := ReasonOf(err); got != c.want {
				t.Fatalf("reason = %q (%v), want %q", got, err, c.want)
			}
		})
	}
}

func TestReplayWindow(t *testing.T) {
	var w ReplayWindow
	accept := func(s uint64) {
		t.Helper()
		if err := w.Check(s); err != nil {
			t.Fatalf("seq %d: %v", s, err)
		}
		w.Accept(s)
	}
	expect := func(s uint64, r Reason) {
		t.Helper()
		if got := ReasonOf(w.Check(s)); got != r {
			t.Fatalf("seq %d: reason %q, want %q", s, got, r)
		}
	}
	accept(100)
	accept(101)
	accept(105)
	expect(105, ReasonReplay)
	expect(101, ReasonReplay)
	expect(103, ReasonReordered) // never seen, but older than 105
	expect(105-WindowSize, ReasonReplay)
	accept(106)
	accept(1 << 40) // a restarted sender's new epoch
	expect(106, ReasonReplay)
	if w.Highest() != 1<<40 {
		t.Fatalf("highest = %d", w.Highest())
	}
}

func TestClockSkew(t *testing.T) {
	for _, c := range []struct {
		skew time.Duration
		ok   bool
	}{{0, true}, {30 * time.Second, true}, {-30 * time.Second, true}, {59 * time.Second, true}, {61 * time.Second, false}, {-90 * time.Second, false}} {
		m := &Message{Time: now.Add(c.skew)}
		err := CheckClock(m, now, 60*time.Second)
		if (err == nil) != c.ok {
			t.Errorf("skew %s: err=%v, want ok=%v", c.skew, err, c.ok)
		}
		if err != nil && ReasonOf(err) != ReasonClockSkew {
			t.Errorf("skew %s: reason %q", c.skew, ReasonOf(err))
		}
	}
}

func TestEncodeRefusesBadInput(t *testing.T) {
	_, priv := key(t)
	for name, m := range map[string]*Message{
		"no sender":   {Sender: ""},
		"long sender": {Sender: strings.Repeat("x", 254)},
		"bad state":   {Sender: "a", Kind: ViewFull, Full: []State{3}},
		"bad kind":    {Sender: "a", Kind: 7},
		"too big":     {Sender: "a", Kind: ViewFull, Full: make([]State, 40000)},
	} {
		if _, err := Encode(m, priv); err == nil {
			t.Errorf("%s: encode succeeded", name)
		}
	}
}

func TestMemberDigestOrderFree(t *testing.T) {
	if MemberDigest([]string{"a", "b", "c"}) != MemberDigest([]string{"c", "a", "b"}) {
		t.Fatal("digest depends on order")
	}
	if MemberDigest([]string{"a", "b"}) == MemberDigest([]string{"ab"}) {
		t.Fatal("digest ambiguous")
	}
}

// FuzzDecode: Decode never panics, and whatever it accepts re-encodes to the
// same signed bytes (one message, one encoding).
func FuzzDecode(f *testing.F) {
	_, priv := key(f)
	for _, m := range []*Message{
		{Seq: 1, Time: now, Sender: "node1", Kind: ViewNone},
		{Seq: 2, Time: now, Sender: "node1", Unit: "u", Kind: ViewFull, Full: []State{Alive, Dead, Unknown}},
		{Seq: 3, Time: now, Sender: "node1", Unit: "u", Kind: ViewDelta, DeltaBase: 2, Delta: []Change{{2, Dead}, {1000, Alive}}},
	} {
		d, err := Encode(m, priv)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(d)
	}
	f.Add([]byte("hf"))
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := Decode(data)
		if err != nil {
			if ReasonOf(err) == "" {
				t.Fatalf("error without reason: %v", err)
			}
			return
		}
		if len(data) > MaxMessageSize {
			t.Fatal("accepted oversized message")
		}
		re, err := Encode(m, priv)
		if err != nil {
			t.Fatalf("re-encode of accepted message failed: %v", err)
		}
		if !bytes.Equal(re[:len(re)-64], data[:len(data)-64]) {
			t.Fatalf("re-encoding differs:\n%x\n%x", re[:len(re)-64], data[:len(data)-64])
		}
	})
}

func TestNonCanonicalVarintRefused(t *testing.T) {
	_, priv := key(t)
	d, err := Encode(&Message{Seq: 1, Time: now, Sender: "a", Unit: "", Kind: ViewFull, Full: nil}, priv)
	if err != nil {
		t.Fatal(err)
	}
	body := append(bytes.Clone(d[:len(d)-65]), 0x80, 0x00) // count 0 encoded in two bytes
	body = append(body, ed25519.Sign(priv, body)...)
	if _, err := Decode(body); ReasonOf(err) != ReasonMalformed {
		t.Fatalf("err = %v, want malformed", err)
	}
}
