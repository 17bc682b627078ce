package cniconf

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containernetworking/cni/libcni"
)

func TestChainBridgeKeepsFields(t *testing.T) {
	src := `{"cniVersion":"1.0.0","name":"net","plugins":[{"type":"bridge","bridge":"cni0","mtu":1450,"ipam":{"type":"host-local","ranges":[[{"subnet":"10.244.1.0/24"}]],"dataDir":"/var/lib/cni/networks","routes":[{"dst":"0.0.0.0/0"}]}},{"type":"portmap","capabilities":{"portMappings":true}}],"disableCheck":true}`
	out, err := Chain("f", []byte(src), Options{PinTTL: "24h"})
	if err != nil {
		t.Fatal(err)
	}
	cl, err := libcni.ConfListFromBytes(out)
	if err != nil {
		t.Fatal(err)
	}
	if got := []string{cl.Plugins[0].Network.Type, cl.Plugins[1].Network.Type, cl.Plugins[2].Network.Type}; strings.Join(got, ",") != "bridge,holdfast,portmap" {
		t.Fatalf("chain %v", got)
	}
	if !cl.DisableCheck {
		t.Fatal("disableCheck lost")
	}
	var main map[string]any
	json.Unmarshal(cl.Plugins[0].Bytes, &main)
	ipam := main["ipam"].(map[string]any)
	if ipam["type"] != IPAMType || ipam["dataDir"] != "/var/lib/cni/networks" || ipam["pinTTL"] != "24h" || main["mtu"].(float64) != 1450 {
		t.Fatalf("main plugin %v", main)
	}
	var chained map[string]any
	json.Unmarshal(cl.Plugins[1].Bytes, &chained)
	if _, ok := chained["overlay"]; ok {
		t.Fatal("bridge chain got an overlay device")
	}
}

func TestChainFlannel(t *testing.T) {
	src := `{"name":"cbr0","cniVersion":"0.3.1","plugins":[{"type":"flannel","delegate":{"hairpinMode":true,"isDefaultGateway":true}}]}`
	out, err := Chain("f", []byte(src), Options{OverlayDevice: "flannel.1"})
	if err != nil {
		t.Fatal(err)
	}
	var cl struct {
		Plugins []map[string]json.RawMessage `json:"plugins"`
	}
	json.Unmarshal(out, &cl)
	if !jsonEq(cl.Plugins[0]["ipam"], `{"type":"holdfast-ipam"}`) {
		t.Fatalf("flannel ipam: %s", cl.Plugins[0]["ipam"])
	}
	if !jsonEq(cl.Plugins[1]["overlay"], `{"device":"flannel.1"}`) {
		t.Fatalf("overlay: %s", cl.Plugins[1]["overlay"])
	}
}

func TestChainLegacyConf(t *testing.T) {
	src := `{"cniVersion":"0.4.0","name":"mynet","type":"bridge","ipam":{"type":"host-local","subnet":"10.244.3.0/24","rangeStart":"10.244.3.10","gateway":"10.244.3.1"}}`
	out, err := Chain("f", []byte(src), Options{})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(out), `"ranges": [`) || strings.Contains(string(out), `"subnet": "10.244.3.0/24",`+"\n      \"type\"") {
		t.Fatalf("legacy subnet not turned into ranges:\n%s", out)
	}
	if _, err := libcni.ConfListFromBytes(out); err != nil {
		t.Fatal(err)
	}
}

