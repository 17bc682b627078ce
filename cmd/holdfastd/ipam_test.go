package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/holdfast-edge/holdfast/plugins/holdfast/attachment"
)

// TestLoadAttachmentsSkipsUnreadable: an empty record (what a power loss
// can leave, records are not fsynced) is named on the warning writer and
// skipped; the readable ones are still listed.
func TestLoadAttachmentsSkipsUnreadable(t *testing.T) {
	dir := t.TempDir()
	good, err := attachment.Path(dir, "cbr0", "abc", "eth0")
	if err != nil {
		t.Fatal(err)
	}
	if err := attachment.Save(good, &attachment.Attachment{Network: "cbr0", ContainerID: "abc", IfName: "eth0", IPs: []string{"10.244.1.2/24"}}); err != nil {
		t.Fatal(err)
	}
	empty := filepath.Join(dir, "cbr0", "def_eth0.json")
	if err := os.WriteFile(empty, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	var warn bytes.Buffer
	atts, err := loadAttachments(dir, "", &warn)
	if err != nil {
		t.Fatal(err)
	}
	if len(atts) != 1 || atts[0].ContainerID != "abc" {
		t.Fatalf("got %+v, want the one readable record", atts)
	}
	if !strings.Contains(warn.String(), empty) {
		t.Fatalf("warning %q does not name %s", warn.String(), empty)
	}
}
