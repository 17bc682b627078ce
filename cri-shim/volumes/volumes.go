// Package volumes captures, while the node is online, the pod volumes that
// kubelet backs with tmpfs (Secret, projected — the service-account token —,
// downwardAPI, and emptyDir with medium Memory), and restores them at the
// same host path before the CRI shim relaunches a pod after an offline
// reboot, which wipes every tmpfs.
//
// A volume is found from the host path of a container mount kubelet sends
// in CreateContainer: <kubelet root>/pods/<uid>/volumes/kubernetes.io~<kind>/<name>.
// Capture copies kubelet's atomic-writer layout exactly (the timestamped
// data directory, the ..data symlink, the per-key symlinks, modes and
// ownership) and the tmpfs mount options (size, mode, flags). Restore mounts
// a tmpfs with those options and writes the layout back, ..data last, so a
// tmpfs holding ..data is complete. A memory emptyDir comes back empty.
//
// kubelet keeps a restored mount: its emptyDir setup (which the Secret,
// projected and downwardAPI plugins wrap) finds a memory mount point and
// mounts nothing, and its atomic writer then writes into that mount
// (docs/volumes.md cites the code). So a relaunched container, which bind
// mounted the restored tmpfs, sees kubelet's updates after adoption.
//
// This package reads and mounts under the volume paths it is given and
// writes capture files under its own directory; it never talks to kubelet
// or containerd. Content of Secret and projected volumes is written only
// sealed by the Sealer it is given (see cri-shim/seal).
package volumes

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Kind is a kubelet volume plugin, as its directory names it
// (kubernetes.io~<kind>).
type Kind string

// The kinds kubelet backs with tmpfs. ConfigMap volumes are on disk (their
// emptyDir wrapper has the default medium) and survive a reboot: they are
// left alone. An emptyDir is captured only when it is a tmpfs (medium Memory).
const (
	Secret      Kind = "secret"
	Projected   Kind = "projected"
	DownwardAPI Kind = "downward-api"
	EmptyDir    Kind = "empty-dir"
)

// SubPath is not a volume kind but a subPath mount: kubelet's bind mount of
// a path inside a volume at <root>/pods/<uid>/volume-subpaths/<volume>/
// <container>/<index>. Its capture is the bind's source (subpath.go).
const SubPath Kind = "subpath"

// Sensitive reports whether content of kind is kept on disk only sealed.
// Projected volumes hold the service-account token (and may hold Secrets).
func (k Kind) Sensitive() bool { return k == Secret || k == Projected }

// content reports whether the content of kind is captured (a memory
// emptyDir's would not survive a real reboot either: it comes back empty;
// a subPath mount shows content of its volume).
func (k Kind) content() bool { return k != EmptyDir && k != SubPath }

// alwaysTmpfs reports whether kubelet always backs kind with tmpfs.
func (k Kind) alwaysTmpfs() bool { return k == Secret || k == Projected || k == DownwardAPI }

func knownKind(k Kind) bool { return k.alwaysTmpfs() || k == EmptyDir }

// Ref is one tmpfs-backed volume of a pod, as its host path names it.
type Ref struct {
	Kind Kind   `json:"kind"`
	Name string `json:"name"`
	Path string `json:"path"`
}

// ID is kind/name, unique within a pod.
func (r Ref) ID() string { return string(r.Kind) + "/" + r.Name }

// DataLink is the symlink kubelet's atomic writer points at the current
// timestamped data directory; it is written last on restore.
const DataLink = "..data"

// ParsePath returns the volume a container mount's host path names when it
// is <root>/pods/<uid>/volumes/kubernetes.io~<kind>/<name> for one of the
// tmpfs-backed kinds, or the subPath mount it names when it is
// <root>/pods/<uid>/volume-subpaths/<volume>/<container>/<index> (kind
// SubPath, name <volume>/<container>/<index>). Mounts of a file inside a
// volume are not volume roots and are not matched.
func ParsePath(uid, hostPath string) (Ref, bool) {
	if uid == "" || !filepath.IsAbs(hostPath) {
		return Ref{}, false
	}
	p := filepath.Clean(hostPath)
	if r, ok := parseSubPath(uid, p); ok {
		return r, true
	}
	marker := "/pods/" + uid + "/volumes/kubernetes.io~"
	i := strings.LastIndex(p, marker)
	if i < 0 {
		return Ref{}, false
	}
	rest := p[i+len(marker):]
	kind, name, ok := strings.Cut(rest, "/")
	if !ok || name == "" || strings.Contains(name, "/") || name == "." || name == ".." {
		return Ref{}, false
	}
	if !knownKind(Kind(kind)) {
		return Ref{}, false
	}
	return Ref{Kind: Kind(kind), Name: name, Path: p}, true
}

