package volumes_test

import (
	"bytes"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/holdfast-edge/holdfast/cri-shim/seal"
	"github.com/holdfast-edge/holdfast/cri-shim/volumes"
	"github.com/holdfast-edge/holdfast/internal/statefile"
)

const uid = "6d1a2f3e-0000-4000-8000-000000000001"

func TestParsePath(t *testing.T) {
	root := "/var/lib/kubelet/pods/" + uid + "/volumes/"
	for _, c := range []struct {
		path string
		ok   bool
		kind volumes.Kind
	}{
		{root + "kubernetes.io~secret/creds", true, volumes.Secret},
		{root + "kubernetes.io~projected/kube-api-access-abcde", true, volumes.Projected},
		{root + "kubernetes.io~downward-api/podinfo", true, volumes.DownwardAPI},
		{root + "kubernetes.io~empty-dir/cache/", true, volumes.EmptyDir},
		{root + "kubernetes.io~configmap/cfg", false, ""},         // on disk: survives
		{root + "kubernetes.io~secret/creds/password", false, ""}, // a file inside
		{root + "kubernetes.io~csi/pvc-1/mount", false, ""},       // not tmpfs-backed
		{"/var/lib/kubelet/pods/" + uid + "/volume-subpaths/creds/app/0", true, volumes.SubPath},
		{"/var/lib/kubelet/pods/" + uid + "/volume-subpaths/creds/app", false, ""},
		{"/var/lib/kubelet/pods/" + uid + "/volume-subpaths/creds/app/x", false, ""},
		{"/var/lib/kubelet/pods/" + uid + "/volume-subpaths/creds/app/0/deeper", false, ""},
		{"/var/lib/kubelet/pods/" + uid + "/volume-subpaths/creds//0", false, ""},
		{"/var/lib/kubelet/pods/other-uid/volumes/kubernetes.io~secret/creds", false, ""},
		{"relative/pods/" + uid + "/volumes/kubernetes.io~secret/creds", false, ""},
	} {
		r, ok := volumes.ParsePath(uid, c.path)
		if ok != c.ok || (ok && (r.Kind != c.kind || r.Path != filepath.Clean(c.path))) {
			t.Errorf("ParsePath(%q) = %+v, %v; want kind %q ok %v", c.path, r, ok, c.kind, c.ok)
		}
	}
	refs := volumes.Refs(uid, []string{root + "kubernetes.io~secret/b", root + "kubernetes.io~secret/a", root + "kubernetes.io~secret/a", "/etc/hosts"})
	if len(refs) != 2 || refs[0].Name != "a" || refs[1].Name != "b" {
		t.Fatalf("Refs: %+v", refs)
	}
}

func TestParseMountInfo(t *testing.T) {
	data := []byte(`22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
100 22 0:50 / /var/lib/kubelet/pods/x/volumes/kubernetes.io~secret/with\040space rw,nosuid,relatime shared:7 - tmpfs tmpfs rw,size=1024k,mode=755,inode64
101 22 0:51 / /mnt/stacked rw,relatime - ext4 /dev/sdb rw
102 101 0:52 / /mnt/stacked ro,nodev,noexec,relatime - tmpfs tmpfs ro,size=4k,noswap
`)
	m, err := volumes.ParseMountInfo(data)
	if err != nil {
		t.Fatal(err)
	}
	mt, ok := m.Tmpfs("/var/lib/kubelet/pods/x/volumes/kubernetes.io~secret/with space")
	if !ok {
		t.Fatalf("escaped mount point not found: %v", m)
	}
	if o := mt.Options(); o.Data != "size=1024k,mode=755" || !reflect.DeepEqual(o.Flags, []string{"nosuid", "relatime"}) {
		t.Fatalf("options %+v", o)
	}
	st, ok := m.Tmpfs("/mnt/stacked")
	if !ok || st.Options().Data != "size=4k,noswap" || !reflect.DeepEqual(st.Options().Flags, []string{"ro", "nodev", "noexec", "relatime"}) {
		t.Fatalf("stacked mount: %+v %v", st, ok)
	}
	if _, ok := m.Tmpfs("/"); ok {
		t.Fatal("ext4 root reported as tmpfs")
	}
	for _, bad := range []string{"1 2 3\n", "1 2 3 4 5 6 7 8 9 no-separator\n", "1 2 0:5 / /x rw - tmpfs\n"} {
		if _, err := volumes.ParseMountInfo([]byte(bad)); err == nil {
			t.Errorf("ParseMountInfo(%q) accepted", bad)
		}
	}
}

