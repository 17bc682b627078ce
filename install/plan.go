package install

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"syscall"

	"github.com/holdfast-edge/holdfast/health"
	"github.com/holdfast-edge/holdfast/install/cniconf"
	"github.com/holdfast-edge/holdfast/install/kubelet"
	"github.com/holdfast-edge/holdfast/install/leases"
	"github.com/holdfast-edge/holdfast/install/units"
)

// Options says where things are on the node and how to wire holdfast in.
// All paths except Root and SourceDir are on-node absolute paths, resolved
// under Root.
type Options struct {
	// Root is the node's file system root ("/" on a real node).
	Root string
	// SourceDir (a host path, not under Root) holds the holdfast,
	// holdfast-ipam and holdfastd binaries to install.
	SourceDir string
	NodeName  string

	// CNIBinDir and CNIConfDir: empty takes containerd's (from
	// ContainerdConfig); a value containerd would not use is refused.
	CNIBinDir     string
	CNIConfDir    string
	KubeletConfig string
	KubeletFlags  string
	SystemdDir    string
	Holdfastd     string
	StateDir      string
	// CNICacheDir is libcni's cache dir (its results/ name the pod of each
	// attachment, so imported leases can be pinned).
	CNICacheDir string

	// ConflistName overrides the name of the conflist holdfast writes.
	ConflistName string
	// OverlayDevice overrides the overlay device passed to the chained
	// plugin (default: flannel.1 for a flannel network, none for bridge).
	OverlayDevice string
	// PinTTL is passed to holdfast-ipam (empty: its default).
	PinTTL string
	// IPAMDataDir, CNIDataDir and SnapshotDir are the plugins' on-node
	// state dirs written into the conflist (empty: the plugins' defaults).
	IPAMDataDir, CNIDataDir, SnapshotDir string

	CRISocket string
	// RuntimeEndpoint is containerd's CRI endpoint the shim relays to;
	// empty takes containerd's [grpc] address.
	RuntimeEndpoint string
	// ContainerdConfig is containerd's config.toml (version 2 or 3).
	ContainerdConfig string
	NodeDNS          string
	HealthKeyFile    string
	// Kubeconfig is what the agent unit (health and DNS) uses to reach the
	// apiserver (not kubelet's node credential: it may not write Leases in
	// holdfast-system).
	Kubeconfig string
	// DaemonSets: the agent (health and DNS) runs as a DaemonSet (no unit
	// for it).
	DaemonSets bool
}

// DefaultOptions returns the paths of a kubeadm node.
func DefaultOptions() Options {
	return Options{
		Root:             "/",
		KubeletConfig:    "/var/lib/kubelet/config.yaml",
		KubeletFlags:     "/var/lib/kubelet/kubeadm-flags.env",
		SystemdDir:       "/etc/systemd/system",
		Holdfastd:        "/usr/local/bin/holdfastd",
		StateDir:         DefaultStateDir,
		CNICacheDir:      leases.DefaultCacheDir,
		CRISocket:        "/run/holdfast/cri.sock",
		ContainerdConfig: DefaultContainerdConfig,
		NodeDNS:          "169.254.20.10",
		HealthKeyFile:    health.DefaultKeyFile,
		Kubeconfig:       "/etc/holdfast/kubeconfig",
	}
}

// host maps an on-node path to the path on this machine.
func (o *Options) host(p string) string { return filepath.Join(o.Root, filepath.FromSlash(p)) }

func (o *Options) validate() error {
	if o.Root == "" {
		return errors.New("root is empty")
	}
	for name, p := range map[string]string{"cni-bin-dir": o.CNIBinDir, "cni-conf-dir": o.CNIConfDir, "kubelet-config": o.KubeletConfig,
		"kubelet-flags": o.KubeletFlags, "systemd-dir": o.SystemdDir, "holdfastd-path": o.Holdfastd, "state-dir": o.StateDir, "cri-socket": o.CRISocket,
		"cni-cache-dir": o.CNICacheDir} {
		// Empty CNI dirs: uninstall never needs them; install fills them
		// from containerd's config first.
		if p == "" && (name == "cni-bin-dir" || name == "cni-conf-dir") {
			continue
		}
		if !path.IsAbs(p) {
			return fmt.Errorf("--%s %q is not an absolute path", name, p)
		}
	}
	if ip := strings.TrimSpace(o.NodeDNS); ip == "" || strings.ContainsAny(ip, " /") {
		return fmt.Errorf("--node-dns %q is not an address", o.NodeDNS)
	}
	if o.ConflistName != "" && (strings.Contains(o.ConflistName, "/") || filepath.Ext(o.ConflistName) != ".conflist") {
		return fmt.Errorf("--conflist-name %q must be a file name ending in .conflist", o.ConflistName)
	}
	return nil
}

