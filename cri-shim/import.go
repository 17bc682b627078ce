package crishim

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/holdfast-edge/holdfast/cri-shim/record"
)

// Pods that run before the shim does — every pod of a live node holdfast
// is installed on, and pods kubelet created while the shim was down — were
// never seen by the shim, so an offline reboot would not bring them back.
// importUnrecorded records them from containerd's own copy of kubelet's
// requests: the verbose PodSandboxStatus and ContainerStatus carry the
// PodSandboxConfig and ContainerConfig the sandbox and containers were
// created with.

// runtimeInfo is the part of containerd's verbose status info ("info" key,
// JSON) the import reads: the config the object was created with.
type runtimeInfo[T any] struct {
	Config *T `json:"config"`
}

// verboseConfig decodes the config in a verbose status info map.
func verboseConfig[T any](info map[string]string, what string) (*T, error) {
	raw, ok := info["info"]
	if !ok {
		return nil, fmt.Errorf("%s: no verbose info from the runtime", what)
	}
	var ri runtimeInfo[T]
	if err := json.Unmarshal([]byte(raw), &ri); err != nil {
		return nil, fmt.Errorf("%s: verbose info: %w", what, err)
	}
	if ri.Config == nil {
		return nil, fmt.Errorf("%s: verbose info has no config", what)
	}
	return ri.Config, nil
}

// importUnrecorded records every ready sandbox the records do not know,
// with its containers; it returns how many pods it recorded. A pod that
// fails is logged and skipped: the others go on.
func (ic *interceptor) importUnrecorded(ctx context.Context) (int, error) {
	resp, err := ic.rt.ListPodSandbox(ctx, &runtimeapi.ListPodSandboxRequest{Filter: &runtimeapi.PodSandboxFilter{
		State: &runtimeapi.PodSandboxStateValue{State: runtimeapi.PodSandboxState_SANDBOX_READY}}})
	if err != nil {
		return 0, fmt.Errorf("list sandboxes: %w", err)
	}
	n := 0
	for _, sb := range resp.GetItems() {
		if _, known := ic.store.UIDForSandbox(sb.GetId()); known {
			continue
		}
		uid := sb.GetMetadata().GetUid()
		if record.ValidUID(uid) != nil {
			continue // not a kubelet pod
		}
		key := sb.GetMetadata().GetNamespace() + "/" + sb.GetMetadata().GetName()
		ok, err := ic.importPod(ctx, uid, sb.GetId())
		if err != nil {
			ic.log.Error("running pod not recorded: an offline reboot will not bring it back until kubelet recreates it", "pod", key, "sandbox", sb.GetId(), "err", err)
			continue
		}
		if ok {
			ic.log.Info("recorded a pod that was running before the shim saw it", "pod", key, "uid", uid, "sandbox", sb.GetId())
			n++
		}
	}
	return n, nil
}

// importPod records sandbox id of pod uid and its containers: a new record,
// or, when the pod has one (kubelet made this sandbox while the shim was
// down), the sandbox added to it as kubelet's calls would have added it.
func (ic *interceptor) importPod(ctx context.Context, uid, id string) (bool, error) {
	unlock := ic.locks.Lock(uid)
	defer unlock()
	if _, known := ic.store.UIDForSandbox(id); known || ic.unreadable[uid] {
		return false, nil
	}
	st, err := ic.rt.PodSandboxStatus(ctx, &runtimeapi.PodSandboxStatusRequest{PodSandboxId: id, Verbose: true})
	if err != nil {
		return false, fmt.Errorf("sandbox status: %w", err)
	}
	cfg, err := verboseConfig[runtimeapi.PodSandboxConfig](st.GetInfo(), "sandbox "+id)
	if err != nil {
		return false, err
	}
	if cfg.GetMetadata().GetUid() != uid {
		return false, fmt.Errorf("sandbox %s: config names pod uid %q, its metadata %q", id, cfg.GetMetadata().GetUid(), uid)
	}
	handler := st.GetStatus().GetRuntimeHandler()
	sandboxReq, err := record.MarshalProto(&runtimeapi.RunPodSandboxRequest{Config: cfg, RuntimeHandler: handler})
	if err != nil {
		return false, err
	}
	containers, reqs, err := ic.importContainers(ctx, id, cfg)
	if err != nil {
		return false, err
	}
	md := cfg.GetMetadata()
	err = ic.store.Update(uid, true, func(p *record.Pod) (bool, error) {
		if latest := p.LatestSandbox(); latest == nil || md.GetAttempt() >= latest.Attempt {
			p.Name, p.Namespace = md.GetName(), md.GetNamespace()
			p.Sandbox, p.RuntimeHandler = sandboxReq, handler
		}
		p.Sandboxes = append(p.Sandboxes, record.Sandbox{ID: id, Attempt: md.GetAttempt(), BootID: ic.bootID, Created: time.Unix(0, st.GetStatus().GetCreatedAt()).UTC()})
		base := p.NextSeq
		for _, c := range containers {
			c.CreateSeq += base
			if c.StartSeq > 0 {
				c.StartSeq += base
			}
			p.Containers[c.Name] = c
			p.NextSeq = max(p.NextSeq, c.CreateSeq, c.StartSeq)
		}
		return true, nil
	})
	if err != nil {
		return false, err
	}
	if ic.vols != nil {
		for _, req := range reqs {
			ic.vols.onCreate(uid, md.GetNamespace()+"/"+md.GetName(), req)
		}
	}
	return true, nil
}

