package sim

import (
	"encoding/json"
	"fmt"
	"math/rand"
	"sort"
	"time"
)

// BaselineResult is what the SuperEdge-style exchange costs at the same
// period and loss: every node probes every other node every period (HTTP)
// and sends its whole result table (JSON, one entry per node) to every other
// node every period; a node is dead at a receiver once a majority of the
// latest tables say so.
type BaselineResult struct {
	PeriodsToVerdict float64 // death to majority verdict at every live member
	BytesPerNodeSec  float64 // sent per node per second
	TableBytes       int     // one encoded result table
}

// baselineEntry mirrors SuperEdge edge-health's per-node check result.
type baselineEntry struct {
	Normal bool
	Time   time.Time
}

type baselineMessage struct {
	SourceIP    string
	CheckDetail map[string]baselineEntry
	Hmac        string
}

// HTTP probe and result POST costs besides the table: TCP/IP headers of the
// request and response segments and minimal HTTP headers.
const (
	baselineProbeBytes    = 2 * (40 + 120)
	baselineExchangeExtra = 2*40 + 200
)

// RunBaseline models the O(N²) exchange: node s's table is encoded for real
// (its size is counted honestly); its arrival at each receiver is drawn
// with the same loss and latency as the holdfast simulation; probes each
// period see the victim dead once it has died (a lost probe also reads
// "dead", as in SuperEdge).
func RunBaseline(cfg Config) (BaselineResult, error) {
	if cfg.N < 2 {
		return BaselineResult{}, fmt.Errorf("unit size %d < 2", cfg.N)
	}
	if cfg.Period <= 0 {
		cfg.Period = 2 * time.Second
	}
	if cfg.NameFormat == "" {
		cfg.NameFormat = "edge-node-%04d"
	}
	rng := rand.New(rand.NewSource(cfg.Seed))
	now := time.UnixMilli(1_750_000_000_000)
	msg := baselineMessage{SourceIP: "198.51.100.11", CheckDetail: map[string]baselineEntry{}, Hmac: "c2hhcmVkLWhtYWMtb2YtdGhlLXdob2xlLWJvZHktYmFzZTY0LWVuY29kZWQ="}
	for i := 0; i < cfg.N; i++ {
		// SuperEdge keys results by node IP; the size is the same with names.
		msg.CheckDetail[fmt.Sprintf("10.%d.%d.%d", i>>16&255, i>>8&255, i&255)] = baselineEntry{Normal: true, Time: now}
	}
	table, err := json.Marshal(msg)
	if err != nil {
		return BaselineResult{}, err
	}
	perPeriod := float64(cfg.N-1) * float64(len(table)+baselineExchangeExtra+baselineProbeBytes)
	res := BaselineResult{TableBytes: len(table), BytesPerNodeSec: perPeriod / cfg.Period.Seconds()}

	// Victim 0 dies at time 0; node s probes and sends at phase[s] + kP.
	// Its first table saying "dead" is the one after its first probe after
	// the death; receiver r holds it from arrival on. The verdict at r is
	// the time the q-th such table (its own included) has arrived.
	q := cfg.N/2 + 1
	phase := make([]time.Duration, cfg.N)
	for s := range phase {
		phase[s] = time.Duration(rng.Int63n(int64(cfg.Period)))
	}
	lat := func() time.Duration {
		d := cfg.LatencyMin
		if cfg.LatencyMax > cfg.LatencyMin {
			d += time.Duration(rng.Int63n(int64(cfg.LatencyMax - cfg.LatencyMin)))
		}
		return d
	}
	var worst time.Duration
	arr := make([]time.Duration, 0, cfg.N)
	for r := 1; r < cfg.N; r++ {
		arr = arr[:0]
		for s := 1; s < cfg.N; s++ {
			t := phase[s]
			if s == r {
				arr = append(arr, t)
				continue
			}
			for rng.Float64() < cfg.Loss { // lost table: the next period's one
				t += cfg.Period
			}
			arr = append(arr, t+lat())
		}
		sort.Slice(arr, func(i, j int) bool { return arr[i] < arr[j] })
		if len(arr) < q {
			return res, fmt.Errorf("unit of %d cannot reach a majority of %d without the victim", cfg.N, q)
		}
		if arr[q-1] > worst {
			worst = arr[q-1]
		}
	}
	res.PeriodsToVerdict = float64(worst) / float64(cfg.Period)
	return res, nil
}