// Refs returns the distinct volumes named by hostPaths, sorted by ID.
func Refs(uid string, hostPaths []string) []Ref {
	seen := map[string]bool{}
	var out []Ref
	for _, hp := range hostPaths {
		r, ok := ParsePath(uid, hp)
		if !ok || seen[r.ID()] {
			continue
		}
		seen[r.ID()] = true
		out = append(out, r)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID() < out[j].ID() })
	return out
}

// Options are a tmpfs mount's options, as restore passes them to mount(2).
type Options struct {
	// Data holds the filesystem options kept (size, nr_inodes, mode, uid,
	// gid, noswap, huge), comma separated, as mountinfo shows them.
	Data string `json:"data,omitempty"`
	// Flags are the per-mount flags (ro, nosuid, nodev, noexec, noatime,
	// nodiratime, relatime, strictatime).
	Flags []string `json:"flags,omitempty"`
}

var dataKeys = map[string]bool{"size": true, "nr_inodes": true, "mode": true, "uid": true, "gid": true, "noswap": true, "huge": true}

var mountFlags = map[string]uintptr{
	"ro": unix.MS_RDONLY, "nosuid": unix.MS_NOSUID, "nodev": unix.MS_NODEV, "noexec": unix.MS_NOEXEC,
	"noatime": unix.MS_NOATIME, "nodiratime": unix.MS_NODIRATIME, "relatime": unix.MS_RELATIME, "strictatime": unix.MS_STRICTATIME,
}

func (o Options) check() error {
	if o.Data != "" {
		for _, kv := range strings.Split(o.Data, ",") {
			k, v, _ := strings.Cut(kv, "=")
			if !dataKeys[k] {
				return fmt.Errorf("tmpfs option %q is not one restore passes on", kv)
			}
			for _, c := range v {
				if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c == '%' || c == '_') {
					return fmt.Errorf("tmpfs option %q: bad value", kv)
				}
			}
		}
	}
	for _, f := range o.Flags {
		if _, ok := mountFlags[f]; !ok {
			return fmt.Errorf("mount flag %q is not one restore passes on", f)
		}
	}
	return nil
}

func (o Options) flags() uintptr {
	var fl uintptr
	for _, f := range o.Flags {
		fl |= mountFlags[f]
	}
	return fl
}

// Mount is one line of /proc/self/mountinfo, reduced to what restore needs.
type Mount struct {
	Point  string
	Dev    string // major:minor of the file system
	Root   string // the path in the file system mounted here
	FSType string
	Opts   []string // per-mount options
	Super  []string // filesystem (super block) options
}

// Options returns the mount's options restore would pass on.
func (m Mount) Options() Options {
	var o Options
	var data []string
	for _, s := range m.Super {
		k, _, _ := strings.Cut(s, "=")
		if dataKeys[k] {
			data = append(data, s)
		}
	}
	o.Data = strings.Join(data, ",")
	for _, f := range m.Opts {
		if _, ok := mountFlags[f]; ok {
			o.Flags = append(o.Flags, f)
		}
	}
	return o
}

// Mounts maps a mount point to its topmost mount.
type Mounts map[string]Mount

// MountInfo is the mount table ReadMounts reads by default.
const MountInfo = "/proc/self/mountinfo"

// ReadMounts reads a mountinfo file.
func ReadMounts(file string) (Mounts, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("read mount table: %w", err)
	}
	m, err := ParseMountInfo(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	return m, nil
}

