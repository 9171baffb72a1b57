package admin

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"
)

// Timeout bounds one request of the client.
const Timeout = 2 * time.Second

// GetStatus reads the Status of the sidecar whose admin endpoint is at addr
// (host:port).
func GetStatus(ctx context.Context, addr string) (Status, error) {
	var s Status
	err := get(ctx, "http://"+addr+PathStatus, &s)
	return s, err
}

// GetDecisions reads the decisions numbered above after.
func GetDecisions(ctx context.Context, addr string, after uint64) (Decisions, error) {
	var d Decisions
	err := get(ctx, "http://"+addr+PathDecisions+"?after="+strconv.FormatUint(after, 10), &d)
	return d, err
}

func get(ctx context.Context, url string, v any) error {
	ctx, cancel := context.WithTimeout(ctx, Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return fmt.Errorf("admin: %w", err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("admin: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return fmt.Errorf("admin: %s: %w", url, err)
	}
	if resp.StatusCode != http.StatusOK {
		var e errorBody
		if json.Unmarshal(body, &e) == nil && e.Message != "" {
			return fmt.Errorf("admin: %s: %s", url, e.Message)
		}
		return fmt.Errorf("admin: %s: %s", url, resp.Status)
	}
	if err := json.Unmarshal(body, v); err != nil {
		return fmt.Errorf("admin: %s: %w", url, err)
	}
	return nil
}