func TestCheckEntries(t *testing.T) {
	root := volumes.Entry{Path: ".", Type: volumes.TypeDir, Mode: 0o755}
	ok := []volumes.Entry{root, {Path: "..data", Type: volumes.TypeSymlink, Target: "..ts"}, {Path: "..ts", Type: volumes.TypeDir, Mode: 0o755}, {Path: "..ts/k", Type: volumes.TypeFile, Mode: 0o644, Data: []byte("v")}}
	if err := volumes.CheckEntries(ok); err != nil {
		t.Fatal(err)
	}
	for name, bad := range map[string][]volumes.Entry{
		"no root":         {{Path: "k", Type: volumes.TypeFile}},
		"escape":          {root, {Path: "../etc/passwd", Type: volumes.TypeFile}},
		"absolute":        {root, {Path: "/etc/passwd", Type: volumes.TypeFile}},
		"unclean":         {root, {Path: "a//b", Type: volumes.TypeFile}},
		"through symlink": {root, {Path: "l", Type: volumes.TypeSymlink, Target: "/etc"}, {Path: "l/passwd", Type: volumes.TypeFile}},
		"orphan":          {root, {Path: "d/k", Type: volumes.TypeFile}},
		"twice":           {root, {Path: "k", Type: volumes.TypeFile}, {Path: "k", Type: volumes.TypeFile}},
		"type":            {root, {Path: "k", Type: "fifo"}},
		"mode":            {root, {Path: "k", Type: volumes.TypeFile, Mode: 0o170000}},
		"dir with data":   {root, {Path: "d", Type: volumes.TypeDir, Data: []byte("x")}},
		"empty target":    {root, {Path: "l", Type: volumes.TypeSymlink}},
	} {
		if err := volumes.CheckEntries(bad); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func requireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("this test mounts tmpfs: run it as root")
	}
}

type kfile struct {
	data string
	mode uint32
	gid  int
}

// kubeletWrite lays out files as kubelet's atomic writer does.
func kubeletWrite(t testing.TB, dir, ts string, files map[string]kfile) {
	t.Helper()
	ok := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	ok(os.Mkdir(filepath.Join(dir, ts), 0o755))
	for k, f := range files {
		p := filepath.Join(dir, ts, k)
		ok(os.MkdirAll(filepath.Dir(p), 0o755))
		ok(os.WriteFile(p, []byte(f.data), 0o600))
		ok(os.Chown(p, 0, f.gid))
		ok(os.Chmod(p, os.FileMode(f.mode)))
	}
	ok(os.Symlink(ts, filepath.Join(dir, "..data_tmp")))
	ok(os.Rename(filepath.Join(dir, "..data_tmp"), filepath.Join(dir, "..data")))
	for k := range files {
		top, _, _ := strings.Cut(k, "/")
		if _, err := os.Lstat(filepath.Join(dir, top)); err != nil {
			ok(os.Symlink("..data/"+top, filepath.Join(dir, top)))
		}
	}
}

type fixture struct {
	root                                           string
	secret, token, downward, memory, disk, configM string
	refs                                           []volumes.Ref
}

