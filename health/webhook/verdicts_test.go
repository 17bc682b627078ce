package webhook

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"testing"
	"time"

	coordv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/holdfast-edge/holdfast/health/protocol"
)

// TestComputeVerdicts: real signed views in Leases, as the daemons write
// them; forged, stale and foreign views do not count.
func TestComputeVerdicts(t *testing.T) {
	now := time.Now()
	names := []string{"n1", "n2", "n3", "n4", "n5"}
	keys := map[string]ed25519.PrivateKey{}
	var nodes []corev1.Node
	for _, n := range names {
		pub, priv, _ := ed25519.GenerateKey(rand.Reader)
		keys[n] = priv
		nodes = append(nodes, corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: n, Labels: map[string]string{"holdfast.dev/unit": "a"}, Annotations: map[string]string{PublicKeyAnnotation: base64.StdEncoding.EncodeToString(pub)}}})
	}
	nodes = append(nodes, corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "nokey"}})
	A, D := protocol.Alive, protocol.Dead
	lease := func(writer string, key ed25519.PrivateKey, view []protocol.State, renewed time.Time) coordv1.Lease {
		msg, err := protocol.Encode(&protocol.Message{Seq: 1, Time: renewed, MemberDigest: protocol.MemberDigest(names), Sender: writer, Unit: "a", Kind: protocol.ViewFull, Full: view}, key)
		if err != nil {
			t.Fatal(err)
		}
		d := int32(30)
		rt := metav1.NewMicroTime(renewed)
		return coordv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: LeasePrefix + writer, Namespace: Namespace, Annotations: map[string]string{ViewAnnotation: base64.StdEncoding.EncodeToString(msg)}},
			Spec: coordv1.LeaseSpec{LeaseDurationSeconds: &d, RenewTime: &rt}}
	}
	partitioned := []protocol.State{A, A, A, D, D}
	minority := []protocol.State{D, D, D, A, A}
	cases := []struct {
		name   string
		leases []coordv1.Lease
		want   map[string]protocol.State
	}{
		{"3|2 partition", []coordv1.Lease{
			lease("n1", keys["n1"], partitioned, now), lease("n2", keys["n2"], partitioned, now), lease("n3", keys["n3"], partitioned, now),
			lease("n4", keys["n4"], minority, now), lease("n5", keys["n5"], minority, now.Add(-5*time.Second)),
		}, map[string]protocol.State{"n1": A, "n2": A, "n3": A, "n4": D, "n5": D}},
		{"only the minority's views: no quorum", []coordv1.Lease{
			lease("n4", keys["n4"], minority, now), lease("n5", keys["n5"], minority, now),
		}, map[string]protocol.State{"n1": protocol.Unknown, "n4": protocol.Unknown}},
		{"stale and forged views do not count", []coordv1.Lease{
			lease("n1", keys["n1"], partitioned, now), lease("n2", keys["n2"], partitioned, now),
			lease("n3", keys["n3"], partitioned, now.Add(-time.Minute)), // expired
			lease("n4", keys["n1"], partitioned, now),                   // n1 signs as n4
			lease("n5", keys["n5"], partitioned, now),
		}, map[string]protocol.State{"n1": A, "n4": D}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got := ComputeVerdicts(nodes, c.leases, "holdfast.dev/unit", now)
			for n, w := range c.want {
				if got[n].Verdict != w {
					t.Errorf("%s: %s, want %s (all: %v)", n, got[n], w, got)
				}
			}
			if c.name == "3|2 partition" {
				if s := got["n1"].String(); s != "alive by 3 of 5 peers, views 5 s old" {
					t.Errorf("n1: %q", s)
				}
				if s := got["n4"].String(); s != "dead by 3 of 5 peers, views 5 s old" {
					t.Errorf("n4: %q", s)
				}
			}
			if c.name == "only the minority's views: no quorum" {
				if s := got["n1"].String(); s != "no quorum: 2 of 5 peers' views fresh, 3 needed" {
					t.Errorf("n1: %q", s)
				}
			}
			if _, ok := got["nokey"]; ok {
				t.Error("node without key has a verdict")
			}
		})
	}
}