// want is one path in the desired end state.
type want struct {
	path   string
	data   []byte
	link   string
	mode   fs.FileMode
	role   string
	binary bool
}

// Change kinds.
const (
	Add     = "add"
	Modify  = "modify"
	Restore = "restore" // put the original back
	Remove  = "remove"  // delete what install added
)

// Change is one path a plan writes.
type Change struct {
	Path   string
	Kind   string
	Role   string
	Binary bool

	OldExists bool
	Old       []byte
	OldLink   string
	OldMode   fs.FileMode

	NewExists bool
	New       []byte
	NewLink   string
	NewMode   fs.FileMode
	// NewUID/NewGID are set when restoring an original's owner.
	NewUID, NewGID int
	chown          bool
}

// Plan is the complete set of changes of one install or uninstall.
type Plan struct {
	Changes   []Change
	Unchanged []string
	// Notes are things the operator should know (not errors).
	Notes []string
	// Record is the record after applying; nil removes it.
	Record *Record
	prev   *Record
	// leases moves pod leases between host-local and holdfast-ipam before
	// the changes are applied (import at install, hand-back at uninstall).
	leases *leases.Network
	// backups to write before anything else: sha -> content.
	backups map[string][]byte
	// cleanup: backups to delete after applying (uninstall).
	dropBackups []string
	opts        Options
}

// Empty reports whether the plan changes nothing.
func (p *Plan) Empty() bool {
	return len(p.Changes) == 0 && !p.recordChanges()
}

func (p *Plan) recordChanges() bool {
	if p.Record == nil {
		return p.prev != nil
	}
	if p.prev == nil {
		return true
	}
	a, _ := encodeRecord(p.Record)
	b, _ := encodeRecord(p.prev)
	return !bytes.Equal(a, b)
}

// current is what a path holds now.
type current struct {
	exists   bool
	isLink   bool
	link     string
	data     []byte
	mode     fs.FileMode
	uid, gid int
}

func readCurrent(hostPath string) (current, error) {
	st, err := os.Lstat(hostPath)
	if errors.Is(err, fs.ErrNotExist) {
		return current{}, nil
	}
	if err != nil {
		return current{}, err
	}
	c := current{exists: true, mode: st.Mode().Perm()}
	if sys, ok := st.Sys().(*syscall.Stat_t); ok {
		c.uid, c.gid = int(sys.Uid), int(sys.Gid)
	}
	switch {
	case st.Mode()&fs.ModeSymlink != 0:
		c.isLink = true
		c.link, err = os.Readlink(hostPath)
		return c, err
	case st.Mode().IsRegular():
		c.data, err = os.ReadFile(hostPath)
		return c, err
	case st.IsDir():
		return c, fmt.Errorf("%s is a directory", hostPath)
	default:
		return c, fmt.Errorf("%s is not a regular file", hostPath)
	}
}

func (c current) matches(w want) bool {
	if w.link != "" {
		return c.exists && c.isLink && c.link == w.link
	}
	return c.exists && !c.isLink && bytes.Equal(c.data, w.data)
}

// installedMatches reports whether the path holds what the record says
// install wrote.
func (c current) installedMatches(r FileRecord) bool {
	if r.Link != "" {
		return c.exists && c.isLink && c.link == r.Link
	}
	return c.exists && !c.isLink && sha(c.data) == r.SHA256
}

// origMatches reports whether the path holds its pre-install state.
func (c current) origMatches(r FileRecord) bool {
	if !r.Existed {
		return !c.exists
	}
	return c.exists && !c.isLink && sha(c.data) == r.OrigSHA256
}

