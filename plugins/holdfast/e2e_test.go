package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"

	"github.com/holdfast-edge/holdfast/internal/stablemac"
	"github.com/holdfast-edge/holdfast/plugins/holdfast/attachment"
	"github.com/holdfast-edge/holdfast/test/harness"
)

// pluginDir holds the reference plugins and freshly built holdfast and
// holdfast-ipam (built once per test process, as `make build` ships them).
var pluginDir string

func TestMain(m *testing.M) {
	code := func() int {
		ref, err := harness.EnsureCNIPlugins()
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		dir, err := os.MkdirTemp("", "hf-cni-bin-")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer os.RemoveAll(dir)
		for _, b := range []string{"holdfast", "holdfast-ipam"} {
			if err := harness.BuildPlugin(dir, b); err != nil {
				fmt.Fprintln(os.Stderr, err)
				return 1
			}
		}
		for _, p := range []string{"bridge", "loopback", "portmap", "host-local"} {
			if err := os.Symlink(filepath.Join(ref, p), filepath.Join(dir, p)); err != nil {
				fmt.Fprintln(os.Stderr, err)
				return 1
			}
		}
		pluginDir = dir
		return m.Run()
	}()
	os.Exit(code)
}

func randSuffix() string {
	b := make([]byte, 4)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// newNetns creates a throwaway netns named hf-<prefix>-<random>, deleted at
// cleanup, and returns it opened.
func newNetns(t testing.TB, prefix string) ns.NetNS {
	t.Helper()
	name := "hf-" + prefix + "-" + randSuffix()
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add %s: %v: %s (root and iproute2 are required)", name, err, out)
	}
	n, err := ns.GetNS("/var/run/netns/" + name)
	if err != nil {
		exec.Command("ip", "netns", "del", name).Run()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		n.Close()
		exec.Command("ip", "netns", "del", name).Run()
	})
	return n
}

// cniEnv is a node's worth of CNI: a "host" netns with the bridge and the
// state dirs, and libcni pointed at the built plugins.
type cniEnv struct {
	host ns.NetNS
	dir  string
	cni  *libcni.CNIConfig
}

func newCNIEnv(t testing.TB) *cniEnv {
	t.Helper()
	harness.RequireRoot(t)
	dir := t.TempDir()
	host := newNetns(t, "cnihost")
	return &cniEnv{host: host, dir: dir, cni: libcni.NewCNIConfigWithCacheDir([]string{pluginDir}, filepath.Join(dir, "cache"), nil)}
}

// holdfastList is bridge + holdfast-ipam → holdfast → portmap.
func (e *cniEnv) holdfastList(t testing.TB, version string, extra string) *libcni.NetworkConfigList {
	t.Helper()
	return e.list(t, fmt.Sprintf(`{"cniVersion":%q,"name":"hf-pods","plugins":[
	 {"type":"bridge","bridge":"hf-br0","isGateway":true,"ipMasq":false,"ipam":{"type":"holdfast-ipam","dataDir":%q,"ranges":[[{"subnet":"10.244.1.0/24","gateway":"10.244.1.1"}]],"routes":[{"dst":"0.0.0.0/0"}]}},
	 {"type":"holdfast","dataDir":%q%s},
	 {"type":"portmap","capabilities":{"portMappings":true}}]}`, version, filepath.Join(e.dir, "ipam"), filepath.Join(e.dir, "cni"), extra))
}

// hostLocalList is the baseline: bridge + host-local → portmap.
func (e *cniEnv) hostLocalList(t testing.TB, version string) *libcni.NetworkConfigList {
	t.Helper()
	return e.list(t, fmt.Sprintf(`{"cniVersion":%q,"name":"hf-pods","plugins":[
	 {"type":"bridge","bridge":"hf-br0","isGateway":true,"ipMasq":false,"ipam":{"type":"host-local","dataDir":%q,"ranges":[[{"subnet":"10.244.1.0/24","gateway":"10.244.1.1"}]],"routes":[{"dst":"0.0.0.0/0"}]}},
	 {"type":"portmap","capabilities":{"portMappings":true}}]}`, version, filepath.Join(e.dir, "host-local")))
}

