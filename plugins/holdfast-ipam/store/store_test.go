package store

import (
	"bytes"
	"errors"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/holdfast-edge/holdfast/internal/statefile"
)

func TestLockTimeoutThenRelease(t *testing.T) {
	dir := t.TempDir()
	a, b := New(dir, "n"), New(dir, "n")
	b.LockTimeout = 100 * time.Millisecond
	if err := a.Lock(); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if err := b.Lock(); !errors.Is(err, ErrLockTimeout) {
		t.Fatalf("second lock: %v, want timeout", err)
	}
	if d := time.Since(start); d < 100*time.Millisecond || d > 2*time.Second {
		t.Fatalf("timeout took %s", d)
	}
	a.Unlock()
	// The abandoned waiter must not keep the lock.
	b.LockTimeout = 2 * time.Second
	if err := b.Lock(); err != nil {
		t.Fatalf("lock after release: %v", err)
	}
	b.Unlock()
	// A blocked waiter gets the lock as soon as it is released.
	a.Lock()
	got := make(chan error)
	go func() { got <- b.Lock() }()
	select { // an observation window: b stays blocked while a holds the lock
	case err := <-got:
		t.Fatalf("second Lock returned (%v) while the first held the lock", err)
	case <-time.After(50 * time.Millisecond):
	}
	a.Unlock()
	if err := <-got; err != nil {
		t.Fatal(err)
	}
	b.Unlock()
}

func TestSaveLoadRoundTripAndRefusals(t *testing.T) {
	dir := t.TempDir()
	d := New(dir, "n")
	if err := d.Save(NewState("n"), Durable); err == nil {
		t.Fatal("Save without lock succeeded")
	}
	d.Lock()
	st := NewState("n")
	st.Allocations["10.0.0.2"] = &Allocation{IP: "10.0.0.2", ContainerID: "c"}
	if err := d.Save(st, Durable); err != nil {
		t.Fatal(err)
	}
	d.Unlock()
	got, err := d.Load()
	if err != nil || got.Allocations["10.0.0.2"].ContainerID != "c" {
		t.Fatalf("%+v %v", got, err)
	}
	// A state file of another network (copied by hand) is refused.
	other := New(dir, "m")
	os.MkdirAll(other.Dir, 0o755)
	data, _ := os.ReadFile(d.StatePath())
	os.WriteFile(other.StatePath(), data, 0o600)
	if _, err := other.Load(); !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), other.StatePath()) {
		t.Fatalf("foreign state: %v", err)
	}
}

// TestLoadRefusesNonsense: a state whose envelope is valid but whose
// content makes no sense is refused with ErrCorrupt naming the file and
// the problem, and the file is left as it was.
func TestLoadRefusesNonsense(t *testing.T) {
	good := func() *State {
		st := NewState("n")
		st.Allocations["10.0.0.2"] = &Allocation{IP: "10.0.0.2", ContainerID: "c", IfName: "eth0", PinKey: "n/ns/p/eth0"}
		st.Pins["n/ns/p/eth0"] = &Pin{Key: "n/ns/p/eth0", Namespace: "ns", Name: "p", IfName: "eth0", IPs: []string{"10.0.0.2"}, ContainerID: "c"}
		st.LastReserved[0] = "10.0.0.2"
		return st
	}
	cases := []struct {
		name, want string
		edit       func(*State)
	}{
		{"non-canonical address", "canonical", func(st *State) {
			st.Allocations["10.0.0.2"].IP = "::ffff:0a00:0002"
		}},
		{"mapped twin", "allocated twice", func(st *State) {
			st.Allocations["::ffff:10.0.0.2"] = &Allocation{IP: "::ffff:10.0.0.2", ContainerID: "d"}
		}},
		{"no container", "containerID", func(st *State) { st.Allocations["10.0.0.2"].ContainerID = "" }},
		{"negative range set", "rangeSet -1", func(st *State) { st.Allocations["10.0.0.2"].RangeSet = -1 }},
		{"allocation pin key of another network", `"m/ns/p/eth0"`, func(st *State) { st.Allocations["10.0.0.2"].PinKey = "m/ns/p/eth0" }},
		{"pin key with five parts", `"n/ns/a/b/eth0"`, func(st *State) {
			p := st.Pins["n/ns/p/eth0"]
			p.Key, p.Name = "n/ns/a/b/eth0", "a/b"
			st.Pins = map[string]*Pin{p.Key: p}
		}},
		{"pin records another key", "records key", func(st *State) { st.Pins["n/ns/p/eth0"].Key = "n/ns/q/eth0" }},
		{"null pin", "null", func(st *State) { st.Pins["n/ns/q/eth0"] = nil }},
		{"bad lastReserved", "lastReserved", func(st *State) { st.LastReserved[0] = "x" }},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			d := New(t.TempDir(), "n")
			st := good()
			if err := st.Validate(); err != nil {
				t.Fatalf("good state refused: %v", err)
			}
			c.edit(st)
			data, err := statefile.Encode(Kind, Version, st)
			if err != nil {
				t.Fatal(err)
			}
			os.MkdirAll(d.Dir, 0o755)
			os.WriteFile(d.StatePath(), data, 0o600)
			_, err = d.Load()
			if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), d.StatePath()) || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("want ErrCorrupt naming %s and %q, got %v", d.StatePath(), c.want, err)
			}
			if after, _ := os.ReadFile(d.StatePath()); !bytes.Equal(after, data) {
				t.Fatal("refused state file was changed")
			}
		})
	}
}

// FuzzDecodeState: any bytes either fail to load or give a state whose
// allocations are keyed by their own canonical address and whose addresses
// are each pinned at most once.
func FuzzDecodeState(f *testing.F) {
	st := NewState("n")
	st.Allocations["10.0.0.2"] = &Allocation{IP: "10.0.0.2", ContainerID: "c", PinKey: "n/ns/p/eth0"}
	st.Pins["n/ns/p/eth0"] = &Pin{Key: "n/ns/p/eth0", Namespace: "ns", Name: "p", IfName: "eth0", IPs: []string{"10.0.0.2", "fd00::2"}}
	good, _ := statefile.Encode(Kind, Version, st)
	f.Add(good)
	f.Add([]byte(`{"kind":"holdfast-ipam/state","version":1}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		st := NewState("n")
		if _, err := statefile.Decode(data, Kind, Version, st); err != nil {
			return
		}
		st.normalize()
		if st.Validate() != nil {
			return
		}
		pinned := map[netip.Addr]bool{}
		for _, p := range st.Pins {
			for _, ip := range p.IPs {
				a := netip.MustParseAddr(ip).Unmap()
				if pinned[a] {
					t.Fatalf("accepted %s pinned twice", a)
				}
				pinned[a] = true
			}
		}
		for k, al := range st.Allocations {
			if a, err := netip.ParseAddr(k); err != nil || a.String() != k || al.IP != k {
				t.Fatalf("accepted allocation keyed %q holding %q", k, al.IP)
			}
		}
	})
}
