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
	"embed"
	"fmt"
	"path"
	"slices"
	"sort"
	"strings"
	"text/template"
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

// templates holds one template a unit (its description, doc page, and the
// [Unit] and [Service] lines that are its own) and unit.tmpl, the layout
// they share: the header, Type, the restart policy of a daemon and
// [Install] WantedBy, rendered from the spec's wantedBy.
//
//go:embed templates/*.tmpl
var templates embed.FS

// spec is what a unit's template does not say: its name, the units that
// want it, and when it is rendered.
type spec struct {
	name     string
	wantedBy []string
	// daemon: a long-running service (Type=simple, always restarted);
	// otherwise a oneshot that stays active after it exits.
	daemon bool
	// daemonSet: not rendered when Config.DaemonSets (it runs as one).
	daemonSet bool
}

// specs lists the units in boot order.
var specs = []spec{
	{name: SnapshotRestore, wantedBy: []string{"multi-user.target", "containerd.service"}},
	{name: CRI, wantedBy: []string{"multi-user.target", "kubelet.service"}, daemon: true},
	// Before kubelet for the DNS: pods started by kubelet resolve through it.
	{name: Agent, wantedBy: []string{"multi-user.target", "kubelet.service"}, daemon: true, daemonSet: true},
}

// templateData is what the templates see.
type templateData struct {
	Config
	WantedBy []string
	Daemon   bool
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
		u, err := render(s, c)
		if err != nil {
			return nil, err
		}
		us = append(us, u)
	}
	sort.Slice(us, func(i, j int) bool { return us[i].Name < us[j].Name })
	return us, nil
}

// render executes the layout with s's own template.
func render(s spec, c Config) (Unit, error) {
	t, err := template.New("unit.tmpl").Funcs(template.FuncMap{"join": strings.Join}).
		ParseFS(templates, "templates/unit.tmpl", "templates/"+s.name+".tmpl")
	if err != nil {
		return Unit{}, fmt.Errorf("parse the template of %s: %w", s.name, err)
	}
	var b strings.Builder
	if err := t.Execute(&b, templateData{Config: c, WantedBy: s.wantedBy, Daemon: s.daemon}); err != nil {
		return Unit{}, fmt.Errorf("render %s: %w", s.name, err)
	}
	return Unit{Name: s.name, Content: b.String(), WantedBy: slices.Clone(s.wantedBy)}, nil
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
