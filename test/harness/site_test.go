package harness

import "testing"

func TestSiteIDOnlyMatchesHarnessNames(t *testing.T) {
	for name, want := range map[string]string{
		"hf-0a1b2c-node1": "0a1b2c",
		"hf-0a1b2c-lan":   "0a1b2c",
		"hf-pod-4706f426": "",
		"hf-snap-1234":    "",
		"hf-ipam-t":       "",
		"hf-0A1B2C-node1": "",
		"hf-0a1b2c":       "",
		"cni-0a1b2c-x":    "",
	} {
		got, ok := siteID(name)
		if got != want || ok != (want != "") {
			t.Errorf("siteID(%q) = %q, %v; want %q", name, got, ok, want)
		}
	}
}
