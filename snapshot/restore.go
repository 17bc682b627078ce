package snapshot

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"syscall"
	"time"
)

// ErrOtherNode is returned (wrapped) when the snapshot belongs to another node.
var ErrOtherNode = errors.New("snapshot belongs to another node")

// ErrIPTables is returned (wrapped) when some iptables or nftables tables
// could not be restored. The kernel entries (device, routes, FDB,
// neighbours) and subnet.env were restored all the same: a rule the kernel
// refuses must not cost the node its overlay.
var ErrIPTables = errors.New("firewall rules not fully restored")

// RestoreOptions say what to restore.
type RestoreOptions struct {
	// Dir holds the snapshot (DefaultDir).
	Dir string
	// NodeName must equal the snapshot's node name.
	NodeName string
	// NetNS is a network namespace path to restore into; "" is the current one.
	NetNS string
	// DryRun plans without changing anything (what diff shows).
	DryRun bool
	// IPTablesSave and IPTablesRestore name the tools (defaults as Capture).
	IPTablesSave, IPTablesRestore string
	// Nft names the nft tool (default as Capture).
	Nft string
}

// Report says what a restore did.
type Report struct {
	NodeName string `json:"nodeName"`
	// Path is the snapshot file used.
	Path string `json:"path"`
	// Refused is the error of a current file that was refused in favour of
	// the previous generation, "" otherwise.
	Refused string        `json:"refused,omitempty"`
	Actions []Action      `json:"actions"`
	Added   int           `json:"added"`
	Kept    int           `json:"kept"`
	Skipped int           `json:"skipped"`
	Elapsed time.Duration `json:"elapsed"`
}

// Summary is a one-line account of the report.
func (r *Report) Summary() string {
	return fmt.Sprintf("node %s: added %d, kept %d, skipped %d (from %s in %s)", r.NodeName, r.Added, r.Kept, r.Skipped, r.Path, r.Elapsed.Round(time.Microsecond))
}

func (r *Report) count() {
	r.Added, r.Kept, r.Skipped = 0, 0, 0
	for _, a := range r.Actions {
		switch a.Op {
		case OpAdd:
			r.Added++
		case OpKeep:
			r.Kept++
		case OpSkip:
			r.Skipped++
		}
	}
}

// Restore puts back what is missing of the node's snapshot in dir: it adds
// missing entries, keeps equal ones and skips (never overwrites) live entries
// that differ. It refuses a snapshot of another node. When an add fails, what
// this call already added is removed again before the error is returned.
// It returns an error wrapping ErrNoSnapshot when dir holds no snapshot.
func Restore(ctx context.Context, opts RestoreOptions) (*Report, error) {
	start := time.Now()
	if opts.NodeName == "" {
		return nil, fmt.Errorf("restore: node name is empty")
	}
	dir := opts.Dir
	if dir == "" {
		dir = DefaultDir
	}
	l, err := Load(dir)
	if err != nil {
		return nil, err
	}
	rep, err := RestoreSnapshot(ctx, l.Snapshot, opts)
	if rep != nil {
		rep.Path = l.Path
		if l.Refused != nil {
			rep.Refused = l.Refused.Error()
		}
		rep.Elapsed = time.Since(start)
	}
	return rep, err
}

// RestoreSnapshot is Restore of an already loaded snapshot.
func RestoreSnapshot(ctx context.Context, s *Snapshot, opts RestoreOptions) (*Report, error) {
	if s.NodeName != opts.NodeName {
		return nil, fmt.Errorf("%w: snapshot is of node %q, this node is %q: refusing to restore it", ErrOtherNode, s.NodeName, opts.NodeName)
	}
	if err := s.Validate(); err != nil {
		return nil, fmt.Errorf("refusing to restore: %w", err)
	}
	rep := &Report{NodeName: s.NodeName}
	err := withLive(ctx, s, opts, func(k *kernel, tl tools, live *liveState) error {
		rep.Actions = plan(s, live, false)
		if opts.DryRun {
			return nil
		}
		return apply(ctx, k, tl, rep.Actions)
	})
	rep.count()
	return rep, err
}

