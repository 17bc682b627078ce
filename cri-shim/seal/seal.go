// Package seal holds the CRI shim's per-node key and seals with it
// (AES-256-GCM, Go's crypto/cipher) the volume content that must not reach
// the disk in the clear: Secret and projected (service-account token)
// volumes.
//
// The key is made once per node from crypto/rand. Where a TPM 2.0 is
// present it is sealed to the TPM (the key file holds only the TPM's sealed
// blob, which no other machine can open); otherwise the key file holds the
// key itself, root-only (0600 in a 0700 directory). The key file is an
// internal/statefile envelope, created atomically, never replaced: a key
// file that cannot be read is an error naming it, and what was sealed with
// it stays sealed. docs/security.md holds the threat model.
//
// It owns the key file and nothing else.
package seal

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/holdfast-edge/holdfast/internal/atomicfile"
	"github.com/holdfast-edge/holdfast/internal/statefile"
)

// KeyFileName is the key file's name in the shim's state dir.
const KeyFileName = "node.key"

// KeyKind and KeyVersion identify a key file.
const (
	KeyKind    = "holdfast.cri.nodekey"
	KeyVersion = 1
)

// Key protection methods.
const (
	MethodFile = "file" // the key in a root-only file
	MethodTPM  = "tpm2" // the key sealed to the node's TPM 2.0
)

const keySize = 32 // AES-256

// format is the first byte of every sealed blob.
const format = 1

// TPM seals a key to the node's TPM and unseals it again (see NewTPM).
type TPM interface {
	Seal(secret []byte) (*TPMBlob, error)
	Unseal(*TPMBlob) ([]byte, error)
	Close() error
}

// TPMBlob is a key sealed to a TPM: the public and private areas of the
// sealed data object, created under the TPM's storage primary key.
type TPMBlob struct {
	Public  []byte `json:"public"`
	Private []byte `json:"private"`
}

type keyFile struct {
	Method string   `json:"method"`
	Key    []byte   `json:"key,omitempty"`
	TPM    *TPMBlob `json:"tpm,omitempty"`
}

// Box seals and opens with the node key.
type Box struct {
	aead   cipher.AEAD
	method string
	path   string
}

// Method says how the key is protected (MethodFile or MethodTPM).
func (b *Box) Method() string { return b.method }

// Path is the key file.
func (b *Box) Path() string { return b.path }

// LoadOrCreate opens the key at path, creating one when there is none:
// sealed to tpm when tpm is not nil, else in the clear in the 0600 file.
// A key file sealed to a TPM needs tpm to open. An unreadable key file is
// refused, never replaced.
func LoadOrCreate(path string, tpm TPM) (*Box, error) {
	var kf keyFile
	_, err := statefile.Load(path, KeyKind, KeyVersion, &kf)
	if errors.Is(err, os.ErrNotExist) {
		return create(path, tpm)
	}
	if err != nil {
		return nil, fmt.Errorf("node key: %w", err)
	}
	var key []byte
	switch kf.Method {
	case MethodFile:
		key = kf.Key
	case MethodTPM:
		if kf.TPM == nil {
			return nil, fmt.Errorf("node key %s: method tpm2 without a sealed blob", path)
		}
		if tpm == nil {
			return nil, fmt.Errorf("node key %s is sealed to a TPM, and no TPM is open", path)
		}
		if key, err = tpm.Unseal(kf.TPM); err != nil {
			return nil, fmt.Errorf("node key %s: unseal with the TPM: %w", path, err)
		}
	default:
		return nil, fmt.Errorf("node key %s: unknown method %q", path, kf.Method)
	}
	if len(key) != keySize {
		return nil, fmt.Errorf("node key %s: %d bytes, want %d", path, len(key), keySize)
	}
	return newBox(key, kf.Method, path)
}

func create(path string, tpm TPM) (*Box, error) {
	key := make([]byte, keySize)
	if _, err := io.ReadFull(rand.Reader, key); err != nil {
		return nil, fmt.Errorf("node key: %w", err)
	}
	kf := keyFile{Method: MethodFile, Key: key}
	if tpm != nil {
		blob, err := tpm.Seal(key)
		if err != nil {
			return nil, fmt.Errorf("node key: seal to the TPM: %w", err)
		}
		kf = keyFile{Method: MethodTPM, TPM: blob}
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("node key: %w", err)
	}
	data, err := statefile.Encode(KeyKind, KeyVersion, kf)
	if err != nil {
		return nil, err
	}
	if err := atomicfile.WriteFile(path, data, 0o600); err != nil {
		return nil, fmt.Errorf("node key: %w", err)
	}
	return newBox(key, kf.Method, path)
}

func newBox(key []byte, method, path string) (*Box, error) {
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, err
	}
	return &Box{aead: aead, method: method, path: path}, nil
}

// Seal encrypts plain, bound to aad: format byte, random nonce, ciphertext.
func (b *Box) Seal(plain, aad []byte) ([]byte, error) {
	out := make([]byte, 1+b.aead.NonceSize(), 1+b.aead.NonceSize()+len(plain)+b.aead.Overhead())
	out[0] = format
	if _, err := io.ReadFull(rand.Reader, out[1:]); err != nil {
		return nil, err
	}
	return b.aead.Seal(out, out[1:], plain, aad), nil
}

// Open decrypts what Seal made with the same key and aad.
func (b *Box) Open(sealed, aad []byte) ([]byte, error) {
	if len(sealed) == 0 {
		return nil, errors.New("sealed data is empty")
	}
	if sealed[0] != format {
		return nil, fmt.Errorf("sealed data has format %d, this binary knows %d", sealed[0], format)
	}
	ns := b.aead.NonceSize()
	if len(sealed) < 1+ns+b.aead.Overhead() {
		return nil, errors.New("sealed data is truncated")
	}
	plain, err := b.aead.Open(nil, sealed[1:1+ns], sealed[1+ns:], aad)
	if err != nil {
		return nil, fmt.Errorf("sealed data does not open with the node key %s (another node's key, or corrupt): %w", b.path, err)
	}
	return plain, nil
}
