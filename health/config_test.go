package health_test

import (
	"strings"
	"testing"
	"time"

	"github.com/holdfast-edge/holdfast/health"
	"github.com/holdfast-edge/holdfast/health/peer"
)

// TestCheckRefusesZeroSettings: a missing node name or a zero probe period
// or clock skew bound is refused with its flag's name, not replaced by a
// default.
func TestCheckRefusesZeroSettings(t *testing.T) {
	good := health.Config{NodeName: "n1", Listen: ":51005", Period: health.DefaultProbePeriod, MaxSkew: peer.DefaultMaxSkew, StateDir: t.TempDir()}
	if err := good.Check(); err != nil {
		t.Fatalf("defaults refused: %v", err)
	}
	for flag, mod := range map[string]func(*health.Config){
		"--node-name":      func(c *health.Config) { c.NodeName = "" },
		"--probe-period":   func(c *health.Config) { c.Period = 0 },
		"--max-clock-skew": func(c *health.Config) { c.MaxSkew = -time.Second },
	} {
		c := good
		mod(&c)
		if err := c.Check(); err == nil || !strings.Contains(err.Error(), flag) {
			t.Errorf("%s: got %v, want an error naming it", flag, err)
		}
		if _, err := health.New(c); err == nil || !strings.Contains(err.Error(), flag) {
			t.Errorf("New with bad %s: got %v, want an error naming it", flag, err)
		}
	}
}