// newFixture makes a kubelet root with one pod's volumes of every kind.
func newFixture(t *testing.T) *fixture {
	requireRoot(t)
	f := &fixture{root: t.TempDir()}
	vols := filepath.Join(f.root, "pods", uid, "volumes")
	f.secret = filepath.Join(vols, "kubernetes.io~secret", "creds")
	f.token = filepath.Join(vols, "kubernetes.io~projected", "kube-api-access-q1")
	f.downward = filepath.Join(vols, "kubernetes.io~downward-api", "podinfo")
	f.memory = filepath.Join(vols, "kubernetes.io~empty-dir", "cache")
	f.disk = filepath.Join(vols, "kubernetes.io~empty-dir", "scratch")
	f.configM = filepath.Join(vols, "kubernetes.io~configmap", "cfg")
	for _, m := range []struct{ dir, data string }{{f.secret, "size=512k"}, {f.token, "size=1m,mode=750"}, {f.downward, ""}, {f.memory, "size=2m"}} {
		if err := os.MkdirAll(m.dir, 0o750); err != nil {
			t.Fatal(err)
		}
		if err := unix.Mount("tmpfs", m.dir, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, m.data); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { unix.Unmount(m.dir, unix.MNT_DETACH) })
	}
	const ts = "..2026_12_02_13_00_00.111111111"
	kubeletWrite(t, f.secret, ts, map[string]kfile{"password": {"s3cret", 0o440, 3000}, "dir/nested": {"deep", 0o400, 3000}})
	kubeletWrite(t, f.token, ts, map[string]kfile{"token": {strings.Repeat("j", 900), 0o644, 0}, "ca.crt": {"ca", 0o644, 0}, "namespace": {"ns", 0o644, 0}})
	kubeletWrite(t, f.downward, ts, map[string]kfile{"labels": {"a=b", 0o644, 0}})
	os.WriteFile(filepath.Join(f.memory, "junk"), []byte("x"), 0o644)
	os.MkdirAll(f.disk, 0o777)
	os.WriteFile(filepath.Join(f.disk, "kept"), []byte("disk"), 0o644)
	os.MkdirAll(f.configM, 0o777)
	kubeletWrite(t, f.configM, ts, map[string]kfile{"c": {"1", 0o644, 0}})
	f.refs = volumes.Refs(uid, []string{f.secret, f.token, f.downward, f.memory, f.disk, f.configM, "/etc/hosts"})
	return f
}

func (f *fixture) wipe(t *testing.T) {
	for _, d := range []string{f.secret, f.token, f.downward, f.memory} {
		if err := unix.Unmount(d, unix.MNT_DETACH); err != nil && err != unix.EINVAL { // EINVAL: not mounted
			t.Fatal(err)
		}
	}
}

