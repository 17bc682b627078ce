package main

import (
	"context"
	"errors"
	"fmt"
	"sync"

	crishim "github.com/holdfast-edge/holdfast/cri-shim"
	"github.com/holdfast-edge/holdfast/internal/daemon"
)

const nodeSummary = `The node-side daemons of holdfast in one process (docs/footprint.md): the CRI
shim between kubelet and containerd (every flag of 'holdfastd cri run') and the
network snapshot watcher (the flags of 'holdfastd snapshot watch', named
--snapshot-<flag>; --node-name is shared). One /healthz and /metrics on
--metrics-addr for both. Start it after 'holdfastd snapshot restore' and
containerd, before kubelet (docs/boot.md): the watcher's first capture then sees
the restored overlay. Either component failing ends the process (systemd
restarts it).`

// runNode is `holdfastd node`: the CRI shim and the snapshot watcher.
func runNode(ctx context.Context, args []string) error {
	fs := newFlagSet("node", nodeSummary)
	var cf criServeFlags
	cf.register(fs)
	var sf snapshotFlags
	sf.registerCapture(fs, "snapshot-")
	var wf watchFlags
	wf.register(fs, "snapshot-")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return exitError{2, fmt.Errorf("unexpected arguments %q", fs.Args())}
	}
	sf.node = cf.nodeName()
	opts, err := sf.capture()
	if err != nil {
		return exitError{2, err}
	}
	log := daemon.NewLogger("node", *cf.debug).With("node", sf.node)
	reg := daemon.NewRegistry()
	cfg, err := cf.config(daemon.NewLogger("cri", *cf.debug), reg)
	if err != nil {
		return err
	}
	w, err := wf.watcher(sf.dir, opts, daemon.NewLogger("snapshot-watch", *cf.debug).With("node", sf.node), reg)
	if err != nil {
		return exitError{2, err}
	}
	shim, err := crishim.New(cfg)
	if err != nil {
		return err
	}
	healthy := func() error {
		return errors.Join(shim.Healthy(context.Background()), w.Healthy())
	}
	if _, err := daemon.Serve(ctx, log, *cf.metrics, daemon.Mux(reg, healthy)); err != nil {
		return err
	}
	go daemon.ReleaseStartupPages(ctx, log)
	return runBoth(ctx, shim.Run, w.Run)
}

// runBoth runs a and b until ctx ends or one of them returns; then it stops
// the other and returns the first error.
func runBoth(ctx context.Context, a, b func(context.Context) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errs := make(chan error, 2)
	var wg sync.WaitGroup
	for _, run := range []func(context.Context) error{a, b} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := run(ctx)
			cancel()
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	var first error
	for err := range errs {
		if first == nil && err != nil && !errors.Is(err, context.Canceled) {
			first = err
		}
	}
	return first
}
