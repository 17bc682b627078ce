package dns_test

import (
	"context"
	"net"
	"testing"
	"time"

	hdns "github.com/holdfast-edge/holdfast/dns"
	"github.com/holdfast-edge/holdfast/test/harness"
)

// TestHealthyWhileAnswering: Healthy (what holdfastd agent's /healthz
// asks) is an error before Run answers and after it returned, nil between.
func TestHealthyWhileAnswering(t *testing.T) {
	cfg := goodConfig()
	cfg.StateDir, cfg.Interface, cfg.VerdictURL, cfg.Kubeconfig = t.TempDir(), "", "", "/nonexistent"
	u, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	cfg.Listen = u.LocalAddr().String()
	u.Close()
	d, err := hdns.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if d.Healthy() == nil {
		t.Fatal("healthy before Run")
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	if err := harness.Eventually(5*time.Second, d.Healthy); err != nil {
		cancel()
		t.Fatalf("%v (Run: %v)", err, <-done)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if d.Healthy() == nil {
		t.Fatal("healthy after Run returned")
	}
}