// floorList is the baseline with testdata/noop chained after bridge: the
// cost of one more Go exec per verb, for BenchmarkCNIAddDel.
func (e *cniEnv) floorList(t testing.TB, version string) *libcni.NetworkConfigList {
	t.Helper()
	return e.list(t, fmt.Sprintf(`{"cniVersion":%q,"name":"hf-pods","plugins":[
	 {"type":"bridge","bridge":"hf-br0","isGateway":true,"ipMasq":false,"ipam":{"type":"host-local","dataDir":%q,"ranges":[[{"subnet":"10.244.1.0/24","gateway":"10.244.1.1"}]],"routes":[{"dst":"0.0.0.0/0"}]}},
	 {"type":"noop"},
	 {"type":"portmap","capabilities":{"portMappings":true}}]}`, version, filepath.Join(e.dir, "host-local")))
}

func (e *cniEnv) list(t testing.TB, s string) *libcni.NetworkConfigList {
	t.Helper()
	list, err := libcni.ConfListFromBytes([]byte(s))
	if err != nil {
		t.Fatal(err)
	}
	return list
}

func rtConf(cid string, pod ns.NetNS, name string) *libcni.RuntimeConf {
	return &libcni.RuntimeConf{ContainerID: cid, NetNS: pod.Path(), IfName: "eth0",
		Args: [][2]string{{"IgnoreUnknown", "1"}, {"K8S_POD_NAMESPACE", "default"}, {"K8S_POD_NAME", name}, {"K8S_POD_UID", "uid-" + name}}}
}

// add runs ADD in the host netns and returns the pod's IP and MAC from the
// result, checking the MAC inside the pod netns matches.
func (e *cniEnv) add(t testing.TB, list *libcni.NetworkConfigList, rt *libcni.RuntimeConf) (ip, mac string) {
	t.Helper()
	var res types.Result
	err := e.host.Do(func(ns.NetNS) error {
		var err error
		res, err = e.cni.AddNetworkList(context.Background(), list, rt)
		return err
	})
	if err != nil {
		t.Fatalf("ADD %s: %v", rt.ContainerID, err)
	}
	r, err := current.NewResultFromResult(res)
	if err != nil {
		t.Fatal(err)
	}
	for _, ifc := range r.Interfaces {
		if ifc.Sandbox == rt.NetNS && ifc.Name == rt.IfName {
			mac = ifc.Mac
		}
	}
	if len(r.IPs) != 1 || mac == "" {
		t.Fatalf("ADD %s: result without one IP and the pod interface: %+v", rt.ContainerID, r)
	}
	if live := linkMAC(t, rt.NetNS, rt.IfName); live != mac {
		t.Fatalf("result says MAC %s, pod netns has %s", mac, live)
	}
	return r.IPs[0].Address.IP.String(), mac
}

func (e *cniEnv) del(t testing.TB, list *libcni.NetworkConfigList, rt *libcni.RuntimeConf) {
	t.Helper()
	if err := e.host.Do(func(ns.NetNS) error { return e.cni.DelNetworkList(context.Background(), list, rt) }); err != nil {
		t.Fatalf("DEL %s: %v", rt.ContainerID, err)
	}
}

