package snapshot

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/holdfast-edge/holdfast/internal/atomicfile"
)

// DefaultSubnetEnv is where flanneld writes its lease.
const DefaultSubnetEnv = "/run/flannel/subnet.env"

// readSubnetEnv returns the file, or nil when it does not exist.
func readSubnetEnv(path string) (*FileCopy, error) {
	if path == "" {
		return nil, nil
	}
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	if len(b) > 64<<10 {
		return nil, fmt.Errorf("%s: %d bytes is too large for a subnet.env", path, len(b))
	}
	return &FileCopy{Path: path, Content: string(b)}, nil
}

func writeSubnetEnv(f *FileCopy) (func() error, error) {
	if err := os.MkdirAll(filepath.Dir(f.Path), 0o755); err != nil {
		return nil, fmt.Errorf("create dir of %s: %w", f.Path, err)
	}
	if err := atomicfile.WriteFile(f.Path, []byte(f.Content), 0o644); err != nil {
		return nil, err
	}
	return func() error { return atomicfile.Remove(f.Path) }, nil
}
