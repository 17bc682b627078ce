package snapshot

import (
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"path"
	"strings"
)

// ChainSelector picks the iptables chains a snapshot holds: user chains of
// the listed tables whose name matches one of the globs, plus the rules of
// built-in chains that jump into them.
type ChainSelector struct {
	// Globs are "table:glob" items (e.g. "nat:KUBE-*").
	Globs []string
}

// DefaultChains selects flannel's and kube-proxy's chains in nat and filter.
func DefaultChains() ChainSelector {
	return ChainSelector{Globs: []string{"nat:FLANNEL-*", "nat:KUBE-*", "filter:FLANNEL-*", "filter:KUBE-*"}}
}

// ParseChainSelector parses a comma-separated "table:glob" list; a glob
// without a table applies to nat and filter. An empty string selects nothing.
func ParseChainSelector(s string) (ChainSelector, error) {
	var cs ChainSelector
	for _, item := range strings.Split(s, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		table, glob, ok := strings.Cut(item, ":")
		tables := []string{table}
		if !ok {
			glob, tables = table, []string{"nat", "filter"}
		}
		for _, t := range tables {
			if t != "nat" && t != "filter" {
				return cs, fmt.Errorf("iptables chain selector %q: table %q is not nat or filter", item, t)
			}
			if _, err := path.Match(glob, "x"); err != nil || glob == "" {
				return cs, fmt.Errorf("iptables chain selector %q: bad glob %q", item, glob)
			}
			cs.Globs = append(cs.Globs, t+":"+glob)
		}
	}
	return cs, nil
}

// Tables lists the tables the selector covers, in a stable order.
func (cs ChainSelector) Tables() []string {
	var out []string
	for _, t := range []string{"nat", "filter"} {
		for _, g := range cs.Globs {
			if strings.HasPrefix(g, t+":") {
				out = append(out, t)
				break
			}
		}
	}
	return out
}

func (cs ChainSelector) selects(table, chain string) bool {
	for _, g := range cs.Globs {
		t, glob, _ := strings.Cut(g, ":")
		if t == table {
			if ok, _ := path.Match(glob, chain); ok {
				return true
			}
		}
	}
	return false
}

// savedTable is one table of iptables-save output.
type savedTable struct {
	chains  map[string]bool // every chain (built-in and user)
	builtin map[string]bool
	order   []string // user chains in order
	rules   []string // "-A ..." lines in order
	ruleSet map[string]bool
}

func parseSave(out string) map[string]*savedTable {
	tables := map[string]*savedTable{}
	var cur *savedTable
	for _, line := range strings.Split(out, "\n") {
		line = strings.TrimRight(line, "\r")
		switch {
		case strings.HasPrefix(line, "*"):
			cur = &savedTable{chains: map[string]bool{}, builtin: map[string]bool{}, ruleSet: map[string]bool{}}
			tables[line[1:]] = cur
		case cur == nil:
		case strings.HasPrefix(line, ":"):
			f := strings.Fields(line[1:])
			if len(f) < 2 {
				continue
			}
			cur.chains[f[0]] = true
			if f[1] != "-" {
				cur.builtin[f[0]] = true
			} else {
				cur.order = append(cur.order, f[0])
			}
		case strings.HasPrefix(line, "-A "):
			cur.rules = append(cur.rules, line)
			cur.ruleSet[line] = true
		}
	}
	return tables
}

// ruleChain and ruleTarget read the chain and the -j/-g target of "-A ..." lines.
func ruleChain(rule string) string {
	f := strings.Fields(rule)
	if len(f) < 2 {
		return ""
	}
	return f[1]
}

func ruleTarget(rule string) string {
	f := strings.Fields(rule)
	for i := 0; i+1 < len(f); i++ {
		if f[i] == "-j" || f[i] == "-g" || f[i] == "--jump" || f[i] == "--goto" {
			return f[i+1]
		}
	}
	return ""
}

// selectTable keeps the selected chains of one saved table and the jump
// rules into them from built-in chains.
func selectTable(name string, t *savedTable, cs ChainSelector) IPTable {
	out := IPTable{Table: name}
	sel := map[string]bool{}
	for _, c := range t.order {
		if cs.selects(name, c) {
			sel[c] = true
			out.Chains = append(out.Chains, c)
		}
	}
	for _, r := range t.rules {
		c := ruleChain(r)
		if sel[c] || t.builtin[c] && sel[ruleTarget(r)] {
			out.Rules = append(out.Rules, r)
		}
	}
	return out
}

// iptablesCmd runs the iptables tools of the current network namespace.
type iptablesCmd struct {
	save, restore string
}

func (c iptablesCmd) dump(ctx context.Context, table string) (*savedTable, error) {
	t, _, err := c.dumpBackend(ctx, table)
	return t, err
}

// dumpBackend is dump that also reports whether iptables-save is the
// nf_tables backend's (its header says "(nf_tables)"; the legacy one's
// says nothing, and a legacy table never used prints no header at all).
func (c iptablesCmd) dumpBackend(ctx context.Context, table string) (*savedTable, bool, error) {
	cmd := exec.CommandContext(ctx, c.save, "-t", table)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, false, fmt.Errorf("%s -t %s: %w: %s", c.save, table, err, strings.TrimSpace(stderr.String()))
	}
	nft := nfTablesBackend(string(out))
	if t := parseSave(string(out))[table]; t != nil {
		return t, nft, nil
	}
	// A table never used in this namespace prints nothing: it is empty.
	return &savedTable{chains: map[string]bool{}, builtin: map[string]bool{}, ruleSet: map[string]bool{}}, nft, nil
}

// nfTablesBackend reports whether iptables-save output comes from the
// nf_tables backend: "# Generated by iptables-nft-save v1.8.9 (nf_tables) on …".
func nfTablesBackend(out string) bool {
	for line := range strings.Lines(out) {
		if strings.HasPrefix(line, "# Generated by ") {
			return strings.Contains(line, "(nf_tables)")
		}
	}
	return false
}

// capture reads the selected chains; nft reports whether every table read
// was the nf_tables backend's (true when no table is selected).
func (c iptablesCmd) capture(ctx context.Context, cs ChainSelector) (out []IPTable, nft bool, err error) {
	nft = true
	for _, table := range cs.Tables() {
		t, isNFT, err := c.dumpBackend(ctx, table)
		if err != nil {
			return nil, false, err
		}
		nft = nft && isNFT
		if st := selectTable(table, t, cs); len(st.Chains)+len(st.Rules) > 0 {
			out = append(out, st)
		}
	}
	return out, nft, nil
}

// apply adds chains and rules with iptables-restore --noflush, which
// changes nothing else in the table and applies the table atomically.
func (c iptablesCmd) apply(ctx context.Context, table string, chains, rules []string) error {
	if len(chains)+len(rules) == 0 {
		return nil
	}
	var in strings.Builder
	fmt.Fprintf(&in, "*%s\n", table)
	for _, ch := range chains {
		fmt.Fprintf(&in, ":%s - [0:0]\n", ch)
	}
	for _, r := range rules {
		in.WriteString(r + "\n")
	}
	in.WriteString("COMMIT\n")
	cmd := exec.CommandContext(ctx, c.restore, "--noflush")
	cmd.Stdin = strings.NewReader(in.String())
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("%s --noflush (table %s): %w: %s", c.restore, table, err, strings.TrimSpace(string(out)))
	}
	return nil
}
