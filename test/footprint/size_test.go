package footprint

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/holdfast-edge/holdfast/test/harness"
)

// BenchmarkBinarySize reports the sizes of the binaries `make build` left in
// bin/ and of the image `holdfastd image` builds from them (its tarball,
// whose one layer is gzip-compressed: what a node pulls over the WAN).
// Metrics: holdfastd-MB, holdfast-MB, holdfast-ipam-MB, image-gz-MB.
func BenchmarkBinarySize(b *testing.B) {
	dir := filepath.Join(harness.RepoRoot(), "bin")
	for _, name := range []string{"holdfastd", "holdfast", "holdfast-ipam"} {
		st, err := os.Stat(filepath.Join(dir, name))
		if err != nil {
			b.Fatalf("%v: run `make build` first (make bench does)", err)
		}
		b.ReportMetric(mb(uint64(st.Size())), name+"-MB")
	}
	out := filepath.Join(b.TempDir(), "holdfastd-image.tar")
	if msg, err := exec.Command(filepath.Join(dir, "holdfastd"), "image", "--bin-dir", dir, "--out", out).CombinedOutput(); err != nil {
		b.Fatalf("holdfastd image: %v: %s", err, msg)
	}
	st, err := os.Stat(out)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(mb(uint64(st.Size())), "image-gz-MB")
}
