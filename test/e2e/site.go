//go:build e2e

package e2e

import (
	"k8s.io/client-go/kubernetes"

	"github.com/holdfast-edge/holdfast/test/harness"
)

// site is the running cluster.
type site struct {
	*harness.Site
	cloud *Cloud
	cs    *kubernetes.Clientset
	nodes []*Node
}

func (s *site) nodeNames() []string {
	var names []string
	for _, n := range s.nodes {
		names = append(names, n.Name)
	}
	return names
}

func (s *site) node(name string) *Node {
	for _, n := range s.nodes {
		if n.Name == name {
			return n
		}
	}
	return nil
}
