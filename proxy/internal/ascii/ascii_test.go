package ascii

import "testing"

func TestEqualFold(t *testing.T) {
	for _, c := range []struct {
		s, t string
		want bool
	}{
		{"chunked", "chunked", true},
		{"CHUNKED", "chunked", true},
		{"Keep-Alive", "keep-alive", true},
		{"", "", true},
		{"chunked", "chunke", false},
		{"chunked ", "chunked", false},
		{"\u212aeep-alive", "keep-alive", false}, // the Kelvin sign is not K
		{"[", "{", false},                        // '[' + 32 is '{': not letters
		{"@", "`", false},
	} {
		if got := EqualFold(c.s, c.t); got != c.want {
			t.Errorf("EqualFold(%q, %q) = %v, want %v", c.s, c.t, got, c.want)
		}
	}
}
