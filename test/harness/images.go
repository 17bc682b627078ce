package harness

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

const (
	// BusyboxImage runs pods' containers: Debian's busybox-static with a
	// symlink per applet and an index page at /var/www for HTTP checks.
	BusyboxImage = "holdfast.test/busybox:1"
	// PauseImage is the sandbox image: busybox sleeping forever.
	PauseImage = "holdfast.test/pause:1"
	// PodHTTPPort is where the default container serves /var/www.
	PodHTTPPort = 8080
	// PodPage is the body the default container serves.
	PodPage = "holdfast pod page\n"
)

// DefaultCommand is what a container runs when its spec gives none: an HTTP
// server on PodHTTPPort (for TCP checks) in the foreground.
var DefaultCommand = []string{"/bin/httpd", "-f", "-p", fmt.Sprint(PodHTTPPort), "-h", "/var/www"}

// imageTarballs builds (once, cached by busybox's content) the busybox and
// pause image tarballs and returns their paths.
func imageTarballs() (map[string]string, error) {
	layer, digest, err := hostBusyboxLayer()
	if err != nil {
		return nil, err
	}
	dir := filepath.Join(CacheDir(), "images")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	paths := map[string]string{}
	for ref, entry := range map[string][]string{
		BusyboxImage: {"/bin/sh"},
		PauseImage:   {"/bin/sleep", "2147483647"},
	} {
		path := filepath.Join(dir, strings.NewReplacer("/", "_", ":", "_").Replace(ref)+"-"+digest.Hex[:12]+".tar")
		paths[ref] = path
		if _, err := os.Stat(path); err == nil {
			continue
		}
		if err := writeImage(path, ref, layer, entry); err != nil {
			return nil, err
		}
	}
	return paths, nil
}

// hostBusyboxLayer is the one layer of every test image, from the host's
// busybox-static, and its digest.
func hostBusyboxLayer() (v1.Layer, v1.Hash, error) {
	bb, err := os.ReadFile("/bin/busybox")
	if err != nil {
		return nil, v1.Hash{}, fmt.Errorf("read /bin/busybox (install busybox-static, `make deps`): %w", err)
	}
	out, err := exec.Command("/bin/busybox", "--list").Output()
	if err != nil {
		return nil, v1.Hash{}, fmt.Errorf("busybox --list: %w", err)
	}
	layer, err := busyboxLayer(bb, strings.Fields(string(out)))
	if err != nil {
		return nil, v1.Hash{}, err
	}
	digest, err := layer.Digest()
	return layer, digest, err
}

func busyboxLayer(bb []byte, applets []string) (v1.Layer, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, d := range []string{"bin/", "etc/", "tmp/", "proc/", "sys/", "dev/", "var/", "var/www/", "root/"} {
		mode := int64(0o755)
		if d == "tmp/" {
			mode = 0o1777
		}
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: d, Mode: mode}); err != nil {
			return nil, err
		}
	}
	files := []struct {
		name string
		mode int64
		data []byte
	}{
		{"bin/busybox", 0o755, bb},
		{"etc/passwd", 0o644, []byte("root:x:0:0:root:/root:/bin/sh\n")},
		{"etc/group", 0o644, []byte("root:x:0:\n")},
		{"var/www/index.html", 0o644, []byte(PodPage)},
	}
	for _, f := range files {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: f.name, Mode: f.mode, Size: int64(len(f.data))}); err != nil {
			return nil, err
		}
		if _, err := tw.Write(f.data); err != nil {
			return nil, err
		}
	}
	for _, a := range applets {
		if a == "busybox" {
			continue
		}
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeSymlink, Name: "bin/" + a, Linkname: "busybox", Mode: 0o777}); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	data := buf.Bytes()
	return tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(data)), nil })
}

func writeImage(path, ref string, layer v1.Layer, entrypoint []string) error {
	img, err := mutate.AppendLayers(empty.Image, layer)
	if err != nil {
		return err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return err
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", "amd64"
	cf.Config.Entrypoint = entrypoint
	cf.Config.Env = []string{"PATH=/bin"}
	img, err = mutate.ConfigFile(img, cf)
	if err != nil {
		return err
	}
	tag, err := name.NewTag(ref)
	if err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := tarball.WriteToFile(tmp, tag, img); err != nil {
		return fmt.Errorf("write image %s: %w", ref, err)
	}
	return os.Rename(tmp, path)
}

// ImportStandIn imports into the node's containerd (namespace k8s.io) a
// busybox image tagged ref with the given entrypoint: a stand-in for an
// upstream image a test suite (critest) names, since no registry exists.
// The image tarball is cached like the test images.
func (n *Node) ImportStandIn(ref string, entrypoint ...string) error {
	c, err := SelectedContainerd()
	if err != nil {
		return err
	}
	layer, digest, err := hostBusyboxLayer()
	if err != nil {
		return err
	}
	dir := filepath.Join(CacheDir(), "images")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	key := strings.Join(append([]string{ref}, entrypoint...), " ")
	path := filepath.Join(dir, fmt.Sprintf("standin-%x-%s.tar", sha256.Sum256([]byte(key)), digest.Hex[:12]))
	if _, err := os.Stat(path); err != nil {
		if err := writeImage(path, ref, layer, entrypoint); err != nil {
			return err
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if _, err := n.Exec(ctx, c.Ctr, "-a", n.ContainerdSock, "-n", "k8s.io", "images", "import", path); err != nil {
		return fmt.Errorf("import stand-in %s: %w", ref, err)
	}
	return nil
}
