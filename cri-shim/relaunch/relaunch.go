// Package relaunch brings back, after an offline reboot, the pods the CRI
// shim recorded as running: it plans which pods to relaunch (Plan, pure),
// runs the relaunches with bounded parallelism (Runner.Run), and restarts
// exited containers of relaunched pods per their restartPolicy with
// kubelet's backoff until kubelet adopts the pod (Runner.Supervise).
//
// It talks to the runtime only through the CRI client it is given and
// writes only through the record store. It never deletes containers or
// sandboxes it did not create in this boot.
package relaunch

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strconv"
	"sync"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/holdfast-edge/holdfast/cri-shim/record"
)

// Kubelet's keys (see package crishim).
const (
	annotationRestarts = "io.kubernetes.container.restartCount"
	annotationSource   = "kubernetes.io/config.source"
)

// Skip is a pod the plan leaves out, with the reason.
type Skip struct {
	Pod    *record.Pod
	Reason string
}

// Plan picks the pods to relaunch in boot bootID: pods whose latest sandbox
// was not stopped by kubelet, was created in an earlier boot, that were not
// already relaunched in this boot, and that are not static pods (kubelet
// starts those from its manifest dir itself).
func Plan(pods []*record.Pod, bootID string) (todo []*record.Pod, skipped []Skip) {
	for _, p := range pods {
		sb := p.LatestSandbox()
		switch {
		case sb == nil:
			skipped = append(skipped, Skip{p, "no sandbox recorded"})
		case sb.Stopped:
			skipped = append(skipped, Skip{p, "kubelet stopped the pod before shutdown"})
		case sb.BootID == bootID:
			skipped = append(skipped, Skip{p, "sandbox already created in this boot"})
		case p.Relaunch != nil && p.Relaunch.BootID == bootID:
			skipped = append(skipped, Skip{p, "already relaunched in this boot"})
		case isStatic(p):
			skipped = append(skipped, Skip{p, "static pod: kubelet starts it from its manifest"})
		default:
			todo = append(todo, p)
		}
	}
	sort.Slice(todo, func(i, j int) bool { return todo[i].Key() < todo[j].Key() })
	return todo, skipped
}

func isStatic(p *record.Pod) bool {
	req, err := p.SandboxRequest()
	if err != nil {
		return false
	}
	return req.GetConfig().GetAnnotations()[annotationSource] == "file"
}

// Order splits a pod's containers into init containers (in creation order)
// and app containers (in start order, never-started ones last).
func Order(p *record.Pod) (inits, apps []*record.Container) {
	isInit := map[string]bool{}
	if p.Facts != nil {
		for _, n := range p.Facts.InitContainers {
			isInit[n] = true
		}
	}
	for _, c := range p.Ordered() {
		if c.Init || isInit[c.Name] {
			inits = append(inits, c)
		} else {
			apps = append(apps, c)
		}
	}
	sort.SliceStable(apps, func(i, j int) bool {
		a, b := apps[i].StartSeq, apps[j].StartSeq
		if a == 0 || b == 0 {
			return a != 0 && b == 0
		}
		return a < b
	})
	return inits, apps
}

// RestartPolicy returns the pod's policy (Always when unknown).
func RestartPolicy(p *record.Pod) string {
	if p.Facts != nil && p.Facts.RestartPolicy != "" {
		return p.Facts.RestartPolicy
	}
	return record.RestartAlways
}

// Result is one pod's relaunch outcome.
type Result struct {
	UID, Pod  string
	SandboxID string
	Err       error
	Took      time.Duration
}

// Kubelet's container restart backoff: the first delay, doubling per
// restart up to the longest.
const (
	DefaultBackoffBase = 10 * time.Second
	DefaultBackoffMax  = 5 * time.Minute
)

// CheckBackoff refuses a restart backoff that is not 0 < base <= max: a
// zero base would restart an exiting container in a tight loop.
func CheckBackoff(base, max time.Duration) error {
	if base <= 0 || max < base {
		return fmt.Errorf("restart backoff %v / max %v: want 0 < backoff <= max", base, max)
	}
	return nil
}

