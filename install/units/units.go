// Package units renders the systemd units that run holdfast on a node, in
// the boot order of docs/boot.md ("The offline boot sequence"):
//
//	holdfast-snapshot-restore.service  oneshot, Before=containerd flanneld kubelet
//	containerd.service
//	holdfast-cri.service               holdfastd node: the CRI shim and the snapshot
//	                                   watcher; After=restore, After/Requires=containerd,
//	                                   Before=kubelet
//	holdfast-agent.service             holdfastd agent: peer health and the node DNS;
//	                                   after the restore, Before=kubelet (unless the
//	                                   agent runs as a DaemonSet)
//	kubelet.service
//
// It owns only the unit texts and the names of their enablement symlinks;
// it never writes files or talks to systemd.
package units

import (
	"fmt"
	"path"
	"slices"
	"sort"
	"strings"
)

// Config is what the units need to know about the node.
type Config struct {
	// Holdfastd is the absolute path of the holdfastd binary on the node.
	Holdfastd string
	// NodeName is the Kubernetes node name.
	NodeName string
	// CRISocket is the path the shim listens on (kubelet's endpoint is
	// unix://CRISocket).
	CRISocket string
	// RuntimeEndpoint is containerd's CRI endpoint.
	RuntimeEndpoint string
	// NodeDNS is the node DNS address.
	NodeDNS string
	// HealthKeyFile is the health daemon's signing key.
	HealthKeyFile string
	// Kubeconfig is the credential the agent unit uses to reach the
	// apiserver (Node informer, Leases, Services).
	Kubeconfig string
	// SnapshotDir, if set, is the network snapshot dir the restore unit
	// restores and the node daemon's watcher writes (empty: holdfastd snapshot's default).
	SnapshotDir string
	// DaemonSets: the agent (health and DNS) runs as a DaemonSet, so no
	// unit for it.
	DaemonSets bool
}

// Unit is one rendered unit file.
type Unit struct {
	Name    string
	Content string
	// WantedBy lists the units whose .wants directories get a symlink to
	// this unit when it is enabled.
	WantedBy []string
}

// Names of the units.
const (
	SnapshotRestore = "holdfast-snapshot-restore.service"
	// CRI runs `holdfastd node`: the shim and the snapshot watcher in one
	// process (docs/footprint.md).
	CRI = "holdfast-cri.service"
	// Agent runs `holdfastd agent`: peer health and the node DNS in one
	// process (docs/footprint.md).
	Agent = "holdfast-agent.service"
)

// Validate checks the config.
func (c Config) Validate() error {
	if !path.IsAbs(c.Holdfastd) {
		return fmt.Errorf("holdfastd path %q is not absolute", c.Holdfastd)
	}
	if c.NodeName == "" {
		return fmt.Errorf("node name is empty")
	}
	if !path.IsAbs(c.CRISocket) {
		return fmt.Errorf("CRI socket %q is not an absolute path", c.CRISocket)
	}
	if c.SnapshotDir != "" && !path.IsAbs(c.SnapshotDir) {
		return fmt.Errorf("snapshot dir %q is not an absolute path", c.SnapshotDir)
	}
	for _, s := range []string{c.NodeName, c.CRISocket, c.RuntimeEndpoint, c.NodeDNS, c.HealthKeyFile, c.Holdfastd, c.Kubeconfig, c.SnapshotDir} {
		if strings.ContainsAny(s, " \t\n\"'\\%$;") {
			return fmt.Errorf("%q contains characters not allowed in a unit's command line", s)
		}
	}
	return nil
}

// spec is one unit: what it says of its own ([Unit] lines after
// Documentation, [Service] lines after Type), the units that want it, and
// when it is rendered. render lays every spec out the same way.
//
// The units are built with strings, not text/template: a binary that links
// text/template's executor keeps every exported method of every type it
// links (the linker cannot tell which one a template calls by name), which
// made holdfastd 19 MB bigger (docs/footprint.md).
type spec struct {
	name        string
	description string
	// doc is the page under docs/ the unit's Documentation= names.
	doc      string
	unit     []string
	service  func(c Config) []string
	wantedBy []string
	// daemon: a long-running service (Type=simple, always restarted);
	// otherwise a oneshot that stays active after it exits.
	daemon bool
	// daemonSet: not rendered when Config.DaemonSets (it runs as one).
	daemonSet bool
}

