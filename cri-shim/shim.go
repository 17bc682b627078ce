package crishim

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/holdfast-edge/holdfast/cri-shim/proxy"
	"github.com/holdfast-edge/holdfast/cri-shim/record"
)

// Kubelet's label and annotation keys (pkg/kubelet/types/labels.go and
// kuberuntime/labels.go in kubernetes).
const (
	LabelPodUID          = "io.kubernetes.pod.uid"
	LabelPodName         = "io.kubernetes.pod.name"
	LabelPodNamespace    = "io.kubernetes.pod.namespace"
	LabelContainerName   = "io.kubernetes.container.name"
	AnnotationHash       = "io.kubernetes.container.hash"
	AnnotationRestarts   = "io.kubernetes.container.restartCount"
	AnnotationSource     = "kubernetes.io/config.source"
	SourceFile           = "file"
	methodRunPodSandbox  = "/runtime.v1.RuntimeService/RunPodSandbox"
	methodStopPodSandbox = "/runtime.v1.RuntimeService/StopPodSandbox"
	methodRemoveSandbox  = "/runtime.v1.RuntimeService/RemovePodSandbox"
	methodCreate         = "/runtime.v1.RuntimeService/CreateContainer"
	methodStart          = "/runtime.v1.RuntimeService/StartContainer"
	methodStop           = "/runtime.v1.RuntimeService/StopContainer"
	methodRemove         = "/runtime.v1.RuntimeService/RemoveContainer"
)

// podLocks serialises kubelet's calls and the relaunch for one pod UID, so
// the shim never creates a second sandbox for a pod kubelet asks about
// while it is being relaunched.
type podLocks struct {
	mu sync.Mutex
	m  map[string]*podLock
}

type podLock struct {
	mu   sync.Mutex
	refs int
}

func (l *podLocks) Lock(uid string) func() {
	l.mu.Lock()
	if l.m == nil {
		l.m = map[string]*podLock{}
	}
	pl, ok := l.m[uid]
	if !ok {
		pl = &podLock{}
		l.m[uid] = pl
	}
	pl.refs++
	l.mu.Unlock()
	pl.mu.Lock()
	return func() {
		pl.mu.Unlock()
		l.mu.Lock()
		pl.refs--
		if pl.refs == 0 {
			delete(l.m, uid)
		}
		l.mu.Unlock()
	}
}

// interceptor records kubelet's mutating calls and deduplicates them
// against relaunched pods.
type interceptor struct {
	rt     runtimeapi.RuntimeServiceClient
	store  *record.Store
	locks  *podLocks
	bootID string
	log    *slog.Logger
	vols   *volumeKeeper // nil: volume capture off
	onErr  func(what string, err error)
	// unreadable: UIDs whose record file is unreadable; the import leaves
	// them alone rather than write over the file.
	unreadable map[string]bool
}

func (ic *interceptor) register(s *proxy.Server) {
	proxy.HandleUnary(s, methodRunPodSandbox, ic.RunPodSandbox)
	proxy.HandleUnary(s, methodStopPodSandbox, ic.StopPodSandbox)
	proxy.HandleUnary(s, methodRemoveSandbox, ic.RemovePodSandbox)
	proxy.HandleUnary(s, methodCreate, ic.CreateContainer)
	proxy.HandleUnary(s, methodStart, ic.StartContainer)
	proxy.HandleUnary(s, methodStop, ic.StopContainer)
	proxy.HandleUnary(s, methodRemove, ic.RemoveContainer)
}

// recordErr logs a failed record write. The call already succeeded in
// containerd, so kubelet gets containerd's answer; the record catches up on
// the next call for the pod.
func (ic *interceptor) recordErr(what string, pod string, err error) {
	ic.log.Error("record write failed", "call", what, "pod", pod, "err", err)
	if ic.onErr != nil {
		ic.onErr(what, err)
	}
}

