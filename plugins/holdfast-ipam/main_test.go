package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/containernetworking/cni/pkg/types"

	"github.com/holdfast-edge/holdfast/internal/atomicfile"
	"github.com/holdfast-edge/holdfast/internal/statefile"
	"github.com/holdfast-edge/holdfast/plugins/holdfast-ipam/store"
	"github.com/holdfast-edge/holdfast/test/harness"
)

// binPath is the holdfast-ipam binary built once for the tests, as `make
// build` ships it.
var binPath string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "hf-ipam-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binPath = filepath.Join(dir, "holdfast-ipam")
	if err := harness.BuildPlugin(dir, "holdfast-ipam"); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

type inv struct {
	cmd, cid, ifName, ns, name string
	conf                       string // full stdin; if empty, netConf(...) is used
}

// netConf is a network config with one IPv4 range set.
func netConf(version, dataDir, subnet string, extra string) string {
	return fmt.Sprintf(`{"cniVersion":%q,"name":"hf-net","type":"holdfast-ipam","ipam":{"type":"holdfast-ipam","dataDir":%q,"ranges":[[{"subnet":%q}]],"routes":[{"dst":"0.0.0.0/0"}]%s}}`, version, dataDir, subnet, extra)
}

// run execs the plugin and returns stdout and the decoded CNI error if any.
func run(t testing.TB, i inv) ([]byte, *types.Error) {
	t.Helper()
	cmd := exec.Command(binPath)
	args := ""
	if i.name != "" {
		args = "IgnoreUnknown=1;K8S_POD_NAMESPACE=" + i.ns + ";K8S_POD_NAME=" + i.name
	}
	if i.ifName == "" {
		i.ifName = "eth0"
	}
	cmd.Env = []string{"CNI_COMMAND=" + i.cmd, "CNI_CONTAINERID=" + i.cid, "CNI_NETNS=/var/run/netns/hf-none-" + i.cid, "CNI_IFNAME=" + i.ifName, "CNI_PATH=/nonexistent", "CNI_ARGS=" + args}
	cmd.Stdin = strings.NewReader(i.conf)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if err == nil {
		return stdout.Bytes(), nil
	}
	var te types.Error
	if jerr := json.Unmarshal(stdout.Bytes(), &te); jerr != nil {
		t.Fatalf("%s %s: %v, stdout %q stderr %q", i.cmd, i.cid, err, stdout.String(), stderr.String())
	}
	return stdout.Bytes(), &te
}

func addIP(t testing.TB, conf, cid, ns, name string) string {
	t.Helper()
	out, e := run(t, inv{cmd: "ADD", cid: cid, ns: ns, name: name, conf: conf})
	if e != nil {
		t.Fatalf("ADD %s (%s/%s): code %d: %s", cid, ns, name, e.Code, e.Msg)
	}
	var res struct {
		IPs []struct{ Address string } `json:"ips"`
	}
	if err := json.Unmarshal(out, &res); err != nil || len(res.IPs) != 1 {
		t.Fatalf("ADD %s: bad result %s (%v)", cid, out, err)
	}
	return strings.Split(res.IPs[0].Address, "/")[0]
}

func del(t testing.TB, conf, cid, ns, name string) {
	t.Helper()
	if _, e := run(t, inv{cmd: "DEL", cid: cid, ns: ns, name: name, conf: conf}); e != nil {
		t.Fatalf("DEL %s: code %d: %s", cid, e.Code, e.Msg)
	}
}

func loadState(t testing.TB, dataDir string) *store.State {
	t.Helper()
	st, err := store.New(dataDir, "hf-net").Load()
	if err != nil {
		t.Fatalf("store unreadable: %v", err)
	}
	return st
}

// consistent checks the store's invariants: every allocation is keyed by
// its own IP, no address is pinned to two pods, an active pin's addresses
// are allocated to that pin's container.
func consistent(t testing.TB, st *store.State) {
	t.Helper()
	pinned := map[string]string{}
	for k, p := range st.Pins {
		for _, ip := range p.IPs {
			if o, dup := pinned[ip]; dup {
				t.Fatalf("address %s pinned to both %s and %s", ip, o, k)
			}
			pinned[ip] = k
		}
	}
	holders := map[string]string{}
	for ip, al := range st.Allocations {
		if al.IP != ip {
			t.Fatalf("allocation keyed %s holds %s", ip, al.IP)
		}
		if _, err := netip.ParseAddr(ip); err != nil {
			t.Fatalf("allocation key %q is not an address", ip)
		}
		if al.PinKey != "" {
			if o, dup := holders[al.PinKey+"|"+al.ContainerID]; dup && o != ip {
				t.Fatalf("pod %s container %s holds %s and %s in one range set", al.PinKey, al.ContainerID, o, ip)
			}
			holders[al.PinKey+"|"+al.ContainerID] = ip
		}
	}
}

