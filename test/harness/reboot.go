package harness

import (
	"fmt"
	"os"
)

// Reboot simulates a reboot of the node while it is offline, as docs/boot.md
// describes: every process of the node is killed (daemons, containerd, its
// shims, every container), its netns and its pods' netns are deleted (which
// wipes every link, route, FDB and neighbour entry and iptables rule of the
// node), its run dir is wiped as tmpfs would be, its var dir is kept, its
// boot id changes, and the netns comes back with only the underlay link.
// Then boot runs the caller's boot sequence (may be nil).
func (n *Node) Reboot(boot func() error) error {
	if err := n.halt(); err != nil {
		return fmt.Errorf("%s: reboot: %w", n.Name, err)
	}
	if err := run("ip", "netns", "del", n.NetNS); err != nil {
		return fmt.Errorf("%s: reboot: %w", n.Name, err)
	}
	removeCgroups(n.NetNS)
	if err := os.RemoveAll(n.RunDir); err != nil {
		return fmt.Errorf("%s: reboot: wipe run dir: %w", n.Name, err)
	}
	if err := os.MkdirAll(n.RunDir, 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(n.BootIDFile, []byte(newUUID()+"\n"), 0o644); err != nil {
		return err
	}
	if err := n.plug(); err != nil {
		return fmt.Errorf("%s: reboot: recreate netns: %w", n.Name, err)
	}
	if boot == nil {
		return nil
	}
	if err := boot(); err != nil {
		return fmt.Errorf("%s: boot sequence: %w", n.Name, err)
	}
	return nil
}

// PowerOff turns the node off for good: every process of the node is
// killed and its underlay link is unplugged; nothing comes back. Its netns
// stays (empty of processes) until the site is torn down.
func (n *Node) PowerOff() error {
	if err := n.halt(); err != nil {
		return fmt.Errorf("%s: power off: %w", n.Name, err)
	}
	return nil
}

// halt kills every process of the node and its pods, detaches its mounts
// and unplugs it from the LAN.
func (n *Node) halt() error {
	n.stopProcs()
	if err := killProcesses(append([]string{n.NSPath}, podNetnsUnder(n.Dir)...), n.Dir); err != nil {
		return err
	}
	unmountUnder(n.Dir)
	// Deleting the LAN end removes the veth pair at once; netns teardown
	// in the kernel is asynchronous.
	run("ip", "-n", n.Site.LAN, "link", "del", "v-"+n.Name)
	return nil
}

// BootID returns the node's current boot id.
func (n *Node) BootID() string {
	data, _ := os.ReadFile(n.BootIDFile)
	return string(data)
}
