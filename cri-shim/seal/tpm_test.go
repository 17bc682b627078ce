package seal_test

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-tpm/tpm2/transport/simulator"

	"github.com/holdfast-edge/holdfast/cri-shim/seal"
)

// TestTPMSealsTheNodeKey: with a TPM 2.0 (the reference simulator from
// go-tpm-tools), the key file holds only the TPM's sealed blob; the key
// opens again through the same TPM and not through another one (a new
// simulator has new seeds, as another machine's TPM has).
func TestTPMSealsTheNodeKey(t *testing.T) {
	sim, err := simulator.OpenSimulator()
	if err != nil {
		t.Fatalf("TPM simulator: %v", err)
	}
	tpm := seal.NewTPM(sim)
	path := filepath.Join(t.TempDir(), seal.KeyFileName)
	b, err := seal.LoadOrCreate(path, tpm)
	if err != nil {
		t.Fatal(err)
	}
	if b.Method() != seal.MethodTPM {
		t.Fatalf("method %s", b.Method())
	}
	raw, _ := os.ReadFile(path)
	if strings.Contains(string(raw), `"key"`) {
		t.Fatalf("TPM-sealed key file holds the key: %s", raw)
	}
	sealed, err := b.Seal([]byte("token"), []byte("aad"))
	if err != nil {
		t.Fatal(err)
	}
	b2, err := seal.LoadOrCreate(path, tpm)
	if err != nil {
		t.Fatalf("reopen through the TPM: %v", err)
	}
	if got, err := b2.Open(sealed, []byte("aad")); err != nil || !bytes.Equal(got, []byte("token")) {
		t.Fatalf("open: %q %v", got, err)
	}
	tpm.Close()
	other, err := simulator.OpenSimulator()
	if err != nil {
		t.Fatal(err)
	}
	otherTPM := seal.NewTPM(other)
	defer otherTPM.Close()
	if _, err := seal.LoadOrCreate(path, otherTPM); err == nil {
		t.Fatal("the key file opened through another TPM")
	} else {
		t.Logf("another TPM: %v", err)
	}
}
