package webhook

import (
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

// The rendered Deployment probes GET /healthz on the TLS port; the handler
// must answer it, and still refuse what is not an AdmissionReview.
func TestHandlerHealthzAndGarbage(t *testing.T) {
	h := Handler(&Mutator{}, slog.New(slog.NewTextHandler(io.Discard, nil)), prometheus.NewRegistry())
	srv := httptest.NewServer(h)
	defer srv.Close()
	resp, err := http.Get(srv.URL + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /healthz: %s", resp.Status)
	}
	resp, err = http.Post(srv.URL+"/mutate", "application/json", strings.NewReader("{not json"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("POST /mutate garbage: %s, want 400", resp.Status)
	}
}