// ParseMountInfo parses proc(5) mountinfo lines. A later line for the same
// mount point (a mount stacked on top) replaces an earlier one.
func ParseMountInfo(data []byte) (Mounts, error) {
	out := Mounts{}
	for n, line := range bytes.Split(data, []byte{'\n'}) {
		if len(bytes.TrimSpace(line)) == 0 {
			continue
		}
		f := strings.Fields(string(line))
		sep := -1
		for i := 6; i < len(f); i++ {
			if f[i] == "-" {
				sep = i
				break
			}
		}
		if len(f) < 7 || sep < 0 || sep+3 > len(f) {
			return nil, fmt.Errorf("mountinfo line %d: malformed", n+1)
		}
		m := Mount{Point: unescapeOctal(f[4]), Dev: f[2], Root: unescapeOctal(f[3]), FSType: f[sep+1], Opts: strings.Split(f[5], ",")}
		if sep+3 < len(f) {
			m.Super = strings.Split(f[sep+3], ",")
		}
		out[m.Point] = m
	}
	return out, nil
}

// unescapeOctal undoes mountinfo's \ooo escapes (space, tab, newline, \).
func unescapeOctal(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) && isOctal(s[i+1:i+4]) {
			b.WriteByte((s[i+1]-'0')<<6 | (s[i+2]-'0')<<3 | (s[i+3] - '0'))
			i += 3
			continue
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func isOctal(s string) bool {
	if len(s) != 3 || s[0] > '3' {
		return false
	}
	for i := 0; i < 3; i++ {
		if s[i] < '0' || s[i] > '7' {
			return false
		}
	}
	return true
}

// Tmpfs returns the tmpfs mounted at p, if one is.
func (m Mounts) Tmpfs(p string) (Mount, bool) {
	mt, ok := m[filepath.Clean(p)]
	return mt, ok && mt.FSType == "tmpfs"
}

// IsTmpfsMount reports whether dir is the root of a tmpfs mount, the way
// kubelet's emptyDir decides it (statfs type TMPFS_MAGIC, and a device
// other than its parent's): two syscalls, no read of the mount table.
func IsTmpfsMount(dir string) bool {
	var fs unix.Statfs_t
	if unix.Statfs(dir, &fs) != nil || fs.Type != unix.TMPFS_MAGIC {
		return false
	}
	var st, parent unix.Stat_t
	if unix.Lstat(dir, &st) != nil || unix.Stat(filepath.Dir(dir), &parent) != nil {
		return false
	}
	return st.Dev != parent.Dev
}

// Entry is one file system object of a captured volume.
type Entry struct {
	// Path is slash separated and relative to the volume root; "." is the root.
	Path   string `json:"path"`
	Type   string `json:"type"` // dir, file or symlink
	Mode   uint32 `json:"mode"` // permission bits plus setuid, setgid, sticky
	UID    uint32 `json:"uid"`
	GID    uint32 `json:"gid"`
	Target string `json:"target,omitempty"` // symlinks
	Data   []byte `json:"data,omitempty"`   // files
}

// Entry types.
const (
	TypeDir     = "dir"
	TypeFile    = "file"
	TypeSymlink = "symlink"
)

// Limits of one captured volume: kubelet caps a Secret or ConfigMap at
// 1 MiB; a projected volume may combine several.
const (
	MaxVolumeBytes   = 16 << 20
	MaxVolumeEntries = 4096
)

// Walk reads the tree under root (lstat, never following a symlink) in
// lexical order, parents before children.
func Walk(root string) ([]Entry, error) {
	var out []Entry
	var total int
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if len(out) >= MaxVolumeEntries {
			return fmt.Errorf("more than %d entries", MaxVolumeEntries)
		}
		rel, err := filepath.Rel(root, p)
		if err != nil {
			return err
		}
		fi, err := os.Lstat(p)
		if err != nil {
			return err
		}
		st, ok := fi.Sys().(*syscall.Stat_t)
		if !ok {
			return fmt.Errorf("%s: no stat data", p)
		}
		e := Entry{Path: filepath.ToSlash(rel), Mode: st.Mode & 0o7777, UID: st.Uid, GID: st.Gid}
		switch fi.Mode().Type() {
		case fs.ModeDir:
			e.Type = TypeDir
		case fs.ModeSymlink:
			e.Type = TypeSymlink
			if e.Target, err = os.Readlink(p); err != nil {
				return err
			}
		case 0:
			e.Type = TypeFile
			if total += int(fi.Size()); total > MaxVolumeBytes {
				return fmt.Errorf("more than %d bytes", MaxVolumeBytes)
			}
			if e.Data, err = os.ReadFile(p); err != nil {
				return err
			}
		default:
			return nil // sockets, fifos, devices: not kubelet's
		}
		out = append(out, e)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read volume %s: %w", root, err)
	}
	return out, nil
}

