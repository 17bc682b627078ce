//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"strings"
	"time"

	"github.com/holdfast-edge/holdfast/test/harness"
)

// NFTablesNode runs kube-proxy in nftables mode (GA since 1.33); the other
// nodes keep iptables mode. It is the node the scenario reboots offline, so
// the offline ClusterIP checks of phase 3 run on the restored nftables table.
const NFTablesNode = "node3"

// kubeProxyTable is the table kube-proxy's nftables mode writes (IPv4);
// flannelTable the one flanneld's nftables mode writes.
const (
	kubeProxyTable = "ip kube-proxy"
	flannelTable   = "ip flannel-ipv4"
)

// serviceInNFT fails unless the node's live kube-proxy table maps
// clusterIP (its service-ips verdict map) and the node has no iptables
// KUBE-SERVICES chain (kube-proxy is not in iptables mode there).
func (n *Node) serviceInNFT(ctx context.Context, clusterIP string) error {
	out, err := n.Exec(ctx, "nft", "list", "map", "ip", "kube-proxy", "service-ips")
	if err != nil {
		return fmt.Errorf("%s: %w", n.Name, err)
	}
	if !strings.Contains(out, clusterIP+" . tcp . ") {
		return fmt.Errorf("%s: %s has no element for %s:\n%s", n.Name, kubeProxyTable, clusterIP, out)
	}
	nat, err := n.Exec(ctx, "iptables-save", "-t", "nat")
	if err != nil {
		return err
	}
	if strings.Contains(nat, ":KUBE-SERVICES ") {
		return fmt.Errorf("%s: iptables KUBE-SERVICES exists: kube-proxy is not in nftables mode only", n.Name)
	}
	return nil
}

// nftablesBaseline checks that node3's kube-proxy runs in nftables mode and
// that node3's snapshot holds its table with web's ClusterIP (the watcher
// follows nftables commits).
func (s *site) nftablesBaseline(ctx context.Context, clusterIP string) error {
	n := s.node(NFTablesNode)
	if err := harness.Eventually(20*time.Second, func() error { return n.serviceInNFT(ctx, clusterIP) }); err != nil {
		return err
	}
	return harness.Eventually(20*time.Second, func() error {
		out, err := exec.CommandContext(ctx, n.holdfastd(), "snapshot", "show", "--dir", n.SnapshotDir()).CombinedOutput()
		if err != nil {
			return fmt.Errorf("snapshot show: %v: %s", err, out)
		}
		if !strings.Contains(string(out), "nftables table "+kubeProxyTable+":") || !strings.Contains(string(out), clusterIP+" . tcp . ") {
			return fmt.Errorf("%s's snapshot lacks %s with %s", n.Name, kubeProxyTable, clusterIP)
		}
		return nil
	})
}

// nftablesRestored checks, right after the offline restore and before
// kube-proxy starts, that restore added kube-proxy's table, that it maps
// web's ClusterIP again, and that nft lists it exactly as the snapshot
// captured it from kube-proxy.
func (r *run) nftablesRestored(ctx context.Context, restoreOut string) error {
	added := false
	lines := strings.Split(strings.TrimSpace(restoreOut), "\n")
	for _, l := range lines {
		f := strings.Fields(l)
		added = added || len(f) >= 4 && f[0] == "add" && f[1] == "nftable" && f[2]+" "+f[3] == kubeProxyTable
	}
	r.rep.Mark("node3 restore summary", lines[len(lines)-1])
	if !added {
		return fmt.Errorf("restore did not add %s:\n%s", kubeProxyTable, restoreOut)
	}
	if err := r.victim.serviceInNFT(ctx, r.clusterIP); err != nil {
		return err
	}
	return r.victim.nftIdenticalToSnapshot(ctx, r.rep)
}

// nftIdenticalToSnapshot compares kube-proxy's and flanneld's live tables,
// as nft lists them, with the text the snapshot captured from them before
// the reboot.
func (n *Node) nftIdenticalToSnapshot(ctx context.Context, rep *Report) error {
	out, err := exec.CommandContext(ctx, n.holdfastd(), "snapshot", "show", "--json", "--dir", n.SnapshotDir()).Output()
	if err != nil {
		return fmt.Errorf("snapshot show: %w", err)
	}
	var snap struct {
		NFTables []struct{ Family, Name, Text string } `json:"nftables"`
	}
	if err := json.Unmarshal(out, &snap); err != nil {
		return fmt.Errorf("snapshot show --json: %w", err)
	}
	want := map[string]string{}
	for _, t := range snap.NFTables {
		want[t.Family+" "+t.Name] = t.Text
	}
	for _, table := range []string{kubeProxyTable, flannelTable} {
		live, err := n.Exec(ctx, "nft", append([]string{"--stateless", "list", "table"}, strings.Fields(table)...)...)
		if err != nil {
			return err
		}
		if want[table] == "" || live != want[table] {
			return fmt.Errorf("%s: live %s differs from the snapshot:\n--- snapshot\n%s\n--- live\n%s", n.Name, table, want[table], live)
		}
		rep.Mark("node3 "+table, fmt.Sprintf("identical to the snapshot: %d lines, %d chains, %d maps, %d sets",
			strings.Count(live, "\n"), strings.Count(live, "\n\tchain "), strings.Count(live, "\n\tmap "), strings.Count(live, "\n\tset ")))
	}
	return nil
}
