package snapshot

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os/exec"
	"strings"

	"github.com/google/nftables"
)

// nftables tables are captured and restored whole. Each owner keeps its own
// table (kube-proxy: ip/ip6 kube-proxy; flannel ≥ v0.25 in nftables mode:
// ip flannel-ipv4, ip6 flannel-ipv6), so, unlike iptables chains in shared
// tables, the table is the unit: missing live, it is created with everything
// in it in one atomic nft transaction; present live, it is the owner's newer
// state and is never touched.
//
// Which tables exist is read over netlink (github.com/google/nftables). The
// content is nft's own `nft --stateless list table` output, kept as it is and
// fed back to `nft -f`: it is the one form that round-trips every object
// (comments on the table, chains, sets and elements; verdict maps; anonymous
// sets). google/nftables v0.3.0 reads neither table nor chain nor set
// comments and misreads verdict-map types; knftables cannot read rule bodies;
// nft 1.0.6's JSON drops table and chain comments. Holdfast never parses the
// text: it checks its frame (validateNFTText) and compares it whole.

// NFTable is one nftables table of the snapshot.
type NFTable struct {
	// Family is ip, ip6 or inet.
	Family string `json:"family"`
	Name   string `json:"name"`
	// Text is `nft --stateless list table FAMILY NAME` output: the whole
	// table, counters left out (they start at zero after a restore).
	Text string `json:"text"`
}

// Key is "family name", as nft names the table.
func (t NFTable) Key() string { return t.Family + " " + t.Name }

// NFTSelector lists the nftables tables a snapshot holds, as "family:name".
type NFTSelector struct {
	Tables []string
}

// DefaultNFTables selects kube-proxy's and flannel's tables.
func DefaultNFTables() NFTSelector {
	return NFTSelector{Tables: []string{"ip:kube-proxy", "ip6:kube-proxy", "ip:flannel-ipv4", "ip6:flannel-ipv6"}}
}

var nftFamilies = map[string]nftables.TableFamily{
	"ip":   nftables.TableFamilyIPv4,
	"ip6":  nftables.TableFamilyIPv6,
	"inet": nftables.TableFamilyINet,
}

// plainNFTName reports whether name is what nft accepts as a table name
// without quoting: a letter or "_", then at most 255 of letters, digits and
// "_./-". It is a loop, not a regexp: the package is linked into the
// chained CNI plugin, and compiling `{0,255}` at init cost every plugin
// exec about a millisecond and 200 KB (test/imports_test.go guards it).
func plainNFTName(name string) bool {
	if name == "" || len(name) > 256 {
		return false
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		switch {
		case c >= 'A' && c <= 'Z', c >= 'a' && c <= 'z', c == '_':
		case i > 0 && (c >= '0' && c <= '9' || c == '.' || c == '/' || c == '-'):
		default:
			return false
		}
	}
	return true
}

func checkNFTTable(family, name string) error {
	if _, ok := nftFamilies[family]; !ok {
		return fmt.Errorf("nftables family %q is not ip, ip6 or inet", family)
	}
	if !plainNFTName(name) {
		return fmt.Errorf("nftables table name %q is not a plain nft identifier", name)
	}
	return nil
}

// ParseNFTSelector parses a comma-separated "family:name" list. An empty
// string selects nothing.
func ParseNFTSelector(s string) (NFTSelector, error) {
	var sel NFTSelector
	for _, item := range strings.Split(s, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		family, name, ok := strings.Cut(item, ":")
		if !ok {
			return sel, fmt.Errorf("nftables table %q: want family:name (e.g. ip:kube-proxy)", item)
		}
		if err := checkNFTTable(family, name); err != nil {
			return sel, fmt.Errorf("nftables table %q: %w", item, err)
		}
		sel.Tables = append(sel.Tables, family+":"+name)
	}
	return sel, nil
}

