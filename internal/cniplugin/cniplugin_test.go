package cniplugin

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/types"

	"github.com/holdfast-edge/holdfast/internal/atomicfile"
)

func TestParseArgs(t *testing.T) {
	p, err := ParseArgs("x", "IgnoreUnknown=1;K8S_POD_NAMESPACE=shop;K8S_POD_NAME=web-0;K8S_POD_UID=u1;;")
	if err != nil || p != (PodArgs{"shop", "web-0", "u1"}) {
		t.Fatalf("got %+v, %v", p, err)
	}
	if _, err := ParseArgs("holdfast", "K8S_POD_NAMEnoequals"); err == nil || !strings.Contains(err.Error(), "holdfast: CNI_ARGS pair") {
		t.Fatalf("bad pair: %v", err)
	}
}

// TestParseArgsRefusesSlash: Kubernetes forbids "/" in namespaces and pod
// names; allowing it would let namespace "a/b" name "c" and namespace "a"
// name "b/c" share one pin key.
func TestParseArgsRefusesSlash(t *testing.T) {
	for _, args := range []string{"K8S_POD_NAMESPACE=a/b;K8S_POD_NAME=c", "K8S_POD_NAMESPACE=a;K8S_POD_NAME=b/c"} {
		_, err := ParseArgs("holdfast-ipam", args)
		var te *types.Error
		if !errors.As(err, &te) || te.Code != types.ErrInvalidEnvironmentVariables || !strings.Contains(te.Msg, "CNI_ARGS") || !strings.Contains(te.Msg, `"/"`) {
			t.Errorf("%s: want a code 4 error naming CNI_ARGS and \"/\", got %v", args, err)
		}
	}
}

// FuzzParseArgs: never panics; an accepted identity has no "/" and errors
// are CNI errors with code 4.
func FuzzParseArgs(f *testing.F) {
	f.Add("IgnoreUnknown=1;K8S_POD_NAMESPACE=shop;K8S_POD_NAME=web-0;K8S_POD_UID=u1")
	f.Add("K8S_POD_NAMESPACE=a/b;K8S_POD_NAME=c")
	f.Add("K8S_POD_NAME")
	f.Fuzz(func(t *testing.T, s string) {
		p, err := ParseArgs("x", s)
		if err != nil {
			var te *types.Error
			if !errors.As(err, &te) || te.Code != types.ErrInvalidEnvironmentVariables {
				t.Fatalf("error is not a code 4 CNI error: %v", err)
			}
			return
		}
		if strings.Contains(p.Namespace, "/") || strings.Contains(p.Name, "/") {
			t.Fatalf("accepted %+v", p)
		}
	})
}

func TestEnvCode(t *testing.T) {
	_, isDir := os.Open(t.TempDir() + "/missing/x")
	cases := []struct {
		err  error
		want uint
	}{
		{fmt.Errorf("lock: %w", atomicfile.ErrLockTimeout), types.ErrTryAgainLater},
		{fmt.Errorf("save: %w", isDir), types.ErrIOFailure},
		{fmt.Errorf("rename: %w", &os.LinkError{Op: "rename", Old: "a", New: "b", Err: errors.New("x")}), types.ErrIOFailure},
		{errors.New("netlink said no"), 42},
	}
	for _, c := range cases {
		if got := EnvCode(c.err, 42); got != c.want {
			t.Errorf("%v: code %d, want %d", c.err, got, c.want)
		}
	}
}
