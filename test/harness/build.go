package harness

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
)

// CNIPluginsVersion is the containernetworking/plugins release the tests run.
const CNIPluginsVersion = "v1.9.1"

// FlannelCNIVersion is the containernetworking/plugins release whose
// meta/flannel is the flannel CNI plugin the tests run: the last release
// that has it (it moved to flannel-io/cni-plugin, which the module proxy
// does not serve). It is the plugin kube-flannel installs, with one known
// difference: on a failed DEL it keeps its saved delegate config (a retry
// fails again), where flannel-io's drops it (a retry "succeeds").
const FlannelCNIVersion = "v0.9.1"

// RepoRoot returns the holdfast module root (the directory holding go.mod).
func RepoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
}

// CacheDir is the git-ignored cache of built tools and images.
func CacheDir() string {
	if d := os.Getenv("HOLDFAST_CACHE"); d != "" {
		return d
	}
	return filepath.Join(RepoRoot(), ".cache")
}

// BuildFlags are the go build flags of every shipped binary, as the
// Makefile's BUILD_FLAGS: static (CGO_ENABLED=0 is set beside them), no
// symbol table or DWARF, module-relative paths, without grpc's request
// tracing (grpcnotrace: it links html/template, which keeps every exported
// method of every linked type, docs/footprint.md). Tests and benchmarks
// exec and measure the binaries as shipped: a cgo build is dynamically
// linked, and the loader and libc start-up add about a millisecond to
// every exec.
var BuildFlags = []string{"-trimpath", "-tags=grpcnotrace", "-ldflags=-s -w"}

var (
	buildMu    sync.Mutex
	binDirOnce string
)

// Binaries builds holdfast, holdfast-ipam and holdfastd (once per test
// process) into the cache and returns the directory holding them. Each
// binary is built to a temp name and renamed into place, so test processes
// of other packages building at the same time, or still running the
// previous build, never see a torn file.
func Binaries(t testing.TB) string {
	t.Helper()
	buildMu.Lock()
	defer buildMu.Unlock()
	if binDirOnce != "" {
		return binDirOnce
	}
	dir := filepath.Join(CacheDir(), "bin")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, b := range []struct{ name, pkg string }{
		{"holdfast", "./plugins/holdfast"},
		{"holdfast-ipam", "./plugins/holdfast-ipam"},
		{"holdfastd", "./cmd/holdfastd"},
	} {
		tmp := filepath.Join(dir, fmt.Sprintf(".%s.%d", b.name, os.Getpid()))
		if err := goBuild(tmp, b.pkg); err != nil {
			os.Remove(tmp)
			t.Fatalf("harness: %v", err)
		}
		if err := os.Rename(tmp, filepath.Join(dir, b.name)); err != nil {
			t.Fatal(err)
		}
	}
	binDirOnce = dir
	return dir
}

// BuildPlugin builds the CNI plugin name ("holdfast", "holdfast-ipam")
// into dir the way `make build` ships it.
func BuildPlugin(dir, name string) error {
	return BuildTestPlugin(dir, name, "./plugins/"+name)
}

// BuildTestPlugin builds the package pkg (module-relative, e.g. a fixture
// plugin under a testdata directory) into dir as name, with the flags of
// the shipped plugins, so a benchmark compares like with like.
func BuildTestPlugin(dir, name, pkg string) error {
	return goBuild(filepath.Join(dir, name), pkg)
}

// goBuild builds pkg to out with BuildFlags, static.
func goBuild(out, pkg string) error {
	cmd := exec.Command("go", append(append([]string{"build"}, BuildFlags...), "-o", out, pkg)...)
	cmd.Dir = RepoRoot()
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if output, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("build %s: %v\n%s", pkg, err, output)
	}
	return nil
}

// CNIPlugins returns a directory with the reference CNI plugins (bridge,
// loopback, portmap, host-local) built at CNIPluginsVersion into the cache.
func CNIPlugins(t testing.TB) string {
	t.Helper()
	dir, err := EnsureCNIPlugins()
	if err != nil {
		t.Fatalf("harness: %v", err)
	}
	return dir
}

// EnsureCNIPlugins builds the reference CNI plugins into the cache if
// missing and returns their directory.
func EnsureCNIPlugins() (string, error) {
	buildMu.Lock()
	defer buildMu.Unlock()
	dir := filepath.Join(CacheDir(), "cni-plugins-"+CNIPluginsVersion)
	var missing []string
	for _, p := range []string{"main/bridge", "main/loopback", "meta/portmap", "ipam/host-local"} {
		if _, err := os.Stat(filepath.Join(dir, filepath.Base(p))); err != nil {
			missing = append(missing, "github.com/containernetworking/plugins/plugins/"+p+"@"+CNIPluginsVersion)
		}
	}
	if len(missing) == 0 {
		return dir, nil
	}
	cmd := exec.Command("go", append([]string{"install"}, missing...)...)
	cmd.Env = append(os.Environ(), "GOBIN="+dir, "CGO_ENABLED=0", "GOFLAGS=-mod=mod")
	cmd.Dir = os.TempDir() // outside our module: `go install pkg@version`
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("build reference CNI plugins (%s): %v\n%s", strings.Join(missing, " "), err, out)
	}
	return dir, nil
}

// FlannelCNI returns the path of the flannel CNI plugin built at
// FlannelCNIVersion into the cache (the Makefile's flannel-cni target
// builds the same).
func FlannelCNI(t testing.TB) string {
	t.Helper()
	bin, err := EnsureFlannelCNI()
	if err != nil {
		t.Fatalf("harness: %v", err)
	}
	return bin
}

// EnsureFlannelCNI builds the flannel CNI plugin into the cache if missing
// and returns its path.
func EnsureFlannelCNI() (string, error) {
	buildMu.Lock()
	defer buildMu.Unlock()
	dir := filepath.Join(CacheDir(), "flannel-cni-"+FlannelCNIVersion)
	bin := filepath.Join(dir, "flannel")
	if _, err := os.Stat(bin); err == nil {
		return bin, nil
	}
	cmd := exec.Command("go", "install", "github.com/containernetworking/plugins/plugins/meta/flannel@"+FlannelCNIVersion)
	cmd.Env = append(os.Environ(), "GOBIN="+dir, "CGO_ENABLED=0", "GOFLAGS=-mod=mod")
	cmd.Dir = os.TempDir() // outside our module: `go install pkg@version`
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("build the flannel CNI plugin %s: %v\n%s", FlannelCNIVersion, err, out)
	}
	return bin, nil
}

// PluginDir returns a directory holding both the reference CNI plugins and
// holdfast's own, as a node's /opt/cni/bin would.
func PluginDir(t testing.TB) string {
	t.Helper()
	ref := CNIPlugins(t)
	own := Binaries(t)
	dir := filepath.Join(own, "cni")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, src := range []string{
		filepath.Join(ref, "bridge"), filepath.Join(ref, "loopback"), filepath.Join(ref, "portmap"), filepath.Join(ref, "host-local"),
		filepath.Join(own, "holdfast"), filepath.Join(own, "holdfast-ipam"),
	} {
		// Symlink then rename: other packages' tests may be exec'ing it.
		dst := filepath.Join(dir, filepath.Base(src))
		tmp := fmt.Sprintf("%s.%d", dst, os.Getpid())
		os.Remove(tmp)
		if err := os.Symlink(src, tmp); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, dst); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}