// validate checks the frame of a captured table: nft prints
// "table FAMILY NAME {", every inner line tab-indented, and a closing "}".
// A text that opens another table, or holds a top-level command, is refused,
// so that a restore only ever writes into the table it names.
func (t NFTable) validate() error {
	if err := checkNFTTable(t.Family, t.Name); err != nil {
		return err
	}
	lines := strings.Split(strings.TrimRight(t.Text, "\n"), "\n")
	if len(lines) < 2 || lines[0] != "table "+t.Key()+" {" || lines[len(lines)-1] != "}" {
		return fmt.Errorf("nftables table %s: text is not one `table %s { ... }` block", t.Key(), t.Key())
	}
	for i, l := range lines[1 : len(lines)-1] {
		if l != "" && !strings.HasPrefix(l, "\t") {
			return fmt.Errorf("nftables table %s: line %d %q is outside the table block", t.Key(), i+2, l)
		}
	}
	if strings.ContainsAny(t.Text, "\x00\r") {
		return fmt.Errorf("nftables table %s: text holds a NUL or CR byte", t.Key())
	}
	return nil
}

// nftCmd runs the nft tool of the current network namespace.
type nftCmd struct {
	bin string
}

// liveNFTables lists the tables of the current network namespace over
// netlink, as "family name" keys.
func liveNFTables() (map[string]bool, error) {
	c, err := nftables.New()
	if err != nil {
		return nil, fmt.Errorf("nftables: %w", err)
	}
	tables, err := c.ListTables()
	if err != nil {
		return nil, fmt.Errorf("nftables: list tables: %w", err)
	}
	live := map[string]bool{}
	for _, t := range tables {
		for f, tf := range nftFamilies {
			if t.Family == tf {
				live[f+" "+t.Name] = true
			}
		}
	}
	return live, nil
}

// selected are the selector's tables that exist live.
func (c nftCmd) selected(sel NFTSelector) ([]NFTable, error) {
	if len(sel.Tables) == 0 {
		return nil, nil
	}
	live, err := liveNFTables()
	if err != nil {
		return nil, err
	}
	var out []NFTable
	for _, item := range sel.Tables {
		family, name, _ := strings.Cut(item, ":")
		if live[family+" "+name] {
			out = append(out, NFTable{Family: family, Name: name})
		}
	}
	return out, nil
}

// dump returns the table's text as `nft --stateless list table` prints it.
func (c nftCmd) dump(ctx context.Context, family, name string) (string, error) {
	cmd := exec.CommandContext(ctx, c.bin, "--stateless", "list", "table", family, name)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if errors.Is(err, exec.ErrNotFound) || errors.Is(err, fs.ErrNotExist) {
		return "", fmt.Errorf("nftables table %s %s exists but %s is not installed: install nftables to capture it", family, name, c.bin)
	}
	if err != nil {
		return "", fmt.Errorf("%s list table %s %s: %w: %s", c.bin, family, name, err, strings.TrimSpace(stderr.String()))
	}
	return string(out), nil
}

func (c nftCmd) capture(ctx context.Context, sel NFTSelector) ([]NFTable, error) {
	tables, err := c.selected(sel)
	if err != nil {
		return nil, err
	}
	for i := range tables {
		if tables[i].Text, err = c.dump(ctx, tables[i].Family, tables[i].Name); err != nil {
			return nil, err
		}
	}
	return tables, nil
}

// live reads the snapshot's tables from the current namespace: the text of
// each one that exists; a missing one is absent from the map.
func (c nftCmd) live(ctx context.Context, want []NFTable) (map[string]string, error) {
	out := map[string]string{}
	if len(want) == 0 {
		return out, nil
	}
	live, err := liveNFTables()
	if err != nil {
		return nil, err
	}
	for _, t := range want {
		if !live[t.Key()] {
			continue
		}
		text, err := c.dump(ctx, t.Family, t.Name)
		if err != nil {
			return nil, err
		}
		out[t.Key()] = text
	}
	return out, nil
}

// apply creates the table with everything in it, in one nft transaction.
// "create table" fails when the table exists (its owner wrote it since the
// plan was made), which aborts the whole transaction: a live table is never
// merged into. The create is undone at once by "delete table" so that the
// block that follows creates the table with its own properties (comment,
// flags), which a block cannot set on a table that exists.
func (c nftCmd) apply(ctx context.Context, t NFTable) error {
	script := fmt.Sprintf("create table %s\ndelete table %s\n%s", t.Key(), t.Key(), t.Text)
	cmd := exec.CommandContext(ctx, c.bin, "-f", "-")
	cmd.Stdin = strings.NewReader(script)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("%s -f (table %s): %w: %s", c.bin, t.Key(), err, strings.TrimSpace(string(out)))
	}
	return nil
}
