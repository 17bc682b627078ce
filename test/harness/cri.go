package harness

import (
	"context"
	"encoding/json"
	"fmt"
	"hash/fnv"
	"path/filepath"
	"strconv"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// Labels and annotations kubelet sets on sandboxes and containers; the CRI
// shim and kubelet's adoption depend on them.
const (
	LabelPodName       = "io.kubernetes.pod.name"
	LabelPodNamespace  = "io.kubernetes.pod.namespace"
	LabelPodUID        = "io.kubernetes.pod.uid"
	LabelContainerName = "io.kubernetes.container.name"
	AnnContainerHash   = "io.kubernetes.container.hash"
	AnnRestartCount    = "io.kubernetes.container.restartCount"
	AnnConfigSource    = "kubernetes.io/config.source"
)

// CRI is a CRI client used the way kubelet uses it.
type CRI struct {
	conn *grpc.ClientConn
	runtimeapi.RuntimeServiceClient
	runtimeapi.ImageServiceClient
	// CgroupParent is set on every sandbox (so cleanup can find cgroups).
	CgroupParent string
	// LogRoot is where pod log directories go.
	LogRoot string
}

// DialCRI connects to a CRI endpoint (a unix socket path or unix:// URL).
func DialCRI(endpoint string) (*CRI, error) {
	if len(endpoint) > 0 && endpoint[0] == '/' {
		endpoint = "unix://" + endpoint
	}
	conn, err := grpc.NewClient(endpoint, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(16<<20)))
	if err != nil {
		return nil, fmt.Errorf("dial CRI %s: %w", endpoint, err)
	}
	return &CRI{conn: conn, RuntimeServiceClient: runtimeapi.NewRuntimeServiceClient(conn), ImageServiceClient: runtimeapi.NewImageServiceClient(conn)}, nil
}

// Close closes the connection.
func (c *CRI) Close() error { return c.conn.Close() }

// Version calls RuntimeService.Version.
func (c *CRI) Version(ctx context.Context) (*runtimeapi.VersionResponse, error) {
	return c.RuntimeServiceClient.Version(ctx, &runtimeapi.VersionRequest{})
}

// CRI returns a client of the node's containerd (or of endpoint, e.g. the
// holdfast CRI shim, when given), closed at test end.
func (n *Node) CRI(endpoint ...string) *CRI {
	n.Site.t.Helper()
	ep := n.ContainerdSock
	if len(endpoint) > 0 && endpoint[0] != "" {
		ep = endpoint[0]
	}
	c, err := DialCRI(ep)
	if err != nil {
		n.Site.t.Fatalf("%v", err)
	}
	c.CgroupParent = "/" + n.NetNS
	c.LogRoot = filepath.Join(n.VarDir, "log", "pods")
	n.Site.t.Cleanup(func() { c.Close() })
	return c
}

// PodSpec is the part of a Pod the harness turns into CRI calls.
type PodSpec struct {
	Name, Namespace, UID string
	Attempt              uint32
	HostNetwork          bool
	Labels               map[string]string
	Annotations          map[string]string
	InitContainers       []ContainerSpec
	Containers           []ContainerSpec // default: one "app" running DefaultCommand
}

// ContainerSpec is one container of a PodSpec.
type ContainerSpec struct {
	Name    string
	Image   string   // default BusyboxImage
	Command []string // default DefaultCommand
	Env     map[string]string
	Mounts  []*runtimeapi.Mount
}

// Pod is a running pod.
type Pod struct {
	Spec         PodSpec
	SandboxID    string
	IP           string
	NetNSPath    string
	ContainerIDs map[string]string // by container name
}

func (s *PodSpec) defaults() {
	if s.Namespace == "" {
		s.Namespace = "default"
	}
	if s.UID == "" {
		s.UID = newUUID()
	}
	if len(s.Containers) == 0 {
		s.Containers = []ContainerSpec{{Name: "app"}}
	}
}