// Runner runs relaunches.
type Runner struct {
	Runtime     runtimeapi.RuntimeServiceClient
	Images      runtimeapi.ImageServiceClient
	Store       *record.Store
	BootID      string
	Parallelism int
	Log         *slog.Logger
	// Lock serialises work on one pod UID with kubelet's calls.
	Lock func(uid string) (unlock func())
	// InitTimeout bounds how long one init container may run.
	InitTimeout time.Duration
	// BackoffBase and BackoffMax: 0 < BackoffBase <= BackoffMax (see
	// CheckBackoff; holdfastd: DefaultBackoffBase and DefaultBackoffMax).
	BackoffBase, BackoffMax time.Duration
	// Now is the clock (time.Now when nil).
	Now func() time.Time
	// Prepare, when set, runs before the pod's sandbox is created (the
	// shim restores the pod's tmpfs volumes there); an error fails the pod.
	Prepare func(ctx context.Context, p *record.Pod) error

	mu      sync.Mutex
	backoff map[string]*backoffState // uid/container → state
}

type backoffState struct {
	delay time.Duration // wait after the next exit
}

func (r *Runner) now() time.Time {
	if r.Now != nil {
		return r.Now()
	}
	return time.Now()
}

func (r *Runner) lock(uid string) func() {
	if r.Lock == nil {
		return func() {}
	}
	return r.Lock(uid)
}

// Run relaunches pods with bounded parallelism and returns one result per
// pod, in the order given. A pod's failure does not stop the others.
func (r *Runner) Run(ctx context.Context, pods []*record.Pod) []Result {
	par := r.Parallelism
	if par < 1 {
		par = 1
	}
	results := make([]Result, len(pods))
	sem := make(chan struct{}, par)
	var wg sync.WaitGroup
	for i, p := range pods {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			start := time.Now()
			id, err := r.relaunchPod(ctx, p)
			results[i] = Result{UID: p.UID, Pod: p.Key(), SandboxID: id, Err: err, Took: time.Since(start)}
			if err != nil {
				r.Log.Error("relaunch failed: pod skipped", "pod", p.Key(), "uid", p.UID, "err", err)
			} else {
				r.Log.Info("pod relaunched", "pod", p.Key(), "uid", p.UID, "sandbox", id, "took", time.Since(start).Round(time.Millisecond))
			}
		}()
	}
	wg.Wait()
	return results
}

func (r *Runner) setOutcome(p *record.Pod, outcome string, sandboxID string, containers map[string]string, err error) {
	uerr := r.Store.Update(p.UID, false, func(rec *record.Pod) (bool, error) {
		rl := &record.Relaunch{BootID: r.BootID, Outcome: outcome, SandboxID: sandboxID, Containers: containers, At: r.now().UTC()}
		if err != nil {
			rl.Error = err.Error()
		}
		if rec.Relaunch != nil && rec.Relaunch.BootID == r.BootID && rec.Relaunch.Adopted {
			rl.Adopted = true
		}
		rec.Relaunch = rl
		return true, nil
	})
	if uerr != nil {
		r.Log.Error("record relaunch outcome", "pod", p.Key(), "err", uerr)
	}
}

