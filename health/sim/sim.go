// Package sim runs whole health units in one process: N real peer.Engines
// (real encoding, real Ed25519 signatures) exchanging datagrams over a
// simulated lossy network on a virtual clock. Tests use it to check the
// protocol's behaviour (death, recovery, partitions) and the benchmarks use
// it to measure time-to-verdict and bytes per node per second, next to the
// SuperEdge-style O(N²) exchange as the baseline.
//
// Two shortcuts keep a 1,000-member unit (10⁶ deliveries per period)
// affordable on a laptop, both documented in docs/health.md: every message is
// delivered as the same byte slice to all its receivers, and signature
// checks go through a CachingVerifier shared by all simulated nodes (each
// distinct message is verified once with crypto/ed25519; the cache is keyed
// by public key, message and signature, so a forged message never hits it).
//
// It never opens sockets or files.
package sim

import (
	"container/heap"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"math/rand"
	"time"

	"github.com/holdfast-edge/holdfast/health/members"
	"github.com/holdfast-edge/holdfast/health/peer"
	"github.com/holdfast-edge/holdfast/health/protocol"
)

// HeaderBytes is what one datagram costs on the wire besides its payload
// (IPv4 20 + UDP 8).
const HeaderBytes = 28

// CachingVerifier remembers verification results by (key, message, signature).
type CachingVerifier struct {
	m map[[32]byte]bool
}

func (c *CachingVerifier) Verify(pub ed25519.PublicKey, msg, sig []byte) bool {
	h := sha256.New()
	h.Write(pub)
	h.Write(msg)
	h.Write(sig)
	var k [32]byte
	h.Sum(k[:0])
	if ok, hit := c.m[k]; hit {
		return ok
	}
	if c.m == nil || len(c.m) > 1<<17 {
		c.m = map[[32]byte]bool{}
	}
	ok := protocol.Ed25519Verifier{}.Verify(pub, msg, sig)
	c.m[k] = ok
	return ok
}

// Config describes a simulated unit.
type Config struct {
	N              int
	Period         time.Duration
	Loss           float64 // probability each datagram to each receiver is lost
	LatencyMin     time.Duration
	LatencyMax     time.Duration
	TicksPerPeriod int
	Seed           int64
	// NameFormat formats member names; default "edge-node-%04d".
	NameFormat string
	Unit       string
	// Skew gives node i's clock offset (nil: none).
	Skew func(i int) time.Duration
}

type node struct {
	name   string
	key    ed25519.PrivateKey
	eng    *peer.Engine
	up     bool
	epoch  uint32
	offset time.Duration // tick phase
	group  int
	gen    int

	sentBytes, recvBytes int64
	rejects              map[protocol.Reason]int
}

type event struct {
	at   time.Time
	kind int // 0 tick, 1 delivery
	node int
	data []byte
	seq  int
	gen  int
}

type queue []*event

func (q queue) Len() int { return len(q) }
func (q queue) Less(i, j int) bool {
	if !q[i].at.Equal(q[j].at) {
		return q[i].at.Before(q[j].at)
	}
	return q[i].seq < q[j].seq
}
func (q queue) Swap(i, j int) { q[i], q[j] = q[j], q[i] }
func (q *queue) Push(x any)   { *q = append(*q, x.(*event)) }
func (q *queue) Pop() any {
	old := *q
	e := old[len(old)-1]
	*q = old[:len(old)-1]
	return e
}

// Network is a simulated unit.
type Network struct {
	cfg     Config
	rng     *rand.Rand
	nodes   []*node
	members []members.Member
	now     time.Time
	start   time.Time
	q       queue
	seq     int
	ver     *CachingVerifier
	// OnVerdict, when set, is called whenever node i's verdict on member j changes.
	OnVerdict func(at time.Time, i, j int, v protocol.State)
	// Partitioned, when set, drops datagrams between different groups.
	partitioned bool
	Messages    int64
}

// New builds a unit of cfg.N members with fresh keys. Nodes start with
// random tick phases within the first period.
func New(cfg Config) (*Network, error) {
	if cfg.N < 1 {
		return nil, fmt.Errorf("unit size %d < 1", cfg.N)
	}
	if cfg.Period <= 0 {
		cfg.Period = 2 * time.Second
	}
	if cfg.TicksPerPeriod <= 0 {
		cfg.TicksPerPeriod = 8
	}
	if cfg.LatencyMax < cfg.LatencyMin {
		cfg.LatencyMax = cfg.LatencyMin
	}
	if cfg.NameFormat == "" {
		cfg.NameFormat = "edge-node-%04d"
	}
	n := &Network{cfg: cfg, rng: rand.New(rand.NewSource(cfg.Seed)), ver: &CachingVerifier{}}
	n.start = time.UnixMilli(1_750_000_000_000)
	n.now = n.start
	for i := 0; i < cfg.N; i++ {
		seed := make([]byte, ed25519.SeedSize)
		n.rng.Read(seed)
		key := ed25519.NewKeyFromSeed(seed)
		name := fmt.Sprintf(cfg.NameFormat, i)
		n.nodes = append(n.nodes, &node{name: name, key: key, rejects: map[protocol.Reason]int{}})
		n.members = append(n.members, members.Member{Name: name, Address: "sim", Unit: cfg.Unit, PublicKey: base64.StdEncoding.EncodeToString(key.Public().(ed25519.PublicKey))})
	}
	// members.Unit sorts by name; NameFormat keeps index order == name order.
	unit, _, err := members.Unit(n.members, n.nodes[0].name)
	if err != nil {
		return nil, err
	}
	for i, m := range unit {
		if m.Name != n.nodes[i].name {
			return nil, fmt.Errorf("name format %q does not sort in index order", cfg.NameFormat)
		}
	}
	for i := range n.nodes {
		if err := n.Start(i); err != nil {
			return nil, err
		}
	}
	return n, nil
}

