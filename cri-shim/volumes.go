package crishim

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/holdfast-edge/holdfast/cri-shim/record"
	"github.com/holdfast-edge/holdfast/cri-shim/seal"
	"github.com/holdfast-edge/holdfast/cri-shim/volumes"
)

// AnnotationRestoreVolumes on a pod (kubelet passes pod annotations into the
// sandbox config): "false" turns capture and restore of its volumes' content
// off. Its tmpfs volumes still come back as empty tmpfs mounts at relaunch,
// so kubelet's writes after reconnect reach the containers.
const AnnotationRestoreVolumes = "holdfast.dev/restore-volumes"

// DefaultRestoreVolumes is the default of --restore-volumes: capture the
// pods' tmpfs-backed volumes while online and restore them at relaunch.
const DefaultRestoreVolumes = true

func optedOut(sandbox *runtimeapi.PodSandboxConfig) bool {
	return sandbox.GetAnnotations()[AnnotationRestoreVolumes] == "false"
}

// podRefs returns the tmpfs-backed volumes the pod's recorded containers mount.
func podRefs(p *record.Pod) []volumes.Ref {
	var paths []string
	for _, c := range p.Ordered() {
		req, err := c.ContainerRequest()
		if err != nil {
			continue
		}
		for _, m := range req.GetConfig().GetMounts() {
			paths = append(paths, m.GetHostPath())
		}
	}
	return volumes.Refs(p.UID, paths)
}

func requestRefs(uid string, req *runtimeapi.CreateContainerRequest) []volumes.Ref {
	var paths []string
	for _, m := range req.GetConfig().GetMounts() {
		paths = append(paths, m.GetHostPath())
	}
	return volumes.Refs(uid, paths)
}

// volumeKeeper keeps the captures current (on kubelet's CreateContainer and
// StartContainer, and every scan interval) and restores them before a
// relaunch.
type volumeKeeper struct {
	cap   *volumes.Capturer
	store *record.Store
	log   *slog.Logger
	kick  chan string
	// keep: UIDs whose record is unreadable (their captures stay).
	keep map[string]bool
	// lastErr is the last capture failure logged (run's goroutine only).
	lastErr string

	captureErrs prometheus.Counter
	missing     *prometheus.CounterVec
	incomplete  prometheus.Counter
}

// openVolumes opens the node key and the captures under stateDir. A node
// key that cannot be used is logged (naming its file) and leaves Secret and
// token content uncaptured and unrestored; the rest works on.
func openVolumes(stateDir, mountInfo string, store *record.Store, badRecords []record.LoadError, log *slog.Logger) (*volumeKeeper, error) {
	var sealer volumes.Sealer
	box, err := openKey(filepath.Join(stateDir, seal.KeyFileName))
	if err != nil {
		log.Error("node key unusable: Secret and token volumes are neither captured nor restored", "err", err)
	} else {
		sealer = box
		log.Info("node key open", "file", box.Path(), "method", box.Method())
	}
	return newVolumeKeeper(stateDir, mountInfo, sealer, store, badRecords, log)
}

// openKey opens the node key, through the node's TPM when it has one (the
// TPM is open only while the key is loaded).
func openKey(path string) (*seal.Box, error) {
	dev := seal.FindTPM()
	if dev == "" {
		return seal.LoadOrCreate(path, nil)
	}
	tpm, err := seal.OpenTPM(dev)
	if err != nil {
		return nil, err
	}
	defer tpm.Close()
	return seal.LoadOrCreate(path, tpm)
}

// VolumeRestore returns the step the shim runs before relaunching a pod
// (relaunch.Runner.Prepare): restore of the pod's tmpfs volumes from the
// captures and node key under stateDir. For benchmarks and tools that run
// a relaunch.Runner themselves.
func VolumeRestore(stateDir string, store *record.Store, log *slog.Logger) (func(context.Context, *record.Pod) error, error) {
	k, err := openVolumes(stateDir, volumes.MountInfo, store, nil, log)
	if err != nil {
		return nil, err
	}
	return k.prepare, nil
}