// CheckEntries refuses a tree restore must not write: paths that are not
// clean and relative, that repeat, whose parent is not a directory listed
// before them (so nothing is written through a symlink), unknown types,
// more than the limits.
func CheckEntries(entries []Entry) error {
	if len(entries) > MaxVolumeEntries {
		return fmt.Errorf("%d entries, more than %d", len(entries), MaxVolumeEntries)
	}
	dirs := map[string]bool{}
	seen := map[string]bool{}
	total := 0
	for i, e := range entries {
		if i == 0 {
			if e.Path != "." || e.Type != TypeDir {
				return errors.New("first entry must be the volume root directory \".\"")
			}
			dirs["."] = true
			continue
		}
		if e.Path == "" || e.Path == "." || path.Clean(e.Path) != e.Path || strings.HasPrefix(e.Path, "/") || e.Path == ".." || strings.HasPrefix(e.Path, "../") || strings.ContainsRune(e.Path, 0) {
			return fmt.Errorf("entry %q: not a clean relative path", e.Path)
		}
		if seen[e.Path] {
			return fmt.Errorf("entry %q: listed twice", e.Path)
		}
		seen[e.Path] = true
		if !dirs[path.Dir(e.Path)] {
			return fmt.Errorf("entry %q: parent is not a directory listed before it", e.Path)
		}
		if e.Mode&^0o7777 != 0 {
			return fmt.Errorf("entry %q: mode %o has bits beyond 07777", e.Path, e.Mode)
		}
		switch e.Type {
		case TypeDir:
			dirs[e.Path] = true
		case TypeFile:
			total += len(e.Data)
		case TypeSymlink:
			if e.Target == "" || strings.ContainsRune(e.Target, 0) {
				return fmt.Errorf("entry %q: bad symlink target", e.Path)
			}
		default:
			return fmt.Errorf("entry %q: unknown type %q", e.Path, e.Type)
		}
		if (e.Type != TypeFile && len(e.Data) > 0) || (e.Type != TypeSymlink && e.Target != "") {
			return fmt.Errorf("entry %q: %s with data or target", e.Path, e.Type)
		}
	}
	if total > MaxVolumeBytes {
		return fmt.Errorf("%d bytes of content, more than %d", total, MaxVolumeBytes)
	}
	return nil
}

// Version identifies a volume's content cheaply: kubelet's atomic writer
// points ..data at a new timestamped directory on every change, so its
// target changes whenever the content does. "" when there is no ..data.
func Version(dir string) string {
	t, err := os.Readlink(filepath.Join(dir, DataLink))
	if err != nil {
		return ""
	}
	return t
}

// Restored says what Restore did at one path.
type Restored string

// Restore outcomes.
const (
	// RestoredKept: a complete tmpfs was already there (kubelet's, or an
	// earlier restore's); nothing was changed.
	RestoredKept Restored = "kept"
	// RestoredFilled: a tmpfs was mounted (or an incomplete one cleared)
	// and the captured content written.
	RestoredFilled Restored = "filled"
	// RestoredEmpty: a tmpfs is there without content (a memory emptyDir,
	// or content that was not captured).
	RestoredEmpty Restored = "empty"
)

// Restore puts a tmpfs with opts at dir and, when entries is not nil,
// writes them into it. It is idempotent and crash-safe: a tmpfs already at
// dir that holds ..data (complete), or any tmpfs when there is no content
// to write, is kept as it is; a tmpfs without ..data (a restore cut short)
// is emptied and filled again. On a write failure the tmpfs stays mounted,
// emptied, so kubelet's later writes still reach the mount the container
// sees.
func Restore(dir string, opts Options, entries []Entry) (Restored, error) {
	if err := opts.check(); err != nil {
		return "", err
	}
	if entries != nil {
		if err := CheckEntries(entries); err != nil {
			return "", err
		}
	}
	dir = filepath.Clean(dir)
	if IsTmpfsMount(dir) {
		if entries == nil {
			return RestoredEmpty, nil
		}
		if _, err := os.Lstat(filepath.Join(dir, DataLink)); err == nil {
			return RestoredKept, nil
		}
		if err := emptyOut(dir); err != nil {
			return "", err
		}
	} else {
		if err := os.MkdirAll(dir, 0o750); err != nil {
			return "", fmt.Errorf("create volume dir %s: %w", dir, err)
		}
		if err := unix.Mount("tmpfs", dir, "tmpfs", opts.flags()&^unix.MS_RDONLY, opts.Data); err != nil {
			return "", fmt.Errorf("mount tmpfs at %s (%s): %w", dir, opts.Data, err)
		}
	}
	if entries == nil {
		return RestoredEmpty, nil
	}
	if err := write(dir, entries); err != nil {
		if cerr := emptyOut(dir); cerr != nil {
			err = fmt.Errorf("%w (and emptying it again: %v)", err, cerr)
		}
		return "", fmt.Errorf("restore volume %s: %w", dir, err)
	}
	if opts.flags()&unix.MS_RDONLY != 0 {
		if err := unix.Mount("", dir, "", unix.MS_REMOUNT|opts.flags(), opts.Data); err != nil {
			return "", fmt.Errorf("remount %s read-only: %w", dir, err)
		}
	}
	return RestoredFilled, nil
}