func TestChainRefuses(t *testing.T) {
	for _, tc := range []struct{ src, want string }{
		{`{`, "not a JSON object"},
		{`[]`, "not a JSON object"},
		{`{"name":"a","cniVersion":"1.0.0","plugins":[]} x`, "not a JSON object"},
		{`{"name":"a","cniVersion":"1.0.0","plugins":[]}`, "no plugins"},
		{`{"name":"a","cniVersion":"1.0.0","plugins":{}}`, `"plugins" is not a list`},
		{`{"cniVersion":"1.0.0","plugins":[{"type":"bridge"}]}`, `no "name"`},
		{`{"name":"a","cniVersion":"0.2.0","plugins":[{"type":"bridge"}]}`, `cniVersion "0.2.0"`},
		{`{"name":"a","cniVersion":"1.0.0","plugins":[{"type":"bridge"}]}`, `has no "ipam"`},
		{`{"name":"a","cniVersion":"1.0.0","plugins":[{"type":"bridge","ipam":{"type":"static"}}]}`, `"static" is not host-local`},
		{`{"name":"a","cniVersion":"1.0.0","plugins":[{"type":"bridge","ipam":{"type":"host-local"}},{"type":"holdfast"}]}`, "already chains holdfast"},
		{`{"name":"a","cniVersion":"1.0.0","plugins":[{"type":"flannel","delegate":{"ipam":{}}}]}`, "delegate.ipam"},
		{`{"name":"a","cniVersion":"1.0.0","plugins":[{}]}`, `plugin 0 has no "type"`},
	} {
		_, err := Chain("/etc/cni/net.d/x.conflist", []byte(tc.src), Options{})
		if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.HasPrefix(err.Error(), "/etc/cni/net.d/x.conflist: ") {
			t.Errorf("%s: err %v, want file and %q", tc.src, err, tc.want)
		}
	}
}

func TestFindActiveAndNameBefore(t *testing.T) {
	d := t.TempDir()
	for _, n := range []string{"99-loopback.conf", "10-flannel.conflist", "README", "05-notes.txt", "00-holdfast.conflist"} {
		os.WriteFile(filepath.Join(d, n), []byte("{}"), 0o644)
	}
	os.Mkdir(filepath.Join(d, "01-dir.conf"), 0o755)
	got, err := FindActive(d, map[string]bool{"00-holdfast.conflist": true})
	if err != nil || got != "10-flannel.conflist" {
		t.Fatalf("active %q %v", got, err)
	}
	for active, want := range map[string]string{"10-flannel.conflist": "00-holdfast.conflist", "00-aaa.conflist": "0-holdfast.conflist", "0-a.conf": "-holdfast.conflist"} {
		if got, err := NameBefore(active); err != nil || got != want || got >= active {
			t.Errorf("NameBefore(%q) = %q, %v; want %q", active, got, err, want)
		}
	}
	if _, err := NameBefore("!first.conf"); err == nil {
		t.Error("NameBefore accepted an unbeatable name")
	}
}

func FuzzChain(f *testing.F) {
	f.Add([]byte(`{"name":"cbr0","cniVersion":"0.3.1","plugins":[{"type":"flannel","delegate":{"hairpinMode":true}},{"type":"portmap","capabilities":{"portMappings":true}}]}`))
	f.Add([]byte(`{"cniVersion":"0.4.0","name":"mynet","type":"bridge","ipam":{"type":"host-local","subnet":"10.244.3.0/24"}}`))
	f.Fuzz(func(t *testing.T, src []byte) {
		out, err := Chain("f", src, Options{OverlayDevice: "flannel.1"})
		if err != nil {
			return
		}
		cl, err := libcni.ConfListFromBytes(out)
		if err != nil {
			t.Fatalf("chained output rejected by libcni: %v\n%s", err, out)
		}
		if len(cl.Plugins) < 2 || cl.Plugins[1].Network.Type != ChainedType {
			t.Fatalf("holdfast not second: %s", out)
		}
		if _, err := Chain("f", out, Options{}); err == nil {
			t.Fatal("re-chaining an already chained conflist was accepted")
		}
	})
}

func jsonEq(a json.RawMessage, b string) bool {
	var x, y any
	json.Unmarshal(a, &x)
	json.Unmarshal([]byte(b), &y)
	xa, _ := json.Marshal(x)
	ya, _ := json.Marshal(y)
	return string(xa) == string(ya)
}
