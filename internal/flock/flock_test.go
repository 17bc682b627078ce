package flock

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestLockTimesOutThenHandsOver: a held lock makes a second Lock time out
// with ErrTimeout; a waiter blocked on it gets it as soon as it is released.
func TestLockTimesOutThenHandsOver(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sub", "x.lock")
	first, err := Lock(path, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if f, err := Lock(path, 50*time.Millisecond); !errors.Is(err, ErrTimeout) {
		if f != nil {
			f.Close()
		}
		t.Fatalf("second Lock while held = %v, want ErrTimeout", err)
	}
	got := make(chan error, 1)
	go func() {
		f, err := Lock(path, time.Minute)
		if err == nil {
			f.Close()
		}
		got <- err
	}()
	select {
	case err := <-got:
		t.Fatalf("waiter got the lock while it was held (err %v)", err)
	case <-time.After(100 * time.Millisecond):
	}
	first.Close()
	select {
	case err := <-got:
		if err != nil {
			t.Fatalf("waiter after release: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("waiter did not get the released lock within 30s")
	}
}

// TestLockPathIsDirectory: an unusable lock file is an environment fault
// naming the path, not a timeout (CNI maps the two to different codes).
func TestLockPathIsDirectory(t *testing.T) {
	path := filepath.Join(t.TempDir(), "lock")
	if err := os.Mkdir(path, 0o755); err != nil {
		t.Fatal(err)
	}
	f, err := Lock(path, time.Second)
	if err == nil {
		f.Close()
	}
	if err == nil || errors.Is(err, ErrTimeout) || !strings.Contains(err.Error(), path) {
		t.Fatalf("want a non-timeout error naming %s, got %v", path, err)
	}
}
