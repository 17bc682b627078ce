// Package attachment is the holdfast chained plugin's record of one pod
// interface (pod, container ID, ifname, IPs, MAC, netns): one versioned
// statefile per attachment under <dataDir>/<network>/, written atomically
// (but not fsynced: see Save) under the network dir's lock
// (atomicfile.LockDir), which also removes what plugins killed mid-write
// left there. It owns those files only and never
// touches the network.
package attachment

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/holdfast-edge/holdfast/internal/atomicfile"
	"github.com/holdfast-edge/holdfast/internal/statefile"
)

// DefaultDataDir is the chained plugin's data directory (its dataDir) when
// the network config sets none; it lives here so holdfastd can import it.
const DefaultDataDir = "/var/lib/holdfast/cni"

// Kind and Version identify an attachment record.
const (
	Kind    = "holdfast/attachment"
	Version = 1
)

// Attachment is what holdfast records for one pod interface.
type Attachment struct {
	Network      string    `json:"network"`
	PodNamespace string    `json:"podNamespace,omitempty"`
	PodName      string    `json:"podName,omitempty"`
	PodUID       string    `json:"podUID,omitempty"`
	ContainerID  string    `json:"containerID"`
	IfName       string    `json:"ifName"`
	IPs          []string  `json:"ips"`
	MAC          string    `json:"mac"`
	Netns        string    `json:"netns"`
	Created      time.Time `json:"created"`
}

func validID(s string) bool {
	return s != "" && !strings.ContainsAny(s, "/\\\x00") && s != "." && s != ".."
}

// Path is <dataDir>/<network>/<containerID>_<ifname>.json.
func Path(dataDir, network, cid, ifName string) (string, error) {
	if !validID(cid) {
		return "", fmt.Errorf("container ID %q is not usable as a file name", cid)
	}
	if !validID(ifName) {
		return "", fmt.Errorf("interface name %q is not usable as a file name", ifName)
	}
	return filepath.Join(dataDir, network, cid+"_"+ifName+".json"), nil
}

// Save atomically writes a record, under its directory's lock, without
// fsync (atomicfile.WriteFileNoSync): a plugin killed at any point leaves
// the old record or the new one, never a torn file, but a power loss may
// lose a record written in the last seconds or leave it empty. Records
// describe sandboxes, which a power loss kills all of: the runtime's next
// GC prunes them without reading them, and new sandboxes write new ones.
func Save(path string, a *Attachment) error {
	data, err := statefile.Encode(Kind, Version, a)
	if err != nil {
		return err
	}
	unlock, err := atomicfile.LockDir(filepath.Dir(path), atomicfile.DefaultLockTimeout)
	if err != nil {
		return err
	}
	defer unlock()
	return atomicfile.WriteFileNoSync(path, data, 0o600)
}

// Load reads a record; errors name the file.
func Load(path string) (*Attachment, error) {
	var a Attachment
	if _, err := statefile.Load(path, Kind, Version, &a); err != nil {
		return nil, err
	}
	return &a, nil
}

// List returns the record paths of network.
func List(dataDir, network string) ([]string, error) {
	ents, err := os.ReadDir(filepath.Join(dataDir, network))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []string
	for _, e := range ents {
		if e.Type().IsRegular() && strings.HasSuffix(e.Name(), ".json") && !strings.HasPrefix(e.Name(), ".") {
			out = append(out, filepath.Join(dataDir, network, e.Name()))
		}
	}
	return out, nil
}

// Remove deletes a record under its directory's lock, without the
// directory fsync (a power loss may bring it back; GC prunes it); a
// missing one is not an error.
func Remove(path string) error {
	unlock, err := atomicfile.LockDir(filepath.Dir(path), atomicfile.DefaultLockTimeout)
	if err != nil {
		return err
	}
	defer unlock()
	return atomicfile.RemoveNoSync(path)
}
