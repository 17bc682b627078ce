package volumes

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/holdfast-edge/holdfast/internal/atomicfile"
	"github.com/holdfast-edge/holdfast/internal/statefile"
)

// DirName is the capture directory's name in the shim's state dir.
const DirName = "volumes"

// FileKind and FileVersion identify a pod's capture file.
const (
	FileKind    = "holdfast.cri.volumes"
	FileVersion = 1
)

// Sealer seals the content of sensitive volumes before it reaches the disk
// and opens it again at restore (cri-shim/seal.Box). aad binds a sealed
// blob to its pod and volume, so one cannot be swapped for another.
type Sealer interface {
	Seal(plain, aad []byte) ([]byte, error)
	Open(sealed, aad []byte) ([]byte, error)
}

// PodFile is the capture file of one pod: <dir>/<uid>.json.
type PodFile struct {
	UID string `json:"uid"`
	Pod string `json:"pod"` // namespace/name, for humans
	// OptOut: the pod's sandbox has holdfast.dev/restore-volumes: "false";
	// its volumes are recorded without content.
	OptOut  bool      `json:"optOut,omitempty"`
	Volumes []*Volume `json:"volumes"`
}

// Volume returns the capture of the volume with this ID, or nil.
func (f *PodFile) Volume(id string) *Volume {
	for _, v := range f.Volumes {
		if v.ID() == id {
			return v
		}
	}
	return nil
}

func (f *PodFile) set(v *Volume) {
	for i, o := range f.Volumes {
		if o.ID() == v.ID() {
			f.Volumes[i] = v
			return
		}
	}
	f.Volumes = append(f.Volumes, v)
	sort.Slice(f.Volumes, func(i, j int) bool { return f.Volumes[i].ID() < f.Volumes[j].ID() })
}

// aad is the additional data a volume's sealed content is bound to.
func aad(uid string, r Ref) []byte {
	return []byte(FileKind + "/1\x00" + uid + "\x00" + r.ID() + "\x00" + r.Path)
}

// Decode reads a capture file: the statefile envelope (kind, version,
// checksum, nothing trailing), then its meaning: every volume's path names
// the pod and the volume it claims, kinds are known, nothing is listed
// twice, options are ones restore passes on, plain content is a tree
// restore can write without following a symlink, sensitive content is only
// sealed.
func Decode(data []byte) (*PodFile, error) {
	f := &PodFile{}
	if _, err := statefile.Decode(data, FileKind, FileVersion, f); err != nil {
		return nil, err
	}
	if err := f.check(); err != nil {
		return nil, err
	}
	return f, nil
}

func (f *PodFile) check() error {
	if f.UID == "" || strings.ContainsAny(f.UID, "/\\\x00") || strings.HasPrefix(f.UID, ".") || len(f.UID) > 128 {
		return fmt.Errorf("capture file names pod UID %q", f.UID)
	}
	seen := map[string]bool{}
	for _, v := range f.Volumes {
		if v == nil {
			return errors.New("null volume")
		}
		r, ok := ParsePath(f.UID, v.Path)
		if !ok || r != v.Ref {
			return fmt.Errorf("volume %s: path %q is not that volume of pod %s", v.ID(), v.Path, f.UID)
		}
		if seen[v.ID()] {
			return fmt.Errorf("volume %s listed twice", v.ID())
		}
		seen[v.ID()] = true
		if err := v.Options.check(); err != nil {
			return fmt.Errorf("volume %s: %w", v.ID(), err)
		}
		switch {
		case v.Kind == SubPath:
			if err := checkSource(v.Source); err != nil {
				return fmt.Errorf("volume %s: %w", v.ID(), err)
			}
			if v.Entries != nil || v.Sealed != nil || v.Withheld || v.Options.Data != "" || v.Options.Flags != nil {
				return fmt.Errorf("volume %s: a subPath mount keeps only its source", v.ID())
			}
			continue
		case v.Source != "":
			return fmt.Errorf("volume %s: a bind source on a volume", v.ID())
		}
		switch {
		case v.Withheld || !v.Kind.content():
			if v.Entries != nil || v.Sealed != nil {
				return fmt.Errorf("volume %s: content where none is kept", v.ID())
			}
		case v.Kind.Sensitive():
			if v.Entries != nil || len(v.Sealed) == 0 {
				return fmt.Errorf("volume %s: a %s volume's content must be sealed", v.ID(), v.Kind)
			}
		default:
			if v.Sealed != nil {
				return fmt.Errorf("volume %s: sealed content for a plain kind", v.ID())
			}
			if err := CheckEntries(v.Entries); err != nil {
				return fmt.Errorf("volume %s: %w", v.ID(), err)
			}
		}
	}
	return nil
}

