package hostport

import (
	"net/url"
	"testing"
)

func TestDialAddr(t *testing.T) {
	for _, tc := range []struct{ url, want string }{
		{"http://127.0.0.1:3500/v1.0/invoke", "127.0.0.1:3500"},
		{"http://app/x", "app:80"},
		{"https://app/x", "app:443"},
		{"https://[::1]:8443/", "[::1]:8443"},
		{"http://[::1]/", "[::1]:80"},
		{"https://[fe80::1%25lo]/", "[fe80::1%lo]:443"},
		{"h2c://app/", "app:80"},
	} {
		u, err := url.Parse(tc.url)
		if err != nil {
			t.Fatal(err)
		}
		if got := DialAddr(u); got != tc.want {
			t.Errorf("%s: %q, want %q", tc.url, got, tc.want)
		}
	}
}