// Diff compares the snapshot with live state, including live entries the
// snapshot does not hold (OpLiveOnly). It changes nothing.
func Diff(ctx context.Context, s *Snapshot, opts RestoreOptions) ([]Action, error) {
	var acts []Action
	err := withLive(ctx, s, opts, func(_ *kernel, _ tools, live *liveState) error {
		acts = plan(s, live, true)
		return nil
	})
	return acts, err
}

// tools are the firewall commands a restore runs.
type tools struct {
	ipt iptablesCmd
	nft nftCmd
}

// withLive runs f in the target netns with a kernel handle, the firewall
// tools and the live state of what s holds.
func withLive(ctx context.Context, s *Snapshot, opts RestoreOptions, f func(*kernel, tools, *liveState) error) error {
	co := &CaptureOptions{IPTablesSave: opts.IPTablesSave, IPTablesRestore: opts.IPTablesRestore, Nft: opts.Nft}
	tl := tools{ipt: co.iptables(), nft: co.nft()}
	return inNetNS(opts.NetNS, func() error {
		k, err := openKernel()
		if err != nil {
			return err
		}
		defer k.close()
		live, err := readLive(ctx, k, tl, s)
		if err != nil {
			return err
		}
		return f(k, tl, live)
	})
}

func readLive(ctx context.Context, k *kernel, tl tools, s *Snapshot) (*liveState, error) {
	ipt := tl.ipt
	live := &liveState{devices: map[string]*liveDevice{}, iptables: map[string]*savedTable{}}
	for _, d := range s.Devices {
		ld, err := k.readDevice(d.Name)
		if err != nil {
			return nil, err
		}
		live.devices[d.Name] = ld
	}
	if s.SubnetEnv != nil {
		f, err := readSubnetEnv(s.SubnetEnv.Path)
		if err != nil {
			return nil, err
		}
		live.subnetEnv = f
	}
	for _, t := range s.IPTables {
		st, err := ipt.dump(ctx, t.Table)
		if err != nil {
			return nil, err
		}
		live.iptables[t.Table] = st
	}
	nft, err := tl.nft.live(ctx, s.NFTables)
	if err != nil {
		return nil, err
	}
	live.nftables = nft
	return live, nil
}

// apply performs the OpAdd actions: the kernel entries and subnet.env as
// one unit (all or nothing), then each iptables table and each nftables
// table on its own.
func apply(ctx context.Context, k *kernel, tl tools, acts []Action) error {
	tables, order, err := applyKernel(ctx, k, acts)
	if err != nil {
		return err
	}
	return errors.Join(applyIPTables(ctx, tl.ipt, acts, tables, order), applyNFTables(ctx, tl.nft, acts))
}

// tableAdds are the chains and rules to add to one iptables table, with the
// indexes of their actions.
type tableAdds struct {
	chains, rules []string
	acts          []int
}

