package config

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/cni/pkg/types"
)

func TestParseFlannelShape(t *testing.T) {
	// What the flannel CNI plugin hands to its delegate's IPAM.
	n, err := Parse([]byte(`{"cniVersion":"1.0.0","name":"cbr0","ipam":{"type":"holdfast-ipam","ranges":[[{"subnet":"10.244.1.0/24"}]],"routes":[{"dst":"10.244.0.0/16"}]}}`))
	if err != nil {
		t.Fatal(err)
	}
	r := n.IPAM.Ranges[0][0]
	if r.RangeStart.String() != "10.244.1.1" || r.RangeEnd.String() != "10.244.1.254" || r.Gateway.String() != "10.244.1.1" {
		t.Fatalf("defaults: %+v", r)
	}
	if n.IPAM.PinTTL != DefaultPinTTL || n.IPAM.DataDir != DefaultDataDir {
		t.Fatalf("defaults: ttl %v dir %s", n.IPAM.PinTTL, n.IPAM.DataDir)
	}
}

func TestParseLegacyAndTTL(t *testing.T) {
	n, err := Parse([]byte(`{"name":"x","ipam":{"type":"holdfast-ipam","subnet":"10.1.0.0/16","rangeStart":"10.1.2.0","rangeEnd":"10.1.2.255","pinTTL":"36h"}}`))
	if err != nil {
		t.Fatal(err)
	}
	if n.IPAM.PinTTL != 36*time.Hour || n.IPAM.Ranges[0][0].RangeStart.String() != "10.1.2.0" {
		t.Fatalf("%+v", n.IPAM)
	}
}

func TestParseErrors(t *testing.T) {
	for _, c := range []struct{ conf, mention string }{
		{`{"name":"x"}`, "no \"ipam\""},
		{`{"name":"x","ipam":{"type":"host-local","ranges":[[{"subnet":"10.0.0.0/24"}]]}}`, "ipam.type"},
		{`{"name":"x","ipam":{"ranges":[]}}`, "empty"},
		{`{"name":"x","ipam":{"ranges":[[{"subnet":"10.0.0.0/31"}]]}}`, "too small"},
		{`{"name":"x","ipam":{"ranges":[[{"subnet":"10.0.0.0/24","rangeEnd":"10.0.0.3","rangeStart":"10.0.0.9"}]]}}`, "before rangeStart"},
		{`{"name":"x","ipam":{"ranges":[[{"subnet":"10.0.0.0/24","gateway":"10.9.0.1"}]]}}`, "gateway"},
		{`{"name":"x","ipam":{"ranges":[[{"subnet":"10.0.0.0/24"},{"subnet":"fd00::/64"}]]}}`, "mixes address families"},
		{`{"name":"a/b","ipam":{"ranges":[[{"subnet":"10.0.0.0/24"}]]}}`, "directory name"},
		{`{"name":"x","ipam":{"ranges":[[{"subnet":"10.0.0.0/24"}]],"pinTTL":"0s"}}`, "pinTTL"},
	} {
		_, err := Parse([]byte(c.conf))
		var te *types.Error
		if !errors.As(err, &te) || te.Code != types.ErrInvalidNetworkConfig || !strings.Contains(te.Msg, c.mention) {
			t.Errorf("%s: got %v, want code 7 mentioning %q", c.conf, err, c.mention)
		}
	}
}

func TestParseArgs(t *testing.T) {
	p, err := ParseArgs("IgnoreUnknown=1;K8S_POD_NAMESPACE=kube-system;K8S_POD_NAME=coredns-0;K8S_POD_INFRA_CONTAINER_ID=abc;K8S_POD_UID=u1")
	if err != nil || p.Namespace != "kube-system" || p.Name != "coredns-0" || p.UID != "u1" || !p.Pinned() {
		t.Fatalf("%+v %v", p, err)
	}
}

// FuzzParse: the parser never panics, and whatever it accepts is internally
// consistent (ranges inside their subnets, start ≤ end, positive TTL).
func FuzzParse(f *testing.F) {
	f.Add([]byte(`{"cniVersion":"1.0.0","name":"cbr0","ipam":{"type":"holdfast-ipam","ranges":[[{"subnet":"10.244.1.0/24"}]],"routes":[{"dst":"0.0.0.0/0"}]}}`))
	f.Add([]byte(`{"name":"x","ipam":{"subnet":"10.1.0.0/16","rangeStart":"10.1.2.0","pinTTL":"1h"}}`))
	f.Add([]byte(`{"name":"x","ipam":{"ranges":[[{"subnet":"10.0.0.0/24"}],[{"subnet":"fd00::/64","gateway":"fd00::1"}]]}}`))
	f.Add([]byte(`{"name":"x","ipam":{"ranges":[[{"subnet":"::ffff:10.0.0.0/120"}]]}}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		n, err := Parse(data)
		if err != nil {
			var te *types.Error
			if !errors.As(err, &te) || te.Msg == "" {
				t.Fatalf("error is not a CNI error with a message: %v", err)
			}
			return
		}
		if n.IPAM.PinTTL <= 0 || len(n.IPAM.Ranges) == 0 {
			t.Fatalf("accepted %+v", n.IPAM)
		}
		for _, set := range n.IPAM.Ranges {
			for _, r := range set {
				if !r.Subnet.Contains(r.RangeStart) || !r.Subnet.Contains(r.RangeEnd) || r.RangeEnd.Less(r.RangeStart) {
					t.Fatalf("accepted inconsistent range %+v", r)
				}
			}
		}
		ParseArgs(string(data))
	})
}

// GC needs no ranges (a chained plugin forwarding GC does not know the ones
// flannel fills in at ADD); every other verb does, and bad ranges are
// refused for GC too.
func TestParseGCWithoutRanges(t *testing.T) {
	conf := []byte(`{"cniVersion":"1.1.0","name":"cbr0","ipam":{"type":"holdfast-ipam","dataDir":"/d"},"cni.dev/valid-attachments":[{"containerID":"c","ifname":"eth0"}]}`)
	if _, err := Parse(conf); err == nil {
		t.Fatal("Parse accepted a config without ranges")
	}
	n, err := ParseGC(conf)
	if err != nil || n.IPAM.DataDir != "/d" || len(n.ValidAttachments) != 1 {
		t.Fatalf("ParseGC: %+v, %v", n, err)
	}
	if _, err := ParseGC([]byte(`{"name":"cbr0","ipam":{"type":"holdfast-ipam","ranges":[[{"subnet":"nonsense"}]]}}`)); err == nil {
		t.Fatal("ParseGC accepted a malformed range")
	}
}