func newBox(t *testing.T, dir string) *seal.Box {
	b, err := seal.LoadOrCreate(filepath.Join(dir, seal.KeyFileName), nil)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func newCapturer(t *testing.T, dir string, sealer volumes.Sealer) (*volumes.Capturer, []volumes.BadFile) {
	st, err := volumes.OpenStore(filepath.Join(dir, volumes.DirName))
	if err != nil {
		t.Fatal(err)
	}
	c, bad, err := volumes.NewCapturer(volumes.CapturerConfig{Store: st, Sealer: sealer, MountInfo: volumes.MountInfo, Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	return c, bad
}

// captured is a fixture whose volumes one scan has captured into a new
// state dir.
func captured(t *testing.T, optOut bool) (*fixture, string, *volumes.Capturer) {
	f := newFixture(t)
	state := t.TempDir()
	c, _ := newCapturer(t, state, newBox(t, state))
	c.Track(uid, "default/p", optOut, f.refs)
	if _, err := c.Scan(); err != nil {
		t.Fatal(err)
	}
	return f, state, c
}

func mounts(t *testing.T) volumes.Mounts {
	m, err := volumes.ReadMounts(volumes.MountInfo)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// TestCaptureAndRestoreEveryKind: each tmpfs kind captured, wiped (as by a
// reboot) and restored exactly: same tree (types, modes, uid/gid, symlink
// targets, content) and mount options; the memory emptyDir comes back as an
// empty tmpfs; the ConfigMap and the disk emptyDir are never captured nor
// mounted; Secret and token content is not on disk in the clear.
func TestCaptureAndRestoreEveryKind(t *testing.T) {
	f := newFixture(t)
	state := t.TempDir()
	c, _ := newCapturer(t, state, newBox(t, state))
	c.Track(uid, "default/p", false, f.refs)
	if n, err := c.Scan(); err != nil || n != 1 {
		t.Fatalf("scan wrote %d files: %v", n, err)
	}
	before := map[string][]volumes.Entry{}
	opts := map[string]volumes.Options{}
	m := mounts(t)
	for _, d := range []string{f.secret, f.token, f.downward} {
		e, err := volumes.Walk(d)
		if err != nil {
			t.Fatal(err)
		}
		before[d] = e
		mt, _ := m.Tmpfs(d)
		opts[d] = mt.Options()
	}
	raw, err := os.ReadFile(filepath.Join(state, volumes.DirName, uid+".json"))
	if err != nil {
		t.Fatal(err)
	}
	for _, plain := range []string{"s3cret", "deep", strings.Repeat("j", 32)} {
		if bytes.Contains(raw, []byte(plain)) {
			t.Fatalf("capture holds %q in the clear", plain)
		}
	}
	if !bytes.Contains(raw, []byte("a=b")) && !bytes.Contains(raw, []byte("YT1i")) {
		t.Fatal("downwardAPI content not captured")
	}

	f.wipe(t)
	// A new process after the reboot: loads the captures from disk.
	c2, bad := newCapturer(t, state, newBox(t, state))
	if len(bad) > 0 {
		t.Fatal(bad)
	}
	outs := c2.Restore(uid, f.refs)
	got := map[string]volumes.Restored{}
	for _, o := range outs {
		if o.Missing != "" {
			t.Errorf("%s: missing: %s", o.ID(), o.Missing)
		}
		got[o.ID()] = o.Restored
	}
	want := map[string]volumes.Restored{"secret/creds": volumes.RestoredFilled, "projected/kube-api-access-q1": volumes.RestoredFilled,
		"downward-api/podinfo": volumes.RestoredFilled, "empty-dir/cache": volumes.RestoredEmpty}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("restore outcomes %v, want %v", got, want)
	}
	m = mounts(t)
	for d, e := range before {
		after, err := volumes.Walk(d)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(after, e) {
			t.Errorf("%s restored as\n%+v\nwant\n%+v", d, after, e)
		}
		mt, ok := m.Tmpfs(d)
		if !ok || !reflect.DeepEqual(mt.Options(), opts[d]) {
			t.Errorf("%s: mount %+v, want options %+v", d, mt.Options(), opts[d])
		}
	}
	if mt, ok := m.Tmpfs(f.memory); !ok || mt.Options().Data != "size=2048k" {
		t.Fatalf("memory emptyDir: %+v %v", mt, ok)
	}
	if ents, _ := os.ReadDir(f.memory); len(ents) != 0 {
		t.Fatalf("memory emptyDir not empty: %v", ents)
	}
	for _, d := range []string{f.disk, f.configM} {
		if _, ok := m.Tmpfs(d); ok {
			t.Fatalf("%s mounted over", d)
		}
	}
	// Idempotent: a second restore keeps what is there.
	outs = c2.Restore(uid, f.refs)
	for _, o := range outs {
		if o.Restored != volumes.RestoredKept && o.Restored != volumes.RestoredEmpty {
			t.Errorf("second restore of %s: %s", o.ID(), o.Restored)
		}
	}
	if n := strings.Count(readMountInfo(t), f.secret+" "); n != 1 {
		t.Fatalf("secret mounted %d times after two restores", n)
	}
}

func readMountInfo(t *testing.T) string {
	data, err := os.ReadFile(volumes.MountInfo)
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}

// TestScanWritesOnlyChanges: an idle volume costs no write; kubelet's
// atomic update (a token rotation) is captured on the next scan.
func TestScanWritesOnlyChanges(t *testing.T) {
	f := newFixture(t)
	state := t.TempDir()
	c, _ := newCapturer(t, state, newBox(t, state))
	c.Track(uid, "default/p", false, f.refs)
	if n, err := c.Scan(); err != nil || n != 1 {
		t.Fatalf("first scan: %d %v", n, err)
	}
	for i := 0; i < 3; i++ {
		if n, err := c.Scan(); err != nil || n != 0 {
			t.Fatalf("idle scan wrote %d files: %v", n, err)
		}
	}
	kubeletWrite(t, f.token, "..2026_12_02_14_00_00.222222222", map[string]kfile{"token": {"rotated", 0o644, 0}, "ca.crt": {"ca", 0o644, 0}, "namespace": {"ns", 0o644, 0}})
	if n, err := c.Scan(); err != nil || n != 1 {
		t.Fatalf("scan after rotation wrote %d: %v", n, err)
	}
	f.wipe(t)
	c2, _ := newCapturer(t, state, newBox(t, state))
	c2.Restore(uid, f.refs)
	if got, _ := os.ReadFile(filepath.Join(f.token, "token")); string(got) != "rotated" {
		t.Fatalf("restored token %q, want the rotated one", got)
	}
}

// TestRestoreRefillsACutShortRestore: a tmpfs without ..data (a restore
// killed half-way) is emptied and filled again.
func TestRestoreRefillsACutShortRestore(t *testing.T) {
	f, _, c := captured(t, false)
	f.wipe(t)
	if err := unix.Mount("tmpfs", f.secret, "tmpfs", 0, "size=512k"); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(f.secret, "half"), []byte("x"), 0o600)
	outs := c.Restore(uid, f.refs)
	for _, o := range outs {
		if o.ID() == "secret/creds" && (o.Restored != volumes.RestoredFilled || o.Missing != "") {
			t.Fatalf("cut-short restore: %+v", o)
		}
	}
	if _, err := os.Lstat(filepath.Join(f.secret, "half")); err == nil {
		t.Fatal("leftover of the cut-short restore kept")
	}
	if got, _ := os.ReadFile(filepath.Join(f.secret, "password")); string(got) != "s3cret" {
		t.Fatalf("password %q", got)
	}
}

// TestUnusableCapturesGiveEmptyTmpfs: another node's key, a corrupt file
// and a file from a newer binary are refused with a message naming the
// problem (and the file); the pod's Secret/token volumes still come back
// as empty tmpfs mounts, so kubelet's later writes reach the container.
func TestUnusableCapturesGiveEmptyTmpfs(t *testing.T) {
	f, state, _ := captured(t, false)
	f.wipe(t)
	other := newBox(t, t.TempDir())
	c2, _ := newCapturer(t, state, other)
	outs := c2.Restore(uid, f.refs)
	for _, o := range outs {
		switch o.Kind {
		case volumes.Secret, volumes.Projected:
			if !strings.HasPrefix(o.Missing, volumes.MissingUndecryptable) || o.Restored != volumes.RestoredEmpty {
				t.Errorf("%s with another key: %+v", o.ID(), o)
			}
			if _, ok := mounts(t).Tmpfs(o.Path); !ok {
				t.Errorf("%s: no empty tmpfs", o.ID())
			}
		case volumes.DownwardAPI:
			if o.Missing != "" {
				t.Errorf("%s (plain) not restored: %s", o.ID(), o.Missing)
			}
		}
	}
	f.wipe(t)

	path := filepath.Join(state, volumes.DirName, uid+".json")
	good, _ := os.ReadFile(path)
	future, err := statefile.Reversion(good, volumes.FileVersion+1)
	if err != nil {
		t.Fatal(err)
	}
	for name, data := range map[string][]byte{
		"corrupt": bytes.Replace(good, []byte(`"creds"`), []byte(`"CREDS"`), 1),
		"future":  future,
		"torn":    good[:len(good)/2],
	} {
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		c3, bad := newCapturer(t, state, newBox(t, state))
		if len(bad) != 1 || bad[0].Path != path || !strings.Contains(bad[0].Err.Error(), path) {
			t.Fatalf("%s capture: bad files %v", name, bad)
		}
		t.Logf("%s: %v", name, bad[0].Err)
		outs := c3.Restore(uid, f.refs)
		for _, o := range outs {
			if o.Kind.Sensitive() && (o.Missing != volumes.MissingNotCaptured || o.Restored != volumes.RestoredEmpty) {
				t.Errorf("%s capture, %s: %+v", name, o.ID(), o)
			}
		}
		f.wipe(t)
		if got, _ := os.ReadFile(path); !bytes.Equal(got, data) {
			t.Fatalf("%s capture file was changed", name)
		}
	}
}

// TestOptOutKeepsNoContent: a pod with holdfast.dev/restore-volumes "false"
// has only mount options recorded; its volumes come back as empty tmpfs.
func TestOptOutKeepsNoContent(t *testing.T) {
	f, state, c := captured(t, true)
	raw, _ := os.ReadFile(filepath.Join(state, volumes.DirName, uid+".json"))
	if bytes.Contains(raw, []byte(`"sealed"`)) || bytes.Contains(raw, []byte(`"entries"`)) {
		t.Fatalf("opted-out pod's content captured: %s", raw)
	}
	f.wipe(t)
	outs := c.Restore(uid, f.refs)
	for _, o := range outs {
		if o.Kind.Sensitive() || o.Kind == volumes.DownwardAPI {
			if o.Missing != volumes.MissingOptedOut || o.Restored != volumes.RestoredEmpty {
				t.Errorf("%s: %+v", o.ID(), o)
			}
		}
	}
}

func sealBox(dir string) (*seal.Box, error) {
	return seal.LoadOrCreate(filepath.Join(dir, seal.KeyFileName), nil)
}

func discard() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }
