package stablemac

import "testing"

func TestFromNameStableAndDistinct(t *testing.T) {
	a := FromName("net", "default", "web-0")
	if a.String() != FromName("net", "default", "web-0").String() {
		t.Fatal("same name gave different MACs")
	}
	if !IsLocalUnicast(a) {
		t.Fatalf("%s is not locally administered unicast", a)
	}
	if a.String() == FromName("net", "default", "web-1").String() {
		t.Fatal("different names gave the same MAC")
	}
	if FromName("a", "bc").String() == FromName("ab", "c").String() {
		t.Fatal("part boundaries are not part of the key")
	}
	for i := 0; i < 1000; i++ {
		if m := FromName("pod", string(rune('a'+i%26)), string(rune(i))); !IsLocalUnicast(m) {
			t.Fatalf("%s is not locally administered unicast", m)
		}
	}
}
