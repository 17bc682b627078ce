package snapshot

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/holdfast-edge/holdfast/internal/atomicfile"
	"github.com/holdfast-edge/holdfast/internal/statefile"
)

const (
	// Kind and Version identify the snapshot file schema. Version 2 added
	// the nftables tables; version 1 files (without them) are still read.
	Kind    = "holdfast.network-snapshot"
	Version = 2
	// CurrentFile is the newest snapshot; PreviousFile the generation before
	// it, kept so that a corrupt current file never leaves the node without
	// a snapshot.
	CurrentFile  = "snapshot.json"
	PreviousFile = "snapshot.prev.json"
	// DefaultDir is where holdfastd keeps snapshots.
	DefaultDir = "/var/lib/holdfast/snapshot"
)

// ErrNoSnapshot is returned (wrapped) by Load when the directory holds no
// snapshot at all.
var ErrNoSnapshot = errors.New("no snapshot")

// Decode checks and decodes a snapshot file's bytes: envelope kind, schema
// version, checksum, then every field (Validate).
func Decode(data []byte) (*Snapshot, error) {
	var s Snapshot
	if _, err := statefile.Decode(data, Kind, Version, &s); err != nil {
		return nil, err
	}
	if err := s.Validate(); err != nil {
		return nil, fmt.Errorf("invalid snapshot: %w", err)
	}
	return &s, nil
}

// Encode returns the file bytes of s.
func Encode(s *Snapshot) ([]byte, error) { return statefile.Encode(Kind, Version, s) }

// Loaded is a snapshot read from a directory.
type Loaded struct {
	Snapshot *Snapshot
	// Path is the file it came from.
	Path string
	// Refused is set when the current file was refused (corrupt, future
	// version, invalid) and the previous generation was used instead.
	Refused error
}

// LoadFile reads and decodes one snapshot file.
func LoadFile(path string) (*Snapshot, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	if len(data) > statefile.MaxSize {
		return nil, fmt.Errorf("%s: larger than %d bytes", path, statefile.MaxSize)
	}
	s, err := Decode(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return s, nil
}

// Load returns the newest good snapshot in dir: the current file, or the
// previous generation if the current one is missing or refused. It returns
// ErrNoSnapshot when neither file exists, and the current file's error when
// it is refused and no good previous generation exists.
func Load(dir string) (*Loaded, error) {
	cur := filepath.Join(dir, CurrentFile)
	prev := filepath.Join(dir, PreviousFile)
	s, curErr := LoadFile(cur)
	if curErr == nil {
		return &Loaded{Snapshot: s, Path: cur}, nil
	}
	ps, prevErr := LoadFile(prev)
	if prevErr == nil {
		l := &Loaded{Snapshot: ps, Path: prev}
		if !errors.Is(curErr, fs.ErrNotExist) {
			l.Refused = curErr
		}
		return l, nil
	}
	if errors.Is(curErr, fs.ErrNotExist) && errors.Is(prevErr, fs.ErrNotExist) {
		return nil, fmt.Errorf("%w in %s", ErrNoSnapshot, dir)
	}
	if errors.Is(curErr, fs.ErrNotExist) {
		return nil, prevErr
	}
	if errors.Is(prevErr, fs.ErrNotExist) {
		return nil, curErr
	}
	return nil, fmt.Errorf("%v; previous generation also refused: %v", curErr, prevErr)
}

// Save writes s as the current snapshot of dir. A good current file is first
// copied to the previous generation (so the directory always holds a current
// file); a refused current file is overwritten without touching the previous
// generation, which stays the last good one. It writes under dir's lock
// (`snapshot save` and `snapshot watch` may run at once), which also
// removes what a writer killed mid-write left in dir.
func Save(dir string, s *Snapshot) error {
	if err := s.Validate(); err != nil {
		return fmt.Errorf("refusing to save an invalid snapshot: %w", err)
	}
	data, err := Encode(s)
	if err != nil {
		return err
	}
	unlock, err := atomicfile.LockDir(dir, atomicfile.DefaultLockTimeout)
	if err != nil {
		return fmt.Errorf("snapshot dir: %w", err)
	}
	defer unlock()
	cur := filepath.Join(dir, CurrentFile)
	if old, err := os.ReadFile(cur); err == nil {
		if _, derr := Decode(old); derr == nil {
			if err := atomicfile.WriteFile(filepath.Join(dir, PreviousFile), old, 0o600); err != nil {
				return fmt.Errorf("keep previous snapshot: %w", err)
			}
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("read %s: %w", cur, err)
	}
	if err := atomicfile.WriteFile(cur, data, 0o600); err != nil {
		return fmt.Errorf("write snapshot: %w", err)
	}
	return nil
}
