package snapshot

import (
	"encoding/binary"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// RuleCache lets a capture reuse the iptables and nftables tables the
// previous capture read, instead of exec'ing iptables-save and nft again,
// while the kernel's nftables ruleset generation is the one they were read
// at. Every committed nftables transaction bumps the generation: nft's,
// kube-proxy's, flanneld's, and iptables-nft's (iptables' nf_tables
// backend), so an unchanged generation means unchanged rules. The rules of
// iptables' legacy backend do not live in nftables and bump nothing: when
// any iptables-save run says it is not the nf_tables one, nothing is kept
// and every capture reads.
//
// One cache belongs to one capture loop (snapshot/watch's Watcher); a
// one-shot capture has none. It is safe for concurrent use. The zero value
// is an empty cache.
type RuleCache struct {
	mu    sync.Mutex
	valid bool
	key   string // the options the rules were read with
	gen   uint32
	ipt   []IPTable
	nft   []NFTable

	hits atomic.Uint64
}

// Hits returns how many captures reused the cached rules.
func (c *RuleCache) Hits() uint64 { return c.hits.Load() }

// ruleKey is what of the options decides what the rules read hold.
func ruleKey(o *CaptureOptions) string {
	return fmt.Sprintf("%q %q %q %q %q", o.NetNS, o.Chains.Globs, o.NFTables.Tables, o.IPTablesSave, o.Nft)
}

// lookup returns copies of the cached rules when they were read with the
// same options at generation gen.
func (c *RuleCache) lookup(key string, gen uint32) ([]IPTable, []NFTable, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.valid || c.key != key || c.gen != gen {
		return nil, nil, false
	}
	c.hits.Add(1)
	return cloneIPTables(c.ipt), slices.Clone(c.nft), true
}

// store keeps rules read at generation gen (read before the rules were,
// so a commit while they were read leaves the cache stale, never wrong).
func (c *RuleCache) store(key string, gen uint32, ipt []IPTable, nft []NFTable) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.valid, c.key, c.gen, c.ipt, c.nft = true, key, gen, cloneIPTables(ipt), slices.Clone(nft)
}

// Invalidate drops the cached rules: the next capture reads.
func (c *RuleCache) Invalidate() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.valid, c.ipt, c.nft = false, nil, nil
}

func cloneIPTables(in []IPTable) []IPTable {
	if in == nil {
		return nil
	}
	out := make([]IPTable, len(in))
	for i, t := range in {
		out[i] = IPTable{Table: t.Table, Chains: slices.Clone(t.Chains), Rules: slices.Clone(t.Rules)}
	}
	return out
}

// nftGeneration asks the kernel for the nftables ruleset generation of the
// current network namespace (NFT_MSG_GETGEN; google/nftables only reads
// it from monitor events).
func nftGeneration() (uint32, error) {
	conn, err := netlink.Dial(unix.NETLINK_NETFILTER, nil)
	if err != nil {
		return 0, fmt.Errorf("nftables generation: %w", err)
	}
	defer conn.Close()
	msgs, err := conn.Execute(netlink.Message{
		Header: netlink.Header{
			Type:  netlink.HeaderType(unix.NFNL_SUBSYS_NFTABLES<<8 | unix.NFT_MSG_GETGEN),
			Flags: netlink.Request,
		},
		// struct nfgenmsg: family AF_UNSPEC, version NFNETLINK_V0, res_id 0.
		Data: []byte{unix.AF_UNSPEC, unix.NFNETLINK_V0, 0, 0},
	})
	if err != nil {
		return 0, fmt.Errorf("nftables generation: %w", err)
	}
	for _, m := range msgs {
		if m.Header.Type != netlink.HeaderType(unix.NFNL_SUBSYS_NFTABLES<<8|unix.NFT_MSG_NEWGEN) || len(m.Data) < 4 {
			continue
		}
		ad, err := netlink.NewAttributeDecoder(m.Data[4:])
		if err != nil {
			return 0, fmt.Errorf("nftables generation: %w", err)
		}
		ad.ByteOrder = binary.BigEndian
		for ad.Next() {
			if ad.Type() == unix.NFTA_GEN_ID {
				return ad.Uint32(), ad.Err()
			}
		}
		if err := ad.Err(); err != nil {
			return 0, fmt.Errorf("nftables generation: %w", err)
		}
	}
	return 0, fmt.Errorf("nftables generation: the kernel's answer holds no generation id")
}
