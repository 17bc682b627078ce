package seal

import (
	"errors"
	"fmt"
	"os"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"
	"github.com/google/go-tpm/tpm2/transport/linuxtpm"
)

// The TPM 2.0 device nodes FindTPM looks for: the kernel's resource
// manager first (shared safely with other TPM users), then the raw device.
const (
	TPMResourceManager = "/dev/tpmrm0"
	TPMRawDevice       = "/dev/tpm0"
)

// FindTPM returns the first TPM 2.0 device node present, "" when the node
// has none.
func FindTPM() string {
	for _, p := range []string{TPMResourceManager, TPMRawDevice} {
		if st, err := os.Stat(p); err == nil && st.Mode()&os.ModeDevice != 0 {
			return p
		}
	}
	return ""
}

// OpenTPM opens the TPM 2.0 at a device node.
func OpenTPM(path string) (TPM, error) {
	t, err := linuxtpm.Open(path)
	if err != nil {
		return nil, fmt.Errorf("open TPM %s: %w", path, err)
	}
	return NewTPM(t), nil
}

// NewTPM seals with the TPM behind t (a device, or a simulator in tests).
//
// The key is a sealed data object (keyed-hash, fixedTPM, fixedParent, no
// auth value, no dictionary-attack lockout) created under the storage
// primary key that CreatePrimary derives from the owner hierarchy's seed
// with the standard ECC SRK template: the same parent on every call, kept
// in no persistent handle, so nothing on the TPM is left allocated. The
// blob opens only on this TPM, and not after the owner hierarchy is
// cleared.
func NewTPM(t transport.TPMCloser) TPM { return &goTPM{t: t} }

type goTPM struct{ t transport.TPMCloser }

func (g *goTPM) Close() error { return g.t.Close() }

// srk creates the storage primary key; the caller flushes it.
func (g *goTPM) srk() (*tpm2.CreatePrimaryResponse, func(), error) {
	rsp, err := tpm2.CreatePrimary{PrimaryHandle: tpm2.TPMRHOwner, InPublic: tpm2.New2B(tpm2.ECCSRKTemplate)}.Execute(g.t)
	if err != nil {
		return nil, nil, fmt.Errorf("create storage primary key: %w", err)
	}
	return rsp, func() { tpm2.FlushContext{FlushHandle: rsp.ObjectHandle}.Execute(g.t) }, nil
}

func (g *goTPM) Seal(secret []byte) (*TPMBlob, error) {
	srk, flush, err := g.srk()
	if err != nil {
		return nil, err
	}
	defer flush()
	rsp, err := tpm2.Create{
		ParentHandle: tpm2.AuthHandle{Handle: srk.ObjectHandle, Name: srk.Name, Auth: tpm2.PasswordAuth(nil)},
		InSensitive: tpm2.TPM2BSensitiveCreate{Sensitive: &tpm2.TPMSSensitiveCreate{
			Data: tpm2.NewTPMUSensitiveCreate(&tpm2.TPM2BSensitiveData{Buffer: secret}),
		}},
		InPublic: tpm2.New2B(tpm2.TPMTPublic{
			Type: tpm2.TPMAlgKeyedHash, NameAlg: tpm2.TPMAlgSHA256,
			ObjectAttributes: tpm2.TPMAObject{FixedTPM: true, FixedParent: true, UserWithAuth: true, NoDA: true},
		}),
	}.Execute(g.t)
	if err != nil {
		return nil, fmt.Errorf("create sealed object: %w", err)
	}
	return &TPMBlob{Public: tpm2.Marshal(rsp.OutPublic), Private: tpm2.Marshal(rsp.OutPrivate)}, nil
}

func (g *goTPM) Unseal(b *TPMBlob) ([]byte, error) {
	if b == nil || len(b.Public) == 0 || len(b.Private) == 0 {
		return nil, errors.New("empty sealed blob")
	}
	pub, err := tpm2.Unmarshal[tpm2.TPM2BPublic](b.Public)
	if err != nil {
		return nil, fmt.Errorf("sealed blob public area: %w", err)
	}
	priv, err := tpm2.Unmarshal[tpm2.TPM2BPrivate](b.Private)
	if err != nil {
		return nil, fmt.Errorf("sealed blob private area: %w", err)
	}
	srk, flush, err := g.srk()
	if err != nil {
		return nil, err
	}
	defer flush()
	obj, err := tpm2.Load{
		ParentHandle: tpm2.AuthHandle{Handle: srk.ObjectHandle, Name: srk.Name, Auth: tpm2.PasswordAuth(nil)},
		InPrivate:    *priv, InPublic: *pub,
	}.Execute(g.t)
	if err != nil {
		return nil, fmt.Errorf("load sealed object: %w", err)
	}
	defer tpm2.FlushContext{FlushHandle: obj.ObjectHandle}.Execute(g.t)
	rsp, err := tpm2.Unseal{ItemHandle: tpm2.AuthHandle{Handle: obj.ObjectHandle, Name: obj.Name, Auth: tpm2.PasswordAuth(nil)}}.Execute(g.t)
	if err != nil {
		return nil, fmt.Errorf("unseal: %w", err)
	}
	return rsp.OutData.Buffer, nil
}
