package install

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"path"

	"github.com/holdfast-edge/holdfast/internal/statefile"
)

// Record kind and schema version of the install record.
const (
	RecordKind    = "holdfast.install.record"
	RecordVersion = 1
)

// DefaultStateDir is where the record and backups live on the node.
const DefaultStateDir = "/var/lib/holdfast/install"

// Record is what install changed on the node: enough for uninstall to put
// every file back byte for byte and remove what was added.
type Record struct {
	NodeName string `json:"nodeName"`
	// Files holds every path install wrote, sorted.
	Files []FileRecord `json:"files"`
	// Dirs lists directories install created (parents first); uninstall
	// removes them again when empty.
	Dirs []string `json:"dirs,omitempty"`
	// Network is where the chained network's two IPAMs keep their leases
	// (uninstall hands holdfast-ipam's back to host-local).
	Network *NetworkRecord `json:"network,omitempty"`
}

// FileRecord is one path install wrote.
type FileRecord struct {
	// Path is the on-node absolute path.
	Path string `json:"path"`
	// Existed: the path held a regular file before install (backed up at
	// backup/<OrigSHA256> with mode OrigMode and owner OrigUID:OrigGID).
	Existed    bool        `json:"existed"`
	OrigSHA256 string      `json:"origSHA256,omitempty"`
	OrigMode   fs.FileMode `json:"origMode,omitempty"`
	OrigUID    int         `json:"origUID,omitempty"`
	OrigGID    int         `json:"origGID,omitempty"`
	// Installed content: SHA256 for a regular file, or Link for a symlink.
	SHA256 string `json:"sha256,omitempty"`
	Link   string `json:"link,omitempty"`
	// Role says why the file is there (conflist, kubelet-config, unit, ...).
	Role string `json:"role"`
}

func (r *Record) find(p string) *FileRecord {
	for i := range r.Files {
		if r.Files[i].Path == p {
			return &r.Files[i]
		}
	}
	return nil
}

// recordPath is the record's on-node path.
func recordPath(stateDir string) string { return path.Join(stateDir, "record.json") }

// backupPath is the on-node path of a backup with the given SHA-256.
func backupPath(stateDir, sum string) string { return path.Join(stateDir, "backup", sum) }

// LoadRecord reads the record from host path p. A missing record returns
// (nil, nil).
func LoadRecord(p string) (*Record, error) {
	var r Record
	if _, err := statefile.Load(p, RecordKind, RecordVersion, &r); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, nil
		}
		return nil, fmt.Errorf("install record: %w", err)
	}
	return &r, nil
}

func sha(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}
