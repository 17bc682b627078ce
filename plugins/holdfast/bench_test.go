package main

import (
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/plugins/pkg/ns"

	"github.com/holdfast-edge/holdfast/test/harness"
)

// BenchmarkCNIAddDel measures one pod's ADD+DEL through libcni with the
// real plugins, for holdfast's chain (bridge+holdfast-ipam → holdfast →
// portmap) and the baseline (bridge+host-local → portmap), sequentially and
// with 32 pods in parallel, in the same run. p50-ms and p99-ms are the
// latency percentiles of one ADD+DEL; ns/op is wall time per ADD+DEL.
// The floor chain is the baseline with a do-nothing chained Go plugin
// (testdata/noop) after bridge: what one more exec on ADD and on DEL
// costs before any work is done (docs/cni.md, "What costs what").
func BenchmarkCNIAddDel(b *testing.B) {
	if err := harness.BuildTestPlugin(pluginDir, "noop", "./plugins/holdfast/testdata/noop"); err != nil {
		b.Fatal(err)
	}
	p50 := map[string]float64{}
	for _, mode := range []struct {
		name string
		par  int
	}{{"seq", 1}, {"par32", 32}} {
		for _, chain := range []string{"holdfast", "host-local", "floor"} {
			b.Run(chain+"/"+mode.name, func(b *testing.B) {
				e := newCNIEnv(b)
				var list *libcni.NetworkConfigList
				switch chain {
				case "holdfast":
					list = e.holdfastList(b, "1.1.0", "")
				case "host-local":
					list = e.hostLocalList(b, "1.1.0")
				default:
					list = e.floorList(b, "1.1.0")
				}
				pods := make([]ns.NetNS, mode.par)
				for i := range pods {
					pods[i] = newNetns(b, "bench")
				}
				var (
					mu   sync.Mutex
					lat  []time.Duration
					next atomic.Int64
					iter atomic.Int64
				)
				cycle := func(slot int) {
					n := iter.Add(1)
					rt := rtConf(fmt.Sprintf("bench-%d-%d", slot, n), pods[slot], fmt.Sprintf("bench-%d", slot))
					start := time.Now()
					e.add(b, list, rt)
					e.del(b, list, rt)
					d := time.Since(start)
					mu.Lock()
					lat = append(lat, d)
					mu.Unlock()
				}
				b.ResetTimer()
				if mode.par == 1 {
					for range b.N {
						cycle(0)
					}
				} else {
					b.SetParallelism((mode.par + 1) / 2) // 2 cores here: ×GOMAXPROCS goroutines
					b.RunParallel(func(pb *testing.PB) {
						slot := int(next.Add(1)-1) % mode.par
						for pb.Next() {
							cycle(slot)
						}
					})
				}
				b.StopTimer()
				slices.Sort(lat)
				q := func(p float64) float64 {
					return float64(lat[min(len(lat)-1, int(p*float64(len(lat))))].Microseconds()) / 1000
				}
				b.ReportMetric(q(0.50), "p50-ms")
				b.ReportMetric(q(0.99), "p99-ms")
				p50[chain+"/"+mode.name] = q(0.50)
			})
		}
		if h, base := p50["holdfast/"+mode.name], p50["host-local/"+mode.name]; base > 0 {
			b.Logf("%s: p50 holdfast %.2f ms vs host-local %.2f ms: ratio %.3f, +%.2f ms (goal ≤1.10 and ≤+5 ms)", mode.name, h, base, h/base, h-base)
			f := p50["floor/"+mode.name]
			b.Logf("%s: p50 floor (host-local + do-nothing chained plugin) %.2f ms: ratio %.3f, +%.2f ms over host-local", mode.name, f, f/base, f-base)
		}
	}
}