// SandboxConfig is the RunPodSandbox config kubelet would send for spec.
func (c *CRI) SandboxConfig(spec PodSpec) *runtimeapi.PodSandboxConfig {
	spec.defaults()
	labels := map[string]string{LabelPodName: spec.Name, LabelPodNamespace: spec.Namespace, LabelPodUID: spec.UID}
	for k, v := range spec.Labels {
		labels[k] = v
	}
	ann := map[string]string{AnnConfigSource: "api", "kubernetes.io/config.seen": "2026-01-01T00:00:00Z"}
	for k, v := range spec.Annotations {
		ann[k] = v
	}
	netMode := runtimeapi.NamespaceMode_POD
	hostname := spec.Name
	if spec.HostNetwork {
		// A hostNetwork pod shares the node's UTS namespace: runc refuses
		// to set a hostname there.
		netMode, hostname = runtimeapi.NamespaceMode_NODE, ""
	}
	return &runtimeapi.PodSandboxConfig{
		Metadata:     &runtimeapi.PodSandboxMetadata{Name: spec.Name, Namespace: spec.Namespace, Uid: spec.UID, Attempt: spec.Attempt},
		Hostname:     hostname,
		LogDirectory: filepath.Join(c.LogRoot, spec.Namespace+"_"+spec.Name+"_"+spec.UID),
		Labels:       labels,
		Annotations:  ann,
		Linux: &runtimeapi.LinuxPodSandboxConfig{
			CgroupParent: c.CgroupParent,
			SecurityContext: &runtimeapi.LinuxSandboxSecurityContext{
				NamespaceOptions: &runtimeapi.NamespaceOption{Network: netMode, Pid: runtimeapi.NamespaceMode_CONTAINER, Ipc: runtimeapi.NamespaceMode_POD},
			},
		},
	}
}

// ContainerConfig is the CreateContainer config kubelet would send.
func (c *CRI) ContainerConfig(spec PodSpec, cs ContainerSpec, restartCount int) *runtimeapi.ContainerConfig {
	spec.defaults()
	if cs.Image == "" {
		cs.Image = BusyboxImage
	}
	if len(cs.Command) == 0 {
		cs.Command = DefaultCommand
	}
	var env []*runtimeapi.KeyValue
	for k, v := range cs.Env {
		env = append(env, &runtimeapi.KeyValue{Key: k, Value: v})
	}
	netMode := runtimeapi.NamespaceMode_POD
	if spec.HostNetwork {
		netMode = runtimeapi.NamespaceMode_NODE
	}
	return &runtimeapi.ContainerConfig{
		Metadata: &runtimeapi.ContainerMetadata{Name: cs.Name, Attempt: uint32(restartCount)},
		Image:    &runtimeapi.ImageSpec{Image: cs.Image},
		Command:  cs.Command,
		Envs:     env,
		Mounts:   cs.Mounts,
		LogPath:  filepath.Join(cs.Name, strconv.Itoa(restartCount)+".log"),
		Labels: map[string]string{LabelPodName: spec.Name, LabelPodNamespace: spec.Namespace, LabelPodUID: spec.UID,
			LabelContainerName: cs.Name},
		Annotations: map[string]string{AnnContainerHash: containerHash(cs), AnnRestartCount: strconv.Itoa(restartCount),
			"io.kubernetes.pod.terminationGracePeriod": "30", "io.kubernetes.container.terminationMessagePath": "/dev/termination-log"},
		Linux: &runtimeapi.LinuxContainerConfig{SecurityContext: &runtimeapi.LinuxContainerSecurityContext{
			NamespaceOptions: &runtimeapi.NamespaceOption{Network: netMode, Pid: runtimeapi.NamespaceMode_CONTAINER, Ipc: runtimeapi.NamespaceMode_POD},
		}},
	}
}

// containerHash stands in for kubelet's hash of the container spec: stable
// for the same spec, different for a changed one.
func containerHash(cs ContainerSpec) string {
	data, _ := json.Marshal(cs)
	h := fnv.New32a()
	h.Write(data)
	return strconv.FormatUint(uint64(h.Sum32()), 16)
}

// RunPod runs a pod as kubelet does: sandbox, init containers to completion
// in order, then app containers.
func (c *CRI) RunPod(ctx context.Context, spec PodSpec) (*Pod, error) {
	spec.defaults()
	sbCfg := c.SandboxConfig(spec)
	sb, err := c.RunPodSandbox(ctx, &runtimeapi.RunPodSandboxRequest{Config: sbCfg})
	if err != nil {
		return nil, fmt.Errorf("run sandbox %s/%s: %w", spec.Namespace, spec.Name, err)
	}
	pod := &Pod{Spec: spec, SandboxID: sb.PodSandboxId, ContainerIDs: map[string]string{}}
	for _, cs := range spec.InitContainers {
		id, err := c.startContainer(ctx, pod, sbCfg, cs)
		if err != nil {
			return pod, err
		}
		if err := c.WaitExited(ctx, id, 0); err != nil {
			return pod, fmt.Errorf("init container %s: %w", cs.Name, err)
		}
	}
	for _, cs := range spec.Containers {
		if _, err := c.startContainer(ctx, pod, sbCfg, cs); err != nil {
			return pod, err
		}
	}
	pod.IP, pod.NetNSPath, err = c.SandboxNet(ctx, pod.SandboxID)
	return pod, err
}

