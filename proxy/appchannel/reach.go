package appchannel

import (
	"context"
	"fmt"
	"net"
)

// Reachable reports whether the app accepts a TCP connection now (nil) —
// the check a caller sidecar's probe of an ejected endpoint asks for. The
// connection is closed at once; nothing is sent.
func (c *Channel) Reachable(ctx context.Context) error {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", c.host)
	if err != nil {
		return fmt.Errorf("appchannel: app at %s: %w", c.host, err)
	}
	return conn.Close()
}