var versions = []string{"0.3.1", "0.4.0", "1.0.0", "1.1.0"}

func TestAddDelSameNameSameIP(t *testing.T) {
	for _, v := range versions {
		t.Run(v, func(t *testing.T) {
			dir := t.TempDir()
			conf := netConf(v, dir, "10.244.7.0/24", "")
			ip1 := addIP(t, conf, "c1", "default", "web-0")
			other := addIP(t, conf, "o1", "default", "web-1")
			if ip1 == other {
				t.Fatalf("two pods got %s", ip1)
			}
			del(t, conf, "c1", "default", "web-0")
			del(t, conf, "c1", "default", "web-0") // idempotent
			// A third pod must not take web-0's released pin.
			third := addIP(t, conf, "t1", "default", "web-2")
			if third == ip1 {
				t.Fatalf("web-2 got web-0's pinned %s", ip1)
			}
			ip2 := addIP(t, conf, "c2", "default", "web-0")
			if ip2 != ip1 {
				t.Fatalf("web-0 came back with %s, pinned %s", ip2, ip1)
			}
			if v != "0.3.1" {
				if _, e := run(t, inv{cmd: "CHECK", cid: "c2", ns: "default", name: "web-0", conf: conf}); e != nil {
					t.Fatalf("CHECK: %d %s", e.Code, e.Msg)
				}
				if _, e := run(t, inv{cmd: "CHECK", cid: "gone", conf: conf}); e == nil || e.Code != types.ErrUnknownContainer {
					t.Fatalf("CHECK of unknown container: %+v, want code 3", e)
				}
			}
			if v == "1.1.0" {
				if _, e := run(t, inv{cmd: "STATUS", conf: conf}); e != nil {
					t.Fatalf("STATUS: %d %s", e.Code, e.Msg)
				}
				gc := strings.Replace(conf, `"name":"hf-net"`, `"name":"hf-net","cni.dev/valid-attachments":[{"containerID":"c2","ifname":"eth0"}]`, 1)
				if _, e := run(t, inv{cmd: "GC", conf: gc}); e != nil {
					t.Fatalf("GC: %d %s", e.Code, e.Msg)
				}
				st := loadState(t, dir)
				if len(st.Allocations) != 1 || st.Allocations[ip1] == nil || st.Allocations[ip1].ContainerID != "c2" {
					t.Fatalf("after GC: allocations %+v, want only c2 on %s", st.Allocations, ip1)
				}
				if len(st.Pins) != 3 {
					t.Fatalf("GC touched pins: %d left, want 3", len(st.Pins))
				}
			}
		})
	}
}

func TestNoPodArgsBehavesLikeHostLocal(t *testing.T) {
	dir := t.TempDir()
	conf := netConf("1.0.0", dir, "10.244.8.0/24", "")
	a := addIP(t, conf, "c1", "", "")
	del(t, conf, "c1", "", "")
	b := addIP(t, conf, "c2", "", "")
	if a == b {
		t.Fatalf("unpinned pod reused %s right away; want round robin like host-local", a)
	}
	if st := loadState(t, dir); len(st.Pins) != 0 {
		t.Fatalf("pins without pod args: %+v", st.Pins)
	}
}

func TestChurn(t *testing.T) {
	dir := t.TempDir()
	conf := netConf("1.0.0", dir, "10.244.9.0/24", "")
	pinnedIP := map[string]string{}
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range 500 {
		name := fmt.Sprintf("pod-%d", rng.IntN(50))
		cid := fmt.Sprintf("churn-%d", i)
		ip := addIP(t, conf, cid, "churn", name)
		if want, ok := pinnedIP[name]; ok && want != ip {
			t.Fatalf("cycle %d: %s got %s, pinned %s", i, name, ip, want)
		}
		pinnedIP[name] = ip
		del(t, conf, cid, "churn", name)
	}
	seen := map[string]string{}
	for n, ip := range pinnedIP {
		if o, dup := seen[ip]; dup {
			t.Fatalf("%s and %s share %s", o, n, ip)
		}
		seen[ip] = n
	}
	st := loadState(t, dir)
	consistent(t, st)
	if len(st.Allocations) != 0 {
		t.Fatalf("leaked allocations after churn: %v", st.Allocations)
	}
	t.Logf("500 ADD/DEL cycles over %d names: every name kept its address", len(pinnedIP))
}