func (c *CRI) startContainer(ctx context.Context, pod *Pod, sbCfg *runtimeapi.PodSandboxConfig, cs ContainerSpec) (string, error) {
	cr, err := c.CreateContainer(ctx, &runtimeapi.CreateContainerRequest{
		PodSandboxId: pod.SandboxID, Config: c.ContainerConfig(pod.Spec, cs, 0), SandboxConfig: sbCfg})
	if err != nil {
		return "", fmt.Errorf("create container %s of %s: %w", cs.Name, pod.Spec.Name, err)
	}
	if _, err := c.StartContainer(ctx, &runtimeapi.StartContainerRequest{ContainerId: cr.ContainerId}); err != nil {
		return "", fmt.Errorf("start container %s of %s: %w", cs.Name, pod.Spec.Name, err)
	}
	pod.ContainerIDs[cs.Name] = cr.ContainerId
	return cr.ContainerId, nil
}

// WaitExited waits until a container has exited, and checks its exit code.
func (c *CRI) WaitExited(ctx context.Context, id string, wantCode int32) error {
	return waitFor(60*time.Second, func() error {
		st, err := c.ContainerStatus(ctx, &runtimeapi.ContainerStatusRequest{ContainerId: id})
		if err != nil {
			return err
		}
		if st.Status.State != runtimeapi.ContainerState_CONTAINER_EXITED {
			return fmt.Errorf("container %s is %v", id, st.Status.State)
		}
		if st.Status.ExitCode != wantCode {
			return fmt.Errorf("container %s exited %d, want %d", id, st.Status.ExitCode, wantCode)
		}
		return nil
	})
}

// SandboxNet returns a sandbox's IP and network namespace path.
func (c *CRI) SandboxNet(ctx context.Context, id string) (ip, netns string, err error) {
	st, err := c.PodSandboxStatus(ctx, &runtimeapi.PodSandboxStatusRequest{PodSandboxId: id, Verbose: true})
	if err != nil {
		return "", "", fmt.Errorf("sandbox status %s: %w", id, err)
	}
	if st.Status.Network != nil {
		ip = st.Status.Network.Ip
	}
	var info struct {
		RuntimeSpec struct {
			Linux struct {
				Namespaces []struct{ Type, Path string }
			}
		}
	}
	if raw, ok := st.Info["info"]; ok {
		json.Unmarshal([]byte(raw), &info)
	}
	for _, ns := range info.RuntimeSpec.Linux.Namespaces {
		if ns.Type == "network" {
			netns = ns.Path
		}
	}
	return ip, netns, nil
}

// RemovePod stops and removes a pod's sandbox (and so its containers).
func (c *CRI) RemovePod(ctx context.Context, sandboxID string) error {
	if _, err := c.StopPodSandbox(ctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: sandboxID}); err != nil {
		return fmt.Errorf("stop sandbox %s: %w", sandboxID, err)
	}
	if _, err := c.RemovePodSandbox(ctx, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: sandboxID}); err != nil {
		return fmt.Errorf("remove sandbox %s: %w", sandboxID, err)
	}
	return nil
}

// ReadySandboxes lists the ready sandboxes of a pod UID.
func (c *CRI) ReadySandboxes(ctx context.Context, uid string) ([]*runtimeapi.PodSandbox, error) {
	resp, err := c.ListPodSandbox(ctx, &runtimeapi.ListPodSandboxRequest{Filter: &runtimeapi.PodSandboxFilter{
		State:         &runtimeapi.PodSandboxStateValue{State: runtimeapi.PodSandboxState_SANDBOX_READY},
		LabelSelector: map[string]string{LabelPodUID: uid},
	}})
	if err != nil {
		return nil, err
	}
	return resp.Items, nil
}

// DialCRIOrNil is DialCRI that returns nil on error (for callers that
// report failures themselves).
func DialCRIOrNil(endpoint string) *CRI {
	c, err := DialCRI(endpoint)
	if err != nil {
		return nil
	}
	return c
}
