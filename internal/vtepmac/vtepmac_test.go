package vtepmac

import (
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/holdfast-edge/holdfast/internal/atomicfile"
	"github.com/holdfast-edge/holdfast/internal/stablemac"
)

func TestDeriveStableAndDistinct(t *testing.T) {
	a := Derive("node1", 1)
	if a.String() != Derive("node1", 1).String() {
		t.Fatal("Derive not stable")
	}
	if !stablemac.IsLocalUnicast(a) {
		t.Fatalf("%s is not locally administered unicast", a)
	}
	for _, other := range []net.HardwareAddr{Derive("node2", 1), Derive("node1", 2)} {
		if other.String() == a.String() {
			t.Fatalf("collision: %s", a)
		}
	}
}

func TestEnsureDerivesThenKeeps(t *testing.T) {
	dir := t.TempDir()
	now := time.Unix(1700000000, 0)
	p, err := Ensure(dir, "node1", 1, nil, now)
	if err != nil {
		t.Fatal(err)
	}
	if p.Source != Derived || p.MAC != Derive("node1", 1).String() {
		t.Fatalf("got %+v", p)
	}
	// A later live MAC never changes an existing pin.
	live, _ := net.ParseMAC("02:11:22:33:44:55")
	p2, err := Ensure(dir, "node1", 1, live, now)
	if err != nil {
		t.Fatal(err)
	}
	if p2.MAC != p.MAC {
		t.Fatalf("pin changed from %s to %s", p.MAC, p2.MAC)
	}
}

func TestEnsureAdoptsLiveOnFirstSave(t *testing.T) {
	dir := t.TempDir()
	live, _ := net.ParseMAC("0e:11:22:33:44:55")
	p, err := Ensure(dir, "node1", 1, live, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if p.Source != Adopted || p.MAC != live.String() {
		t.Fatalf("got %+v", p)
	}
	f, err := Load(dir, "node1")
	if err != nil {
		t.Fatal(err)
	}
	if got, ok := f.Lookup(1); !ok || got.MAC != live.String() {
		t.Fatalf("pin not persisted: %+v", f)
	}
	// A second VNI gets its own pin.
	if p2, err := Ensure(dir, "node1", 7, nil, time.Now()); err != nil || p2.MAC != Derive("node1", 7).String() {
		t.Fatalf("vni 7: %+v %v", p2, err)
	}
}

func TestLoadRefusesOtherNodeAndCorruption(t *testing.T) {
	dir := t.TempDir()
	if _, err := Ensure(dir, "node1", 1, nil, time.Now()); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(dir, "node2"); err == nil || !strings.Contains(err.Error(), `node "node1"`) {
		t.Fatalf("other node not refused: %v", err)
	}
	data, _ := os.ReadFile(Path(dir))
	os.WriteFile(Path(dir), data[:len(data)/2], 0o600)
	if _, err := Load(dir, "node1"); err == nil {
		t.Fatal("truncated pin file accepted")
	}
	if _, err := Ensure(dir, "node1", 1, nil, time.Now()); err == nil {
		t.Fatal("Ensure overwrote a corrupt pin file")
	}
}

// TestEnsureSweepsKilledWritersTemp: a pin write killed before its rename
// leaves a temp file; the next Ensure (under the dir's lock) removes it.
func TestEnsureSweepsKilledWritersTemp(t *testing.T) {
	dir := t.TempDir()
	f, err := os.CreateTemp(dir, atomicfile.TempPattern(FileName))
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
	if _, err := Ensure(dir, "node1", 1, nil, time.Now()); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(f.Name()); !os.IsNotExist(err) {
		t.Fatalf("leftover %s survived Ensure", f.Name())
	}
}