// specs lists the units in boot order.
var specs = []spec{
	{
		name:        SnapshotRestore,
		description: "restore the overlay network from the node's snapshot",
		doc:         "boot.md",
		unit: []string{
			"After=local-fs.target network-pre.target systemd-networkd.service",
			"Before=containerd.service flanneld.service kubelet.service holdfast-cri.service",
			"DefaultDependencies=no",
			"Conflicts=shutdown.target",
			"Before=shutdown.target",
		},
		service: func(c Config) []string {
			return []string{
				"RemainAfterExit=yes",
				"# Exit status 2: no snapshot yet (first boot) - not a failure.",
				"SuccessExitStatus=2",
				"ExecStart=" + c.Holdfastd + " snapshot restore --node-name " + c.NodeName + optFlag("--dir", c.SnapshotDir),
			}
		},
		wantedBy: []string{"multi-user.target", "containerd.service"},
	},
	{
		name:        CRI,
		description: "node daemon: CRI shim between kubelet and containerd (relaunches pods after an offline boot) and network snapshot watcher",
		doc:         "boot.md",
		unit: []string{
			"After=containerd.service holdfast-snapshot-restore.service",
			"Requires=containerd.service",
			"Before=kubelet.service",
		},
		service: func(c Config) []string {
			return []string{
				"ExecStart=" + c.Holdfastd + " node --node-name " + c.NodeName + " --listen " + c.CRISocket +
					" --runtime-endpoint " + c.RuntimeEndpoint + optFlag("--snapshot-dir", c.SnapshotDir),
				"# kubelet is ordered after this unit: hold it back until the socket exists.",
				"ExecStartPost=/bin/sh -c 'for i in $(seq 100); do test -S " + c.CRISocket + " && exit 0; sleep 0.1; done; exit 1'",
			}
		},
		wantedBy: []string{"multi-user.target", "kubelet.service"},
		daemon:   true,
	},
	{
		// Before kubelet for the DNS: pods started by kubelet resolve through it.
		name:        Agent,
		description: "peer health and the node DNS (holdfastd agent)",
		doc:         "install.md",
		unit: []string{
			"After=network-online.target holdfast-snapshot-restore.service",
			"Wants=network-online.target",
			"Before=kubelet.service",
		},
		service: func(c Config) []string {
			return []string{
				"# First start: make this node's signing key (keygen refuses to overwrite one).",
				"ExecStartPre=/bin/sh -c 'test -e " + c.HealthKeyFile + " || exec " + c.Holdfastd + " health keygen --out " + c.HealthKeyFile + " --node-name " + c.NodeName + "'",
				"ExecStart=" + c.Holdfastd + " agent --node-name " + c.NodeName + " --health-key-file " + c.HealthKeyFile +
					" --health-kubeconfig " + c.Kubeconfig + " --dns-listen " + c.NodeDNS + ":53 --dns-kubeconfig " + c.Kubeconfig,
			}
		},
		wantedBy:  []string{"multi-user.target", "kubelet.service"},
		daemon:    true,
		daemonSet: true,
	},
}

// optFlag is " flag value", or "" when value is empty (the daemon's
// default applies).
func optFlag(flag, value string) string {
	if value == "" {
		return ""
	}
	return " " + flag + " " + value
}

// Render returns the units, sorted by name.
func Render(c Config) ([]Unit, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	var us []Unit
	for _, s := range specs {
		if s.daemonSet && c.DaemonSets {
			continue
		}
		us = append(us, render(s, c))
	}
	sort.Slice(us, func(i, j int) bool { return us[i].Name < us[j].Name })
	return us, nil
}

// render lays s out as every unit is: the header, [Unit] with the
// description and doc page, [Service] with Type and (for a daemon) the
// restart policy, [Install] WantedBy.
func render(s spec, c Config) Unit {
	typ, restart := "oneshot", []string(nil)
	if s.daemon {
		typ, restart = "simple", []string{"Restart=always", "RestartSec=2"}
	}
	lines := []string{
		"# Written by holdfastd install; removed by holdfastd uninstall.",
		"[Unit]",
		"Description=holdfast: " + s.description,
		"Documentation=https://github.com/holdfast-edge/holdfast/blob/main/docs/" + s.doc,
	}
	lines = append(lines, s.unit...)
	lines = append(lines, "", "[Service]", "Type="+typ)
	lines = append(lines, s.service(c)...)
	lines = append(lines, restart...)
	lines = append(lines, "", "[Install]", "WantedBy="+strings.Join(s.wantedBy, " "), "")
	return Unit{Name: s.name, Content: strings.Join(lines, "\n"), WantedBy: slices.Clone(s.wantedBy)}
}

// Link is one enablement symlink, as `systemctl enable` would create it:
// Path (relative to the systemd dir) points at Target.
type Link struct {
	Path   string
	Target string
}

// Links returns the enablement symlinks for us installed in systemdDir (the
// on-node absolute path, e.g. /etc/systemd/system).
func Links(us []Unit, systemdDir string) []Link {
	var ls []Link
	for _, u := range us {
		for _, w := range u.WantedBy {
			ls = append(ls, Link{Path: path.Join(w+".wants", u.Name), Target: path.Join(systemdDir, u.Name)})
		}
	}
	sort.Slice(ls, func(i, j int) bool { return ls[i].Path < ls[j].Path })
	return ls
}