// relaunchPod brings one pod back. On failure it removes what it created.
func (r *Runner) relaunchPod(ctx context.Context, p *record.Pod) (string, error) {
	sbReq, err := p.SandboxRequest()
	if err != nil {
		r.setOutcome(p, record.OutcomeFailed, "", nil, err)
		return "", err
	}
	inits, apps := Order(p)
	// Check images first: a missing image fails the pod before anything is created.
	for _, c := range append(append([]*record.Container{}, inits...), apps...) {
		req, err := c.ContainerRequest()
		if err != nil {
			r.setOutcome(p, record.OutcomeFailed, "", nil, err)
			return "", err
		}
		if r.Images != nil {
			st, err := r.Images.ImageStatus(ctx, &runtimeapi.ImageStatusRequest{Image: req.GetConfig().GetImage()})
			if err != nil {
				err = fmt.Errorf("container %s: image status %s: %w", c.Name, req.GetConfig().GetImage().GetImage(), err)
				r.setOutcome(p, record.OutcomeFailed, "", nil, err)
				return "", err
			}
			if st.GetImage() == nil {
				err = fmt.Errorf("container %s: image %s is not present on the node", c.Name, req.GetConfig().GetImage().GetImage())
				r.setOutcome(p, record.OutcomeFailed, "", nil, err)
				return "", err
			}
		}
	}

	unlock := r.lock(p.UID)
	cur, ok := r.Store.Get(p.UID)
	if !ok {
		unlock()
		return "", errors.New("record vanished (kubelet removed the pod)")
	}
	if cur.Relaunch != nil && cur.Relaunch.BootID == r.BootID {
		unlock()
		return cur.Relaunch.SandboxID, nil // done already (shim restarted)
	}
	if sb := cur.LatestSandbox(); sb != nil && sb.BootID == r.BootID {
		unlock()
		return "", fmt.Errorf("kubelet already created sandbox %s in this boot", sb.ID)
	}
	if r.Prepare != nil {
		if err := r.Prepare(ctx, cur); err != nil {
			unlock()
			err = fmt.Errorf("prepare: %w", err)
			r.setOutcome(p, record.OutcomeFailed, "", nil, err)
			return "", err
		}
	}
	var attempt uint32
	for _, s := range cur.Sandboxes {
		if s.Attempt >= attempt {
			attempt = s.Attempt + 1
		}
	}
	sbReq.Config.Metadata.Attempt = attempt
	resp, err := r.Runtime.RunPodSandbox(ctx, sbReq)
	if err != nil {
		unlock()
		err = fmt.Errorf("RunPodSandbox: %w", err)
		r.setOutcome(p, record.OutcomeFailed, "", nil, err)
		return "", err
	}
	sid := resp.GetPodSandboxId()
	raw, _ := record.MarshalProto(sbReq)
	containers := map[string]string{}
	err = r.Store.Update(p.UID, false, func(rec *record.Pod) (bool, error) {
		rec.Sandbox = raw
		rec.Sandboxes = append(rec.Sandboxes, record.Sandbox{ID: sid, Attempt: attempt, BootID: r.BootID, Created: r.now().UTC()})
		rec.Relaunch = &record.Relaunch{BootID: r.BootID, Outcome: record.OutcomeRelaunching, SandboxID: sid, Containers: map[string]string{}, At: r.now().UTC()}
		return true, nil
	})
	unlock()
	if err != nil {
		r.undo(p, sid, err)
		return "", err
	}

	for _, c := range inits {
		if err := r.runInit(ctx, p, sbReq, sid, c, containers); err != nil {
			r.undo(p, sid, err)
			return "", err
		}
	}
	for _, c := range apps {
		if _, err := r.startContainer(ctx, p, sbReq, sid, c, containers); err != nil {
			r.undo(p, sid, err)
			return "", err
		}
	}
	err = r.Store.Update(p.UID, false, func(rec *record.Pod) (bool, error) {
		if rec.Relaunch == nil || rec.Relaunch.SandboxID != sid {
			return false, nil
		}
		rec.Relaunch.Outcome, rec.Relaunch.At = record.OutcomeRelaunched, r.now().UTC()
		return true, nil
	})
	return sid, err
}

// undo removes the sandbox (and with it its containers) after a failed
// relaunch and records the failure.
func (r *Runner) undo(p *record.Pod, sid string, cause error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := r.Runtime.StopPodSandbox(ctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: sid}); err != nil {
		r.Log.Error("undo relaunch: stop sandbox", "pod", p.Key(), "sandbox", sid, "err", err)
	}
	if _, err := r.Runtime.RemovePodSandbox(ctx, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: sid}); err != nil {
		r.Log.Error("undo relaunch: remove sandbox", "pod", p.Key(), "sandbox", sid, "err", err)
	}
	err := r.Store.Update(p.UID, false, func(rec *record.Pod) (bool, error) {
		var kept []record.Sandbox
		for _, s := range rec.Sandboxes {
			if s.ID != sid {
				kept = append(kept, s)
			}
		}
		if len(kept) > 0 { // else keep the record: kubelet did not remove the pod
			rec.Sandboxes = kept
		}
		rec.Relaunch = &record.Relaunch{BootID: r.BootID, Outcome: record.OutcomeFailed, Error: cause.Error(), At: r.now().UTC()}
		return true, nil
	})
	if err != nil {
		r.Log.Error("record relaunch failure", "pod", p.Key(), "err", err)
	}
}