func (ic *interceptor) RunPodSandbox(ctx context.Context, req *runtimeapi.RunPodSandboxRequest) (*runtimeapi.RunPodSandboxResponse, error) {
	md := req.GetConfig().GetMetadata()
	if md == nil || md.GetUid() == "" {
		return nil, status.Error(codes.InvalidArgument, "RunPodSandbox: config.metadata with a pod uid is required")
	}
	if err := record.ValidUID(md.GetUid()); err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "RunPodSandbox: %v", err)
	}
	uid, key := md.GetUid(), md.GetNamespace()+"/"+md.GetName()
	unlock := ic.locks.Lock(uid)
	defer unlock()

	if id := ic.relaunchedSandbox(ctx, uid); id != "" {
		ic.log.Info("kubelet asked for a sandbox already relaunched: returning it", "pod", key, "uid", uid, "sandbox", id, "attempt", md.GetAttempt())
		ic.markAdopted(uid, key)
		return &runtimeapi.RunPodSandboxResponse{PodSandboxId: id}, nil
	}
	resp, err := ic.rt.RunPodSandbox(ctx, req)
	if err != nil {
		return nil, err
	}
	raw, merr := record.MarshalProto(req)
	if merr != nil {
		ic.recordErr("RunPodSandbox", key, merr)
		return resp, nil
	}
	now := time.Now().UTC()
	err = ic.store.Update(uid, true, func(p *record.Pod) (bool, error) {
		p.Name, p.Namespace = md.GetName(), md.GetNamespace()
		p.Sandbox = raw
		p.RuntimeHandler = req.GetRuntimeHandler()
		p.Sandboxes = append(p.Sandboxes, record.Sandbox{ID: resp.GetPodSandboxId(), Attempt: md.GetAttempt(), BootID: ic.bootID, Created: now})
		if p.Relaunch != nil && p.Relaunch.BootID == ic.bootID {
			p.Relaunch.Adopted = true // kubelet made its own sandbox: the pod is its again
		}
		return true, nil
	})
	if err != nil {
		ic.recordErr("RunPodSandbox", key, err)
	}
	return resp, nil
}

// relaunchedSandbox returns the sandbox the shim relaunched for uid in this
// boot if it is still ready.
func (ic *interceptor) relaunchedSandbox(ctx context.Context, uid string) string {
	p, ok := ic.store.Get(uid)
	if !ok || p.Relaunch == nil || p.Relaunch.BootID != ic.bootID || p.Relaunch.SandboxID == "" ||
		(p.Relaunch.Outcome != record.OutcomeRelaunched && p.Relaunch.Outcome != record.OutcomeRelaunching) {
		return ""
	}
	st, err := ic.rt.PodSandboxStatus(ctx, &runtimeapi.PodSandboxStatusRequest{PodSandboxId: p.Relaunch.SandboxID})
	if err != nil || st.GetStatus().GetState() != runtimeapi.PodSandboxState_SANDBOX_READY {
		return ""
	}
	return p.Relaunch.SandboxID
}

func (ic *interceptor) markAdopted(uid, key string) {
	err := ic.store.Update(uid, false, func(p *record.Pod) (bool, error) {
		if p.Relaunch == nil || p.Relaunch.Adopted || p.Relaunch.BootID != ic.bootID {
			return false, nil
		}
		p.Relaunch.Adopted = true
		return true, nil
	})
	if err != nil {
		ic.recordErr("adopt", key, err)
	}
}

func (ic *interceptor) uidFor(sandboxID string, cfg *runtimeapi.PodSandboxConfig) string {
	if uid, ok := ic.store.UIDForSandbox(sandboxID); ok {
		return uid
	}
	if uid := cfg.GetMetadata().GetUid(); record.ValidUID(uid) == nil {
		return uid
	}
	return ""
}

