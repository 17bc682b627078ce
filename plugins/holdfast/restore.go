package main

import (
	"context"
	"errors"
	"fmt"
	"os"

	"github.com/holdfast-edge/holdfast/snapshot"
)

// snapshotRestorer restores the node's overlay with snapshot.Restore from
// the node's snapshot directory.
type snapshotRestorer struct {
	dir, node string
}

// newSnapshotRestorer returns the restorer ADD uses for a missing overlay.
func newSnapshotRestorer(o *OverlayConf) OverlayRestorer {
	if o == nil {
		return nil
	}
	node := o.NodeName
	if node == "" {
		node, _ = os.Hostname()
	}
	return snapshotRestorer{dir: o.SnapshotDir, node: node}
}

// RestoreOverlay implements OverlayRestorer. A node that has no snapshot
// yet (first boot, before flanneld ever ran) is not an error: there is
// nothing to restore and the main plugin decides whether it can go on.
func (r snapshotRestorer) RestoreOverlay(ctx context.Context, device string) error {
	rep, err := snapshot.Restore(ctx, snapshot.RestoreOptions{Dir: r.dir, NodeName: r.node})
	if errors.Is(err, snapshot.ErrNoSnapshot) {
		return nil
	}
	if errors.Is(err, snapshot.ErrIPTables) && rep != nil && rep.Added > 0 {
		return &PartialRestoreError{Err: err}
	}
	if err != nil {
		return err
	}
	if rep.Added == 0 {
		return fmt.Errorf("snapshot in %s restored nothing for %s (%s)", r.dir, device, rep.Summary())
	}
	return nil
}
