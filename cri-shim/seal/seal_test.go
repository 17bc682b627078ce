package seal_test

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/holdfast-edge/holdfast/cri-shim/seal"
)

func TestSealOpen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state", seal.KeyFileName)
	b, err := seal.LoadOrCreate(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if b.Method() != seal.MethodFile {
		t.Fatalf("method %s", b.Method())
	}
	st, err := os.Stat(path)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("key file mode %v (%v), want 0600", st.Mode().Perm(), err)
	}
	if dst, _ := os.Stat(filepath.Dir(path)); dst.Mode().Perm() != 0o700 {
		t.Fatalf("key dir mode %v, want 0700", dst.Mode().Perm())
	}
	sealed, err := b.Seal([]byte("s3cret"), []byte("pod/vol"))
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(sealed, []byte("s3cret")) {
		t.Fatal("sealed data holds the plaintext")
	}
	again, _ := b.Seal([]byte("s3cret"), []byte("pod/vol"))
	if bytes.Equal(sealed, again) {
		t.Fatal("two seals of the same data are equal (nonce reused)")
	}
	// The same key after a restart.
	b2, err := seal.LoadOrCreate(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := b2.Open(sealed, []byte("pod/vol")); err != nil || string(got) != "s3cret" {
		t.Fatalf("open after reload: %q %v", got, err)
	}
	if _, err := b2.Open(sealed, []byte("pod/other")); err == nil {
		t.Fatal("opened with the wrong additional data")
	}
	tampered := append([]byte{}, sealed...)
	tampered[len(tampered)-1] ^= 1
	if _, err := b2.Open(tampered, []byte("pod/vol")); err == nil {
		t.Fatal("opened tampered data")
	}
	future := append([]byte{}, sealed...)
	future[0] = 2
	if _, err := b2.Open(future, []byte("pod/vol")); err == nil || !strings.Contains(err.Error(), "format 2") {
		t.Fatalf("future format: %v", err)
	}
	other, _ := seal.LoadOrCreate(filepath.Join(t.TempDir(), seal.KeyFileName), nil)
	if _, err := other.Open(sealed, []byte("pod/vol")); err == nil || !strings.Contains(err.Error(), other.Path()) {
		t.Fatalf("another node's key: %v", err)
	}
}

func TestCorruptKeyFileIsRefusedNotReplaced(t *testing.T) {
	path := filepath.Join(t.TempDir(), seal.KeyFileName)
	if _, err := seal.LoadOrCreate(path, nil); err != nil {
		t.Fatal(err)
	}
	data, _ := os.ReadFile(path)
	bad := bytes.Replace(data, []byte(`"file"`), []byte(`"FILE"`), 1)
	os.WriteFile(path, bad, 0o600)
	if _, err := seal.LoadOrCreate(path, nil); err == nil || !strings.Contains(err.Error(), path) {
		t.Fatalf("corrupt key file: %v", err)
	}
	if got, _ := os.ReadFile(path); !bytes.Equal(got, bad) {
		t.Fatal("corrupt key file replaced")
	}
}

// fakeTPM stands in for a TPM in this unit test of the key file's TPM
// method: it "seals" by XOR with a pad only it knows.
type fakeTPM struct {
	pad    byte
	broken bool
}

func (f *fakeTPM) Seal(secret []byte) (*seal.TPMBlob, error) {
	out := make([]byte, len(secret))
	for i := range secret {
		out[i] = secret[i] ^ f.pad
	}
	return &seal.TPMBlob{Public: []byte("pub"), Private: out}, nil
}

func (f *fakeTPM) Unseal(b *seal.TPMBlob) ([]byte, error) {
	if f.broken {
		return nil, errors.New("TPM_RC_INTEGRITY")
	}
	out := make([]byte, len(b.Private))
	for i := range b.Private {
		out[i] = b.Private[i] ^ f.pad
	}
	return out, nil
}

func (f *fakeTPM) Close() error { return nil }

func TestKeySealedToTPM(t *testing.T) {
	path := filepath.Join(t.TempDir(), seal.KeyFileName)
	tpm := &fakeTPM{pad: 0x5a}
	b, err := seal.LoadOrCreate(path, tpm)
	if err != nil || b.Method() != seal.MethodTPM {
		t.Fatalf("%v %v", b, err)
	}
	sealed, _ := b.Seal([]byte("x"), nil)
	if _, err := seal.LoadOrCreate(path, nil); err == nil || !strings.Contains(err.Error(), "no TPM") {
		t.Fatalf("TPM key without a TPM: %v", err)
	}
	if _, err := seal.LoadOrCreate(path, &fakeTPM{pad: 0x5a, broken: true}); err == nil || !strings.Contains(err.Error(), "TPM_RC_INTEGRITY") {
		t.Fatalf("TPM that refuses: %v", err)
	}
	b2, err := seal.LoadOrCreate(path, tpm)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := b2.Open(sealed, nil); err != nil || string(got) != "x" {
		t.Fatalf("%q %v", got, err)
	}
}

func FuzzOpen(f *testing.F) {
	path := filepath.Join(f.TempDir(), seal.KeyFileName)
	b, err := seal.LoadOrCreate(path, nil)
	if err != nil {
		f.Fatal(err)
	}
	good, _ := b.Seal([]byte("content"), []byte("aad"))
	f.Add(good)
	f.Add([]byte{1})
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		if _, err := b.Open(data, []byte("aad")); err == nil && !bytes.Equal(data, good) {
			t.Fatalf("data the key never sealed opened: %x", data)
		}
	})
}

func FuzzLoadKey(f *testing.F) {
	dir := f.TempDir()
	path := filepath.Join(dir, seal.KeyFileName)
	if _, err := seal.LoadOrCreate(path, nil); err != nil {
		f.Fatal(err)
	}
	good, _ := os.ReadFile(path)
	f.Add(good)
	f.Add([]byte(`{"kind":"holdfast.cri.nodekey","version":1,"sha256":"x","payload":{"method":"tpm2"}}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		p := filepath.Join(t.TempDir(), seal.KeyFileName)
		if err := os.WriteFile(p, data, 0o600); err != nil {
			t.Fatal(err)
		}
		b, err := seal.LoadOrCreate(p, &fakeTPM{pad: 1})
		if err != nil {
			if got, _ := os.ReadFile(p); !bytes.Equal(got, data) {
				t.Fatal("refused key file was changed")
			}
			return
		}
		if _, err := b.Seal([]byte("x"), nil); err != nil {
			t.Fatal(err)
		}
	})
}