func (ic *interceptor) CreateContainer(ctx context.Context, req *runtimeapi.CreateContainerRequest) (*runtimeapi.CreateContainerResponse, error) {
	cmd := req.GetConfig().GetMetadata()
	if cmd == nil || cmd.GetName() == "" {
		return nil, status.Error(codes.InvalidArgument, "CreateContainer: config.metadata with a container name is required")
	}
	uid := ic.uidFor(req.GetPodSandboxId(), req.GetSandboxConfig())
	if uid == "" {
		return ic.rt.CreateContainer(ctx, req) // not a pod we can record
	}
	unlock := ic.locks.Lock(uid)
	defer unlock()
	p, known := ic.store.Get(uid)
	key := req.GetSandboxConfig().GetMetadata().GetNamespace() + "/" + req.GetSandboxConfig().GetMetadata().GetName()
	if known {
		key = p.Key()
	}
	name := cmd.GetName()
	if known && p.Relaunch != nil && p.Relaunch.BootID == ic.bootID && p.Relaunch.SandboxID == req.GetPodSandboxId() && p.Relaunch.Outcome != record.OutcomeFailed {
		if id := p.Relaunch.Containers[name]; id != "" {
			st, err := ic.rt.ContainerStatus(ctx, &runtimeapi.ContainerStatusRequest{ContainerId: id})
			if err == nil {
				s := st.GetStatus()
				reuse := s.GetState() == runtimeapi.ContainerState_CONTAINER_RUNNING || s.GetState() == runtimeapi.ContainerState_CONTAINER_CREATED
				if c := p.Containers[name]; c != nil && c.Init && s.GetState() == runtimeapi.ContainerState_CONTAINER_EXITED && s.GetExitCode() == 0 {
					reuse = true
				}
				if reuse {
					ic.log.Info("kubelet asked for a container already relaunched: returning it", "pod", key, "uid", uid, "container", name, "id", id)
					ic.markAdopted(uid, key)
					return &runtimeapi.CreateContainerResponse{ContainerId: id}, nil
				}
			}
		}
	}
	// Infer init containers: the previous container of this sandbox exited
	// 0 before this one was created.
	var prevInit string
	if known {
		var prev *record.Container
		for _, c := range p.Containers {
			if c.SandboxID == req.GetPodSandboxId() && c.Name != name && c.ID != "" && (prev == nil || c.CreateSeq > prev.CreateSeq) {
				prev = c
			}
		}
		if prev != nil && !prev.Init {
			st, err := ic.rt.ContainerStatus(ctx, &runtimeapi.ContainerStatusRequest{ContainerId: prev.ID})
			if err == nil && st.GetStatus().GetState() == runtimeapi.ContainerState_CONTAINER_EXITED && st.GetStatus().GetExitCode() == 0 {
				prevInit = prev.Name
			}
		}
	}
	resp, err := ic.rt.CreateContainer(ctx, req)
	if err != nil {
		return nil, err
	}
	raw, merr := record.MarshalProto(req)
	if merr != nil {
		ic.recordErr("CreateContainer", key, merr)
		return resp, nil
	}
	err = ic.store.Update(uid, false, func(p *record.Pod) (bool, error) {
		if prevInit != "" {
			if c := p.Containers[prevInit]; c != nil {
				c.Init, c.State = true, record.StateExited
			}
		}
		c := p.Containers[name]
		if c == nil {
			c = &record.Container{Name: name}
			p.Containers[name] = c
		}
		p.NextSeq++
		c.Request, c.ID, c.SandboxID, c.Attempt = raw, resp.GetContainerId(), req.GetPodSandboxId(), cmd.GetAttempt()
		c.CreateSeq, c.StartSeq, c.State, c.ExitCode = p.NextSeq, 0, record.StateCreated, 0
		if p.Relaunch != nil && p.Relaunch.BootID == ic.bootID && !p.Relaunch.Adopted {
			p.Relaunch.Adopted = true
		}
		return true, nil
	})
	if err != nil {
		ic.recordErr("CreateContainer", key, err)
	}
	if ic.vols != nil {
		ic.vols.onCreate(uid, key, req)
	}
	return resp, nil
}

// setContainer updates the recorded container with this ID.
func (ic *interceptor) setContainer(call, id string, fn func(p *record.Pod, c *record.Container) bool) {
	uid, ok := ic.store.UIDForContainer(id)
	if !ok {
		return
	}
	var key string
	err := ic.store.Update(uid, false, func(p *record.Pod) (bool, error) {
		key = p.Key()
		for _, c := range p.Containers {
			if c.ID == id {
				return fn(p, c), nil
			}
		}
		return false, nil
	})
	if err != nil {
		ic.recordErr(call, key, err)
	}
}

// isRelaunched reports whether id is a container the shim started this boot.
func isRelaunched(p *record.Pod, bootID, id string) bool {
	if p.Relaunch == nil || p.Relaunch.BootID != bootID {
		return false
	}
	for _, cid := range p.Relaunch.Containers {
		if cid == id {
			return true
		}
	}
	return false
}

