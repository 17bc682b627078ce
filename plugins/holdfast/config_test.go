package main

import "testing"

// TestParsePrevResultVersions: a prevResult is read in the config's spec
// version, whether it names its own cniVersion or (before 1.0.0 it may
// omit it) not, and comes out as the current result type with its
// interfaces and addresses.
func TestParsePrevResultVersions(t *testing.T) {
	for _, c := range []struct{ version, raw string }{
		{"1.1.0", `{"cniVersion":"1.1.0","interfaces":[{"name":"eth0","sandbox":"/x"}],"ips":[{"address":"10.244.1.9/24","interface":0}]}`},
		{"0.4.0", `{"cniVersion":"0.4.0","interfaces":[{"name":"eth0","sandbox":"/x"}],"ips":[{"version":"4","address":"10.244.1.9/24","interface":0}]}`},
		{"0.4.0", `{"interfaces":[{"name":"eth0","sandbox":"/x"}],"ips":[{"version":"4","address":"10.244.1.9/24","interface":0}]}`},
		{"0.3.1", `{"interfaces":[{"name":"eth0","sandbox":"/x"}],"ips":[{"version":"4","address":"10.244.1.9/24","interface":0}]}`},
	} {
		res, err := parsePrevResult(c.version, []byte(c.raw))
		if err != nil {
			t.Fatalf("%s %s: %v", c.version, c.raw, err)
		}
		if len(res.Interfaces) != 1 || res.Interfaces[0].Sandbox != "/x" || len(res.IPs) != 1 || res.IPs[0].Address.String() != "10.244.1.9/24" {
			t.Fatalf("%s %s: got %+v", c.version, c.raw, res)
		}
	}
}