// startContainer creates and starts the next instance of c in sandbox sid.
func (r *Runner) startContainer(ctx context.Context, p *record.Pod, sbReq *runtimeapi.RunPodSandboxRequest, sid string, c *record.Container, containers map[string]string) (string, error) {
	req, err := c.ContainerRequest()
	if err != nil {
		return "", err
	}
	cur, ok := r.Store.Get(p.UID)
	if !ok {
		return "", errors.New("record vanished (kubelet removed the pod)")
	}
	attempt := c.Attempt + 1
	if rc := cur.Containers[c.Name]; rc != nil && rc.Attempt+1 > attempt {
		attempt = rc.Attempt + 1
	}
	req.PodSandboxId = sid
	req.SandboxConfig = sbReq.GetConfig()
	req.Config.Metadata.Attempt = attempt
	if req.Config.Annotations == nil {
		req.Config.Annotations = map[string]string{}
	}
	req.Config.Annotations[annotationRestarts] = strconv.FormatUint(uint64(attempt), 10)
	// kubelet names container logs <name>/<restartCount>.log.
	if lp := req.Config.GetLogPath(); lp == c.Name+"/"+strconv.FormatUint(uint64(c.Attempt), 10)+".log" || lp == "" {
		req.Config.LogPath = c.Name + "/" + strconv.FormatUint(uint64(attempt), 10) + ".log"
	}
	unlock := r.lock(p.UID)
	defer unlock()
	cr, err := r.Runtime.CreateContainer(ctx, req)
	if err != nil {
		return "", fmt.Errorf("create container %s: %w", c.Name, err)
	}
	id := cr.GetContainerId()
	raw, _ := record.MarshalProto(req)
	containers[c.Name] = id
	snapshot := map[string]string{}
	for k, v := range containers {
		snapshot[k] = v
	}
	err = r.Store.UpdateVolatile(p.UID, func(rec *record.Pod) (bool, error) {
		rc := rec.Containers[c.Name]
		if rc == nil {
			rc = &record.Container{Name: c.Name, CreateSeq: c.CreateSeq, Init: c.Init}
			rec.Containers[c.Name] = rc
		}
		rc.Request, rc.ID, rc.SandboxID, rc.Attempt, rc.State, rc.ExitCode = raw, id, sid, attempt, record.StateCreated, 0
		if rec.Relaunch != nil && rec.Relaunch.BootID == r.BootID {
			rec.Relaunch.Containers = snapshot
		}
		return true, nil
	})
	if err != nil {
		return id, err
	}
	if _, err := r.Runtime.StartContainer(ctx, &runtimeapi.StartContainerRequest{ContainerId: id}); err != nil {
		return id, fmt.Errorf("start container %s: %w", c.Name, err)
	}
	err = r.Store.UpdateVolatile(p.UID, func(rec *record.Pod) (bool, error) {
		if rc := rec.Containers[c.Name]; rc != nil && rc.ID == id {
			rc.State = record.StateRunning
			if rc.StartSeq == 0 {
				rec.NextSeq++
				rc.StartSeq = rec.NextSeq
			}
		}
		return true, nil
	})
	return id, err
}

