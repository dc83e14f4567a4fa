package wire

import (
	"reflect"
	"testing"
)

// TestTimeOf: TimeOf knows every body's Time field, and every type has a
// sample, so that a new message type without a case fails here.
func TestTimeOf(t *testing.T) {
	seen := map[Type]bool{}
	for _, b := range samples {
		seen[b.Type()] = true
		var want uint64
		if f := reflect.ValueOf(b).Elem().FieldByName("Time"); f.IsValid() {
			want = f.Uint()
		}
		if got := TimeOf(b); got != want {
			t.Errorf("TimeOf(%T) = %d, want %d", b, got, want)
		}
	}
	for typ := range typeNames {
		if !seen[typ] {
			t.Errorf("no sample of %v", typ)
		}
	}
}
