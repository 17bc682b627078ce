package webhook

import (
	"slices"

	corev1 "k8s.io/api/core/v1"
)

// Per-pod opt-out. A node cannot keep a taint for some pods and drop it
// for others, so a kept node whose pods include opted-out ones carries
// the NoExecute taint holdfast.dev/retained (the Controller puts it there
// and takes it away), and every pod is given, at creation, a toleration
// of it: forever for a pod that keeps autonomy, for its own
// unreachable/not-ready tolerationSeconds for a pod that opted out. The
// stock taint-eviction controller then evicts exactly the opted-out pods,
// on the schedule the node lifecycle controller's taint would have given
// them. docs/health.md has the whole mechanism.

// OptedOut reports whether a pod's annotations opt it out of autonomy.
func OptedOut(annotations map[string]string) bool {
	return annotations[OptOutAnnotation] == "false"
}

// PodPatch adds the pod's toleration of holdfast.dev/retained at creation;
// a pod that already tolerates it (its own toleration, or one of every
// taint) is left alone, and so is an opted-out pod that does not tolerate
// the controller's taints at all (stock Kubernetes evicts it at once too).
func (m *Mutator) PodPatch(p *corev1.Pod) []Op {
	if tolerates(p.Spec.Tolerations, RetainedTaint) {
		return nil
	}
	tol := corev1.Toleration{Key: RetainedTaint, Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoExecute}
	if OptedOut(p.Annotations) {
		secs, ok := controllerToleration(p.Spec.Tolerations)
		if !ok {
			return nil
		}
		tol.TolerationSeconds = secs
	}
	if len(p.Spec.Tolerations) == 0 {
		return []Op{{Op: "add", Path: "/spec/tolerations", Value: []corev1.Toleration{tol}}}
	}
	return []Op{{Op: "add", Path: "/spec/tolerations/-", Value: tol}}
}

// tolerates reports whether tolerations tolerate the NoExecute taint key.
func tolerates(ts []corev1.Toleration, key string) bool {
	taint := corev1.Taint{Key: key, Effect: corev1.TaintEffectNoExecute}
	return slices.ContainsFunc(ts, func(t corev1.Toleration) bool { return t.ToleratesTaint(&taint) })
}

// controllerToleration is how long the pod tolerates the node lifecycle
// controller's NoExecute taints, as the taint-eviction controller reads
// tolerations (the first one matching each taint): the shorter of its
// unreachable and not-ready tolerations, nil meaning forever; ok is false
// when it lacks either (it would be evicted at once).
func controllerToleration(ts []corev1.Toleration) (secs *int64, ok bool) {
	for i, key := range []string{corev1.TaintNodeUnreachable, corev1.TaintNodeNotReady} {
		taint := corev1.Taint{Key: key, Effect: corev1.TaintEffectNoExecute}
		j := slices.IndexFunc(ts, func(t corev1.Toleration) bool { return t.ToleratesTaint(&taint) })
		if j < 0 {
			return nil, false
		}
		s := ts[j].TolerationSeconds
		if i == 0 || (s != nil && (secs == nil || *s < *secs)) {
			secs = s
		}
	}
	return secs, true
}
