// Command mkimage builds the holdfastd OCI image tarball from make build's
// binaries, without Docker: `make image` runs it (go run
// ./install/cmd/mkimage). It is a build tool, not a holdfastd subcommand:
// the image builder (go-containerregistry) is code a node never runs, and
// holdfastd is mapped into every node daemon (docs/footprint.md).
package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"

	"github.com/holdfast-edge/holdfast/install/image"
)

func main() {
	flag.Usage = func() {
		fmt.Fprintf(flag.CommandLine.Output(), "Usage: go run ./install/cmd/mkimage [flags]\n\nBuild the holdfastd OCI image tarball without Docker: one layer with the statically linked holdfastd and\nthe two CNI plugins on an empty base. Import it with 'ctr -n k8s.io images import FILE'.\n\nFlags:\n")
		flag.PrintDefaults()
	}
	bin := flag.String("bin-dir", "bin", "directory holding holdfastd, holdfast and holdfast-ipam, all built with CGO_ENABLED=0 (make build)")
	ref := flag.String("ref", image.DefaultRef, "image name and tag recorded in the tarball (the manifests' default --image)")
	out := flag.String("out", "_output/holdfastd-image.tar", "tarball to write")
	flag.Parse()
	if flag.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "mkimage: unexpected arguments: %v\n", flag.Args())
		os.Exit(2)
	}
	if err := run(*bin, *ref, *out); err != nil {
		fmt.Fprintln(os.Stderr, "mkimage:", err)
		os.Exit(1)
	}
}

func run(binDir, ref, out string) error {
	img, err := image.Build(image.DefaultConfig(binDir))
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
		return err
	}
	if err := image.Write(out, ref, img); err != nil {
		return err
	}
	d, err := img.Digest()
	if err != nil {
		return err
	}
	fmt.Printf("wrote %s (%s, %s)\n", out, ref, d)
	return nil
}
