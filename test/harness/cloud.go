package harness

import (
	"fmt"
	"strings"
)

const (
	cutChain       = "HF-CLOUD-CUT"
	partitionChain = "HF-PARTITION"
)

// CutCloud drops all traffic between the node and the cloud address, inside
// the node's netns (the node's own iptables, never the host's).
func (n *Node) CutCloud() error {
	return n.dropChain(cutChain, []string{CloudIP})
}

// RestoreCloud undoes CutCloud.
func (n *Node) RestoreCloud() error { return n.flushChain(cutChain) }

// CloudCut reports whether the node's cloud link is cut.
func (n *Node) CloudCut() bool {
	out, err := n.iptables("-S", cutChain)
	return err == nil && strings.Contains(out, "DROP")
}

// Partition cuts the underlay between every node of a and every node of b
// (both directions), leaving each side's internal traffic alone.
func (s *Site) Partition(a, b []*Node) error {
	for _, side := range [][2][]*Node{{a, b}, {b, a}} {
		var peers []string
		for _, p := range side[1] {
			peers = append(peers, p.UnderlayIP.String())
		}
		for _, n := range side[0] {
			if err := n.dropChain(partitionChain, peers); err != nil {
				return err
			}
		}
	}
	return nil
}

// Heal removes every partition.
func (s *Site) Heal() error {
	for _, n := range s.Nodes {
		if err := n.flushChain(partitionChain); err != nil {
			return err
		}
	}
	return nil
}

// dropChain makes chain (created and hooked into INPUT and OUTPUT if
// needed) drop traffic to and from addrs.
func (n *Node) dropChain(chain string, addrs []string) error {
	if _, err := n.iptables("-S", chain); err != nil {
		if _, err := n.iptables("-N", chain); err != nil {
			return err
		}
		for _, hook := range []string{"INPUT", "OUTPUT"} {
			if _, err := n.iptables("-I", hook, "-j", chain); err != nil {
				return err
			}
		}
	}
	for _, a := range addrs {
		if _, err := n.iptables("-A", chain, "-s", a, "-j", "DROP"); err != nil {
			return err
		}
		if _, err := n.iptables("-A", chain, "-d", a, "-j", "DROP"); err != nil {
			return err
		}
	}
	return nil
}

func (n *Node) flushChain(chain string) error {
	if _, err := n.iptables("-S", chain); err != nil {
		return nil // never created: nothing to undo
	}
	_, err := n.iptables("-F", chain)
	return err
}

func (n *Node) iptables(args ...string) (string, error) {
	out, err := execOut("nsenter", append([]string{"--net=" + n.NSPath, "--", "iptables", "-w", "5"}, args...)...)
	if err != nil {
		return out, fmt.Errorf("%s: iptables %s: %w", n.Name, strings.Join(args, " "), err)
	}
	return out, nil
}
