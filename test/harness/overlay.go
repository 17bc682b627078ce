package harness

import (
	"crypto/rand"
	"fmt"
	"net"
	"os"
	"path/filepath"
)

const (
	// VXLANDevice, VXLANVNI and VXLANPort are flannel's vxlan defaults.
	VXLANDevice = "flannel.1"
	VXLANVNI    = 1
	VXLANPort   = 8472
	// VXLANMTU is the underlay's 1500 less the 50 bytes of VXLAN overhead.
	VXLANMTU = 1450
)

// SubnetEnvPath is where flanneld writes subnet.env in this node.
func (n *Node) SubnetEnvPath() string { return filepath.Join(n.RunDir, "flannel", "subnet.env") }

// VTEPAddr is the node's flannel.1 address: <pod subnet>.0.
func (n *Node) VTEPAddr() net.IP { return n.PodCIDR.IP.To4() }

// PodGateway is the bridge address pods use: <pod subnet>.1.
func (n *Node) PodGateway() net.IP {
	ip := append(net.IP{}, n.PodCIDR.IP.To4()...)
	ip[3] = 1
	return ip
}

// Overlay programs the flannel VXLAN overlay on every node exactly as
// flanneld's vxlan backend does: flannel.1 (VNI 1, port 8472, learning off,
// MTU underlay-50, <subnet>.0/32), and per peer a permanent neighbour, a
// self-permanent FDB entry to the peer's underlay IP and an onlink route;
// plus subnet.env in the node's run dir.
func (s *Site) Overlay() {
	s.t.Helper()
	for _, n := range s.Nodes {
		if n.VTEPMAC == nil {
			n.VTEPMAC = randomMAC()
		}
	}
	for _, n := range s.Nodes {
		if err := n.ProgramOverlay(); err != nil {
			s.t.Fatalf("harness: overlay on %s: %v", n.Name, err)
		}
	}
}

// ProgramOverlay (re)creates this node's side of the overlay with its
// VTEPMAC and its peers' entries. Used by Overlay and to bring a rebooted
// node back without holdfast.
func (n *Node) ProgramOverlay() error {
	ns := n.NetNS
	cmds := [][]string{
		{"ip", "-n", ns, "link", "add", VXLANDevice, "address", n.VTEPMAC.String(), "type", "vxlan", "id", fmt.Sprint(VXLANVNI),
			"local", n.UnderlayIP.String(), "dev", n.UnderlayDev, "dstport", fmt.Sprint(VXLANPort), "nolearning"},
		{"ip", "-n", ns, "link", "set", VXLANDevice, "mtu", fmt.Sprint(VXLANMTU), "up"},
		{"ip", "-n", ns, "addr", "add", n.VTEPAddr().String() + "/32", "dev", VXLANDevice},
	}
	for _, p := range n.Site.Nodes {
		if p == n || p.VTEPMAC == nil {
			continue
		}
		cmds = append(cmds,
			[]string{"ip", "-n", ns, "neigh", "replace", p.VTEPAddr().String(), "lladdr", p.VTEPMAC.String(), "dev", VXLANDevice, "nud", "permanent"},
			[]string{"bridge", "-n", ns, "fdb", "replace", p.VTEPMAC.String(), "dev", VXLANDevice, "dst", p.UnderlayIP.String(), "self", "permanent"},
			[]string{"ip", "-n", ns, "route", "replace", p.PodCIDR.String(), "via", p.VTEPAddr().String(), "dev", VXLANDevice, "onlink"},
		)
	}
	if err := runAll(cmds...); err != nil {
		return err
	}
	env := fmt.Sprintf("FLANNEL_NETWORK=%s\nFLANNEL_SUBNET=%s/24\nFLANNEL_MTU=%d\nFLANNEL_IPMASQ=false\n", ClusterCIDR, n.PodGateway(), VXLANMTU)
	if err := os.MkdirAll(filepath.Dir(n.SubnetEnvPath()), 0o755); err != nil {
		return err
	}
	return os.WriteFile(n.SubnetEnvPath(), []byte(env), 0o644)
}

func randomMAC() net.HardwareAddr {
	mac := make(net.HardwareAddr, 6)
	rand.Read(mac)
	mac[0] = (mac[0] | 0x02) &^ 0x01
	return mac
}

// BridgeConflist is a bridge CNI conflist for this node's pod subnet, with
// the given IPAM (nil: host-local) and extra plugins chained after bridge.
// No masquerade: traffic never leaves the site.
func (n *Node) BridgeConflist(ipam map[string]any, chained ...map[string]any) map[string]any {
	if ipam == nil {
		ipam = map[string]any{"type": "host-local", "dataDir": filepath.Join(n.VarDir, "host-local")}
	}
	if _, ok := ipam["ranges"]; !ok {
		ipam["ranges"] = [][]map[string]any{{{"subnet": n.PodCIDR.String(), "gateway": n.PodGateway().String()}}}
	}
	if _, ok := ipam["routes"]; !ok {
		ipam["routes"] = []map[string]any{{"dst": "0.0.0.0/0"}}
	}
	plugins := []map[string]any{{
		"type": "bridge", "bridge": "cni0", "isGateway": true, "ipMasq": false, "mtu": VXLANMTU, "hairpinMode": true, "ipam": ipam,
	}}
	plugins = append(plugins, chained...)
	return map[string]any{"cniVersion": "1.0.0", "name": "hf-pods", "plugins": plugins}
}

// WriteCNIConfig writes a conflist (map or raw JSON bytes) into the node's
// CNI conf dir as <name>.conflist.
func (n *Node) WriteCNIConfig(name string, conflist any) error {
	data, err := toJSON(conflist)
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(n.CNIConfDir, name+".conflist"), data, 0o644)
}