// importedContainer is one container of the sandbox as containerd has it.
type importedContainer struct {
	status *runtimeapi.ContainerStatus
	req    *runtimeapi.CreateContainerRequest
}

// importContainers reads the sandbox's containers: per name the latest
// instance, ordered by creation and start as the record orders them, an
// exited-0 container that another was created after marked init (the
// inference CreateContainer makes; the apiserver's facts correct it).
func (ic *interceptor) importContainers(ctx context.Context, sandboxID string, sandbox *runtimeapi.PodSandboxConfig) ([]*record.Container, []*runtimeapi.CreateContainerRequest, error) {
	list, err := ic.rt.ListContainers(ctx, &runtimeapi.ListContainersRequest{Filter: &runtimeapi.ContainerFilter{PodSandboxId: sandboxID}})
	if err != nil {
		return nil, nil, fmt.Errorf("list containers: %w", err)
	}
	latest := map[string]importedContainer{}
	for _, c := range list.GetContainers() {
		st, err := ic.rt.ContainerStatus(ctx, &runtimeapi.ContainerStatusRequest{ContainerId: c.GetId(), Verbose: true})
		if err != nil {
			return nil, nil, fmt.Errorf("container %s status: %w", c.GetId(), err)
		}
		cfg, err := verboseConfig[runtimeapi.ContainerConfig](st.GetInfo(), "container "+c.GetId())
		if err != nil {
			return nil, nil, err
		}
		name := cfg.GetMetadata().GetName()
		if name == "" {
			return nil, nil, errors.New("container " + c.GetId() + ": config without a name")
		}
		if prev, ok := latest[name]; ok && prev.status.GetCreatedAt() > st.GetStatus().GetCreatedAt() {
			continue
		}
		latest[name] = importedContainer{status: st.GetStatus(), req: &runtimeapi.CreateContainerRequest{PodSandboxId: sandboxID, Config: cfg, SandboxConfig: sandbox}}
	}
	all := make([]importedContainer, 0, len(latest))
	for _, c := range latest {
		all = append(all, c)
	}
	return orderImported(all)
}

// orderImported turns the containers into records: CreateSeq by creation
// time, StartSeq by start time (after every creation, as the record's own
// sequence would interleave them no earlier), state and exit code as now.
func orderImported(all []importedContainer) ([]*record.Container, []*runtimeapi.CreateContainerRequest, error) {
	sort.Slice(all, func(i, j int) bool { return all[i].status.GetCreatedAt() < all[j].status.GetCreatedAt() })
	out := make([]*record.Container, len(all))
	reqs := make([]*runtimeapi.CreateContainerRequest, len(all))
	for i, c := range all {
		raw, err := record.MarshalProto(c.req)
		if err != nil {
			return nil, nil, err
		}
		s := c.status
		rc := &record.Container{Name: s.GetMetadata().GetName(), Request: raw, ID: s.GetId(), SandboxID: c.req.GetPodSandboxId(),
			Attempt: s.GetMetadata().GetAttempt(), CreateSeq: i + 1, State: importedState(s.GetState()), ExitCode: s.GetExitCode()}
		if rc.Name == "" {
			rc.Name = c.req.GetConfig().GetMetadata().GetName()
		}
		for _, later := range all[i+1:] {
			if s.GetState() == runtimeapi.ContainerState_CONTAINER_EXITED && s.GetExitCode() == 0 && s.GetFinishedAt() <= later.status.GetCreatedAt() {
				rc.Init = true
				break
			}
		}
		out[i], reqs[i] = rc, c.req
	}
	started := make([]int, 0, len(all))
	for i, c := range all {
		if c.status.GetStartedAt() > 0 {
			started = append(started, i)
		}
	}
	sort.SliceStable(started, func(a, b int) bool {
		return all[started[a]].status.GetStartedAt() < all[started[b]].status.GetStartedAt()
	})
	for k, i := range started {
		out[i].StartSeq = len(all) + k + 1
	}
	return out, reqs, nil
}

func importedState(s runtimeapi.ContainerState) string {
	switch s {
	case runtimeapi.ContainerState_CONTAINER_RUNNING:
		return record.StateRunning
	case runtimeapi.ContainerState_CONTAINER_EXITED:
		return record.StateExited
	default:
		return record.StateCreated
	}
}
