package cniplugin

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/types"
)

// TestDelegateGC: the delegate is found in CNI_PATH, runs with
// CNI_COMMAND=GC and the config on stdin, and its CNI error comes back as
// a *types.Error; a missing or path-like plugin name is refused by name.
func TestDelegateGC(t *testing.T) {
	first, second := t.TempDir(), t.TempDir()
	out := filepath.Join(t.TempDir(), "seen")
	script := "#!/bin/sh\necho \"$CNI_COMMAND $CNI_CONTAINERID\" > " + out + "\ncat >> " + out + "\n"
	if err := os.WriteFile(filepath.Join(second, "ok-ipam"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	fail := "#!/bin/sh\necho '{\"code\":11,\"msg\":\"busy\"}'\nexit 1\n"
	if err := os.WriteFile(filepath.Join(second, "bad-ipam"), []byte(fail), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("CNI_PATH", first+string(filepath.ListSeparator)+second)
	t.Setenv("CNI_COMMAND", "DEL")
	t.Setenv("CNI_CONTAINERID", "c1")
	if err := DelegateGC(context.Background(), "ok-ipam", []byte(`{"name":"n"}`)); err != nil {
		t.Fatal(err)
	}
	seen, _ := os.ReadFile(out)
	if string(seen) != "GC c1\n{\"name\":\"n\"}" {
		t.Fatalf("delegate saw %q", seen)
	}
	var te *types.Error
	if err := DelegateGC(context.Background(), "bad-ipam", nil); !errors.As(err, &te) || te.Code != 11 || te.Msg != "busy" {
		t.Fatalf("failing delegate: %v, want its CNI error (11, busy)", err)
	}
	for _, name := range []string{"missing-ipam", "../bad-ipam", ""} {
		err := DelegateGC(context.Background(), name, nil)
		if err == nil || !strings.Contains(err.Error(), "plugin") || !strings.Contains(err.Error(), name) {
			t.Errorf("DelegateGC(%q): %v, want an error naming the plugin", name, err)
		}
	}
}
