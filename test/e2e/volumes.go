//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/holdfast-edge/holdfast/test/harness"
)

// The volumes pod (issue 14): one pod on node3 with every volume kind
// kubelet backs with tmpfs, and the two that are not, read inside its
// container through the CRI before the cut, after the offline relaunch
// and after adoption.

const (
	// VolsPod is the pod's name (namespace default, on NFTablesNode).
	VolsPod = "vols"
	// volsSecret and volsConfig are its Secret and ConfigMap.
	volsSecret = "vols-secret"
	volsConfig = "vols-config"
	// SecretValue is the Secret's value before the cut; SecretUpdated the
	// one written after the reconnect.
	SecretValue   = "s3cret"
	SecretUpdated = "upd4ted"
	configValue   = "hello"
)

// volsMounts are the pod's volume mount points (in the container) and
// whether kubelet backs them with tmpfs.
var volsMounts = []struct {
	path  string
	tmpfs bool
}{
	{"/etc/secret", true},
	{"/etc/podinfo", true},
	{"/mem", true},
	{saDir, true},
	{"/etc/config", false},
	{"/etc/secret-password", true}, // subPath of the Secret
	{"/etc/greeting", false},       // subPath of the ConfigMap
}

// VolsObjects are the Secret, the ConfigMap and the pod.
func VolsObjects(node string) (*corev1.Secret, *corev1.ConfigMap, *corev1.Pod) {
	secret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: volsSecret, Namespace: "default"},
		StringData: map[string]string{"password": SecretValue}}
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: volsConfig, Namespace: "default"},
		Data: map[string]string{"greeting": configValue}}
	grace := int64(2)
	ref := func(name string) corev1.LocalObjectReference { return corev1.LocalObjectReference{Name: name} }
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: VolsPod, Namespace: "default", Labels: map[string]string{AppLabel: VolsPod, "tier": "volumes"}},
		Spec: corev1.PodSpec{
			NodeName:                      node,
			TerminationGracePeriodSeconds: &grace,
			Containers: []corev1.Container{{
				Name: "app", Image: harness.BusyboxImage, ImagePullPolicy: corev1.PullNever,
				Command: []string{"/bin/sleep", "2147483647"},
				Env: []corev1.EnvVar{
					{Name: "SECRET_ENV", ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{LocalObjectReference: ref(volsSecret), Key: "password"}}},
					{Name: "CM_ENV", ValueFrom: &corev1.EnvVarSource{ConfigMapKeyRef: &corev1.ConfigMapKeySelector{LocalObjectReference: ref(volsConfig), Key: "greeting"}}},
				},
				VolumeMounts: []corev1.VolumeMount{
					{Name: "secret", MountPath: "/etc/secret", ReadOnly: true},
					{Name: "config", MountPath: "/etc/config", ReadOnly: true},
					{Name: "podinfo", MountPath: "/etc/podinfo", ReadOnly: true},
					{Name: "mem", MountPath: "/mem"},
					{Name: "secret", MountPath: "/etc/secret-password", SubPath: "password", ReadOnly: true},
					{Name: "config", MountPath: "/etc/greeting", SubPath: "greeting", ReadOnly: true},
				},
			}},
			Volumes: []corev1.Volume{
				{Name: "secret", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{SecretName: volsSecret}}},
				{Name: "config", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{LocalObjectReference: ref(volsConfig)}}},
				{Name: "podinfo", VolumeSource: corev1.VolumeSource{DownwardAPI: &corev1.DownwardAPIVolumeSource{Items: []corev1.DownwardAPIVolumeFile{
					{Path: "name", FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.name"}},
					{Path: "labels", FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.labels"}},
				}}}},
				{Name: "mem", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{Medium: corev1.StorageMediumMemory}}},
			},
		},
	}
	return secret, cm, pod
}

// readVolsScript prints key=value lines: each file's content (newlines
// as spaces), the token's first three bytes and size, the env vars, and
// each mount point's file system type from /proc/mounts.
var readVolsScript = func() string {
	var b strings.Builder
	for _, f := range []string{"/etc/secret/password", "/etc/config/greeting", "/etc/secret-password", "/etc/greeting", "/etc/podinfo/name", "/etc/podinfo/labels", saDir + "/namespace", saDir + "/ca.crt"} {
		fmt.Fprintf(&b, "printf '%%s=%%s\\n' %s \"$(tr '\\n' ' ' < %s 2>&1 | head -c 80)\"\n", f, f)
	}
	fmt.Fprintf(&b, "printf 'token=%%s\\n' \"$(head -c 3 %s/token 2>&1)\"\n", saDir)
	fmt.Fprintf(&b, "printf 'token-bytes=%%s\\n' \"$(wc -c < %s/token 2>&1)\"\n", saDir)
	b.WriteString("printf 'env=%s/%s\\n' \"$SECRET_ENV\" \"$CM_ENV\"\n")
	for _, m := range volsMounts {
		fmt.Fprintf(&b, "printf 'fs %s=%%s\\n' \"$(awk '$2==\"%s\"{t=$3} END{print t}' /proc/mounts)\"\n", m.path, m.path)
	}
	return b.String()
}()

