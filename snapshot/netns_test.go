package snapshot

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
)

// testNS is a throwaway network namespace hf-snap-<random> with an underlay
// veth pair (hf-ul0 198.51.100.12/24 ↔ hf-ul1). It is deleted on cleanup.
type testNS struct {
	name, path string
}

func newTestNS(tb testing.TB) *testNS {
	tb.Helper()
	if os.Geteuid() != 0 {
		tb.Fatal("this test needs root (network namespaces): run it as root")
	}
	b := make([]byte, 4)
	rand.Read(b)
	n := &testNS{name: "hf-snap-" + hex.EncodeToString(b)}
	n.path = "/var/run/netns/" + n.name
	if out, err := exec.Command("ip", "netns", "add", n.name).CombinedOutput(); err != nil {
		tb.Fatalf("ip netns add %s: %v: %s", n.name, err, out)
	}
	tb.Cleanup(func() { exec.Command("ip", "netns", "del", n.name).Run() })
	n.ip(tb, "link set lo up",
		"link add hf-ul0 type veth peer name hf-ul1",
		"addr add 198.51.100.12/24 dev hf-ul0",
		"link set hf-ul0 up", "link set hf-ul1 up")
	return n
}

// ip runs "ip -n ns <args>" for each line.
func (n *testNS) ip(tb testing.TB, cmds ...string) {
	tb.Helper()
	for _, c := range cmds {
		if out, err := exec.Command("ip", append([]string{"-n", n.name}, strings.Fields(c)...)...).CombinedOutput(); err != nil {
			tb.Fatalf("ip -n %s %s: %v: %s", n.name, c, err, out)
		}
	}
}

// run runs a command inside the namespace (nsenter --net).
func (n *testNS) run(tb testing.TB, stdin string, name string, args ...string) string {
	tb.Helper()
	cmd := exec.Command("nsenter", append([]string{"--net=" + n.path, name}, args...)...)
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	out, err := cmd.CombinedOutput()
	if err != nil {
		tb.Fatalf("%s %v in %s: %v: %s", name, args, n.name, err, out)
	}
	return string(out)
}

func peerMAC(i int) string  { return fmt.Sprintf("0e:00:00:%02x:%02x:01", i>>8&0xff, i&0xff) }
func peerVTEP(i int) string { return fmt.Sprintf("10.%d.%d.0", 100+i>>8, i&0xff) }
func peerUnderlay(i int) string {
	return fmt.Sprintf("198.51.%d.%d", 100+(i+20)>>8, (i+20)&0xff)
}

// overlayBatch returns ip -batch and bridge -batch input that builds a
// flannel-style flannel.1 (VNI 1, MAC mac) with n peers.
func overlayBatch(n int, mac string) (ipb, bridgeb string) {
	var ib, bb strings.Builder
	fmt.Fprintf(&ib, "link add flannel.1 address %s type vxlan id 1 local 198.51.100.12 dev hf-ul0 dstport 8472 nolearning\n", mac)
	ib.WriteString("link set flannel.1 mtu 1450 up\naddr add 10.244.2.0/32 dev flannel.1\n")
	var routes strings.Builder
	for i := 1; i <= n; i++ {
		fmt.Fprintf(&ib, "neigh add %s lladdr %s dev flannel.1 nud permanent\n", peerVTEP(i), peerMAC(i))
		fmt.Fprintf(&bb, "fdb add %s dev flannel.1 dst %s self permanent\n", peerMAC(i), peerUnderlay(i))
		fmt.Fprintf(&routes, "route add %s/24 via %s dev flannel.1 onlink\n", peerVTEP(i), peerVTEP(i))
	}
	return ib.String() + routes.String(), bb.String()
}

// buildOverlay programs the overlay with ip/bridge -batch.
func (n *testNS) buildOverlay(tb testing.TB, peers int, mac string) {
	tb.Helper()
	ipb, bb := overlayBatch(peers, mac)
	// routes need the fdb/neigh only logically; order as flannel: neigh, fdb, route.
	lines := strings.SplitAfter(ipb, "\n")
	var first, routes strings.Builder
	for _, l := range lines {
		if strings.HasPrefix(l, "route ") {
			routes.WriteString(l)
		} else {
			first.WriteString(l)
		}
	}
	n.run(tb, first.String(), "ip", "-batch", "-")
	if bb != "" {
		n.run(tb, bb, "bridge", "-batch", "-")
	}
	if routes.Len() > 0 {
		n.run(tb, routes.String(), "ip", "-batch", "-")
	}
}

const testRules = `*nat
:KUBE-SERVICES - [0:0]
:KUBE-SVC-TEST - [0:0]
:FLANNEL-POSTRTG - [0:0]
:OTHER-CHAIN - [0:0]
-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
-A OUTPUT -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
-A POSTROUTING -m comment --comment "flanneld masq" -j FLANNEL-POSTRTG
-A POSTROUTING -j OTHER-CHAIN
-A KUBE-SERVICES -d 10.96.0.10/32 -p udp -m udp --dport 53 -j KUBE-SVC-TEST
-A KUBE-SVC-TEST -p udp -j DNAT --to-destination 10.244.3.5:53
-A FLANNEL-POSTRTG -s 10.244.0.0/16 -d 10.244.0.0/16 -m comment --comment "flanneld masq" -j RETURN
-A OTHER-CHAIN -j RETURN
COMMIT
*filter
:KUBE-FORWARD - [0:0]
:FLANNEL-FWD - [0:0]
-A FORWARD -m comment --comment "kubernetes forwarding rules" -j KUBE-FORWARD
-A FORWARD -m comment --comment "flanneld forward" -j FLANNEL-FWD
-A FLANNEL-FWD -s 10.244.0.0/16 -m comment --comment "flanneld forward" -j ACCEPT
-A KUBE-FORWARD -m conntrack --ctstate INVALID -j DROP
COMMIT
`

func (n *testNS) iptablesSave(tb testing.TB, table string) string {
	tb.Helper()
	out := n.run(tb, "", "iptables-save", "-t", table)
	var keep []string
	for _, l := range strings.Split(out, "\n") {
		if strings.HasPrefix(l, "#") || l == "" {
			continue
		}
		keep = append(keep, l)
	}
	return strings.Join(keep, "\n")
}
