// Package test holds cross-cutting checks of the whole module; the
// integration suites live in its subdirectories.
package test

import (
	"debug/elf"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/holdfast-edge/holdfast/test/harness"
)

// The CNI plugins are exec'd once per pod on the pod's critical path: they
// must stay lean. This fails if anything drags grpc, client-go or
// Prometheus into their import graph, or net/http and OpenTelemetry (the
// CNI library's invoke package brings both; their init and page faults
// cost every ADD and DEL, docs/cni.md).
func TestCNIPluginsStayLean(t *testing.T) {
	forbidden := []string{"google.golang.org/grpc", "k8s.io/client-go", "github.com/prometheus/", "k8s.io/cri-api",
		"net/http", "crypto/tls", "go.opentelemetry.io/", "github.com/containernetworking/cni/pkg/invoke"}
	for _, pkg := range []string{"./plugins/holdfast", "./plugins/holdfast-ipam"} {
		cmd := exec.Command("go", "list", "-deps", pkg)
		cmd.Dir = harness.RepoRoot()
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("go list -deps %s: %v\n%s", pkg, err, out)
		}
		deps := strings.Fields(string(out))
		if len(deps) < 10 {
			t.Fatalf("go list -deps %s listed only %d packages: %q", pkg, len(deps), deps)
		}
		for _, d := range deps {
			for _, f := range forbidden {
				if strings.HasPrefix(d, f) {
					t.Errorf("%s imports %s (via its dependency graph); CNI plugins must not import %s", pkg, d, f)
				}
			}
		}
	}
}

// maxPluginInitBytes bounds what the package inits of a CNI plugin may
// allocate: a plugin runs its inits on every exec (twice per pod: ADD and
// DEL). Today: holdfast 41 KB, holdfast-ipam 26 KB; a regexp with a
// bounded repeat such as `{0,255}` compiled at init costs 200 KB and a
// millisecond (the one snapshot had did).
const maxPluginInitBytes = 64 << 10

// TestCNIPluginsStartCheap builds the plugins as shipped and checks that
// they are static (no dynamic loader: it adds about a millisecond to every
// exec) and that their package inits allocate at most maxPluginInitBytes
// (GODEBUG=inittrace=1, summed over every init).
func TestCNIPluginsStartCheap(t *testing.T) {
	dir := t.TempDir()
	for _, name := range []string{"holdfast", "holdfast-ipam"} {
		if err := harness.BuildPlugin(dir, name); err != nil {
			t.Fatal(err)
		}
		bin := filepath.Join(dir, name)
		f, err := elf.Open(bin)
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range f.Progs {
			if p.Type == elf.PT_INTERP {
				t.Errorf("%s is dynamically linked (has an ELF interpreter); the plugins ship static (CGO_ENABLED=0)", name)
			}
		}
		f.Close()
		cmd := exec.Command(bin)
		cmd.Env = []string{"CNI_COMMAND=VERSION", "GODEBUG=inittrace=1"}
		var stderr strings.Builder
		cmd.Stderr = &stderr
		if err := cmd.Run(); err != nil {
			t.Fatalf("%s VERSION: %v\n%s", name, err, stderr.String())
		}
		total, heaviest, heaviestBytes := 0, "", 0
		for _, line := range strings.Split(stderr.String(), "\n") {
			// init <pkg> @0.1 ms, 0.01 ms clock, <bytes> bytes, <n> allocs
			f := strings.Fields(line)
			if len(f) < 9 || f[0] != "init" || f[8] != "bytes," {
				continue
			}
			b, err := strconv.Atoi(f[7])
			if err != nil {
				t.Fatalf("inittrace line %q: %v", line, err)
			}
			total += b
			if b > heaviestBytes {
				heaviest, heaviestBytes = f[1], b
			}
		}
		if heaviest == "" {
			t.Fatalf("%s printed no inittrace lines:\n%s", name, stderr.String())
		}
		if total > maxPluginInitBytes {
			t.Errorf("%s: package inits allocate %d bytes, more than %d; heaviest: %s (%d bytes)", name, total, maxPluginInitBytes, heaviest, heaviestBytes)
		}
		t.Logf("%s: package inits allocate %d bytes (heaviest %s, %d)", name, total, heaviest, heaviestBytes)
	}
}

// holdfastdForbidden are packages holdfastd must not link, and why.
var holdfastdForbidden = map[string]string{
	// text/template's executor calls methods by name, so the linker keeps
	// every exported method of every type in the binary (all of
	// k8s.io/api's): 20 MB of holdfastd (docs/footprint.md). html/template
	// runs it; grpc links html/template unless built with grpcnotrace.
	"text/template": "its executor keeps every exported method linked",
	"html/template": "it runs text/template's executor",
	// The image is built at build time by install/cmd/mkimage (make image).
	"github.com/google/go-containerregistry/": "the image builder is a build tool (install/cmd/mkimage), not part of the node daemon",
	// The clientset's scheme registers every API group, linking all their
	// types; internal/kubeclient serves the three holdfast uses.
	"k8s.io/client-go/kubernetes":  "its scheme links every API group's types: use internal/kubeclient",
	"k8s.io/client-go/kubernetes/": "the typed clients import the clientset's scheme: use internal/kubeclient",
}

// TestHoldfastdLinksOnlyWhatNodesRun fails if holdfastd, built with the
// shipped flags (harness.BuildFlags: its build tags decide what grpc links),
// depends on a package of holdfastdForbidden, and names who imports it.
func TestHoldfastdLinksOnlyWhatNodesRun(t *testing.T) {
	args := append([]string{"list", "-deps", "-f", "{{.ImportPath}}:{{range .Imports}} {{.}}{{end}}"}, harness.BuildFlags...)
	cmd := exec.Command("go", append(args, "./cmd/holdfastd")...)
	cmd.Dir = harness.RepoRoot()
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("go list -deps ./cmd/holdfastd: %v\n%s", err, out)
	}
	importers := map[string][]string{}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	for _, l := range lines {
		pkg, imports, _ := strings.Cut(l, ":")
		for _, imp := range strings.Fields(imports) {
			importers[imp] = append(importers[imp], pkg)
		}
	}
	if len(lines) < 100 {
		t.Fatalf("go list -deps ./cmd/holdfastd listed only %d packages", len(lines))
	}
	for _, l := range lines {
		pkg, _, _ := strings.Cut(l, ":")
		for f, why := range holdfastdForbidden {
			if pkg == f || strings.HasSuffix(f, "/") && strings.HasPrefix(pkg, f) {
				t.Errorf("holdfastd links %s (imported by %v): %s", pkg, importers[pkg], why)
			}
		}
	}
}
