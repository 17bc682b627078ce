// Package test holds cross-cutting checks of the whole module; the
// integration suites live in its subdirectories.
package test

import (
	"os/exec"
	"strings"
	"testing"

	"github.com/holdfast-edge/holdfast/test/harness"
)

// The CNI plugins are exec'd once per pod on the pod's critical path: they
// must stay lean. This fails if anything drags grpc, client-go or
// Prometheus into their import graph.
func TestCNIPluginsStayLean(t *testing.T) {
	forbidden := []string{"google.golang.org/grpc", "k8s.io/client-go", "github.com/prometheus/", "k8s.io/cri-api"}
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
