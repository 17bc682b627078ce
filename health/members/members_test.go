package members

import (
	"slices"
	"testing"
)

func TestDiff(t *testing.T) {
	a := Member{Name: "a", Address: "10.0.0.1", PublicKey: "k1"}
	b := Member{Name: "b", Address: "10.0.0.2", PublicKey: "k2"}
	c := Member{Name: "c", Address: "10.0.0.3", PublicKey: "k3"}
	b2 := b
	b2.Address = "10.0.0.22"
	added, removed, changed := Diff([]Member{c, a, b}, []Member{b2, a, {Name: "d"}, {Name: "e"}})
	if !slices.Equal(added, []string{"d", "e"}) || !slices.Equal(removed, []string{"c"}) || !slices.Equal(changed, []string{"b"}) {
		t.Fatalf("added %v removed %v changed %v", added, removed, changed)
	}
	if added, removed, changed := Diff([]Member{a, b}, []Member{b, a}); added != nil || removed != nil || changed != nil {
		t.Fatalf("same members in another order: %v %v %v", added, removed, changed)
	}
}