func (r *Runner) runInit(ctx context.Context, p *record.Pod, sbReq *runtimeapi.RunPodSandboxRequest, sid string, c *record.Container, containers map[string]string) error {
	id, err := r.startContainer(ctx, p, sbReq, sid, c, containers)
	if err != nil {
		return err
	}
	timeout := r.InitTimeout
	if timeout <= 0 {
		timeout = 5 * time.Minute
	}
	deadline := time.Now().Add(timeout)
	for {
		st, err := r.Runtime.ContainerStatus(ctx, &runtimeapi.ContainerStatusRequest{ContainerId: id})
		if err != nil {
			return fmt.Errorf("init container %s: status: %w", c.Name, err)
		}
		if st.GetStatus().GetState() == runtimeapi.ContainerState_CONTAINER_EXITED {
			code := st.GetStatus().GetExitCode()
			r.Store.UpdateVolatile(p.UID, func(rec *record.Pod) (bool, error) {
				if rc := rec.Containers[c.Name]; rc != nil && rc.ID == id {
					rc.State, rc.ExitCode, rc.Init = record.StateExited, code, true
				}
				return true, nil
			})
			if code != 0 {
				return fmt.Errorf("init container %s exited %d", c.Name, code)
			}
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("init container %s still running after %s", c.Name, timeout)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// Supervise restarts exited app containers of pods relaunched in this boot
// and not yet adopted by kubelet, per the pod's restartPolicy, with
// kubelet's backoff (BackoffBase doubling to BackoffMax). It returns when
// ctx ends.
func (r *Runner) Supervise(ctx context.Context, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		r.SuperviseOnce(ctx)
	}
}

// SuperviseOnce does one pass of Supervise. It copies only the records it
// supervises: on a node at rest (no offline reboot, or every relaunched pod
// adopted) it copies none.
func (r *Runner) SuperviseOnce(ctx context.Context) {
	for _, p := range r.Store.Select(r.supervised) {
		rl := p.Relaunch
		policy := RestartPolicy(p)
		for name, id := range rl.Containers {
			c := p.Containers[name]
			if c == nil || c.Init {
				continue
			}
			st, err := r.Runtime.ContainerStatus(ctx, &runtimeapi.ContainerStatusRequest{ContainerId: id})
			if err != nil || st.GetStatus().GetState() != runtimeapi.ContainerState_CONTAINER_EXITED {
				continue
			}
			code := st.GetStatus().GetExitCode()
			restart := policy == record.RestartAlways || (policy == record.RestartOnFailure && code != 0)
			if !restart {
				if c.State != record.StateExited {
					r.Log.Info("relaunched container exited: not restarting per restartPolicy", "pod", p.Key(), "container", name, "exitCode", code, "restartPolicy", policy)
					r.Store.Update(p.UID, false, func(rec *record.Pod) (bool, error) {
						if rc := rec.Containers[name]; rc != nil && rc.ID == id {
							rc.State, rc.ExitCode = record.StateExited, code
						}
						return true, nil
					})
				}
				continue
			}
			finished := time.Unix(0, st.GetStatus().GetFinishedAt())
			if !r.due(p.UID+"/"+name, finished) {
				continue
			}
			sbReq, err := p.SandboxRequest()
			if err != nil {
				continue
			}
			containers := map[string]string{}
			for k, v := range rl.Containers {
				containers[k] = v
			}
			newID, err := r.startContainer(ctx, p, sbReq, rl.SandboxID, c, containers)
			if err != nil {
				r.Log.Error("restart of relaunched container failed", "pod", p.Key(), "container", name, "err", err)
				continue
			}
			// Persist the restart (startContainer records volatilely).
			if err := r.Store.Update(p.UID, false, func(*record.Pod) (bool, error) { return true, nil }); err != nil {
				r.Log.Error("record restart", "pod", p.Key(), "container", name, "err", err)
			}
			r.Log.Info("restarted exited relaunched container", "pod", p.Key(), "container", name, "exitCode", code, "id", newID, "restartPolicy", policy)
		}
	}
}

// supervised reports whether Supervise looks after the pod: relaunched in
// this boot and not adopted by kubelet yet. (A record.Store.Select
// predicate: it only reads the record.)
func (r *Runner) supervised(p *record.Pod) bool {
	rl := p.Relaunch
	return rl != nil && rl.BootID == r.BootID && rl.Outcome == record.OutcomeRelaunched && !rl.Adopted
}

// due reports whether a container that finished at finished may restart
// now, and if so advances its backoff.
func (r *Runner) due(key string, finished time.Time) bool {
	base, max := r.BackoffBase, r.BackoffMax
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.backoff == nil {
		r.backoff = map[string]*backoffState{}
	}
	b, ok := r.backoff[key]
	if !ok {
		b = &backoffState{delay: base}
		r.backoff[key] = b
	}
	if r.now().Before(finished.Add(b.delay)) {
		return false
	}
	b.delay = min(2*b.delay, max)
	return true
}
