// Package atomicfile writes files so that a reader, or a node coming back
// from a crash at any instruction, sees either the old content or the new
// content, never a torn mix: write a temp file in the same directory, fsync
// it, rename it over the target, fsync the directory.
//
// A writer killed between creating its temp file and the rename leaves the
// temp file behind. CleanTemps removes such leftovers; it is safe only while
// no writer of the same files runs, so every writer calls it under the lock
// that serialises them (LockDir takes a directory's lock and sweeps in one
// call), or at start-up when it is the only writer.
package atomicfile

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/holdfast-edge/holdfast/internal/flock"
)

// TempPattern is the os.CreateTemp pattern of the temp file WriteFile uses
// for a target named base: hidden, in the target's directory (so the rename
// is atomic). It is the one statement of the temp-name scheme; CleanTemps
// matches exactly these names.
func TempPattern(base string) string { return "." + base + ".tmp-*" }

// WriteFile atomically replaces path with data. The parent directory is
// created (0755) if missing.
func WriteFile(path string, data []byte, perm os.FileMode) error {
	if err := WriteFileNoDirSync(path, data, perm); err != nil {
		return err
	}
	return SyncDir(filepath.Dir(path))
}

// WriteFileNoDirSync is WriteFile without the directory fsync: readers see
// the old or the new content at once, but the rename is durable only after
// the caller's SyncDir (which batches the fsyncs of many writes, as the CRI
// record store does).
func WriteFileNoDirSync(path string, data []byte, perm os.FileMode) error {
	return replace(path, data, perm, true)
}

// WriteFileNoSync is WriteFile without any fsync: a writer killed at any
// instruction (SIGKILL, crash of the process) still leaves the old or the
// new content, never a torn mix, because the page cache outlives it; only a
// power loss or kernel crash may lose the write or leave the file empty or
// torn. It is for records that can be rebuilt or pruned, as the chained
// CNI plugin's attachment records (docs/cni.md).
func WriteFileNoSync(path string, data []byte, perm os.FileMode) error {
	return replace(path, data, perm, false)
}

// replace writes data to a temp file beside path (fsynced when sync is
// set) and renames it over path.
func replace(path string, data []byte, perm os.FileMode, sync bool) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("create dir for %s: %w", path, err)
	}
	tmp, err := os.CreateTemp(dir, TempPattern(filepath.Base(path)))
	if err != nil {
		return fmt.Errorf("create temp for %s: %w", path, err)
	}
	tmpName := tmp.Name()
	ok := false
	defer func() {
		if !ok {
			tmp.Close()
			os.Remove(tmpName)
		}
	}()
	if _, err := tmp.Write(data); err != nil {
		return fmt.Errorf("write %s: %w", tmpName, err)
	}
	if err := tmp.Chmod(perm); err != nil {
		return fmt.Errorf("chmod %s: %w", tmpName, err)
	}
	if sync {
		if err := tmp.Sync(); err != nil {
			return fmt.Errorf("fsync %s: %w", tmpName, err)
		}
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("close %s: %w", tmpName, err)
	}
	if err := os.Rename(tmpName, path); err != nil {
		return fmt.Errorf("rename %s to %s: %w", tmpName, path, err)
	}
	ok = true
	return nil
}

// SyncDir fsyncs a directory so that a rename or unlink in it is durable.
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("open dir %s: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("fsync dir %s: %w", dir, err)
	}
	return nil
}

// Remove deletes path durably; a missing file is not an error.
func Remove(path string) error {
	if err := RemoveNoSync(path); err != nil {
		return err
	}
	return SyncDir(filepath.Dir(path))
}

// RemoveNoSync deletes path without the directory fsync (a power loss may
// bring the file back); a missing file is not an error.
func RemoveNoSync(path string) error {
	if err := os.Remove(path); err != nil && !os.IsNotExist(err) {
		return fmt.Errorf("remove %s: %w", path, err)
	}
	return nil
}

// CleanTemps removes the temp files WriteFile left for target when its
// writer died before the rename (SIGKILL, crash, power loss). target's base
// name may be a filepath.Match pattern ("dir/*.json", "dir/*") to cover
// several files. A live writer's temp file looks the same as a dead one's,
// so call it only under the lock every writer of those files holds, or
// before any of them can run. It returns how many files it removed.
func CleanTemps(target string) (int, error) {
	dir := filepath.Dir(target)
	matches, err := filepath.Glob(filepath.Join(dir, TempPattern(filepath.Base(target))))
	if err != nil {
		return 0, fmt.Errorf("clean temp files of %s: %w", target, err)
	}
	n := 0
	for _, m := range matches {
		if err := os.Remove(m); err != nil && !errors.Is(err, os.ErrNotExist) {
			return n, fmt.Errorf("remove leftover temp file: %w", err)
		}
		n++
	}
	if n == 0 {
		return 0, nil
	}
	return n, SyncDir(dir)
}

// DefaultLockTimeout is how long LockDir's callers wait for another writer.
const DefaultLockTimeout = 30 * time.Second

// LockFileName is the lock file LockDir takes in a directory.
const LockFileName = "lock"

// LockDir takes the exclusive lock of dir (its file "lock"; dir is created
// if missing), then removes every temp file writers killed in dir left
// behind. Every writer of dir's files must write while holding it. A
// timeout wraps flock.ErrTimeout (another writer holds it: try again later);
// other errors say the lock file itself is unusable.
func LockDir(dir string, timeout time.Duration) (unlock func(), err error) {
	f, err := flock.Lock(filepath.Join(dir, LockFileName), timeout)
	if err != nil {
		return nil, err
	}
	if _, err := CleanTemps(filepath.Join(dir, "*")); err != nil {
		f.Close()
		return nil, err
	}
	return func() { f.Close() }, nil
}
