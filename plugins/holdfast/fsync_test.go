package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containernetworking/cni/libcni"
)

// fsyncBudget is how many fsyncs each plugin may make per verb in one
// ADD+DEL of a pod (docs/cni.md, "Cost of ADD and DEL"): holdfast-ipam's
// ADD fsyncs the state file and its directory (the pin survives a power
// loss), its DEL only the state file (never torn); the chained plugin's
// attachment records are not fsynced at all.
var fsyncBudget = map[string]int{"ADD holdfast-ipam": 2, "DEL holdfast-ipam": 1, "ADD holdfast": 0, "DEL holdfast": 0}

// TestFsyncBudget runs ADD and DEL through the real chain with holdfast
// and holdfast-ipam wrapped in strace, and counts their fsyncs.
func TestFsyncBudget(t *testing.T) {
	strace, err := exec.LookPath("strace")
	if err != nil {
		t.Fatal("strace is required (Debian package strace): ", err)
	}
	e := newCNIEnv(t)
	traces := t.TempDir()
	wrapped := t.TempDir()
	ents, err := os.ReadDir(pluginDir)
	if err != nil {
		t.Fatal(err)
	}
	for _, ent := range ents {
		real := filepath.Join(pluginDir, ent.Name())
		var err error
		if _, ok := fsyncBudget["ADD "+ent.Name()]; ok {
			script := fmt.Sprintf("#!/bin/sh\nexec %s -f -qq -e trace=fsync,fdatasync,syncfs,sync,sync_file_range -o %s/\"$CNI_COMMAND\".%s.$$ %s\n", strace, traces, ent.Name(), real)
			err = os.WriteFile(filepath.Join(wrapped, ent.Name()), []byte(script), 0o755)
		} else {
			err = os.Symlink(real, filepath.Join(wrapped, ent.Name()))
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	e.cni = libcni.NewCNIConfigWithCacheDir([]string{wrapped}, filepath.Join(e.dir, "cache"), nil)
	list := e.holdfastList(t, "1.1.0", "")
	pod := newNetns(t, "pod")
	rt := rtConf("fsync-"+randSuffix(), pod, "fsync")
	e.add(t, list, rt)
	e.del(t, list, rt)

	got := map[string]int{}
	files, err := filepath.Glob(filepath.Join(traces, "*"))
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		verb, rest, _ := strings.Cut(filepath.Base(f), ".")
		plugin := rest[:strings.LastIndex(rest, ".")]
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		k := verb + " " + plugin
		got[k] += 0 // it ran, even with no fsync
		for _, line := range strings.Split(string(data), "\n") {
			if strings.Contains(line, "sync") && strings.Contains(line, "(") {
				got[k]++
			}
		}
	}
	for k, max := range fsyncBudget {
		n, ran := got[k]
		if !ran {
			t.Errorf("%s never ran under strace (traces: %v)", k, files)
			continue
		}
		if n > max {
			t.Errorf("%s made %d fsyncs, budget %d", k, n, max)
		}
		t.Logf("%s: %d fsyncs (budget %d)", k, n, max)
	}
}
