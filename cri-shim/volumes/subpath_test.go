package volumes_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/holdfast-edge/holdfast/cri-shim/volumes"
	"github.com/holdfast-edge/holdfast/internal/statefile"
)

// subPathFixture adds kubelet's subPath bind mounts to a fixture: a file
// of the Secret, a directory of the Secret and a file of the on-disk
// ConfigMap, each bound from its resolved path in the timestamped data
// directory, as kubelet binds them.
type subPathFixture struct {
	*fixture
	targets map[string]string // target → source
	refs    []volumes.Ref     // the fixture's volumes and the subPath mounts
}

const fixtureTS = "..2026_12_02_13_00_00.111111111"

func newSubPathFixture(t *testing.T) *subPathFixture {
	f := &subPathFixture{fixture: newFixture(t), targets: map[string]string{}}
	subs := filepath.Join(f.root, "pods", uid, "volume-subpaths")
	for _, b := range []struct{ vol, target, src string }{
		{f.secret, "creds/app/0", "password"},
		{f.secret, "creds/app/1", "dir"},
		{f.configM, "cfg/app/2", "c"},
	} {
		src := filepath.Join(b.vol, fixtureTS, b.src)
		target := filepath.Join(subs, b.target)
		if err := os.MkdirAll(filepath.Dir(target), 0o750); err != nil {
			t.Fatal(err)
		}
		if st, _ := os.Stat(src); st.IsDir() {
			os.Mkdir(target, 0o750)
		} else {
			os.WriteFile(target, nil, 0o640)
		}
		if err := unix.Mount(src, target, "", unix.MS_BIND, ""); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { unix.Unmount(target, unix.MNT_DETACH) })
		f.targets[target] = src
	}
	var paths []string
	for _, r := range f.fixture.refs {
		paths = append(paths, r.Path)
	}
	for target := range f.targets {
		paths = append(paths, target)
	}
	f.refs = volumes.Refs(uid, paths)
	return f
}

func (f *subPathFixture) wipe(t *testing.T) {
	for target := range f.targets {
		if err := unix.Unmount(target, unix.MNT_DETACH); err != nil {
			t.Fatal(err)
		}
	}
	f.fixture.wipe(t)
}

// TestCaptureAndRestoreSubPaths: kubelet's subPath binds (into a tmpfs
// Secret and into an on-disk ConfigMap, a file and a directory) are
// captured as their sources, and after a reboot wiped them and the Secret's
// tmpfs, restore binds them again from the restored volume: the same
// content at the same path, a missing mount point created; a ConfigMap
// updated meanwhile (its old data directory gone) is bound from the one
// ..data names now. A second restore keeps the binds.
func TestCaptureAndRestoreSubPaths(t *testing.T) {
	f := newSubPathFixture(t)
	state := t.TempDir()
	c, _ := newCapturer(t, state, newBox(t, state))
	c.Track(uid, "default/p", false, f.refs)
	if _, err := c.Scan(); err != nil {
		t.Fatal(err)
	}
	st, _ := volumes.OpenStore(filepath.Join(state, volumes.DirName))
	files, bad, err := st.Load()
	if err != nil || len(bad) > 0 || len(files) != 1 {
		t.Fatalf("load captures: %v %v %d", err, bad, len(files))
	}
	for target, src := range f.targets {
		r, _ := volumes.ParsePath(uid, target)
		v := files[0].Volume(r.ID())
		if v == nil || v.Source != src {
			t.Fatalf("%s captured as %+v, want source %s", r.ID(), v, src)
		}
	}

	for _, s := range volumes.StatusOf(files[0]) {
		if strings.HasPrefix(s.ID, "subpath/") && !strings.HasPrefix(s.Content, "bind:"+f.root) {
			t.Errorf("status of %s: %q", s.ID, s.Content)
		}
	}

	f.wipe(t)
	missing := filepath.Join(f.root, "pods", uid, "volume-subpaths", "creds", "app", "0")
	if err := os.Remove(missing); err != nil {
		t.Fatal(err)
	}
	kubeletWrite(t, f.configM, "..2026_12_02_14_00_00.222222222", map[string]kfile{"c": {"2", 0o644, 0}})
	if err := os.RemoveAll(filepath.Join(f.configM, fixtureTS)); err != nil {
		t.Fatal(err)
	}

	c2, _ := newCapturer(t, state, newBox(t, state))
	outs := c2.Restore(uid, f.refs)
	for _, o := range outs {
		want := volumes.RestoredFilled
		switch o.Kind {
		case volumes.SubPath:
			want = volumes.RestoredBound
		case volumes.EmptyDir:
			want = volumes.RestoredEmpty
		}
		if o.Missing != "" || o.Restored != want {
			t.Errorf("%s: %s (missing %q), want %s", o.ID(), o.Restored, o.Missing, want)
		}
	}
	subs := filepath.Join(f.root, "pods", uid, "volume-subpaths")
	for rel, want := range map[string]string{"creds/app/0": "s3cret", "creds/app/1/nested": "deep", "cfg/app/2": "2"} {
		got, err := os.ReadFile(filepath.Join(subs, rel))
		if err != nil || string(got) != want {
			t.Errorf("%s after restore: %q %v, want %q", rel, got, err, want)
		}
	}

	outs = c2.Restore(uid, f.refs)
	for _, o := range outs {
		if o.Kind == volumes.SubPath && o.Restored != volumes.RestoredKept {
			t.Errorf("second restore of %s: %s %s", o.ID(), o.Restored, o.Missing)
		}
	}
	if n := strings.Count(readMountInfo(t), missing+" "); n != 1 {
		t.Fatalf("%s mounted %d times after two restores", missing, n)
	}
}