// Store holds the capture files under one directory.
type Store struct {
	dir string
}

// BadFile is a capture file that could not be read.
type BadFile struct {
	Path string
	Err  error
}

// OpenStore opens (creating it 0700) the capture directory and removes the
// temp files a killed writer left: call it only as the directory's one
// writer, before its first write.
func OpenStore(dir string) (*Store, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create capture dir %s: %w", dir, err)
	}
	if _, err := atomicfile.CleanTemps(filepath.Join(dir, "*.json")); err != nil {
		return nil, err
	}
	return &Store{dir: dir}, nil
}

// InspectStore opens the capture directory for reading only.
func InspectStore(dir string) *Store { return &Store{dir: dir} }

func (s *Store) path(uid string) string { return filepath.Join(s.dir, uid+".json") }

// Load reads every capture file; unreadable ones are returned with an
// error naming the file and left on disk untouched.
func (s *Store) Load() ([]*PodFile, []BadFile, error) {
	ents, err := os.ReadDir(s.dir)
	if os.IsNotExist(err) {
		return nil, nil, nil
	}
	if err != nil {
		return nil, nil, fmt.Errorf("read capture dir %s: %w", s.dir, err)
	}
	var out []*PodFile
	var bad []BadFile
	for _, e := range ents {
		if e.IsDir() || !strings.HasSuffix(e.Name(), ".json") || strings.HasPrefix(e.Name(), ".") {
			continue
		}
		p := filepath.Join(s.dir, e.Name())
		f, err := s.read(p)
		if err == nil && f.UID+".json" != e.Name() {
			err = fmt.Errorf("%s: holds pod UID %q, not the one its name says", p, f.UID)
		}
		if err != nil {
			bad = append(bad, BadFile{Path: p, Err: err})
			continue
		}
		out = append(out, f)
	}
	return out, bad, nil
}

func (s *Store) read(p string) (*PodFile, error) {
	data, err := os.ReadFile(p)
	if err != nil {
		return nil, err
	}
	if len(data) > statefile.MaxSize {
		return nil, fmt.Errorf("%s: %d bytes is larger than the %d byte limit", p, len(data), statefile.MaxSize)
	}
	f, err := Decode(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", p, err)
	}
	return f, nil
}

// Save writes a pod's capture file atomically (0600).
func (s *Store) Save(f *PodFile) error {
	data, err := statefile.Encode(FileKind, FileVersion, f)
	if err != nil {
		return err
	}
	if err := atomicfile.WriteFile(s.path(f.UID), data, 0o600); err != nil {
		return fmt.Errorf("save volume capture of pod %s: %w", f.Pod, err)
	}
	return nil
}

// Remove deletes a pod's capture file.
func (s *Store) Remove(uid string) error {
	if err := atomicfile.Remove(s.path(uid)); err != nil && !os.IsNotExist(err) {
		return fmt.Errorf("remove volume capture of pod %s: %w", uid, err)
	}
	return nil
}

// sealEntries seals a sensitive volume's entries.
func sealEntries(s Sealer, uid string, r Ref, entries []Entry) ([]byte, error) {
	plain, err := json.Marshal(entries)
	if err != nil {
		return nil, err
	}
	return s.Seal(plain, aad(uid, r))
}

// OpenEntries opens a sensitive volume's sealed content and checks it.
func OpenEntries(s Sealer, uid string, v *Volume) ([]Entry, error) {
	plain, err := s.Open(v.Sealed, aad(uid, v.Ref))
	if err != nil {
		return nil, err
	}
	dec := json.NewDecoder(bytes.NewReader(plain))
	var entries []Entry
	if err := dec.Decode(&entries); err != nil {
		return nil, fmt.Errorf("sealed content: %w", err)
	}
	if dec.More() {
		return nil, errors.New("sealed content: trailing data")
	}
	if err := CheckEntries(entries); err != nil {
		return nil, fmt.Errorf("sealed content: %w", err)
	}
	return entries, nil
}

// entriesVersion hashes a tree (change detection where there is no ..data).
func entriesVersion(entries []Entry) string {
	h := sha256.New()
	json.NewEncoder(h).Encode(entries)
	return "sha256:" + hex.EncodeToString(h.Sum(nil))
}