// PlanInstall computes what install would change. It reads everything and
// validates every input before returning; nothing is written.
func PlanInstall(o Options) (*Plan, error) {
	ctrNotes, err := o.fromContainerd()
	if err != nil {
		return nil, err
	}
	if err := o.validate(); err != nil {
		return nil, err
	}
	prev, err := LoadRecord(o.host(recordPath(o.StateDir)))
	if err != nil {
		return nil, err
	}
	wants, notes, netw, err := o.desired(prev)
	if err != nil {
		return nil, err
	}
	p := &Plan{prev: prev, backups: map[string][]byte{}, opts: o, Notes: append(ctrNotes, notes...), leases: netw}
	rec := &Record{NodeName: o.NodeName, Network: &NetworkRecord{Name: netw.Name, HostLocalDataDir: netw.HostLocalDataDir, IPAMDataDir: netw.IPAMDataDir}}
	if prev != nil {
		rec.Dirs = append(rec.Dirs, prev.Dirs...)
	}
	wanted := map[string]bool{}
	for _, w := range wants {
		wanted[w.path] = true
		cur, err := readCurrent(o.host(w.path))
		if err != nil {
			return nil, fmt.Errorf("%s: %w", w.path, err)
		}
		var old *FileRecord
		if prev != nil {
			old = prev.find(w.path)
		}
		if cur.matches(w) {
			p.Unchanged = append(p.Unchanged, w.path)
			if old != nil {
				rec.Files = append(rec.Files, *old)
			}
			continue
		}
		fr := FileRecord{Path: w.path, Role: w.role}
		switch {
		case old != nil && (cur.installedMatches(*old) || cur.origMatches(*old)):
			fr = *old
			fr.Role = w.role
		default:
			if old != nil {
				p.Notes = append(p.Notes, fmt.Sprintf("%s changed since holdfast installed it: its current content becomes the original that uninstall restores", w.path))
			}
			if cur.isLink {
				return nil, fmt.Errorf("%s is a symlink (to %s) that holdfast did not create: refusing to replace it", w.path, cur.link)
			}
			fr.Existed = cur.exists
			if cur.exists {
				fr.OrigSHA256 = sha(cur.data)
				fr.OrigMode = cur.mode
				fr.OrigUID, fr.OrigGID = cur.uid, cur.gid
				if _, err := os.Stat(o.host(backupPath(o.StateDir, fr.OrigSHA256))); err != nil {
					p.backups[fr.OrigSHA256] = cur.data
				}
			}
		}
		ch := Change{Path: w.path, Role: w.role, Binary: w.binary, Kind: Add,
			OldExists: cur.exists, Old: cur.data, OldLink: cur.link, OldMode: cur.mode,
			NewExists: true, New: w.data, NewLink: w.link, NewMode: w.mode}
		if cur.exists {
			ch.Kind = Modify
			if !cur.isLink && w.link == "" && w.mode == 0 {
				ch.NewMode = cur.mode
			}
		}
		if ch.NewMode == 0 {
			ch.NewMode = 0o644
		}
		if w.link != "" {
			fr.Link, fr.SHA256 = w.link, ""
		} else {
			fr.SHA256, fr.Link = sha(w.data), ""
		}
		rec.Files = append(rec.Files, fr)
		p.Changes = append(p.Changes, ch)
	}
	// Paths install wrote before but no longer wants: put them back.
	if prev != nil {
		for _, old := range prev.Files {
			if wanted[old.Path] {
				continue
			}
			ch, keep, err := o.revert(old, false)
			if err != nil {
				return nil, err
			}
			if keep != "" {
				p.Notes = append(p.Notes, keep)
			}
			if ch != nil {
				p.Changes = append(p.Changes, *ch)
			}
		}
	}
	sort.Slice(rec.Files, func(i, j int) bool { return rec.Files[i].Path < rec.Files[j].Path })
	for _, ch := range p.Changes {
		if ch.NewExists {
			rec.Dirs = append(rec.Dirs, o.missingDirs(path.Dir(ch.Path))...)
		}
	}
	if len(p.backups) > 0 || prev == nil {
		rec.Dirs = append(rec.Dirs, o.missingDirs(path.Join(o.StateDir, "backup"))...)
	}
	rec.Dirs = dedupDirs(rec.Dirs)
	p.Record = rec
	sortChanges(p.Changes)
	return p, nil
}