func linkMAC(t testing.TB, netns, ifName string) string {
	t.Helper()
	var mac string
	err := ns.WithNetNSPath(netns, func(ns.NetNS) error {
		l, err := netlink.LinkByName(ifName)
		if err != nil {
			return err
		}
		mac = l.Attrs().HardwareAddr.String()
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return mac
}

func attachments(t testing.TB, e *cniEnv) []string {
	t.Helper()
	paths, err := attachment.List(filepath.Join(e.dir, "cni"), "hf-pods")
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, p := range paths {
		a, err := attachment.Load(p)
		if err != nil {
			t.Fatalf("attachment record unreadable: %v", err)
		}
		out = append(out, a.ContainerID)
	}
	return out
}

var versions = []string{"0.3.1", "0.4.0", "1.0.0", "1.1.0"}

// TestSameNameSameIPAndMAC: real bridge + holdfast-ipam → holdfast →
// portmap through libcni; a pod re-created under the same name with a new
// container ID and a new netns after DEL gets the same IP and MAC.
func TestSameNameSameIPAndMAC(t *testing.T) {
	for _, v := range versions {
		t.Run(v, func(t *testing.T) {
			e := newCNIEnv(t)
			list := e.holdfastList(t, v, "")
			pod1 := newNetns(t, "pod")
			rt1 := rtConf("c1-"+randSuffix(), pod1, "web-0")
			ip1, mac1 := e.add(t, list, rt1)
			if want := stablemac.FromName("holdfast-pod", "hf-pods", "default", "web-0").String(); mac1 != want {
				t.Fatalf("MAC %s, want pinned %s", mac1, want)
			}
			if v != "0.3.1" {
				if err := e.host.Do(func(ns.NetNS) error { return e.cni.CheckNetworkList(context.Background(), list, rt1) }); err != nil {
					t.Fatalf("CHECK: %v", err)
				}
			}
			podB := newNetns(t, "pod")
			rtB := rtConf("b-"+randSuffix(), podB, "web-1")
			ipB, macB := e.add(t, list, rtB)
			if ipB == ip1 || macB == mac1 {
				t.Fatalf("two pods share IP or MAC: %s/%s", ipB, macB)
			}
			e.del(t, list, rt1)
			e.del(t, list, rt1) // idempotent
			pod2 := newNetns(t, "pod")
			rt2 := rtConf("c2-"+randSuffix(), pod2, "web-0")
			ip2, mac2 := e.add(t, list, rt2)
			if ip2 != ip1 || mac2 != mac1 {
				t.Fatalf("web-0 re-created: %s/%s, was %s/%s", ip2, mac2, ip1, mac1)
			}
			got := attachments(t, e)
			if len(got) != 2 {
				t.Fatalf("attachments %v, want web-0's and web-1's", got)
			}
			if v == "1.1.0" {
				if err := e.host.Do(func(ns.NetNS) error { return e.cni.GetStatusNetworkList(context.Background(), list) }); err != nil {
					t.Fatalf("STATUS: %v", err)
				}
				err := e.host.Do(func(ns.NetNS) error {
					return e.cni.GCNetworkList(context.Background(), list, &libcni.GCArgs{ValidAttachments: []types.GCAttachment{{ContainerID: rt2.ContainerID, IfName: "eth0"}}})
				})
				if err != nil {
					t.Fatalf("GC: %v", err)
				}
				if got := attachments(t, e); len(got) != 1 || got[0] != rt2.ContainerID {
					t.Fatalf("after GC attachments %v, want only %s", got, rt2.ContainerID)
				}
			}
			t.Logf("web-0: %s %s, kept across DEL and a new sandbox", ip2, mac2)
		})
	}
}

// runPlugin execs the holdfast binary directly.
func runPlugin(t testing.TB, verb, netns, cid, conf string) (string, *types.Error) {
	t.Helper()
	cmd := exec.Command(filepath.Join(pluginDir, "holdfast"))
	cmd.Env = []string{"CNI_COMMAND=" + verb, "CNI_CONTAINERID=" + cid, "CNI_NETNS=" + netns, "CNI_IFNAME=eth0", "CNI_PATH=" + pluginDir, "CNI_ARGS=K8S_POD_NAMESPACE=default;K8S_POD_NAME=x"}
	cmd.Stdin = strings.NewReader(conf)
	out, err := cmd.Output()
	if err == nil {
		return string(out), nil
	}
	var te types.Error
	if jerr := json.Unmarshal(out, &te); jerr != nil {
		t.Fatalf("%s: %v, stdout %q", verb, err, out)
	}
	return string(out), &te
}
