package harness

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
)

// DialIn returns a dialer whose sockets are created inside the netns at
// nsPath (on a thread switched into it); the connection is then used from
// any thread. Test clients of a node's or the cloud's servers use it.
func DialIn(nsPath string) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		var conn net.Conn
		err := ns.WithNetNSPath(nsPath, func(ns.NetNS) error {
			d := net.Dialer{Timeout: 5 * time.Second, KeepAlive: 15 * time.Second}
			var err error
			conn, err = d.DialContext(ctx, network, addr)
			return err
		})
		return conn, err
	}
}

// GetIn GETs url from inside the netns at nsPath and returns the body of a
// 200 answer (any other status is an error holding the body).
func GetIn(ctx context.Context, nsPath, url string) ([]byte, error) {
	hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DialContext: DialIn(nsPath), DisableKeepAlives: true}}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return b, fmt.Errorf("GET %s: %s: %s", url, resp.Status, b)
	}
	return b, nil
}
