package cniplugin

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/containernetworking/cni/pkg/types"
)

// DelegateGC runs the GC verb of the plugin named plugin (a CNI "type",
// looked up in CNI_PATH as every delegate is) with stdin as its network
// configuration, and the caller's environment with CNI_COMMAND=GC. A
// plugin that fails returns its CNI error (from its stdout) as a
// *types.Error. It does what the CNI library's invoke.DelegateGC does
// without importing that package, which drags net/http, crypto/tls and
// OpenTelemetry into a plugin exec'd once per pod: their init and page
// faults cost every ADD and DEL about a millisecond (docs/cni.md).
func DelegateGC(ctx context.Context, plugin string, stdin []byte) error {
	path, err := findInPath(plugin, filepath.SplitList(os.Getenv("CNI_PATH")))
	if err != nil {
		return err
	}
	cmd := exec.CommandContext(ctx, path)
	cmd.Env = append(withoutCNICommand(os.Environ()), "CNI_COMMAND=GC")
	cmd.Stdin = bytes.NewReader(stdin)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		var te types.Error
		if jerr := json.Unmarshal(stdout.Bytes(), &te); jerr == nil && (te.Code != 0 || te.Msg != "") {
			return &te
		}
		return fmt.Errorf("plugin %s GC: %w (stdout %q, stderr %q)", path, err, strings.TrimSpace(stdout.String()), strings.TrimSpace(stderr.String()))
	}
	return nil
}

// findInPath returns the executable plugin in the first of dirs holding it.
func findInPath(plugin string, dirs []string) (string, error) {
	if plugin == "" || strings.ContainsAny(plugin, "/\\") || plugin == "." || plugin == ".." {
		return "", fmt.Errorf("plugin type %q is not a plain file name", plugin)
	}
	if len(dirs) == 0 {
		return "", errors.New("CNI_PATH is empty: cannot find plugin " + plugin)
	}
	for _, d := range dirs {
		p := filepath.Join(d, plugin)
		if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() && st.Mode().Perm()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("plugin %s not found in CNI_PATH %q", plugin, strings.Join(dirs, string(filepath.ListSeparator)))
}

func withoutCNICommand(env []string) []string {
	out := make([]string, 0, len(env)+1)
	for _, kv := range env {
		if !strings.HasPrefix(kv, "CNI_COMMAND=") {
			out = append(out, kv)
		}
	}
	return out
}
