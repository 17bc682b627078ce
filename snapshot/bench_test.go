package snapshot

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"syscall"
	"testing"
	"time"
)

// benchNS builds a namespace whose flannel.1 has peers entries and returns
// it with the snapshot of that state (no iptables, no subnet.env: the
// baseline tools apply only netlink entries).
func benchNS(b *testing.B, peers int) (*testNS, *Snapshot) {
	n := newTestNS(b)
	n.buildOverlay(b, peers, "0e:aa:bb:cc:dd:02")
	s, err := Capture(context.Background(), CaptureOptions{NodeName: "node2", NetNS: n.path, Devices: []string{"flannel.1"}})
	if err != nil {
		b.Fatal(err)
	}
	s.Devices[0].PinnedMAC = s.Devices[0].MAC
	if got := len(s.Devices[0].Routes); got != peers {
		b.Fatalf("captured %d routes, want %d", got, peers)
	}
	return n, s
}

func (n *testNS) delDevice(b *testing.B) {
	b.StopTimer()
	exec.Command("ip", "-n", n.name, "link", "del", "flannel.1").Run()
	b.StartTimer()
}

// BenchmarkRestore restores flannel.1 with its address and <peers> routes,
// FDB and neighbour entries into an empty namespace: holdfast (plan and
// netlink) against ip -batch + bridge -batch applying the same entries.
func BenchmarkRestore(b *testing.B) {
	for _, peers := range []int{10, 100, 1000} {
		n, s := benchNS(b, peers)
		ipb, bb := overlayBatch(peers, "0e:aa:bb:cc:dd:02")
		b.Run(fmt.Sprintf("holdfast/peers=%d", peers), func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				n.delDevice(b)
				rep, err := RestoreSnapshot(context.Background(), s, RestoreOptions{NodeName: "node2", NetNS: n.path})
				if err != nil {
					b.Fatal(err)
				}
				if want := 2 + 3*peers; rep.Added != want {
					b.Fatalf("added %d, want %d", rep.Added, want)
				}
			}
		})
		b.Run(fmt.Sprintf("ipbatch/peers=%d", peers), func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				n.delDevice(b)
				n.run(b, ipb, "ip", "-batch", "-")
				n.run(b, bb, "bridge", "-batch", "-")
			}
		})
	}
}

// BenchmarkCapture reads flannel.1 and its entries: holdfast (netlink
// dumps) against ip -j -batch + bridge -j fdb show reading the same.
func BenchmarkCapture(b *testing.B) {
	for _, peers := range []int{10, 100, 1000} {
		n, _ := benchNS(b, peers)
		opts := CaptureOptions{NodeName: "node2", NetNS: n.path, Devices: []string{"flannel.1"}, Now: time.Now}
		show := "link show flannel.1\naddr show dev flannel.1\nroute show dev flannel.1\nneigh show dev flannel.1 nud permanent\n"
		b.Run(fmt.Sprintf("holdfast/peers=%d", peers), func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				s, err := Capture(context.Background(), opts)
				if err != nil {
					b.Fatal(err)
				}
				if len(s.Devices[0].FDB) != peers {
					b.Fatalf("fdb %d", len(s.Devices[0].FDB))
				}
			}
		})
		b.Run(fmt.Sprintf("ipbatch/peers=%d", peers), func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				n.run(b, show, "ip", "-d", "-j", "-batch", "-")
				n.run(b, "", "bridge", "-j", "fdb", "show", "dev", "flannel.1")
			}
		})
	}
}

// BenchmarkCaptureRules is snapshot watch's capture with the default
// chains and nftables tables (iptables' nf_tables backend, kube-proxy-style
// rules, flanneld's nftables table, flannel.1 with 10 peers): "miss" reads
// the rules (iptables-save twice, nft once), as every capture did before the
// RuleCache; "hit" finds the nftables ruleset generation unchanged and keeps
// the last capture's rules. child-cpu-us/op is the CPU time of the tools
// run (RUSAGE_CHILDREN), which ns/op and allocs/op do not show.
func BenchmarkCaptureRules(b *testing.B) {
	n, _ := benchNS(b, 10)
	n.run(b, testRules, "iptables-nft-restore", "--noflush")
	flannel, err := os.ReadFile("testdata/flannel.nft")
	if err != nil {
		b.Fatal(err)
	}
	n.run(b, string(flannel), "nft", "-f", "-")
	opts := CaptureOptions{NodeName: "node2", NetNS: n.path, Devices: []string{"flannel.1"}, Chains: DefaultChains(), NFTables: DefaultNFTables(), IPTablesSave: "iptables-nft-save"}
	for _, hit := range []bool{false, true} {
		name := "miss"
		if hit {
			name = "hit"
		}
		b.Run(name, func(b *testing.B) {
			cache := &RuleCache{}
			o := opts
			o.Rules = cache
			b.ReportAllocs()
			before := childCPU(b)
			for b.Loop() {
				if !hit {
					cache.Invalidate()
				}
				s, err := Capture(context.Background(), o)
				if err != nil {
					b.Fatal(err)
				}
				if len(s.IPTables) != 2 || len(s.NFTables) != 1 {
					b.Fatalf("captured %d iptables tables, %d nftables tables", len(s.IPTables), len(s.NFTables))
				}
			}
			b.ReportMetric(float64((childCPU(b)-before).Microseconds())/float64(b.N), "child-cpu-us/op")
			if hit && cache.Hits() == 0 {
				b.Fatal("no capture kept the cached rules")
			}
		})
	}
}

// childCPU is the user+system CPU time of the waited-for children so far.
func childCPU(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_CHILDREN, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
