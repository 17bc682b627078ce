package sim

import (
	"fmt"
	"testing"
	"time"

	"github.com/holdfast-edge/holdfast/health/protocol"
)

// DeathResult is one holdfast run: a healthy unit, one member killed, time
// until every live member holds a majority "dead" verdict.
type DeathResult struct {
	PeriodsToVerdict float64
	SentBytesPerSec  float64 // per node, steady state plus the death event
	RecvBytesPerSec  float64
	PeakSentPerSec   float64 // busiest node over the measured window
}

// RunDeath runs the real protocol: warm-up, steady state, kill member 0,
// run until every other member says dead (or maxPeriods pass).
func RunDeath(cfg Config, warmup, maxPeriods int) (DeathResult, error) {
	var res DeathResult
	net, err := New(cfg)
	if err != nil {
		return res, err
	}
	if err := net.Run(time.Duration(warmup) * cfg.Period); err != nil {
		return res, err
	}
	for i := 0; i < cfg.N; i++ {
		for j := 0; j < cfg.N; j += cfg.N/7 + 1 {
			if v := net.Verdict(i, j); v != protocol.Alive {
				return res, fmt.Errorf("after warm-up %s says %s is %s", net.Name(i), net.Name(j), v)
			}
		}
	}
	sent0 := make([]int64, cfg.N)
	recv0 := make([]int64, cfg.N)
	for i := range sent0 {
		sent0[i], recv0[i] = net.Bytes(i)
	}
	start := net.Now()
	// steady state for 4 periods, then the death
	if err := net.Run(4 * cfg.Period); err != nil {
		return res, err
	}
	killAt := net.Now()
	remaining := cfg.N - 1
	var last time.Time
	seen := make([]bool, cfg.N)
	net.OnVerdict = func(at time.Time, i, j int, v protocol.State) {
		if j == 0 && v == protocol.Dead && !seen[i] {
			seen[i] = true
			remaining--
			last = at
		}
	}
	net.Kill(0)
	for p := 0; p < maxPeriods*8 && remaining > 0; p++ {
		if err := net.Run(cfg.Period / 8); err != nil {
			return res, err
		}
	}
	if remaining > 0 {
		return res, fmt.Errorf("%d members still lack a dead verdict after %d periods", remaining, maxPeriods)
	}
	if err := net.Run(cfg.Period); err != nil { // include the event's tail
		return res, err
	}
	secs := net.Now().Sub(start).Seconds()
	var sent, recv int64
	for i := 1; i < cfg.N; i++ {
		s, r := net.Bytes(i)
		s -= sent0[i]
		r -= recv0[i]
		sent += s
		recv += r
		if float64(s)/secs > res.PeakSentPerSec {
			res.PeakSentPerSec = float64(s) / secs
		}
	}
	res.PeriodsToVerdict = float64(last.Sub(killAt)) / float64(cfg.Period)
	res.SentBytesPerSec = float64(sent) / float64(cfg.N-1) / secs
	res.RecvBytesPerSec = float64(recv) / float64(cfg.N-1) / secs
	return res, nil
}

func benchCfg(n int, seed int64) Config {
	return Config{N: n, Period: 2 * time.Second, Loss: 0.01, LatencyMin: time.Millisecond, LatencyMax: 20 * time.Millisecond, Seed: seed, Unit: "factory-a"}
}

// BenchmarkDeathToVerdict: units of 10, 100 and 1,000 members, 2 s period,
// 1% datagram loss, 1–20 ms latency. holdfast runs the real engines;
// superedge is the O(N²) full-table exchange at the same period and loss.
// Metrics: periods from death to a majority "dead" verdict at every live
// member, and bytes per node per second (datagram headers included).
func BenchmarkDeathToVerdict(b *testing.B) {
	for _, n := range []int{10, 100, 1000} {
		b.Run(fmt.Sprintf("holdfast/members=%d", n), func(b *testing.B) {
			var worst, sent, recv, peak float64
			for i := 0; i < b.N; i++ {
				r, err := RunDeath(benchCfg(n, int64(i+1)), 4, 10)
				if err != nil {
					b.Fatal(err)
				}
				if r.PeriodsToVerdict > worst {
					worst = r.PeriodsToVerdict
				}
				sent += r.SentBytesPerSec
				recv += r.RecvBytesPerSec
				if r.PeakSentPerSec > peak {
					peak = r.PeakSentPerSec
				}
			}
			b.ReportMetric(worst, "periods-to-verdict")
			b.ReportMetric(sent/float64(b.N), "sent-B/node/s")
			b.ReportMetric(recv/float64(b.N), "recv-B/node/s")
			b.ReportMetric(peak, "peak-sent-B/node/s")
		})
		b.Run(fmt.Sprintf("superedge/members=%d", n), func(b *testing.B) {
			var worst, sent float64
			for i := 0; i < b.N; i++ {
				r, err := RunBaseline(benchCfg(n, int64(i+1)))
				if err != nil {
					b.Fatal(err)
				}
				if r.PeriodsToVerdict > worst {
					worst = r.PeriodsToVerdict
				}
				sent += r.BytesPerNodeSec
			}
			b.ReportMetric(worst, "periods-to-verdict")
			b.ReportMetric(sent/float64(b.N), "sent-B/node/s")
		})
	}
}

// TestBandwidthGoal100: the bandwidth and detection goals hold at 100
// members (the 1,000-member run is the benchmark; it takes ~1 min).
func TestBandwidthGoal100(t *testing.T) {
	r, err := RunDeath(benchCfg(100, 7), 4, 10)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("100 members: %.2f periods to verdict, %.0f B/node/s sent, %.0f received", r.PeriodsToVerdict, r.SentBytesPerSec, r.RecvBytesPerSec)
	if r.PeriodsToVerdict > 3 {
		t.Fatalf("%.2f periods to verdict, goal ≤ 3", r.PeriodsToVerdict)
	}
	if r.SentBytesPerSec > 100_000 || r.RecvBytesPerSec > 100_000 {
		t.Fatalf("bandwidth %.0f/%.0f B/s exceeds 100 KB/s", r.SentBytesPerSec, r.RecvBytesPerSec)
	}
}