// emptyOut removes everything inside dir (a tmpfs mount point).
func emptyOut(dir string) error {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("empty volume %s: %w", dir, err)
	}
	for _, e := range ents {
		if err := os.RemoveAll(filepath.Join(dir, e.Name())); err != nil {
			return fmt.Errorf("empty volume %s: %w", dir, err)
		}
	}
	return nil
}

// write creates entries under dir (checked by CheckEntries): directories
// and files first, then symlinks with ..data last, then the modes of the
// directories (deepest first) and the root.
func write(dir string, entries []Entry) error {
	var links []Entry
	var data *Entry
	for i := 1; i < len(entries); i++ {
		e := entries[i]
		p := filepath.Join(dir, filepath.FromSlash(e.Path))
		switch e.Type {
		case TypeDir:
			if err := os.Mkdir(p, 0o700); err != nil {
				return err
			}
		case TypeFile:
			if err := writeFile(p, e); err != nil {
				return err
			}
		case TypeSymlink:
			if e.Path == DataLink {
				data = &entries[i]
			} else {
				links = append(links, e)
			}
		}
	}
	if data != nil {
		links = append(links, *data)
	}
	for _, e := range links {
		p := filepath.Join(dir, filepath.FromSlash(e.Path))
		if err := os.Symlink(e.Target, p); err != nil {
			return err
		}
		if err := os.Lchown(p, int(e.UID), int(e.GID)); err != nil {
			return err
		}
	}
	for i := len(entries) - 1; i >= 0; i-- {
		e := entries[i]
		if e.Type != TypeDir {
			continue
		}
		p := filepath.Join(dir, filepath.FromSlash(e.Path))
		if err := os.Lchown(p, int(e.UID), int(e.GID)); err != nil {
			return err
		}
		if err := unix.Chmod(p, e.Mode); err != nil {
			return fmt.Errorf("chmod %s: %w", p, err)
		}
	}
	return nil
}

func writeFile(p string, e Entry) error {
	fd, err := unix.Open(p, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return fmt.Errorf("create %s: %w", p, err)
	}
	f := os.NewFile(uintptr(fd), p)
	defer f.Close()
	if _, err := f.Write(e.Data); err != nil {
		return err
	}
	if err := f.Chown(int(e.UID), int(e.GID)); err != nil {
		return err
	}
	// fchmod after fchown: chown clears setuid/setgid bits.
	if err := unix.Fchmod(fd, e.Mode); err != nil {
		return fmt.Errorf("chmod %s: %w", p, err)
	}
	return f.Close()
}

// Volume is the capture of one volume.
type Volume struct {
	Ref
	Options Options `json:"options"`
	// Version is the ..data target when captured (change detection).
	Version string `json:"version,omitempty"`
	// Entries is the content (plain kinds); Sealed the content of a
	// sensitive kind, sealed. Neither is set for a memory emptyDir, nor
	// when the pod opted out (Withheld).
	Entries  []Entry `json:"entries,omitempty"`
	Sealed   []byte  `json:"sealed,omitempty"`
	Withheld bool    `json:"withheld,omitempty"`
	// Source is a SubPath mount's bind source: the path, inside a volume
	// or the host, whose file system object kubelet bound there.
	Source string `json:"source,omitempty"`
	// Refreshed is when this capture was last written (first seen, or
	// kubelet changed the content).
	Refreshed time.Time `json:"refreshed"`
}