func TestParallelAddsThenGC(t *testing.T) {
	dir := t.TempDir()
	conf := netConf("1.1.0", dir, "10.244.10.0/24", "")
	ips := make([]string, 64)
	var wg sync.WaitGroup
	for i := range 64 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			out, e := run(t, inv{cmd: "ADD", cid: fmt.Sprintf("par-%d", i), ns: "par", name: fmt.Sprintf("p%d", i), conf: conf})
			if e != nil {
				t.Errorf("ADD %d: %d %s", i, e.Code, e.Msg)
				return
			}
			var res struct {
				IPs []struct{ Address string } `json:"ips"`
			}
			json.Unmarshal(out, &res)
			ips[i] = res.IPs[0].Address
		}()
	}
	wg.Wait()
	seen := map[string]int{}
	for i, ip := range ips {
		if j, dup := seen[ip]; dup {
			t.Fatalf("pods %d and %d both got %s", i, j, ip)
		}
		seen[ip] = i
	}
	// GC keeps the even half.
	var valid []string
	for i := 0; i < 64; i += 2 {
		valid = append(valid, fmt.Sprintf(`{"containerID":"par-%d","ifname":"eth0"}`, i))
	}
	gc := strings.Replace(conf, `"name":"hf-net"`, `"name":"hf-net","cni.dev/valid-attachments":[`+strings.Join(valid, ",")+`]`, 1)
	if _, e := run(t, inv{cmd: "GC", conf: gc}); e != nil {
		t.Fatalf("GC: %d %s", e.Code, e.Msg)
	}
	st := loadState(t, dir)
	consistent(t, st)
	if len(st.Allocations) != 32 {
		t.Fatalf("after GC %d allocations, want 32", len(st.Allocations))
	}
	for _, al := range st.Allocations {
		var n int
		fmt.Sscanf(al.ContainerID, "par-%d", &n)
		if n%2 != 0 {
			t.Fatalf("GC kept %s, not in valid-attachments", al.ContainerID)
		}
	}
	if len(st.Pins) != 64 {
		t.Fatalf("GC must keep pins: %d, want 64", len(st.Pins))
	}
	// Released pins are honoured: the odd pods come back to their address.
	for i := 1; i < 64; i += 16 {
		ip := addIP(t, conf, fmt.Sprintf("par-again-%d", i), "par", fmt.Sprintf("p%d", i))
		if ip+"/24" != ips[i] {
			t.Fatalf("p%d came back with %s, pinned %s", i, ip, ips[i])
		}
	}
}

// TestSIGKILL kills plugin processes at random points of ADD and DEL, with
// several running at once, and checks after each round that the store is
// readable and consistent.
func TestSIGKILL(t *testing.T) {
	dir := t.TempDir()
	conf := netConf("1.0.0", dir, "10.244.11.0/24", "")
	rng := rand.New(rand.NewPCG(3, 4))
	kills, completed := 0, 0
	for round := 0; kills < 220; round++ {
		var wg sync.WaitGroup
		var mu sync.Mutex
		for j := range 4 {
			name := fmt.Sprintf("k%d", rng.IntN(40))
			verb := "ADD"
			if rng.IntN(3) == 0 {
				verb = "DEL"
			}
			delay := time.Duration(rng.IntN(12000)) * time.Microsecond
			wg.Add(1)
			go func() {
				defer wg.Done()
				cmd := exec.Command(binPath)
				cmd.Env = []string{"CNI_COMMAND=" + verb, "CNI_CONTAINERID=" + name + "-cid", "CNI_NETNS=", "CNI_IFNAME=eth0", "CNI_PATH=/nonexistent", "CNI_ARGS=K8S_POD_NAMESPACE=kill;K8S_POD_NAME=" + name}
				cmd.Stdin = strings.NewReader(conf)
				if err := cmd.Start(); err != nil {
					t.Error(err)
					return
				}
				time.Sleep(delay)
				killed := cmd.Process.Signal(syscall.SIGKILL) == nil
				err := cmd.Wait()
				mu.Lock()
				defer mu.Unlock()
				if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); ok && ws.Signaled() && killed {
					kills++
				} else if err == nil {
					completed++
				}
				_ = j
			}()
		}
		wg.Wait()
		st := loadState(t, dir)
		consistent(t, st)
	}
	// The store is still usable: a full ADD/DEL round works.
	ip := addIP(t, conf, "after-kill", "kill", "survivor")
	del(t, conf, "after-kill", "kill", "survivor")
	leftovers, _ := filepath.Glob(filepath.Join(dir, "hf-net", atomicfile.TempPattern("*")))
	if len(leftovers) > 0 {
		t.Fatalf("temp files of killed writers survived the survivor's ADD and DEL: %v", leftovers)
	}
	t.Logf("%d processes killed mid-flight, %d completed; store consistent; survivor got %s; no temp file left", kills, completed, ip)
}

