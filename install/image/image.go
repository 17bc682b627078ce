// Package image builds the holdfastd OCI image without Docker: one layer
// holding the statically linked holdfastd (and the two CNI plugins, for an
// install-from-image flow) on an empty base, written as an image tarball
// that `ctr images import` and `docker load` accept. It owns only the image
// bytes; it never pushes to a registry or talks to a runtime.
package image

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"debug/elf"
	"fmt"
	"io"
	"os"
	"path"
	"sort"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// DefaultRef is the image name the manifests use.
const DefaultRef = "ghcr.io/holdfast-edge/holdfastd:dev"

// Epoch stamps every file and the config, so the same binaries give the
// same image digest.
var Epoch = time.Unix(0, 0).UTC()

// Config lists what goes into the image.
type Config struct {
	// Files maps in-image absolute paths to host files.
	Files map[string]string
	// Entrypoint of the image.
	Entrypoint []string
}

// DefaultConfig lays out holdfastd from a build dir (make build's bin/).
// The image runs the in-cluster daemons only: the CNI plugins reach a node
// through `holdfastd install` from the host's bin dir, so they are not in
// it (3.1 MB of the compressed layer, docs/footprint.md).
func DefaultConfig(binDir string) Config {
	return Config{
		Files:      map[string]string{"/usr/local/bin/holdfastd": path.Join(binDir, "holdfastd")},
		Entrypoint: []string{"/usr/local/bin/holdfastd"},
	}
}

// CheckStatic refuses an ELF binary that needs a dynamic loader: the image
// has no libc.
func CheckStatic(p string) error {
	f, err := elf.Open(p)
	if err != nil {
		return fmt.Errorf("%s: not an ELF executable: %w", p, err)
	}
	defer f.Close()
	for _, prog := range f.Progs {
		if prog.Type == elf.PT_INTERP {
			return fmt.Errorf("%s is dynamically linked, but the image has no libc: build it with CGO_ENABLED=0", p)
		}
	}
	return nil
}

// Build returns the image.
func Build(c Config) (v1.Image, error) {
	if len(c.Files) == 0 {
		return nil, fmt.Errorf("no files to put in the image")
	}
	var paths []string
	for p := range c.Files {
		if !path.IsAbs(p) {
			return nil, fmt.Errorf("in-image path %q is not absolute", p)
		}
		paths = append(paths, p)
	}
	sort.Strings(paths)
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	dirs := map[string]bool{}
	for _, p := range paths {
		src := c.Files[p]
		if err := CheckStatic(src); err != nil {
			return nil, err
		}
		data, err := os.ReadFile(src)
		if err != nil {
			return nil, err
		}
		var parents []string
		for d := path.Dir(p); d != "/"; d = path.Dir(d) {
			parents = append([]string{d}, parents...)
		}
		for _, d := range parents {
			if dirs[d] {
				continue
			}
			dirs[d] = true
			if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: d[1:] + "/", Mode: 0o755, ModTime: Epoch}); err != nil {
				return nil, err
			}
		}
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: p[1:], Mode: 0o755, Size: int64(len(data)), ModTime: Epoch}); err != nil {
			return nil, err
		}
		if _, err := tw.Write(data); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	// The layer crosses a weak WAN to every node: gzip's best compression
	// (the library's default is its fastest) makes it 2.2 MB smaller. It is
	// compressed here, once; the library would compress it again for the
	// digest and for the tarball.
	var gz bytes.Buffer
	zw, err := gzip.NewWriterLevel(&gz, gzip.BestCompression)
	if err != nil {
		return nil, err
	}
	if _, err := zw.Write(buf.Bytes()); err != nil {
		return nil, fmt.Errorf("compress the layer: %w", err)
	}
	if err := zw.Close(); err != nil {
		return nil, fmt.Errorf("compress the layer: %w", err)
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(gz.Bytes())), nil
	})
	if err != nil {
		return nil, fmt.Errorf("layer: %w", err)
	}
	img, err := mutate.AppendLayers(empty.Image, layer)
	if err != nil {
		return nil, err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	cf.Architecture, cf.OS = "amd64", "linux"
	cf.Created = v1.Time{Time: Epoch}
	cf.Config.Entrypoint = c.Entrypoint
	cf.Config.Env = []string{"PATH=/usr/local/bin:/usr/bin:/bin"}
	cf.Config.Labels = map[string]string{"org.opencontainers.image.source": "https://github.com/holdfast-edge/holdfast"}
	return mutate.ConfigFile(img, cf)
}

// Write writes img as a tarball named ref to out.
func Write(out, ref string, img v1.Image) error {
	tag, err := name.NewTag(ref)
	if err != nil {
		return fmt.Errorf("image name %q: %w", ref, err)
	}
	return tarball.WriteToFile(out, tag, img)
}
