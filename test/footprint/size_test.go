package footprint

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/holdfast-edge/holdfast/install/image"
	"github.com/holdfast-edge/holdfast/test/harness"
)

// BenchmarkBinarySize reports the sizes of the binaries `make build` left in
// bin/ and of the image `make image` builds from them (install/image, as
// install/cmd/mkimage runs it: its tarball, whose one layer is
// gzip-compressed, is what a node pulls over the WAN).
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
	img, err := image.Build(image.DefaultConfig(dir))
	if err != nil {
		b.Fatalf("build the image: %v", err)
	}
	if err := image.Write(out, image.DefaultRef, img); err != nil {
		b.Fatalf("write the image: %v", err)
	}
	st, err := os.Stat(out)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(mb(uint64(st.Size())), "image-gz-MB")
}
