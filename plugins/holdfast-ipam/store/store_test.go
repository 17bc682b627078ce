package store

import (
	"errors"
	"os"
	"strings"
	"testing"
	"time"
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
	if err := d.Save(NewState("n")); err == nil {
		t.Fatal("Save without lock succeeded")
	}
	d.Lock()
	st := NewState("n")
	st.Allocations["10.0.0.2"] = &Allocation{IP: "10.0.0.2", ContainerID: "c"}
	if err := d.Save(st); err != nil {
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
