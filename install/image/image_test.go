package image

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// staticBinary builds a tiny statically linked program.
func staticBinary(t *testing.T) string {
	t.Helper()
	d := t.TempDir()
	os.WriteFile(filepath.Join(d, "main.go"), []byte("package main\nfunc main() { println(\"hi\") }\n"), 0o644)
	os.WriteFile(filepath.Join(d, "go.mod"), []byte("module x\ngo 1.22\n"), 0o644)
	cmd := exec.Command("go", "build", "-o", "prog", ".")
	cmd.Dir = d
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOFLAGS=")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return filepath.Join(d, "prog")
}

func TestBuildWriteReadBack(t *testing.T) {
	bin := staticBinary(t)
	c := Config{Files: map[string]string{"/usr/local/bin/holdfastd": bin, "/opt/holdfast/cni/holdfast": bin}, Entrypoint: []string{"/usr/local/bin/holdfastd"}}
	img, err := Build(c)
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "img.tar")
	if err := Write(out, DefaultRef, img); err != nil {
		t.Fatal(err)
	}
	back, err := tarball.ImageFromPath(out, nil)
	if err != nil {
		t.Fatalf("read back: %v", err)
	}
	cf, err := back.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if cf.OS != "linux" || cf.Architecture != "amd64" || strings.Join(cf.Config.Entrypoint, " ") != "/usr/local/bin/holdfastd" {
		t.Fatalf("config: %+v", cf)
	}
	layers, _ := back.Layers()
	if len(layers) != 1 {
		t.Fatalf("%d layers", len(layers))
	}
	rc, _ := layers[0].Uncompressed()
	tr := tar.NewReader(rc)
	want, _ := os.ReadFile(bin)
	files := map[string]bool{}
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if h.Typeflag == tar.TypeReg {
			data, _ := io.ReadAll(tr)
			if len(data) != len(want) || h.Mode != 0o755 {
				t.Fatalf("%s: %d bytes mode %o", h.Name, len(data), h.Mode)
			}
			files[h.Name] = true
		}
	}
	if !files["usr/local/bin/holdfastd"] || !files["opt/holdfast/cni/holdfast"] {
		t.Fatalf("files in layer: %v", files)
	}
	// Reproducible: same inputs, same digest.
	img2, _ := Build(c)
	d1, _ := img.Digest()
	d2, _ := img2.Digest()
	if d1 != d2 {
		t.Fatalf("digests differ: %s %s", d1, d2)
	}
	// The layer is gzip at its best compression (it crosses the WAN to
	// every node): the same bytes gzip -9 makes of the layer's tar.
	rc, _ = layers[0].Uncompressed()
	raw, _ := io.ReadAll(rc)
	var best bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&best, gzip.BestCompression)
	zw.Write(raw)
	zw.Close()
	cr, _ := layers[0].Compressed()
	gz, _ := io.ReadAll(cr)
	if !bytes.Equal(gz, best.Bytes()) {
		t.Fatalf("layer: %d compressed bytes, gzip's best compression of it is %d", len(gz), best.Len())
	}
	// The tarball names the image so ctr import tags it.
	m, err := tarball.LoadManifest(func() (io.ReadCloser, error) { return os.Open(out) })
	if err != nil || len(m) != 1 || len(m[0].RepoTags) != 1 || m[0].RepoTags[0] != DefaultRef {
		t.Fatalf("tarball manifest: %+v %v", m, err)
	}
}

func TestRefusesDynamicBinary(t *testing.T) {
	sh, err := exec.LookPath("ls")
	if err != nil {
		t.Fatal(err)
	}
	_, err = Build(Config{Files: map[string]string{"/bin/ls": sh}})
	if err == nil || !strings.Contains(err.Error(), "CGO_ENABLED=0") {
		t.Fatalf("dynamic binary: %v", err)
	}
	if _, err := Build(Config{Files: map[string]string{"/x": "/etc/hostname"}}); err == nil || !strings.Contains(err.Error(), "not an ELF") {
		t.Fatalf("non-ELF: %v", err)
	}
}
