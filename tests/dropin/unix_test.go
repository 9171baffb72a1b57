package dropin_test

import (
	"encoding/json"
	"net"
	"net/http"
	"os"
	"strconv"
	"testing"
	"time"
)

// testUnixSocket: --unix-domain-socket serves both app-facing APIs on
// daprd's socket names, mode 0600, instead of the TCP ports; the API token
// still applies.
func testUnixSocket(t *testing.T, m *mesh) {
	for _, p := range []string{m.httpSocket(), m.grpcSocket()} {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode()&os.ModeSocket == 0 || fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: mode %v, want a socket with 0600", p, fi.Mode())
		}
	}
	for _, port := range []int{m.socketed.Ports.HTTP, m.socketed.Ports.GRPC} {
		if c, err := net.DialTimeout("tcp", "127.0.0.1:"+strconv.Itoa(port), time.Second); err == nil {
			c.Close()
			t.Errorf("port %d is served too; want the unix sockets only", port)
		}
	}
	c := unixClient(m.httpSocket())
	if code, _, body := do(t, c, http.MethodGet, "http://unix/v1.0/metadata", nil, ""); code != http.StatusUnauthorized {
		t.Errorf("metadata without token: %d %s, want 401", code, body)
	}
	code, _, body := do(t, c, http.MethodGet, "http://unix/v1.0/metadata", map[string]string{"dapr-api-token": apiToken}, "")
	var md struct {
		ID string `json:"id"`
	}
	if err := json.Unmarshal(body, &md); err != nil || code != 200 || md.ID != appSocketed {
		t.Errorf("metadata with token: %d %s", code, body)
	}
	before := m.app.hits.Load()
	code, _, body = do(t, c, http.MethodPost, "http://unix/v1.0/invoke/"+appServer+"/method/uds?z=9",
		map[string]string{"dapr-api-token": apiToken, "Content-Type": "text/plain"}, "over a socket")
	var e echoed
	if err := json.Unmarshal(body, &e); err != nil || code != 200 {
		t.Fatalf("invoke over the socket: %d %s", code, body)
	}
	if e.CallerAppID != appSocketed || e.Path != "/uds" || e.RawQuery != "z=9" || e.Body != "over a socket" || m.app.hits.Load() != before+1 {
		t.Errorf("the app saw %+v", e)
	}
}
