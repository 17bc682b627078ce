package snapshot

import (
	"context"
	"fmt"
	"os/exec"
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
