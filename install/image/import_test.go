package image

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/holdfast-edge/holdfast/test/harness"
)

// The image tarball must import into a real containerd with `ctr images
// import`, as the DaemonSets' nodes do, and run holdfastd from the image.
func TestImageImportsIntoContainerd(t *testing.T) {
	site := harness.NewSite(t, 1, harness.WithContainerd())
	node := site.Node(1)
	img, err := Build(DefaultConfig(harness.Binaries(t)))
	if err != nil {
		t.Fatal(err)
	}
	tarball := filepath.Join(t.TempDir(), "holdfastd.tar")
	if err := Write(tarball, DefaultRef, img); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if out, err := node.Exec(ctx, "ctr", "-a", node.ContainerdSock, "-n", "k8s.io", "images", "import", tarball); err != nil {
		t.Fatalf("ctr images import: %v\n%s", err, out)
	}
	out, err := node.Exec(ctx, "ctr", "-a", node.ContainerdSock, "-n", "k8s.io", "images", "ls", "-q")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, strings.TrimPrefix(DefaultRef, "docker.io/")) {
		t.Fatalf("image %s not listed after import:\n%s", DefaultRef, out)
	}
	// Run holdfastd from the image: its --help must list the commands.
	out, err = node.Exec(ctx, "ctr", "-a", node.ContainerdSock, "-n", "k8s.io", "run", "--rm", DefaultRef, "hf-image-check", "/usr/local/bin/holdfastd", "--help")
	if !strings.Contains(out, "snapshot") || !strings.Contains(out, "cri") {
		t.Fatalf("holdfastd from the image did not run (%v):\n%s", err, out)
	}
}