// Name returns member i's name.
func (n *Network) Name(i int) string { return n.nodes[i].name }

// Key returns member i's private key.
func (n *Network) Key(i int) ed25519.PrivateKey { return n.nodes[i].key }

// Engine returns member i's engine (nil when down).
func (n *Network) Engine(i int) *peer.Engine {
	if !n.nodes[i].up {
		return nil
	}
	return n.nodes[i].eng
}

// Now is the virtual time.
func (n *Network) Now() time.Time { return n.now }

// Elapsed is virtual time since the start.
func (n *Network) Elapsed() time.Duration { return n.now.Sub(n.start) }

func (n *Network) clock(i int) time.Time {
	if n.cfg.Skew == nil {
		return n.now
	}
	return n.now.Add(n.cfg.Skew(i))
}

// Start (re)starts member i's daemon with a new epoch, as after a restart.
func (n *Network) Start(i int) error {
	nd := n.nodes[i]
	nd.epoch++
	eng, err := peer.New(peer.Config{Self: nd.name, Unit: n.cfg.Unit, Members: n.members, Key: nd.key, Period: n.cfg.Period, MaxSkew: peer.DefaultMaxSkew, Epoch: nd.epoch, Verifier: n.ver, Start: n.clock(i)})
	if err != nil {
		return err
	}
	nd.eng, nd.up = eng, true
	nd.gen++
	step := n.cfg.Period / time.Duration(n.cfg.TicksPerPeriod)
	nd.offset = time.Duration(n.rng.Int63n(int64(step)))
	n.push(&event{at: n.now.Add(nd.offset), kind: 0, node: i, gen: nd.gen})
	return nil
}

// Kill stops member i: it no longer ticks, sends or receives.
func (n *Network) Kill(i int) { n.nodes[i].up = false }

// Partition puts members into groups (group[i]); datagrams cross no group
// boundary. Heal removes it.
func (n *Network) Partition(group func(i int) int) {
	for i, nd := range n.nodes {
		nd.group = group(i)
	}
	n.partitioned = true
}

// Heal ends a partition.
func (n *Network) Heal() { n.partitioned = false }

func (n *Network) push(e *event) {
	n.seq++
	e.seq = n.seq
	heap.Push(&n.q, e)
}

// Inject delivers raw bytes to member to at the current time, as if sent by
// an attacker, and returns the engine's verdict on them.
func (n *Network) Inject(to int, data []byte) error {
	nd := n.nodes[to]
	_, err := nd.eng.Receive(n.clock(to), data)
	if r := protocol.ReasonOf(err); r != "" {
		nd.rejects[r]++
	}
	return err
}

// Rejects returns member i's rejection counts.
func (n *Network) Rejects(i int) map[protocol.Reason]int { return n.nodes[i].rejects }

// Bytes returns the bytes member i sent and received, datagram headers included.
func (n *Network) Bytes(i int) (sent, recv int64) { return n.nodes[i].sentBytes, n.nodes[i].recvBytes }

// Run advances virtual time by d.
func (n *Network) Run(d time.Duration) error {
	end := n.now.Add(d)
	step := n.cfg.Period / time.Duration(n.cfg.TicksPerPeriod)
	for n.q.Len() > 0 && !n.q[0].at.After(end) {
		e := heap.Pop(&n.q).(*event)
		n.now = e.at
		nd := n.nodes[e.node]
		switch e.kind {
		case 0:
			if !nd.up || e.gen != nd.gen {
				continue // the tick chain of a killed or restarted node ends; Start begins a new one
			}
			msg, changed, err := nd.eng.Tick(n.clock(e.node))
			if err != nil {
				return fmt.Errorf("%s: tick: %w", nd.name, err)
			}
			if n.OnVerdict != nil {
				for _, j := range changed {
					n.OnVerdict(n.now, e.node, j, nd.eng.Verdict(j))
				}
			}
			if msg != nil {
				lat := n.cfg.LatencyMin
				if n.cfg.LatencyMax > n.cfg.LatencyMin {
					lat += time.Duration(n.rng.Int63n(int64(n.cfg.LatencyMax - n.cfg.LatencyMin)))
				}
				nd.sentBytes += int64(len(msg)+HeaderBytes) * int64(len(n.nodes)-1)
				n.Messages++
				n.push(&event{at: n.now.Add(lat), kind: 1, node: e.node, data: msg})
			}
			n.push(&event{at: n.now.Add(step), kind: 0, node: e.node, gen: e.gen})
		case 1:
			for j, to := range n.nodes {
				if j == e.node || !to.up {
					continue
				}
				if n.partitioned && to.group != nd.group {
					continue
				}
				if n.cfg.Loss > 0 && n.rng.Float64() < n.cfg.Loss {
					continue
				}
				to.recvBytes += int64(len(e.data) + HeaderBytes)
				if _, err := to.eng.Receive(n.clock(j), e.data); err != nil {
					to.rejects[protocol.ReasonOf(err)]++
				}
			}
		}
	}
	n.now = end
	return nil
}

// Verdict returns member i's verdict on member j.
func (n *Network) Verdict(i, j int) protocol.State { return n.nodes[i].eng.Verdict(j) }