// applyKernel adds the missing kernel entries and subnet.env in plan order,
// and collects the iptables adds for later. An add that finds the entry
// already there (EEXIST: it appeared since the plan, or exists through
// another device) becomes a skip. On any other failure every add done so
// far is undone, in reverse order, and every planned add becomes a skip.
func applyKernel(ctx context.Context, k *kernel, acts []Action) (tables map[string]*tableAdds, order []string, err error) {
	var undos []func() error
	defer func() {
		if err == nil {
			return
		}
		for i := len(undos) - 1; i >= 0; i-- {
			undos[i]()
		}
		for i := range acts {
			if acts[i].Op == OpAdd {
				acts[i].Op, acts[i].Reason = OpSkip, "not restored: "+err.Error()
			}
		}
	}()
	index := map[string]int{}
	devIndex := func(name string) (int, error) {
		if i, ok := index[name]; ok {
			return i, nil
		}
		i, err := k.linkIndex(name)
		if err == nil {
			index[name] = i
		}
		return i, err
	}
	tables = map[string]*tableAdds{}
	for i := range acts {
		a := &acts[i]
		if a.Op != OpAdd {
			continue
		}
		if err := ctx.Err(); err != nil {
			return nil, nil, err
		}
		var undo func() error
		var aerr error
		switch a.Kind {
		case "link":
			undo, aerr = k.addVXLAN(a.dev)
		case "link-up":
			undo, aerr = k.setUp(a.Device)
		case "addr", "neigh", "fdb", "route":
			idx, ierr := devIndex(a.Device)
			if ierr != nil {
				aerr = ierr
				break
			}
			switch a.Kind {
			case "addr":
				undo, aerr = k.addAddr(idx, a.addr)
			case "neigh":
				undo, aerr = k.addNeighbor(idx, a.neigh)
			case "fdb":
				undo, aerr = k.addFDB(idx, a.fdb)
			case "route":
				undo, aerr = k.addRoute(idx, a.route)
			}
		case "subnet.env":
			undo, aerr = writeSubnetEnv(a.file)
		case "nftable":
			continue // applyNFTables, after the overlay
		case "chain", "rule":
			t := tables[a.Table]
			if t == nil {
				t = &tableAdds{}
				tables[a.Table] = t
				order = append(order, a.Table)
			}
			if a.Kind == "chain" {
				t.chains = append(t.chains, a.chain)
			} else {
				t.rules = append(t.rules, a.rule)
			}
			t.acts = append(t.acts, i)
			continue
		default:
			aerr = fmt.Errorf("unknown entry kind %q", a.Kind)
		}
		if errors.Is(aerr, syscall.EEXIST) {
			a.Op, a.Reason = OpSkip, "exists live"
			continue
		}
		if aerr != nil {
			return nil, nil, fmt.Errorf("restore %s %s %s: %w", a.Kind, a.Device, a.Entry, aerr)
		}
		if undo != nil {
			undos = append(undos, undo)
		}
	}
	return tables, order, nil
}

// applyIPTables restores each table with one atomic iptables-restore
// --noflush, after creating the nfacct counters its rules name. A table that
// fails is reported (its actions become skips) and the others go on.
func applyIPTables(ctx context.Context, ipt iptablesCmd, acts []Action, tables map[string]*tableAdds, order []string) error {
	var errs []error
	for _, name := range order {
		t := tables[name]
		err := ensureNfacct(nfacctNames(t.rules))
		if err == nil {
			err = ipt.apply(ctx, name, t.chains, t.rules)
		}
		if err == nil {
			continue
		}
		errs = append(errs, fmt.Errorf("%w: table %s: %v", ErrIPTables, name, err))
		for _, i := range t.acts {
			acts[i].Op, acts[i].Reason = OpSkip, "not restored: "+err.Error()
		}
	}
	return errors.Join(errs...)
}

// applyNFTables creates each missing nftables table in one atomic nft
// transaction. A table that appeared live since the plan (its owner wrote
// it) becomes a skip; a table nft or the kernel refuses is reported (its
// action becomes a skip with the reason) and the others go on.
func applyNFTables(ctx context.Context, nft nftCmd, acts []Action) error {
	var errs []error
	for i := range acts {
		a := &acts[i]
		if a.Op != OpAdd || a.Kind != "nftable" {
			continue
		}
		err := nft.apply(ctx, *a.nft)
		if err == nil {
			continue
		}
		if live, lerr := liveNFTables(); lerr == nil && live[a.Table] {
			a.Op, a.Reason = OpSkip, "table appeared live: kept"
			continue
		}
		errs = append(errs, fmt.Errorf("%w: nftables table %s: %v", ErrIPTables, a.Table, err))
		a.Op, a.Reason = OpSkip, "not restored: "+err.Error()
	}
	return errors.Join(errs...)
}

// Lines renders every action, one a line.
func (r *Report) Lines() string {
	var b strings.Builder
	for _, a := range r.Actions {
		b.WriteString(a.String() + "\n")
	}
	return b.String()
}
