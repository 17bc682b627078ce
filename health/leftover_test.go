package health_test

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/holdfast-edge/holdfast/health"
	"github.com/holdfast-edge/holdfast/health/members"
	"github.com/holdfast-edge/holdfast/internal/atomicfile"
)

// leftover creates a temp file named the way atomicfile.WriteFile names
// its temp for target: what a writer SIGKILLed before its rename leaves.
func leftover(t *testing.T, target string) string {
	t.Helper()
	f, err := os.CreateTemp(filepath.Dir(target), atomicfile.TempPattern(filepath.Base(target)))
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
	return f.Name()
}

func gone(t *testing.T, paths ...string) {
	t.Helper()
	for _, p := range paths {
		if _, err := os.Stat(p); !os.IsNotExist(err) {
			t.Errorf("leftover %s survived", p)
		}
	}
}

// TestStartSweepsKilledDaemonsTemps: a daemon killed while saving its
// member list or verdicts leaves temp files; the next start (New, before
// its first write) removes them.
func TestStartSweepsKilledDaemonsTemps(t *testing.T) {
	n := newUDPNode(t, "node1")
	n.cfg.Members = []members.Member{n.m}
	left := []string{leftover(t, filepath.Join(n.cfg.StateDir, health.MembersFile)), leftover(t, filepath.Join(n.cfg.StateDir, health.VerdictsFile))}
	keep := filepath.Join(n.cfg.StateDir, ".other.tmp-1")
	os.WriteFile(keep, nil, 0o600)
	if _, err := health.New(n.cfg); err != nil {
		t.Fatal(err)
	}
	gone(t, left...)
	if _, err := os.Stat(keep); err != nil {
		t.Fatalf("a file that is no temp of the daemon's was removed: %v", err)
	}
}

// TestGenerateKeySweepsKilledRunsTemp: a key generation killed before its
// rename leaves a temp file beside the key path; the next run removes it.
func TestGenerateKeySweepsKilledRunsTemp(t *testing.T) {
	path := filepath.Join(t.TempDir(), "node.key")
	left := leftover(t, path)
	if _, err := health.GenerateKey(path, "node1"); err != nil {
		t.Fatal(err)
	}
	gone(t, left)
}