// TestBindRefusesSymlinkAndMismatch: restore never binds through a symlink
// swapped in for the source, nor a directory onto a file mount point, and
// a source outside any volume path rule is refused before anything is
// touched.
func TestBindRefusesSymlinkAndMismatch(t *testing.T) {
	requireRoot(t)
	dir := t.TempDir()
	target := filepath.Join(dir, "pods", uid, "volume-subpaths", "v", "app", "0")
	os.MkdirAll(filepath.Dir(target), 0o750)
	os.WriteFile(filepath.Join(dir, "secret"), []byte("x"), 0o600)
	link := filepath.Join(dir, "link")
	os.Symlink(filepath.Join(dir, "secret"), link)
	m := mounts(t)
	for name, c := range map[string]struct {
		source string
		setup  func()
		want   string
	}{
		"symlink source":   {link, func() {}, "symlink"},
		"relative source":  {"secret", func() {}, "clean absolute"},
		"subPath source":   {filepath.Join(dir, "pods", uid, "volume-subpaths", "v", "app", "1"), func() {}, "outside volume-subpaths"},
		"dir onto file":    {dir, func() { os.WriteFile(target, nil, 0o640) }, "directory false"},
		"missing source":   {filepath.Join(dir, "gone"), func() {}, "no such file"},
		"not clean source": {dir + "/./secret", func() {}, "clean absolute"},
	} {
		os.RemoveAll(target)
		c.setup()
		_, err := volumes.Bind(target, c.source, m)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: Bind = %v, want an error with %q", name, err, c.want)
		}
		if strings.Contains(readMountInfo(t), target) {
			unix.Unmount(target, unix.MNT_DETACH)
			t.Errorf("%s: bound anyway", name)
		}
	}
}

// TestBindSourceChecksTheObject: a subPath source later hidden by a mount
// stacked on its directory is not reported as the path that now shows
// another file.
func TestBindSourceChecksTheObject(t *testing.T) {
	requireRoot(t)
	dir := t.TempDir()
	sub := filepath.Join(dir, "vol", "sub")
	os.MkdirAll(sub, 0o750)
	os.WriteFile(filepath.Join(sub, "file"), []byte("orig"), 0o600)
	target := filepath.Join(dir, "pods", uid, "volume-subpaths", "v", "app", "0")
	os.MkdirAll(filepath.Dir(target), 0o750)
	os.WriteFile(target, nil, 0o640)
	if err := unix.Mount(filepath.Join(sub, "file"), target, "", unix.MS_BIND, ""); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Unmount(target, unix.MNT_DETACH) })
	if src, ok := mounts(t).BindSource(target); !ok || src != filepath.Join(sub, "file") {
		t.Fatalf("BindSource = %q %v, want %s", src, ok, filepath.Join(sub, "file"))
	}
	if err := unix.Mount("tmpfs", sub, "tmpfs", 0, "size=64k"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Unmount(sub, unix.MNT_DETACH) })
	os.WriteFile(filepath.Join(sub, "file"), []byte("impostor"), 0o600)
	if src, ok := mounts(t).BindSource(target); ok {
		t.Fatalf("BindSource = %q under the stacked mount, want none", src)
	}
}

// TestDecodeRefusesBadSubPaths: a capture file whose subPath entry could
// make restore bind something it never captured, or carries what a subPath
// has not, is refused whole.
func TestDecodeRefusesBadSubPaths(t *testing.T) {
	target := "/var/lib/kubelet/pods/u1/volume-subpaths/s/app/0"
	sub := volumes.Ref{Kind: volumes.SubPath, Name: "s/app/0", Path: target}
	secret := volumes.Ref{Kind: volumes.Secret, Name: "s", Path: "/var/lib/kubelet/pods/u1/volumes/kubernetes.io~secret/s"}
	for name, v := range map[string]*volumes.Volume{
		"no source":        {Ref: sub},
		"relative source":  {Ref: sub, Source: "etc/shadow"},
		"unclean source":   {Ref: sub, Source: "/var/lib/../../etc"},
		"subPath source":   {Ref: sub, Source: "/var/lib/kubelet/pods/u1/volume-subpaths/s/app/1"},
		"content":          {Ref: sub, Source: "/srv/x", Entries: []volumes.Entry{{Path: ".", Type: volumes.TypeDir, Mode: 0o755}}},
		"options":          {Ref: sub, Source: "/srv/x", Options: volumes.Options{Data: "size=1k"}},
		"source on volume": {Ref: secret, Source: "/srv/x", Sealed: []byte{1}},
	} {
		data, err := statefile.Encode(volumes.FileKind, volumes.FileVersion, &volumes.PodFile{UID: "u1", Volumes: []*volumes.Volume{v}})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := volumes.Decode(data); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	good, _ := statefile.Encode(volumes.FileKind, volumes.FileVersion, &volumes.PodFile{UID: "u1", Volumes: []*volumes.Volume{{Ref: sub, Source: "/srv/x"}}})
	if _, err := volumes.Decode(good); err != nil {
		t.Fatalf("good subPath capture refused: %v", err)
	}
}
