package snapshot

import (
	"errors"
	"fmt"
	"strings"
	"syscall"

	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"
)

// nfacct objects are named packet counters that iptables rules reference
// with "-m nfacct --nfacct-name X" (kube-proxy ≥ 1.29 counts dropped INVALID
// packets that way). They live in the netns, not in iptables, so a reboot
// wipes them and iptables-restore then refuses the rule that names one.
// Restore creates the missing ones first, over nfnetlink, as kube-proxy does.

const (
	nfnlMsgAcctNew = 0 // NFNL_MSG_ACCT_NEW
	nfacctName     = 1 // NFACCT_NAME
	nfacctNameMax  = 32
)

// nfacctNames lists the counters that rules reference.
func nfacctNames(rules []string) []string {
	seen := map[string]bool{}
	var names []string
	for _, r := range rules {
		f := strings.Fields(r)
		for i := 0; i+1 < len(f); i++ {
			if f[i] == "--nfacct-name" && !seen[f[i+1]] {
				seen[f[i+1]] = true
				names = append(names, strings.Trim(f[i+1], `"`))
			}
		}
	}
	return names
}

// ensureNfacct creates the named counters in the current netns; one that
// exists already is fine.
func ensureNfacct(names []string) error {
	for _, name := range names {
		if len(name) == 0 || len(name) >= nfacctNameMax {
			return fmt.Errorf("nfacct name %q: want 1..%d bytes", name, nfacctNameMax-1)
		}
		req := nl.NewNetlinkRequest(unix.NFNL_SUBSYS_ACCT<<8|nfnlMsgAcctNew, unix.NLM_F_CREATE|unix.NLM_F_ACK)
		req.AddData(&nl.Nfgenmsg{NfgenFamily: unix.AF_UNSPEC, Version: unix.NFNETLINK_V0})
		req.AddData(nl.NewRtAttr(nfacctName, nl.ZeroTerminated(name)))
		_, err := req.Execute(unix.NETLINK_NETFILTER, 0)
		if err != nil && !errors.Is(err, syscall.EBUSY) && !errors.Is(err, syscall.EEXIST) {
			return fmt.Errorf("create nfacct counter %q: %w", name, err)
		}
	}
	return nil
}
