package atomicfile

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/holdfast-edge/holdfast/internal/flock"
)

// writers are the three ways to replace a file; they differ only in what
// they fsync.
var writers = map[string]func(string, []byte, os.FileMode) error{
	"WriteFile": WriteFile, "WriteFileNoDirSync": WriteFileNoDirSync, "WriteFileNoSync": WriteFileNoSync,
}

func TestWriteFileContentModeReplace(t *testing.T) {
	old := syscall.Umask(0o077) // the mode must not depend on the umask
	defer syscall.Umask(old)
	for name, write := range writers {
		t.Run(name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "sub", "f.json")
			if err := write(path, []byte("one"), 0o644); err != nil {
				t.Fatal(err)
			}
			if err := write(path, []byte("two, longer"), 0o640); err != nil {
				t.Fatal(err)
			}
			got, err := os.ReadFile(path)
			if err != nil || string(got) != "two, longer" {
				t.Fatalf("content %q, %v", got, err)
			}
			st, _ := os.Stat(path)
			if st.Mode().Perm() != 0o640 {
				t.Fatalf("mode %v, want 0640", st.Mode().Perm())
			}
			if left := temps(t, filepath.Dir(path)); len(left) != 0 {
				t.Fatalf("temp files left after successful writes: %v", left)
			}
			if err := RemoveNoSync(path); err != nil {
				t.Fatal(err)
			}
			if err := RemoveNoSync(path); err != nil {
				t.Fatalf("removing a missing file: %v", err)
			}
			if _, err := os.Stat(path); !os.IsNotExist(err) {
				t.Fatalf("still there after RemoveNoSync: %v", err)
			}
		})
	}
}

// TestWriteFileFailureKeepsOldAndNoTemp: a rename that fails (the target
// is a non-empty directory) leaves the target as it was and no temp file.
func TestWriteFileFailureKeepsOldAndNoTemp(t *testing.T) {
	for name, write := range writers {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			target := filepath.Join(dir, "busy")
			os.MkdirAll(filepath.Join(target, "inside"), 0o755)
			err := write(target, []byte("x"), 0o600)
			if err == nil || !strings.Contains(err.Error(), target) {
				t.Fatalf("want an error naming %s, got %v", target, err)
			}
			if st, err := os.Stat(filepath.Join(target, "inside")); err != nil || !st.IsDir() {
				t.Fatalf("target changed: %v", err)
			}
			if left := temps(t, dir); len(left) != 0 {
				t.Fatalf("temp files left after a failed write: %v", left)
			}
		})
	}
}

func temps(t *testing.T, dir string) []string {
	t.Helper()
	m, err := filepath.Glob(filepath.Join(dir, TempPattern("*")))
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// TestCleanTempsOnlyTempsOfTarget: CleanTemps removes the temp files
// WriteFile names for the target (or a glob of targets), and nothing else.
func TestCleanTempsOnlyTempsOfTarget(t *testing.T) {
	dir := t.TempDir()
	mk := func(name string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	var ours []string
	for range 2 {
		f, err := os.CreateTemp(dir, TempPattern("a.json")) // exactly as WriteFile names it
		if err != nil {
			t.Fatal(err)
		}
		f.Close()
		ours = append(ours, f.Name())
	}
	other := []string{mk("a.json"), mk(".b.conf.tmp-1"), mk("a.json.tmp-2"), mk(".a.json.bak"), mk(".lock")}
	n, err := CleanTemps(filepath.Join(dir, "a.json"))
	if err != nil || n != 2 {
		t.Fatalf("removed %d, %v; want 2", n, err)
	}
	for _, p := range ours {
		if _, err := os.Stat(p); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("leftover %s still there", p)
		}
	}
	for _, p := range other {
		if _, err := os.Stat(p); err != nil {
			t.Errorf("%s removed: %v", p, err)
		}
	}
	// A glob target covers every file of the directory.
	if n, err := CleanTemps(filepath.Join(dir, "*")); err != nil || n != 1 {
		t.Fatalf("glob: removed %d, %v; want 1 (.b.conf.tmp-1)", n, err)
	}
	if n, err := CleanTemps(filepath.Join(t.TempDir(), "missing", "*")); err != nil || n != 0 {
		t.Fatalf("missing dir: %d, %v", n, err)
	}
}

// TestSIGKILLedWriterLeftoverIsSwept really kills a process while it
// writes: its temp file stays behind (no later rename or cleanup runs in
// it), the target is whole (old or new content, never torn), and the next
// CleanTemps removes the leftover.
func TestSIGKILLedWriterLeftoverIsSwept(t *testing.T) {
	dir := t.TempDir()
	target := filepath.Join(dir, "big.json")
	for attempt := 0; ; attempt++ {
		if attempt == 20 {
			t.Fatal("never caught the writer between create and rename in 20 attempts")
		}
		cmd := exec.Command(os.Args[0], "-test.run=^TestHelperWriter$")
		cmd.Env = append(os.Environ(), "ATOMICFILE_HELPER_TARGET="+target)
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		caught := false
		for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Microsecond) {
			if len(temps(t, dir)) > 0 {
				cmd.Process.Signal(syscall.SIGKILL)
				caught = true
				break
			}
		}
		cmd.Process.Kill()
		cmd.Wait()
		if !caught || len(temps(t, dir)) == 0 {
			continue // killed between a rename and the next create
		}
		if data, err := os.ReadFile(target); err == nil && !whole(data) {
			t.Fatalf("target torn: %d bytes", len(data))
		}
		left := temps(t, dir)
		n, err := CleanTemps(target)
		if err != nil || n != len(left) || len(temps(t, dir)) != 0 {
			t.Fatalf("CleanTemps removed %d of %v: %v; left %v", n, left, err, temps(t, dir))
		}
		t.Logf("attempt %d: SIGKILL left %v; swept", attempt, left)
		return
	}
}

// helperSize is what the helper writes each time: big enough that a write
// takes a while.
const helperSize = 32 << 20

func whole(data []byte) bool {
	return len(data) == helperSize && bytes.Count(data, data[:1]) == helperSize
}

// TestHelperWriter is the process TestSIGKILLedWriterLeftoverIsSwept
// kills: it rewrites the target until it is killed.
func TestHelperWriter(t *testing.T) {
	target := os.Getenv("ATOMICFILE_HELPER_TARGET")
	if target == "" {
		t.Skip("helper process only")
	}
	for i := 0; ; i++ {
		if err := WriteFile(target, bytes.Repeat([]byte{byte('a' + i%26)}, helperSize), 0o600); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
	}
}

// TestLockDirSweeps: taking a directory's lock removes what writers killed
// in it left behind, and leaves the lock file and real files alone.
func TestLockDirSweeps(t *testing.T) {
	dir := t.TempDir()
	f, _ := os.CreateTemp(dir, TempPattern("x.json"))
	f.Close()
	os.WriteFile(filepath.Join(dir, "x.json"), []byte("keep"), 0o600)
	unlock, err := LockDir(dir, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer unlock()
	if _, err := os.Stat(f.Name()); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("leftover %s not swept", f.Name())
	}
	if _, err := os.Stat(filepath.Join(dir, "x.json")); err != nil {
		t.Fatal(err)
	}
	if _, err := LockDir(dir, 50*time.Millisecond); !errors.Is(err, flock.ErrTimeout) {
		t.Fatalf("LockDir does not exclude: %v", err)
	}
}
