package harness

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// KubeletKernelDefaults are the sysctls kubelet insists on. They are
// host-wide (not per netns), so a test never lets kubelet write them: it
// runs kubelet in a mount namespace of its own where files with these
// values are bind-mounted over /proc/sys (KubeletSysctlScript), and
// protectKernelDefaults makes kubelet fail instead of writing if they ever
// differ.
var KubeletKernelDefaults = map[string]string{
	"vm/overcommit_memory":      "1",
	"vm/panic_on_oom":           "0",
	"kernel/panic":              "10",
	"kernel/panic_on_oops":      "1",
	"kernel/keys/root_maxkeys":  "1000000",
	"kernel/keys/root_maxbytes": "25000000",
}

// KubeletSysctlScript writes one file per KubeletKernelDefaults entry into
// dir and returns a /bin/sh script that bind-mounts them over /proc/sys and
// then execs its arguments: run it as `unshare --mount --propagation
// unchanged -- /bin/sh -c SCRIPT kubelet FLAGS...`.
func KubeletSysctlScript(dir string) (string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	keys := make([]string, 0, len(KubeletKernelDefaults))
	for k := range KubeletKernelDefaults {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var script strings.Builder
	script.WriteString("set -e\n")
	for _, key := range keys {
		f := filepath.Join(dir, strings.ReplaceAll(key, "/", "."))
		if err := os.WriteFile(f, []byte(KubeletKernelDefaults[key]+"\n"), 0o644); err != nil {
			return "", err
		}
		fmt.Fprintf(&script, "mount --bind %s /proc/sys/%s\n", f, key)
	}
	script.WriteString(`exec "$0" "$@"` + "\n")
	return script.String(), nil
}