// revert returns the change that puts a recorded path back to its original
// state. A path someone else changed since install is left alone (with a
// note) unless force is set.
func (o *Options) revert(r FileRecord, force bool) (*Change, string, error) {
	cur, err := readCurrent(o.host(r.Path))
	if err != nil {
		return nil, "", fmt.Errorf("%s: %w", r.Path, err)
	}
	if cur.origMatches(r) {
		return nil, "", nil
	}
	if !cur.installedMatches(r) && !force {
		return nil, "", &ConflictError{Path: r.Path}
	}
	ch := &Change{Path: r.Path, Role: r.Role, Binary: r.Role == roleBinary,
		OldExists: cur.exists, Old: cur.data, OldLink: cur.link, OldMode: cur.mode}
	if !r.Existed {
		ch.Kind = Remove
		return ch, "", nil
	}
	data, err := os.ReadFile(o.host(backupPath(o.StateDir, r.OrigSHA256)))
	if err != nil {
		return nil, "", fmt.Errorf("backup of %s: %w", r.Path, err)
	}
	if sha(data) != r.OrigSHA256 {
		return nil, "", fmt.Errorf("backup of %s (%s) is corrupt: checksum mismatch", r.Path, backupPath(o.StateDir, r.OrigSHA256))
	}
	ch.Kind = Restore
	ch.NewExists, ch.New, ch.NewMode = true, data, r.OrigMode
	ch.NewUID, ch.NewGID, ch.chown = r.OrigUID, r.OrigGID, true
	return ch, "", nil
}

// ConflictError is returned when a file install wrote was changed by
// someone else since.
type ConflictError struct{ Path string }

func (e *ConflictError) Error() string {
	return fmt.Sprintf("%s was changed after holdfast installed it; refusing to overwrite it (use --force to restore the original anyway)", e.Path)
}

// PlanUninstall computes the changes that put every recorded path back.
func PlanUninstall(o Options, force bool) (*Plan, error) {
	if err := o.validate(); err != nil {
		return nil, err
	}
	prev, err := LoadRecord(o.host(recordPath(o.StateDir)))
	if err != nil {
		return nil, err
	}
	p := &Plan{prev: prev, opts: o}
	if prev == nil {
		return p, nil
	}
	needIPAM, err := p.leaseHolders(force)
	if err != nil {
		return nil, err
	}
	var conflicts []string
	for _, r := range prev.Files {
		if len(needIPAM) > 0 && r.Role == roleBinary && path.Base(r.Path) == cniconf.IPAMType {
			p.Record = &Record{NodeName: prev.NodeName, Files: []FileRecord{r}, Dirs: prev.Dirs, Network: prev.Network}
			p.Unchanged = append(p.Unchanged, r.Path)
			continue
		}
		ch, _, err := o.revert(r, force)
		var ce *ConflictError
		if errors.As(err, &ce) {
			conflicts = append(conflicts, ce.Path)
			continue
		}
		if err != nil {
			return nil, err
		}
		if ch != nil {
			p.Changes = append(p.Changes, *ch)
		} else {
			p.Unchanged = append(p.Unchanged, r.Path)
		}
		if r.Existed {
			p.dropBackups = append(p.dropBackups, r.OrigSHA256)
		}
	}
	if len(conflicts) > 0 {
		return nil, fmt.Errorf("changed after holdfast installed them, refusing to overwrite (use --force to restore the originals anyway): %s", strings.Join(conflicts, ", "))
	}
	sortChanges(p.Changes)
	return p, nil
}

// leaseHolders sets up the hand-back of holdfast-ipam's leases and returns
// the pods created under holdfast that are still running: their saved
// delegate config names holdfast-ipam, so it stays in the CNI bin dir (and
// in the record) until they are gone, unless force.
func (p *Plan) leaseHolders(force bool) ([]leases.Holder, error) {
	if p.prev.Network == nil {
		return nil, nil
	}
	o := p.opts
	n := o.leases(p.prev.Network, nil)
	p.leases = &n
	hs, err := leases.Live(n)
	if err != nil && force {
		p.leases = nil
		p.Notes = append(p.Notes, fmt.Sprintf("--force: holdfast-ipam's leases are unreadable (%v): none are handed back to host-local, which may hand out addresses running pods hold", err))
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("holdfast-ipam's leases (nothing changed; --force uninstalls without handing them back): %w", err)
	}
	var need []string
	var out []leases.Holder
	for _, h := range hs {
		if !h.Imported {
			need, out = append(need, h.String()), append(out, h)
		}
	}
	if len(out) == 0 {
		return nil, nil
	}
	bin := path.Join(o.CNIBinDir, cniconf.IPAMType)
	for _, r := range p.prev.Files {
		if r.Role == roleBinary && path.Base(r.Path) == cniconf.IPAMType {
			bin = r.Path // where install put it (uninstall has no --cni-bin-dir)
		}
	}
	if force {
		p.Notes = append(p.Notes, fmt.Sprintf("--force removes %s although %d pods created under holdfast still need it: their DEL will fail with 'failed to find plugin %q' (the flannel-io plugin then drops its saved config, so the bridge's rules and the address leak): %s",
			bin, len(out), cniconf.IPAMType, strings.Join(need, ", ")))
		return nil, nil
	}
	p.Notes = append(p.Notes, fmt.Sprintf("%s stays: %d pods created under holdfast still need it for their DEL (the config saved at their ADD names it); their addresses are reserved in host-local: %s. Run 'holdfastd uninstall' again once they are gone to remove it.",
		bin, len(out), strings.Join(need, ", ")))
	return out, nil
}

