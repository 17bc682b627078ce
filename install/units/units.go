// Package units renders the systemd units that run holdfast on a node, in
// the boot order of docs (DESIGN.md, "Offline boot sequence"):
//
//	holdfast-snapshot-restore.service  oneshot, Before=containerd flanneld kubelet
//	containerd.service
//	holdfast-cri.service               After/Requires=containerd, Before=kubelet
//	kubelet.service
//	holdfast-snapshot.service          watch, after the restore
//	holdfast-health.service, holdfast-dns.service  (unless run as DaemonSets)
//
// It owns only the unit texts and the names of their enablement symlinks;
// it never writes files or talks to systemd.
package units

import (
	"fmt"
	"path"
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
	// Kubeconfig is the credential the health and DNS units use to reach
	// the apiserver (Node informer, Leases, Services).
	Kubeconfig string
	// SnapshotDir, if set, is the network snapshot dir the snapshot units
	// write and restore (empty: holdfastd snapshot's default).
	SnapshotDir string
	// DaemonSets: health and DNS run as DaemonSets, so no units for them.
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
	Snapshot        = "holdfast-snapshot.service"
	CRI             = "holdfast-cri.service"
	Health          = "holdfast-health.service"
	DNS             = "holdfast-dns.service"
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

// Render returns the units, sorted by name.
func Render(c Config) ([]Unit, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	bin := c.Holdfastd
	snapArgs := "--node-name " + c.NodeName
	if c.SnapshotDir != "" {
		snapArgs += " --dir " + c.SnapshotDir
	}
	us := []Unit{
		{Name: SnapshotRestore, WantedBy: []string{"multi-user.target", "containerd.service"}, Content: fmt.Sprintf(`# Written by holdfastd install; removed by holdfastd uninstall.
[Unit]
Description=holdfast: restore the overlay network from the node's snapshot
Documentation=https://github.com/holdfast-edge/holdfast/blob/main/docs/boot.md
After=local-fs.target network-pre.target systemd-networkd.service
Before=containerd.service flanneld.service kubelet.service holdfast-cri.service
DefaultDependencies=no
Conflicts=shutdown.target
Before=shutdown.target

[Service]
Type=oneshot
RemainAfterExit=yes
# Exit status 2: no snapshot yet (first boot) - not a failure.
SuccessExitStatus=2
ExecStart=%s snapshot restore %s

[Install]
WantedBy=multi-user.target containerd.service
`, bin, snapArgs)},
		{Name: Snapshot, WantedBy: []string{"multi-user.target"}, Content: fmt.Sprintf(`# Written by holdfastd install; removed by holdfastd uninstall.
[Unit]
Description=holdfast: snapshot the overlay network on every change
Documentation=https://github.com/holdfast-edge/holdfast/blob/main/docs/boot.md
After=holdfast-snapshot-restore.service network-online.target
Wants=network-online.target

[Service]
Type=simple
ExecStart=%s snapshot watch %s
Restart=always
RestartSec=2

[Install]
WantedBy=multi-user.target
`, bin, snapArgs)},
		{Name: CRI, WantedBy: []string{"multi-user.target", "kubelet.service"}, Content: fmt.Sprintf(`# Written by holdfastd install; removed by holdfastd uninstall.
[Unit]
Description=holdfast: CRI shim between kubelet and containerd (relaunches pods after an offline boot)
Documentation=https://github.com/holdfast-edge/holdfast/blob/main/docs/boot.md
After=containerd.service holdfast-snapshot-restore.service
Requires=containerd.service
Before=kubelet.service

[Service]
Type=simple
ExecStart=%s cri run --node-name %s --listen %s --runtime-endpoint %s
# kubelet is ordered after this unit: hold it back until the socket exists.
ExecStartPost=/bin/sh -c 'for i in $(seq 100); do test -S %s && exit 0; sleep 0.1; done; exit 1'
Restart=always
RestartSec=2

[Install]
WantedBy=multi-user.target kubelet.service
`, bin, c.NodeName, c.CRISocket, c.RuntimeEndpoint, c.CRISocket)},
	}
	if !c.DaemonSets {
		us = append(us,
			Unit{Name: Health, WantedBy: []string{"multi-user.target"}, Content: fmt.Sprintf(`# Written by holdfastd install; removed by holdfastd uninstall.
[Unit]
Description=holdfast: peer health probing and voting
Documentation=https://github.com/holdfast-edge/holdfast/blob/main/docs/install.md
After=network-online.target
Wants=network-online.target

[Service]
Type=simple
# First start: make this node's signing key (keygen refuses to overwrite one).
ExecStartPre=/bin/sh -c 'test -e %[3]s || exec %[1]s health keygen --out %[3]s --node-name %[2]s'
ExecStart=%[1]s health run --node-name %[2]s --key-file %[3]s --kubeconfig %[4]s
Restart=always
RestartSec=2

[Install]
WantedBy=multi-user.target
`, bin, c.NodeName, c.HealthKeyFile, c.Kubeconfig)},
			Unit{Name: DNS, WantedBy: []string{"multi-user.target", "kubelet.service"}, Content: fmt.Sprintf(`# Written by holdfastd install; removed by holdfastd uninstall.
[Unit]
Description=holdfast: node DNS answering cluster names offline
Documentation=https://github.com/holdfast-edge/holdfast/blob/main/docs/install.md
After=network-online.target holdfast-snapshot-restore.service
Wants=network-online.target
Before=kubelet.service

[Service]
Type=simple
ExecStart=%s dns run --node-name %s --listen %s:53 --kubeconfig %s
Restart=always
RestartSec=2

[Install]
WantedBy=multi-user.target kubelet.service
`, bin, c.NodeName, c.NodeDNS, c.Kubeconfig)})
	}
	sort.Slice(us, func(i, j int) bool { return us[i].Name < us[j].Name })
	return us, nil
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