// hashDir hashes every state file under dir (not the log or lock files,
// which carry no state).
func hashDir(t testing.TB, dir string) string {
	t.Helper()
	h := sha256.New()
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || strings.HasSuffix(p, ".log") || d.Name() == store.LockFileName {
			return nil
		}
		data, _ := os.ReadFile(p)
		fmt.Fprintf(h, "%s\x00%x\x00", p, sha256.Sum256(data))
		return nil
	})
	return hex.EncodeToString(h.Sum(nil))
}

func TestBadInput(t *testing.T) {
	dir := t.TempDir()
	good := netConf("1.0.0", dir, "10.244.12.0/24", "")
	addIP(t, good, "keep", "default", "keep")
	stateFile := filepath.Join(dir, "hf-net", store.StateFileName)
	orig, _ := os.ReadFile(stateFile)
	mk := func(ranges, extra string) string {
		return fmt.Sprintf(`{"cniVersion":"1.0.0","name":"hf-net","type":"holdfast-ipam","ipam":{"type":"holdfast-ipam","dataDir":%q,"ranges":%s%s}}`, dir, ranges, extra)
	}
	cases := []struct {
		name    string
		conf    string
		args    string
		setup   func() // corrupts the store
		code    uint
		mention string
	}{
		{"malformed JSON", `{"cniVersion":"1.0.0","name":`, "", nil, types.ErrDecodingFailure, "network config"},
		{"invalid CIDR", mk(`[[{"subnet":"10.244.300.0/24"}]]`, ""), "", nil, types.ErrInvalidNetworkConfig, "10.244.300.0/24"},
		{"overlapping CIDRs", mk(`[[{"subnet":"10.244.12.0/24"}],[{"subnet":"10.244.12.128/25"}]]`, ""), "", nil, types.ErrInvalidNetworkConfig, "overlaps"},
		{"rangeStart outside subnet", mk(`[[{"subnet":"10.244.12.0/24","rangeStart":"10.244.13.5"}]]`, ""), "", nil, types.ErrInvalidNetworkConfig, "rangeStart 10.244.13.5 is outside subnet"},
		{"bad pinTTL", mk(`[[{"subnet":"10.244.12.0/24"}]]`, `,"pinTTL":"forever"`), "", nil, types.ErrInvalidNetworkConfig, "pinTTL"},
		{"negative pinTTL", mk(`[[{"subnet":"10.244.12.0/24"}]]`, `,"pinTTL":"-1h"`), "", nil, types.ErrInvalidNetworkConfig, "pinTTL"},
		{"unknown version", strings.Replace(good, `"1.0.0"`, `"9.9.9"`, 1), "", nil, types.ErrIncompatibleCNIVersion, "9.9.9"},
		{"bad CNI_ARGS", good, "K8S_POD_NAMEnoequals", nil, types.ErrInvalidEnvironmentVariables, "CNI_ARGS"},
		{"corrupt store", good, "", func() {
			os.WriteFile(stateFile, bytes.Replace(orig, []byte("keep"), []byte("kepp"), 1), 0o600)
		}, types.ErrIOFailure, stateFile},
		{"torn store", good, "", func() { os.WriteFile(stateFile, orig[:len(orig)/2], 0o600) }, types.ErrIOFailure, stateFile},
		{"trailing bytes after the envelope", good, "", func() {
			os.WriteFile(stateFile, append(append([]byte{}, orig...), `{"network":"hf-net"}`...), 0o600)
		}, types.ErrIOFailure, "trailing data"},
		{"slash in pod namespace", good, "K8S_POD_NAMESPACE=default/keep;K8S_POD_NAME=x", nil, types.ErrInvalidEnvironmentVariables, `"/"`},
		{"slash in pod name", good, "K8S_POD_NAMESPACE=default;K8S_POD_NAME=keep/x", nil, types.ErrInvalidEnvironmentVariables, `"/"`},
		// State whose checksum is valid (recomputed after the edit) but
		// whose content is nonsense.
		{"allocation of a non-address", good, "", rewriteState(t, stateFile, orig, func(st *store.State) {
			for _, al := range st.Allocations {
				al.IP = "not-an-ip"
			}
		}), types.ErrIOFailure, `"not-an-ip"`},
		{"allocation keyed by a non-address", good, "", rewriteState(t, stateFile, orig, func(st *store.State) {
			al := st.SortedAllocations()[0]
			delete(st.Allocations, al.IP)
			st.Allocations["not-an-ip"] = al
		}), types.ErrIOFailure, `"not-an-ip"`},
		{"address allocated to two interfaces", good, "", rewriteState(t, stateFile, orig, func(st *store.State) {
			al := st.SortedAllocations()[0]
			twin := *al
			twin.IP, twin.ContainerID = "::ffff:"+al.IP, "other"
			st.Allocations[twin.IP] = &twin
		}), types.ErrIOFailure, "allocated twice"},
		{"address pinned to two pods", good, "", rewriteState(t, stateFile, orig, func(st *store.State) {
			p := *st.Pins["hf-net/default/keep/eth0"]
			p.Key, p.Name, p.ContainerID = "hf-net/default/other/eth0", "other", ""
			st.Pins[p.Key] = &p
		}), types.ErrIOFailure, "pinned to both"},
		{"pin key not of its pod", good, "", rewriteState(t, stateFile, orig, func(st *store.State) {
			p := st.Pins["hf-net/default/keep/eth0"]
			delete(st.Pins, p.Key)
			p.Key, p.Namespace, p.Name = "hf-net/default/keep/eth0", "default/keep", "eth0"
			st.Pins[p.Key] = p
		}), types.ErrIOFailure, "pin key"},
		{"pin of a non-address", good, "", rewriteState(t, stateFile, orig, func(st *store.State) {
			st.Pins["hf-net/default/keep/eth0"].IPs = []string{"10.244.12.300"}
		}), types.ErrIOFailure, "10.244.12.300"},
		{"future-version store", good, "", func() {
			future := regexp.MustCompile(`"version":\s*1\b`).ReplaceAll(orig, []byte(`"version":99`))
			if bytes.Equal(future, orig) {
				t.Fatal("test setup: no schema version found in the store file")
			}
			os.WriteFile(stateFile, future, 0o600)
		}, types.ErrIOFailure, "schema version 99"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			os.WriteFile(stateFile, orig, 0o600)
			if c.setup != nil {
				c.setup()
			}
			before := hashDir(t, dir)
			for _, verb := range []string{"ADD", "DEL", "CHECK"} {
				if (c.code == types.ErrIOFailure || c.code == types.ErrIncompatibleCNIVersion) && verb == "CHECK" {
					continue
				}
				cmd := exec.Command(binPath)
				cmd.Env = []string{"CNI_COMMAND=" + verb, "CNI_CONTAINERID=bad", "CNI_NETNS=/x", "CNI_IFNAME=eth0", "CNI_PATH=/x", "CNI_ARGS=" + c.args}
				if c.args == "" {
					cmd.Env[len(cmd.Env)-1] = "CNI_ARGS=K8S_POD_NAMESPACE=default;K8S_POD_NAME=keep"
				}
				cmd.Stdin = strings.NewReader(c.conf)
				out, err := cmd.Output()
				if err == nil {
					t.Fatalf("%s succeeded on bad input: %s", verb, out)
				}
				var te types.Error
				if jerr := json.Unmarshal(out, &te); jerr != nil {
					t.Fatalf("%s: stdout is not a CNI error: %q", verb, out)
				}
				if te.Code != c.code || !strings.Contains(te.Msg+te.Details, c.mention) {
					t.Fatalf("%s: got code %d %q, want code %d mentioning %q", verb, te.Code, te.Msg, c.code, c.mention)
				}
				if verb == "ADD" {
					t.Logf("%s → code %d: %s", c.name, te.Code, te.Msg)
				}
			}
			if after := hashDir(t, dir); after != before {
				t.Fatalf("bad input changed state")
			}
		})
	}
	os.WriteFile(stateFile, orig, 0o600)
	if st := loadState(t, dir); len(st.Allocations) != 1 {
		t.Fatalf("state lost: %+v", st.Allocations)
	}
}