// missingDirs lists the on-node directories from dir upwards that do not
// exist yet, parents first.
func (o *Options) missingDirs(dir string) []string {
	var out []string
	for d := dir; d != "/" && d != "."; d = path.Dir(d) {
		if _, err := os.Lstat(o.host(d)); err == nil {
			break
		}
		out = append([]string{d}, out...)
	}
	return out
}

func dedupDirs(ds []string) []string {
	seen := map[string]bool{}
	var out []string
	for _, d := range ds {
		if !seen[d] {
			seen[d] = true
			out = append(out, d)
		}
	}
	sort.SliceStable(out, func(i, j int) bool { return strings.Count(out[i], "/") < strings.Count(out[j], "/") })
	return out
}

// Roles, in the order changes are applied: binaries and units first,
// kubelet last, so kubelet is never pointed at a shim that is not there.
const (
	roleBinary   = "binary"
	roleUnit     = "systemd-unit"
	roleLink     = "systemd-enable-link"
	roleConflist = "cni-conflist"
	roleKubelet  = "kubelet-config"
	roleFlags    = "kubelet-flags"
)

var roleOrder = map[string]int{roleBinary: 0, roleUnit: 1, roleLink: 2, roleConflist: 3, roleFlags: 4, roleKubelet: 5}

func sortChanges(cs []Change) {
	sort.SliceStable(cs, func(i, j int) bool {
		if roleOrder[cs[i].Role] != roleOrder[cs[j].Role] {
			return roleOrder[cs[i].Role] < roleOrder[cs[j].Role]
		}
		return cs[i].Path < cs[j].Path
	})
}

