package health

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/holdfast-edge/holdfast/health/members"
	"github.com/holdfast-edge/holdfast/health/peer"
	"github.com/holdfast-edge/holdfast/internal/atomicfile"
	"github.com/holdfast-edge/holdfast/internal/statefile"
)

// Durable files under the state dir.
const (
	MembersFile  = "members.json"
	VerdictsFile = "verdicts.json"

	KindKey      = "holdfast-health-key"
	KindMembers  = "holdfast-health-members"
	KindVerdicts = "holdfast-health-verdicts"
	KeyVersion   = 1
	StateVersion = 1
)

// KeyFile is the payload of a --key-file.
type KeyFile struct {
	Node       string `json:"node,omitempty"`
	PrivateKey string `json:"privateKey"` // base64 Ed25519 seed+public (64 bytes)
	PublicKey  string `json:"publicKey"`
}

// GenerateKey writes a new key file (mode 0600) and returns the public key in base64.
func GenerateKey(path, node string) (string, error) {
	if _, err := os.Stat(path); err == nil {
		return "", fmt.Errorf("%s already exists: refusing to overwrite a node key", path)
	}
	// A key generation killed before its rename left only a temp file.
	if _, err := atomicfile.CleanTemps(path); err != nil {
		return "", err
	}
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return "", err
	}
	kf := KeyFile{Node: node, PrivateKey: base64.StdEncoding.EncodeToString(priv), PublicKey: base64.StdEncoding.EncodeToString(pub)}
	if err := statefile.Save(path, KindKey, KeyVersion, kf); err != nil {
		return "", err
	}
	return kf.PublicKey, nil
}

// LoadKey reads a key file.
func LoadKey(path string) (ed25519.PrivateKey, error) {
	var kf KeyFile
	if _, err := statefile.Load(path, KindKey, KeyVersion, &kf); err != nil {
		return nil, fmt.Errorf("load key: %w", err)
	}
	b, err := base64.StdEncoding.DecodeString(kf.PrivateKey)
	if err != nil || len(b) != ed25519.PrivateKeySize {
		return nil, fmt.Errorf("%s: privateKey is not a base64 Ed25519 private key", path)
	}
	return ed25519.PrivateKey(b), nil
}

// PublicKeyString returns the base64 public half of key.
func PublicKeyString(key ed25519.PrivateKey) string {
	return base64.StdEncoding.EncodeToString(key.Public().(ed25519.PublicKey))
}

// MembersState is the persisted member list.
type MembersState struct {
	Node    string           `json:"node"`
	Unit    string           `json:"unit"`
	Epoch   uint32           `json:"epoch"` // sequence epoch of the last start
	Source  string           `json:"source"`
	Updated time.Time        `json:"updated"`
	Members []members.Member `json:"members"`
}

// VerdictsState is the persisted last verdicts.
type VerdictsState struct {
	peer.Snapshot
	Updated     time.Time `json:"updated"`
	FreshVoters int       `json:"freshVoters"`
}

// CleanStateDir removes the temp files a killed daemon left beside its
// state files. Call it at start-up, before the daemon's first write: the
// daemon is the state dir's only writer.
func CleanStateDir(dir string) error {
	for _, f := range []string{MembersFile, VerdictsFile} {
		if _, err := atomicfile.CleanTemps(filepath.Join(dir, f)); err != nil {
			return err
		}
	}
	return nil
}

// LoadMembers reads the persisted member list; a missing file is ErrNotExist.
func LoadMembers(dir string) (MembersState, error) {
	var s MembersState
	_, err := statefile.Load(filepath.Join(dir, MembersFile), KindMembers, StateVersion, &s)
	return s, err
}

// SaveMembers persists the member list.
func SaveMembers(dir string, s MembersState) error {
	return statefile.Save(filepath.Join(dir, MembersFile), KindMembers, StateVersion, s)
}

// LoadVerdicts reads the persisted verdicts.
func LoadVerdicts(dir string) (VerdictsState, error) {
	var s VerdictsState
	_, err := statefile.Load(filepath.Join(dir, VerdictsFile), KindVerdicts, StateVersion, &s)
	return s, err
}

// NextEpoch returns the epoch for this start (one more than the persisted
// one) — sequence numbers stay increasing across restarts and reboots.
func NextEpoch(dir string) (uint32, error) {
	s, err := LoadMembers(dir)
	if errors.Is(err, os.ErrNotExist) {
		return 1, nil
	}
	if err != nil {
		return 0, err
	}
	return s.Epoch + 1, nil
}
