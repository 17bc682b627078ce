// Command holdfastd is every long-running and administrative part of
// holdfast in one binary. It only wires: each subcommand parses its flags,
// builds its component from them and runs it. Components never read flags.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"sort"
	"syscall"

	"github.com/holdfast-edge/holdfast/internal/daemon"
)

// command is one holdfastd subcommand.
type command struct {
	name    string
	summary string
	run     func(ctx context.Context, args []string) error
}

func commands() []command {
	return []command{
		{"snapshot", "capture and restore the node's overlay network (save|restore|watch|show|diff)", runSnapshot},
		{"cri", "CRI shim between kubelet and containerd; records and relaunches pods (run|pods)", runCRI},
		{"node", "the CRI shim and the snapshot watcher in one process (the node's host daemon)", runNode},
		{"ipam", "inspect holdfast-ipam state (show)", runIPAM},
		{"health", "peer health probing and voting daemon (run|keygen|show)", runHealth},
		{"webhook", "admission webhook applying peer verdicts to taints and endpoints", runWebhook},
		{"dns", "per-node DNS server answering cluster names offline (run|show)", runDNS},
		{"agent", "peer health and the node DNS in one process (the node's DaemonSet)", runAgent},
		{"install", "wire holdfast into this node", runInstall},
		{"uninstall", "undo install byte for byte", runUninstall},
		{"manifests", "render the Kubernetes manifests", runManifests},
		{"status", "one screen of this node's autonomy state", runStatus},
	}
}

func usage(cmds []command) {
	sort.Slice(cmds, func(i, j int) bool { return cmds[i].name < cmds[j].name })
	fmt.Fprintf(os.Stderr, "holdfastd keeps an edge Kubernetes node autonomous while its cloud link is down.\n\nUsage: holdfastd <command> [flags]\n\nCommands:\n")
	for _, c := range cmds {
		fmt.Fprintf(os.Stderr, "  %-10s %s\n", c.name, c.summary)
	}
	fmt.Fprintf(os.Stderr, "\nRun 'holdfastd <command> --help' for a command's flags.\n")
}

func main() {
	cmds := commands()
	if len(os.Args) < 2 || os.Args[1] == "-h" || os.Args[1] == "--help" || os.Args[1] == "help" {
		usage(cmds)
		if len(os.Args) < 2 {
			os.Exit(2)
		}
		return
	}
	for _, c := range cmds {
		if c.name != os.Args[1] {
			continue
		}
		_, gogcSet := os.LookupEnv("GOGC")
		daemon.TuneGC(gogcSet)
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		err := c.run(ctx, os.Args[2:])
		stop()
		if err == nil || errors.Is(err, flag.ErrHelp) {
			return
		}
		var ec exitCoder
		if errors.As(err, &ec) {
			if msg := err.Error(); msg != "" {
				fmt.Fprintf(os.Stderr, "holdfastd %s: %s\n", c.name, msg)
			}
			os.Exit(ec.ExitCode())
		}
		fmt.Fprintf(os.Stderr, "holdfastd %s: %v\n", c.name, err)
		os.Exit(1)
	}
	fmt.Fprintf(os.Stderr, "holdfastd: unknown command %q\n\n", os.Args[1])
	usage(cmds)
	os.Exit(2)
}

// exitCoder lets a subcommand choose its exit status (e.g. snapshot restore
// exits 2 when there is no snapshot).
type exitCoder interface{ ExitCode() int }

// exitError is an error with an exit status.
type exitError struct {
	code int
	err  error
}

func (e exitError) Error() string {
	if e.err == nil {
		return ""
	}
	return e.err.Error()
}
func (e exitError) Unwrap() error { return e.err }
func (e exitError) ExitCode() int { return e.code }

// flagGiven says whether name was on the command line.
func flagGiven(fs *flag.FlagSet, name string) bool {
	given := false
	fs.Visit(func(f *flag.Flag) { given = given || f.Name == name })
	return given
}

// newFlagSet returns a flag set whose --help prints the summary and every flag.
func newFlagSet(name, summary string) *flag.FlagSet {
	fs := flag.NewFlagSet("holdfastd "+name, flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: holdfastd %s [flags]\n\n%s\n\nFlags:\n", name, summary)
		fs.PrintDefaults()
	}
	return fs
}
