// Package statefile is the on-disk envelope of every durable holdfast file:
// a JSON document naming its kind and schema version, carrying a SHA-256 of
// its payload. Readers refuse a file of another kind, a newer schema version
// than they know, or a payload whose checksum does not match, with an error
// that names the file and the problem, so that corrupt or future state is
// never half-read; bytes after the envelope are refused too. Writes go
// through atomicfile.
package statefile

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"

	"github.com/holdfast-edge/holdfast/internal/atomicfile"
)

// MaxSize bounds what Load reads, so a corrupt or hostile file cannot make a
// daemon allocate without limit.
const MaxSize = 256 << 20

// ErrNotExist is returned (wrapped) by Load when the file does not exist.
var ErrNotExist = os.ErrNotExist

type envelope struct {
	Kind     string          `json:"kind"`
	Version  int             `json:"version"`
	Checksum string          `json:"sha256"`
	Payload  json.RawMessage `json:"payload"`
}

// Encode marshals v into an envelope of the given kind and version.
func Encode(kind string, version int, v any) ([]byte, error) {
	payload, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("encode %s payload: %w", kind, err)
	}
	sum := sha256.Sum256(payload)
	// Compact: large snapshots decode several times faster than indented
	// ones; `show` subcommands are for humans.
	out, err := json.Marshal(envelope{Kind: kind, Version: version, Checksum: hex.EncodeToString(sum[:]), Payload: payload})
	if err != nil {
		return nil, fmt.Errorf("encode %s envelope: %w", kind, err)
	}
	return append(out, '\n'), nil
}

// Decode checks data's envelope and unmarshals its payload into v. It returns
// the schema version found. Versions above maxVersion are refused, and so is
// anything but whitespace after the envelope.
func Decode(data []byte, kind string, maxVersion int, v any) (int, error) {
	var env envelope
	dec := json.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&env); err != nil {
		return 0, fmt.Errorf("not a holdfast state file: %w", err)
	}
	// A writer writes exactly one envelope (and a newline). Anything else
	// after it, a second document or a torn append, means the file is not
	// what was written: refuse it whole rather than act on its first half.
	if rest := bytes.TrimLeft(data[dec.InputOffset():], " \t\r\n"); len(rest) > 0 {
		return 0, fmt.Errorf("state file has %d bytes of trailing data after its envelope", len(rest))
	}
	if env.Kind != kind {
		return 0, fmt.Errorf("state file holds kind %q, want %q", env.Kind, kind)
	}
	if env.Version < 1 {
		return 0, fmt.Errorf("state file has invalid schema version %d", env.Version)
	}
	if env.Version > maxVersion {
		return 0, fmt.Errorf("state file has schema version %d, newer than this binary supports (%d): refusing to read it", env.Version, maxVersion)
	}
	// The checksum covers the compact payload. Files are written compact;
	// one indented by hand is compacted before the check.
	sum := sha256.Sum256(env.Payload)
	if hex.EncodeToString(sum[:]) != env.Checksum {
		var compact bytes.Buffer
		if err := json.Compact(&compact, env.Payload); err != nil {
			return 0, fmt.Errorf("state file payload is not JSON: %w", err)
		}
		sum = sha256.Sum256(compact.Bytes())
	}
	if hex.EncodeToString(sum[:]) != env.Checksum {
		return 0, errors.New("state file checksum mismatch: file is corrupt")
	}
	if err := json.Unmarshal(env.Payload, v); err != nil {
		return 0, fmt.Errorf("decode %s payload: %w", kind, err)
	}
	return env.Version, nil
}

// Save atomically writes v to path in an envelope.
func Save(path, kind string, version int, v any) error {
	data, err := Encode(kind, version, v)
	if err != nil {
		return err
	}
	if err := atomicfile.WriteFile(path, data, 0o600); err != nil {
		return err
	}
	return nil
}

// Load reads path and decodes it into v. Errors name the file.
func Load(path, kind string, maxVersion int, v any) (int, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return 0, fmt.Errorf("stat %s: %w", path, err)
	}
	if st.Size() > MaxSize {
		return 0, fmt.Errorf("%s: %d bytes is larger than the %d byte limit", path, st.Size(), MaxSize)
	}
	data := make([]byte, st.Size())
	if _, err := f.ReadAt(data, 0); err != nil && st.Size() > 0 {
		return 0, fmt.Errorf("read %s: %w", path, err)
	}
	ver, err := Decode(data, kind, maxVersion, v)
	if err != nil {
		return 0, fmt.Errorf("%s: %w", path, err)
	}
	return ver, nil
}

// Reversion returns data with its envelope's schema version set to version,
// payload and checksum untouched. Tests use it to forge a file from the
// future; nothing else should.
func Reversion(data []byte, version int) ([]byte, error) {
	var env envelope
	if err := json.Unmarshal(data, &env); err != nil {
		return nil, fmt.Errorf("not a holdfast state file: %w", err)
	}
	env.Version = version
	return json.Marshal(env)
}
