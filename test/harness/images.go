package harness

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"debug/elf"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
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
	return writeImageEnv(path, ref, layer, entrypoint, "PATH=/bin")
}

func writeImageEnv(path, ref string, layer v1.Layer, entrypoint []string, env ...string) error {
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
	cf.Config.Env = env
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

// ImageSpec is a test image made of host files, for the stock components
// the e2e runs as pods (kube-proxy and flanneld with the host's iptables
// and nft userspace): no registry exists, so their images are built here,
// like the busybox ones.
type ImageSpec struct {
	// Ref is the image name the pods use (imagePullPolicy Never or
	// IfNotPresent: it must be imported first).
	Ref string
	// Files maps in-image absolute paths to host files. An ELF file brings
	// the shared libraries ldd lists for it (and the dynamic loader) at
	// their host paths.
	Files map[string]string
	// Dirs maps in-image directories to host directories copied whole (the
	// xtables extensions, which iptables dlopens); their ELF files bring
	// their libraries too.
	Dirs map[string]string
	// Links maps in-image symlinks to their targets.
	Links map[string]string
	// Entrypoint of the image.
	Entrypoint []string
}

// BuildImage writes spec's image as a tarball into the cache (named after
// its content, so an unchanged spec is built once) and returns its path.
func BuildImage(spec ImageSpec) (string, error) {
	files := map[string]string{}
	for in, host := range spec.Files {
		files[in] = host
	}
	for in, host := range spec.Dirs {
		entries, err := os.ReadDir(host)
		if err != nil {
			return "", fmt.Errorf("image %s: %w", spec.Ref, err)
		}
		for _, e := range entries {
			if !e.IsDir() {
				files[filepath.Join(in, e.Name())] = filepath.Join(host, e.Name())
			}
		}
	}
	for _, host := range append([]string{}, mapValues(files)...) {
		libs, err := sharedLibs(host)
		if err != nil {
			return "", fmt.Errorf("image %s: %w", spec.Ref, err)
		}
		for _, l := range libs {
			files[l] = l
		}
	}
	layer, err := filesLayer(files, spec.Links)
	if err != nil {
		return "", fmt.Errorf("image %s: %w", spec.Ref, err)
	}
	digest, err := layer.Digest()
	if err != nil {
		return "", err
	}
	dir := filepath.Join(CacheDir(), "images")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	key := fmt.Sprintf("%x", sha256.Sum256([]byte(spec.Ref+"\x00"+strings.Join(spec.Entrypoint, "\x00")+"\x00"+digest.Hex)))
	path := filepath.Join(dir, strings.NewReplacer("/", "_", ":", "_").Replace(spec.Ref)+"-"+key[:12]+".tar")
	if _, err := os.Stat(path); err == nil {
		return path, nil
	}
	return path, writeImageEnv(path, spec.Ref, layer, spec.Entrypoint, "PATH=/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin:/opt/bin")
}

func mapValues(m map[string]string) []string {
	out := make([]string, 0, len(m))
	for _, v := range m {
		out = append(out, v)
	}
	sort.Strings(out)
	return out
}

// sharedLibs lists the libraries (and loader) an ELF file needs, from ldd;
// nothing for a static binary or a non-ELF file.
func sharedLibs(path string) ([]string, error) {
	f, err := elf.Open(path)
	if err != nil {
		return nil, nil // not ELF: a data file
	}
	dynamic := false
	for _, p := range f.Progs {
		dynamic = dynamic || p.Type == elf.PT_INTERP || p.Type == elf.PT_DYNAMIC
	}
	f.Close()
	if !dynamic {
		return nil, nil
	}
	out, err := exec.Command("ldd", path).Output()
	if err != nil {
		return nil, fmt.Errorf("ldd %s: %w", path, err)
	}
	var libs []string
	for _, line := range strings.Split(string(out), "\n") {
		fields := strings.Fields(line)
		switch {
		case len(fields) >= 3 && fields[1] == "=>" && strings.HasPrefix(fields[2], "/"):
			libs = append(libs, fields[2])
		case len(fields) >= 1 && strings.HasPrefix(fields[0], "/"):
			libs = append(libs, fields[0]) // the dynamic loader
		case len(fields) >= 2 && fields[1] == "=>" && fields[2] == "not":
			return nil, fmt.Errorf("%s: library %s not found", path, fields[0])
		}
	}
	return libs, nil
}

// filesLayer is one layer with files (in-image path → host file, content
// read through symlinks, mode kept), symlinks and every parent directory.
func filesLayer(files, links map[string]string) (v1.Layer, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	dirs := map[string]bool{}
	parents := func(p string) error {
		var ds []string
		for d := filepath.Dir(p); d != "/" && !dirs[d]; d = filepath.Dir(d) {
			ds = append([]string{d}, ds...)
		}
		for _, d := range ds {
			dirs[d] = true
			if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: d[1:] + "/", Mode: 0o755}); err != nil {
				return err
			}
		}
		return nil
	}
	// The directories every container runtime expects.
	for _, d := range []string{"/tmp/", "/proc/", "/sys/", "/dev/", "/etc/", "/run/", "/var/"} {
		if err := parents(d + "x"); err != nil {
			return nil, err
		}
	}
	for _, p := range mapKeys(files) {
		if !filepath.IsAbs(p) {
			return nil, fmt.Errorf("in-image path %q is not absolute", p)
		}
		data, err := os.ReadFile(files[p])
		if err != nil {
			return nil, err
		}
		st, err := os.Stat(files[p])
		if err != nil {
			return nil, err
		}
		if err := parents(p); err != nil {
			return nil, err
		}
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: p[1:], Mode: int64(st.Mode().Perm()), Size: int64(len(data))}); err != nil {
			return nil, err
		}
		if _, err := tw.Write(data); err != nil {
			return nil, err
		}
	}
	for _, p := range mapKeys(links) {
		if err := parents(p); err != nil {
			return nil, err
		}
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeSymlink, Name: p[1:], Linkname: links[p], Mode: 0o777}); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	data := buf.Bytes()
	return tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(data)), nil })
}

func mapKeys(m map[string]string) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// ImportImage imports an image tarball into the node's containerd
// (namespace k8s.io). Images live in the node's var dir: one import
// survives reboots.
func (n *Node) ImportImage(ctx context.Context, path string) error {
	c, err := SelectedContainerd()
	if err != nil {
		return err
	}
	if _, err := n.Exec(ctx, c.Ctr, "-a", n.ContainerdSock, "-n", "k8s.io", "images", "import", path); err != nil {
		return fmt.Errorf("import %s: %w", filepath.Base(path), err)
	}
	return nil
}