// volsRead is one reading: key → value.
type volsRead map[string]string

func (v volsRead) String() string {
	keys := make([]string, 0, len(v))
	for k := range v {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var parts []string
	for _, k := range keys {
		parts = append(parts, k+"="+v[k])
	}
	return strings.Join(parts, "; ")
}

// readVols runs readVolsScript in the container through the node's CRI
// (ExecSync with a deadline).
func (n *Node) readVols(ctx context.Context, containerID string) (volsRead, error) {
	c, err := harness.DialCRI(n.ShimSock())
	if err != nil {
		return nil, err
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	resp, err := c.ExecSync(ctx, &runtimeapi.ExecSyncRequest{ContainerId: containerID, Cmd: []string{"/bin/sh", "-c", readVolsScript}, Timeout: 10})
	if err != nil {
		return nil, fmt.Errorf("exec in %s: %w", short(containerID), err)
	}
	if resp.ExitCode != 0 {
		return nil, fmt.Errorf("exec in %s: exit %d: %s%s", short(containerID), resp.ExitCode, resp.Stdout, resp.Stderr)
	}
	out := volsRead{}
	for _, line := range strings.Split(strings.TrimSpace(string(resp.Stdout)), "\n") {
		if k, v, ok := strings.Cut(line, "="); ok {
			out[k] = strings.TrimSpace(v)
		}
	}
	return out, nil
}

// checkVols checks a reading against the values the pod was created
// with (secret is the Secret's current value) and the mount types.
func checkVols(r volsRead, secret string) error {
	want := map[string]string{
		"/etc/secret/password": secret,
		"/etc/config/greeting": configValue,
		// subPath mounts: bound once, at container creation; they never
		// follow updates (stock Kubernetes behaviour).
		"/etc/secret-password": SecretValue,
		"/etc/greeting":        configValue,
		"/etc/podinfo/name":    VolsPod,
		saDir + "/namespace":   "default",
		"token":                "eyJ",
		"env":                  SecretValue + "/" + configValue, // env is fixed at container start
	}
	var bad []string
	for k, w := range want {
		if r[k] != w {
			bad = append(bad, fmt.Sprintf("%s is %q, want %q", k, r[k], w))
		}
	}
	if !strings.Contains(r["/etc/podinfo/labels"], `tier="volumes"`) {
		bad = append(bad, fmt.Sprintf("/etc/podinfo/labels is %q", r["/etc/podinfo/labels"]))
	}
	if !strings.HasPrefix(r[saDir+"/ca.crt"], "-----BEGIN CERTIFICATE-----") {
		bad = append(bad, fmt.Sprintf("ca.crt is %q", r[saDir+"/ca.crt"]))
	}
	for _, m := range volsMounts {
		fs := r["fs "+m.path]
		if m.tmpfs && fs != "tmpfs" {
			bad = append(bad, fmt.Sprintf("%s is on %q, want tmpfs", m.path, fs))
		}
		if fs == "" {
			bad = append(bad, fmt.Sprintf("%s is no mount point", m.path))
		}
	}
	if len(bad) > 0 {
		sort.Strings(bad)
		return fmt.Errorf("%s\n    read: %s", strings.Join(bad, "; "), r)
	}
	return nil
}

// volsState is the volumes pod as the scenario follows it.
type volsState struct {
	uid        string
	before     volsRead
	relaunched string // container id after the offline relaunch
}

// CreateVols creates the volumes pod's objects.
func (s *site) createVols(ctx context.Context) error {
	secret, cm, pod := VolsObjects(NFTablesNode)
	if _, err := s.cs.CoreV1().Secrets("default").Create(ctx, secret, metav1.CreateOptions{}); err != nil {
		return err
	}
	if _, err := s.cs.CoreV1().ConfigMaps("default").Create(ctx, cm, metav1.CreateOptions{}); err != nil {
		return err
	}
	_, err := s.cs.CoreV1().Pods("default").Create(ctx, pod, metav1.CreateOptions{})
	return err
}

// volsBefore waits for the volumes pod to run and reads it.
func (r *run) volsBefore(ctx context.Context) {
	var last string
	err := harness.Eventually(90*time.Second, func() error {
		p, err := r.s.cs.CoreV1().Pods("default").Get(ctx, VolsPod, metav1.GetOptions{})
		if err != nil {
			return err
		}
		if p.Status.Phase != corev1.PodRunning || !podReady(p) {
			return fmt.Errorf("%s: %s%s", VolsPod, p.Status.Phase, podWhy(p))
		}
		r.vols.uid = string(p.UID)
		v := viewOf(p)
		read, err := r.victim.readVols(ctx, v.ContainerID)
		if err != nil {
			return err
		}
		last = read.String()
		r.vols.before = read
		return checkVols(read, SecretValue)
	})
	r.rep.Check("volumes: before the cut the pod on node3 reads its Secret, ConfigMap, downwardAPI, token, env and subPath mounts of the Secret and the ConfigMap, and the memory volumes are tmpfs (CRI exec)", err)
	r.rep.Mark("volumes read", last)
}

// volsRelaunched checks the volumes pod after the offline relaunch: every
// file as before the cut, the memory volumes tmpfs.
func (r *run) volsRelaunched(ctx context.Context) {
	if r.vols.uid == "" {
		return
	}
	var p criPod
	err := harness.Eventually(60*time.Second, func() error {
		var err error
		p, err = r.victim.criPod(ctx, r.vols.uid)
		if err == nil && len(p.Running) != 1 {
			err = fmt.Errorf("not relaunched: %s", p)
		}
		return err
	})
	if !r.rep.Check("reboot: the volumes pod relaunched by the shim", err) {
		return
	}
	r.vols.relaunched = p.Running[0]
	read, err := r.victim.readVols(ctx, r.vols.relaunched)
	if err == nil {
		err = checkVols(read, SecretValue)
	}
	r.rep.Check("reboot: relaunched offline, the volumes pod reads every file as before the cut (Secret, ConfigMap, downwardAPI, token, both subPath mounts) and its memory volumes are tmpfs", err)
	r.rep.Mark("volumes read (relaunched)", read.String())
}

// volsAdopted checks the volumes pod after the reconnect: adopted, not
// restarted, every file still there; then a Secret update reaches the
// running container within kubelet's sync period.
func (r *run) volsAdopted(ctx context.Context) {
	if r.vols.relaunched == "" {
		return
	}
	s, rep := r.s, r.rep
	p, err := s.cs.CoreV1().Pods("default").Get(ctx, VolsPod, metav1.GetOptions{})
	if err == nil {
		if v := viewOf(p); v.ContainerID != r.vols.relaunched {
			err = fmt.Errorf("apiserver reports container %s, relaunched %s", short(v.ContainerID), short(r.vols.relaunched))
		}
	}
	if err == nil {
		var read volsRead
		if read, err = r.victim.readVols(ctx, r.vols.relaunched); err == nil {
			err = checkVols(read, SecretValue)
		}
		rep.Mark("volumes read (adopted)", read.String())
	}
	rep.Check("reconnect: the adopted volumes pod (same container) still reads every file and its memory volumes are tmpfs", err)

	sec, err := s.cs.CoreV1().Secrets("default").Get(ctx, volsSecret, metav1.GetOptions{})
	if err == nil {
		sec.Data = map[string][]byte{"password": []byte(SecretUpdated)}
		_, err = s.cs.CoreV1().Secrets("default").Update(ctx, sec, metav1.UpdateOptions{})
	}
	if !rep.Check("reconnect: Secret "+volsSecret+" updated", err) {
		return
	}
	at := time.Now()
	// kubelet rewrites Secret volumes on its pod sync (syncFrequency 10 s)
	// from its watch-based cache; a minute is several periods.
	var last string
	err = harness.Eventually(60*time.Second, func() error {
		read, err := r.victim.readVols(ctx, r.vols.relaunched)
		if err != nil {
			return err
		}
		last = read["/etc/secret/password"]
		if last != SecretUpdated {
			return fmt.Errorf("the adopted container reads %q from /etc/secret/password, want %q (kubelet's copy on the host: %q)",
				last, SecretUpdated, r.victim.hostSecret(r.vols.uid))
		}
		return nil
	})
	rep.Check("reconnect: the Secret update shows up inside the adopted container within kubelet's sync period", err)
	rep.Mark("volumes secret update", fmt.Sprintf("%.1fs after the update, read %q", time.Since(at).Seconds(), last))
}

// hostSecret reads the Secret volume's file as kubelet left it on the
// host (for failure messages: kubelet wrote it, the container does not
// see it).
func (n *Node) hostSecret(uid string) string {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	out, err := n.Exec(ctx, "cat", n.KubeletRoot()+"/pods/"+uid+"/volumes/kubernetes.io~secret/secret/password")
	if err != nil {
		return err.Error()
	}
	return out
}