func (ic *interceptor) StartContainer(ctx context.Context, req *runtimeapi.StartContainerRequest) (*runtimeapi.StartContainerResponse, error) {
	id := req.GetContainerId()
	if uid, ok := ic.store.UIDForContainer(id); ok {
		unlock := ic.locks.Lock(uid)
		defer unlock()
		if p, ok := ic.store.Get(uid); ok && isRelaunched(p, ic.bootID, id) {
			st, err := ic.rt.ContainerStatus(ctx, &runtimeapi.ContainerStatusRequest{ContainerId: id})
			if err == nil && st.GetStatus().GetState() != runtimeapi.ContainerState_CONTAINER_CREATED {
				ic.log.Info("kubelet started a container the shim already started: nothing to do", "pod", p.Key(), "container", st.GetStatus().GetMetadata().GetName(), "id", id)
				ic.markAdopted(uid, p.Key())
				return &runtimeapi.StartContainerResponse{}, nil
			}
		}
	}
	resp, err := ic.rt.StartContainer(ctx, req)
	if err != nil {
		return nil, err
	}
	ic.setContainer("StartContainer", id, func(p *record.Pod, c *record.Container) bool {
		p.NextSeq++
		c.StartSeq, c.State = p.NextSeq, record.StateRunning
		return true
	})
	if ic.vols != nil {
		if uid, ok := ic.store.UIDForContainer(id); ok {
			ic.vols.kickUID(uid)
		}
	}
	return resp, nil
}

func (ic *interceptor) StopContainer(ctx context.Context, req *runtimeapi.StopContainerRequest) (*runtimeapi.StopContainerResponse, error) {
	resp, err := ic.rt.StopContainer(ctx, req)
	if err != nil {
		return nil, err
	}
	ic.setContainer("StopContainer", req.GetContainerId(), func(p *record.Pod, c *record.Container) bool {
		c.State = record.StateStopped
		if isRelaunched(p, ic.bootID, c.ID) {
			p.Relaunch.Adopted = true
		}
		return true
	})
	return resp, nil
}

func (ic *interceptor) RemoveContainer(ctx context.Context, req *runtimeapi.RemoveContainerRequest) (*runtimeapi.RemoveContainerResponse, error) {
	resp, err := ic.rt.RemoveContainer(ctx, req)
	if err != nil {
		return nil, err
	}
	// The config stays: kubelet garbage-collects dead instances of
	// containers that live on.
	ic.setContainer("RemoveContainer", req.GetContainerId(), func(p *record.Pod, c *record.Container) bool {
		c.State = record.StateRemoved
		return true
	})
	return resp, nil
}

func (ic *interceptor) StopPodSandbox(ctx context.Context, req *runtimeapi.StopPodSandboxRequest) (*runtimeapi.StopPodSandboxResponse, error) {
	resp, err := ic.rt.StopPodSandbox(ctx, req)
	if err != nil {
		return nil, err
	}
	id := req.GetPodSandboxId()
	ic.updateSandboxPod("StopPodSandbox", id, func(p *record.Pod) bool {
		for i := range p.Sandboxes {
			if p.Sandboxes[i].ID == id && !p.Sandboxes[i].Stopped {
				p.Sandboxes[i].Stopped = true
				if p.Relaunch != nil && p.Relaunch.SandboxID == id && p.Relaunch.BootID == ic.bootID {
					p.Relaunch.Adopted = true
				}
				return true
			}
		}
		return false
	})
	return resp, nil
}

func (ic *interceptor) RemovePodSandbox(ctx context.Context, req *runtimeapi.RemovePodSandboxRequest) (*runtimeapi.RemovePodSandboxResponse, error) {
	resp, err := ic.rt.RemovePodSandbox(ctx, req)
	if err != nil {
		return nil, err
	}
	id := req.GetPodSandboxId()
	ic.updateSandboxPod("RemovePodSandbox", id, func(p *record.Pod) bool {
		kept := p.Sandboxes[:0]
		for _, s := range p.Sandboxes {
			if s.ID != id {
				kept = append(kept, s)
			}
		}
		p.Sandboxes = kept
		if len(kept) == 0 {
			ic.log.Info("kubelet removed the pod's last sandbox: dropping its record", "pod", p.Key(), "uid", p.UID)
		}
		return true
	})
	return resp, nil
}

// updateSandboxPod applies fn to the record of the pod owning sandbox id (if
// the shim knows it) and logs a failed write; kubelet's call has succeeded
// at the runtime either way.
func (ic *interceptor) updateSandboxPod(call, id string, fn func(p *record.Pod) bool) {
	uid, ok := ic.store.UIDForSandbox(id)
	if !ok {
		return
	}
	var key string
	err := ic.store.Update(uid, false, func(p *record.Pod) (bool, error) {
		key = p.Key()
		return fn(p), nil
	})
	if err != nil {
		ic.recordErr(call, key, err)
	}
}
