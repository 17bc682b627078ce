package health_test

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/holdfast-edge/holdfast/test/harness"
)

// TestHealthzChecksConfigHealthy: /healthz on the health port also
// reports Config.Healthy (holdfastd agent puts the DNS daemon's there).
func TestHealthzChecksConfigHealthy(t *testing.T) {
	n := newUDPNode(t, "a")
	var other atomic.Pointer[error]
	n.cfg.Healthy = func() error {
		if p := other.Load(); p != nil {
			return *p
		}
		return nil
	}
	n.start(t, n)
	healthz := func(want int) error {
		resp, err := http.Get("http://" + n.m.Address + "/healthz")
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != want {
			return fmt.Errorf("/healthz %d %q, want %d", resp.StatusCode, b, want)
		}
		if want != http.StatusOK && !strings.Contains(string(b), "dns down") {
			return fmt.Errorf("/healthz says %q, not the other component's error", b)
		}
		return nil
	}
	if err := harness.Eventually(5*time.Second, func() error { return healthz(http.StatusOK) }); err != nil {
		t.Fatal(err)
	}
	down := errors.New("dns down")
	other.Store(&down)
	if err := healthz(http.StatusServiceUnavailable); err != nil {
		t.Fatal(err)
	}
	other.Store(nil)
	if err := healthz(http.StatusOK); err != nil {
		t.Fatal(err)
	}
}
