package main

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// stdoutOf runs f with os.Stdout captured.
func stdoutOf(t *testing.T, f func() error) (string, error) {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	old := os.Stdout
	os.Stdout = w
	done := make(chan []byte)
	go func() { b, _ := io.ReadAll(r); done <- b }()
	ferr := f()
	os.Stdout = old
	w.Close()
	return strings.TrimSpace(string(<-done)), ferr
}

// TestHealthKeygenIfMissing: the agent's init container runs keygen on
// every start; --if-missing keeps the key (same public half printed, file
// byte for byte), without it an existing file is refused, and an
// unreadable one is an error either way, left as it is.
func TestHealthKeygenIfMissing(t *testing.T) {
	out := filepath.Join(t.TempDir(), "health.key")
	args := []string{"--out", out, "--node-name", "n1"}
	pub, err := stdoutOf(t, func() error { return runHealthKeygen(args) })
	if err != nil || pub == "" {
		t.Fatalf("first keygen: %q %v", pub, err)
	}
	before, _ := os.ReadFile(out)
	if _, err := stdoutOf(t, func() error { return runHealthKeygen(args) }); err == nil {
		t.Fatal("keygen over an existing key file without --if-missing succeeded")
	}
	again, err := stdoutOf(t, func() error { return runHealthKeygen(append([]string{"--if-missing"}, args...)) })
	if err != nil || again != pub {
		t.Fatalf("--if-missing printed %q (%v), want the kept key's %q", again, err, pub)
	}
	if after, _ := os.ReadFile(out); !bytes.Equal(after, before) {
		t.Fatal("--if-missing rewrote the key file")
	}
	if err := os.WriteFile(out, []byte("garbage"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := stdoutOf(t, func() error { return runHealthKeygen(append([]string{"--if-missing"}, args...)) }); err == nil {
		t.Fatal("--if-missing accepted an unreadable key file")
	}
	if b, _ := os.ReadFile(out); string(b) != "garbage" {
		t.Fatalf("unreadable key file changed to %q", b)
	}
}
