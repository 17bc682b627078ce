package volumes_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/holdfast-edge/holdfast/cri-shim/volumes"
)

// BenchmarkRestore: restoring one pod's two Secret volumes and its token
// (mount + kubelet's layout + content, sealed) on an idle node (holdfast),
// against checking and mounting the same three tmpfs empty as kubelet's
// emptyDir setup does (mount), same run: the cost of
// the restore step itself, without a relaunch's container starts competing
// for the mount table.
func BenchmarkRestore(b *testing.B) {
	requireRoot(b)
	root := b.TempDir()
	state := b.TempDir()
	box, err := sealBox(state)
	if err != nil {
		b.Fatal(err)
	}
	st, _ := volumes.OpenStore(filepath.Join(state, volumes.DirName))
	c, _, err := volumes.NewCapturer(volumes.CapturerConfig{Store: st, Sealer: box, MountInfo: volumes.MountInfo, Log: discard()})
	if err != nil {
		b.Fatal(err)
	}
	vols := filepath.Join(root, "pods", uid, "volumes")
	var paths []string
	for _, v := range []string{"kubernetes.io~secret/tls", "kubernetes.io~secret/creds", "kubernetes.io~projected/kube-api-access-b1"} {
		d := filepath.Join(vols, filepath.FromSlash(v))
		os.MkdirAll(d, 0o750)
		if err := unix.Mount("tmpfs", d, "tmpfs", 0, "size=1m"); err != nil {
			b.Fatal(err)
		}
		kubeletWrite(b, d, "..2026_12_02_13_00_00.1", map[string]kfile{"k": {strings.Repeat("x", 1200), 0o644, 0}, "ca.crt": {"ca", 0o644, 0}})
		paths = append(paths, d)
	}
	refs := volumes.Refs(uid, paths)
	c.Track(uid, "default/p", false, refs)
	if _, err := c.Scan(); err != nil {
		b.Fatal(err)
	}
	unmount := func() {
		for _, p := range paths {
			unix.Unmount(p, unix.MNT_DETACH)
		}
	}
	unmount()
	b.Cleanup(unmount)
	for _, variant := range []string{"holdfast", "mount"} {
		b.Run(variant+"/volumes=3", func(b *testing.B) {
			var took time.Duration
			for i := 0; i < b.N; i++ {
				start := time.Now()
				if variant == "holdfast" {
					outs := c.Restore(uid, refs)
					if len(outs) != 3 || outs[0].Missing != "" {
						b.Fatal(outs)
					}
				} else {
					for _, p := range paths { // what kubelet's emptyDir setup does
						if volumes.IsTmpfsMount(p) {
							b.Fatal("still mounted")
						}
						if err := unix.Mount("tmpfs", p, "tmpfs", 0, "size=1m"); err != nil {
							b.Fatal(err)
						}
					}
				}
				took += time.Since(start)
				b.StopTimer()
				unmount()
				b.StartTimer()
			}
			b.ReportMetric(float64(took.Nanoseconds())/1e6/float64(b.N), "ms/pod")
		})
	}
}