// desired computes every path install wants and its content.
func (o *Options) desired(prev *Record) ([]want, []string, *leases.Network, error) {
	var ws []want
	var notes []string
	if o.NodeName == "" {
		return nil, nil, nil, errors.New("node name is empty (pass --node-name)")
	}
	// Binaries.
	for _, b := range []struct{ name, dst string }{
		{"holdfast", path.Join(o.CNIBinDir, "holdfast")},
		{"holdfast-ipam", path.Join(o.CNIBinDir, "holdfast-ipam")},
		{"holdfastd", o.Holdfastd},
	} {
		src := filepath.Join(o.SourceDir, b.name)
		data, err := os.ReadFile(src)
		if err != nil {
			return nil, nil, nil, fmt.Errorf("binary to install: %w (build it with 'make build' or pass --source-dir)", err)
		}
		ws = append(ws, want{path: b.dst, data: data, mode: 0o755, role: roleBinary, binary: true})
	}
	// Conflist.
	ignore := map[string]bool{}
	if prev != nil {
		for _, f := range prev.Files {
			if f.Role == roleConflist && !f.Existed && path.Dir(f.Path) == o.CNIConfDir {
				ignore[path.Base(f.Path)] = true
			}
		}
	}
	confDir := o.host(o.CNIConfDir)
	active, err := cniconf.FindActive(confDir, ignore)
	if err != nil {
		return nil, nil, nil, err
	}
	if active == "" {
		return nil, nil, nil, fmt.Errorf("%s holds no CNI network config (.conf, .conflist, .json): install the node's network (flannel or bridge) first", o.CNIConfDir)
	}
	activePath := path.Join(o.CNIConfDir, active)
	src, err := os.ReadFile(o.host(activePath))
	if err != nil {
		return nil, nil, nil, err
	}
	mainType, _ := cniconf.Main(src)
	copts := cniconf.Options{OverlayDevice: o.OverlayDevice, PinTTL: o.PinTTL, NodeName: o.NodeName,
		IPAMDataDir: o.IPAMDataDir, DataDir: o.CNIDataDir, SnapshotDir: o.SnapshotDir}
	if copts.OverlayDevice == "" && mainType == "flannel" {
		copts.OverlayDevice = "flannel.1"
	}
	chained, err := cniconf.Chain(activePath, src, copts)
	if err != nil {
		return nil, nil, nil, err
	}
	name := o.ConflistName
	if name == "" {
		if name, err = cniconf.NameBefore(active); err != nil {
			return nil, nil, nil, fmt.Errorf("%s: %w", o.CNIConfDir, err)
		}
	} else if name >= active {
		return nil, nil, nil, fmt.Errorf("--conflist-name %q does not sort before %q, which the runtime would keep using", name, active)
	}
	ws = append(ws, want{path: path.Join(o.CNIConfDir, name), data: chained, mode: 0o644, role: roleConflist})
	netRec, sets, err := leaseNetwork(src, chained)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("%s: %w", activePath, err)
	}
	netw := o.leases(&netRec, sets)
	notes = append(notes, fmt.Sprintf("CNI: %s chains holdfast into %s (%s), which is left as it is", path.Join(o.CNIConfDir, name), activePath, mainType))

	// Kubelet.
	kws, err := o.kubeletWants()
	if err != nil {
		return nil, nil, nil, err
	}
	ws = append(ws, kws...)

	// Units.
	us, err := units.Render(units.Config{Holdfastd: o.Holdfastd, NodeName: o.NodeName, CRISocket: o.CRISocket,
		RuntimeEndpoint: o.RuntimeEndpoint, NodeDNS: o.NodeDNS, HealthKeyFile: o.HealthKeyFile, Kubeconfig: o.Kubeconfig, SnapshotDir: o.SnapshotDir, DaemonSets: o.DaemonSets})
	if err != nil {
		return nil, nil, nil, err
	}
	for _, u := range us {
		ws = append(ws, want{path: path.Join(o.SystemdDir, u.Name), data: []byte(u.Content), mode: 0o644, role: roleUnit})
	}
	for _, l := range units.Links(us, o.SystemdDir) {
		ws = append(ws, want{path: path.Join(o.SystemdDir, l.Path), link: l.Target, role: roleLink})
	}
	return ws, notes, &netw, nil
}

// kubeletWants edits the kubelet config file and/or kubeadm's flags file.
// A value the flags file sets is edited there (flags override the config
// file); the rest go to the config file.
func (o *Options) kubeletWants() ([]want, error) {
	settings := kubelet.Settings("unix://"+o.CRISocket, o.NodeDNS)
	cfg, cfgErr := os.ReadFile(o.host(o.KubeletConfig))
	if cfgErr != nil && !errors.Is(cfgErr, fs.ErrNotExist) {
		return nil, cfgErr
	}
	flags, flErr := os.ReadFile(o.host(o.KubeletFlags))
	if flErr != nil && !errors.Is(flErr, fs.ErrNotExist) {
		return nil, flErr
	}
	haveCfg, haveFlags := cfgErr == nil, flErr == nil
	if !haveCfg && !haveFlags {
		return nil, fmt.Errorf("found neither the kubelet config %s nor kubeadm's flags file %s: pass --kubelet-config or --kubelet-flags", o.KubeletConfig, o.KubeletFlags)
	}
	var ws []want
	cfgSettings := settings
	if haveFlags {
		set, err := kubelet.FlagsSet(o.KubeletFlags, flags, settings)
		if err != nil {
			return nil, err
		}
		var inFlags []kubelet.Setting
		cfgSettings = nil
		for _, s := range settings {
			if set[s.Flag] || !haveCfg {
				inFlags = append(inFlags, s)
			} else {
				cfgSettings = append(cfgSettings, s)
			}
		}
		out, err := kubelet.EditFlags(o.KubeletFlags, flags, inFlags, !haveCfg)
		if err != nil {
			return nil, err
		}
		ws = append(ws, want{path: o.KubeletFlags, data: out, role: roleFlags})
	}
	if haveCfg {
		// Validate the config even when the flags file carries every value.
		out, err := kubelet.EditConfig(o.KubeletConfig, cfg, cfgSettings)
		if err != nil {
			return nil, err
		}
		ws = append(ws, want{path: o.KubeletConfig, data: out, role: roleKubelet})
	}
	return ws, nil
}