// TestNextCallSweepsKilledWritersTemp: a plugin killed between writing
// the state's temp file and its rename leaves .state.json.tmp-N; the next
// call that takes the store's lock removes it, even one that writes
// nothing (CHECK).
func TestNextCallSweepsKilledWritersTemp(t *testing.T) {
	dir := t.TempDir()
	conf := netConf("1.0.0", dir, "10.244.14.0/24", "")
	addIP(t, conf, "sweep", "default", "sweep")
	f, err := os.CreateTemp(filepath.Join(dir, "hf-net"), atomicfile.TempPattern(store.StateFileName))
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
	if _, e := run(t, inv{cmd: "CHECK", cid: "sweep", ns: "default", name: "sweep", conf: conf}); e != nil {
		t.Fatalf("CHECK: code %d: %s", e.Code, e.Msg)
	}
	if _, err := os.Stat(f.Name()); !os.IsNotExist(err) {
		t.Fatalf("leftover %s survived the next call", f.Name())
	}
}

// TestEnvironmentErrorCodes: a data dir that is a regular file and a lock
// path that is a directory are I/O failures (code 5) naming the path, not
// internal errors (999), on ADD; DEL, with nothing stored to release,
// succeeds.
func TestEnvironmentErrorCodes(t *testing.T) {
	fileDir := filepath.Join(t.TempDir(), "ipam")
	os.WriteFile(fileDir, nil, 0o600)
	lockDir := t.TempDir()
	os.MkdirAll(filepath.Join(lockDir, "hf-net", store.LockFileName), 0o755)
	for _, c := range []struct{ name, dataDir, mention string }{
		{"data dir is a regular file", fileDir, fileDir},
		{"lock is a directory", lockDir, filepath.Join(lockDir, "hf-net", store.LockFileName)},
	} {
		t.Run(c.name, func(t *testing.T) {
			conf := netConf("1.0.0", c.dataDir, "10.244.14.0/24", "")
			_, e := run(t, inv{cmd: "ADD", cid: "env", ns: "default", name: "env", conf: conf})
			if e == nil || e.Code != types.ErrIOFailure || !strings.Contains(e.Msg, c.mention) {
				t.Fatalf("ADD: got %+v, want code 5 naming %s", e, c.mention)
			}
			t.Logf("ADD → code %d: %s", e.Code, e.Msg)
			if _, e := run(t, inv{cmd: "DEL", cid: "env", ns: "default", name: "env", conf: conf}); e != nil {
				t.Fatalf("DEL: %+v, want success (nothing stored)", e)
			}
		})
	}
}

// rewriteState returns a setup that writes orig, edited by edit, back to
// path in a valid envelope: the checksum matches, only the meaning is wrong.
func rewriteState(t *testing.T, path string, orig []byte, edit func(*store.State)) func() {
	return func() {
		st := store.NewState("hf-net")
		if _, err := statefile.Decode(orig, store.Kind, store.Version, st); err != nil {
			t.Fatal(err)
		}
		edit(st)
		data, err := statefile.Encode(store.Kind, store.Version, st)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
}

func TestStatusExhausted(t *testing.T) {
	dir := t.TempDir()
	conf := netConf("1.1.0", dir, "10.244.13.0/30", "") // .1 gateway, .2 only
	addIP(t, conf, "only", "default", "only")
	_, e := run(t, inv{cmd: "STATUS", conf: conf})
	if e == nil || e.Code != types.ErrPluginNotAvailable {
		t.Fatalf("STATUS on a full pool: %+v, want code 50", e)
	}
	_, e = run(t, inv{cmd: "ADD", cid: "more", ns: "default", name: "more", conf: conf})
	if e == nil || e.Code != types.ErrTryAgainLater || !strings.Contains(e.Msg, "no free address") {
		t.Fatalf("ADD on a full pool: %+v", e)
	}
}
