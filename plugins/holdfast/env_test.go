package main

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/types"

	"github.com/holdfast-edge/holdfast/internal/atomicfile"
)

// runPluginIn execs the holdfast binary inside the netns at hostNetns (so
// its overlay checks look at that netns, not the test's).
func runPluginIn(t testing.TB, hostNetns, verb, netns, cid, conf string) *types.Error {
	t.Helper()
	cmd := exec.Command("nsenter", "--net="+hostNetns, filepath.Join(pluginDir, "holdfast"))
	cmd.Env = []string{"CNI_COMMAND=" + verb, "CNI_CONTAINERID=" + cid, "CNI_NETNS=" + netns, "CNI_IFNAME=eth0", "CNI_PATH=" + pluginDir, "CNI_ARGS=K8S_POD_NAMESPACE=default;K8S_POD_NAME=x"}
	cmd.Stdin = strings.NewReader(conf)
	out, err := cmd.Output()
	if err == nil {
		return nil
	}
	var te types.Error
	if jerr := json.Unmarshal(out, &te); jerr != nil {
		t.Fatalf("%s: %v, stdout %q", verb, err, out)
	}
	return &te
}

// TestEnvironmentErrorCodes: faults of the node rather than of the request
// get the CNI spec's codes, with a message naming what is wrong: 4 for a
// CNI_NETNS that is no netns, 5 for a data dir that is a regular file or a
// lock path that is a directory.
func TestEnvironmentErrorCodes(t *testing.T) {
	e := newCNIEnv(t)
	pod := newNetns(t, "pod")
	e.add(t, e.holdfastList(t, "1.0.0", ""), rtConf("env", pod, "env"))
	prev := `{"cniVersion":"1.0.0","interfaces":[{"name":"eth0","sandbox":"` + pod.Path() + `"}],"ips":[{"address":"10.244.1.9/24","interface":0}]}`
	conf := func(dataDir, extra string) string {
		return fmt.Sprintf(`{"cniVersion":"1.0.0","name":"hf-pods","type":"holdfast","dataDir":%q%s,"prevResult":%s}`, dataDir, extra, prev)
	}
	fresh := func(setup func(dir string) string) string { return setup(t.TempDir()) }
	gone := "/var/run/netns/hf-gone-" + randSuffix()
	notNS := filepath.Join(t.TempDir(), "not-a-netns")
	os.WriteFile(notNS, nil, 0o600)
	cases := []struct {
		name, conf, netns string
		code              uint
		mention           string
	}{
		{"missing netns", conf(t.TempDir(), ""), gone, types.ErrInvalidEnvironmentVariables, "CNI_NETNS"},
		{"netns path not a netns", conf(t.TempDir(), ""), notNS, types.ErrInvalidEnvironmentVariables, "CNI_NETNS"},
		{"data dir is a regular file", conf(fresh(func(d string) string {
			p := filepath.Join(d, "cni")
			os.WriteFile(p, nil, 0o600)
			return p
		}), ""), pod.Path(), types.ErrIOFailure, "cni/hf-pods"},
		{"attachment lock is a directory", conf(fresh(func(d string) string {
			os.MkdirAll(filepath.Join(d, "hf-pods", atomicfile.LockFileName), 0o755)
			return d
		}), ""), pod.Path(), types.ErrIOFailure, "hf-pods/lock"},
		{"overlay lock is a directory", conf(fresh(func(d string) string {
			os.MkdirAll(filepath.Join(d, "overlay.lock"), 0o755)
			return d
		}), `,"overlay":{"device":"flannel.1","snapshotDir":"`+t.TempDir()+`"}`), pod.Path(), types.ErrIOFailure, "overlay.lock"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			te := runPluginIn(t, e.host.Path(), "ADD", c.netns, "env", c.conf)
			if te == nil || te.Code != c.code || !strings.Contains(te.Msg, c.mention) {
				t.Fatalf("got %+v, want code %d mentioning %q", te, c.code, c.mention)
			}
			t.Logf("code %d: %s", te.Code, te.Msg)
		})
	}
}
