// Command mkimage builds the holdfastd OCI image tarball from make build's
// binaries, without Docker. `holdfastd image` does the same.
package main

import (
	"flag"
	"fmt"
	"os"

	"github.com/holdfast-edge/holdfast/install/image"
)

func main() {
	bin := flag.String("bin-dir", "bin", "directory holding statically linked holdfastd, holdfast and holdfast-ipam")
	ref := flag.String("ref", image.DefaultRef, "image name and tag recorded in the tarball")
	out := flag.String("out", "_output/holdfastd-image.tar", "tarball to write (importable with ctr images import)")
	flag.Parse()
	img, err := image.Build(image.DefaultConfig(*bin))
	if err == nil {
		err = os.MkdirAll(dirOf(*out), 0o755)
	}
	if err == nil {
		err = image.Write(*out, *ref, img)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "mkimage:", err)
		os.Exit(1)
	}
	d, _ := img.Digest()
	fmt.Printf("wrote %s (%s, %s)\n", *out, *ref, d)
}

func dirOf(p string) string {
	for i := len(p) - 1; i >= 0; i-- {
		if p[i] == '/' {
			return p[:i]
		}
	}
	return "."
}
