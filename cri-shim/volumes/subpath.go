package volumes

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// subPathDir is the directory of a pod's subPath bind mounts, beside its
// volumes/ directory.
const subPathDir = "/volume-subpaths/"

// parseSubPath matches <root>/pods/<uid>/volume-subpaths/<volume>/
// <container>/<index>.
func parseSubPath(uid, p string) (Ref, bool) {
	marker := "/pods/" + uid + subPathDir
	i := strings.LastIndex(p, marker)
	if i < 0 {
		return Ref{}, false
	}
	parts := strings.Split(p[i+len(marker):], "/")
	if len(parts) != 3 {
		return Ref{}, false
	}
	for _, s := range parts[:2] {
		if s == "" || s == "." || s == ".." {
			return Ref{}, false
		}
	}
	if _, err := strconv.ParseUint(parts[2], 10, 32); err != nil {
		return Ref{}, false
	}
	return Ref{Kind: SubPath, Name: strings.Join(parts, "/"), Path: p}, true
}

// BindSource returns the path whose file system object is bind-mounted at
// p, as the mount table and the file system show it now: the mount of the
// same file system whose root contains p's (the longest such root), joined
// with the rest of p's root; it must be the very object mounted at p (same
// device and inode), so a mount stacked over part of that path does not
// mislead it. false when nothing is mounted at p or no visible path leads
// to it.
func (m Mounts) BindSource(p string) (string, bool) {
	p = filepath.Clean(p)
	mt, ok := m[p]
	if !ok {
		return "", false
	}
	var cands []Mount
	for _, b := range m {
		if b.Point != p && b.Dev == mt.Dev && !strings.Contains(b.Point+"/", subPathDir) && within(mt.Root, b.Root) {
			cands = append(cands, b)
		}
	}
	sort.Slice(cands, func(i, j int) bool {
		if len(cands[i].Root) != len(cands[j].Root) {
			return len(cands[i].Root) > len(cands[j].Root)
		}
		return cands[i].Point < cands[j].Point
	})
	var at unix.Stat_t
	if unix.Stat(p, &at) != nil {
		return "", false
	}
	for _, b := range cands {
		src := filepath.Join(b.Point, strings.TrimPrefix(mt.Root, b.Root))
		var st unix.Stat_t
		if unix.Lstat(src, &st) == nil && st.Dev == at.Dev && st.Ino == at.Ino {
			return src, true
		}
	}
	return "", false
}

// within reports whether path p is root or below it.
func within(p, root string) bool {
	return p == root || root == "/" || strings.HasPrefix(p, root+"/")
}

// checkSource refuses a subPath source restore must not bind: relative,
// not clean, or itself a subPath mount.
func checkSource(src string) error {
	if !filepath.IsAbs(src) || filepath.Clean(src) != src || strings.Contains(src+"/", subPathDir) {
		return fmt.Errorf("subPath source %q is not a clean absolute path outside volume-subpaths", src)
	}
	return nil
}

// RestoredBound: a subPath mount's source was bound at its path again.
const RestoredBound Restored = "bound"

// Bind restores a subPath mount: binds source at target, unless something
// is already mounted there (kubelet's own bind, or an earlier restore).
// A source gone because kubelet's atomic writer moved on (a path through a
// timestamped ..<time> directory that ..data no longer names) is taken from
// the directory ..data names now. The source is opened without following a
// symlink, and that very object is bound (through /proc/self/fd), so a
// symlink swapped in cannot redirect the bind.
func Bind(target, source string, mounts Mounts) (Restored, error) {
	if err := checkSource(source); err != nil {
		return "", err
	}
	target = filepath.Clean(target)
	if _, ok := mounts[target]; ok {
		return RestoredKept, nil
	}
	source = currentSource(source)
	fd, err := unix.Open(source, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return "", fmt.Errorf("open subPath source %s: %w", source, err)
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return "", fmt.Errorf("stat subPath source %s: %w", source, err)
	}
	if st.Mode&unix.S_IFMT == unix.S_IFLNK {
		return "", fmt.Errorf("subPath source %s is a symlink", source)
	}
	if err := mountPoint(target, st.Mode&unix.S_IFMT == unix.S_IFDIR); err != nil {
		return "", err
	}
	if err := unix.Mount(fmt.Sprintf("/proc/self/fd/%d", fd), target, "", unix.MS_BIND, ""); err != nil {
		return "", fmt.Errorf("bind %s at %s: %w", source, target, err)
	}
	return RestoredBound, nil
}

// currentSource returns src, or, when src is gone and runs through a
// timestamped data directory of kubelet's atomic writer, the same path
// through the one ..data names now.
func currentSource(src string) string {
	if _, err := os.Lstat(src); !errors.Is(err, fs.ErrNotExist) {
		return src
	}
	parts := strings.Split(src, "/")
	for i := 1; i < len(parts); i++ {
		if !strings.HasPrefix(parts[i], "..") || parts[i] == ".." || parts[i] == DataLink {
			continue
		}
		dir := strings.Join(parts[:i], "/")
		cur, err := os.Readlink(filepath.Join(dir, DataLink))
		if err != nil || strings.Contains(cur, "/") {
			continue
		}
		parts[i] = cur
		return strings.Join(parts, "/")
	}
	return src
}

// mountPoint makes sure target exists as a directory (dir) or a file, as
// kubelet creates subPath mount points.
func mountPoint(target string, dir bool) error {
	var st unix.Stat_t
	err := unix.Lstat(target, &st)
	switch {
	case err == nil:
		if isDir := st.Mode&unix.S_IFMT == unix.S_IFDIR; isDir != dir {
			return fmt.Errorf("subPath mount point %s: directory %v, its source's %v", target, isDir, dir)
		}
		return nil
	case !errors.Is(err, unix.ENOENT):
		return fmt.Errorf("subPath mount point %s: %w", target, err)
	}
	if err := os.MkdirAll(filepath.Dir(target), 0o750); err != nil {
		return fmt.Errorf("create subPath mount point: %w", err)
	}
	if dir {
		err = os.Mkdir(target, 0o750)
	} else {
		var fd int
		if fd, err = unix.Open(target, unix.O_CREAT|unix.O_EXCL|unix.O_WRONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o640); err == nil {
			unix.Close(fd)
		}
	}
	if err != nil {
		return fmt.Errorf("create subPath mount point %s: %w", target, err)
	}
	return nil
}