func newVolumeKeeper(stateDir, mountInfo string, sealer volumes.Sealer, store *record.Store, badRecords []record.LoadError, log *slog.Logger) (*volumeKeeper, error) {
	vs, err := volumes.OpenStore(filepath.Join(stateDir, volumes.DirName))
	if err != nil {
		return nil, err
	}
	c, bad, err := volumes.NewCapturer(volumes.CapturerConfig{Store: vs, Sealer: sealer, MountInfo: mountInfo, Log: log})
	if err != nil {
		return nil, err
	}
	for _, b := range bad {
		log.Error("volume capture unreadable: that pod's volumes come back empty", "file", b.Path, "err", b.Err)
	}
	k := &volumeKeeper{cap: c, store: store, log: log, kick: make(chan string, 256), keep: map[string]bool{}}
	for _, b := range badRecords {
		k.keep[strings.TrimSuffix(filepath.Base(b.Path), ".json")] = true
	}
	for _, p := range store.List() {
		k.trackRecord(p)
	}
	k.captureErrs = prometheus.NewCounter(prometheus.CounterOpts{Name: "holdfast_cri_volume_capture_errors_total", Help: "Failed volume captures (read, seal or write)."})
	k.missing = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "holdfast_cri_relaunch_volumes_missing_total", Help: "Volumes of relaunched pods that came back without their captured content, by reason."}, []string{"reason"})
	k.incomplete = prometheus.NewCounter(prometheus.CounterOpts{Name: "holdfast_cri_relaunch_pods_incomplete_total", Help: "Pods relaunched without the content of some of their volumes."})
	return k, nil
}

func (k *volumeKeeper) collectors() []prometheus.Collector {
	return []prometheus.Collector{k.captureErrs, k.missing, k.incomplete,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "holdfast_cri_volumes_captured", Help: "Volumes whose content is captured."}, func() float64 { return float64(k.cap.Captured()) }),
	}
}

func (k *volumeKeeper) trackRecord(p *record.Pod) {
	req, err := p.SandboxRequest()
	if err != nil {
		return
	}
	k.cap.Track(p.UID, p.Key(), optedOut(req.GetConfig()), podRefs(p))
}

// onCreate learns a new container's volumes; capture happens off kubelet's
// call path.
func (k *volumeKeeper) onCreate(uid, key string, req *runtimeapi.CreateContainerRequest) {
	refs := requestRefs(uid, req)
	if len(refs) == 0 {
		return
	}
	k.cap.Track(uid, key, optedOut(req.GetSandboxConfig()), refs)
	k.kickUID(uid)
}

func (k *volumeKeeper) kickUID(uid string) {
	select {
	case k.kick <- uid:
	default: // the next scan catches up
	}
}

// run captures kicked pods at once and every pod each interval, and drops
// the captures of pods whose record is gone.
func (k *volumeKeeper) run(ctx context.Context, every time.Duration) {
	k.scan()
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case uid := <-k.kick:
			k.scan(uid)
		case <-t.C:
			k.prune()
			k.scan()
		}
	}
}

func (k *volumeKeeper) scan(uids ...string) {
	n, err := k.cap.Scan(uids...)
	if err != nil {
		k.captureErrs.Inc()
		// Once per distinct failure, not every scan.
		if msg := err.Error(); msg != k.lastErr {
			k.lastErr = msg
			k.log.Error("volume capture failed", "err", err)
		}
	} else if len(uids) == 0 {
		k.lastErr = ""
	}
	if n > 0 {
		k.log.Debug("volume captures written", "pods", n)
	}
}

func (k *volumeKeeper) prune() {
	for _, uid := range k.cap.Tracked() {
		if k.store.Has(uid) || k.keep[uid] {
			continue
		}
		if err := k.cap.Forget(uid); err != nil {
			k.log.Error("drop volume capture", "uid", uid, "err", err)
		}
	}
}

// prepare restores the pod's volumes before the relaunch creates its
// sandbox. It never fails the relaunch: a pod whose volumes come back
// without (some of) their content is relaunched all the same, with one log
// line naming the pod and those volumes (docs/volumes.md says why).
func (k *volumeKeeper) prepare(_ context.Context, p *record.Pod) error {
	outs := k.cap.Restore(p.UID, podRefs(p))
	var missing []string
	restored := 0
	for _, o := range outs {
		if o.Missing == "" {
			restored++
			continue
		}
		reason, _, _ := strings.Cut(o.Missing, ":")
		k.missing.WithLabelValues(reason).Inc()
		missing = append(missing, fmt.Sprintf("%s (%s)", o.ID(), o.Missing))
	}
	if len(missing) > 0 {
		k.incomplete.Inc()
		k.log.Warn("relaunching pod without the content of some volumes", "pod", p.Key(), "uid", p.UID, "volumes", strings.Join(missing, ", "))
	} else if restored > 0 {
		k.log.Info("pod volumes restored", "pod", p.Key(), "uid", p.UID, "volumes", restored)
	}
	return nil
}
