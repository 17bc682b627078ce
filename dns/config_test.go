package dns_test

import (
	"log/slog"
	"strings"
	"testing"
	"time"

	hdns "github.com/holdfast-edge/holdfast/dns"
	"github.com/holdfast-edge/holdfast/dns/forward"
	"github.com/holdfast-edge/holdfast/dns/resolve"
	"github.com/holdfast-edge/holdfast/dns/verdicts"
	"github.com/holdfast-edge/holdfast/health"
)

func goodConfig() hdns.Config {
	return hdns.Config{Listen: hdns.DefaultListen, Zone: hdns.DefaultZone, StateDir: "/nonexistent", Upstream: "198.51.100.53",
		VerdictURL: health.DefaultLocalVerdictsURL, VerdictInterval: verdicts.DefaultInterval, VerdictMaxAge: verdicts.DefaultMaxAge,
		EndpointMode: "off", StaleTTL: forward.DefaultStaleTTL, TTL: resolve.DefaultTTL, Log: slog.New(slog.DiscardHandler)}
}

// TestNewRefusesBadConfig: every bad setting is refused by New, before
// anything is opened, with an error naming its flag.
func TestNewRefusesBadConfig(t *testing.T) {
	if _, err := hdns.New(goodConfig()); err != nil {
		t.Fatalf("good config refused: %v", err)
	}
	for _, c := range []struct {
		flag string
		mod  func(*hdns.Config)
	}{
		{"--verdict-interval", func(c *hdns.Config) { c.VerdictInterval = 0 }},
		{"--verdict-interval", func(c *hdns.Config) { c.VerdictInterval = -time.Second }},
		{"--verdict-max-age", func(c *hdns.Config) { c.VerdictMaxAge = 0 }},
		{"--stale-ttl", func(c *hdns.Config) { c.StaleTTL = -time.Second }},
		{"--stale-ttl", func(c *hdns.Config) { c.StaleTTL = 0 }},
		{"--ttl", func(c *hdns.Config) { c.TTL = 0 }},
		{"--ttl", func(c *hdns.Config) { c.TTL = 3601 }},
		{"--listen", func(c *hdns.Config) { c.Listen = "nohost" }},
		{"--listen", func(c *hdns.Config) { c.Listen = "name:53" }},
		{"--endpoint-mode", func(c *hdns.Config) { c.EndpointMode = "sometimes" }},
		{"--cluster-domain", func(c *hdns.Config) { c.Zone = ".." }},
		{"--upstream", func(c *hdns.Config) { c.Upstream = "not an ip" }},
	} {
		cfg := goodConfig()
		c.mod(&cfg)
		_, err := hdns.New(cfg)
		if err == nil || !strings.Contains(err.Error(), c.flag) {
			t.Errorf("%s: New = %v, want an error naming %s", c.flag, err, c.flag)
		}
	}
}
