// Package members owns the health unit's member list: who is in which unit,
// where to probe them and their Ed25519 public keys. Sources are a JSON file
// (--members-file, for sites without an apiserver and for tests) or Node
// objects (see health/kube.go and health/follow.go); whichever is used, the
// list is persisted under the state dir so that an offline reboot still
// knows its unit. Identity is the node name, never the address.
//
// It never probes, votes or writes to the apiserver.
package members

import (
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"sort"
	"strings"
)

// DefaultUnit is the unit of nodes without the unit label.
const DefaultUnit = ""

// Member is one node of a unit.
type Member struct {
	Name      string `json:"name"`
	Address   string `json:"address"` // IP or host of the health port (port comes from the daemon's --listen unless given as host:port)
	Unit      string `json:"unit"`
	PublicKey string `json:"publicKey"` // base64 (std) Ed25519 public key
}

// Key decodes the public key.
func (m Member) Key() (ed25519.PublicKey, error) {
	b, err := base64.StdEncoding.DecodeString(strings.TrimSpace(m.PublicKey))
	if err != nil {
		return nil, fmt.Errorf("member %q: publicKey is not base64: %w", m.Name, err)
	}
	if len(b) != ed25519.PublicKeySize {
		return nil, fmt.Errorf("member %q: publicKey has %d bytes, want %d", m.Name, len(b), ed25519.PublicKeySize)
	}
	return ed25519.PublicKey(b), nil
}

// Validate checks a member list: non-empty unique names of at most 253
// bytes, an address, a valid key.
func Validate(list []Member) error {
	seen := map[string]bool{}
	for i, m := range list {
		if m.Name == "" || len(m.Name) > 253 {
			return fmt.Errorf("member %d: name %q must be 1..253 bytes", i, m.Name)
		}
		if seen[m.Name] {
			return fmt.Errorf("member %q listed twice", m.Name)
		}
		seen[m.Name] = true
		if len(m.Unit) > 253 {
			return fmt.Errorf("member %q: unit name longer than 253 bytes", m.Name)
		}
		if m.Address == "" {
			return fmt.Errorf("member %q: no address", m.Name)
		}
		host := m.Address
		if h, _, err := net.SplitHostPort(m.Address); err == nil {
			host = h
		}
		if host == "" {
			return fmt.Errorf("member %q: address %q has no host", m.Name, m.Address)
		}
		if _, err := m.Key(); err != nil {
			return err
		}
	}
	return nil
}

// ParseList parses and validates a JSON member list.
func ParseList(data []byte) ([]Member, error) {
	var list []Member
	dec := json.NewDecoder(strings.NewReader(string(data)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&list); err != nil {
		return nil, fmt.Errorf("member list is not a JSON list of {name, address, unit, publicKey}: %w", err)
	}
	if err := Validate(list); err != nil {
		return nil, err
	}
	return list, nil
}

// LoadFile reads a --members-file.
func LoadFile(path string) ([]Member, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read members file: %w", err)
	}
	list, err := ParseList(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return list, nil
}

// Unit returns the members of self's unit sorted by name (the order views
// index), and self's unit. self must be in list.
func Unit(list []Member, self string) ([]Member, string, error) {
	unit, found := "", false
	for _, m := range list {
		if m.Name == self {
			unit, found = m.Unit, true
		}
	}
	if !found {
		return nil, "", fmt.Errorf("node %q is not in the member list", self)
	}
	var out []Member
	for _, m := range list {
		if m.Unit == unit {
			out = append(out, m)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, unit, nil
}

// Diff names, sorted, the members of next that are not in prev (added),
// those of prev not in next (removed) and those in both whose address, unit
// or key differs (changed).
func Diff(prev, next []Member) (added, removed, changed []string) {
	old := make(map[string]Member, len(prev))
	for _, m := range prev {
		old[m.Name] = m
	}
	for _, m := range next {
		o, ok := old[m.Name]
		switch {
		case !ok:
			added = append(added, m.Name)
		case o != m:
			changed = append(changed, m.Name)
		}
		delete(old, m.Name)
	}
	for name := range old {
		removed = append(removed, name)
	}
	sort.Strings(added)
	sort.Strings(removed)
	sort.Strings(changed)
	return added, removed, changed
}
