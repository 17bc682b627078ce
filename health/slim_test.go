package health

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// testKey is a well-formed Ed25519 public key (32 zero bytes).
const testKey = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="

// The Node informer keeps what MembersFromNodes reads and drops managed
// fields and the image list.
func TestSlimNodeKeepsWhatMembersRead(t *testing.T) {
	n := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: "edge-1", Labels: map[string]string{"holdfast.dev/unit": "a"},
			Annotations:   map[string]string{PublicKeyAnnotation: testKey},
			ManagedFields: []metav1.ManagedFieldsEntry{{Manager: "kubelet"}}},
		Status: corev1.NodeStatus{Addresses: []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: "198.51.100.11"}},
			Images: []corev1.ContainerImage{{Names: []string{"busybox"}, SizeBytes: 1}}},
	}
	o, err := slimNode(n)
	if err != nil {
		t.Fatal(err)
	}
	got := o.(*corev1.Node)
	if got.ManagedFields != nil || got.Status.Images != nil {
		t.Fatalf("kept managed fields %v, images %v", got.ManagedFields, got.Status.Images)
	}
	m, skipped := MembersFromNodes([]corev1.Node{*got}, "holdfast.dev/unit")
	if len(skipped) > 0 || len(m) != 1 || m[0].Address != "198.51.100.11" || m[0].Unit != "a" || m[0].PublicKey != testKey {
		t.Fatalf("members from the slim Node: %+v, skipped %v", m, skipped)
	}
}
